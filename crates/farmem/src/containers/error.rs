//! Errors of the containers.

use farmem_kernels::KernelError;
use farmem_proto::agent::AgentDecodeError;

use crate::ErrorKind;
use crate::backend::BackendError;

/// Why a container operation failed.
///
/// [`ContainerError::kind`] tells the kind of failure at any depth (a full server, a type
/// mismatch found by a remote or local kernel, ...); [`std::error::Error::source`] leads to the
/// cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerError {
    /// The runtime failed (backend error, local heap exhausted, ...).
    #[error(transparent)]
    Runtime(#[from] crate::Error),
    /// An index past the end.
    #[error("index {index} out of bounds for length {len}")]
    IndexOutOfBounds {
        /// The index.
        index: usize,
        /// The length.
        len: usize,
    },
    /// A kernel run on this side (the client-side path of an agent operation) failed.
    #[error("local kernel failed")]
    Kernel(#[from] KernelError),
    /// An agent answer does not fit its request (wrong size, unknown value, too many elements):
    /// a protocol violation by the server.
    #[error("inconsistent agent answer: {0}")]
    Agent(String),
    /// The server's answer could not be decoded.
    #[error("malformed agent answer")]
    Decode(#[from] AgentDecodeError),
    /// Invalid argument (mismatched lengths, zero chunk size, a predicate outside the element
    /// type, ...).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl ContainerError {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Runtime(e) => e.kind(),
            Self::IndexOutOfBounds { .. } => ErrorKind::OutOfBounds,
            Self::Kernel(e) => ErrorKind::of_kernel(e),
            Self::Agent(_) | Self::Decode(_) => ErrorKind::ProtocolViolation,
            Self::Invalid(_) => ErrorKind::InvalidArgument,
        }
    }
}

impl From<BackendError> for ContainerError {
    fn from(e: BackendError) -> Self {
        Self::Runtime(crate::Error::Backend(e))
    }
}

/// Result of container operations.
pub type Result<T, E = ContainerError> = std::result::Result<T, E>;
