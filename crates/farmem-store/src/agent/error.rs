//! Errors of agent operations, and their detail codes on the wire.

use farmem_kernels::{Interrupt, KernelError};
use farmem_proto::agent::AgentDecodeError;

use crate::StoreError;

/// Why an agent operation failed.
///
/// Kernel and store failures are wrapped as they are: match on [`AgentError::Kernel`] for a
/// wrong element type, a length mismatch, too many groups, an index out of bounds, a missing
/// object or exhausted capacity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// No operation with this number.
    #[error("unknown agent operation {0}")]
    UnknownOp(u16),
    /// The arguments could not be decoded.
    #[error("malformed agent message")]
    Malformed(#[from] AgentDecodeError),
    /// A kernel (or hash-table operation) rejected its input or could not store its result.
    #[error("kernel failed")]
    Kernel(#[from] KernelError),
    /// The session's store failed.
    #[error("store failed")]
    Store(#[from] StoreError),
}

impl AgentError {
    /// An object the operation names does not exist.
    pub fn not_found(id: u64) -> Self {
        Self::Kernel(KernelError::NotFound(id))
    }

    /// The capacity would be exceeded.
    pub fn out_of_capacity(needed: u64, available: u64) -> Self {
        Self::Kernel(KernelError::OutOfCapacity { needed, available })
    }
}

impl From<AgentError> for KernelError {
    /// The kernel's view of a context failure: store failures keep their kind; failures a
    /// context never reports (unknown operation, malformed message, an edit past the end) become
    /// [`KernelError::Invalid`] with their description.
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::Kernel(k) => k,
            AgentError::Store(StoreError::NotFound(id)) => Self::NotFound(id),
            AgentError::Store(StoreError::OutOfCapacity { needed, available }) => {
                Self::OutOfCapacity { needed, available }
            }
            AgentError::Store(StoreError::TooLarge { size, limit }) => {
                Self::TooLarge { size, limit }
            }
            other => Self::Invalid(other.to_string()),
        }
    }
}

/// What kind of agent failure an error answer with code `farmem_proto::ErrorCode::Compute`
/// reports: the answer's first detail (`a`) holds one of these, so a client can tell the
/// failures apart without parsing the message.
///
/// Missing objects, exhausted capacity, oversized and mis-sized objects travel as their own
/// error codes (`NotFound`, `OutOfCapacity`, `TooLarge`, `SizeMismatch`), not as these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum AgentErrorCode {
    /// Inconsistent arguments without a code of their own ([`KernelError::Invalid`]), or a
    /// code this client does not know.
    Invalid = 0,
    /// [`AgentError::UnknownOp`].
    UnknownOp = 1,
    /// [`AgentError::Malformed`].
    Malformed = 2,
    /// [`KernelError::TypeMismatch`].
    TypeMismatch = 3,
    /// [`KernelError::LengthMismatch`].
    LengthMismatch = 4,
    /// [`KernelError::TooManyGroups`].
    TooManyGroups = 5,
    /// [`KernelError::IndexOutOfBounds`].
    IndexOutOfBounds = 6,
    /// [`KernelError::ShortChunk`].
    ShortChunk = 7,
    /// [`KernelError::ThreadPanicked`].
    ThreadPanicked = 8,
    /// [`KernelError::Interrupted`] by [`Interrupt::TimeLimit`]: the operation ran past the
    /// server's time limit for one request (the answer's second detail, `b`, holds the limit in
    /// milliseconds).
    TimeLimit = 9,
    /// [`KernelError::Interrupted`] by [`Interrupt::Abandoned`]: the client went away.
    Abandoned = 10,
}

impl AgentErrorCode {
    /// The code for a raw detail value; unknown values are [`AgentErrorCode::Invalid`].
    pub fn from_code(c: u64) -> Self {
        use AgentErrorCode::*;
        [
            UnknownOp,
            Malformed,
            TypeMismatch,
            LengthMismatch,
            TooManyGroups,
            IndexOutOfBounds,
            ShortChunk,
            ThreadPanicked,
            TimeLimit,
            Abandoned,
        ]
        .into_iter()
        .find(|k| *k as u64 == c)
        .unwrap_or(Invalid)
    }

    /// The code of a kernel failure that has no error code of its own.
    pub fn of_kernel(e: &KernelError) -> Self {
        match e {
            KernelError::TypeMismatch(_) => Self::TypeMismatch,
            KernelError::LengthMismatch { .. } => Self::LengthMismatch,
            KernelError::TooManyGroups { .. } => Self::TooManyGroups,
            KernelError::IndexOutOfBounds { .. } => Self::IndexOutOfBounds,
            KernelError::ShortChunk { .. } => Self::ShortChunk,
            KernelError::ThreadPanicked => Self::ThreadPanicked,
            KernelError::Interrupted(Interrupt::TimeLimit { .. }) => Self::TimeLimit,
            KernelError::Interrupted(Interrupt::Abandoned) => Self::Abandoned,
            _ => Self::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_invalid() {
        for c in 0..11u64 {
            assert_eq!(AgentErrorCode::from_code(c) as u64, c);
        }
        assert_eq!(AgentErrorCode::from_code(999), AgentErrorCode::Invalid);
        let e = KernelError::TooManyGroups { limit: 3 };
        assert_eq!(AgentErrorCode::of_kernel(&e), AgentErrorCode::TooManyGroups);
    }

    #[test]
    fn store_failures_keep_their_kind_in_kernels() {
        let k: KernelError = AgentError::Store(StoreError::NotFound(7)).into();
        assert_eq!(k, KernelError::NotFound(7));
        let k: KernelError = AgentError::out_of_capacity(5, 1).into();
        assert_eq!(
            k,
            KernelError::OutOfCapacity {
                needed: 5,
                available: 1
            }
        );
    }
}
