//! `farmem-bench taxi`: the NYC-taxi DataFrame analysis of AIFM (figure 7) in every memory mode,
//! side by side at the same local-memory budget.
//!
//! Each mode loads the same trips (synthetic, or a TLC CSV with `--csv`) and runs the nine steps
//! of [`crate::apps::taxi::analyze`]; the analysis time is the figure, and every mode must print
//! the same answers. Paging and kernel-swap modes run in a child process (the same binary), so
//! their memory limit covers only their own data.

mod paging_steps;
mod sweep;

use std::path::PathBuf;
use std::time::Instant;

use crate::apps::taxi::{self, TaxiAnswers, TaxiGen};
use anyhow::Context;
use farmem::paging::{PagingAlloc, PagingStats};
use farmem_frame::{DataFrame, PlacementRef};
use serde::Serialize;

use crate::modes::{self, Mode, ModeRun};

/// Options of `farmem-bench taxi`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Synthetic trips to generate (ignored with --csv).
    #[arg(long, default_value_t = 4_000_000)]
    pub rows: u64,
    /// Load this 2016 yellow-taxi CSV file instead of generating trips.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Load this Parquet file (the TLC columns, e.g. written by --write-parquet) instead of
    /// the CSV or generated trips; with --csv as well, each run also times loading the CSV
    /// (the same data) so the two loads are compared in one run.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Also write the generated trips as Parquet to this path (and exit).
    #[arg(long)]
    pub write_parquet: Option<PathBuf>,
    /// Seed of the generator.
    #[arg(long, default_value_t = 2016)]
    pub seed: u64,
    /// Local memory as a share of the working set; repeat or comma-separate to sweep.
    #[arg(long, value_delimiter = ',', default_value = "25%", value_parser = modes::parse_ratio)]
    pub local_mem: Vec<f64>,
    /// Modes to compare.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "local,object,object-noagent,paging,kswap,kswap-net"
    )]
    pub modes: Vec<Mode>,
    /// Print the results as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Results directory (JSON and PNG).
    #[arg(long, default_value = "results/taxi")]
    pub out: PathBuf,
    /// Also write a CSV of the generated trips to this path (and exit).
    #[arg(long)]
    pub write_csv: Option<PathBuf>,
    /// Internal: run one mode in this process and print its result (used for child processes).
    #[arg(long, hide = true)]
    pub child: Option<Mode>,
    /// Internal: the child's local budget in bytes.
    #[arg(long, hide = true, default_value_t = 0)]
    pub budget_bytes: u64,
    /// Use this memory server (`host:port`) instead of starting one on loopback.
    #[arg(long)]
    pub server: Option<String>,
    /// Also run the nine steps in these Python engines (`pandas`, `polars`) on the same CSV
    /// (written to the results directory when not given with --csv), check that their answers
    /// equal farmem's and print their load and analysis times beside farmem's. An engine that
    /// is not installed is skipped with a message.
    #[arg(long, value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Sweep these numbers of synthetic trips (comma-separated, e.g. 1000000,4000000,16000000)
    /// with the chosen modes and local-memory shares, and report how load and analysis times
    /// grow with the rows (`taxi-sweep.json` and `.png` in the results directory).
    #[arg(long, value_delimiter = ',')]
    pub sweep_rows: Vec<u64>,
    /// Give up on a run in a child process (paging, kernel swap) after this many seconds of
    /// loading and analysis; the run is reported as skipped, "timed out".
    #[arg(long)]
    pub child_time_limit: Option<u64>,
}

/// What one mode reports.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct TaxiRun {
    /// Seconds to generate or load the trips.
    pub load_seconds: f64,
    /// Seconds of the nine steps.
    pub analyze_seconds: f64,
    /// Seconds of each step.
    pub step_seconds: Vec<f64>,
    /// The answers, as printed.
    pub answers: String,
    /// Bytes moved between this process and the memory server during the analysis (object
    /// modes; zero otherwise).
    #[serde(default)]
    pub moved: Traffic,
    /// Seconds to load the CSV given with --csv when the trips came from --input (Parquet).
    #[serde(default)]
    pub csv_load_seconds: Option<f64>,
    /// The answers in the form the peers are compared with ([`taxi::peers::answers_json`]).
    #[serde(default)]
    pub answers_json: serde_json::Value,
}

