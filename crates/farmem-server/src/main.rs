//! `farmem-server`: serve far memory over TCP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use farmem_server::{Server, ServerConfig, parse_duration, parse_size};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// A farmem memory server: keeps clients' far objects in this machine's memory.
///
/// A client's objects are freed when it closes its session, or when it has been disconnected
/// for longer than the session lease (its process is gone).
#[derive(Parser, Debug)]
#[command(version, about)]
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
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn size(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let token = match &args.token_file {
        None => None,
        Some(p) => match std::fs::read(p) {
            Ok(t) if !t.trim_ascii().is_empty() => Some(t.trim_ascii().to_vec()),
            Ok(_) => {
                eprintln!("error: token file {} is empty", p.display());
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("error: cannot read token file {}: {e}", p.display());
                return ExitCode::from(2);
            }
        },
    };
    let Ok(max_object) = u32::try_from(args.max_object) else {
        eprintln!("error: --max-object must be below 4GiB");
        return ExitCode::from(2);
    };
    let mut config = ServerConfig {
        listen: args.listen,
        capacity: args.capacity,
        token,
        threads: args.threads,
        session_lease: args.session_lease,
        ..ServerConfig::default()
    };
    if let Some(n) = args.agent_threads {
        config.agent_threads = n.max(1);
    }
    config.limits.max_object = max_object;
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
