//! `farmem-bench demo --servers N --replicas R [--kill-one]`: the taxi analysis over a pool of
//! memory servers (child processes of this binary), optionally killing one with SIGKILL half
//! way through the analysis; the answers must equal the all-local run's.
//!
//! The pool runs twice, each on fresh servers: with the frame's operations in this process
//! (`Offload::Local`), and offloaded to the remote agent (`Offload::Remote`: each member computes
//! over the chunks it holds, the client merges; a member killed mid-operation has its share
//! computed again on the other copies).

use std::sync::Arc;
use std::time::{Duration, Instant};

use farmem::backend::{PoolConfig, Redundancy};
use farmem::containers::Offload;
use farmem_frame::FarPlacement;
use serde::Serialize;

use crate::demo::Args;
use crate::modes::{self, Mode};
use crate::pool_rig::{self, PoolRig};

/// The server killed by `--kill-one` (a member in the middle of the list).
const VICTIM: usize = 1;

/// With `--coded`, objects of at least this many bytes (column chunks) are coded and smaller
/// ones replicated.
const CODE_FROM: usize = 64 << 10;

/// One taxi run over a pool.
#[derive(Clone, Debug, Serialize)]
pub struct PoolTaxi {
    /// Seconds to generate the trips into far memory.
    pub load_seconds: f64,
    /// Seconds of the nine steps.
    pub analyze_seconds: f64,
    /// Seconds of each step.
    pub step_seconds: Vec<f64>,
    /// The answers, as printed.
    pub answers: String,
    /// The longest single request to the pool during the analysis, in milliseconds.
    pub longest_request_ms: f64,
    /// Seconds after the analysis started that a server was killed (if one was).
    pub killed_after_seconds: Option<f64>,
    /// Whether the kill landed before the analysis ended.
    pub killed_during_analysis: bool,
    /// Seconds from the kill until the pool marked the server down.
    pub noticed_seconds: Option<f64>,
    /// Seconds from the kill until every object had its copies again (the frame still alive).
    pub restore_seconds: Option<f64>,
    /// Objects in the pool after the analysis (frame still alive).
    pub objects: usize,
    /// Objects short of copies then.
    pub under_replicated: usize,
    /// Repair progress then.
    #[serde(skip)]
    pub repair: farmem::backend::pool::RepairStats,
}

/// Loads the trips into `rig`'s pool at `budget` bytes of local memory and analyses them; when
/// `kill_after` is set, server [`VICTIM`] gets SIGKILL that long after the analysis starts, and
/// the run waits (frame alive) until the pool has restored full redundancy.
///
/// # Errors
/// Runtime, frame or signal errors.
pub fn run_taxi(
    rig: &PoolRig,
    taxi_args: &crate::taxi::Args,
    budget: u64,
    kill_after: Option<Duration>,
    quiet: bool,
) -> anyhow::Result<PoolTaxi> {
    run_taxi_offload(rig, taxi_args, budget, kill_after, quiet, Offload::Local)
}