/// Bytes moved to and from far memory during a phase.
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize)]
pub struct Traffic {
    /// Object bytes fetched by the runtime.
    pub fetched: u64,
    /// Object bytes written back by the runtime.
    pub written_back: u64,
    /// Remote-agent arguments sent.
    pub agent_sent: u64,
    /// Remote-agent results received.
    pub agent_received: u64,
}

impl Traffic {
    /// Counters of `rt` now.
    pub fn of(rt: &farmem::Runtime) -> Self {
        let st = rt.stats();
        let (agent_sent, agent_received) = (st.agent_bytes_sent, st.agent_bytes_received);
        Self {
            fetched: st.bytes_fetched,
            written_back: st.bytes_written_back,
            agent_sent,
            agent_received,
        }
    }

    /// `self - earlier`, counter by counter.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            fetched: self.fetched.saturating_sub(earlier.fetched),
            written_back: self.written_back.saturating_sub(earlier.written_back),
            agent_sent: self.agent_sent.saturating_sub(earlier.agent_sent),
            agent_received: self.agent_received.saturating_sub(earlier.agent_received),
        }
    }
}

/// Bytes per trip of the loaded TLC columns plus the columns the analysis derives
/// (duration i64, distance f64, hour/day/month u8).
pub fn working_set_bytes(df: &DataFrame) -> u64 {
    let per_row: u64 =
        df.columns()
            .map(|c| match c.data() {
                farmem_frame::column::ColumnData::I64(_)
                | farmem_frame::column::ColumnData::F64(_) => 8,
                farmem_frame::column::ColumnData::I32(_)
                | farmem_frame::column::ColumnData::U32(_) => 4,
                farmem_frame::column::ColumnData::U8(_) => 1,
            })
            .sum::<u64>()
            + 8
            + 8
            + 3;
    per_row * df.len() as u64
}

/// Loads the trips with `placement`.
///
/// # Errors
/// CSV or storage errors.
pub fn load(args: &Args, placement: PlacementRef, quiet: bool) -> anyhow::Result<DataFrame> {
    if let Some(path) = &args.input {
        return load_parquet(path, placement);
    }
    load_csv(args, placement, quiet)
}

#[cfg(feature = "parquet")]
fn load_parquet(path: &std::path::Path, placement: PlacementRef) -> anyhow::Result<DataFrame> {
    let f = farmem_frame::parquet::ParquetFile::open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let opts = farmem_frame::parquet::ParquetOptions {
        schema: taxi::COLUMNS
            .iter()
            .map(|&(n, t)| (n.to_owned(), t))
            .collect(),
        ..Default::default()
    };
    farmem_frame::parquet::read_parquet(&f, &opts, placement)
        .with_context(|| format!("loading {}", path.display()))
}

#[cfg(not(feature = "parquet"))]
fn load_parquet(path: &std::path::Path, _: PlacementRef) -> anyhow::Result<DataFrame> {
    anyhow::bail!("{}: built without the parquet feature", path.display())
}

fn load_csv(args: &Args, placement: PlacementRef, quiet: bool) -> anyhow::Result<DataFrame> {
    match &args.csv {
        Some(path) => {
            let f =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let pb = modes::progress(len, "loading CSV", quiet);
            let r = std::io::BufReader::with_capacity(1 << 20, f);
            let df = farmem_frame::csv::read_csv_with_progress(
                r,
                &taxi::csv_options(),
                placement,
                &mut |b| pb.set_position(b),
            )
            .with_context(|| format!("loading {}", path.display()))?;
            pb.finish_and_clear();
            Ok(df)
        }
        None => {
            let pb = modes::progress(args.rows, "generating trips", quiet);
            let df =
                taxi::generate_frame(&TaxiGen::new(args.seed), args.rows, placement, &mut |n| {
                    pb.set_position(n)
                })?;
            pb.finish_and_clear();
            Ok(df)
        }
    }
}

/// Runs the nine steps on a loaded frame.
///
/// # Errors
/// Frame or storage errors.
pub fn analyze(df: &DataFrame, quiet: bool) -> anyhow::Result<(TaxiAnswers, f64, Vec<f64>)> {
    let (answers, secs, steps, _) = analyze_paged(df, quiet)?;
    Ok((answers, secs, steps))
}

