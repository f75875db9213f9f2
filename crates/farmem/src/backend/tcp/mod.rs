//! The TCP transport: memory servers as a [`Backend`].

mod config;
mod conn;
mod counters;
mod lane;
mod link;
mod renew;
mod reply;
mod sites;
mod stream;
mod ticket;
mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use farmem_proto::agent::op as agent_op;
use farmem_proto::{Op, ServerStats, body, owner_of};

pub use self::config::TcpConfig;
use self::conn::{Connection, Pending, Reply};
pub use self::counters::{LATENCY_BUCKETS_US, TransportStats};
pub(crate) use self::lane::BulkLane;
use self::link::{Link, LinkConfig};
pub use self::ticket::Ticket;
pub use self::tls::{ClientTls, TlsError};
use super::{
    Backend, BackendError, Edit, ObjectId, PendingCompute, PendingGets, PendingInner,
    ProtocolError, StoreStats,
};

/// A remote-agent operation in flight (see [`Backend::submit_compute`]).
pub(super) struct PendingTcp {
    ticket: Ticket,
    deadline: Instant,
    /// A lookup that may give up on a silent server ([`Backend::set_read_patience`]).
    patient: bool,
}

impl PendingTcp {
    pub(super) fn wait(self) -> Result<Vec<u8>, BackendError> {
        match self.ticket.wait_as(self.deadline, self.patient)? {
            Reply::Data(d) => Ok(d),
            other => Err(unexpected(&other)),
        }
    }
}

/// A batched read in flight (see [`Backend::submit_get_many`]).
pub(super) struct PendingTcpGets {
    ticket: Ticket,
    deadline: Instant,
    ids: Vec<ObjectId>,
}

impl PendingTcpGets {
    pub(super) fn wait(self) -> Result<Vec<Vec<u8>>, BackendError> {
        let reply = self.ticket.wait_as(self.deadline, true)?;
        let Reply::Many(items) = reply else {
            return Err(unexpected(&reply));
        };
        if items.len() != self.ids.len() {
            return Err(BackendError::Protocol(ProtocolError::WrongCount {
                what: "get_many",
                expected: self.ids.len(),
                actual: items.len(),
            }));
        }
        items
            .into_iter()
            .zip(&self.ids)
            .map(|(o, &id)| o.ok_or(BackendError::NotFound(id)))
            .collect()
    }
}

struct ServerLink {
    link: Arc<Link>,
    conns: Vec<Arc<Connection>>,
    heartbeat: Option<JoinHandle<()>>,
}

/// The health of one memory server of a [`TcpBackend`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerHealth {
    /// The server's address, as configured.
    pub addr: String,
    /// Why the server was declared down, or `None` while it serves.
    pub down: Option<String>,
}

/// Memory servers over TCP.
///
/// Thread-safe and pipelined: any number of threads may call it at once, their requests share
/// the connections and are answered out of order. Batched calls cost one round trip per server.
///
/// Robust to connection loss: a broken connection is re-established within
/// [`TcpConfig::reconnect_within`], the server-side session is resumed (it outlives its
/// connections by the server's lease) and the requests in flight are resent (the server answers
/// a resent write once), so callers see only latency. A server that refuses the reconnection,
/// cannot be reached in time, or stops answering its heartbeat is declared down for good: its
/// requests fail fast with [`BackendError::ServerDown`] naming it, frees to it are dropped (its
/// objects are gone with it), and the other servers keep working. Dropping the backend closes
/// the sessions, freeing their objects at once.
///
/// ```no_run
/// use farmem::{Backend, backend::{TcpBackend, TcpConfig}};
/// let b = TcpBackend::connect(TcpConfig::new(["127.0.0.1:7070"])).unwrap();
/// b.put(1, b"hello").unwrap();
/// assert_eq!(b.get(1).unwrap(), b"hello");
/// // Keep many requests in flight from one thread:
/// let tickets: Vec<_> = (0..16).map(|_| b.submit_get(1).unwrap()).collect();
/// for t in tickets {
///     assert_eq!(b.wait_get(t).unwrap(), b"hello");
/// }
/// ```
pub struct TcpBackend {
    servers: Vec<ServerLink>,
    /// What it was made with ([`TcpBackend::renew_sessions`] connects again with it).
    config: TcpConfig,
    timeout: Duration,
    /// A bulk request was sent (see [`BulkLane`]): the last connection is kept for them.
    bulk_seen: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for TcpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpBackend")
            .field("servers", &self.servers.len())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

static THREAD_SEQ: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_NO: usize = THREAD_SEQ.fetch_add(1, Ordering::Relaxed);
}

