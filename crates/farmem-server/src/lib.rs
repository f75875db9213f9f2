//! The farmem memory server.
