//! `farmem-run`: runs an unmodified program (C, C++, Python, ...) with far memory underneath.
//!
//! ```text
//! farmem-run [--local-mem 4GiB] [--servers ADDR,...] [--replicas N] [--fallback-local] -- CMD ARGS...
//! ```
//!
//! The program's large allocations (64 KiB and up) live in a paged region whose pages are kept
//! by memory servers; at most `--local-mem` of them is resident in each process. The allocator
//! shim `libfarmem_preload.so` is injected with `LD_PRELOAD` and configured through
//! `FARMEM_RUN_*` environment variables (see its crate docs). Without `--servers` a memory
//! server is started on loopback in this process for the program's lifetime.
//!
//! The exit status is the program's (128 + N when it was killed by signal N); 1 when far memory
//! cannot be set up (unless `--fallback-local`), 127 when CMD cannot be started.

// Shared by path with the shim (a cdylib cannot be a Rust dependency); the shim's defaults are
// spelled out in the options below instead.
#[allow(dead_code)]
#[path = "../../farmem-preload/src/env.rs"]
mod env;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::Parser;
use farmem_server::{Server, ServerConfig, ServerHandle};

/// Run CMD with far memory underneath.
#[derive(Parser, Debug)]
#[command(name = "farmem-run", version, trailing_var_arg = true)]
struct Args {
    /// Local memory each process may use for its far heap, e.g. 4GiB, 512MiB.
    #[arg(long, default_value = "4GiB", value_parser = parse_bytes)]
    local_mem: usize,
    /// Memory servers (`host:port`, comma-separated); default: one started on loopback.
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
    /// Keep this many copies of every page, on distinct servers.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// When far memory cannot be set up (no usable userfaultfd, servers unreachable), run the
    /// program unchanged on local memory instead of failing.
    #[arg(long)]
    fallback_local: bool,
    /// Smallest allocation placed in far memory, e.g. 64KiB.
    #[arg(long, default_value = "64KiB", value_parser = parse_bytes)]
    threshold: usize,
    /// Virtual size of each process's far heap (address space only), e.g. 256GiB.
    #[arg(long, default_value = "256GiB", value_parser = parse_bytes)]
    region: usize,
    /// Programs started by the program (after exec) run without far memory. By default they
    /// inherit it: each gets its own far heap and budget.
    #[arg(long)]
    no_inherit: bool,
    /// Leave large anonymous mmaps (such as Python's object arenas) in local memory; only
    /// malloc and friends go far.
    #[arg(long)]
    no_mmap: bool,
    /// Print each process's paging counters to stderr when it exits.
    #[arg(long)]
    stats: bool,
    /// File holding the servers' shared secret, if they require one.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The shim library; default: `libfarmem_preload.so` next to this binary.
    #[arg(long)]
    preload: Option<PathBuf>,
    /// The program and its arguments.
    #[arg(required = true, num_args = 1..)]
    cmd: Vec<String>,
}

fn parse_bytes(s: &str) -> Result<usize, String> {
    env::parse_size(s).ok_or_else(|| format!("not a byte size: {s:?} (e.g. 4GiB, 512MiB)"))
}

/// Finds the shim: `--preload`, else next to this binary (or one level up, for test binaries in
/// `deps/`).
fn find_preload(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        anyhow::ensure!(p.is_file(), "no shim library at {}", p.display());
        return Ok(p.canonicalize()?);
    }
    let exe = std::env::current_exe().context("locating farmem-run")?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    for d in [dir, dir.parent().unwrap_or(dir)] {
        let p = d.join("libfarmem_preload.so");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "libfarmem_preload.so not found next to {} (build it with `cargo build -p \
         farmem-preload`, or pass --preload PATH)",
        exe.display()
    )
}

/// The memory servers the program uses, and the loopback one this process runs, if any.
fn servers(args: &Args) -> anyhow::Result<(Vec<String>, Option<ServerHandle>)> {
    if !args.servers.is_empty() {
        return Ok((args.servers.clone(), None));
    }
    let handle =
        Server::start(ServerConfig::default()).context("starting a loopback memory server")?;
    Ok((vec![handle.addr().to_string()], Some(handle)))
}

/// Ignores SIGINT and SIGQUIT while the program runs (it gets them from the terminal itself and
/// decides; this process follows when it exits).
fn ignore_terminal_signals() {
    for sig in [libc::SIGINT, libc::SIGQUIT] {
        // SAFETY: setting a signal disposition to SIG_IGN has no memory-safety preconditions.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.replicas >= 1, "--replicas must be at least 1");
    let mut cmd = Command::new(&args.cmd[0]);
    cmd.args(&args.cmd[1..]);
    let far = farmem::paging::available_user_mode();
    let _server = match far {
        Err(e) if args.fallback_local => {
            eprintln!("farmem-run: {e}; running on local memory only (--fallback-local)");
            None
        }
        Err(e) => bail!("{e} (use --fallback-local to run on local memory instead)"),
        Ok(()) => {
            let (addrs, server) = servers(&args)?;
            anyhow::ensure!(
                args.replicas <= addrs.len(),
                "--replicas {} needs at least that many servers, {} given",
                args.replicas,
                addrs.len()
            );
            let lib = find_preload(args.preload.clone())?;
            let preload = match std::env::var("LD_PRELOAD") {
                Ok(old) if !old.is_empty() => format!("{}:{old}", lib.display()),
                _ => lib.display().to_string(),
            };
            cmd.env("LD_PRELOAD", preload)
                .env(env::SERVERS, addrs.join(","))
                .env(env::LOCAL_MEM, args.local_mem.to_string())
                .env(env::REPLICAS, args.replicas.to_string())
                .env(env::THRESHOLD, args.threshold.to_string())
                .env(env::REGION, args.region.to_string())
                .env(
                    env::FALLBACK_LOCAL,
                    if args.fallback_local { "1" } else { "0" },
                )
                .env(env::INHERIT, if args.no_inherit { "0" } else { "1" })
                .env(env::STATS, if args.stats { "1" } else { "0" })
                .env(env::MMAP, if args.no_mmap { "0" } else { "1" });
            if let Some(f) = &args.token_file {
                let t = std::fs::read_to_string(f)
                    .with_context(|| format!("reading the token file {}", f.display()))?;
                cmd.env(env::TOKEN, t.trim());
            }
            // numpy asks for transparent huge pages on large arrays; far pages are 4 KiB.
            if std::env::var_os("NUMPY_MADVISE_HUGEPAGE").is_none() {
                cmd.env("NUMPY_MADVISE_HUGEPAGE", "0");
            }
            server
        }
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("farmem-run: cannot run {}: {e}", args.cmd[0]);
            return Ok(ExitCode::from(127));
        }
    };
    ignore_terminal_signals();
    let status = child.wait().context("waiting for the program")?;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(c as u8),
        (None, Some(sig)) => ExitCode::from(128u8.wrapping_add(sig as u8)),
        (None, None) => ExitCode::FAILURE,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("farmem-run: {e:#}");
            ExitCode::FAILURE
        }
    }
}
