//! Accepting connections, sessions, shutdown.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use farmem_proto::{ErrorCode, Op, ServerStats, encode_error};
use parking_lot::{Condvar, Mutex};

use farmem_store::{Budget, OBJECT_OVERHEAD, Session};

use crate::{ServerConfig, ServerError};

/// State shared by the acceptor and all connection threads.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    budget: Arc<Budget>,
    sessions: Mutex<HashMap<u64, Weak<Session>>>,
    conns: Mutex<HashMap<u64, TcpStream>>,
    conns_done: Condvar,
    next_conn: AtomicU64,
    shutting_down: AtomicBool,
}

impl Shared {
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    pub(crate) fn new_session(&self) -> Arc<Session> {
        let mut map = self.sessions.lock();
        let key = loop {
            let k = random_key();
            if k != 0 && !map.contains_key(&k) {
                break k;
            }
        };
        let max_object = u64::from(self.config.limits.max_object);
        let s = Arc::new(Session::new(
            key,
            self.budget.clone(),
            max_object,
            self.config.agent_threads,
        ));
        map.insert(key, Arc::downgrade(&s));
        s
    }

    pub(crate) fn join(&self, key: u64) -> Option<Arc<Session>> {
        self.sessions.lock().get(&key).and_then(Weak::upgrade)
    }

    /// Drops a connection's hold on its session; the last one frees the session's objects.
    pub(crate) fn leave(&self, s: Arc<Session>) {
        let key = s.key;
        let mut map = self.sessions.lock();
        drop(s);
        if map.get(&key).is_some_and(|w| w.strong_count() == 0) {
            map.remove(&key);
            tracing::debug!(session = key, "session ended, its objects are freed");
        }
    }

    pub(crate) fn stats(&self) -> ServerStats {
        ServerStats {
            used_bytes: self.budget.used(),
            capacity_bytes: self.budget.limit(),
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
        if config.threads == 0 {
            return Err(ServerError::Config("threads must be at least 1".into()));
        }
        if config.limits.hello_timeout.is_zero() {
            return Err(ServerError::Config("hello_timeout must be positive".into()));
        }
        if config.limits.max_object as u64 + 64 > u64::from(config.limits.max_frame) {
            return Err(ServerError::Config(
                "max_frame must exceed max_object by at least 64 bytes".into(),
            ));
        }
        let listener = TcpListener::bind(config.listen).map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            budget: Arc::new(Budget::new(config.capacity)),
            config,
            sessions: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            conns_done: Condvar::new(),
            next_conn: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
        });
        let sh = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("farmem-accept".into())
            .spawn(move || accept_loop(listener, sh))?;
        tracing::info!(%addr, "memory server listening");
        Ok(ServerHandle {
            shared,
            addr,
            acceptor: Some(acceptor),
        })
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
        let sh = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("farmem-conn".into())
            .spawn(move || {
                tracing::debug!(%peer, "client connected");
                crate::conn::serve(stream, peer, sh.clone());
                let mut conns = sh.conns.lock();
                conns.remove(&id);
                sh.conns_done.notify_all();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot spawn a connection thread");
            shared.conns.lock().remove(&id);
        }
    }
}

/// A running server. Shuts it down when dropped.
pub struct ServerHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// The address the server listens on (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Server-wide space accounting (session fields are zero).
    pub fn stats(&self) -> ServerStats {
        self.shared.stats()
    }

    /// Stops accepting, closes every connection (freeing all sessions) and waits for the
    /// connection threads to finish (at most a few seconds).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        self.shared.shutting_down.store(true, Ordering::SeqCst);
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
        let mut conns = self.shared.conns.lock();
        for c in conns.values() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
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
        tracing::info!(addr = %self.addr, "memory server stopped");
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}
