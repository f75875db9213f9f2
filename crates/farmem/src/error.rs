//! Errors of the far-memory runtime, and the kinds of failure shared by every layer.

use std::sync::Arc;

use farmem_kernels::KernelError;
use farmem_store::StoreError;
use farmem_store::agent::{AgentError, AgentErrorCode};

use crate::backend::BackendError;

/// The kind of a failure, the same at every layer (backend, runtime, containers, DataFrame).
///
/// Each error type has a `kind()`: match on it to react to a class of failures without matching
/// the variants of every layer. New kinds may be added.
///
/// ```
/// use farmem::{BackendError, ErrorKind};
/// let e = BackendError::OutOfCapacity { needed: 10, available: 0 };
/// assert_eq!(e.kind(), ErrorKind::OutOfCapacity);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No local memory could be found (the local budget is full of pinned or unwritable objects).
    LocalHeapExhausted,
    /// The memory servers (or the embedded store) are full.
    OutOfCapacity,
    /// A memory server could not be reached, or every server holding an object is down.
    Unreachable,
    /// The connection to a memory server, or its session, was lost.
    Disconnected,
    /// A memory server did not answer in time.
    Timeout,
    /// A memory server refused us (authentication).
    Refused,
    /// A peer violated the protocol (undecodable or unexpected answer, other protocol version).
    ProtocolViolation,
    /// An object, column or table does not exist.
    NotFound,
    /// A value, column or object has another type (or size) than the operation needs.
    TypeMismatch,
    /// Vectors or columns that must have the same length do not.
    LengthMismatch,
    /// An index past the end.
    OutOfBounds,
    /// More distinct keys than the operation's group limit.
    TooManyGroups,
    /// A size or count limit was exceeded (object too large, too many objects).
    LimitExceeded,
    /// Any other invalid argument.
    InvalidArgument,
    /// Invalid configuration.
    Config,
    /// An operating-system or I/O operation failed (reading a file, reserving memory, ...).
    Io,
    /// An internal failure (a worker thread panicked, corrupt stored data).
    Internal,
}

impl ErrorKind {
    /// The kind of a kernel failure.
    pub fn of_kernel(e: &KernelError) -> Self {
        match e {
            KernelError::NotFound(_) => Self::NotFound,
            KernelError::OutOfCapacity { .. } => Self::OutOfCapacity,
            KernelError::TooLarge { .. } => Self::LimitExceeded,
            KernelError::TypeMismatch(_) => Self::TypeMismatch,
            KernelError::LengthMismatch { .. } => Self::LengthMismatch,
            KernelError::TooManyGroups { .. } => Self::TooManyGroups,
            KernelError::IndexOutOfBounds { .. } => Self::OutOfBounds,
            KernelError::ShortChunk { .. } | KernelError::ThreadPanicked => Self::Internal,
            KernelError::Interrupted(farmem_kernels::Interrupt::TimeLimit { .. }) => {
                Self::LimitExceeded
            }
            KernelError::Interrupted(_) => Self::Disconnected,
            _ => Self::InvalidArgument,
        }
    }

    /// The kind of an agent failure.
    pub fn of_agent(e: &AgentError) -> Self {
        match e {
            AgentError::Kernel(k) => Self::of_kernel(k),
            AgentError::Store(s) => Self::of_store(s),
            AgentError::UnknownOp(_) | AgentError::Malformed(_) => Self::ProtocolViolation,
            _ => Self::InvalidArgument,
        }
    }

    /// The kind of an agent failure a memory server reported by code.
    pub fn of_agent_code(c: AgentErrorCode) -> Self {
        match c {
            AgentErrorCode::UnknownOp | AgentErrorCode::Malformed => Self::ProtocolViolation,
            AgentErrorCode::TypeMismatch => Self::TypeMismatch,
            AgentErrorCode::LengthMismatch => Self::LengthMismatch,
            AgentErrorCode::TooManyGroups => Self::TooManyGroups,
            AgentErrorCode::IndexOutOfBounds => Self::OutOfBounds,
            AgentErrorCode::ShortChunk | AgentErrorCode::ThreadPanicked => Self::Internal,
            AgentErrorCode::TimeLimit => Self::LimitExceeded,
            AgentErrorCode::Abandoned => Self::Disconnected,
            _ => Self::InvalidArgument,
        }
    }

    /// The kind of a storage-engine failure.
    pub fn of_store(e: &StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => Self::NotFound,
            StoreError::OutOfCapacity { .. } => Self::OutOfCapacity,
            StoreError::SizeMismatch { .. } => Self::TypeMismatch,
            StoreError::TooLarge { .. }
            | StoreError::QuotaExceeded { .. }
            | StoreError::RateLimited { .. } => Self::LimitExceeded,
            _ => Self::Internal,
        }
    }
}

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
    /// The operating system refused a resource the runtime needs (address space for the local
    /// heap, a thread).
    #[error("cannot {what}")]
    System {
        /// What the runtime tried.
        what: &'static str,
        /// The system's error.
        source: std::io::Error,
    },
    /// The backend failed (server unreachable, full, object missing, ...).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A pool of servers could not be formed (its name did not resolve, no servers, ...).
    #[error("cannot form the pool of servers")]
    Pool(#[source] crate::backend::PoolError),
    /// No local memory could be found for an object.
    ///
    /// `pinned` is true when the evacuator cannot free anything because it is waiting for a scope
    /// held by the calling thread itself; leave or [`renew`](crate::Scope::renew) the scope and
    /// retry. Otherwise the evacuator made no room within the configured allocation timeout
    /// (objects pinned by other threads' scopes, or a failing backend, see `cause`).
    #[error(
        "local heap exhausted ({in_use} of {budget} bytes in use, pinned by own scope: {pinned})"
    )]
    LocalHeapExhausted {
        /// The local budget in bytes.
        budget: usize,
        /// Bytes in use when giving up.
        in_use: usize,
        /// Whether the calling thread's own scope blocks evacuation.
        pinned: bool,
        /// The last write-back failure of the evacuator, if any.
        #[source]
        cause: Option<Arc<BackendError>>,
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
    /// A [`FarPtr`](crate::FarPtr) names an object that [`FarPtr::read`](crate::FarPtr::read)
    /// is reading: it cannot be claimed until every such read ends.
    #[error("far pointer {0:#x} names an object being read through FarPtr::read")]
    PtrShared(u64),
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
    /// An object is already held in place by as many pins as it can count (15), for example by
    /// that many live [`PinnedVec`](crate::containers::PinnedVec)s of one vector.
    #[error("object pinned too many times")]
    TooManyPins,
}

impl Error {
    /// The kind of failure.
    ///
    /// [`Error::LocalHeapExhausted`] is always [`ErrorKind::LocalHeapExhausted`]; when the
    /// evacuator's write-backs had failed, its `cause` (and [`std::error::Error::source`]) holds
    /// the last failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Config(_) | Self::BudgetTooSmall { .. } => ErrorKind::Config,
            Self::System { .. } => ErrorKind::Io,
            Self::Backend(e) => e.kind(),
            Self::Pool(_) => ErrorKind::Config,
            Self::LocalHeapExhausted { .. } => ErrorKind::LocalHeapExhausted,
            Self::ObjectTooLarge { .. } | Self::TooManyObjects | Self::TooManyPins => {
                ErrorKind::LimitExceeded
            }
            Self::InvalidPtr(_) | Self::PtrShared(_) | Self::NoFarCopy => {
                ErrorKind::InvalidArgument
            }
            Self::TypeMismatch { .. } => ErrorKind::TypeMismatch,
        }
    }
}

/// Result of runtime operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
