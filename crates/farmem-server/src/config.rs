//! Server configuration and human-readable sizes.

use std::net::SocketAddr;
use std::time::Duration;

use farmem_store::SessionQuota;

use crate::ServerError;

/// Per-connection limits that keep one bad or greedy client from exhausting the server.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body accepted; a larger frame closes the connection.
    pub max_frame: u32,
    /// Largest object accepted by put (at least 16 MiB by default: 64 MiB).
    pub max_object: u32,
    /// Requests answered per batch before the server stops reading; announced in hello.
    pub max_inflight: u32,
    /// Answer bytes buffered before they are written out mid-batch.
    pub max_write_buffer: usize,
    /// Whole-handshake deadline: a connection that has not completed its hello this long after
    /// it was accepted is closed, however it trickles its bytes. Default 10 s.
    pub hello_timeout: Duration,
    /// Largest frame body accepted before the hello is through (a hello or an admin request):
    /// what an unauthenticated connection can make the server buffer. Default 4 KiB; the
    /// tokens must fit in it.
    pub max_hello_frame: u32,
    /// An authenticated connection that sends nothing for this long is closed (its session
    /// stays for its lease). Clients ping their heartbeat connection every 200 ms by default.
    /// Zero: never. Default 10 min.
    pub idle_timeout: Duration,
    /// A client that does not read its answers for this long (the server's write blocks) is
    /// disconnected. Zero: never. Default 30 s.
    pub write_timeout: Duration,
    /// TCP keepalive: probes start after this long without traffic (then every 10 s, 6 times),
    /// so a connection whose host vanished is found dead. Zero: off. Default 60 s.
    pub keepalive: Duration,
    /// Largest answer body built for one request (batched gets, agent results); larger ones
    /// are answered with `ResponseTooLarge`. Default 256 MiB (at most 1 GiB).
    pub max_response: u32,
    /// Longest one agent operation may run: it is stopped then and answered with the agent's
    /// `TimeLimit` code. Zero: no limit. Default 60 s. (An operation is also stopped when its
    /// client hangs up.)
    pub agent_time_limit: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: farmem_proto::DEFAULT_MAX_FRAME,
            max_object: 64 << 20,
            max_inflight: 1024,
            max_write_buffer: 256 << 10,
            hello_timeout: Duration::from_secs(10),
            max_hello_frame: 4096,
            idle_timeout: Duration::from_secs(600),
            write_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(60),
            max_response: 256 << 20,
            agent_time_limit: Duration::from_secs(60),
        }
    }
}