/// [`run_taxi`] with the frame's agent operations run where `offload` says.
///
/// # Errors
/// As [`run_taxi`].
pub fn run_taxi_offload(
    rig: &PoolRig,
    taxi_args: &crate::taxi::Args,
    budget: u64,
    kill_after: Option<Duration>,
    quiet: bool,
    offload: Offload,
) -> anyhow::Result<PoolTaxi> {
    let rt = rig.runtime(budget)?;
    let placement = Arc::new(FarPlacement::new(rt, offload));
    let t = Instant::now();
    let df = crate::taxi::load(taxi_args, placement, quiet)?;
    let load_seconds = t.elapsed().as_secs_f64();
    rig.timed.take_max();
    let start = Instant::now();
    let (analysis, killed) = std::thread::scope(|s| {
        let killer = kill_after.map(|d| {
            s.spawn(move || {
                std::thread::sleep(d);
                rig.fail(VICTIM, libc::SIGKILL)
            })
        });
        let analysis = crate::taxi::analyze(&df, quiet);
        let done = Instant::now();
        let killed = killer
            .map(|k| {
                k.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("killer thread panicked")))
            })
            .transpose();
        (analysis.map(|a| (a, done)), killed)
    });
    let ((answers, analyze_seconds, step_seconds), done) = analysis?;
    let killed = killed?;
    let restore = killed.and_then(|k| k.1);
    let killed = killed.map(|k| k.0);
    let ps = rig.pool.pool_stats();
    Ok(PoolTaxi {
        load_seconds,
        analyze_seconds,
        step_seconds,
        answers: answers.to_string(),
        longest_request_ms: rig.timed.take_max().as_secs_f64() * 1e3,
        killed_after_seconds: killed.map(|k| k.duration_since(start).as_secs_f64()),
        killed_during_analysis: killed.is_some_and(|k| k < done),
        noticed_seconds: restore.map(|r| r.noticed.as_secs_f64()),
        restore_seconds: restore.map(|r| r.restored.as_secs_f64()),
        objects: ps.objects,
        under_replicated: ps.under_replicated,
        repair: ps.repair,
    })
}

/// Taxi arguments for in-process runs of `rows` trips.
pub fn taxi_args(rows: u64, out: &std::path::Path) -> crate::taxi::Args {
    crate::taxi::Args {
        rows,
        csv: None,
        input: None,
        write_parquet: None,
        seed: 2016,
        local_mem: vec![0.25],
        modes: vec![Mode::Local, Mode::ObjectNoAgent],
        json: false,
        out: out.to_path_buf(),
        write_csv: None,
        child: None,
        budget_bytes: 0,
        server: None,
        peers: Vec::new(),
        sweep_rows: Vec::new(),
        child_time_limit: None,
    }
}

