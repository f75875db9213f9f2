//! What the application benchmarks (`taxi`, `web`, `demo`) share: the memory modes compared side
//! by side, local-memory ratios, child-process runs, progress bars and result files.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// How an application's data is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Plain std types, everything in local memory (the ceiling; no budget).
    Local,
    /// farmem object mode, aggregates offloaded to the remote agent.
    Object,
    /// farmem object mode, everything computed here.
    #[value(name = "object-noagent")]
    #[serde(rename = "object-noagent")]
    ObjectNoAgent,
    /// The same std-type code as `local` under the paging allocator.
    Paging,
    /// The same std-type code as `local` under a memory cgroup with zram swap (root only).
    Kswap,
    /// The same std-type code as `local` under a memory cgroup with kernel swap to the memory
    /// server over TCP (FUSE + loop device, root only): the Fastswap/Infiniswap-style peer.
    #[value(name = "kswap-net")]
    #[serde(rename = "kswap-net")]
    KswapNet,
}

impl Mode {
    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Local => "local",
            Mode::Object => "object",
            Mode::ObjectNoAgent => "object-noagent",
            Mode::Paging => "paging",
            Mode::Kswap => "kswap",
            Mode::KswapNet => "kswap-net",
        }
    }

    /// A longer label for tables and charts.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Local => "all-local",
            Mode::Object => "farmem object + agent",
            Mode::ObjectNoAgent => "farmem object, no agent",
            Mode::Paging => "farmem paging",
            Mode::Kswap => "kernel swap (zram)",
            Mode::KswapNet => "kernel swap over TCP",
        }
    }
}

