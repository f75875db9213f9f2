//! The farmem memory server.

pub mod agent;
