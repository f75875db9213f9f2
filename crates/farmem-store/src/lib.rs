//! The storage engine of a farmem memory server: namespaces of byte objects charged against a
//! shared [`Budget`], client [`Session`]s, the remote [`agent`] and the execution of requests.
//!
//! It has no I/O of its own (but for the outbound connection of a server-to-server copy,
//! [`agent::op::OBJ_PUSH`](farmem_proto::agent::op::OBJ_PUSH)): `farmem-server` wraps it in a TCP
//! shell, and the client library's embedded store runs it in-process, so both enforce capacity,
//! apply patches and run agent operations the same way.
//!
//!
//! ```
//! use std::sync::Arc;
//! use farmem_store::{Budget, Namespace, StoreError};
//! let budget = Arc::new(Budget::new(1000));
//! let ns = Namespace::new(budget.clone(), 1 << 20);
//! ns.put(1, b"hello").unwrap();
//! assert_eq!(ns.get_with(1, |b| b.to_vec()).unwrap(), b"hello");
//! assert!(matches!(ns.put(2, &[0; 2000]), Err(StoreError::OutOfCapacity { .. })));
//! ns.free(1);
//! assert_eq!(budget.used(), 0);
//! ```

#![deny(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]

pub mod agent;
mod budget;
pub mod dedup;
pub mod durable;
mod error;
mod exec;
mod heap;
mod namespace;
mod push;
mod quota;
mod segment;
mod session;
mod slab;
mod stop;

pub use budget::Budget;
pub use dedup::Dedup;
pub use durable::{Durable, DurableConfig, DurableError, LogError, SyncPolicy};
pub use error::StoreError;
pub use exec::{
    INLINE_HT_KEYS, encode_store_error, error_chain, execute_inline, execute_request,
    execute_request_watched,
};
pub use namespace::{Namespace, OBJECT_OVERHEAD};
pub use push::{PushConnections, PushError};
pub use quota::{SessionQuota, is_rate_limited};
pub use session::{Session, StoreContext};
pub use stop::Stop;
