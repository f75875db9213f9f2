//! farmem: far memory for Rust.
//!
//! Programs keep most of their data in the memory of other machines (memory servers reached over
//! TCP) and only the hot part locally. See the repository README for the big picture.
//!
//! The layers, bottom up:
//! - [`backend`]: where far objects live: an [`EmbeddedStore`] in this process (the default), or
//!   memory servers over TCP.
//! - The object runtime ([`Runtime`], [`FarBox`], [`FarSlice`], [`FarPtr`], [`Scope`]): far
//!   objects fetched at object granularity into a bounded local heap, with a concurrent,
//!   pauseless evacuator moving cold objects out.
//! - [`containers`]: far vectors, hash maps, lists built on the runtime.
//! - [`paging`]: far memory for unmodified code.
//!
//! ```
//! use farmem::{FarBox, Runtime, RuntimeConfig};
//! let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
//! let b = FarBox::new(&rt, 42u64).unwrap();
//! let s = rt.scope();
//! assert_eq!(*b.read(&s).unwrap(), 42);
//! ```
//!
//! `unsafe` code lives in `sys` (OS memory), `slot` (handle chunks), `heap` (region headers),
//! `object` and `evacuator` (copying payloads under the handshake) and `far` (typed references).

pub mod backend;
pub mod containers;
pub mod paging;

mod config;
mod epoch;
mod error;
mod evacuator;
mod far;
mod heap;
mod loom;
mod object;
mod runtime;
mod slot;
mod stats;
mod sys;

pub use backend::{Backend, BackendError, EmbeddedStore, ObjectId, StoreStats};
pub use bytemuck::{self, Pod, Zeroable};
pub use config::{BackendConfig, RuntimeConfig};
pub use epoch::Scope;
pub use error::{Error, ErrorKind, Result};
pub use far::{Far, FarBox, FarPtr, FarSlice};
pub use runtime::Runtime;
pub use stats::Stats;
