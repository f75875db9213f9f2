//! `farmem-server`: serve far memory over TCP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use farmem_server::{
    AdminClient, AdminError, AdminStatus, HostReserve, Server, ServerConfig, parse_duration,
    parse_size,
};
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

#[derive(clap::Args, Debug)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the `listening on` line shows it).
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Hard capacity: payload + per-object overhead, e.g. 512MiB, 8GiB.
    #[arg(long, default_value = "8GiB", value_parser = size)]
    capacity: u64,
    /// File holding a shared secret clients must present (surrounding whitespace ignored).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// File holding the operator secret `ctl` must present; without it admin requests are
    /// refused. Kept apart from --token-file, which every client program holds.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Leave this much memory to the host: shrink when its MemAvailable falls below, grow back
    /// (up to --capacity) when it recovers, e.g. 4GiB.
    #[arg(long, value_parser = size)]
    host_reserve: Option<u64>,
    /// How long clients get to move data away when the host runs short.
    #[arg(long, default_value = "30s", value_parser = duration)]
    host_reserve_deadline: std::time::Duration,
    /// Most client connections served at once (one thread each).
    #[arg(long, default_value_t = 256)]
    threads: usize,
    /// Largest object accepted, e.g. 64MiB.
    #[arg(long, default_value = "64MiB", value_parser = size)]
    max_object: u64,
    /// Threads one large agent operation may use (default: the cores, at most 4).
    #[arg(long, env = "FARMEM_AGENT_THREADS")]
    agent_threads: Option<usize>,
    /// How long a disconnected client's session is kept for it to resume, e.g. 30s, 500ms.
    #[arg(long, default_value = "30s", value_parser = duration)]
    session_lease: std::time::Duration,
    /// A connection must complete its hello within this time of being accepted (one deadline
    /// for the whole hello, however slowly its bytes come).
    #[arg(long, default_value = "10s", value_parser = duration)]
    hello_timeout: std::time::Duration,
    /// Close an authenticated connection that sends nothing for this long (0: never). Clients
    /// ping every 200 ms by default; the session itself stays for its lease.
    #[arg(long, default_value = "10m", value_parser = duration)]
    idle_timeout: std::time::Duration,
    /// Disconnect a client that does not read its answers for this long (0: never).
    #[arg(long, default_value = "30s", value_parser = duration)]
    write_timeout: std::time::Duration,
    /// TCP keepalive: probe a silent connection after this long (then every 10 s, 6 probes),
    /// so one whose host vanished is closed (0: off).
    #[arg(long, default_value = "60s", value_parser = duration)]
    keepalive: std::time::Duration,
    /// Largest answer built for one request (batched gets, agent results); larger ones are
    /// refused with `ResponseTooLarge`. At most 1GiB.
    #[arg(long, default_value = "256MiB", value_parser = size)]
    max_response: u64,
    /// Stop an agent operation that runs longer than this (0: never), answering it with a
    /// typed time-limit error. An operation also stops when its client hangs up.
    #[arg(long, default_value = "60s", value_parser = duration)]
    agent_time_limit: std::time::Duration,
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
        CtlAction::Status => admin.status(),
        CtlAction::Shrink { size, deadline } => admin.shrink(size, deadline),
        CtlAction::Grow { size } => admin.grow(size),
        CtlAction::Set { size, deadline } => admin.set(size, deadline),
    };
    match r {
        Ok(st) => {
            print_status(&st);
            ExitCode::SUCCESS
        }
        Err(e) => {
            let mut msg = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                msg.push_str(": ");
                msg.push_str(&c.to_string());
                cause = c.source();
            }
            eprintln!("error: {msg}");
            ExitCode::from(match e {
                AdminError::Incomplete { .. } => 3,
                AdminError::Refused { .. } => 4,
                _ => 1,
            })
        }
    }
}

fn main() -> ExitCode {
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
    let args = cli.serve;
    let token = match read_token(args.token_file.as_ref()) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let admin_token = match read_token(args.admin_token_file.as_ref()) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let Ok(max_object) = u32::try_from(args.max_object) else {
        eprintln!("error: --max-object must be below 4GiB");
        return ExitCode::from(2);
    };
    let mut config = ServerConfig {
        listen: args.listen,
        capacity: args.capacity,
        token,
        admin_token,
        host_reserve: args.host_reserve.map(|r| HostReserve {
            deadline: args.host_reserve_deadline,
            ..HostReserve::new(r)
        }),
        threads: args.threads,
        session_lease: args.session_lease,
        ..ServerConfig::default()
    };
    if let Some(n) = args.agent_threads {
        config.agent_threads = n.max(1);
    }
    let Ok(max_response) = u32::try_from(args.max_response) else {
        eprintln!("error: --max-response must be at most 1GiB");
        return ExitCode::from(2);
    };
    config.limits.max_object = max_object;
    config.limits.max_response = max_response;
    config.limits.agent_time_limit = args.agent_time_limit;
    config.limits.hello_timeout = args.hello_timeout;
    config.limits.idle_timeout = args.idle_timeout;
    config.limits.write_timeout = args.write_timeout;
    config.limits.keepalive = args.keepalive;
    config.limits.max_frame = max_object.saturating_add(4096);
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let server = match Server::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    println!("listening on {}", server.addr());
    // `forever` yields only signals (it retries interrupted waits), so `None` cannot happen.
    let sig = signals.forever().next();
    tracing::info!(signal = ?sig, "shutting down");
    server.shutdown();
    ExitCode::SUCCESS
}
