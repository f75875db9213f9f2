//! Accepting connections, sessions, shutdown.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use farmem_proto::{ErrorCode, Op, ServerStats, encode_error};
use parking_lot::{Condvar, Mutex};

use farmem_store::{Budget, Durable, LogError, OBJECT_OVERHEAD, Session};

use crate::capacity::Capacity;
use crate::commit::Committer;
use crate::conn::ConnGuard;
use crate::evloop::{Mailbox, NewConn};
use crate::workers::Pool;
use crate::{HostReserve, ServerConfig, ServerError};

/// A session and what keeps it alive: its connections, or its lease once they are gone.
struct Entry {
    session: Arc<Session>,
    /// Resume secret: a hello joining or resuming the session must present it.
    secret: u64,
    /// Connections attached to it.
    conns: usize,
    /// When its last connection left (`None` while it has connections).
    idle_since: Option<Instant>,
}

/// Why a hello could not join a session.
pub(crate) struct JoinRefused;

/// State shared by the acceptor, the I/O threads and the workers.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    budget: Arc<Budget>,
    /// Run-time capacity changes (operator, host reserve).
    pub(crate) capacity: Capacity,
    sessions: Mutex<HashMap<u64, Entry>>,
    /// Wakes the reaper (shutdown).
    reaper_wake: Condvar,
    /// Connections open (accepted and not yet closed).
    open: AtomicUsize,
    shutting_down: AtomicBool,
    /// The data directory, on a durable server.
    durable: Option<Durable>,
    pub(crate) metrics: crate::metrics::Metrics,
}

impl Shared {
    /// The shared state of a server (no sockets, no threads).
    fn new(
        config: ServerConfig,
        budget: Arc<Budget>,
        sessions: HashMap<u64, Entry>,
        durable: Option<Durable>,
    ) -> Arc<Self> {
        Arc::new(Shared {
            capacity: Capacity::new(budget.clone()),
            budget,
            config,
            sessions: Mutex::new(sessions),
            durable,
            reaper_wake: Condvar::new(),
            open: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            metrics: crate::metrics::Metrics::default(),
        })
    }

    /// An in-memory server's shared state without sockets or threads, for driving the
    /// connection protocol directly ([`crate::fuzzing`]); `None` if `config` is invalid.
    pub(crate) fn detached(config: ServerConfig) -> Option<Arc<Self>> {
        config.validate().ok()?;
        let budget = Arc::new(Budget::new(config.capacity));
        Some(Self::new(config, budget, HashMap::new(), None))
    }

    /// Bytes charged against the capacity, and objects stored, over every session.
    pub(crate) fn usage(&self) -> (u64, u64) {
        (self.budget.used(), self.budget.objects())
    }

    /// Counts a connection opened outside the acceptor; `false` at the connection limit.
    pub(crate) fn open_connection(&self) -> bool {
        self.admit()
    }

