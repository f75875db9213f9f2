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
//! The object runtime is the `runtime` module folder. Its `unsafe` code lives in `runtime::slot`
//! (handle chunks), `runtime::heap` (region trailers), `runtime::object` and `runtime::evacuator`
//! (copying payloads under the handshake) and `runtime::far` (typed references); `sys` maps OS
//! memory for the runtime and the paging mode.
//!
//! The object runtime and the containers keep no process-wide state a caller could observe:
//! object ids, counters and traffic figures are per runtime. What remains process-wide is
//! plumbing, justified where it is defined: the scope registry (`runtime::epoch`), runtime and
//! lane numbering (`runtime`), and the paging mode's `#[global_allocator]` hook
//! (`paging::alloc`), which a global allocator cannot do without.

#![deny(missing_docs, missing_debug_implementations)]

pub mod backend;
pub mod containers;
pub mod paging;

mod config;
mod error;
mod loom;
mod runtime;
mod sys;

pub use backend::{Backend, BackendError, EmbeddedStore, ObjectId, Protection, StoreStats};
pub use bytemuck;
/// The trait (and derive macro) far data implements, with [`Zeroable`]. A program derives them through farmem
/// alone, without a `bytemuck` dependency of its own, by naming the path:
///
/// ```
/// use farmem::{FarBox, FarPtr, Pod, Runtime, RuntimeConfig, Zeroable};
///
/// #[derive(Clone, Copy, Pod, Zeroable)]
/// #[bytemuck(crate = "farmem::bytemuck")]
/// #[repr(C)]
/// struct Node {
///     value: u64,
///     next: FarPtr<Node>,
/// }
///
/// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
/// let n = FarBox::new(&rt, Node { value: 7, next: FarPtr::zeroed() }).unwrap();
/// assert_eq!(n.get().unwrap().value, 7);
/// ```
pub use bytemuck::Pod;
pub use bytemuck::Zeroable;
pub use config::{BackendConfig, RuntimeConfig};
pub use error::{Error, ErrorKind, Result};
#[doc(hidden)]
pub use runtime::test_support;
pub use runtime::{
    Far, FarBox, FarPtr, FarRef, FarSlice, Pinned, PinnedMut, Runtime, Scope, Stats,
};
