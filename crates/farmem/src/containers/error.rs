//! Errors of the containers.

use farmem_proto::agent::AgentDecodeError;

use crate::backend::BackendError;

/// Why a container operation failed.
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
    /// A remote-agent operation failed on the server (or in the local kernel).
    #[error("agent operation failed: {0}")]
    Agent(String),
    /// The server's answer could not be decoded.
    #[error("malformed agent answer: {0}")]
    Decode(#[from] AgentDecodeError),
    /// Invalid argument (mismatched lengths, zero chunk size, ...).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl From<BackendError> for ContainerError {
    fn from(e: BackendError) -> Self {
        Self::Runtime(crate::Error::Backend(e))
    }
}

impl From<farmem_kernels::KernelError> for ContainerError {
    fn from(e: farmem_kernels::KernelError) -> Self {
        Self::Agent(e.to_string())
    }
}

/// Result of container operations.
pub type Result<T, E = ContainerError> = std::result::Result<T, E>;