/// Runs the pool demo.
///
/// # Errors
/// Bad arguments, a failed run, or answers that differ from the all-local run's.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let (redundancy, scheme) = match args.coded {
        Some((k, m)) => {
            let width = usize::from(k) + usize::from(m);
            anyhow::ensure!(
                width <= args.servers,
                "--coded {k}+{m} needs at least {width} servers"
            );
            anyhow::ensure!(
                !args.kill_one || width < args.servers,
                "--kill-one with --coded {k}+{m} needs more than {width} servers, so that the killed \
                 server's spans have a member to be rebuilt on"
            );
            (
                Redundancy::coded(k, m),
                format!(
                    "{k}+{m} erasure coding (objects under {CODE_FROM} bytes on {} servers)",
                    m + 1
                ),
            )
        }
        None => {
            anyhow::ensure!(
                (1..=args.servers).contains(&args.replicas),
                "--replicas must be between 1 and --servers ({})",
                args.servers
            );
            anyhow::ensure!(
                !args.kill_one || (args.replicas >= 2 && args.servers > VICTIM),
                "--kill-one needs --replicas 2 or more (and 2 or more servers): with one copy a \
                 killed server takes objects with it"
            );
            (
                Redundancy::replicas(args.replicas),
                format!("{} copies of every object", args.replicas),
            )
        }
    };
    println!(
        "farmem demo: NYC-taxi analysis on {} synthetic trips, all-local vs a pool of {} memory \
         servers with {scheme} at {:.0}% local memory{}",
        args.rows,
        args.servers,
        args.local_mem * 100.0,
        if args.kill_one {
            ", one server killed (SIGKILL) mid-analysis"
        } else {
            ""
        }
    );
    let ta = taxi_args(args.rows, &args.out);
    eprintln!("running all-local");
    let local = crate::taxi::run_in_process(&ta, farmem_frame::LocalPlacement::shared(), false)?;
    let budget =
        (pool_rig::taxi_bytes_per_row(ta.seed)? as f64 * args.rows as f64 * args.local_mem) as u64;
    let kill_after = args
        .kill_one
        .then(|| Duration::from_secs_f64(local.analyze_seconds / 2.0));
    let run_pool = |offload: Offload| -> anyhow::Result<(PoolTaxi, PoolRig)> {
        let cfg = PoolConfig::new(redundancy)
            .repair_rate(Some(64 << 20))
            .maintenance_interval(Duration::from_millis(100))
            .code_from(CODE_FROM);
        let rig = PoolRig::start_config(args.servers, Duration::from_secs(2), cfg)?;
        eprintln!(
            "running over the pool ({}), agent operations {offload:?}",
            rig.procs
                .iter()
                .map(|p| p.addr())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let run = run_taxi_offload(&rig, &ta, budget, kill_after, false, offload)?;
        Ok((run, rig))
    };
    let (no_agent, _) = run_pool(Offload::Local)?;
    let (pooled, rig) = run_pool(Offload::Remote)?;
    let agree_no_agent = no_agent.answers == local.answers;
    let agree = pooled.answers == local.answers;

    println!("\n{}\n", pooled.answers);
    let longest_step = pooled.step_seconds.iter().copied().fold(0.0, f64::max);
    println!(
        "{:<34} {:>10.3} s",
        "all-local analysis", local.analyze_seconds
    );
    for (name, run) in [
        ("pool analysis (no agent)", &no_agent),
        ("pool analysis (agent)", &pooled),
    ] {
        println!(
            "{:<34} {:>10.3} s ({:.2}x all-local)",
            name,
            run.analyze_seconds,
            run.analyze_seconds / local.analyze_seconds.max(1e-9)
        );
    }
    println!("{:<34} {:>10.1} ms", "longest step", longest_step * 1e3);
    println!(
        "{:<34} {:>10.1} ms",
        "longest request to the pool", pooled.longest_request_ms
    );
    if let Some(k) = pooled.killed_after_seconds {
        println!(
            "{:<34} {:>10.3} s into the analysis ({})",
            format!("killed {}", rig.procs[VICTIM].addr()),
            k,
            if pooled.killed_during_analysis {
                "during it"
            } else {
                "after it ended: rerun with more --rows"
            }
        );
    }
    match (pooled.noticed_seconds, pooled.restore_seconds) {
        (Some(n), Some(r)) => println!(
            "{:<34} {:>10.3} s after the kill (server marked down after {:.3} s)",
            "full redundancy restored", r, n
        ),
        _ if args.kill_one => println!("full redundancy NOT restored within 300 s"),
        _ => {}
    }
    println!(
        "pool after the analysis: {} objects, {} under-replicated; repair: {} copies, {:.1} MiB copied",
        pooled.objects,
        pooled.under_replicated,
        pooled.repair.copies,
        pooled.repair.bytes_copied as f64 / (1 << 20) as f64,
    );
    if let Some(c) = rig.pool.coded_stats() {
        println!(
            "coded data: {} objects in {} stripes, {} degraded; {} spans rebuilt ({:.1} MiB), {} \
             degraded reads",
            c.objects,
            c.stripes,
            c.degraded,
            c.rebuilt_spans,
            c.rebuilt_bytes as f64 / (1 << 20) as f64,
            c.degraded_reads
        );
    }
    let dir = modes::results_dir(&args.out)?;
    modes::write_json(
        &dir.join("demo_pool.json"),
        &serde_json::json!({
            "bench": "demo-pool",
            "rows": args.rows,
            "servers": args.servers,
            "replicas": args.replicas,
            "scheme": scheme,
            "kill_one": args.kill_one,
            "answers_agree": agree,
            "answers_agree_no_agent": agree_no_agent,
            "local_analyze_seconds": local.analyze_seconds,
            "pool": pooled,
            "pool_no_agent": no_agent,
            "repair_copies": pooled.repair.copies,
            "repair_bytes": pooled.repair.bytes_copied,
        }),
    )?;
    println!("answers identical to all-local: agent {agree}, no agent {agree_no_agent}");
    anyhow::ensure!(
        agree && agree_no_agent,
        "the pool runs gave different answers"
    );
    Ok(())
}
