//! `farmem-bench durable`: what `--data-dir` costs on the transport figures (depth-1 and
//! pipelined puts, in memory vs. `--sync none` vs. `--sync always`, same run), and how long a
//! restart takes to recover a GiB (from the log alone, and from a snapshot).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use farmem::Backend;
use farmem::backend::{TcpBackend, TcpConfig};
use farmem_server::{Server, ServerConfig, ServerHandle};
use farmem_store::{DurableConfig, SyncPolicy};
use serde_json::json;

use crate::transport;

/// Options of `farmem-bench durable`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Object size of the transport runs, in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Requests in flight per connection in the pipelined runs.
    #[arg(long, default_value_t = 64)]
    pub depth: usize,
    /// Connections (client threads) of the pipelined runs.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// MiB of objects recovered in the recovery measurement (0: skip it).
    #[arg(long, default_value_t = 1024)]
    pub recovery_mib: u64,
    /// Where data directories go (default: the system's temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn start(durable: Option<DurableConfig>) -> anyhow::Result<ServerHandle> {
    Server::start(ServerConfig {
        durable,
        ..ServerConfig::default()
    })
    .context("starting a memory server")
}

/// One transport run against `addr`; returns its JSON figures.
fn transport_run(
    addr: &str,
    size: usize,
    depth: usize,
    threads: usize,
    a: &Args,
) -> anyhow::Result<serde_json::Value> {
    let out =
        std::env::temp_dir().join(format!("farmem-durable-bench-{}.json", std::process::id()));
    transport::run(transport::Args {
        size,
        depth,
        threads,
        seconds: a.seconds,
        objects: 4096,
        server: Some(addr.to_string()),
        token: None,
        no_pin: true,
        matrix: false,
        overhead_objects: 0,
        json: Some(out.clone()),
        tls_cert: None,
        tls_key: None,
        tls_ca: None,
        idle_conns: 0,
        redis: false,
    })?;
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out)?)?;
    let _ = std::fs::remove_file(&out);
    Ok(v)
}

fn fresh_dir(base: &Path, name: &str) -> PathBuf {
    let d = base.join(format!(
        "farmem-durable-bench-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Runs the benchmark.
pub fn run(a: Args) -> anyhow::Result<()> {
    let base = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    let modes: [(&str, Option<SyncPolicy>); 3] = [
        ("memory", None),
        ("sync none", Some(SyncPolicy::None)),
        ("sync always", Some(SyncPolicy::Always)),
    ];
    let mut transport_rows = Vec::new();
    for (name, sync) in modes {
        let dir = fresh_dir(&base, "transport");
        let server = start(sync.map(|s| DurableConfig::new(&dir).sync(s)))?;
        let addr = server.addr().to_string();
        println!("== {name}");
        let d1 = transport_run(&addr, a.size, 1, 1, &a)?;
        let piped = transport_run(&addr, a.size, a.depth, a.threads, &a)?;
        server.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
        let put1 = d1["put_ops_per_s"].as_f64().unwrap_or(0.0);
        let putp = piped["put_ops_per_s"].as_f64().unwrap_or(0.0);
        transport_rows.push(json!({
            "mode": name,
            "put_depth1_ops_per_s": put1,
            "put_depth1_round_trip_us": 1e6 / put1.max(1e-9),
            "get_depth1_p50_us": d1["get_p50_us"],
            "put_pipelined_ops_per_s": putp,
            "pipelined": format!("{} B x depth {} x {} connections", a.size, a.depth, a.threads),
        }));
    }
    println!(
        "\ndurable: the cost of --data-dir on puts ({} B objects)",
        a.size
    );
    for r in &transport_rows {
        println!(
            "  {:<12} depth-1 put {:>8.1} us/round trip ({:>8.0} ops/s) | pipelined puts {:>9.0} ops/s",
            r["mode"].as_str().unwrap_or(""),
            r["put_depth1_round_trip_us"].as_f64().unwrap_or(0.0),
            r["put_depth1_ops_per_s"].as_f64().unwrap_or(0.0),
            r["put_pipelined_ops_per_s"].as_f64().unwrap_or(0.0),
        );
    }
    let recovery = if a.recovery_mib > 0 {
        Some(recovery(&base, a.recovery_mib)?)
    } else {
        None
    };
    if let Some(path) = &a.json {
        let v = json!({ "transport": transport_rows, "recovery": recovery });
        crate::common::write_json(path, &v)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Fills a durable server with `mib` MiB of 16 KiB objects, stops it, and times its
/// recovery: once from the log alone, once (objects written twice) from a snapshot and the log
/// after it.
fn recovery(base: &Path, mib: u64) -> anyhow::Result<serde_json::Value> {
    const OBJECT: usize = 16 << 10;
    let n = (mib << 20) / OBJECT as u64;
    let gib = (n * OBJECT as u64) as f64 / (1u64 << 30) as f64;
    let mut rows = Vec::new();
    for (name, rounds) in [("log", 1u8), ("snapshot + log", 2)] {
        let dir = fresh_dir(base, "recovery");
        let mut config = DurableConfig::new(&dir).sync(SyncPolicy::None);
        config.snapshot_min_log = 64 << 20;
        let server = start(Some(config.clone()))?;
        let b = TcpBackend::connect(TcpConfig::new([server.addr().to_string()]))?;
        let ids: Vec<u64> = (0..n).collect();
        let t0 = Instant::now();
        for round in 1..=rounds {
            let data = vec![round; OBJECT];
            for chunk in ids.chunks(64) {
                let items: Vec<(u64, &[u8])> = chunk.iter().map(|&i| (i, &data[..])).collect();
                b.put_many(&items)?;
            }
        }
        let fill = t0.elapsed().as_secs_f64();
        if rounds > 1 {
            let deadline = Instant::now() + Duration::from_secs(600);
            while count(&dir, ".snap")? == 0 || count(&dir, ".tmp")? > 0 {
                anyhow::ensure!(Instant::now() < deadline, "no snapshot within 10 minutes");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Stopped before its client leaves: the session stays in the directory.
        server.shutdown();
        drop(b);
        let bytes = dir_bytes(&dir)?;
        let (took, objects) = timed_start(&config)?;
        anyhow::ensure!(objects == n, "recovered {objects} objects of {n}");
        println!(
            "  recovery from the {name}: {:.2} GiB ({n} objects of {} KiB) in {:.2} s = {:.2} s/GiB \
             (data directory {:.0} MiB; written at {:.0} MiB/s)",
            gib,
            OBJECT >> 10,
            took.as_secs_f64(),
            took.as_secs_f64() / gib,
            bytes as f64 / f64::from(1u32 << 20),
            (mib * u64::from(rounds)) as f64 / fill,
        );
        rows.push(json!({
            "from": name,
            "gib": gib,
            "objects": n,
            "object_bytes": OBJECT,
            "seconds": took.as_secs_f64(),
            "seconds_per_gib": took.as_secs_f64() / gib,
            "dir_bytes": bytes,
        }));
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(json!(rows))
}

/// Starts a server on `config` and times it (recovery included); returns the time and the
/// objects it holds.
fn timed_start(config: &DurableConfig) -> anyhow::Result<(Duration, u64)> {
    let t0 = Instant::now();
    let server = start(Some(config.clone()))?;
    let took = t0.elapsed();
    let objects = server.stats().objects;
    server.shutdown();
    Ok((took, objects))
}

fn count(dir: &Path, suffix: &str) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
        .count())
}

fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)?.flatten() {
        total += e.metadata()?.len();
    }
    Ok(total)
}
