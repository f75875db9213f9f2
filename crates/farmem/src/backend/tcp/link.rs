//! One memory server as seen by a client: its session (key, resume secret, request ids), its
//! health, the handshake that opens or resumes a connection, and the heartbeat that notices a
//! silent server.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use farmem_proto::{
    ErrorCode, HelloInfo, MAX_FRAME_BODY, Request, Response, decode_frame, encode_request,
};
use parking_lot::{Condvar, Mutex};

use super::conn::Connection;
use super::reply::error_from;
use super::stream::Stream;
use super::tls::ClientTls;
use crate::backend::{BackendError, ProtocolError};

/// How a link reconnects and watches its server.
#[derive(Clone, Debug)]
pub(crate) struct LinkConfig {
    pub(crate) token: Option<Vec<u8>>,
    /// TLS, when the servers speak it.
    pub(crate) tls: Option<ClientTls>,
    pub(crate) version: u16,
    /// Connect timeout and the longest wait for an answer.
    pub(crate) timeout: Duration,
    /// A broken connection is re-established within this time, or the server is declared down.
    pub(crate) reconnect_within: Duration,
    /// Ping period on the heartbeat connection (zero: no heartbeat).
    pub(crate) heartbeat: Duration,
    /// A ping unanswered for this long declares the server down.
    pub(crate) detect_after: Duration,
    /// A refused connection is retried, not fatal (durable servers restart).
    pub(crate) await_restart: bool,
}

/// A server and this client's session on it, shared by all its connections.
pub(crate) struct Link {
    pub(crate) addr: String,
    pub(crate) config: LinkConfig,
    session: AtomicU64,
    secret: AtomicU64,
    /// Request ids, unique within the session across all its connections.
    next_id: AtomicU64,
    down: AtomicBool,
    down_reason: Mutex<Option<String>>,
    conns: Mutex<Vec<Weak<Connection>>>,
    /// When the link was made, and nanoseconds after it of the last bytes received on any of
    /// its connections (a busy server is not a dead one).
    born: Instant,
    last_rx: AtomicU64,
    /// Traffic counters ([`super::TransportStats`]).
    pub(crate) counters: super::counters::Counters,
    /// Reads give up after this many nanoseconds of silence from the server (0: never).
    patience_ns: AtomicU64,
    /// Set (with `stop_cv`) when the backend is dropped: the heartbeat thread exits.
    stop: Mutex<bool>,
    stop_cv: Condvar,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("addr", &self.addr)
            .field("down", &self.is_down())
            .finish()
    }
}

/// Why a handshake failed: may trying again help?
pub(crate) enum HandshakeError {
    /// Try again (timeout, reset, too many connections).
    Transient(BackendError),
    /// The server is gone or refuses us for good (connection refused, session lost, bad token).
    Fatal(BackendError),
}

impl HandshakeError {
    pub(crate) fn into_inner(self) -> BackendError {
        match self {
            HandshakeError::Transient(e) | HandshakeError::Fatal(e) => e,
        }
    }
}

impl Link {
    pub(crate) fn new(addr: String, config: LinkConfig) -> Arc<Self> {
        Arc::new(Self {
            addr,
            config,
            session: AtomicU64::new(0),
            secret: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            down: AtomicBool::new(false),
            down_reason: Mutex::new(None),
            conns: Mutex::new(Vec::new()),
            born: Instant::now(),
            counters: Default::default(),
            last_rx: AtomicU64::new(0),
            patience_ns: AtomicU64::new(0),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
        })
    }

