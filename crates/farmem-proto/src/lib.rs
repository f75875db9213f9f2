//! Wire format of the farmem protocol (see README.md in this crate).

pub mod agent;
