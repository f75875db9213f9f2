//! `farmem-bench run-pandas`: the pandas user's story end to end. The nine taxi steps in pandas
//! (`scripts/taxi_peers.py`) run on the same CSV under a memory cgroup smaller than the
//! DataFrame, three ways: plain (the OOM killer takes it), under kernel swap over TCP to a memory
//! server, and under `farmem-run` (far memory through the allocator shim, same kind of server).
//! The answers of the runs that finish are compared with an all-local run's. Then a numpy
//! reduction over an array four times its local budget, under `farmem-run`, against the
//! transport's bulk bandwidth (`run-numpy`, one round).
//!
//! Needs root (cgroups, swap), python3 with pandas, and `farmem-run` with
//! `libfarmem_preload.so` next to this binary (`cargo build --release -p farmem-run -p
//! farmem-preload`).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};

use crate::apps::taxi::{self, TaxiGen};
use crate::kswap::{self, SwapDevice, SwapRun};
use crate::modes;
use crate::paging::ServerProcess;

/// Options of `farmem-bench run-pandas`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Synthetic trips to generate (ignored with --csv).
    #[arg(long, default_value_t = 2_000_000)]
    pub rows: u64,
    /// Use this 2016 yellow-taxi CSV instead of generating one.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Seed of the generator.
    #[arg(long, default_value_t = 2016)]
    pub seed: u64,
    /// Memory-cgroup limit as a share of the all-local run's peak memory.
    #[arg(long, default_value = "25%", value_parser = modes::parse_ratio)]
    pub limit: f64,
    /// `farmem-run --local-mem` as a share of the cgroup limit (the rest holds the interpreter,
    /// small allocations and the clean twins of dirty far pages).
    #[arg(long, default_value = "40%", value_parser = modes::parse_ratio)]
    pub far_share: f64,
    /// Runs to make under the limit.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "plain,kswap-net,farmem-run"
    )]
    pub modes: Vec<String>,
    /// Size of the numpy array reduced under `farmem-run` (MiB; 0 skips).
    #[arg(long, default_value_t = 1024)]
    pub numpy_mib: u64,
    /// Results directory (the generated CSV and `run-pandas.json`).
    #[arg(long, default_value = "results/run-pandas")]
    pub out: PathBuf,
}

/// One run of the pandas script.
#[derive(Debug)]
struct Run {
    mode: String,
    status: String,
    load_s: Option<f64>,
    analyze_s: Option<f64>,
    peak_bytes: u64,
    answers: Option<Value>,
}

fn python_args(csv: &str) -> [&str; 3] {
    [taxi::peers::SCRIPT, "pandas", csv]
}

fn describe(run: SwapRun, mode: &str) -> Run {
    let st = run.output.status;
    let status = match (st.code(), st.signal()) {
        (Some(0), _) => "ok".to_string(),
        (_, Some(libc::SIGKILL)) => "killed by the OOM killer (SIGKILL)".to_string(),
        (Some(c), _) => format!(
            "exit {c}: {}",
            String::from_utf8_lossy(&run.output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        (None, sig) => format!("signal {sig:?}"),
    };
    let parsed: Option<Value> = serde_json::from_slice(&run.output.stdout).ok();
    let f = |k: &str| parsed.as_ref().and_then(|v| v[k].as_f64());
    Run {
        mode: mode.to_string(),
        status,
        load_s: f("load_seconds"),
        analyze_s: f("analyze_seconds"),
        peak_bytes: run.peak_bytes,
        answers: parsed.as_ref().map(|v| v["answers"].clone()),
    }
}

pub(crate) fn farmem_run_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the current binary")?;
    let p = exe.with_file_name("farmem-run");
    anyhow::ensure!(
        p.is_file() && exe.with_file_name("libfarmem_preload.so").is_file(),
        "farmem-run and libfarmem_preload.so must be next to {} (cargo build --release -p \
         farmem-run -p farmem-preload)",
        exe.display()
    );
    Ok(p)
}

fn csv_path(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.csv {
        return Ok(p.clone());
    }
    std::fs::create_dir_all(&args.out)?;
    let path = args
        .out
        .join(format!("taxi-{}-{}.csv", args.rows, args.seed));
    if !path.exists() {
        eprintln!("writing {} trips to {}", args.rows, path.display());
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path)?);
        taxi::write_csv(&TaxiGen::new(args.seed), args.rows, &mut w, &mut |_| {})?;
        std::io::Write::flush(&mut w)?;
    }
    Ok(path)
}

