//! Errors of the far-memory runtime.

use crate::backend::BackendError;

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid (budget too small, bad thresholds, ...).
    #[error("invalid runtime configuration: {0}")]
    Config(String),
    /// The local memory budget is smaller than the runtime needs to work.
    #[error("local memory budget of {budget} bytes is below the minimum of {minimum} bytes")]
    BudgetTooSmall {
        /// The requested budget.
        budget: usize,
        /// The smallest budget accepted with this region size and thread count.
        minimum: usize,
    },
    /// The backend failed (server unreachable, full, object missing, ...).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// No local memory could be found for an object.
    ///
    /// `pinned` is true when the evacuator cannot free anything because it is waiting for a scope
    /// held by the calling thread itself; leave or [`renew`](crate::Scope::renew) the scope and
    /// retry. Otherwise the evacuator made no room within the configured allocation timeout
    /// (objects pinned by other threads' scopes, or a failing backend, see `cause`).
    #[error(
        "local heap exhausted ({in_use} of {budget} bytes in use, pinned by own scope: {pinned}){}",
        cause.as_deref().map(|c| format!(": {c}")).unwrap_or_default()
    )]
    LocalHeapExhausted {
        /// The local budget in bytes.
        budget: usize,
        /// Bytes in use when giving up.
        in_use: usize,
        /// Whether the calling thread's own scope blocks evacuation.
        pinned: bool,
        /// The last evacuation failure, if any.
        cause: Option<String>,
    },
    /// The object is larger than the runtime supports.
    #[error("object of {size} bytes exceeds the limit of {limit} bytes")]
    ObjectTooLarge {
        /// Requested size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A [`FarPtr`](crate::FarPtr) does not name a live detached object of this runtime.
    #[error("far pointer {0:#x} does not name a live detached object")]
    InvalidPtr(u64),
    /// A [`FarPtr`](crate::FarPtr) names an object of another size than the requested type.
    #[error("far pointer names an object of {actual} bytes, the type needs {expected}")]
    TypeMismatch {
        /// Size the type needs.
        expected: usize,
        /// The object's size.
        actual: usize,
    },
    /// The local copy cannot be dropped because there is no far copy to fall back to.
    #[error("object has no far copy; flush it before invalidating the local copy")]
    NoFarCopy,
    /// The runtime ran out of object handles.
    #[error("too many live far objects")]
    TooManyObjects,
}

/// Result of runtime operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