/// Request bodies are cut so that no frame exceeds this (or the server's limit).
const BATCH_BYTES: usize = 4 << 20;
/// Most ids in one get_many / free frame.
const BATCH_IDS: usize = 4096;

impl TcpBackend {
    /// Connects to every server (all connections of a server share one session) and starts a
    /// heartbeat thread per server.
    ///
    /// # Errors
    /// [`BackendError::Config`] (no servers, zero connections), [`BackendError::Unreachable`],
    /// [`BackendError::AuthRefused`], [`BackendError::VersionMismatch`], [`BackendError::Timeout`].
    pub fn connect(config: TcpConfig) -> Result<Self, BackendError> {
        Self::connect_adopting(config, &[])
    }

    /// [`TcpBackend::connect`], resuming on server `i` the session `adopt[i]` (key, resume
    /// secret, next request id) instead of creating one, for the servers `adopt` covers.
    pub(crate) fn connect_adopting(
        config: TcpConfig,
        adopt: &[(u64, u64, u64)],
    ) -> Result<Self, BackendError> {
        if config.servers.is_empty() {
            return Err(BackendError::Config("no memory servers given".into()));
        }
        if config.connections_per_server == 0 {
            return Err(BackendError::Config(
                "connections_per_server must be at least 1".into(),
            ));
        }
        let lc = LinkConfig {
            token: config.token.clone(),
            tls: config.tls.clone(),
            version: config.version,
            timeout: config.timeout,
            reconnect_within: config.reconnect_within,
            heartbeat: config.heartbeat,
            detect_after: config.detect_after,
            await_restart: config.await_restart,
        };
        let mut backend = Self {
            servers: Vec::new(),
            config: config.clone(),
            timeout: config.timeout,
            bulk_seen: std::sync::atomic::AtomicBool::new(false),
        };
        for (i, addr) in config.servers.iter().enumerate() {
            let link = Link::new(addr.clone(), lc.clone());
            if let Some(&(session, secret, next)) = adopt.get(i) {
                link.adopt_session(session, secret);
                link.continue_ids(next);
            }
            let mut conns = Vec::new();
            for _ in 0..config.connections_per_server {
                conns.push(Connection::open(&link)?);
            }
            let mut server = ServerLink {
                link: link.clone(),
                conns,
                heartbeat: None,
            };
            if !lc.heartbeat.is_zero() {
                let hb = Connection::open(&link)?;
                let quantum = (lc.detect_after / 4).max(Duration::from_millis(5));
                hb.set_read_timeout(quantum);
                let l = link.clone();
                let spawned = std::thread::Builder::new()
                    .name("farmem-heartbeat".into())
                    .spawn(move || l.heartbeat(&hb))
                    .map_err(|e| BackendError::Unreachable {
                        addr: addr.clone(),
                        source: e,
                    })?;
                server.heartbeat = Some(spawned);
            }
            backend.servers.push(server);
        }
        Ok(backend)
    }

    /// The health of every server, in configuration order.
    pub fn server_health(&self) -> Vec<ServerHealth> {
        self.servers
            .iter()
            .map(|s| ServerHealth {
                addr: s.link.addr.clone(),
                down: s.link.down_reason(),
            })
            .collect()
    }

    /// Traffic with every server since connecting, in configuration order: requests, errors,
    /// bytes, reconnects and latency (the client's side of the server's metrics).
    pub fn transport_stats(&self) -> Vec<TransportStats> {
        self.servers
            .iter()
            .map(|s| s.link.counters.snapshot(&s.link.addr))
            .collect()
    }

    /// Whether server number `server` (configuration order) has been declared down; `false`
    /// for a number out of range.
    pub fn is_down(&self, server: usize) -> bool {
        self.servers.get(server).is_some_and(|s| s.link.is_down())
    }