/// Runs the experiment and prints the table.
///
/// # Errors
/// Missing prerequisites (root, cgroups, pandas, farmem-run), or a failed set-up.
pub fn run(args: Args) -> anyhow::Result<()> {
    kswap::available_common().map_err(anyhow::Error::msg)?;
    let farmem_run = farmem_run_binary()?;
    let csv = csv_path(&args)?;
    let csv_s = csv.to_string_lossy().into_owned();
    let python = Path::new("python3");

    eprintln!("all-local run (no limit) for the reference answers and peak memory");
    let reference = describe(
        kswap::run_under(1 << 50, SwapDevice::None, python, &python_args(&csv_s))?,
        "local",
    );
    let answers = reference
        .answers
        .clone()
        .with_context(|| format!("the all-local run failed: {}", reference.status))?;
    let limit = (reference.peak_bytes as f64 * args.limit) as u64;
    let local_mem = (limit as f64 * args.far_share) as u64;
    let mut runs = vec![reference];
    for mode in &args.modes {
        eprintln!("{mode} under a {} MiB memory cgroup", limit >> 20);
        let run = match mode.as_str() {
            "plain" => kswap::run_under(limit, SwapDevice::None, python, &python_args(&csv_s))?,
            "kswap-net" => {
                let server = ServerProcess::start(4 * limit.max(1 << 30), true)?;
                kswap::run_under_retrying(
                    limit,
                    SwapDevice::Tcp {
                        server: &server.addr,
                    },
                    python,
                    &python_args(&csv_s),
                )?
            }
            "farmem-run" => {
                let server = ServerProcess::start(4 * limit.max(1 << 30), false)?;
                let local = local_mem.to_string();
                let mut a = vec![
                    "--servers",
                    &server.addr,
                    "--local-mem",
                    &local,
                    "--",
                    "python3",
                ];
                a.extend(python_args(&csv_s));
                kswap::run_under(limit, SwapDevice::None, &farmem_run, &a)?
            }
            other => anyhow::bail!("unknown mode {other} (plain, kswap-net, farmem-run)"),
        };
        runs.push(describe(run, mode));
    }
    let numpy = if args.numpy_mib > 0 {
        eprintln!(
            "numpy reduction over {} MiB under farmem-run",
            args.numpy_mib
        );
        Some(crate::run_numpy::measure(
            &farmem_run,
            args.numpy_mib,
            (args.numpy_mib / 4).max(1),
            1,
        )?)
    } else {
        None
    };

    println!(
        "run-pandas: {} trips, all-local peak {} MiB, cgroup limit {} MiB, farmem-run --local-mem {} MiB",
        args.rows,
        runs[0].peak_bytes >> 20,
        limit >> 20,
        local_mem >> 20
    );
    println!(
        "{:<12} {:>9} {:>12} {:>10}  {:<10} status",
        "mode", "load (s)", "analysis (s)", "peak MiB", "answers"
    );
    let secs = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{s:.2}"));
    let mut rows = Vec::new();
    for r in &runs {
        let same = match &r.answers {
            Some(a) if *a == answers => "identical",
            Some(_) => "DIFFER",
            None => "-",
        };
        println!(
            "{:<12} {:>9} {:>12} {:>10}  {:<10} {}",
            r.mode,
            secs(r.load_s),
            secs(r.analyze_s),
            r.peak_bytes >> 20,
            same,
            r.status
        );
        rows.push(json!({
            "mode": r.mode, "status": r.status, "load_seconds": r.load_s,
            "analyze_seconds": r.analyze_s, "peak_bytes": r.peak_bytes, "answers": same,
        }));
    }
    std::fs::create_dir_all(&args.out)?;
    let report = json!({
        "rows": args.rows, "csv": csv, "limit_bytes": limit, "local_mem_bytes": local_mem,
        "runs": rows, "numpy": numpy,
    });
    std::fs::write(
        args.out.join("run-pandas.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(())
}
