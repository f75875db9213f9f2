use super::ObjectId;

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The object does not exist (never stored, or freed).
    #[error("object {0:#x} not found")]
    NotFound(ObjectId),
    /// The store has no room for the object; nothing was changed.
    #[error("out of capacity: needed {needed} bytes, {available} available")]
    OutOfCapacity {
        /// Bytes the request would have added.
        needed: u64,
        /// Bytes still free.
        available: u64,
    },
    /// An object was not the size the caller expected.
    #[error("object {id:#x} is {actual} bytes, expected {expected}")]
    SizeMismatch {
        /// The object.
        id: ObjectId,
        /// The size the caller expected.
        expected: u64,
        /// The size stored.
        actual: u64,
    },
    /// The object is larger than the protocol allows.
    #[error("object of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Requested size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The server could not be reached.
    #[error("memory server {addr} unreachable: {source}")]
    Unreachable {
        /// Server address.
        addr: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The connection to a server broke.
    #[error("connection to memory server {addr} lost: {reason}")]
    Disconnected {
        /// Server address.
        addr: String,
        /// What happened.
        reason: String,
    },
    /// The server refused our credentials.
    #[error("memory server {addr} refused authentication")]
    AuthRefused {
        /// Server address.
        addr: String,
    },
    /// The server speaks another protocol version.
    #[error("memory server {addr} speaks protocol version {server}, we speak {client}")]
    VersionMismatch {
        /// Server address.
        addr: String,
        /// Our version.
        client: u16,
        /// The server's version.
        server: u16,
    },
    /// No answer in time.
    #[error("memory server {addr} did not answer within {after_ms} ms")]
    Timeout {
        /// Server address.
        addr: String,
        /// The timeout.
        after_ms: u64,
    },
    /// The peer sent something that violates the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A remote-agent operation was rejected (bad id, wrong type, length mismatch, unknown op).
    #[error("remote operation failed: {0}")]
    Compute(String),
    /// The server has been declared down (its process is gone, it stopped answering its
    /// heartbeat, no reconnection succeeded in time, or it lost our session): the objects it
    /// held are gone, and every request to it fails at once.
    #[error("memory server {addr} is down: {reason}")]
    ServerDown {
        /// Server address.
        addr: String,
        /// Why it was declared down.
        reason: String,
    },
    /// Invalid configuration (no servers, bad address, ...).
    #[error("invalid backend configuration: {0}")]
    Config(String),
}
