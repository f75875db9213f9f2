//! The remote agent: operations the memory server runs next to the data.
//!
//! The operation set is compiled into the server; clients name an operation by number
//! (`farmem_proto::agent`) and send its arguments, never code. The same entry point serves the
//! TCP server and the client library's embedded store.

/// What an operation may touch: the objects of the calling session, and its agent state.
pub trait AgentContext {
    /// Calls `f` with the bytes of object `id`.
    ///
    /// # Errors
    /// [`AgentError::NotFound`] when there is no such object.
    fn with_object(&self, id: u64, f: &mut dyn FnMut(&[u8])) -> Result<(), AgentError>;

    /// Stores `data` as object `id` (replacing it), charged against the capacity.
    ///
    /// # Errors
    /// [`AgentError::OutOfCapacity`] when it does not fit; nothing is changed then.
    fn put_object(&self, id: u64, data: &[u8]) -> Result<(), AgentError>;

    /// Charges (`delta > 0`) or releases (`delta < 0`) capacity for agent-owned state such as
    /// server-side hash tables.
    ///
    /// # Errors
    /// [`AgentError::OutOfCapacity`] when a charge does not fit; nothing is charged then.
    fn charge(&self, delta: i64) -> Result<(), AgentError>;

    /// This session's agent state (server-side hash tables, ...).
    fn state(&self) -> &AgentState;
}

/// Per-session state owned by the agent. Dropped with the session.
#[derive(Debug, Default)]
pub struct AgentState {}

/// Why an agent operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// No operation with this number.
    #[error("unknown agent operation {0}")]
    UnknownOp(u16),
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
    /// Malformed or inconsistent arguments (wrong type, length mismatch, ...).
    #[error("invalid arguments: {0}")]
    Invalid(String),
}

/// Runs agent operation `op` with encoded `args` against `ctx`; returns the encoded result.
///
/// # Errors
/// See [`AgentError`].
pub fn execute(ctx: &dyn AgentContext, op: u16, args: &[u8]) -> Result<Vec<u8>, AgentError> {
    let _ = (ctx, args);
    Err(AgentError::UnknownOp(op))
}
