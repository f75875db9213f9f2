//! Agent operations on primitive [`FarVec`]s, offloaded to the memory server or run locally.
//!
//! Both paths run the same kernels (`farmem_kernels`) over the same chunks in the
//! same order, so they give bit-identical results, float sums included. Offloading first writes
//! dirty local chunks back ([`FarVec::flush`]) so the server sees current data; then only the
//! arguments (chunk ids) and the result cross the network. Large results (filter, gather, argsort)
//! are written by the kernel into new objects and come back as a new [`FarVec`].
//!
//! Over several servers (a [`PoolBackend`](crate::backend::PoolBackend), or several servers
//! without replication) a vector's chunks are spread, and an offloaded operation is spread too:
//! each server computes over the chunks it holds (one request per server, in parallel) and the
//! client merges (`spread.rs`). Answers equal the client-side ones, except that a float sum over
//! several servers adds the servers' partial sums (equal up to rounding). Group medians stay
//! exact (rounds of per-group counts). Gathers and argsorts over several servers run client-side.
//!
//! ```
//! use farmem::{Runtime, RuntimeConfig};
//! use farmem::containers::{Cmp, FarVec, Offload, Predicate, Scalar};
//! let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
//! let v = FarVec::from_slice(&rt, &[5i32, -3, 8, 0]).unwrap();
//! for mode in [Offload::Remote, Offload::Local] {
//!     assert_eq!(v.max(mode).unwrap(), Some(8));
//!     let idx = v.filter(Predicate::new(Cmp::Gt, Scalar::I(0)), mode).unwrap();
//!     assert_eq!(idx.to_vec().unwrap(), vec![0, 2]);
//!     assert_eq!(v.gather(&idx, mode).unwrap().to_vec().unwrap(), vec![5, 8]);
//! }
//! ```

use std::cell::RefCell;
use std::collections::HashMap;

use bytemuck::Pod;
use farmem_kernels::{self as kernels, KernelError as AgentError, derive};
use farmem_proto::agent::{
    AgentMessage, Aggregates, ArgsortArgs, CountArgs, DeriveArgs, FilterArgs, GatherArgs,
    GatherSumArgs, GroupByArgs, GroupByResult, GroupMedianResult, GroupWhereArgs, OutSpec,
    Predicate, Sum, UniqueArgs, UniqueResult, VecRef, op,
};
use farmem_proto::expr::Expr;

use super::elem::Primitive;
use super::error::{ContainerError, Result};
use super::prefetch::Window;
use super::vec::FarVec;
use crate::{FarSlice, ObjectId, Runtime};

mod local;
mod multi;
mod single;
mod spread;
mod spread_ops;
#[cfg(test)]
mod tests;

pub use local::AgentInput;
#[allow(unused_imports)]
use local::*;
#[allow(unused_imports)]
use spread::{spread_mode, spread_sites};

/// Where an agent operation runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Offload {
    /// On the memory server, next to the data: only arguments and results cross the network.
    #[default]
    Remote,
    /// In this process: the chunks are fetched (non-temporally) and the same kernel runs here.
    Local,
}

/// Fresh ids for agent-created state (tables), from the runtime's own id allocator, so they
/// never collide with its objects.
pub(crate) fn agent_ids(rt: &Runtime, n: usize) -> Result<ObjectId> {
    Ok(rt.reserve_ids(n as u64)?)
}

/// Calls the remote agent, counting traffic in the runtime's statistics
/// ([`Stats::agent_bytes_sent`](crate::Stats::agent_bytes_sent) and `agent_bytes_received`).
pub(crate) fn call(rt: &Runtime, route: ObjectId, opn: u16, args: &[u8]) -> Result<Vec<u8>> {
    rt.count_agent_traffic(args.len(), 0);
    let out = rt.backend().compute(route, opn, args)?;
    rt.count_agent_traffic(0, out.len());
    Ok(out)
}
