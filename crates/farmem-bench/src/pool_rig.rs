//! Memory servers as child processes and a replicated pool over them, for `demo --servers` and
//! `failover`.
//!
//! The children are this same binary in its hidden `serve` subcommand (a [`Server`] on a free
//! loopback port), so there is no second binary to find or keep in step: `cargo run -p
//! farmem-bench` and an installed `farmem-bench` both work as they are. Each child asks the kernel
//! to kill it when this process dies, so an aborted run leaves no server behind.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use farmem::backend::pool::MemberState;
use farmem::backend::{
    Edit, MemberId, PendingCompute, PoolBackend, PoolConfig, Redundancy, TcpBackend, TcpConfig,
};
use farmem::{Backend, BackendError, ObjectId, Runtime, StoreStats};
use farmem_server::{Server, ServerConfig};

use crate::smaps::Smaps;

/// Options of the hidden `farmem-bench serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

/// Runs a memory server until killed; prints `listening on ADDR` once it accepts connections.
///
/// # Errors
/// When the server cannot start.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // As `farmem-server` does: one allocator arena, so that objects freed by other threads than
    // the ones that allocated them do not keep several arenas' worth of memory resident.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes a setting of glibc's allocator; no other thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of this process; no memory is passed.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } == 1 {
        anyhow::bail!("the parent process is gone");
    }
    let server = Server::start(ServerConfig {
        listen: args.listen,
        ..ServerConfig::default()
    })
    .context("starting the memory server")?;
    // As `farmem-server` does: free pages of the allocator go back to the system under churn.
    server.release_freed_memory(|| {
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim takes the allocator's locks and only releases free pages.
        unsafe {
            libc::malloc_trim(0);
        }
    })?;
    let mut out = std::io::stdout();
    writeln!(out, "listening on {}", server.addr())?;
    out.flush()?;
    loop {
        std::thread::park();
    }
}

/// A memory server child process; killed when dropped.
#[derive(Debug)]
pub struct ServerProc {
    child: Child,
    addr: String,
    killed: AtomicBool,
}

impl ServerProc {
    /// Starts `farmem-bench serve` on a free loopback port.
    ///
    /// # Errors
    /// When the child cannot start or does not announce its address.
    pub fn start() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the farmem-bench binary")?;
        let mut cmd = Command::new(exe);
        // Transparent huge pages for the server's heap (the machine's mode is usually
        // `madvise`): a server receiving a drain or a repair touches every page of the copies
        // it stores for the first time, and with 4 KiB pages those faults cost it as much as
        // the copies themselves. A `GLIBC_TUNABLES` of this process's environment wins.
        if std::env::var_os("GLIBC_TUNABLES").is_none() {
            cmd.env("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1");
        }
        let mut child = cmd
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting a memory server child process")?;
        let mut line = String::new();
        let read = child
            .stdout
            .take()
            .context("the server's stdout")
            .and_then(|o| Ok(BufReader::new(o).read_line(&mut line)?));
        let addr = line.trim().strip_prefix("listening on ").map(str::to_owned);
        match (read, addr) {
            (Ok(_), Some(addr)) => Ok(Self {
                child,
                addr,
                killed: AtomicBool::new(false),
            }),
            (r, _) => {
                let _ = child.kill();
                let _ = child.wait();
                r?;
                anyhow::bail!("the memory server printed {line:?} instead of its address")
            }
        }
    }

    /// `host:port` it listens on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `sig` (SIGKILL, SIGSTOP, SIGCONT).
    ///
    /// # Errors
    /// When the process was killed before, or kill(2) fails.
    pub fn signal(&self, sig: i32) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.killed.load(Ordering::Relaxed),
            "server {} is already gone",
            self.addr
        );
        // SAFETY: kill(2) on our own child's pid: the child is reaped only when `self` drops,
        // so the pid cannot name another process.
        if unsafe { libc::kill(self.pid(), sig) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        if sig == libc::SIGKILL {
            self.killed.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Its resident set size (VmRSS of /proc/PID/status), if it runs.
    pub fn rss_bytes(&self) -> Option<u64> {
        if self.killed.load(Ordering::Relaxed) {
            return None;
        }
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib << 10)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A backend that records the longest single call (the stall a program sees).
pub struct Timed {
    inner: Arc<dyn Backend>,
    max_ns: AtomicU64,
    /// The longest call's length, end and kind since the last `take_max`.
    longest: std::sync::Mutex<Option<LongestCall>>,
}

/// The longest call a [`Timed`] saw.
#[derive(Debug, Clone, Copy)]
pub struct LongestCall {
    /// How long it took.
    pub took: Duration,
    /// When it ended.
    pub ended: Instant,
    /// Which call (`get`, `compute`, ...).
    pub what: &'static str,
}

impl std::fmt::Debug for Timed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timed")
            .field("inner", &self.inner.describe())
            .finish_non_exhaustive()
    }
}

