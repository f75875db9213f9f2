//! Client sessions: a namespace of objects and agent state shared by one client's connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent::{AgentContext, AgentError, AgentState};
use crate::durable::{Journal, LogError};
use crate::quota::RateLimiter;
use crate::{Budget, Dedup, Namespace, SessionQuota, Stop, StoreError};
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
    /// Connections of this session's server-to-server copies, kept for the next copy.
    pub pushes: crate::PushConnections,
    /// Longest an agent operation of this session may run before it is stopped with
    /// [`farmem_kernels::Interrupt::TimeLimit`]; `None`: no limit.
    pub agent_time_limit: Option<Duration>,
    /// The request-rate quota (see [`Session::with_quota`]); `None`: unlimited.
    rate: Option<RateLimiter>,
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
            pushes: crate::PushConnections::default(),
            agent_time_limit: None,
            rate: None,
        }
    }

    /// Applies the operator's per-session quota: bytes and objects are checked whenever the
    /// session's namespace is charged, the request rate by [`Session::admit`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use farmem_store::{Budget, Session, SessionQuota, StoreError};
    /// let quota = SessionQuota { objects: Some(1), ..Default::default() };
    /// let s = Session::new(1, Arc::new(Budget::new(1 << 20)), 1 << 10, 1).with_quota(&quota);
    /// s.ns.put(1, b"a").unwrap();
    /// assert!(matches!(s.ns.put(2, b"b"), Err(StoreError::QuotaExceeded { .. })));
    /// ```
    pub fn with_quota(mut self, quota: &SessionQuota) -> Self {
        self.ns = self.ns.with_quota(quota.bytes, quota.objects);
        self.rate = quota
            .requests_per_second
            .zip(quota.burst())
            .map(|(rps, burst)| RateLimiter::new(rps, burst));
        self
    }

    /// Admits a request of kind `op` arriving now under the session's request-rate quota
    /// (pings, frees, stats and session ends always pass: see [`crate::is_rate_limited`]).
    ///
    /// # Errors
    /// [`StoreError::RateLimited`] with the time until a request will be accepted again; the
    /// request must then not be run.
    pub fn admit(&self, op: farmem_proto::Op) -> Result<(), StoreError> {
        match &self.rate {
            Some(r) if crate::is_rate_limited(op) => r.acquire(Instant::now()),
            _ => Ok(()),
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

    /// Waits until every change of this session is durable (at once without a data
    /// directory). A server calls this before it sends the answers of the requests it executed:
    /// an answer may acknowledge a change only once its log record is on disk.
    ///
    /// # Errors
    /// [`LogError`] when the log could not be written: the answers must not be sent.
    pub fn commit(&self) -> Result<(), LogError> {
        match self.ns.journal() {
            Some(j) => j.commit(),
            None => Ok(()),
        }
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

    fn journal(&self) -> Option<&Journal> {
        self.ns.journal()
    }
}