/// [`analyze`], also returning the paging allocator's counters gained in each step (empty when
/// paging is off).
fn analyze_paged(
    df: &DataFrame,
    quiet: bool,
) -> anyhow::Result<(TaxiAnswers, f64, Vec<f64>, Vec<PagingStats>)> {
    let pb = modes::progress(9, "analysis", quiet);
    let mut steps = Vec::new();
    let mut paging = Vec::new();
    let mut last = PagingAlloc::stats();
    let t = Instant::now();
    let answers = taxi::analyze(df, &mut |i, name, d| {
        steps.push(d.as_secs_f64());
        if let (Some(before), Some(now)) = (last, PagingAlloc::stats()) {
            paging.push(now.since(&before));
            last = Some(now);
        }
        pb.set_message(format!("{}/9 {name}", i + 1));
        pb.inc(1);
    })?;
    let secs = t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    Ok((answers, secs, steps, paging))
}

/// Loads and analyses in this process with `placement`.
///
/// # Errors
/// As [`load`] and [`analyze`].
pub fn run_in_process(
    args: &Args,
    placement: PlacementRef,
    quiet: bool,
) -> anyhow::Result<TaxiRun> {
    run_measured(args, placement, None, quiet)
}

/// Like [`run_in_process`], also counting the bytes `rt` moves during the analysis.
fn run_measured(
    args: &Args,
    placement: PlacementRef,
    rt: Option<&farmem::Runtime>,
    quiet: bool,
) -> anyhow::Result<TaxiRun> {
    let csv_load_seconds = match (&args.input, &args.csv) {
        (Some(_), Some(_)) => {
            let t = Instant::now();
            drop(load_csv(args, placement.clone(), quiet)?);
            Some(t.elapsed().as_secs_f64())
        }
        _ => None,
    };
    let t = Instant::now();
    let df = load(args, placement, quiet)?;
    let load_seconds = t.elapsed().as_secs_f64();
    let before = rt.map(Traffic::of);
    let (answers, analyze_seconds, step_seconds, paging) = analyze_paged(&df, quiet)?;
    paging_steps::print(&paging);
    let moved = match (rt, before) {
        (Some(rt), Some(b)) => Traffic::of(rt).since(b),
        _ => Traffic::default(),
    };
    Ok(TaxiRun {
        load_seconds,
        analyze_seconds,
        step_seconds,
        answers: answers.to_string(),
        moved,
        csv_load_seconds,
        answers_json: taxi::peers::answers_json(&answers),
    })
}

/// The arguments that make a child process load the same data.
fn child_args(args: &Args, mode: Mode, budget: u64, server: &str) -> Vec<String> {
    let mut v = vec![
        "taxi".to_owned(),
        "--child".into(),
        mode.name().into(),
        "--budget-bytes".into(),
        budget.to_string(),
        "--rows".into(),
        args.rows.to_string(),
        "--seed".into(),
        args.seed.to_string(),
    ];
    v.push("--server".into());
    v.push(server.into());
    if let Some(p) = &args.csv {
        v.push("--csv".into());
        v.push(p.display().to_string());
    }
    if let Some(p) = &args.input {
        v.push("--input".into());
        v.push(p.display().to_string());
    }
    if let Some(s) = args.child_time_limit {
        v.push("--child-time-limit".into());
        v.push(s.to_string());
    }
    v
}

/// Exit status of a child run that hit `--child-time-limit`.
const TIMED_OUT: i32 = 124;

fn child(args: &Args, mode: Mode) -> anyhow::Result<()> {
    if let Some(secs) = args.child_time_limit {
        // A watchdog: the parent sees the exit status and the line below as the reason.
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(secs));
            println!("timed out after {secs} s");
            std::process::exit(TIMED_OUT);
        });
    }
    let run = match mode {
        Mode::Paging => crate::apps_far::with_paging(server_of(args)?, args.budget_bytes, || {
            run_in_process(args, farmem_frame::LocalPlacement::shared(), true)
        })?,
        _ => run_in_process(args, farmem_frame::LocalPlacement::shared(), true)?,
    };
    modes::print_child_result(&run)
}

