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
    /// The change could not be logged (durable servers only); nothing was changed.
    #[error("the change was not made: {0}")]
    Log(#[from] crate::durable::LogError),
}
