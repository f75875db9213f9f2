//! The farmem memory server.
//!
//! A memory server keeps byte objects for its clients over TCP (see the `farmem-proto` crate
//! for the wire format). Every client session has its own namespace; several connections of
//! one client may join a session. When a client's last connection closes, its session is kept
//! for a lease ([`ServerConfig::session_lease`]) so a client whose connection broke can resume it
//! (with its resume secret); after the lease, or at once when the client closes its session, its
//! objects are freed. A hard capacity is never exceeded.
//!
//! ```
//! use farmem_server::{Server, ServerConfig};
//! let server = Server::start(ServerConfig { capacity: 1 << 30, ..Default::default() }).unwrap();
//! let addr = server.addr(); // point a client (`farmem::TcpBackend`) here
//! assert_eq!(server.stats().objects, 0);
//! server.shutdown();
//! # let _ = addr;
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]

mod admin;
mod capacity;
mod commit;
mod config;
mod config_file;
mod conn;
mod error;
mod evloop;
#[doc(hidden)]
pub mod fuzzing;
mod host;
mod http;
mod metrics;
mod server;
mod session_view;
mod tls;
mod transport;
mod trim;
mod wire;
mod workers;

pub use admin::{AdminClient, AdminError};
pub use config::{Limits, ServerConfig, parse_duration, parse_size};
pub use config_file::{ConfigError, FileConfig};
pub use error::ServerError;
pub use farmem_proto::ServerStats;
pub use farmem_proto::{AdminAction, AdminStatus, QuotaKind};
pub use farmem_store::SessionQuota;
pub use host::{HostMemory, HostReserve, HostSample, ProcMeminfo};
pub use server::{Server, ServerHandle};
pub use tls::ServerTls;