/// Runs one mode at one ratio.
fn server_of(args: &Args) -> anyhow::Result<&str> {
    args.server
        .as_deref()
        .context("a memory server address (--server) is needed")
}

fn run_mode(
    args: &Args,
    mode: Mode,
    ratio: f64,
    working_set: u64,
    server: &str,
    quiet: bool,
) -> ModeRun {
    let budget = if mode == Mode::Local {
        0
    } else {
        (working_set as f64 * ratio) as u64
    };
    let ratio = if mode == Mode::Local { 1.0 } else { ratio };
    let result: anyhow::Result<TaxiRun> = match mode {
        Mode::Local => run_in_process(args, farmem_frame::LocalPlacement::shared(), quiet),
        Mode::Object | Mode::ObjectNoAgent => {
            crate::apps_far::far_runtime_placement(server, budget, mode == Mode::Object)
                .and_then(|(rt, p)| run_measured(args, p, Some(&rt), quiet))
        }
        Mode::Paging | Mode::Kswap | Mode::KswapNet => {
            match modes::run_child_mode(
                mode,
                &child_args(args, mode, budget, server),
                budget,
                server,
            ) {
                Ok(r) => r,
                Err(why) => return ModeRun::skipped(mode, ratio, budget, why),
            }
        }
    };
    match result {
        Ok(r) => ModeRun {
            mode,
            local_mem_ratio: ratio,
            budget_bytes: budget,
            skipped: None,
            seconds: r.analyze_seconds,
            throughput: None,
            detail: serde_json::to_value(&r).unwrap_or_default(),
        },
        Err(e) => ModeRun::skipped(mode, ratio, budget, format!("failed: {e:#}")),
    }
}

/// Rows of a Parquet file.
#[cfg(feature = "parquet")]
fn parquet_rows(path: &std::path::Path) -> anyhow::Result<u64> {
    let f = farmem_frame::parquet::ParquetFile::open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(farmem_frame::parquet::parquet_rows(&f)?)
}

#[cfg(not(feature = "parquet"))]
fn parquet_rows(path: &std::path::Path) -> anyhow::Result<u64> {
    anyhow::bail!("{}: built without the parquet feature", path.display())
}

/// Data lines of a CSV file (lines after the header).
fn count_records(path: &std::path::Path) -> anyhow::Result<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
    Ok(lines.saturating_sub(1))
}

/// Runs every mode at every ratio; returns the runs and whether all answers agree.
///
/// # Errors
/// When the data cannot be loaded at all.
pub fn run_modes(args: &Args, quiet: bool) -> anyhow::Result<(Vec<ModeRun>, bool)> {
    // Size the working set: bytes per trip of the typed columns times the number of trips.
    let per_row = {
        let one = taxi::generate_frame(
            &TaxiGen::new(args.seed),
            1,
            farmem_frame::LocalPlacement::shared(),
            &mut |_| {},
        )?;
        working_set_bytes(&one)
    };
    let rows = match (&args.input, &args.csv) {
        (Some(p), _) => parquet_rows(p)?,
        (None, Some(p)) => count_records(p)?,
        (None, None) => args.rows,
    };
    let working_set = per_row * rows;
    if !quiet {
        eprintln!(
            "working set: {:.1} MiB",
            working_set as f64 / (1 << 20) as f64
        );
        // All-local frames run the agent's kernels with the agent's threads (set both with
        // FARMEM_AGENT_THREADS, e.g. 1); the client-side (no agent) path uses one thread.
        eprintln!(
            "kernel threads: {} (all-local and agent), 1 (object, no agent)",
            farmem_kernels::default_threads()
        );
    }
    let own_server = crate::apps_far::LoopbackServer::unless(args.server.as_deref())?;
    let server = args
        .server
        .clone()
        .or_else(|| own_server.as_ref().map(|s| s.addr().to_owned()))
        .unwrap_or_default();
    let mut runs = Vec::new();
    if args.modes.contains(&Mode::Local) {
        runs.push(run_mode(
            args,
            Mode::Local,
            1.0,
            working_set,
            &server,
            quiet,
        ));
    }
    for &ratio in &args.local_mem {
        for &mode in args.modes.iter().filter(|m| **m != Mode::Local) {
            if !quiet {
                eprintln!(
                    "running {} at {:.0}% local memory",
                    mode.label(),
                    ratio * 100.0
                );
            }
            runs.push(run_mode(args, mode, ratio, working_set, &server, quiet));
        }
    }
    let answers: Vec<&str> = runs
        .iter()
        .filter_map(|r| r.detail.get("answers")?.as_str())
        .collect();
    let agree = answers.windows(2).all(|w| w[0] == w[1]);
    Ok((runs, agree))
}

