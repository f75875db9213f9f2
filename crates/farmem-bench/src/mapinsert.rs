//! `farmem-bench map-insert`: `FarHashMap` inserts of fresh keys, against the transport's
//! pipelined put rate measured on the same server, and the server's memory per entry.
//!
//! For each insert method (`insert` one key at a time; `extend`, the bulk load), a fresh memory
//! server child process is started, the transport's pipelined put rate of 16-byte objects is
//! measured on it, then `--entries` fresh `u64 -> u64` keys are inserted into a map with a
//! `--budget-mib` local cache, and the rate of every `--step` keys is reported (flat as the
//! table grows?) along with the server's RSS growth per entry. Targets: inserts at least 50% of
//! the pipelined put rate, flat from 1 M to 20 M entries; at most 64 bytes of server RSS per
//! 16-byte entry.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use farmem::backend::{TcpBackend, TcpConfig, Ticket};
use farmem::containers::{FarHashMap, HashMapConfig};
use farmem::{Backend, Runtime, RuntimeConfig};
use serde_json::json;

use crate::pool_rig::ServerProc;

/// Options of `farmem-bench map-insert`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Fresh keys inserted per method.
    #[arg(long, default_value_t = 20_000_000)]
    pub entries: u64,
    /// Keys per reported step.
    #[arg(long, default_value_t = 1_000_000)]
    pub step: u64,
    /// Local cache of the map, MiB.
    #[arg(long, default_value_t = 64)]
    pub budget_mib: usize,
    /// Insert methods (comma-separated: insert, extend).
    #[arg(long, value_delimiter = ',', default_value = "insert,extend")]
    pub methods: Vec<String>,
    /// Seconds of the pipelined-put reference.
    #[arg(long, default_value_t = 2.0)]
    pub put_seconds: f64,
    /// Puts in flight in the reference.
    #[arg(long, default_value_t = 256)]
    pub put_depth: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The key of the `i`th insert: scattered over the key space.
fn key_of(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x2545_F491
}

/// Puts/s of 16-byte objects, `depth` in flight on one connection, for `seconds`.
fn pipelined_puts(b: &TcpBackend, depth: usize, seconds: f64) -> anyhow::Result<f64> {
    let data = [0xA5u8; 16];
    let objects = 1u64 << 16;
    let base = 1u64 << 60;
    let mut inflight: VecDeque<Ticket> = VecDeque::with_capacity(depth);
    let (mut next, mut done) = (0u64, 0u64);
    let t0 = Instant::now();
    let end = Duration::from_secs_f64(seconds);
    loop {
        let running = t0.elapsed() < end;
        if running {
            let mut queued = 0;
            while inflight.len() < depth {
                inflight.push_back(b.submit_put(base + next % objects, &data)?);
                next += 1;
                queued += 1;
                if queued >= depth.div_ceil(2) {
                    b.flush();
                    queued = 0;
                }
            }
            b.flush();
        }
        let Some(t) = inflight.pop_front() else { break };
        b.wait_done(t)?;
        done += 1;
    }
    let rate = done as f64 / t0.elapsed().as_secs_f64();
    let ids: Vec<u64> = (0..objects.min(next)).map(|i| base + i).collect();
    b.free(&ids)?;
    Ok(rate)
}

fn run_method(args: &Args, method: &str) -> anyhow::Result<serde_json::Value> {
    let server = ServerProc::start()?;
    let backend =
        Arc::new(TcpBackend::connect(TcpConfig::new([server.addr()])).context("connecting")?);
    let puts = pipelined_puts(&backend, args.put_depth.max(1), args.put_seconds)?;
    let rt = Runtime::new(RuntimeConfig::new(16 << 20).custom_backend(backend.clone()))
        .context("starting the runtime")?;
    let m: FarHashMap<u64, u64> = FarHashMap::new(&rt, HashMapConfig::new(args.budget_mib << 20))?;
    let rss0 = server.rss_bytes().unwrap_or(0);
    println!("  server RSS before: {} MiB", rss0 >> 20);
    let step = args.step.max(1);
    let mut steps = Vec::new();
    let t0 = Instant::now();
    let mut at = 0u64;
    while at < args.entries {
        let end = (at + step).min(args.entries);
        let ts = Instant::now();
        match method {
            "insert" => {
                for i in at..end {
                    m.insert(key_of(i), i)?;
                }
            }
            "extend" => m.extend((at..end).map(|i| (key_of(i), i)))?,
            other => anyhow::bail!("unknown insert method {other:?} (insert, extend)"),
        }
        let rate = (end - at) as f64 / ts.elapsed().as_secs_f64();
        let rss = server.rss_bytes().unwrap_or(0);
        println!(
            "  {method}: {:>5.1} M entries: {:.3} M inserts/s this step, server RSS {} MiB",
            end as f64 / 1e6,
            rate / 1e6,
            rss >> 20
        );
        steps.push(json!({ "entries": end, "inserts_per_s": rate, "server_rss_bytes": rss }));
        at = end;
    }
    m.flush()?;
    let secs = t0.elapsed().as_secs_f64();
    let rate = args.entries as f64 / secs;
    let rss = server.rss_bytes().unwrap_or(0);
    let per_entry = rss.saturating_sub(rss0) as f64 / args.entries.max(1) as f64;
    anyhow::ensure!(m.len()? == args.entries as usize, "entries lost");
    for i in (0..args.entries).step_by(99_991) {
        anyhow::ensure!(m.get(&key_of(i))? == Some(i), "wrong value for insert {i}");
    }
    let rates: Vec<f64> = steps
        .iter()
        .filter_map(|s| s["inserts_per_s"].as_f64())
        .collect();
    let (lo, hi) = rates
        .iter()
        .fold((f64::MAX, 0.0f64), |(l, h), &r| (l.min(r), h.max(r)));
    let st = m.stats();
    println!(
        "{method}: {} entries in {secs:.1} s = {:.3} M inserts/s ({:.0}% of the pipelined put rate {:.3} M/s); steps {:.3}..{:.3} M/s; server RSS {:.1} B per 16-byte entry; {} write-backs in {} round trips",
        args.entries,
        rate / 1e6,
        100.0 * rate / puts,
        puts / 1e6,
        lo / 1e6,
        hi / 1e6,
        per_entry,
        st.writebacks,
        st.round_trips,
    );
    Ok(json!({
        "method": method,
        "entries": args.entries,
        "budget_bytes": args.budget_mib << 20,
        "seconds": secs,
        "inserts_per_s": rate,
        "pipelined_puts_per_s": puts,
        "ratio_to_pipelined_puts": rate / puts,
        "target_ratio": 0.5,
        "step_min_inserts_per_s": lo,
        "step_max_inserts_per_s": hi,
        "steps": steps,
        "server_rss_bytes_per_entry": per_entry,
        "target_rss_bytes_per_entry": 64,
        "writebacks": st.writebacks,
        "round_trips": st.round_trips,
    }))
}

/// Runs the benchmark.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut out = Vec::new();
    for method in &args.methods {
        out.push(run_method(&args, method)?);
    }
    if let Some(path) = &args.json {
        crate::common::write_json(path, &json!({ "runs": out }))?;
    }
    Ok(())
}
