//! `farmem-server`: serve far memory over TCP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::time::Duration;

use farmem_server::{
    AdminClient, AdminError, AdminStatus, FileConfig, HostReserve, Server, ServerConfig, ServerTls,
    SessionQuota, parse_duration, parse_size,
};
use farmem_store::error_chain as chain;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// A farmem memory server: keeps clients' far objects in this machine's memory.
///
/// A client's objects are freed when it closes its session, or when it has been disconnected
/// for longer than the session lease (its process is gone).
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    serve: Args,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Operator requests to a running server (authenticated by its admin token).
    Ctl(Ctl),
}

#[derive(clap::Args, Debug)]
struct Ctl {
    /// The server, host:port.
    #[arg(long)]
    server: String,
    /// File holding the server's admin token (the file it was given as --admin-token-file).
    #[arg(long)]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    action: CtlAction,
}

#[derive(Subcommand, Debug)]
enum CtlAction {
    /// Show capacity, use and any shrink under way.
    Status,
    /// Show server-wide figures: use, objects, sessions, connections, bytes written.
    Stats,
    /// Take SIZE of capacity back: clients move the excess to other servers by the deadline.
    Shrink {
        /// How much to take back, e.g. 2GiB.
        #[arg(value_parser = size)]
        size: u64,
        /// How long clients get to move data away.
        #[arg(long, default_value = "30s", value_parser = duration)]
        deadline: std::time::Duration,
    },
    /// Give SIZE of capacity back (at most up to --capacity).
    Grow {
        /// How much to give back, e.g. 2GiB.
        #[arg(value_parser = size)]
        size: u64,
    },
    /// Set the capacity to SIZE (a shrink when below use).
    Set {
        /// The capacity, e.g. 6GiB.
        #[arg(value_parser = size)]
        size: u64,
        /// How long clients get to move data away.
        #[arg(long, default_value = "30s", value_parser = duration)]
        deadline: std::time::Duration,
    },
}

