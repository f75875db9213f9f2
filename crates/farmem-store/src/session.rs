//! Client sessions: a namespace of objects and agent state shared by one client's connections.

use std::sync::Arc;
use std::time::Duration;

use crate::agent::{AgentContext, AgentError, AgentState};
use crate::{Budget, Dedup, Namespace, Stop};
use farmem_kernels::KernelError;

/// One client's objects and agent state, and the answers of its recent requests (for retries).
/// Its objects are freed when it is dropped.
#[derive(Debug)]
pub struct Session {
    /// Key that lets further connections join.
    pub key: u64,
    /// The objects.
    pub ns: Namespace,
    /// Remote-agent state.
    pub agent: AgentState,
    /// Threads one large agent operation may use.
    pub agent_threads: usize,
    /// Answers of the most recent non-idempotent requests, replayed to retries.
    pub dedup: Dedup,
    /// Largest answer body built for one request (batched gets, agent results); a larger one
    /// is answered with `ResponseTooLarge` instead. Default [`farmem_proto::MAX_FRAME_BODY`].
    pub max_response: usize,
    /// Longest an agent operation of this session may run before it is stopped with
    /// [`farmem_kernels::Interrupt::TimeLimit`]; `None`: no limit.
    pub agent_time_limit: Option<Duration>,
}

impl Session {
    /// A fresh session charging `budget`.
    pub fn new(key: u64, budget: Arc<Budget>, max_object: u64, agent_threads: usize) -> Self {
        Self {
            key,
            ns: Namespace::new(budget, max_object),
            agent: AgentState::default(),
            agent_threads: agent_threads.max(1),
            dedup: Dedup::default(),
            max_response: farmem_proto::MAX_FRAME_BODY as usize,
            agent_time_limit: None,
        }
    }

    /// Sets [`Session::agent_time_limit`].
    pub fn with_agent_time_limit(mut self, limit: Option<Duration>) -> Self {
        self.agent_time_limit = limit;
        self
    }

    /// Sets [`Session::max_response`] (at most [`farmem_proto::MAX_FRAME_BODY`]).
    pub fn with_max_response(mut self, bytes: usize) -> Self {
        self.max_response = bytes.min(farmem_proto::MAX_FRAME_BODY as usize);
        self
    }

    /// The agent's view of this session, with no limit on how long an operation runs.
    pub fn context(&self) -> StoreContext<'_> {
        StoreContext::new(&self.ns, &self.agent, self.agent_threads)
    }
}

/// [`AgentContext`] over a namespace and an agent state (a session's, or an embedded store's).
#[derive(Debug)]
pub struct StoreContext<'a> {
    /// The objects.
    pub ns: &'a Namespace,
    /// The agent state.
    pub state: &'a AgentState,
    /// Threads one large operation may use.
    pub threads: usize,
    /// When the operation must stop early.
    stop: Stop<'a>,
}

impl<'a> StoreContext<'a> {
    /// A context over `ns` and `state` whose operations run to their end.
    pub fn new(ns: &'a Namespace, state: &'a AgentState, threads: usize) -> Self {
        Self {
            ns,
            state,
            threads,
            stop: Stop::never(),
        }
    }

    /// Stops its operations as `stop` says: each object read asks it first.
    pub fn stopping(mut self, stop: Stop<'a>) -> Self {
        self.stop = stop;
        self
    }
}

impl AgentContext for StoreContext<'_> {
    fn with_object(&self, id: u64, f: &mut dyn FnMut(&[u8])) -> Result<(), AgentError> {
        self.stop
            .check()
            .map_err(|i| AgentError::Kernel(KernelError::Interrupted(i)))?;
        self.ns.get_with(id, |d| f(d)).map_err(AgentError::Store)
    }

    fn put_object(&self, id: u64, data: &[u8]) -> Result<(), AgentError> {
        self.ns.put(id, data).map_err(AgentError::Store)
    }

    fn charge(&self, delta: i64) -> Result<(), AgentError> {
        self.ns.charge(delta).map_err(AgentError::Store)
    }

    fn state(&self) -> &AgentState {
        self.state
    }

    fn threads(&self) -> usize {
        self.threads
    }
}