/// Parses a local-memory ratio: `25%` or `0.25`.
///
/// # Errors
/// Not a number, or outside (0, 100%].
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    let (num, scale) = match s.strip_suffix('%') {
        Some(p) => (p, 100.0),
        None => (s, 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a ratio like 25% or 0.25"))?;
    let v = v / scale;
    if !(v > 0.0 && v <= 1.0) {
        return Err(format!("local memory ratio {s:?} must be in (0, 100%]"));
    }
    Ok(v)
}

/// The outcome of one mode at one local-memory ratio.
#[derive(Clone, Debug, Serialize)]
pub struct ModeRun {
    /// The mode.
    pub mode: Mode,
    /// Local memory as a share of the working set (1.0 for all-local).
    pub local_mem_ratio: f64,
    /// The local budget in bytes (0: unlimited).
    pub budget_bytes: u64,
    /// Why the mode did not run, if it did not.
    pub skipped: Option<String>,
    /// Wall time of the measured part, seconds.
    pub seconds: f64,
    /// Operations per second, for throughput benchmarks.
    pub throughput: Option<f64>,
    /// Benchmark-specific figures (step times, latencies, answers digest).
    pub detail: serde_json::Value,
}

impl ModeRun {
    /// A run that did not happen.
    pub fn skipped(mode: Mode, ratio: f64, budget: u64, why: String) -> Self {
        Self {
            mode,
            local_mem_ratio: ratio,
            budget_bytes: budget,
            skipped: Some(why),
            seconds: 0.0,
            throughput: None,
            detail: serde_json::Value::Null,
        }
    }
}

/// Added to the budget of kernel-swap runs: the memory cgroup charges the whole child process
/// (binary, libraries, stacks, allocator slack), which the other modes' budgets do not count.
/// This favours kernel swap a little; it matters only for small data sets.
pub const KSWAP_SLACK: u64 = 24 << 20;

/// Marks the result line a child process prints on stdout.
pub const CHILD_RESULT: &str = "FARMEM_CHILD_RESULT ";

/// Runs the current binary again with `args` (optionally under kernel swap with `limit`) and
/// parses the JSON value it prints after [`CHILD_RESULT`].
///
/// # Errors
/// The child failed, printed no result, or kernel swap is not available.
pub fn run_child(args: &[String], kswap_limit: Option<u64>) -> anyhow::Result<serde_json::Value> {
    run_child_on(
        args,
        kswap_limit.map(|l| (l, crate::kswap::SwapDevice::Zram)),
    )
}

/// Runs `mode` (paging, kernel swap or kernel swap over TCP) in a child process given `args`,
/// at `budget` bytes, and decodes its result. `Err(why)` when the mode cannot run here (the
/// caller reports it as skipped).
///
/// # Errors
/// The inner result carries the child's failure, or a mode that does not run in a child.
pub fn run_child_mode<T: serde::de::DeserializeOwned>(
    mode: Mode,
    args: &[String],
    budget: u64,
    server: &str,
) -> Result<anyhow::Result<T>, String> {
    run_child_mode_with_setup(mode, args, budget, 0, server)
}

/// [`run_child_mode`] for a child that needs `setup_bytes` of memory beyond its budget while it
/// sets up: the kernel-swap modes start it under a limit that much looser, and the child lowers
/// the limit to `budget` + [`KSWAP_SLACK`] itself ([`crate::kswap::tighten_own_limit`]) before
/// the measured work.
///
/// # Errors
/// As [`run_child_mode`].
pub fn run_child_mode_with_setup<T: serde::de::DeserializeOwned>(
    mode: Mode,
    args: &[String],
    budget: u64,
    setup_bytes: u64,
    server: &str,
) -> Result<anyhow::Result<T>, String> {
    let value = match mode {
        Mode::Paging => run_child(args, None),
        Mode::Kswap => {
            crate::kswap::available()?;
            run_child(args, Some(budget + setup_bytes + KSWAP_SLACK))
        }
        Mode::KswapNet => {
            crate::netswap::available()?;
            run_child_net(args, budget + setup_bytes, server)
        }
        other => Err(anyhow::anyhow!(
            "{} does not run in a child process",
            other.name()
        )),
    };
    Ok(value.and_then(|v| Ok(serde_json::from_value(v)?)))
}

/// [`run_child`] under kernel swap to the memory server at `server` (mode
/// [`Mode::KswapNet`]), in a memory cgroup of `budget` plus [`KSWAP_SLACK`] bytes.
///
/// # Errors
/// As [`run_child`].
pub fn run_child_net(
    args: &[String],
    budget: u64,
    server: &str,
) -> anyhow::Result<serde_json::Value> {
    run_child_on(
        args,
        Some((
            budget + KSWAP_SLACK,
            crate::kswap::SwapDevice::Tcp { server },
        )),
    )
}

/// [`run_child`] with a choice of swap device: `Some((limit, device))` runs the child in a
/// memory cgroup of `limit` bytes swapping to `device`.
///
/// # Errors
/// As [`run_child`].
pub fn run_child_on(
    args: &[String],
    swap: Option<(u64, crate::kswap::SwapDevice<'_>)>,
) -> anyhow::Result<serde_json::Value> {
    let exe = std::env::current_exe()?;
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut oom_retries = None;
    let output = match swap {
        Some((limit, device)) => {
            let run = crate::kswap::run_under_retrying(limit, device, &exe, &argv)?;
            oom_retries = Some(run.oom_retries);
            if let Some(net) = &run.net {
                eprintln!(
                    "  kernel swap over TCP: {} MiB swapped out, {} MiB swapped in, memory \
                     server received {} MiB, {} failed requests",
                    net.daemon.pages_written >> 8,
                    net.daemon.pages_read >> 8,
                    net.server_bytes_written >> 20,
                    net.daemon.backend_errors
                );
                // A swap-in or swap-out that failed makes the run's figure meaningless.
                anyhow::ensure!(
                    net.daemon.backend_errors == 0,
                    "kernel swap over TCP: {} swap requests to the memory server failed",
                    net.daemon.backend_errors
                );
            }
            run.output
        }
        None => std::process::Command::new(&exe)
            .args(&argv)
            .stderr(std::process::Stdio::inherit())
            .output()?,
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        use std::os::unix::process::ExitStatusExt;
        if output.status.signal() == Some(9) {
            anyhow::bail!("child run was killed (SIGKILL: out of memory under its limit?)");
        }
        anyhow::bail!(
            "child run failed ({}): {}{}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(CHILD_RESULT))
        .ok_or_else(|| anyhow::anyhow!("child printed no result: {}", stdout.trim()))?;
    let mut v: serde_json::Value = serde_json::from_str(line)?;
    if let (Some(n), Some(obj)) = (oom_retries, v.as_object_mut()) {
        // Reruns after the cgroup's OOM killer took the child are part of the record.
        obj.insert("oom_retries".into(), n.into());
    }
    Ok(v)
}

/// Prints a child's result for [`run_child`].
///
/// # Errors
/// Serialisation errors.
pub fn print_child_result(v: &impl Serialize) -> anyhow::Result<()> {
    println!("{CHILD_RESULT}{}", serde_json::to_string(v)?);
    Ok(())
}

/// A progress bar on stderr (hidden when stderr is not a terminal or `quiet`).
pub fn progress(len: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>24} [{bar:40}] {percent:>3}% {elapsed_precise} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// Creates the results directory.
///
/// # Errors
/// I/O errors.
pub fn results_dir(out: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    Ok(out.to_path_buf())
}

/// Writes `value` as pretty JSON to `path`.
///
/// # Errors
/// I/O and serialisation errors.
pub fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")?;
    Ok(())
}

/// Plots `metric(run)` against the local-memory ratio (in %), one line per mode.
pub fn plot_runs(
    path: &Path,
    title: &str,
    y_label: &str,
    runs: &[ModeRun],
    metric: fn(&ModeRun) -> Option<f64>,
) {
    let mut modes: Vec<Mode> = Vec::new();
    for r in runs {
        if !modes.contains(&r.mode) {
            modes.push(r.mode);
        }
    }
    let series: Vec<crate::plot::Series> = modes
        .iter()
        .map(|&m| {
            let mut points: Vec<(f64, f64)> = runs
                .iter()
                .filter(|r| r.mode == m && r.skipped.is_none())
                .filter_map(|r| Some((r.local_mem_ratio * 100.0, metric(r)?)))
                .collect();
            // All-local runs once; draw it as a flat ceiling across the swept range.
            if m == Mode::Local && points.len() == 1 {
                let y = points[0].1;
                let xs: Vec<f64> = runs.iter().map(|r| r.local_mem_ratio * 100.0).collect();
                let lo = xs.iter().copied().fold(f64::MAX, f64::min);
                points = vec![(lo, y), (100.0, y)];
            }
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            crate::plot::Series {
                label: m.label().to_owned(),
                points,
            }
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    match crate::plot::line_chart(
        path,
        title,
        "local memory (% of working set)",
        y_label,
        &series,
    ) {
        Ok(()) => eprintln!("chart: {}", path.display()),
        Err(e) => eprintln!("chart {} skipped: {e}", path.display()),
    }
}

/// Prints a table of runs with each figure as a ratio against the all-local run.
pub fn print_table(runs: &[ModeRun], higher_is_better: bool) {
    let base = runs
        .iter()
        .find(|r| r.mode == Mode::Local && r.skipped.is_none());
    println!(
        "{:<26} {:>7} {:>12} {:>14} {:>12}",
        "mode", "local", "time (s)", "throughput", "vs all-local"
    );
    for r in runs {
        if let Some(why) = &r.skipped {
            println!(
                "{:<26} {:>6.0}% skipped: {why}",
                r.mode.label(),
                r.local_mem_ratio * 100.0
            );
            continue;
        }
        let ratio = base.and_then(|b| {
            if higher_is_better {
                Some(r.throughput? / b.throughput?)
            } else {
                (b.seconds > 0.0).then(|| r.seconds / b.seconds)
            }
        });
        println!(
            "{:<26} {:>6.0}% {:>12.3} {:>14} {:>12}",
            r.mode.label(),
            r.local_mem_ratio * 100.0,
            r.seconds,
            r.throughput.map_or("-".into(), |t| format!("{t:.0}/s")),
            ratio.map_or("-".into(), |x| format!("{x:.2}x")),
        );
    }
}
