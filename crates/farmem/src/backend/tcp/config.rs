//! How a [`super::TcpBackend`] reaches its memory servers.

use std::time::Duration;

use farmem_proto::VERSION;

use super::tls::ClientTls;

/// How to reach the memory servers.
///
/// ```no_run
/// use std::time::Duration;
/// use farmem::backend::{TcpBackend, TcpConfig};
/// let cfg = TcpConfig::new(["10.0.0.5:7070", "10.0.0.6:7070"])
///     .token(b"secret".to_vec())
///     .timeout(Duration::from_secs(5))
///     .connections_per_server(2);
/// let backend = TcpBackend::connect(cfg).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// Server addresses (`host:port`). Objects are spread over them by [`farmem_proto::owner_of`].
    pub servers: Vec<String>,
    /// Shared secret, when the servers require one.
    pub token: Option<Vec<u8>>,
    /// Connect timeout and the longest wait for any answer.
    pub timeout: Duration,
    /// Connections per server (all joined to one session); threads are spread over them.
    pub connections_per_server: usize,
    /// Connect over TLS (see [`ClientTls`]); `None`: clear text. Default `None`.
    pub tls: Option<ClientTls>,
    /// Protocol version to announce (tests use this to provoke a mismatch).
    pub version: u16,
    /// A broken connection is re-established (session resumed, requests in flight resent)
    /// within this time, or its server is declared down. Default 3 s.
    pub reconnect_within: Duration,
    /// Ping period on each server's heartbeat connection; zero disables the heartbeat.
    /// Default 200 ms.
    pub heartbeat: Duration,
    /// A server whose heartbeat goes unanswered this long (frozen, partitioned) is declared
    /// down. Default 1 s.
    pub detect_after: Duration,
    /// Retry a refused connection (no process listening) within `reconnect_within` instead
    /// of declaring the server down at once: for durable servers (`farmem-server --data-dir`),
    /// which come back with their sessions after a restart. Default `false`.
    pub await_restart: bool,
}

impl TcpConfig {
    /// Defaults for `servers`: no token, 30 s timeout, one connection per server.
    pub fn new<I, S>(servers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: ToString,
    {
        Self {
            servers: servers.into_iter().map(|s| s.to_string()).collect(),
            token: None,
            tls: None,
            timeout: Duration::from_secs(30),
            connections_per_server: 1,
            version: VERSION,
            reconnect_within: Duration::from_secs(3),
            heartbeat: Duration::from_millis(200),
            detect_after: Duration::from_secs(1),
            await_restart: false,
        }
    }

    /// Sets how long a broken connection may take to be re-established.
    pub fn reconnect_within(mut self, d: Duration) -> Self {
        self.reconnect_within = d;
        self
    }

    /// Sets [`TcpConfig::await_restart`].
    pub fn await_restart(mut self, on: bool) -> Self {
        self.await_restart = on;
        self
    }

    /// Sets the heartbeat period and the silence after which a server is declared down.
    pub fn heartbeat(mut self, every: Duration, detect_after: Duration) -> Self {
        self.heartbeat = every;
        self.detect_after = detect_after;
        self
    }

    /// Settings for a client with nowhere to fail over to: its server holds the only copy of
    /// its objects (one server under a pager, which aborts the program when a fault cannot be
    /// served). No heartbeat, so a server that a busy machine holds back for a second or more
    /// only delays the requests (each up to [`TcpConfig::timeout`], and callers such as the
    /// pager retry timeouts) instead of being declared down for good; a broken connection may
    /// take 10 s to be re-established.
    pub fn without_failover(self) -> Self {
        self.heartbeat(Duration::ZERO, Duration::ZERO)
            .reconnect_within(Duration::from_secs(10))
    }

    /// Sets the shared-secret token.
    pub fn token(mut self, token: impl Into<Vec<u8>>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Connects over TLS, trusting the servers' certificates that `tls`'s root CA signed.
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the number of connections per server.
    pub fn connections_per_server(mut self, n: usize) -> Self {
        self.connections_per_server = n;
        self
    }
}
