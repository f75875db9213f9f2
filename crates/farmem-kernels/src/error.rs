/// Why a kernel failed.
///
/// A kernel reads and writes chunk objects through a [`crate::ChunkIo`]; the store behind it
/// reports missing objects and exhausted capacity with [`KernelError::NotFound`],
/// [`KernelError::OutOfCapacity`] and [`KernelError::TooLarge`]. The kernel itself reports
/// arguments it cannot work with: the variants callers tell apart (a wrong element type, vectors
/// of different lengths, too many groups, an index past the end, ...) are typed, the remaining
/// inconsistencies are [`KernelError::Invalid`] with a description.
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
    /// A result object exceeds the store's object size limit.
    #[error("object of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A vector or operand has an element type the operation does not accept.
    #[error("type mismatch: {0}")]
    TypeMismatch(String),
    /// Vectors that must have the same length do not.
    #[error("{what}: vectors of {left} and {right} elements")]
    LengthMismatch {
        /// Which vectors.
        what: &'static str,
        /// Length of the first.
        left: u64,
        /// Length of the second.
        right: u64,
    },
    /// A group-by or unique found more distinct keys than the caller's limit.
    #[error("more than {limit} groups")]
    TooManyGroups {
        /// The caller's limit.
        limit: u32,
    },
    /// An index (of a gather) is past the end of the vector.
    #[error("index {index} out of bounds for length {len}")]
    IndexOutOfBounds {
        /// The index.
        index: u64,
        /// The vector's length.
        len: u64,
    },
    /// A chunk object holds fewer bytes than its vector says.
    #[error("chunk {id:#x} holds {actual} bytes, {needed} needed")]
    ShortChunk {
        /// The chunk object.
        id: u64,
        /// Bytes the vector's layout needs.
        needed: u64,
        /// Bytes the object holds.
        actual: u64,
    },
    /// A worker thread of a parallel kernel panicked.
    #[error("a kernel thread panicked")]
    ThreadPanicked,
    /// The operation was stopped before it finished; nothing it would have returned is kept
    /// (outputs it had already written stay, as after any failure).
    #[error("operation interrupted: {0}")]
    Interrupted(Interrupt),
    /// Other malformed or inconsistent arguments (zero chunk size, too few output ids, ...).
    #[error("invalid arguments: {0}")]
    Invalid(String),
    /// A derive expression beyond the limits or ill-typed for its inputs.
    #[error("invalid expression")]
    Expr(#[from] farmem_proto::expr::ExprError),
}

/// Why an operation was stopped: the store behind a [`crate::ChunkIo`] answers a read with
/// [`KernelError::Interrupted`] once the operation has run too long or nobody waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Interrupt {
    /// It ran past its time limit.
    #[error("it ran past its time limit of {limit_ms} ms")]
    TimeLimit {
        /// The limit, in milliseconds.
        limit_ms: u64,
    },
    /// The client that asked for it went away.
    #[error("its client went away")]
    Abandoned,
}
