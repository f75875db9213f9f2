//! farmem: far memory for Rust.
//!
//! Programs keep most of their data in the memory of other machines (memory servers reached over
//! TCP) and only the hot part locally. See the repository README for the big picture.
//!
//! The layers, bottom up:
//! - [`backend`]: where far objects live: an [`EmbeddedStore`] in this process (the default), or
//!   memory servers over TCP.

pub mod backend;
pub mod containers;
pub mod paging;

pub use backend::{Backend, BackendError, EmbeddedStore, ObjectId, StoreStats};
