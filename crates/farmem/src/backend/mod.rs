//! Backends: the far side of far memory.
//!
//! A [`Backend`] stores opaque byte objects under 64-bit [`ObjectId`]s chosen by the client.
//! Everything above it (the object runtime, containers, the paging mode) talks only to this trait,
//! so the same program runs against an [`EmbeddedStore`] in this process or against memory servers.
//!
//! All methods are blocking and thread-safe; a backend is shared as `Arc<dyn Backend>`. Batched
//! methods ([`Backend::get_many`], [`Backend::put_many`], [`Backend::free`]) cost one round trip per
//! server, whatever the batch size.

mod embedded;
mod error;
mod pending_gets;
pub mod pool;
mod protection;
mod push;
mod sites;
mod tcp;

pub use embedded::EmbeddedStore;
pub use error::{BackendError, DisconnectCause, ProtocolError};
pub use pending_gets::PendingGets;
pub use pool::{
    FaultyBackend, MemberId, MemberSource, Membership, PoolBackend, PoolConfig, PoolError,
    PoolStats, Redundancy,
};
pub use protection::Protection;
pub use push::PushTarget;
pub use sites::Sites;
pub(crate) use tcp::BulkLane;
pub use tcp::{
    ClientTls, LATENCY_BUCKETS_US, ServerHealth, TcpBackend, TcpConfig, Ticket, TlsError,
    TransportStats,
};

/// A remote-agent operation submitted with [`Backend::submit_compute`]; [`PendingCompute::wait`]
/// returns its result.
#[must_use = "a submitted operation must be waited for to learn its result"]
pub struct PendingCompute(PendingInner);

enum PendingInner {
    /// Already computed (backends without pipelining).
    Ready(Result<Vec<u8>, BackendError>),
    /// In flight on a TCP connection.
    Tcp(tcp::PendingTcp),
}

impl std::fmt::Debug for PendingCompute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            PendingInner::Ready(_) => "PendingCompute(ready)",
            PendingInner::Tcp(_) => "PendingCompute(in flight)",
        })
    }
}

impl PendingCompute {
    /// An operation that has already completed with `result`.
    pub fn ready(result: Result<Vec<u8>, BackendError>) -> Self {
        Self(PendingInner::Ready(result))
    }

    /// Waits for the result.
    ///
    /// # Errors
    /// As [`Backend::compute`].
    pub fn wait(self) -> Result<Vec<u8>, BackendError> {
        match self.0 {
            PendingInner::Ready(r) => r,
            PendingInner::Tcp(p) => p.wait(),
        }
    }
}

/// The name of a far object, chosen by the client. Unique within one client's namespace.
pub type ObjectId = u64;

/// An in-place edit of an object: write the bytes at the offset.
pub type Edit<'a> = (u32, &'a [u8]);

/// Space accounting of a backend, as reported by `stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Payload bytes plus per-object overhead currently charged against the capacity.
    pub used_bytes: u64,
    /// Hard capacity in bytes (`u64::MAX` when unlimited).
    pub capacity_bytes: u64,
    /// Number of objects stored.
    pub objects: u64,
    /// Bytes charged per object beyond its payload.
    pub per_object_overhead: u64,
    /// Payload bytes received by puts and patches since the store started (write traffic).
    pub bytes_written: u64,
    /// Bytes the store asks this client to move to other stores (a server being shrunk by its
    /// operator or its host's memory pressure); pools do it, see
    /// [`PoolBackend`].
    pub reclaim_bytes: u64,
    /// Milliseconds left to move `reclaim_bytes` away (0: nothing asked).
    pub reclaim_deadline_ms: u64,
}