/// Prints, for the object-mode runs, the bytes moved during the analysis.
pub fn print_traffic(runs: &[ModeRun]) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    for r in runs {
        let Some(t) = r
            .detail
            .get("moved")
            .and_then(|m| serde_json::from_value::<Traffic>(m.clone()).ok())
        else {
            continue;
        };
        if matches!(r.mode, Mode::Object | Mode::ObjectNoAgent) {
            println!(
                "{:<26} moved during analysis: fetched {:.1} MiB, written back {:.1} MiB, agent args {:.1} KiB, agent results {:.1} KiB",
                r.mode.label(),
                mib(t.fetched),
                mib(t.written_back),
                t.agent_sent as f64 / 1024.0,
                t.agent_received as f64 / 1024.0
            );
        }
    }
}

/// Prints each step's time in every completed run, with its ratio to the all-local run's step.
pub fn print_steps(runs: &[ModeRun]) {
    let steps = |r: &ModeRun| -> Option<Vec<f64>> {
        serde_json::from_value(r.detail.get("step_seconds")?.clone()).ok()
    };
    let done: Vec<(&ModeRun, Vec<f64>)> = runs
        .iter()
        .filter(|r| r.skipped.is_none())
        .filter_map(|r| Some((r, steps(r)?)))
        .collect();
    if done.is_empty() {
        return;
    }
    let local = done
        .iter()
        .find(|(r, _)| r.mode == Mode::Local)
        .map(|(_, s)| s.clone());
    print!("{:<26}", "step time (ms)");
    for (r, _) in &done {
        print!(
            " {:>18}",
            format!("{} {:.0}%", r.mode.name(), r.local_mem_ratio * 100.0)
        );
    }
    println!();
    for (i, name) in taxi::STEP_NAMES.iter().enumerate() {
        print!("{:<26}", format!("{}. {name}", i + 1));
        for (_, s) in &done {
            let t = s.get(i).copied().unwrap_or(f64::NAN);
            let cell = match local.as_ref().and_then(|l| l.get(i)) {
                Some(&l) if l > 0.0 => format!("{:.1} ({:.2}x)", t * 1e3, t / l),
                _ => format!("{:.1}", t * 1e3),
            };
            print!(" {cell:>18}");
        }
        println!();
    }
}

/// Runs the benchmark.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(mode) = args.child {
        return child(&args, mode);
    }
    if let Some(path) = &args.write_csv {
        let f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        let pb = modes::progress(args.rows, "writing CSV", false);
        taxi::write_csv(&TaxiGen::new(args.seed), args.rows, &mut w, &mut |n| {
            pb.set_position(n)
        })?;
        std::io::Write::flush(&mut w)?;
        pb.finish_and_clear();
        eprintln!("wrote {} trips to {}", args.rows, path.display());
        return Ok(());
    }
    if let Some(path) = &args.write_parquet {
        return write_parquet(&args, path);
    }
    if !args.sweep_rows.is_empty() {
        return sweep::run(&args);
    }
    let mut args = args;
    if !args.peers.is_empty() && args.csv.is_none() {
        // The peers read a CSV: write the generated trips once and let every mode load it too.
        let dir = modes::results_dir(&args.out)?;
        let path = dir.join(format!("taxi-{}-{}.csv", args.rows, args.seed));
        if !path.exists() {
            let f = std::fs::File::create(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            taxi::write_csv(&TaxiGen::new(args.seed), args.rows, &mut w, &mut |_| {})?;
            std::io::Write::flush(&mut w)?;
        }
        args.csv = Some(path);
    }
    let (runs, agree) = run_modes(&args, args.json)?;
    let peers = run_peers(&args, &runs);
    let dir = modes::results_dir(&args.out)?;
    let summary = serde_json::json!({
        "bench": "taxi",
        "rows": args.rows,
        "csv": args.csv,
        "answers_agree": agree,
        "runs": runs,
        "peers": peers,
    });
    modes::write_json(&dir.join("taxi.json"), &summary)?;
    modes::plot_runs(
        &dir.join("taxi.png"),
        "NYC taxi analysis",
        "analysis time (s)",
        &runs,
        |r| Some(r.seconds),
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        if let Some(a) = runs.iter().find_map(|r| r.detail.get("answers")?.as_str()) {
            println!("{a}");
        }
        modes::print_table(&runs, false);
        print_steps(&runs);
        print_traffic(&runs);
        print_peers(&runs, &peers);
        println!("answers identical across modes: {agree}");
    }
    anyhow::ensure!(agree, "modes gave different answers");
    anyhow::ensure!(
        peers.iter().all(|p| p.differences.is_empty()),
        "a peer gave different answers"
    );
    Ok(())
}

