use std::sync::Arc;

use farmem_store::agent::{AgentError, AgentErrorCode};

use super::ObjectId;
use crate::ErrorKind;

/// Why a backend operation failed.
///
/// Causes are kept, not flattened: [`std::error::Error::source`] leads to the I/O error, the wire
/// decoder's error or the agent's error. [`BackendError::kind`] tells the kind of failure without
/// matching every variant.
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
    /// The answer would exceed the server's response limit (its `--max-response`); the request
    /// changed nothing, and smaller batches are served.
    #[error(
        "the answer ({size} bytes or more) exceeds the server's response limit of {limit} bytes"
    )]
    ResponseTooLarge {
        /// Size of the answer (at least).
        size: u64,
        /// The server's limit.
        limit: u64,
    },
    /// A per-session quota set by the server's operator (bytes or objects) would be exceeded;
    /// nothing was changed. Freeing objects makes room again.
    #[error("memory server {addr}: session quota of {limit} {} exceeded (would hold {wanted})", kind.name())]
    QuotaExceeded {
        /// Server address.
        addr: String,
        /// Which quota.
        kind: farmem_proto::QuotaKind,
        /// The limit.
        limit: u64,
        /// What the session would have held.
        wanted: u64,
    },
    /// The session sent requests faster than the request-rate quota its server's operator set;
    /// the request was not run (send it again after `retry_after`).
    #[error(
        "memory server {addr}: request rate above the quota of {limit}/s, retry in {retry_after:?}"
    )]
    RateLimited {
        /// Server address.
        addr: String,
        /// Requests per second allowed.
        limit: u64,
        /// When a request will be accepted again.
        retry_after: std::time::Duration,
    },
    /// The server could not be reached.
    #[error("memory server {addr} unreachable")]
    Unreachable {
        /// Server address.
        addr: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The connection to a server broke.
    #[error("connection to memory server {addr} lost")]
    Disconnected {
        /// Server address.
        addr: String,
        /// What happened.
        #[source]
        cause: DisconnectCause,
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
    #[error("protocol violation")]
    Protocol(#[from] ProtocolError),
    /// An in-process agent operation was rejected (unknown op, malformed arguments, wrong type,
    /// length mismatch, too many groups, ...).
    #[error("agent operation failed")]
    Agent(#[source] AgentError),
    /// A memory server's agent rejected an operation; `code` says why, `message` is the server's
    /// text.
    #[error("agent on memory server {addr} failed ({code:?}): {message}")]
    RemoteAgent {
        /// Server address.
        addr: String,
        /// The kind of failure, as the server reported it.
        code: AgentErrorCode,
        /// The server's description.
        message: String,
    },
    /// The in-process store failed in a way without a variant of its own.
    #[error("embedded store failed")]
    Store(#[source] farmem_store::StoreError),
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
    /// A read was given up because its server stayed silent for `after_ms` (no answer to
    /// anything), as asked with [`Backend::set_read_patience`](super::Backend::set_read_patience):
    /// the server may be dying or merely stalled, so another replica should be asked. Nothing
    /// was changed. Never returned by a backend whose read patience is unset.
    #[error("memory server {addr} silent for {after_ms} ms: read given up")]
    Silent {
        /// Server address.
        addr: String,
        /// How long it had been silent.
        after_ms: u64,
    },
    /// Invalid configuration (no servers, bad address, ...).
    #[error("invalid backend configuration: {0}")]
    Config(String),
    /// Every server holding the object is down (a pool without enough redundancy lost it, or
    /// lost it for now); other objects are unaffected.
    #[error("object {id:#x} unavailable: its memory servers are down ({servers})")]
    Unavailable {
        /// The object.
        id: ObjectId,
        /// The servers that held it, comma-separated.
        servers: String,
    },
    /// A copy of another backend error (errors are not `Clone`: a pool reports one member's
    /// refusal to every request it concerns): its kind, and its text with its causes.
    #[error("{message}")]
    Copied {
        /// The original's kind.
        kind: ErrorKind,
        /// The original's message and causes.
        message: String,
    },
    /// A failure of a user-implemented [`Backend`](super::Backend) that fits no other variant.
    #[error("backend failed")]
    Custom(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl BackendError {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::OutOfCapacity { .. } => ErrorKind::OutOfCapacity,
            Self::SizeMismatch { .. } => ErrorKind::TypeMismatch,
            Self::TooLarge { .. }
            | Self::ResponseTooLarge { .. }
            | Self::QuotaExceeded { .. }
            | Self::RateLimited { .. } => ErrorKind::LimitExceeded,
            Self::Unreachable { .. } | Self::Unavailable { .. } | Self::ServerDown { .. } => {
                ErrorKind::Unreachable
            }
            Self::Disconnected { cause, .. } => cause.kind(),
            Self::AuthRefused { .. } => ErrorKind::Refused,
            Self::VersionMismatch { .. } | Self::Protocol(_) => ErrorKind::ProtocolViolation,
            Self::Timeout { .. } | Self::Silent { .. } => ErrorKind::Timeout,
            Self::Agent(e) => ErrorKind::of_agent(e),
            Self::RemoteAgent { code, .. } => ErrorKind::of_agent_code(*code),
            Self::Store(e) => ErrorKind::of_store(e),
            Self::Config(_) => ErrorKind::Config,
            Self::Copied { kind, .. } => *kind,
            Self::Custom(_) => ErrorKind::Internal,
        }
    }
}

/// Why a connection to a memory server was lost.
///
/// Shared by every request that was in flight on the connection, hence `Clone` (the I/O error
/// is behind an [`Arc`]).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DisconnectCause {
    /// Reading from or writing to the socket failed.
    #[error("socket I/O failed")]
    Io(#[source] Arc<std::io::Error>),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// The server sent bytes that are not a valid frame.
    #[error("corrupt frame from the server")]
    Corrupt(#[source] farmem_proto::WireError),
    /// An answer from the server could not be decoded or matched to a request.
    #[error("bad answer from the server")]
    BadAnswer(#[source] Arc<ProtocolError>),
    /// The server answered a connection-level error before any request.
    #[error("the server rejected the connection")]
    Server(#[source] Arc<BackendError>),
    /// A fault injected by [`FaultyBackend`](super::FaultyBackend) (a server taken down).
    #[error("injected fault: server down")]
    Injected,
    /// The server refused the connection or is shutting down (`code` is the wire error code,
    /// `message` the server's text).
    #[error("the server ended the session ({code}): {message}")]
    Refused {
        /// The raw wire error code (`farmem_proto::ErrorCode`).
        code: u16,
        /// The server's description.
        message: String,
    },
}

impl DisconnectCause {
    /// The kind of failure: [`ErrorKind::ProtocolViolation`] when the server sent something
    /// undecodable, the kind of the server's error for a connection-level error answer,
    /// [`ErrorKind::Disconnected`] otherwise.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Corrupt(_) | Self::BadAnswer(_) => ErrorKind::ProtocolViolation,
            Self::Server(e) => e.kind(),
            Self::Io(_) | Self::Closed | Self::Refused { .. } | Self::Injected => {
                ErrorKind::Disconnected
            }
        }
    }
}

/// How a peer violated the protocol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame or message body could not be decoded.
    #[error("undecodable frame or body")]
    Wire(#[from] farmem_proto::WireError),
    /// An agent answer could not be decoded.
    #[error("undecodable agent answer")]
    Agent(#[from] farmem_proto::agent::AgentDecodeError),
    /// No replica of a pool answered a request that needs one.
    #[error("no replica answered")]
    NoReplicaAnswered,
    /// An answer of the wrong type for its request.
    #[error("unexpected answer {answer}")]
    UnexpectedAnswer {
        /// The answer, as debug text.
        answer: String,
    },
    /// A batch answer with the wrong number of items.
    #[error("{what}: {actual} items for {expected} requests")]
    WrongCount {
        /// The request.
        what: &'static str,
        /// Items requested.
        expected: usize,
        /// Items answered.
        actual: usize,
    },
    /// The server reported an error code this client does not map to another variant
    /// (`code` is the raw wire code, `message` the server's text).
    #[error("memory server {addr} answered error {code}: {message}")]
    ServerError {
        /// Server address.
        addr: String,
        /// The raw wire error code.
        code: u16,
        /// The server's description.
        message: String,
    },
    /// An answer names a request that is not waiting for one.
    #[error("answer to unknown request {req_id:#x}")]
    UnknownRequest {
        /// The answer's request id.
        req_id: u64,
    },
    /// A second answer to one request.
    #[error("duplicate answer to request {req_id:#x}")]
    DuplicateAnswer {
        /// The answer's request id.
        req_id: u64,
    },
    /// A ticket was waited for twice.
    #[error("ticket already used")]
    TicketUsed,
}
