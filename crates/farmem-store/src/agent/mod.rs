//! The remote agent: operations the memory server runs next to the data.
//!
//! The operation set is compiled into the server; clients name an operation by number
//! (`farmem_proto::agent::op`) and send its arguments, never code. The same entry point serves the
//! TCP server and the client library's embedded store.
//!
//! - Far-vector operations (aggregate, count, filter, gather, unique, group-by with an optional
//!   row mask and medians, argsort, and [`mod@derive`]d vectors from built-in expressions) are pure
//!   [`kernels`] over chunk objects; the client library runs the same kernels for its client-side
//!   path, so both paths give bit-identical results.
//! - For clients whose vectors are spread over several servers, a sliced form of every vector
//!   operation (chunks read from an offset), filters numbering rows globally, and per-group rank
//!   counts for exact medians (`VEC_SLICED`, `VEC_FILTER_ROWS`, `VEC_GROUP_RANK`).
//! - Large derives, and group-bys and group medians of integer values, split their rows over
//!   [`AgentContext::threads`] server threads (the client-side path runs the same kernels on one
//!   thread); the merges are exact, so both paths give identical results.
//! - Hash-table operations keep the cold entries of a client's `FarHashMap` in per-session
//!   [`tables`], charged against the session's capacity.
//!
//! - An operation's working memory (sort buffers, group tables, gathered values before they
//!   become objects, median values, rank counts) is bounded from its arguments and charged to
//!   the session's capacity while it runs (see `scratch`): a request whose working memory does
//!   not fit is refused before it allocates.
//!
//! Every operation validates its input: an unknown operation, a malformed message, a missing
//! object, a wrong element type or a length mismatch is an [`AgentError`], never a panic.

mod error;
mod scratch;
mod segment;
mod table;
pub mod tables;

pub use error::{AgentError, AgentErrorCode};

use farmem_kernels::{self as kernels, KernelError, derive};

use farmem_proto::agent::{
    AgentMessage, ArgsortArgs, CountArgs, DeriveArgs, FilterArgs, FilterRowsArgs, GatherArgs,
    GatherSumArgs, GroupByArgs, GroupRankArgs, GroupWhereArgs, HtKeysArgs, SlicedArgs, UniqueArgs,
    VecRef, op,
};

/// What an operation may touch: the objects of the calling session, and its agent state.
///
/// Contexts are `Sync`: a large operation may read and write objects from several threads at
/// once (see [`derive::derive_parallel`]).
pub trait AgentContext: Sync {
    /// Calls `f` with the bytes of object `id`.
    ///
    /// # Errors
    /// [`KernelError::NotFound`] (as [`AgentError::Kernel`] or a store error) when there is no
    /// such object.
    fn with_object(&self, id: u64, f: &mut dyn FnMut(&[u8])) -> Result<(), AgentError>;

    /// Stores `data` as object `id` (replacing it), charged against the capacity.
    ///
    /// # Errors
    /// [`KernelError::OutOfCapacity`] (as [`AgentError::Kernel`] or a store error) when it does
    /// not fit; nothing is changed then.
    fn put_object(&self, id: u64, data: &[u8]) -> Result<(), AgentError>;

    /// Charges (`delta > 0`) or releases (`delta < 0`) capacity for agent-owned state such as
    /// server-side hash tables.
    ///
    /// # Errors
    /// [`KernelError::OutOfCapacity`] (as [`AgentError::Kernel`]) when a charge does not fit;
    /// nothing is charged then.
    fn charge(&self, delta: i64) -> Result<(), AgentError>;

    /// This session's agent state (server-side hash tables, ...).
    fn state(&self) -> &AgentState;

    /// Threads one large operation may use (derives, integer group-bys and medians split their
    /// rows over them).
    fn threads(&self) -> usize {
        1
    }

    /// Where changes of agent state (hash tables) are logged, on a durable server.
    fn journal(&self) -> Option<&crate::durable::Journal> {
        None
    }
}

/// Per-session state owned by the agent. Dropped with the session.
///
/// When a session ends, its owner releases [`AgentState::charged_bytes`] from the capacity.
#[derive(Debug, Default)]
pub struct AgentState {
    /// Server-side hash tables.
    pub tables: tables::Tables,
}

impl AgentState {
    /// Bytes of capacity currently charged for agent-owned state.
    pub fn charged_bytes(&self) -> u64 {
        self.tables.charged_bytes()
    }
}

/// [`kernels::ChunkIo`] over a session's objects.
struct CtxIo<'a>(&'a dyn AgentContext);

impl kernels::ChunkIo for CtxIo<'_> {
    fn read(&self, id: u64, f: &mut dyn FnMut(&[u8])) -> Result<(), KernelError> {
        self.0.with_object(id, f).map_err(KernelError::from)
    }
    fn write(&self, id: u64, data: &[u8]) -> Result<(), KernelError> {
        self.0.put_object(id, data).map_err(KernelError::from)
    }
}

