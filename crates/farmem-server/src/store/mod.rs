//! The storage engine: namespaces of byte objects charged against a shared [`Budget`].
//!
//! Used by the server (one [`Namespace`] per client session) and by the client library's
//! embedded store, so both enforce capacity and apply patches the same way.
//!
//! ```
//! use std::sync::Arc;
//! use farmem_server::store::{Budget, Namespace, StoreError};
//! let budget = Arc::new(Budget::new(1000));
//! let ns = Namespace::new(budget.clone(), 1 << 20);
//! ns.put(1, b"hello").unwrap();
//! assert_eq!(ns.get_with(1, |b| b.to_vec()).unwrap(), b"hello");
//! assert!(matches!(ns.put(2, &[0; 2000]), Err(StoreError::OutOfCapacity { .. })));
//! ns.free(1);
//! assert_eq!(budget.used(), 0);
//! ```

mod budget;
mod namespace;
mod slab;

pub use budget::Budget;
pub use namespace::{Namespace, OBJECT_OVERHEAD};

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such object.
    #[error("object {0:#x} not found")]
    NotFound(u64),
    /// The capacity would be exceeded; nothing was changed.
    #[error("out of capacity: needed {needed} bytes, {available} available")]
    OutOfCapacity {
        /// Bytes the operation would add.
        needed: u64,
        /// Bytes free.
        available: u64,
    },
    /// An edit reaches past the end of the object; nothing was changed.
    #[error("object {id:#x} is {actual} bytes, an edit needs {expected}")]
    SizeMismatch {
        /// The object.
        id: u64,
        /// Size the edit needs.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// The object exceeds the size limit.
    #[error("object of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}