    /// Sessions held now (attached or within their lease).
    pub(crate) fn session_count(&self) -> usize {
        self.sessions.lock().len()
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Whether this server keeps a data directory (its sessions' answers wait for the log).
    pub(crate) fn is_durable(&self) -> bool {
        self.durable.is_some()
    }

    /// A new session with one connection attached, and its resume secret.
    ///
    /// # Errors
    /// On a durable server, [`LogError`] when the session cannot be logged.
    pub(crate) fn new_session(&self) -> Result<(Arc<Session>, u64), LogError> {
        let mut map = self.sessions.lock();
        let key = loop {
            let k = random_key();
            if k != 0 && !map.contains_key(&k) {
                break k;
            }
        };
        let secret = loop {
            let k = random_key();
            if k != 0 {
                break k;
            }
        };
        let s = make_session(&self.config, &self.budget, key);
        let s = match &self.durable {
            Some(d) => d.open_session(s, secret)?,
            None => Arc::new(s),
        };
        map.insert(
            key,
            Entry {
                session: s.clone(),
                secret,
                conns: 1,
                idle_since: None,
            },
        );
        Ok((s, secret))
    }

    /// Logs the end of session `key` on a durable server (so a restart does not rebuild it).
    fn forget(&self, key: u64) {
        if let Some(d) = &self.durable
            && let Err(e) = d.close_session(key)
        {
            tracing::warn!(session = key, error = %e, "the end of a session could not be logged");
        }
    }

    /// Attaches a connection to session `key` if `secret` is its resume secret.
    pub(crate) fn join(&self, key: u64, secret: u64) -> Result<(Arc<Session>, u64), JoinRefused> {
        let mut map = self.sessions.lock();
        let e = map.get_mut(&key).ok_or(JoinRefused)?;
        if !crate::conn::tokens_equal(&e.secret.to_le_bytes(), &secret.to_le_bytes()) {
            return Err(JoinRefused);
        }
        e.conns += 1;
        e.idle_since = None;
        Ok((e.session.clone(), e.secret))
    }

    /// Detaches a connection from its session. The session outlives its last connection by the
    /// lease (a client that reconnects resumes it); the reaper frees it afterwards.
    pub(crate) fn leave(&self, s: Arc<Session>) {
        let key = s.key;
        let lease = self.config.session_lease;
        let mut map = self.sessions.lock();
        drop(s);
        let Some(e) = map.get_mut(&key) else {
            return; // closed
        };
        e.conns = e.conns.saturating_sub(1);
        if e.conns == 0 {
            if lease.is_zero() {
                let gone = map.remove(&key);
                drop(map);
                self.forget(key);
                drop(gone);
                tracing::debug!(session = key, "session ended, its objects are freed");
            } else {
                e.idle_since = Some(Instant::now());
                tracing::debug!(session = key, ?lease, "session idle, kept for its lease");
            }
        }
    }

    /// Ends session `key` at once (a clean client exit): its objects are freed when the
    /// connections still attached to it close.
    pub(crate) fn close(&self, key: u64) {
        let gone = self.sessions.lock().remove(&key);
        if gone.is_some() {
            self.forget(key);
        }
        drop(gone);
        tracing::debug!(session = key, "session closed by its client");
    }

    /// Takes a connection slot; `false` when `max_connections` are open.
    fn admit(&self) -> bool {
        let max = self.config.max_connections;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Frees a connection slot (see [`crate::conn::ConnGuard`]).
    pub(crate) fn release(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    /// Frees the sessions whose lease ran out; returns how many.
    fn reap(&self, now: Instant) -> usize {
        let lease = self.config.session_lease;
        let mut map = self.sessions.lock();
        let expired: Vec<u64> = map
            .iter()
            .filter(|(_, e)| e.conns == 0 && e.idle_since.is_some_and(|t| now >= t + lease))
            .map(|(k, _)| *k)
            .collect();
        let gone: Vec<Entry> = expired.iter().filter_map(|k| map.remove(k)).collect();
        drop(map);
        for e in &gone {
            self.forget(e.session.key);
            tracing::info!(
                session = e.session.key,
                objects = e.session.ns.len(),
                "session lease ran out, its objects are freed"
            );
        }
        gone.len()
    }

    pub(crate) fn stats(&self) -> ServerStats {
        ServerStats {
            used_bytes: self.budget.used(),
            capacity_bytes: self.budget.capacity(),
            objects: self.budget.objects(),
            per_object_overhead: OBJECT_OVERHEAD,
            bytes_written: self.budget.bytes_written(),
            sessions: self.sessions.lock().len() as u64,
            connections: self.open.load(Ordering::Relaxed) as u64,
            ..ServerStats::default()
        }
    }
}

/// A fresh session under `config`'s limits.
fn make_session(config: &ServerConfig, budget: &Arc<Budget>, key: u64) -> Session {
    Session::new(
        key,
        budget.clone(),
        u64::from(config.limits.max_object),
        config.agent_threads,
    )
    .with_max_response(config.limits.max_response as usize)
    .with_agent_time_limit(Some(config.limits.agent_time_limit).filter(|d| !d.is_zero()))
    .with_quota(&config.quota)
}

/// An unguessable session key (SipHash keyed from the OS's randomness).
fn random_key() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

/// The memory server.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Binds `config.listen` and serves clients on background threads until the returned
    /// handle is shut down or dropped.
    ///
    /// ```
    /// let server = farmem_server::Server::start(Default::default()).unwrap();
    /// println!("listening on {}", server.addr());
    /// server.shutdown();
    /// ```
    ///
    /// With [`ServerConfig::durable`], the sessions of the data directory are rebuilt first
    /// (each kept for a fresh lease for its client to resume).
    ///
    /// # Errors
    /// [`ServerError::Bind`] if the address cannot be bound, [`ServerError::Config`] for
    /// inconsistent limits, [`ServerError::Durable`] when the data directory cannot be used.
    pub fn start(config: ServerConfig) -> Result<ServerHandle, ServerError> {
        config.validate()?;
        let budget = Arc::new(Budget::new(config.capacity));
        let mut sessions = HashMap::new();
        let durable = match &config.durable {
            Some(dc) => {
                let make = |key| make_session(&config, &budget, key);
                let (d, recovered) = Durable::open(dc.clone(), &make)?;
                let now = Instant::now();
                for (session, secret) in recovered.sessions {
                    let e = Entry {
                        session,
                        secret,
                        conns: 0,
                        idle_since: Some(now),
                    };
                    sessions.insert(e.session.key, e);
                }
                Some(d)
            }
            None => None,
        };
        let listener = TcpListener::bind(config.listen).map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let addr = listener.local_addr()?;
        let shared = Shared::new(config, budget, sessions, durable);
        if let Some(at) = shared.config.metrics {
            crate::http::spawn(&shared, at)?;
        }
        let (pool, _workers) =
            Pool::start_with_copies(shared.config.workers, shared.config.copy_workers)?;
        let mut io = IoThreads {
            shared: shared.clone(),
            pool,
            committer: None,
            mailboxes: Vec::new(),
            threads: Vec::new(),
        };
        // Under `--sync none` a commit does not wait for the disk: the I/O threads make it.
        let sync = shared.config.durable.as_ref().map(|d| d.sync);
        if sync == Some(farmem_store::SyncPolicy::Always) {
            io.committer = Some(Committer::start()?);
        }
        let committer = io.committer.as_ref().map(|c| c.0.clone());
        for i in 0..shared.config.io_threads {
            let (mailbox, thread) =
                crate::evloop::spawn(shared.clone(), io.pool.clone(), committer.clone(), i)?;
            io.mailboxes.push(mailbox);
            io.threads.push(thread);
        }
        let mailboxes = io.mailboxes.clone();
        let sh = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("farmem-accept".into())
            .spawn(move || accept_loop(listener, &sh, &mailboxes))?;
        let sh = shared.clone();
        let reaper = std::thread::Builder::new()
            .name("farmem-reaper".into())
            .spawn(move || reap_loop(&sh))?;
        let host = match shared.config.host_reserve.clone() {
            Some(hr) => {
                let sh = shared.clone();
                Some(
                    std::thread::Builder::new()
                        .name("farmem-host".into())
                        .spawn(move || host_loop(&sh, &hr))?,
                )
            }
            None => None,
        };
        tracing::info!(%addr, "memory server listening");
        Ok(ServerHandle {
            shared,
            addr,
            io: Some(io),
            acceptor: Some(acceptor),
            reaper: Some(reaper),
            host,
        })
    }
}

/// Frees expired sessions, checking a few times per lease (at most every second).
fn reap_loop(shared: &Shared) {
    let period =
        (shared.config.session_lease / 4).clamp(Duration::from_millis(5), Duration::from_secs(1));
    loop {
        shared.reap(Instant::now());
        let mut map = shared.sessions.lock();
        if shared.is_shutting_down() {
            return;
        }
        shared.reaper_wake.wait_for(&mut map, period);
        if shared.is_shutting_down() {
            return;
        }
    }
}

/// Follows the host's available memory (see [`HostReserve`]) until shutdown.
fn host_loop(shared: &Shared, hr: &HostReserve) {
    let max = shared.budget.max_capacity();
    let start = match hr.source.sample() {
        Ok(s) => s.resident,
        Err(e) => {
            tracing::warn!(error = %e, "cannot sample the host's memory");
            0
        }
    };
    let mut failing = false;
    loop {
        {
            let mut map = shared.sessions.lock();
            if shared.is_shutting_down() {
                return;
            }
            shared.reaper_wake.wait_for(&mut map, hr.interval);
            if shared.is_shutting_down() {
                return;
            }
        }
        shared.capacity.tick(Instant::now());
        let sample = match hr.source.sample() {
            Ok(s) => {
                failing = false;
                s
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot sample the host's memory");
                }
                failing = true;
                continue;
            }
        };
        let cap = hr.cap(start, sample, max);
        let now = shared.capacity.host();
        if cap.abs_diff(now) >= hr.hysteresis() || (cap == max && now != max) {
            tracing::info!(
                available = sample.available,
                reserve = hr.reserve,
                from = now,
                to = cap,
                "host reserve: capacity follows the host's available memory"
            );
            shared.capacity.set_host(cap, hr.deadline);
        }
    }
}

/// The I/O threads and the worker pool; stopped (and joined) at shutdown, or when the server
/// fails to start half-way.
struct IoThreads {
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    /// On a durable server, the committer and its thread.
    committer: Option<(Arc<Committer>, JoinHandle<()>)>,
    mailboxes: Vec<Arc<Mailbox>>,
    /// The I/O threads (workers are not waited for: agent work may run long).
    threads: Vec<JoinHandle<()>>,
}

impl IoThreads {
    /// Tells every I/O thread to close its connections (each client is told `ShuttingDown`),
    /// waits for them, stops the committer, and lets the workers go once their current job is
    /// done.
    fn stop(&mut self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        for m in &self.mailboxes {
            m.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.pool.stop();
        if let Some((c, t)) = self.committer.take() {
            c.stop();
            let _ = t.join();
        }
    }
}

impl Drop for IoThreads {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, shared: &Arc<Shared>, mailboxes: &[Arc<Mailbox>]) {
    let mut next = 0usize;
    for stream in listener.incoming() {
        if shared.is_shutting_down() {
            break;
        }
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors, most likely: let connections close.
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        if !shared.admit() {
            tracing::warn!(%peer, "refusing connection: connection limit reached");
            let mut buf = Vec::new();
            let msg = "too many connections";
            encode_error(&mut buf, Op::Hello, 0, ErrorCode::Refused, [0; 3], msg);
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = std::io::Write::write_all(&mut stream, &buf);
            continue;
        }
        // From here the slot is released however the connection ends.
        let guard = ConnGuard {
            shared: shared.clone(),
            session: None,
        };
        let ready = stream
            .set_nodelay(true)
            .and_then(|()| crate::conn::configure(&stream, &shared.config.limits))
            .and_then(|()| stream.set_nonblocking(true));
        if let Err(e) = ready {
            tracing::debug!(%peer, error = %e, "cannot set up a new connection");
            continue;
        }
        mailboxes[next % mailboxes.len()].hand_over(NewConn {
            stream,
            peer,
            guard,
            accepted: Instant::now(),
        });
        next = next.wrapping_add(1);
    }
}

/// A running server. Shuts it down when dropped.
pub struct ServerHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    io: Option<IoThreads>,
    acceptor: Option<JoinHandle<()>>,
    reaper: Option<JoinHandle<()>>,
    host: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The address the server listens on (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the metrics and health endpoint listens (`ServerConfig::metrics`), if it does.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.shared.metrics.addr.get().copied()
    }

    /// Server-wide space accounting (session fields are zero).
    pub fn stats(&self) -> ServerStats {
        self.shared.stats()
    }

    /// Calls `release` (which should give the process allocator's free pages back to the
    /// operating system, e.g. glibc's `malloc_trim(0)`) about every second in which the server
    /// wrote or freed more than 1/16 of the bytes it holds, and once when such churn stops: so
    /// resident memory follows the objects held (see `trim.rs`). Runs on a thread of its own until shutdown.
    ///
    /// ```no_run
    /// let server = farmem_server::Server::start(farmem_server::ServerConfig::default())?;
    /// server.release_freed_memory(|| { /* malloc_trim(0) */ })?;
    /// # Ok::<(), farmem_server::ServerError>(())
    /// ```
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn release_freed_memory(
        &self,
        release: impl Fn() + Send + 'static,
    ) -> Result<(), ServerError> {
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("farmem-trim".into())
            .spawn(move || {
                let mut trimmer = crate::trim::Trimmer::default();
                while !shared.is_shutting_down() {
                    if trimmer.due(&shared.stats()) {
                        release();
                    }
                    std::thread::sleep(crate::trim::TICK);
                }
            })?;
        Ok(())
    }

    /// Capacity, use and any shrink under way (what `farmem-server ctl status` shows).
    pub fn admin_status(&self) -> farmem_proto::AdminStatus {
        self.shared.capacity.status()
    }

    /// Stops accepting, closes every connection (telling its client `ShuttingDown`), frees all
    /// sessions and waits for the I/O threads to finish (at most about a second). Agent work
    /// still running finishes on its own.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        {
            let _map = self.shared.sessions.lock();
            self.shared.reaper_wake.notify_all();
        }
        if let Some(r) = self.reaper.take() {
            let _ = r.join();
        }
        if let Some(h) = self.host.take() {
            let _ = h.join();
        }
        // Wake the acceptor with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() {
                [127, 0, 0, 1].into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        let _ = acceptor.join();
        if let Some(mut io) = self.io.take() {
            io.stop();
        }
        let sessions = std::mem::take(&mut *self.shared.sessions.lock());
        drop(sessions);
        tracing::info!(addr = %self.addr, "memory server stopped");
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn a_connection_that_panics_releases_its_slot_session_and_socket() {
        let server = Server::start(ServerConfig::default()).unwrap();
        let shared = server.shared.clone();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (conn, _) = listener.accept().unwrap();
        assert!(shared.admit());
        assert_eq!(shared.stats().connections, 1);
        let (session, _) = shared.new_session().unwrap();
        let key = session.key;
        let guard = ConnGuard {
            shared: shared.clone(),
            session: Some(session),
        };
        let thread = std::thread::spawn(move || {
            let _held = (guard, conn);
            panic!("a bug in request handling");
        });
        assert!(thread.join().is_err());
        assert_eq!(shared.stats().connections, 0);
        let sessions = shared.sessions.lock();
        let e = sessions.get(&key).unwrap();
        assert_eq!(e.conns, 0);
        assert!(e.idle_since.is_some());
        drop(sessions);
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(client.read(&mut [0u8; 8]).unwrap(), 0, "socket left open");
        server.shutdown();
    }

    #[test]
    fn connections_beyond_the_limit_are_refused() {
        let server = Server::start(ServerConfig {
            max_connections: 1,
            ..ServerConfig::default()
        })
        .unwrap();
        let _first = TcpStream::connect(server.addr()).unwrap();
        let shared = server.shared.clone();
        let t0 = Instant::now();
        while shared.stats().connections < 1 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut second = TcpStream::connect(server.addr()).unwrap();
        let mut buf = Vec::new();
        second
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        second.read_to_end(&mut buf).unwrap();
        let (f, _) = farmem_proto::decode_frame(&buf, 1 << 20).unwrap().unwrap();
        let r = farmem_proto::Response::decode(f.header.op, f.header.flags, f.body).unwrap();
        let farmem_proto::Response::Error(e) = r else {
            panic!("not a refusal: {r:?}");
        };
        assert_eq!(e.code, ErrorCode::Refused as u16);
        server.shutdown();
    }
}
