//! Agent operations on primitive [`FarVec`]s, offloaded to the memory server or run locally.
//!
//! Both paths run the same kernels (`farmem_kernels`) over the same chunks in the
//! same order, so they give bit-identical results, float sums included. Offloading first writes
//! dirty local chunks back ([`FarVec::flush`]) so the server sees current data; then only the
//! arguments (chunk ids) and the result cross the network. Large results (filter, gather, argsort)
//! are written by the kernel into new objects and come back as a new [`FarVec`].
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
use std::sync::atomic::{AtomicU64, Ordering};

use bytemuck::Pod;
use farmem_kernels::{self as kernels, KernelError as AgentError, derive};
use farmem_proto::agent::{
    AgentMessage, Aggregates, ArgsortArgs, CountArgs, DeriveArgs, FilterArgs, GatherArgs,
    GroupByArgs, GroupByResult, GroupMedianResult, GroupWhereArgs, OutSpec, Predicate, Sum,
    UniqueArgs, UniqueResult, VecRef, op,
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
#[cfg(test)]
mod tests;

pub use local::AgentInput;
#[allow(unused_imports)]
use local::*;

/// Where an agent operation runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Offload {
    /// On the memory server, next to the data: only arguments and results cross the network.
    #[default]
    Remote,
    /// In this process: the chunks are fetched (non-temporally) and the same kernel runs here.
    Local,
}

/// Ids for objects the agent writes. The runtime numbers its objects from 1 upwards; agent
/// outputs take ids from the top quarter of the space so they never collide.
static NEXT_AGENT_ID: AtomicU64 = AtomicU64::new(3 << 62);

/// Process-wide bytes sent to / received from remote-agent calls by the containers.
static AGENT_SENT: AtomicU64 = AtomicU64::new(0);
static AGENT_RECEIVED: AtomicU64 = AtomicU64::new(0);

/// Bytes of agent arguments sent and results received by the containers so far (process-wide),
/// for measuring how much offloading moves.
pub fn agent_traffic() -> (u64, u64) {
    (
        AGENT_SENT.load(Ordering::Relaxed),
        AGENT_RECEIVED.load(Ordering::Relaxed),
    )
}

/// Fresh object / table ids for agent-created state.
pub(crate) fn agent_ids(n: usize) -> ObjectId {
    NEXT_AGENT_ID.fetch_add(n as u64, Ordering::Relaxed)
}

/// Calls the remote agent, counting traffic.
pub(crate) fn call(rt: &Runtime, route: ObjectId, opn: u16, args: &[u8]) -> Result<Vec<u8>> {
    AGENT_SENT.fetch_add(args.len() as u64, Ordering::Relaxed);
    let out = rt.backend().compute(route, opn, args)?;
    AGENT_RECEIVED.fetch_add(out.len() as u64, Ordering::Relaxed);
    Ok(out)
}