/// What [`crate::Server::start`] needs.
///
/// ```
/// let config = farmem_server::ServerConfig {
///     capacity: farmem_server::parse_size("64MiB").unwrap(),
///     ..Default::default()
/// };
/// assert_eq!(config.listen.port(), 0); // the library default picks a free port
/// ```
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (see `ServerHandle::addr`).
    /// Default `127.0.0.1:0` (the binary's default is `127.0.0.1:7070`).
    pub listen: SocketAddr,
    /// Hard capacity in bytes (payload + per-object overhead + agent state).
    pub capacity: u64,
    /// Shared secret a client must present in its hello; `None` = no auth.
    pub token: Option<Vec<u8>>,
    /// Operator secret an admin request (shrink, grow, status) must carry; `None` refuses every
    /// admin request. Separate from `token`, which every client program holds.
    pub admin_token: Option<Vec<u8>>,
    /// Give memory back when the host runs short (see [`HostReserve`](crate::host::HostReserve)); `None`: never.
    pub host_reserve: Option<crate::HostReserve>,
    /// Most connections open at once; further ones are refused (`Refused`). Each costs a file
    /// descriptor (the binary raises its soft limit to the hard one) and, idle, well under
    /// 1 KiB in the server. Default 16384.
    pub max_connections: usize,
    /// Threads that own the connections' sockets and answer short requests (an epoll loop
    /// each). Default: the cores, at most 8.
    pub io_threads: usize,
    /// Threads that run the requests which may take long (agent operations, server-to-server
    /// copies, shrinks), so that they never hold up an I/O thread. Default: the cores, at
    /// least 2, at most 8.
    pub workers: usize,
    /// Threads that run server-to-server copies (`OBJ_PUSH`), apart from [`Self::workers`]:
    /// a copy waits on another server (up to 10 s per step when it is slow or gone), so copies
    /// never hold the workers that agent operations need. Default 2.
    pub copy_workers: usize,
    /// Serve TLS instead of clear text (clients must then connect with TLS; the token is
    /// still checked). `None`: clear text, for trusted networks.
    pub tls: Option<crate::ServerTls>,
    /// Per-connection limits.
    pub limits: Limits,
    /// Threads one large agent operation may use (derives, integer group-bys and medians).
    pub agent_threads: usize,
    /// How long a session outlives its last connection: a client that reconnects within it
    /// resumes its session with all its objects; after it, a crashed client's objects are freed.
    /// Zero frees them with the last connection. Default 30 s.
    pub session_lease: std::time::Duration,
    /// Keep sessions and objects across a restart in this data directory (see
    /// [`farmem_store::durable`]); `None` (the default): purely in memory.
    pub durable: Option<farmem_store::DurableConfig>,
    /// What each session may hold and how fast it may ask (default: no limit). A request
    /// over a quota is answered with `QuotaExceeded` and changes nothing; see
    /// [`SessionQuota`].
    pub quota: SessionQuota,
    /// Serve Prometheus metrics (`/metrics`) and health probes (`/healthz`, `/readyz`) over
    /// HTTP on this address; `None`: no endpoint. See [`crate::ServerHandle::metrics_addr`].
    pub metrics: Option<SocketAddr>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            capacity: u64::MAX,
            token: None,
            admin_token: None,
            host_reserve: None,
            max_connections: 16384,
            io_threads: cores().min(8),
            workers: cores().clamp(2, 8),
            copy_workers: 2,
            tls: None,
            limits: Limits::default(),
            agent_threads: farmem_store::agent::default_threads(),
            session_lease: std::time::Duration::from_secs(30),
            durable: None,
            quota: SessionQuota::default(),
            metrics: None,
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl ServerConfig {
    /// Checks that the settings fit together (what [`crate::Server::start`] checks before it
    /// binds anything, and `farmem-server --check` reports).
    ///
    /// ```
    /// let mut c = farmem_server::ServerConfig::default();
    /// assert!(c.validate().is_ok());
    /// c.max_connections = 0;
    /// assert!(c.validate().is_err());
    /// ```
    ///
    /// # Errors
    /// [`ServerError::Config`] naming the first setting that does not fit.
    pub fn validate(&self) -> Result<(), ServerError> {
        let bad = |m: &str| Err(ServerError::Config(m.into()));
        let limits = &self.limits;
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1");
        }
        if self.io_threads == 0 || self.workers == 0 || self.copy_workers == 0 {
            return bad("io_threads, workers and copy_workers must be at least 1");
        }
        if limits.hello_timeout.is_zero() {
            return bad("hello_timeout must be positive");
        }
        let longest_token = self
            .token
            .iter()
            .chain(&self.admin_token)
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        if longest_token + 64 > limits.max_hello_frame as usize {
            return bad("max_hello_frame must exceed the longest token by at least 64 bytes");
        }
        if limits.max_response > farmem_proto::MAX_FRAME_BODY {
            return bad("max_response is at most 1 GiB");
        }
        if limits.max_object as u64 + 64 > u64::from(limits.max_frame) {
            return bad("max_frame must exceed max_object by at least 64 bytes");
        }
        let q = &self.quota;
        if q.bytes == Some(0) || q.objects == Some(0) || q.requests_per_second == Some(0) {
            return bad("a quota of 0 would refuse everything (leave it out for no limit)");
        }
        if q.burst.is_some() && q.requests_per_second.is_none() {
            return bad("quota.burst needs quota.requests_per_second");
        }
        Ok(())
    }
}

/// Parses a size such as `4096`, `512MiB`, `8GiB`, `1.5GB`, `64k` (binary multiples for `K`,
/// `KiB`, `M`, `MiB`, `G`, `GiB`, `T`, `TiB`; decimal for `KB`, `MB`, `GB`, `TB`).
///
/// ```
/// assert_eq!(farmem_server::parse_size("8GiB").unwrap(), 8 << 30);
/// assert!(farmem_server::parse_size("8 parsecs").is_err());
/// ```
///
/// # Errors
/// [`ServerError::Config`] with a message naming the bad value.
pub fn parse_size(s: &str) -> Result<u64, ServerError> {
    let t = s.trim();
    let bad = || ServerError::Config(format!("invalid size {s:?} (try 512MiB or 8GiB)"));
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    if num.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(bad);
    }
    let f: f64 = num.parse().map_err(|_| bad())?;
    let v = f * mult as f64;
    if !v.is_finite() || v < 0.0 || v >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as u64)
}

/// Parses a duration such as `30s`, `500ms`, `2m`, `1h` or `1.5s` (a bare number is seconds).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(farmem_server::parse_duration("250ms").unwrap(), Duration::from_millis(250));
/// assert!(farmem_server::parse_duration("soon").is_err());
/// ```
///
/// # Errors
/// [`ServerError::Config`] with a message naming the bad value.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, ServerError> {
    let t = s.trim();
    let bad = || ServerError::Config(format!("invalid duration {s:?} (try 30s or 500ms)"));
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let secs: f64 = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    std::time::Duration::try_from_secs_f64(n * secs).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        for bad in ["", "s", "-1s", "5 fortnights", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("10GB").unwrap(), 10_000_000_000);
        assert_eq!(parse_size("123").unwrap(), 123);
        for bad in [
            "",
            "GiB",
            "-1G",
            "1.2.3M",
            "99999999999999999999T",
            "5 apples",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