pub use farmem_kernels::default_threads;

/// Runs agent operation `op` with encoded `args` against `ctx`; returns the encoded result.
///
/// # Errors
/// See [`AgentError`].
pub fn execute(ctx: &dyn AgentContext, op: u16, args: &[u8]) -> Result<Vec<u8>, AgentError> {
    let scratch = scratch::bound(op, args, ctx.threads());
    let _held = Scratch::charge(ctx, scratch)?;
    let io = CtxIo(ctx);
    let tables = &ctx.state().tables;
    tracing::trace!(op, args = args.len(), "agent operation");
    if op == op::VEC_SLICED {
        let a = SlicedArgs::decode(args)?;
        let sliced = kernels::SlicedIo::new(&io, &a)?;
        return vec_op(&sliced, ctx.threads(), a.op, &a.args)?.ok_or(AgentError::UnknownOp(a.op));
    }
    if let Some(out) = vec_op(&io, ctx.threads(), op, args)? {
        return Ok(out);
    }
    Ok(match op {
        op::HT_GET => tables.get_encoded(ctx, args)?,
        op::HT_PUT => tables.put_encoded(ctx, args)?,
        op::HT_REMOVE => tables.remove(ctx, &HtKeysArgs::decode(args)?)?.encode(),
        op::HT_LEN => tables.len(u64::decode(args)?).encode(),
        op::HT_SCAN => tables.scan_encoded(args)?,
        op::HT_DROP => tables.drop_table(ctx, u64::decode(args)?)?.encode(),
        other => return Err(AgentError::UnknownOp(other)),
    })
}

/// Working memory charged to a session while its operation runs; released when dropped.
struct Scratch<'a> {
    ctx: &'a dyn AgentContext,
    bytes: u64,
}

impl<'a> Scratch<'a> {
    /// Charges `bytes` to `ctx`'s session.
    ///
    /// # Errors
    /// The out-of-capacity (or quota) error of [`AgentContext::charge`]; nothing is charged.
    fn charge(ctx: &'a dyn AgentContext, bytes: u64) -> Result<Self, AgentError> {
        let bytes = bytes.min(i64::MAX as u64);
        if bytes > 0 {
            ctx.charge(bytes as i64)?;
        }
        Ok(Self { ctx, bytes })
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 && self.ctx.charge(-(self.bytes as i64)).is_err() {
            tracing::error!(bytes = self.bytes, "releasing agent working memory failed");
        }
    }
}

/// Runs vector operation `op` over `io`; `None` for an operation that is not a vector operation
/// (sliced operations included: they are unwrapped once, by [`execute`]).
fn vec_op<I: kernels::ChunkIo + Sync + ?Sized>(
    io: &I,
    threads: usize,
    op: u16,
    args: &[u8],
) -> Result<Option<Vec<u8>>, AgentError> {
    Ok(Some(match op {
        op::VEC_AGGREGATE => kernels::aggregate(io, &VecRef::decode(args)?)?.encode(),
        op::VEC_FILTER => kernels::filter(io, &FilterArgs::decode(args)?)?.encode(),
        op::VEC_GATHER => kernels::gather(io, &GatherArgs::decode(args)?)?.encode(),
        op::VEC_GATHER_SUM => {
            kernels::gather_sum_parallel(io, &GatherSumArgs::decode(args)?, threads)?.encode()
        }
        op::VEC_UNIQUE => kernels::unique(io, &UniqueArgs::decode(args)?)?.encode(),
        op::VEC_GROUP_BY => {
            kernels::group_by_parallel(io, &GroupByArgs::decode(args)?, threads)?.encode()
        }
        op::VEC_ARGSORT => kernels::argsort(io, &ArgsortArgs::decode(args)?)?.encode(),
        op::VEC_COUNT => kernels::count(io, &CountArgs::decode(args)?)?.encode(),
        op::VEC_DERIVE => {
            derive::derive_parallel(io, &DeriveArgs::decode(args)?, threads)?.encode()
        }
        op::VEC_GROUP_BY_WHERE => {
            let a = GroupWhereArgs::decode(args)?;
            kernels::group_by_where_parallel(io, &a, threads)?.encode()
        }
        op::VEC_GROUP_MEDIAN => {
            let a = GroupByArgs::decode(args)?;
            kernels::group_median_parallel(io, &a, threads)?.encode()
        }
        op::VEC_FILTER_ROWS => kernels::filter_rows(io, &FilterRowsArgs::decode(args)?)?.encode(),
        op::VEC_GROUP_RANK => kernels::group_rank(io, &GroupRankArgs::decode(args)?)?.encode(),
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod expr_tests;
#[cfg(test)]
mod tests;