impl Timed {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        Self {
            inner,
            max_ns: AtomicU64::new(0),
            longest: std::sync::Mutex::new(None),
        }
    }

    fn time<T>(&self, what: &'static str, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let r = f();
        let took = t.elapsed();
        let ns = took.as_nanos().min(u128::from(u64::MAX)) as u64;
        if self.max_ns.fetch_max(ns, Ordering::Relaxed) < ns {
            let mut l = self
                .longest
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if l.is_none_or(|l| l.took < took) {
                *l = Some(LongestCall {
                    took,
                    ended: Instant::now(),
                    what,
                });
            }
        }
        r
    }

    /// The longest call since the last `take_max`, and starts a new window.
    pub fn take_max(&self) -> Duration {
        self.take_longest().map_or(Duration::ZERO, |l| l.took)
    }

    /// The longest call since the last `take_max` (with when it ended and what it was), and
    /// starts a new window.
    pub fn take_longest(&self) -> Option<LongestCall> {
        let mut l = self
            .longest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.max_ns.store(0, Ordering::Relaxed);
        l.take()
    }
}

impl Backend for Timed {
    fn put(&self, id: ObjectId, data: &[u8]) -> Result<(), BackendError> {
        self.time("put", || self.inner.put(id, data))
    }
    fn get(&self, id: ObjectId) -> Result<Vec<u8>, BackendError> {
        self.time("get", || self.inner.get(id))
    }
    fn get_into(&self, id: ObjectId, buf: &mut [u8]) -> Result<(), BackendError> {
        self.time("get_into", || self.inner.get_into(id, buf))
    }
    fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>, BackendError> {
        self.time("get_many", || self.inner.get_many(ids))
    }
    fn put_many(&self, items: &[(ObjectId, &[u8])]) -> Result<(), BackendError> {
        self.time("put_many", || self.inner.put_many(items))
    }
    fn patch(&self, id: ObjectId, edits: &[Edit<'_>]) -> Result<(), BackendError> {
        self.time("patch", || self.inner.patch(id, edits))
    }
    fn patch_many(&self, items: &[(ObjectId, &[Edit<'_>])]) -> Result<(), BackendError> {
        self.time("patch_many", || self.inner.patch_many(items))
    }
    fn free(&self, ids: &[ObjectId]) -> Result<(), BackendError> {
        self.time("free", || self.inner.free(ids))
    }
    fn stats(&self) -> Result<StoreStats, BackendError> {
        self.inner.stats()
    }
    fn compute(&self, route: ObjectId, op: u16, args: &[u8]) -> Result<Vec<u8>, BackendError> {
        self.time("compute", || self.inner.compute(route, op, args))
    }
    fn submit_compute(&self, route: ObjectId, op: u16, args: &[u8]) -> PendingCompute {
        // A pool computes at submission.
        self.time("submit_compute", || {
            self.inner.submit_compute(route, op, args)
        })
    }
    fn sites(&self) -> Option<&dyn farmem::backend::Sites> {
        self.inner.sites()
    }

    fn push_target(&self) -> Option<farmem::backend::PushTarget> {
        self.inner.push_target()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Server child processes, a pool over them and a timing layer over the pool.
pub struct PoolRig {
    /// The pool with call timing: give this one to runtimes.
    pub timed: Arc<Timed>,
    /// The pool.
    pub pool: Arc<PoolBackend>,
    /// One TCP backend per server (the pool's members).
    pub members: Vec<Arc<TcpBackend>>,
    /// The servers, in member order (dropped last: the pool goes before its servers).
    pub procs: Vec<ServerProc>,
}

impl PoolRig {
    /// Starts `servers` servers and pools them with `redundancy`; a member that does not answer
    /// within `timeout` is failed over; repairs copy at most `repair_rate` bytes/s;
    /// server-to-server copies on or off
    /// (`server_to_server`) and the most of the mover's full pace repair and drains may take
    /// while the application works (`repair_share`, see `PoolConfig::repair_share`).
    ///
    /// # Errors
    /// When a server cannot start or be reached.
    pub fn start_with(
        servers: usize,
        redundancy: Redundancy,
        timeout: Duration,
        repair_rate: Option<u64>,
        server_to_server: bool,
        repair_share: f64,
    ) -> anyhow::Result<Self> {
        let cfg = PoolConfig::new(redundancy)
            .repair_rate(repair_rate)
            .maintenance_interval(Duration::from_millis(100))
            .server_to_server(server_to_server)
            .repair_share(repair_share);
        Self::start_config(servers, timeout, cfg)
    }

    /// Starts `servers` servers and pools them with `cfg`; a member that does not answer within
    /// `timeout` is failed over.
    ///
    /// # Errors
    /// As [`PoolRig::start_with`].
    pub fn start_config(
        servers: usize,
        timeout: Duration,
        cfg: PoolConfig,
    ) -> anyhow::Result<Self> {
        let procs = (0..servers)
            .map(|_| ServerProc::start())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut members = Vec::with_capacity(servers);
        for p in &procs {
            let cfg = TcpConfig::new([p.addr()])
                .connections_per_server(2)
                .timeout(timeout);
            members.push(Arc::new(TcpBackend::connect(cfg).with_context(|| {
                format!("connecting to the memory server at {}", p.addr())
            })?));
        }
        let list = members
            .iter()
            .map(|m| m.clone() as Arc<dyn Backend>)
            .collect();
        let pool = Arc::new(PoolBackend::new(list, cfg)?);
        let timed = Arc::new(Timed::new(pool.clone()));
        Ok(Self {
            procs,
            members,
            pool,
            timed,
        })
    }

    /// A runtime over the pool with `budget` bytes of local memory.
    ///
    /// # Errors
    /// As [`crate::apps_far::runtime_on`].
    pub fn runtime(&self, budget: u64) -> anyhow::Result<Runtime> {
        crate::apps_far::runtime_on(self.timed.clone(), budget)
    }

    /// Bytes the servers of the pool's serving members report in use (payload plus per-object
    /// overhead; a server that was failed over and rejoined counts as its new member).
    pub fn used_bytes(&self) -> u64 {
        self.pool
            .members()
            .iter()
            .filter(|m| m.state.serves())
            .filter_map(|m| self.pool.member_stats(m.id).ok())
            .map(|s| s.used_bytes)
            .sum()
    }

    /// The servers' resident set sizes, summed.
    pub fn rss_bytes(&self) -> u64 {
        self.procs.iter().filter_map(ServerProc::rss_bytes).sum()
    }

    /// Each server's resident memory by kind of mapping (`None` for a server that is gone),
    /// the anonymous mappings of `since` (same order) counted as old.
    pub fn smaps(&self, since: &[Option<Smaps>]) -> Vec<Option<Smaps>> {
        self.procs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if p.killed.load(Ordering::Relaxed) {
                    return None;
                }
                Smaps::read(p.pid(), since.get(i).and_then(Option::as_ref))
            })
            .collect()
    }

    /// Sends `sig` to server `victim`, then (SIGKILL and SIGSTOP) waits for the pool to restore
    /// full redundancy, as [`PoolRig::wait_redundant`]; returns when the signal was sent.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn fail(&self, victim: usize, sig: i32) -> anyhow::Result<(Instant, Option<Restore>)> {
        let at = Instant::now();
        self.procs
            .get(victim)
            .context("no such server")?
            .signal(sig)?;
        Ok((
            at,
            self.wait_redundant(victim, at, Duration::from_secs(300)),
        ))
    }

    /// Waits until the pool has noticed that member `lost` is gone and no object is short of
    /// copies (and, when coded, no stripe is degraded); returns how long after `since` the pool noticed, copied its last byte and had
    /// full redundancy (`None` after `limit`). Polls cheap figures every few milliseconds and
    /// the full count of objects short of copies (a scan of the location table) every 100 ms.
    pub fn wait_redundant(&self, lost: usize, since: Instant, limit: Duration) -> Option<Restore> {
        let mut noticed = None;
        let mut copied = self.pool.repair_stats().bytes_copied;
        let mut last_copy = Duration::ZERO;
        let mut last_scan = Instant::now();
        loop {
            if noticed.is_none()
                && self
                    .pool
                    .member_state(MemberId(lost))
                    .is_some_and(|s| s != MemberState::Live)
            {
                noticed = Some(since.elapsed());
                last_copy = since.elapsed();
            }
            let now_copied = self.pool.repair_stats().bytes_copied;
            if now_copied != copied {
                copied = now_copied;
                last_copy = since.elapsed();
            }
            if let Some(noticed) = noticed
                && last_scan.elapsed() >= Duration::from_millis(100)
            {
                last_scan = Instant::now();
                if self.pool.pool_stats().under_replicated == 0
                    && self.pool.coded_stats().is_none_or(|c| c.degraded == 0)
                {
                    return Some(Restore {
                        noticed,
                        last_copy,
                        restored: since.elapsed(),
                    });
                }
            }
            if since.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// How a member failed over while its server was frozen came back after SIGCONT.
#[derive(Clone, Copy, Debug)]
pub struct Rejoin {
    /// From SIGCONT to the member's server rejoining the pool (`None`: not within 30 s).
    pub after: Option<Duration>,
    /// Bytes its server holds for the pool once it rejoined (the copies it held when it was
    /// failed over were freed with its old session).
    pub used_bytes: u64,
    /// Its server's resident memory at SIGCONT and 1 s after the rejoin.
    pub rss_at_sigcont: u64,
    pub rss_after: u64,
}

impl PoolRig {
    /// Sends SIGCONT to frozen server `victim` and waits (at most 30 s) for its member to
    /// rejoin the pool.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn thaw_and_rejoin(&self, victim: usize) -> anyhow::Result<Rejoin> {
        let proc = self.procs.get(victim).context("no such server")?;
        let rss_at_sigcont = proc.rss_bytes().unwrap_or(0);
        let at = Instant::now();
        proc.signal(libc::SIGCONT)?;
        let mut now = None;
        while now.is_none() && at.elapsed() < Duration::from_secs(30) {
            now = self.pool.members()[victim].rejoined_as;
            std::thread::sleep(Duration::from_millis(5));
        }
        let after = now.map(|_| at.elapsed());
        let used_bytes = now
            .and_then(|id| self.pool.member_stats(id).ok())
            .map_or(0, |s| s.used_bytes);
        std::thread::sleep(Duration::from_secs(1));
        Ok(Rejoin {
            after,
            used_bytes,
            rss_at_sigcont,
            rss_after: proc.rss_bytes().unwrap_or(0),
        })
    }
}

/// Waits (at most 30 s) until member `ix` of `pool` is no longer live.
pub fn wait_down(pool: &PoolBackend, ix: usize) {
    let t0 = Instant::now();
    while pool
        .member_state(MemberId(ix))
        .is_some_and(|s| s == MemberState::Live)
        && t0.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// How long a pool took to notice a lost member and to restore full redundancy.
#[derive(Clone, Copy, Debug)]
pub struct Restore {
    /// From the loss until the member was marked down.
    pub noticed: Duration,
    /// From the loss until the last byte repair copied.
    pub last_copy: Duration,
    /// From the loss until no object was short of copies (within 100 ms).
    pub restored: Duration,
}

/// Bytes per trip of the taxi working set (loaded columns plus derived ones).
///
/// # Errors
/// Frame errors.
pub fn taxi_bytes_per_row(seed: u64) -> anyhow::Result<u64> {
    let one = crate::apps::taxi::generate_frame(
        &crate::apps::taxi::TaxiGen::new(seed),
        1,
        farmem_frame::LocalPlacement::shared(),
        &mut |_| {},
    )?;
    Ok(crate::taxi::working_set_bytes(&one))
}
