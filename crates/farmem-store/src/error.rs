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
    /// A per-session quota (bytes or objects) set by the operator would be exceeded; nothing
    /// was changed.
    #[error("session quota of {limit} {} exceeded (would hold {wanted})", kind.name())]
    QuotaExceeded {
        /// Which quota.
        kind: farmem_proto::QuotaKind,
        /// The limit.
        limit: u64,
        /// What the session would have held.
        wanted: u64,
    },
    /// The session asks faster than its request-rate quota; the request was not run.
    #[error("session request rate above its quota of {limit}/s; retry in {retry_after_ms} ms")]
    RateLimited {
        /// Requests per second allowed.
        limit: u64,
        /// Milliseconds until a request will be accepted again.
        retry_after_ms: u64,
    },
}
