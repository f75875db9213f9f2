//! `farmem-bench run-numpy`: numpy's sequential reduction over an array several times the local
//! budget, unmodified, under `farmem-run`, against the transport's bulk bandwidth measured in the
//! same rounds.
//!
//! Each round measures the reference (batched gets of 1 MiB of 4 KiB pages from a memory-server
//! child, one batch at a time: what a sequential pager stream could get at best), then runs
//! `a.sum()` over a fresh `np.ones` array under `farmem-run` (its own loopback server), then the
//! reference again; the round's share is the numpy rate over the mean of its two references.
//! Needs userfaultfd (root, or `vm.unprivileged_userfaultfd`), python3 with numpy, and
//! `farmem-run` with `libfarmem_preload.so` next to this binary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use farmem::Backend;
use farmem::backend::{TcpBackend, TcpConfig};
use serde_json::{Value, json};

use crate::modes;
use crate::paging::ServerProcess;

const PAGE: usize = 4096;
/// Pages per batched get of the reference (1 MiB, as the pager's largest prefetch window).
const BATCH: usize = 256;

/// Options of `farmem-bench run-numpy`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Size of the array (MiB).
    #[arg(long, default_value_t = 1024)]
    pub mib: u64,
    /// `farmem-run --local-mem` as a share of the array.
    #[arg(long, default_value = "25%", value_parser = modes::parse_ratio)]
    pub local: f64,
    /// Rounds (reference, numpy, reference each).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Results directory (`run-numpy.json`).
    #[arg(long, default_value = "results/run-numpy")]
    pub out: PathBuf,
}

/// The numpy reduction under `farmem-run`: seconds of `a.sum()` over `mib` MiB with `local_mib`
/// of local memory.
fn numpy_sum_seconds(farmem_run: &Path, mib: u64, local_mib: u64) -> anyhow::Result<f64> {
    let script = format!(
        "import json, time, numpy as np\n\
         a = np.ones({n}, dtype=np.float64)\n\
         t = time.perf_counter(); s = float(a.sum()); d = time.perf_counter() - t\n\
         assert s == {n}\n\
         print(json.dumps({{'seconds': d}}))\n",
        n = mib << 17
    );
    let local = format!("{}MiB", local_mib.max(1));
    let out = std::process::Command::new(farmem_run)
        .args(["--local-mem", &local, "--", "python3", "-c", &script])
        .output()
        .context("running numpy under farmem-run")?;
    anyhow::ensure!(
        out.status.success(),
        "numpy under farmem-run failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).context("numpy script output")?;
    v["seconds"].as_f64().context("numpy seconds")
}

/// A memory-server child holding `mib` MiB of 4 KiB pages, to time batched gets of them.
struct Reference {
    backend: Arc<TcpBackend>,
    ids: Vec<u64>,
    _server: ServerProcess,
}

impl Reference {
    fn new(mib: u64) -> anyhow::Result<Self> {
        let server = ServerProcess::start(2 * (mib << 20), false)?;
        let backend = TcpBackend::connect(
            TcpConfig::new([server.addr.clone()])
                .connections_per_server(2)
                .without_failover(),
        )
        .context("connecting to the reference server")?;
        let ids: Vec<u64> = (1..=(mib << 20) / PAGE as u64).collect();
        let mut page = vec![0u8; PAGE];
        for chunk in ids.chunks(BATCH) {
            let pages: Vec<Vec<u8>> = chunk
                .iter()
                .map(|&id| {
                    page[..8].copy_from_slice(&id.to_le_bytes());
                    page.clone()
                })
                .collect();
            let items: Vec<(u64, &[u8])> = chunk
                .iter()
                .zip(&pages)
                .map(|(&id, p)| (id, p.as_slice()))
                .collect();
            backend.put_many(&items)?;
        }
        Ok(Self {
            backend: Arc::new(backend),
            ids,
            _server: server,
        })
    }

    /// Bytes per second of one pass of batched gets over every page.
    fn bulk_bytes_per_s(&self) -> anyhow::Result<f64> {
        let t = Instant::now();
        for chunk in self.ids.chunks(BATCH) {
            let got = self.backend.get_many(chunk)?;
            anyhow::ensure!(
                got.iter()
                    .zip(chunk)
                    .all(|(g, &id)| g.len() == PAGE && g[..8] == id.to_le_bytes()),
                "reference: wrong page"
            );
        }
        Ok((self.ids.len() * PAGE) as f64 / t.elapsed().as_secs_f64())
    }
}

/// Measures `rounds` rounds of the numpy reduction over `mib` MiB with `local_mib` local, each
/// between two passes of the reference, printing a line per round; returns the JSON report.
///
/// # Errors
/// Missing prerequisites (numpy, farmem-run), or a failed run.
pub fn measure(
    farmem_run: &Path,
    mib: u64,
    local_mib: u64,
    rounds: usize,
) -> anyhow::Result<Value> {
    let reference = Reference::new(mib)?;
    let gib = (1u64 << 30) as f64;
    println!(
        "numpy a.sum() over {mib} MiB with {local_mib} MiB local under farmem-run, against \
         batched 1 MiB gets of as many bytes from a memory server"
    );
    println!("round  numpy GiB/s  bulk GiB/s (before, after)  share of bulk");
    let mut out = Vec::new();
    for round in 0..rounds.max(1) {
        let before = reference.bulk_bytes_per_s()?;
        let secs = numpy_sum_seconds(farmem_run, mib, local_mib)?;
        let after = reference.bulk_bytes_per_s()?;
        let rate = (mib << 20) as f64 / secs;
        let bulk = (before + after) / 2.0;
        let share = rate / bulk;
        println!(
            "{round:>5}  {:>11.2}  {:>10.2} ({:.2}, {:.2})  {:>12.0}%",
            rate / gib,
            bulk / gib,
            before / gib,
            after / gib,
            100.0 * share
        );
        out.push(json!({
            "sum_seconds": secs, "numpy_gib_per_s": rate / gib,
            "bulk_before_gib_per_s": before / gib, "bulk_after_gib_per_s": after / gib,
            "share_of_bulk": share,
        }));
    }
    let mut shares: Vec<f64> = out
        .iter()
        .filter_map(|r| r["share_of_bulk"].as_f64())
        .collect();
    shares.sort_by(f64::total_cmp);
    let median = shares[shares.len() / 2];
    println!(
        "share of bulk: median {:.0}%, range {:.0}-{:.0}% (target >= 50%)",
        100.0 * median,
        100.0 * shares[0],
        100.0 * shares[shares.len() - 1]
    );
    Ok(json!({
        "array_mib": mib, "local_mib": local_mib, "rounds": out,
        "median_share_of_bulk": median,
    }))
}

/// Runs the rounds and prints the table.
///
/// # Errors
/// Missing prerequisites (numpy, farmem-run), or a failed run.
pub fn run(args: Args) -> anyhow::Result<()> {
    let farmem_run = crate::run_pandas::farmem_run_binary()?;
    let local_mib = ((args.mib as f64 * args.local) as u64).max(1);
    let report = measure(&farmem_run, args.mib, local_mib, args.rounds)?;
    std::fs::create_dir_all(&args.out)?;
    crate::common::write_json(&args.out.join("run-numpy.json"), &report)
}
