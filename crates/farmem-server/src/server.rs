//! Accepting connections, sessions, shutdown.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use farmem_proto::{ErrorCode, Op, ServerStats, encode_error};
use parking_lot::{Condvar, Mutex};

use farmem_store::{Budget, OBJECT_OVERHEAD, Session};

use crate::capacity::Capacity;
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

/// State shared by the acceptor and all connection threads.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    budget: Arc<Budget>,
    /// Run-time capacity changes (operator, host reserve).
    pub(crate) capacity: Capacity,
    sessions: Mutex<HashMap<u64, Entry>>,
    /// Wakes the reaper (shutdown).
    reaper_wake: Condvar,
    conns: Mutex<HashMap<u64, TcpStream>>,
    conns_done: Condvar,
    next_conn: AtomicU64,
    shutting_down: AtomicBool,
    pub(crate) metrics: crate::metrics::Metrics,
}

impl Shared {
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// A new session with one connection attached, and its resume secret.
    pub(crate) fn new_session(&self) -> (Arc<Session>, u64) {
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
        let max_object = u64::from(self.config.limits.max_object);
        let max_response = self.config.limits.max_response as usize;
        let s = Arc::new(
            Session::new(
                key,
                self.budget.clone(),
                max_object,
                self.config.agent_threads,
            )
            .with_max_response(max_response)
            .with_agent_time_limit(
                Some(self.config.limits.agent_time_limit).filter(|d| !d.is_zero()),
            )
            .with_quota(&self.config.quota),
        );
        map.insert(
            key,
            Entry {
                session: s.clone(),
                secret,
                conns: 1,
                idle_since: None,
            },
        );
        (s, secret)
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
        drop(gone);
        tracing::debug!(session = key, "session closed by its client");
    }

    /// Frees connection `id`'s slot (closing the server's copy of its socket).
    pub(crate) fn release(&self, id: u64) {
        let gone = self.conns.lock().remove(&id);
        if let Some(c) = &gone {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        drop(gone);
        self.conns_done.notify_all();
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
            connections: self.conns.lock().len() as u64,
            ..ServerStats::default()
        }
    }
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
    /// # Errors
    /// [`ServerError::Bind`] if the address cannot be bound, [`ServerError::Config`] for
    /// inconsistent limits.
    pub fn start(config: ServerConfig) -> Result<ServerHandle, ServerError> {
        config.validate()?;
        let listener = TcpListener::bind(config.listen).map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let addr = listener.local_addr()?;
        let budget = Arc::new(Budget::new(config.capacity));
        let shared = Arc::new(Shared {
            capacity: Capacity::new(budget.clone()),
            budget,
            config,
            sessions: Mutex::new(HashMap::new()),
            reaper_wake: Condvar::new(),
            conns: Mutex::new(HashMap::new()),
            conns_done: Condvar::new(),
            next_conn: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            metrics: crate::metrics::Metrics::default(),
        });
        if let Some(at) = shared.config.metrics {
            crate::http::spawn(&shared, at)?;
        }
        let sh = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("farmem-accept".into())
            .spawn(move || accept_loop(listener, sh))?;
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

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.is_shutting_down() {
            break;
        }
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        {
            let mut conns = shared.conns.lock();
            if conns.len() >= shared.config.threads {
                drop(conns);
                tracing::warn!(%peer, "refusing connection: connection limit reached");
                let mut buf = Vec::new();
                let msg = "too many connections";
                encode_error(&mut buf, Op::Hello, 0, ErrorCode::Refused, [0; 3], msg);
                let _ = std::io::Write::write_all(&mut stream, &buf);
                continue;
            }
            match stream.try_clone() {
                Ok(c) => conns.insert(id, c),
                Err(_) => continue,
            };
        }
        // Released when the thread ends, however it ends (or with the closure if the thread
        // cannot be spawned).
        let guard = crate::conn::ConnGuard {
            shared: shared.clone(),
            id,
            session: None,
        };
        let spawned = std::thread::Builder::new()
            .name("farmem-conn".into())
            .spawn(move || {
                tracing::debug!(%peer, "client connected");
                crate::conn::serve(stream, peer, guard);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot spawn a connection thread");
        }
    }
}

/// A running server. Shuts it down when dropped.
pub struct ServerHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
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

    /// Capacity, use and any shrink under way (what `farmem-server ctl status` shows).
    pub fn admin_status(&self) -> farmem_proto::AdminStatus {
        self.shared.capacity.status()
    }

    /// Stops accepting, closes every connection, frees all sessions and waits for the
    /// connection threads to finish (at most a few seconds).
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
        // Wake every connection's read: its thread tells its client `ShuttingDown` and closes.
        let mut conns = self.shared.conns.lock();
        for c in conns.values() {
            let _ = c.shutdown(std::net::Shutdown::Read);
        }
        let polite = Instant::now() + Duration::from_secs(1);
        while !conns.is_empty()
            && !self
                .shared
                .conns_done
                .wait_until(&mut conns, polite)
                .timed_out()
        {}
        // A thread still writing to a client that does not read: cut it off.
        for c in conns.values() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !conns.is_empty() {
            if self
                .shared
                .conns_done
                .wait_until(&mut conns, deadline)
                .timed_out()
            {
                tracing::warn!(left = conns.len(), "connections still open at shutdown");
                break;
            }
        }
        drop(conns);
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
    use crate::conn::ConnGuard;

    #[test]
    fn a_connection_thread_that_panics_releases_its_slot_session_and_socket() {
        let server = Server::start(ServerConfig::default()).unwrap();
        let shared = server.shared.clone();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (conn, _) = listener.accept().unwrap();
        let id = u64::MAX;
        shared.conns.lock().insert(id, conn.try_clone().unwrap());
        let (session, _) = shared.new_session();
        let key = session.key;
        let guard = ConnGuard {
            shared: shared.clone(),
            id,
            session: Some(session),
        };
        let thread = std::thread::spawn(move || {
            let _held = (guard, conn);
            panic!("a bug in request handling");
        });
        assert!(thread.join().is_err());
        assert!(!shared.conns.lock().contains_key(&id));
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
}