/// Writes the generated trips as Parquet.
#[cfg(feature = "parquet")]
fn write_parquet(args: &Args, path: &std::path::Path) -> anyhow::Result<()> {
    let df = taxi::generate_frame(
        &TaxiGen::new(args.seed),
        args.rows,
        farmem_frame::LocalPlacement::shared(),
        &mut |_| {},
    )?;
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    farmem_frame::parquet::write_parquet(&df, std::io::BufWriter::with_capacity(1 << 20, f), 0)?;
    eprintln!("wrote {} trips to {}", args.rows, path.display());
    Ok(())
}

#[cfg(not(feature = "parquet"))]
fn write_parquet(_: &Args, path: &std::path::Path) -> anyhow::Result<()> {
    anyhow::bail!("{}: built without the parquet feature", path.display())
}

/// Runs the requested Python peers on the CSV the modes loaded; skipped ones are reported on
/// stderr.
fn run_peers(args: &Args, runs: &[ModeRun]) -> Vec<taxi::peers::PeerRun> {
    let (Some(csv), Some(ours)) = (
        &args.csv,
        runs.iter().find_map(|r| r.detail.get("answers_json")),
    ) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for engine in &args.peers {
        eprintln!("running the nine steps in {engine}");
        match taxi::peers::run_peer(engine, csv, ours) {
            Ok(r) => out.push(r),
            Err(why) => eprintln!("skipping {engine}: {why}"),
        }
    }
    out
}

/// Prints the peers' load and analysis times beside farmem's modes.
fn print_peers(runs: &[ModeRun], peers: &[taxi::peers::PeerRun]) {
    let both_loads = runs.iter().any(|r| {
        r.detail
            .get("csv_load_seconds")
            .is_some_and(|v| !v.is_null())
    });
    if peers.is_empty() && !both_loads {
        return;
    }
    println!(
        "{:<26} {:>10} {:>12}  answers",
        "engine", "load (s)", "analysis (s)"
    );
    for r in runs.iter().filter(|r| r.skipped.is_none()) {
        let secs = |k: &str| r.detail.get(k).and_then(serde_json::Value::as_f64);
        if let Some(csv) = secs("csv_load_seconds") {
            println!(
                "{:<26} {:>10.2} {:>12}  farmem (the same trips from the CSV)",
                format!(
                    "farmem {} {:.0}% csv",
                    r.mode.name(),
                    r.local_mem_ratio * 100.0
                ),
                csv,
                "-"
            );
        }
        println!(
            "{:<26} {:>10.2} {:>12.3}  farmem",
            format!("farmem {} {:.0}%", r.mode.name(), r.local_mem_ratio * 100.0),
            secs("load_seconds").unwrap_or(f64::NAN),
            secs("analyze_seconds").unwrap_or(f64::NAN)
        );
    }
    for p in peers {
        let verdict = if p.differences.is_empty() {
            "equal to farmem's".to_owned()
        } else {
            format!("DIFFER: {}", p.differences.join(", "))
        };
        println!(
            "{:<26} {:>10.2} {:>12.3}  {verdict}",
            p.engine, p.load_seconds, p.analyze_seconds
        );
    }
}
