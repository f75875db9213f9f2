/// Why a kernel failed.
///
/// A kernel reads and writes chunk objects through a [`crate::ChunkIo`]; the store behind it
/// reports missing objects and exhausted capacity with the first two variants, and the kernel
/// itself reports arguments it cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// An object the operation names does not exist.
    #[error("object {0:#x} not found")]
    NotFound(u64),
    /// The result does not fit in the remaining capacity.
    #[error("out of capacity: needed {needed} bytes, {available} available")]
    OutOfCapacity {
        /// Bytes needed.
        needed: u64,
        /// Bytes free.
        available: u64,
    },
    /// Malformed or inconsistent arguments (wrong type, length mismatch, too many groups, ...).
    #[error("invalid arguments: {0}")]
    Invalid(String),
    /// A derive expression beyond the limits or ill-typed for its inputs.
    #[error("invalid expression")]
    Expr(#[from] farmem_proto::expr::ExprError),
}
