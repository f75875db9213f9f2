//! Remoteable containers: far vectors, hash maps, lists, queues and stacks.
//!
//! Unlike paging, these containers know their access pattern: they fetch whole chunks, prefetch
//! what comes next in the direction of travel, stream without evicting the hot set, and push work
//! to the memory server (the remote agent) so that only results cross the network.
//!
//! - [`FarVec`]: a chunked, growable vector. Scans prefetch ahead in batches on a helper thread;
//!   index access detects strides; [`FarVec::scan_nt`] streams without disturbing hot data.
//!   Primitive-typed vectors offer agent operations (aggregates, filter, gather, unique, group-by,
//!   argsort), each runnable on the server or locally ([`Offload`]) with identical results.
//! - [`FarHashMap`]: a concurrent hash map whose hot entries are cached locally (bounded) and whose
//!   cold entries live in a server-side table: a miss costs one round trip, a batch of misses too.
//! - [`FarList`], [`FarQueue`], [`FarStack`]: chunked sequences with cursors.
//!
//! ```
//! use farmem::{Runtime, RuntimeConfig};
//! use farmem::containers::{FarVec, Offload};
//! let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
//! let mut v: FarVec<u64> = FarVec::new(&rt);
//! v.extend(0..1000u64).unwrap();
//! assert_eq!(v.get(10).unwrap(), 10);
//! let local = v.aggregate(Offload::Local).unwrap();
//! assert_eq!(local.count, 1000);
//! ```

mod agent_ops;
mod elem;
mod error;
mod hashmap;
mod list;
mod prefetch;
mod sort;
mod vec;
mod vec_access;
mod vec_combine;
mod vec_pinned;

pub use agent_ops::{AgentInput, Offload};
pub use elem::Primitive;
pub use error::{ContainerError, Result};
pub use farmem_proto::agent::{Aggregates, Cmp, ElemType, Predicate, Scalar, Sum};
/// Row expressions for [`FarVec::derive`] and the agent's filters (the wire's expression trees).
pub use farmem_proto::expr;
pub use hashmap::{FarHashMap, HashMapConfig, HashMapStats, PendingLookup};
pub use list::{Cursor, FarList, FarQueue, FarStack};
pub use vec::{FarVec, Iter};
pub use vec_access::{Chunks, ChunksMut, Reader, Writer};
pub use vec_pinned::PinnedVec;
