//! The farmem memory server.
//!
//! A memory server keeps byte objects for its clients over TCP (see the `farmem-proto` crate
//! for the wire format). Every client session has its own namespace; several connections of
//! one client may join a session, and when a client disconnects (its last connection closes)
//! its objects are freed, because its process is gone. A hard capacity is never exceeded.
//!
//! ```
//! use farmem_server::{Server, ServerConfig};
//! let server = Server::start(ServerConfig { capacity: 1 << 30, ..Default::default() }).unwrap();
//! let addr = server.addr(); // point a client (`farmem::TcpBackend`) here
//! assert_eq!(server.stats().objects, 0);
//! server.shutdown();
//! # let _ = addr;
//! ```

mod config;
mod conn;
mod error;
mod server;

pub use config::{Limits, ServerConfig, parse_size};
pub use error::ServerError;
pub use farmem_proto::ServerStats;
pub use server::{Server, ServerHandle};