    /// A fresh request id of this session.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The request id the link would hand out next.
    pub(crate) fn peek_next_id(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed)
    }

    /// Makes this (new, unused) link number its requests from `next` on: a link that resumes
    /// another's session must not reuse the ids the server may still remember answers for.
    pub(crate) fn continue_ids(&self, next: u64) {
        self.next_id.store(next.max(1), Ordering::Relaxed);
    }

    /// Notes that bytes arrived from the server.
    pub(crate) fn touch(&self) {
        let t = self.born.elapsed().as_nanos() as u64;
        self.last_rx.store(t, Ordering::Relaxed);
    }

    /// How long a read waits for a silent server before giving up (`None`: no limit).
    pub(crate) fn read_patience(&self) -> Option<Duration> {
        match self.patience_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Sets [`Link::read_patience`].
    pub(crate) fn set_read_patience(&self, patience: Option<Duration>) {
        let ns = patience.map_or(0, |d| d.as_nanos().clamp(1, u128::from(u64::MAX)) as u64);
        self.patience_ns.store(ns, Ordering::Relaxed);
    }

    /// How long ago bytes last arrived from the server.
    pub(crate) fn quiet_for(&self) -> Duration {
        let last = Duration::from_nanos(self.last_rx.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(last)
    }

    /// This client's session key and resume secret on the server (0, 0 before the first hello).
    pub(crate) fn session_secret(&self) -> (u64, u64) {
        (
            self.session.load(Ordering::Acquire),
            self.secret.load(Ordering::Acquire),
        )
    }

    /// Whether the server has been declared down (terminal).
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Why the server was declared down.
    pub(crate) fn down_reason(&self) -> Option<String> {
        self.down_reason.lock().clone()
    }

    /// The error of every request to a down server.
    pub(crate) fn down_error(&self) -> BackendError {
        BackendError::ServerDown {
            addr: self.addr.clone(),
            reason: self.down_reason().unwrap_or_default(),
        }
    }

    /// Makes this (new, unused) link resume the session `session` with `secret`.
    pub(crate) fn adopt_session(&self, session: u64, secret: u64) {
        self.secret.store(secret, Ordering::Release);
        self.session.store(session, Ordering::Release);
    }

    /// Shuts every connection of the link (the server sees them close).
    pub(crate) fn cut_all(&self) {
        let conns: Vec<Arc<Connection>> =
            self.conns.lock().iter().filter_map(Weak::upgrade).collect();
        for c in conns {
            c.cut();
        }
    }

    pub(crate) fn register(&self, c: &Arc<Connection>) {
        self.conns.lock().push(Arc::downgrade(c));
    }

    /// Declares the server down: every request in flight and every later one fails fast.
    pub(crate) fn mark_down(&self, reason: String) {
        self.set_down(reason, true);
    }

    /// [`Link::mark_down`] by the client's choice (its session ends): nothing is logged.
    pub(crate) fn retire(&self, reason: String) {
        self.set_down(reason, false);
    }

    fn set_down(&self, reason: String, log: bool) {
        {
            let mut r = self.down_reason.lock();
            if r.is_some() {
                return;
            }
            if log {
                tracing::warn!(addr = %self.addr, %reason, "memory server is down");
            }
            *r = Some(reason);
        }
        self.down.store(true, Ordering::Release);
        let conns: Vec<Arc<Connection>> =
            self.conns.lock().iter().filter_map(Weak::upgrade).collect();
        for c in conns {
            c.kill_down();
        }
    }

    /// Opens a TCP connection and says hello: joins (resumes) the session when one exists,
    /// else creates it. Returns the stream, ready for requests, and the hello answer.
    pub(crate) fn handshake(
        &self,
        timeout: Duration,
    ) -> Result<(Stream, HelloInfo), HandshakeError> {
        let addr = self.addr.as_str();
        let unreachable = |source: io::Error| BackendError::Unreachable {
            addr: addr.into(),
            source,
        };
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| HandshakeError::Fatal(unreachable(e)))?
            .collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "address resolved to nothing");
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let Some(stream) = stream else {
            // Nobody listens: the server process is gone.
            let refused = last.kind() == io::ErrorKind::ConnectionRefused;
            return Err(if refused && !self.config.await_restart {
                HandshakeError::Fatal(unreachable(last))
            } else {
                HandshakeError::Transient(unreachable(last))
            });
        };
        let transient = |e: io::Error| HandshakeError::Transient(unreachable(e));
        stream.set_nodelay(true).map_err(transient)?;
        stream.set_read_timeout(Some(timeout)).map_err(transient)?;
        stream.set_write_timeout(Some(timeout)).map_err(transient)?;
        let stream = match &self.config.tls {
            None => Stream::plain(stream),
            Some(tls) => {
                let session = tls.session(addr).map_err(|e| {
                    HandshakeError::Fatal(unreachable(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        e,
                    )))
                })?;
                Stream::tls(stream, session).map_err(|e| {
                    if certificate_refused(&e) {
                        HandshakeError::Fatal(BackendError::AuthRefused { addr: addr.into() })
                    } else if e.kind() == io::ErrorKind::InvalidData {
                        // The certificate was refused: trying again will not help.
                        HandshakeError::Fatal(unreachable(e))
                    } else {
                        transient(e)
                    }
                })?
            }
        };
        let session = self.session.load(Ordering::Acquire);
        let hello = Request::Hello {
            version: self.config.version,
            session,
            token: self.config.token.as_deref().unwrap_or(&[]),
            resume: self.secret.load(Ordering::Acquire),
        };
        let mut buf = Vec::new();
        encode_request(&mut buf, 0, &hello);
        stream.write_all(&buf).map_err(transient)?;
        buf.clear();
        let mut chunk = [0u8; 512];
        let deadline = Instant::now() + timeout;
        let info = loop {
            match decode_frame(&buf, MAX_FRAME_BODY) {
                Ok(Some((f, _))) => {
                    let resp = Response::decode(f.header.op, f.header.flags, f.body);
                    match resp {
                        Ok(Response::Hello(h)) => break h,
                        Ok(Response::Error(e)) => {
                            let code = ErrorCode::from_code(e.code);
                            let err = error_from(addr, &e);
                            return Err(match code {
                                Some(ErrorCode::Refused | ErrorCode::ShuttingDown) => {
                                    HandshakeError::Transient(err)
                                }
                                Some(ErrorCode::SessionRefused) => {
                                    HandshakeError::Fatal(BackendError::ServerDown {
                                        addr: addr.into(),
                                        reason: format!("session lost: {}", e.message),
                                    })
                                }
                                _ => HandshakeError::Fatal(err),
                            });
                        }
                        other => {
                            return Err(HandshakeError::Fatal(BackendError::Protocol(
                                ProtocolError::UnexpectedAnswer {
                                    answer: format!("{other:?} to hello from {addr}"),
                                },
                            )));
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(HandshakeError::Fatal(BackendError::Protocol(
                        ProtocolError::Wire(e),
                    )));
                }
            }
            if Instant::now() >= deadline {
                return Err(HandshakeError::Transient(BackendError::Timeout {
                    addr: addr.into(),
                    after_ms: timeout.as_millis() as u64,
                }));
            }
            match stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(transient(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed the connection during hello",
                    )));
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if certificate_refused(&e) => {
                    // The server wants a client certificate we lack or do not have signed
                    // by its CA: trying again will not help.
                    return Err(HandshakeError::Fatal(BackendError::AuthRefused {
                        addr: addr.into(),
                    }));
                }
                Err(e) => return Err(transient(e)),
            }
        };
        if session == 0 {
            self.secret.store(info.resume, Ordering::Release);
            self.session.store(info.session, Ordering::Release);
        }
        Ok((stream, info))
    }

    /// Tells the heartbeat thread to exit.
    pub(crate) fn stop(&self) {
        *self.stop.lock() = true;
        self.stop_cv.notify_all();
    }

    /// Sleeps `d` or until [`Link::stop`]; returns whether to stop.
    fn sleep(&self, d: Duration) -> bool {
        let mut stop = self.stop.lock();
        if !*stop {
            self.stop_cv.wait_for(&mut stop, d);
        }
        *stop
    }

    /// Heartbeat loop: pings the server on its own connection (so long requests on the data
    /// connections never look like a dead server) and declares it down when a ping goes
    /// unanswered for `detect_after` while no other connection heard from it either.
    pub(crate) fn heartbeat(&self, conn: &Connection) {
        let period = self.config.heartbeat;
        loop {
            if self.sleep(period) || self.is_down() {
                return;
            }
            let deadline = Instant::now() + self.config.detect_after;
            match conn.ping(deadline) {
                Ok(()) => {}
                Err(BackendError::Timeout { .. })
                    if self.quiet_for() < self.config.detect_after =>
                {
                    tracing::debug!(addr = %self.addr, "late heartbeat from a busy server");
                }
                Err(BackendError::Timeout { .. }) => {
                    let ms = self.config.detect_after.as_millis();
                    self.mark_down(format!("no answer to a heartbeat within {ms} ms"));
                    return;
                }
                Err(BackendError::ServerDown { .. }) => return,
                Err(e) => {
                    self.mark_down(format!("heartbeat failed: {e}"));
                    return;
                }
            }
        }
    }
}

/// Whether `e` is the server's TLS alert refusing our client certificate (or its absence).
fn certificate_refused(e: &io::Error) -> bool {
    use rustls::AlertDescription as A;
    let Some(rustls::Error::AlertReceived(alert)) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return false;
    };
    matches!(
        alert,
        A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::UnsupportedCertificate
            | A::AccessDenied
            // A certificate whose issuer's name matches the server's CA but whose signature
            // does not verify (another CA of the same name).
            | A::DecryptError
    )
}