/// The serving flags. Each overrides the same key of `--config FILE`; a flag left out takes the
/// file's value, else the default shown.
#[derive(clap::Args, Debug)]
struct Args {
    /// Read settings from this TOML file (keys as the flags, with `_`: see
    /// deploy/farmem-server.toml); flags given here override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Check the configuration (file and flags, token files readable) and exit: 0 when it is
    /// valid, 2 otherwise. Binds nothing.
    #[arg(long)]
    check: bool,
    /// Address to listen on (port 0 picks a free port; the `listening on` line shows it).
    /// [default: 127.0.0.1:7070]
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Hard capacity: payload + per-object overhead, e.g. 512MiB, 8GiB. [default: 8GiB]
    #[arg(long, value_parser = size)]
    capacity: Option<u64>,
    /// File holding a shared secret clients must present (surrounding whitespace ignored).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// File holding the operator secret `ctl` must present; without it admin requests are
    /// refused (and every client's STATS shows the whole server). Kept apart from --token-file,
    /// which every client program holds.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Leave this much memory to the host: shrink when its MemAvailable falls below, grow back
    /// (up to --capacity) when it recovers, e.g. 4GiB.
    #[arg(long, value_parser = size)]
    host_reserve: Option<u64>,
    /// How long clients get to move data away when the host runs short. [default: 30s]
    #[arg(long, value_parser = duration)]
    host_reserve_deadline: Option<Duration>,
    /// Most client connections open at once; further ones are refused. Each is a file
    /// descriptor (the server raises its soft open-file limit to the hard one). [default: 16384]
    #[arg(long, visible_alias = "threads")]
    max_connections: Option<usize>,
    /// Threads serving the connections, an epoll loop each (default: the cores, at most 8).
    #[arg(long)]
    io_threads: Option<usize>,
    /// Threads running long requests: agent operations, server-to-server copies, shrinks
    /// (default: the cores, 2 to 8).
    #[arg(long)]
    workers: Option<usize>,
    /// Threads running server-to-server copies, apart from the workers. [default: 2]
    #[arg(long)]
    copy_workers: Option<usize>,
    /// Serve TLS with this PEM certificate chain (with --tls-key); clients then connect with
    /// TLS and verify it against their CA. Without it: clear text, for trusted networks.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Require TLS clients to present a certificate signed by a CA in this PEM file (with
    /// --tls-cert); the token, if any, is still checked.
    #[arg(long)]
    tls_client_ca: Option<PathBuf>,
    /// Largest object accepted, e.g. 64MiB. [default: 64MiB]
    #[arg(long, value_parser = size)]
    max_object: Option<u64>,
    /// Threads one large agent operation may use (default: the cores, at most 4).
    #[arg(long, env = "FARMEM_AGENT_THREADS")]
    agent_threads: Option<usize>,
    /// How long a disconnected client's session is kept for it to resume, e.g. 30s, 500ms.
    /// [default: 30s]
    #[arg(long, value_parser = duration)]
    session_lease: Option<Duration>,
    /// A connection must complete its hello within this time of being accepted (one deadline
    /// for the whole hello, however slowly its bytes come). [default: 10s]
    #[arg(long, value_parser = duration)]
    hello_timeout: Option<Duration>,
    /// Close an authenticated connection that sends nothing for this long (0: never). Clients
    /// ping every 200 ms by default; the session itself stays for its lease. [default: 10m]
    #[arg(long, value_parser = duration)]
    idle_timeout: Option<Duration>,
    /// Disconnect a client that does not read its answers for this long (0: never).
    /// [default: 30s]
    #[arg(long, value_parser = duration)]
    write_timeout: Option<Duration>,
    /// TCP keepalive: probe a silent connection after this long (then every 10 s, 6 probes),
    /// so one whose host vanished is closed (0: off). [default: 60s]
    #[arg(long, value_parser = duration)]
    keepalive: Option<Duration>,
    /// Keep sessions and objects across restarts (kill -9 included) in this directory: a
    /// write-ahead log plus snapshots. Without it the server keeps everything in memory only.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// With --data-dir: when a change is durable before it is acknowledged. `always`: synced
    /// to disk (survives a host crash; one fdatasync per group commit); `none`: in the OS's
    /// page cache (survives a crash of the server, not of the host).
    #[arg(long, default_value = "always", value_parser = ["always", "none"])]
    sync: String,
    /// With --data-dir: most disk space the log may take, e.g. 20GiB; changes beyond it are
    /// refused with a storage error until a snapshot frees log space (default: the disk).
    #[arg(long, value_parser = size)]
    log_limit: Option<u64>,
    /// With --data-dir: take a snapshot (and drop the log before it) once the log exceeds
    /// this and the data held.
    #[arg(long, default_value = "256MiB", value_parser = size)]
    snapshot_after: u64,
    /// Largest answer built for one request (batched gets, agent results); larger ones are
    /// refused with `ResponseTooLarge`. At most 1GiB. [default: 256MiB]
    #[arg(long, value_parser = size)]
    max_response: Option<u64>,
    /// Serve Prometheus metrics on http://ADDR/metrics, with /healthz and /readyz probes.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Per-session quota: most bytes one session may hold (payload + overhead), e.g. 1GiB.
    #[arg(long, value_parser = size)]
    quota_bytes: Option<u64>,
    /// Per-session quota: most objects one session may hold.
    #[arg(long)]
    quota_objects: Option<u64>,
    /// Per-session quota: requests per second (gets, puts, patches, agent operations; pings
    /// and frees are free). A request above the rate is refused with `QuotaExceeded` saying
    /// when to retry.
    #[arg(long)]
    quota_rps: Option<u64>,
    /// Requests a session may send at once above --quota-rps. [default: one second's worth]
    #[arg(long)]
    quota_burst: Option<u64>,
    /// Stop an agent operation that runs longer than this (0: never), answering it with a
    /// typed time-limit error. An operation also stops when its client hangs up. [default: 60s]
    #[arg(long, value_parser = duration)]
    agent_time_limit: Option<Duration>,
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn size(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

/// Reads a token file (surrounding whitespace trimmed); `Err` is the exit code.
fn read_token(path: Option<&PathBuf>) -> Result<Option<Vec<u8>>, ExitCode> {
    let Some(p) = path else { return Ok(None) };
    match std::fs::read(p) {
        Ok(t) if !t.trim_ascii().is_empty() => Ok(Some(t.trim_ascii().to_vec())),
        Ok(_) => {
            eprintln!("error: token file {} is empty", p.display());
            Err(ExitCode::from(2))
        }
        Err(e) => {
            eprintln!("error: cannot read token file {}: {e}", p.display());
            Err(ExitCode::from(2))
        }
    }
}

/// Reads the TLS certificate chain and key files; `Err` is the message to print.
fn load_tls(
    cert: &PathBuf,
    key: &PathBuf,
    client_ca: Option<&PathBuf>,
) -> Result<ServerTls, String> {
    let read =
        |p: &PathBuf| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let (c, k) = (read(cert)?, read(key)?);
    let tls = ServerTls::from_pem(&c, &k).map_err(|e| chain(&e))?;
    match client_ca {
        Some(ca) => tls.client_ca(&read(ca)?).map_err(|e| chain(&e)),
        None => Ok(tls),
    }
}

/// Raises the soft limit on open files to the hard limit: each connection is a descriptor.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, exclusively borrowed out pointer for getrlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-file limit");
        return;
    }
    if lim.rlim_cur >= lim.rlim_max {
        return;
    }
    let from = lim.rlim_cur;
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid rlimit that setrlimit only reads.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
        tracing::debug!(from, to = lim.rlim_max, "raised the open-file limit");
    } else {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot raise the open-file limit");
    }
}