    /// The server (configuration order) that owns object `id`.
    pub fn server_of_object(&self, id: ObjectId) -> usize {
        self.server_of(id)
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    fn server_of(&self, id: ObjectId) -> usize {
        owner_of(id, self.servers.len())
    }

    fn conn(&self, server: usize) -> &Arc<Connection> {
        let conns = &self.servers[server].conns;
        let n = conns.len();
        if n == 1 {
            return &conns[0];
        }
        let i = if lane::is_bulk() {
            self.bulk_seen.store(true, Ordering::Relaxed);
            n - 1
        } else if self.bulk_seen.load(Ordering::Relaxed) {
            THREAD_NO.with(|t| *t) % (n - 1)
        } else {
            THREAD_NO.with(|t| *t) % n
        };
        &conns[i]
    }

    fn check_size(&self, conn: &Connection, len: usize) -> Result<(), BackendError> {
        let limit = conn.max_frame as usize - 64;
        if len > limit {
            return Err(BackendError::TooLarge {
                size: len as u64,
                limit: limit as u64,
            });
        }
        Ok(())
    }

    fn call(
        &self,
        conn: &Connection,
        op: Op,
        body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Reply, BackendError> {
        let p = conn.submit(op, true, body)?;
        conn.wait(p, self.deadline())
    }

    /// [`TcpBackend::call`] for a read: gives up on a silent server after the read patience.
    fn call_read(
        &self,
        conn: &Connection,
        op: Op,
        body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Reply, BackendError> {
        let p = conn.submit(op, true, body)?;
        conn.wait_read(p, self.deadline())
    }

    fn expect_data(&self, r: Reply) -> Result<Vec<u8>, BackendError> {
        match r {
            Reply::Data(d) => Ok(d),
            other => Err(unexpected(&other)),
        }
    }

    /// Groups item indices by owning server.
    fn by_server<T>(&self, items: &[T], id: impl Fn(&T) -> ObjectId) -> Vec<Vec<usize>> {
        let mut groups = vec![Vec::new(); self.servers.len()];
        for (i, it) in items.iter().enumerate() {
            groups[self.server_of(id(it))].push(i);
        }
        groups
    }

    /// Sends one batched request per chunk per server, then collects all answers.
    ///
    /// `chunks(group)` cuts a server's item indices into frames; `encode` writes a frame body.
    fn scatter(
        &self,
        groups: &[Vec<usize>],
        op: Op,
        read: bool,
        chunks: impl Fn(&[usize]) -> Vec<std::ops::Range<usize>>,
        encode: impl Fn(&[usize], &mut Vec<u8>),
    ) -> Result<Vec<(usize, std::ops::Range<usize>, Reply)>, BackendError> {
        let mut sent: Vec<(usize, std::ops::Range<usize>, Pending)> = Vec::new();
        let mut first_err = None;
        for (server, group) in groups.iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let conn = self.conn(server);
            for range in chunks(group) {
                match conn.submit(op, false, |b| encode(&group[range.clone()], b)) {
                    Ok(p) => sent.push((server, range, p)),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            conn.flush();
        }
        let deadline = self.deadline();
        let mut out = Vec::with_capacity(sent.len());
        for (server, range, p) in sent {
            let conn = self.conn(server);
            let r = if read {
                conn.wait_read(p, deadline)
            } else {
                conn.wait(p, deadline)
            };
            match r {
                Ok(r) => out.push((server, range, r)),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Full server statistics of every server, in configuration order.
    ///
    /// # Errors
    /// Transport errors; [`BackendError::ServerDown`] when a server is down.
    pub fn server_stats(&self) -> Result<Vec<ServerStats>, BackendError> {
        (0..self.servers.len())
            .map(|s| match self.call(self.conn(s), Op::Stats, |_| {})? {
                Reply::Stats(st) => Ok(st),
                other => Err(unexpected(&other)),
            })
            .collect()
    }

    /// Queues a get of `id` without waiting; collect it with [`TcpBackend::wait_get`].
    ///
    /// Queued requests are written when a ticket of theirs is waited for, on
    /// [`TcpBackend::flush`], or when enough have accumulated, so a thread can keep `depth`
    /// requests in flight with few system calls.
    ///
    /// # Errors
    /// [`BackendError::ServerDown`] when the server is down.
    pub fn submit_get(&self, id: ObjectId) -> Result<Ticket, BackendError> {
        let conn = self.conn(self.server_of(id));
        let p = conn.submit(Op::Get, false, |b| b.extend_from_slice(&id.to_le_bytes()))?;
        Ok(Ticket::new(conn.clone(), p, id))
    }

    /// Queues a put without waiting; collect it with [`TcpBackend::wait_done`].
    ///
    /// # Errors
    /// [`BackendError::TooLarge`], [`BackendError::ServerDown`].
    pub fn submit_put(&self, id: ObjectId, data: &[u8]) -> Result<Ticket, BackendError> {
        let conn = self.conn(self.server_of(id));
        self.check_size(conn, data.len())?;
        let p = conn.submit(Op::Put, false, |b| {
            b.extend_from_slice(&id.to_le_bytes());
            b.extend_from_slice(data);
        })?;
        Ok(Ticket::new(conn.clone(), p, id))
    }

    /// Writes every queued request now.
    pub fn flush(&self) {
        for s in &self.servers {
            for c in &s.conns {
                c.flush();
            }
        }
    }

    /// Waits for a [`TcpBackend::submit_get`] and returns the object.
    ///
    /// # Errors
    /// As [`Backend::get`].
    pub fn wait_get(&self, ticket: Ticket) -> Result<Vec<u8>, BackendError> {
        let r = ticket.wait(self.deadline())?;
        self.expect_data(r)
    }

    /// Waits for a [`TcpBackend::submit_get`] and copies the object into `buf`.
    ///
    /// # Errors
    /// As [`Backend::get_into`].
    pub fn wait_get_into(&self, ticket: Ticket, buf: &mut [u8]) -> Result<(), BackendError> {
        let id = ticket.id();
        let d = self.wait_get(ticket)?;
        copy_exact(id, &d, buf)
    }

    /// Waits for a [`TcpBackend::submit_put`].
    ///
    /// # Errors
    /// As [`Backend::put`].
    pub fn wait_done(&self, ticket: Ticket) -> Result<(), BackendError> {
        match ticket.wait(self.deadline())? {
            Reply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(r: &Reply) -> BackendError {
    BackendError::Protocol(ProtocolError::UnexpectedAnswer {
        answer: format!("{r:?}"),
    })
}

fn copy_exact(id: ObjectId, d: &[u8], buf: &mut [u8]) -> Result<(), BackendError> {
    if d.len() != buf.len() {
        return Err(BackendError::SizeMismatch {
            id,
            expected: buf.len() as u64,
            actual: d.len() as u64,
        });
    }
    buf.copy_from_slice(d);
    Ok(())
}

/// Cuts `group` into ranges of at most `max_items` whose `size` sums stay under `max_bytes`
/// (a single oversized item gets a range of its own).
fn cut(
    group: &[usize],
    max_items: usize,
    max_bytes: usize,
    size: impl Fn(usize) -> usize,
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (k, &i) in group.iter().enumerate() {
        let s = size(i);
        if k > start && (k - start >= max_items || bytes + s > max_bytes) {
            out.push(start..k);
            start = k;
            bytes = 0;
        }
        bytes += s;
    }
    if start < group.len() {
        out.push(start..group.len());
    }
    out
}

impl Backend for TcpBackend {
    fn put(&self, id: ObjectId, data: &[u8]) -> Result<(), BackendError> {
        let conn = self.conn(self.server_of(id));
        self.check_size(conn, data.len())?;
        match self.call(conn, Op::Put, |b| {
            b.extend_from_slice(&id.to_le_bytes());
            b.extend_from_slice(data);
        })? {
            Reply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    fn get(&self, id: ObjectId) -> Result<Vec<u8>, BackendError> {
        let conn = self.conn(self.server_of(id));
        let r = self.call_read(conn, Op::Get, |b| b.extend_from_slice(&id.to_le_bytes()))?;
        self.expect_data(r)
    }

    fn get_into(&self, id: ObjectId, buf: &mut [u8]) -> Result<(), BackendError> {
        let d = self.get(id)?;
        copy_exact(id, &d, buf)
    }

    fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>, BackendError> {
        let groups = self.by_server(ids, |&id| id);
        let answers = self.scatter(
            &groups,
            Op::GetMany,
            true,
            |g| cut(g, BATCH_IDS, usize::MAX, |_| 0),
            |idx, b| {
                let v: Vec<u64> = idx.iter().map(|&i| ids[i]).collect();
                body::ids(b, &v);
            },
        )?;
        let mut out: Vec<Option<Vec<u8>>> = vec![None; ids.len()];
        for (server, range, reply) in answers {
            let Reply::Many(items) = reply else {
                return Err(unexpected(&reply));
            };
            let idx = &groups[server][range];
            if items.len() != idx.len() {
                return Err(BackendError::Protocol(ProtocolError::WrongCount {
                    what: "get_many",
                    expected: idx.len(),
                    actual: items.len(),
                }));
            }
            for (&i, item) in idx.iter().zip(items) {
                out[i] = item;
            }
        }
        out.into_iter()
            .zip(ids)
            .map(|(o, &id)| o.ok_or(BackendError::NotFound(id)))
            .collect()
    }

    fn submit_get_many(&self, ids: &[ObjectId]) -> PendingGets {
        // One server, one request: in flight now. Anything larger reads as `get_many` does.
        if self.servers.len() != 1 || ids.is_empty() || ids.len() > BATCH_IDS {
            return PendingGets::ready(self.get_many(ids));
        }
        let conn = self.conn(0);
        match conn.submit(Op::GetMany, true, |b| body::ids(b, ids)) {
            Ok(p) => PendingGets::tcp(PendingTcpGets {
                ticket: Ticket::new(conn.clone(), p, ids[0]),
                deadline: self.deadline(),
                ids: ids.to_vec(),
            }),
            Err(e) => PendingGets::ready(Err(e)),
        }
    }

    fn put_many(&self, items: &[(ObjectId, &[u8])]) -> Result<(), BackendError> {
        for (server, _) in self.servers.iter().enumerate() {
            let conn = self.conn(server);
            for (_, d) in items {
                self.check_size(conn, d.len())?;
            }
        }
        let groups = self.by_server(items, |it| it.0);
        let max = BATCH_BYTES.min(self.conn(0).max_frame as usize / 2);
        self.scatter(
            &groups,
            Op::PutMany,
            false,
            |g| cut(g, usize::MAX, max, |i| items[i].1.len() + 12),
            |idx, b| {
                let v: Vec<(u64, &[u8])> = idx.iter().map(|&i| items[i]).collect();
                body::put_many(b, &v);
            },
        )
        .map(drop)
    }

    fn patch(&self, id: ObjectId, edits: &[Edit<'_>]) -> Result<(), BackendError> {
        self.patch_many(&[(id, edits)])
    }

    fn patch_many(&self, items: &[(ObjectId, &[Edit<'_>])]) -> Result<(), BackendError> {
        let groups = self.by_server(items, |it| it.0);
        let max = BATCH_BYTES.min(self.conn(0).max_frame as usize / 2);
        let size =
            |i: usize| -> usize { 12 + items[i].1.iter().map(|(_, b)| 8 + b.len()).sum::<usize>() };
        for i in 0..items.len() {
            self.check_size(self.conn(0), size(i))?;
        }
        self.scatter(
            &groups,
            Op::Patch,
            false,
            |g| cut(g, usize::MAX, max, size),
            |idx, b| {
                let v: Vec<body::PatchItem<'_>> = idx.iter().map(|&i| items[i]).collect();
                body::patch(b, &v);
            },
        )
        .map(drop)
    }

    fn free(&self, ids: &[ObjectId]) -> Result<(), BackendError> {
        let mut groups = self.by_server(ids, |&id| id);
        // Objects of a down server are gone with it: nothing to free there.
        for (s, g) in groups.iter_mut().enumerate() {
            if self.is_down(s) {
                g.clear();
            }
        }
        let r = self.scatter(
            &groups,
            Op::Free,
            false,
            |g| cut(g, BATCH_IDS, usize::MAX, |_| 0),
            |idx, b| {
                let v: Vec<u64> = idx.iter().map(|&i| ids[i]).collect();
                body::ids(b, &v);
            },
        );
        match r {
            Ok(_) | Err(BackendError::ServerDown { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn stats(&self) -> Result<StoreStats, BackendError> {
        // With every server down there is no store left to describe: say so (a pool member
        // over one server learns it is gone from its periodic stats, even holding nothing).
        if let Some(s) = self.servers.iter().find(|s| s.link.is_down())
            && self.servers.iter().all(|s| s.link.is_down())
        {
            return Err(s.link.down_error());
        }
        let mut total = StoreStats::default();
        let live: Result<Vec<ServerStats>, BackendError> = (0..self.servers.len())
            .filter(|&s| !self.is_down(s))
            .map(|s| match self.call(self.conn(s), Op::Stats, |_| {})? {
                Reply::Stats(st) => Ok(st),
                other => Err(unexpected(&other)),
            })
            .collect();
        // A down server's objects are gone: the live servers are the whole store.
        for s in live? {
            total.used_bytes += s.used_bytes;
            total.capacity_bytes = total.capacity_bytes.saturating_add(s.capacity_bytes);
            total.objects += s.objects;
            total.per_object_overhead = s.per_object_overhead;
            total.bytes_written += s.bytes_written;
            total.reclaim_bytes += s.reclaim_bytes;
            if s.reclaim_deadline_ms > 0
                && (total.reclaim_deadline_ms == 0
                    || s.reclaim_deadline_ms < total.reclaim_deadline_ms)
            {
                total.reclaim_deadline_ms = s.reclaim_deadline_ms;
            }
        }
        Ok(total)
    }

    fn compute(&self, route: ObjectId, op: u16, args: &[u8]) -> Result<Vec<u8>, BackendError> {
        self.submit_compute(route, op, args).wait()
    }

    fn submit_compute(&self, route: ObjectId, op: u16, args: &[u8]) -> PendingCompute {
        let conn = self.conn(self.server_of(route));
        if let Err(e) = self.check_size(conn, args.len()) {
            return PendingCompute::ready(Err(e));
        }
        let submitted = conn.submit(Op::Compute, true, |b| {
            b.extend_from_slice(&route.to_le_bytes());
            b.extend_from_slice(&op.to_le_bytes());
            b.extend_from_slice(&0u16.to_le_bytes());
            b.extend_from_slice(args);
        });
        match submitted {
            Ok(p) => PendingCompute(PendingInner::Tcp(PendingTcp {
                ticket: Ticket::new(conn.clone(), p, route),
                deadline: self.deadline(),
                patient: matches!(op, agent_op::HT_GET | agent_op::HT_LEN | agent_op::HT_SCAN),
            })),
            Err(e) => PendingCompute::ready(Err(e)),
        }
    }

    fn sites(&self) -> Option<&dyn super::Sites> {
        (self.servers.len() > 1).then_some(self as &dyn super::Sites)
    }

    fn set_read_patience(&self, patience: Option<Duration>) {
        for s in &self.servers {
            s.link.set_read_patience(patience);
            // The leader of a waiting read looks at the clock at least this often.
            let quantum = patience.map_or(self.timeout, conn::read_quantum);
            for c in &s.conns {
                c.set_read_timeout(quantum.min(self.timeout));
            }
        }
    }

    fn push_target(&self) -> Option<super::PushTarget> {
        let [s] = self.servers.as_slice() else {
            return None;
        };
        if s.link.config.tls.is_some() {
            // Servers copy to each other in clear text: over TLS, copies go through the client.
            return None;
        }
        let (session, resume) = s.link.session_secret();
        (session != 0 && !s.link.is_down()).then(|| super::PushTarget {
            addr: s.link.addr.clone(),
            session,
            resume,
            token: s.link.config.token.clone().unwrap_or_default(),
        })
    }

    fn renew(&self, probe: Duration) -> Option<Result<Arc<dyn Backend>, BackendError>> {
        Some(self.renew_sessions(probe).map(renew::shared))
    }

    fn resume(&self, probe: Duration) -> Option<Result<Option<Arc<dyn Backend>>, BackendError>> {
        Some(self.resume_sessions(probe).map(|b| b.map(renew::shared)))
    }

    fn detach(&self) {
        self.detach_sessions();
    }

    fn reconnect(&self) -> Option<Result<Arc<dyn Backend>, BackendError>> {
        Some(TcpBackend::connect(self.config.clone()).map(renew::shared))
    }

    fn describe(&self) -> String {
        let addrs: Vec<&str> = self.servers.iter().map(|s| s.link.addr.as_str()).collect();
        format!("tcp://{}", addrs.join(","))
    }
}

impl Drop for TcpBackend {
    /// Closes the session on every live server (its objects are freed at once) and stops the
    /// heartbeats. Never waits long: a down server is skipped, a silent one gets a short wait.
    fn drop(&mut self) {
        for s in &mut self.servers {
            s.link.stop();
            if let Some(h) = s.heartbeat.take() {
                let _ = h.join();
            }
        }
        let wait = self.timeout.min(Duration::from_secs(2));
        let mut closing = Vec::new();
        for s in &self.servers {
            if s.link.is_down() {
                continue;
            }
            if let Ok(p) = s.conns[0].submit(Op::CloseSession, true, |_| {}) {
                closing.push((&s.conns[0], p));
            }
        }
        let deadline = Instant::now() + wait;
        for (c, p) in closing {
            let _ = c.wait(p, deadline);
        }
        for s in &self.servers {
            for c in &s.conns {
                c.cut();
            }
        }
    }
}

#[cfg(test)]
mod tests;