/// Checks that every `(offset, bytes)` edit lies within an object of `len` bytes.
///
/// # Errors
/// [`BackendError::SizeMismatch`] naming the first edit that reaches past the end.
pub fn check_edits(id: ObjectId, len: usize, edits: &[Edit<'_>]) -> Result<(), BackendError> {
    for &(off, bytes) in edits {
        let end = off as u64 + bytes.len() as u64;
        if end > len as u64 {
            return Err(BackendError::SizeMismatch {
                id,
                expected: end,
                actual: len as u64,
            });
        }
    }
    Ok(())
}

/// Where far objects live.
///
/// # Errors
/// Every method returns a [`BackendError`] instead of panicking: a missing object, a full store,
/// a dead or unreachable server, a timeout.
pub trait Backend: Send + Sync + 'static {
    /// Stores `data` under `id`, replacing any previous object with that id.
    fn put(&self, id: ObjectId, data: &[u8]) -> Result<(), BackendError>;

    /// Fetches the object `id`.
    fn get(&self, id: ObjectId) -> Result<Vec<u8>, BackendError>;

    /// Fetches the object `id` into `buf`, which must be exactly the object's length.
    ///
    /// The default calls [`Backend::get`] and copies; transports override it to avoid the copy.
    fn get_into(&self, id: ObjectId, buf: &mut [u8]) -> Result<(), BackendError> {
        let data = self.get(id)?;
        if data.len() != buf.len() {
            return Err(BackendError::SizeMismatch {
                id,
                expected: buf.len() as u64,
                actual: data.len() as u64,
            });
        }
        buf.copy_from_slice(&data);
        Ok(())
    }

    /// Fetches many objects in one round trip per server; results are in the order of `ids`.
    fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>, BackendError>;

    /// Starts [`Backend::get_many`] without waiting, so that a caller can have reads on several
    /// backends in flight at once and collect each with [`PendingGets::wait`].
    ///
    /// The default reads now and returns the objects ready; pipelined transports override it.
    fn submit_get_many(&self, ids: &[ObjectId]) -> PendingGets {
        PendingGets::ready(self.get_many(ids))
    }

    /// Stores many objects in one round trip per server.
    fn put_many(&self, items: &[(ObjectId, &[u8])]) -> Result<(), BackendError>;

    /// Overwrites parts of an existing object in place: each edit is `(offset, bytes)`.
    ///
    /// This is how the paging mode writes back only the dirty cache lines of a page. The default
    /// fetches, edits and re-stores the whole object; backends override it to send only the edits.
    ///
    /// # Errors
    /// [`BackendError::NotFound`] if the object does not exist, [`BackendError::SizeMismatch`] if
    /// an edit reaches past its end (nothing is changed then).
    fn patch(&self, id: ObjectId, edits: &[Edit<'_>]) -> Result<(), BackendError> {
        let mut data = self.get(id)?;
        check_edits(id, data.len(), edits)?;
        for &(off, bytes) in edits {
            data[off as usize..off as usize + bytes.len()].copy_from_slice(bytes);
        }
        self.put(id, &data)
    }

    /// [`Backend::patch`] for many objects in one round trip per server.
    fn patch_many(&self, items: &[(ObjectId, &[Edit<'_>])]) -> Result<(), BackendError> {
        items
            .iter()
            .try_for_each(|&(id, edits)| self.patch(id, edits))
    }

    /// Frees objects and gives their space back. Unknown ids are ignored.
    fn free(&self, ids: &[ObjectId]) -> Result<(), BackendError>;

    /// Space accounting, summed over all servers.
    fn stats(&self) -> Result<StoreStats, BackendError>;

    /// Runs a server-side operation (the remote agent) and returns its encoded result.
    ///
    /// `op` and the encoding of `args` and of the result are defined by `farmem_proto::agent`.
    /// `route` picks the server for multi-server backends: the operation runs on the server that
    /// owns object id `route`.
    fn compute(&self, route: ObjectId, op: u16, args: &[u8]) -> Result<Vec<u8>, BackendError>;

    /// Starts [`Backend::compute`] without waiting for it, so a caller can keep several
    /// operations in flight (or work meanwhile) and collect each with [`PendingCompute::wait`].
    /// Operations submitted by one thread to one server run in submission order.
    ///
    /// The default runs the operation now and returns its result ready; pipelined transports
    /// override it.
    fn submit_compute(&self, route: ObjectId, op: u16, args: &[u8]) -> PendingCompute {
        PendingCompute::ready(self.compute(route, op, args))
    }

    /// The servers of a backend over several, for agent operations whose objects are spread
    /// over them (`None`, the default: every object is reached through [`Backend::compute`] on
    /// one server). Wrappers forward it.
    fn sites(&self) -> Option<&dyn Sites> {
        None
    }

    /// Lets reads (`get`, `get_into`, `get_many` and the agent's hash-table lookups) give up
    /// with [`BackendError::Silent`] once their server has sent nothing at all for `patience`
    /// (`None`: wait for the answer or the transport's own failure detection, the default).
    ///
    /// A pool sets it on its members so that a read stuck on a server that just died (a killed
    /// process stays silent until the kernel has freed its memory) is asked of another replica
    /// instead of waiting for the failure to be detected. Backends without such waits ignore it.
    fn set_read_patience(&self, patience: Option<std::time::Duration>) {
        let _ = patience;
    }

    /// Where another memory server can write objects into this client's session directly (a
    /// server-to-server copy, [`farmem_proto::agent::op::OBJ_PUSH`]), when this backend is one
    /// memory server reached over TCP in clear text (servers copy to each other without TLS)
    /// with a session open; `None`, the default, otherwise. Such
    /// a backend also runs the push itself: its [`Backend::compute`] of `OBJ_PUSH` asks its
    /// server to copy objects of this session to another one. Wrappers forward it.
    fn push_target(&self) -> Option<PushTarget> {
        None
    }

    /// Ends this client's sessions on its servers and opens fresh, empty ones: for a pool
    /// member that was failed over (its server went silent, or its connection broke) and whose
    /// server answers again. The servers free every object of the old sessions (a server that
    /// restarted since has none to free), this backend fails every later call with
    /// [`BackendError::ServerDown`], and the returned backend reaches the same servers with the
    /// same settings. `probe` bounds the wait for each server's first answer.
    ///
    /// `None`, the default: the backend cannot do it (a pool then never takes the member back).
    ///
    /// # Errors
    /// A server that does not answer within `probe`, refuses the connection, or cannot be
    /// connected to again. The old sessions may be ended already then: the call can be repeated.
    fn renew(
        &self,
        probe: std::time::Duration,
    ) -> Option<Result<std::sync::Arc<dyn Backend>, BackendError>> {
        let _ = probe;
        None
    }

    /// Takes this client's sessions on its servers over to a new backend, with everything they
    /// hold: for a pool member that was failed over because its server went silent or its
    /// connection broke, and whose server answers again without having lost the session (it
    /// was frozen or cut off, not restarted). This backend fails every later call with
    /// [`BackendError::ServerDown`] (nothing more lands through it), and the returned one
    /// reaches the same sessions over new connections, numbering its requests past every id
    /// this one used (the servers' retry windows never mistake a new request for an old one).
    /// `probe` bounds the wait for each server's first answer.
    ///
    /// `Ok(None)`: a server no longer knows its session (it restarted, or the session's lease ran
    /// out): what it held is gone. `None`, the default: the backend cannot do it.
    ///
    /// # Errors
    /// A server that does not answer within `probe` or refuses the connection; the sessions are
    /// left as they are, and the call can be repeated.
    fn resume(
        &self,
        probe: std::time::Duration,
    ) -> Option<Result<Option<std::sync::Arc<dyn Backend>>, BackendError>> {
        let _ = probe;
        None
    }

    /// Lets go of this backend's sessions without closing them (every later call fails with
    /// [`BackendError::ServerDown`], and dropping the backend closes nothing), so that they can
    /// be resumed again ([`Backend::resume`] on the backend they were resumed from). The
    /// default does nothing.
    fn detach(&self) {}

    /// A new backend over the same servers with the same settings and fresh, empty sessions,
    /// leaving this one's sessions as they are (`None`, the default: the backend cannot).
    ///
    /// # Errors
    /// As connecting in the first place.
    fn reconnect(&self) -> Option<Result<std::sync::Arc<dyn Backend>, BackendError>> {
        None
    }

    /// A short human-readable name ("embedded", "tcp://127.0.0.1:7070", ...).
    fn describe(&self) -> String;
}