fn print_status(st: &AdminStatus) {
    println!(
        "capacity {} used {} max {} excess {} deadline_ms {}",
        st.capacity_bytes,
        st.used_bytes,
        st.max_capacity_bytes,
        st.excess_bytes,
        st.reclaim_deadline_ms
    );
}

/// `farmem-server ctl`: exit 0 on success, 3 when a shrink was incomplete, 4 when the admin
/// token was refused, 1 on other failures.
fn ctl(c: &Ctl) -> ExitCode {
    let token = match read_token(c.token_file.as_ref()) {
        Ok(t) => t.unwrap_or_default(),
        Err(code) => return code,
    };
    let admin = AdminClient::new(c.server.clone(), token);
    let r = match c.action {
        CtlAction::Stats => admin.stats().map(|st| {
            println!(
                "used {} capacity {} objects {} sessions {} connections {} written {}",
                st.used_bytes,
                st.capacity_bytes,
                st.objects,
                st.sessions,
                st.connections,
                st.bytes_written
            );
        }),
        CtlAction::Status => admin.status().map(|st| print_status(&st)),
        CtlAction::Shrink { size, deadline } => {
            admin.shrink(size, deadline).map(|st| print_status(&st))
        }
        CtlAction::Grow { size } => admin.grow(size).map(|st| print_status(&st)),
        CtlAction::Set { size, deadline } => admin.set(size, deadline).map(|st| print_status(&st)),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => ctl_failed(&e),
    }
}

/// Reports a failed `ctl` request; the exit code says why.
fn ctl_failed(e: &AdminError) -> ExitCode {
    eprintln!("error: {}", chain(e));
    ExitCode::from(match e {
        AdminError::Incomplete { .. } => 3,
        AdminError::Refused { .. } => 4,
        _ => 1,
    })
}

fn configure(args: &Args) -> Result<ServerConfig, ExitCode> {
    let file = match &args.config {
        Some(p) => match FileConfig::load(p) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: {}: {}", p.display(), chain(&e));
                return Err(ExitCode::from(2));
            }
        },
        None => FileConfig::default(),
    };
    let token = read_token(args.token_file.as_ref().or(file.token_file.as_ref()))?;
    let admin_token = read_token(
        args.admin_token_file
            .as_ref()
            .or(file.admin_token_file.as_ref()),
    )?;
    let usage = |m: &str| {
        eprintln!("error: {m}");
        ExitCode::from(2)
    };
    let max_object = args.max_object.or(file.max_object).unwrap_or(64 << 20);
    let max_object =
        u32::try_from(max_object).map_err(|_| usage("max_object must be below 4GiB"))?;
    let max_response = args.max_response.or(file.max_response).unwrap_or(256 << 20);
    let max_response =
        u32::try_from(max_response).map_err(|_| usage("max_response must be at most 1GiB"))?;
    let pick = |flag: Option<Duration>, file: Option<Duration>, default: u64| {
        flag.or(file).unwrap_or(Duration::from_secs(default))
    };
    let mut config = ServerConfig {
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7070))),
        capacity: args.capacity.or(file.capacity).unwrap_or(8 << 30),
        token,
        admin_token,
        host_reserve: args
            .host_reserve
            .or(file.host_reserve)
            .map(|r| HostReserve {
                deadline: pick(args.host_reserve_deadline, file.host_reserve_deadline, 30),
                ..HostReserve::new(r)
            }),
        max_connections: args
            .max_connections
            .or(file.max_connections)
            .unwrap_or(16384),
        session_lease: pick(args.session_lease, file.session_lease, 30),
        metrics: args.metrics.or(file.metrics),
        quota: SessionQuota {
            bytes: args.quota_bytes.or(file.quota.bytes),
            objects: args.quota_objects.or(file.quota.objects),
            requests_per_second: args.quota_rps.or(file.quota.requests_per_second),
            burst: args.quota_burst.or(file.quota.burst),
        },
        ..ServerConfig::default()
    };
    if let Some(n) = args.agent_threads.or(file.agent_threads) {
        config.agent_threads = n.max(1);
    }
    if let Some(n) = args.io_threads.or(file.io_threads) {
        config.io_threads = n;
    }
    if let Some(n) = args.workers.or(file.workers) {
        config.workers = n;
    }
    if let Some(n) = args.copy_workers.or(file.copy_workers) {
        config.copy_workers = n;
    }
    let tls_cert = args.tls_cert.as_ref().or(file.tls_cert.as_ref());
    let tls_key = args.tls_key.as_ref().or(file.tls_key.as_ref());
    let client_ca = args.tls_client_ca.as_ref().or(file.tls_client_ca.as_ref());
    match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => {
            config.tls = Some(load_tls(cert, key, client_ca).map_err(|m| usage(&m))?);
        }
        (None, None) if client_ca.is_some() => {
            return Err(usage("tls_client_ca needs tls_cert and tls_key"));
        }
        (None, None) => {}
        _ => return Err(usage("tls_cert and tls_key go together")),
    }
    let l = &mut config.limits;
    l.max_object = max_object;
    l.max_response = max_response;
    l.hello_timeout = pick(args.hello_timeout, file.hello_timeout, 10);
    l.idle_timeout = pick(args.idle_timeout, file.idle_timeout, 600);
    l.write_timeout = pick(args.write_timeout, file.write_timeout, 30);
    l.keepalive = pick(args.keepalive, file.keepalive, 60);
    l.agent_time_limit = pick(args.agent_time_limit, file.agent_time_limit, 60);
    l.max_frame = max_object.saturating_add(4096);
    if let Some(dir) = &args.data_dir {
        let mut d = farmem_store::DurableConfig::new(dir);
        if args.sync == "none" {
            d.sync = farmem_store::SyncPolicy::None;
        }
        d.log_limit = args.log_limit.unwrap_or(u64::MAX);
        d.snapshot_min_log = args.snapshot_after;
        config.durable = Some(d);
    }
    config.validate().map_err(|e| usage(&e.to_string()))?;
    Ok(config)
}

/// Keeps the C allocator to one arena. A server allocates objects of 4 KiB and more on its
/// I/O and worker threads and frees them on others: with an arena per thread, churn kept about
/// twice the live bytes resident (one arena: about 1.1 times).
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes a setting of glibc's allocator; called before other threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Gives the whole pages of the C allocator's free chunks back to the system (see
/// `ServerHandle::release_freed_memory`): under churn of mixed-size objects they stayed
/// resident, 15-20% above the bytes held.
fn release_free_pages() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes the allocator's locks and only releases pages of free chunks.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn main() -> ExitCode {
    one_malloc_arena();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some(Cmd::Ctl(c)) = &cli.cmd {
        return ctl(c);
    }
    let config = match configure(&cli.serve) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cli.serve.check {
        if config.admin_token.is_none() {
            eprintln!(
                "warning: no admin token: `ctl` is refused and every client's STATS shows the \
                 whole server"
            );
        }
        println!(
            "configuration ok: listen {} capacity {} max_connections {} tls {} metrics {} \
             quota {:?}",
            config.listen,
            config.capacity,
            config.max_connections,
            if config.tls.is_some() { "on" } else { "off" },
            config
                .metrics
                .map_or_else(|| "off".to_string(), |a| a.to_string()),
            config.quota
        );
        return ExitCode::SUCCESS;
    }
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    raise_fd_limit();
    let server = match Server::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            return ExitCode::from(1);
        }
    };
    if let Err(e) = server.release_freed_memory(release_free_pages) {
        tracing::warn!(error = %chain(&e), "freed memory will not be given back to the system");
    }
    // The first line is what scripts and tests wait for.
    println!("listening on {}", server.addr());
    if let Some(m) = server.metrics_addr() {
        println!("metrics on http://{m}/metrics");
    }
    // `forever` yields only signals (it retries interrupted waits), so `None` cannot happen.
    let sig = signals.forever().next();
    tracing::info!(signal = ?sig, "shutting down");
    server.shutdown();
    ExitCode::SUCCESS
}
