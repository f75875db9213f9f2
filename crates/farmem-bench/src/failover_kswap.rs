//! `failover`: the same kill -9 against kernel swap over TCP, for contrast (root, FUSE, loop
//! devices and a memory cgroup; skipped otherwise).
//!
//! The paging benchmark's all-local workload (`paging --kswap-child`: fill a working set four
//! times the limit, then random reads and writes) runs under a memory cgroup whose pages swap
//! through [`crate::netswap`] to a memory server (`paging --serve-child --lock-memory`, a child
//! process on loopback). Once the server holds a good share of the swapped-out pages it is killed
//! with SIGKILL, and the workload is watched: its state (`/proc/PID/stat`) every 10 ms, and how
//! and when it ends. A workload still alive [`DEADLINE`] after the kill is killed; one that does
//! not die of that either (stuck in the kernel) has its FUSE connection aborted. Afterwards the
//! swap device, loop device, mount and cgroup must all be gone, as [`crate::kswap::run_under`]
//! promises; what is left is reported.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use farmem::Backend;
use farmem::backend::{TcpBackend, TcpConfig};
use serde::Serialize;

use super::Args;
use crate::kswap::{self, SwapDevice};

/// How long the workload may live on after its swap server died.
pub(super) const DEADLINE: Duration = Duration::from_secs(20);
/// How long to wait, after killing the workload at the deadline, before aborting its FUSE
/// connection.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// The longest wait for the server to hold the pages the kill should catch.
const FILL_LIMIT: Duration = Duration::from_secs(120);

/// What happened to a process under kernel swap over TCP when its memory server was killed.
#[derive(Debug, Serialize)]
pub(super) struct KswapKill {
    /// What the workload was doing at the kill: `filling` its memory (swap-outs fail) or
    /// `reading` it back after the fill (swap-ins fail).
    pub killed_while: &'static str,
    /// Memory cgroup limit.
    pub limit_bytes: u64,
    /// The workload's working set.
    pub working_set_bytes: u64,
    /// Swapped-out pages the server held when it was killed.
    pub pages_on_server_at_kill: u64,
    /// From the workload's start to the kill.
    pub killed_after_seconds: f64,
    /// How the workload ended, in words.
    pub outcome: String,
    /// Its exit status as the shell would print it.
    pub status: String,
    /// From the kill to the last time the workload was seen alive (sampled every 10 ms).
    pub ended_after_kill_seconds: f64,
    /// The distinct states the workload's process was seen in after the kill, in the order
    /// first seen (`R` running, `S` sleeping, `D` uninterruptible, `Z` zombie).
    pub states_after_kill: String,
    /// Its longest stretch in `D` (uninterruptible, waiting for swap I/O) after the kill.
    pub longest_uninterruptible_ms: f64,
    /// OOM kills its memory cgroup counted.
    pub oom_kills: u64,
    /// Swap requests the FUSE daemon failed (`EIO` to the kernel).
    pub swap_errors: u64,
    /// Whether it was still alive at the deadline.
    pub hit_deadline: bool,
    /// Pieces of the set-up still present afterwards (empty: all removed).
    pub leftovers: Vec<String>,
}

/// `paging --serve-child`: a memory server child that locks its memory (it holds swapped-out
/// pages and must never be swapped itself); stops when its stdin closes, or on SIGKILL.
struct SwapServer {
    child: Child,
    addr: String,
}

impl SwapServer {
    fn start(capacity_mib: u64) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the farmem-bench binary")?;
        let mut child = Command::new(exe)
            .args(["paging", "--serve-child", "--lock-memory", "--budget-mib"])
            .arg(capacity_mib.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the swap server")?;
        let mut addr = String::new();
        let out = child.stdout.take().context("the swap server's stdout")?;
        BufReader::new(out).read_line(&mut addr)?;
        let addr = addr.trim().to_owned();
        if addr.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("the swap server printed no address");
        }
        Ok(Self { child, addr })
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SwapServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        self.kill9();
    }
}

/// `MemAvailable` of `/proc/meminfo` in bytes.
fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kib| kib << 10)
}

/// The cgroups [`kswap::run_under`] made for this process.
fn our_cgroups() -> Vec<PathBuf> {
    let prefix = format!("farmem-kswap-{}-", std::process::id());
    ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"]
        .iter()
        .filter_map(|root| std::fs::read_dir(root).ok())
        .flat_map(|d| d.flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// Process ids in our cgroups.
fn workload_pids() -> Vec<i32> {
    our_cgroups()
        .iter()
        .filter_map(|c| std::fs::read_to_string(c.join("cgroup.procs")).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// The state letter of process `pid` (`R`, `S`, `D`, `Z`, ...).
fn state_of(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Mount points of this process's network swap devices with their device numbers
/// (`major:minor`), from `/proc/self/mountinfo`.
fn our_mounts() -> Vec<(String, String)> {
    let tag = format!("farmem-netswap-{}-", std::process::id());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let dev = f.nth(2)?.to_owned();
            let point = f.nth(1)?.to_owned();
            point.contains(&tag).then_some((point, dev))
        })
        .collect()
}

/// Aborts the FUSE connections of our swap devices (the kernel then fails their I/O at once).
fn abort_fuse() {
    for (_, dev) in our_mounts() {
        if let Some((major, minor)) = dev.split_once(':')
            && let (Ok(major), Ok(minor)) = (major.parse::<u64>(), minor.parse::<u64>())
        {
            let conn = (major << 20) | minor;
            let _ = std::fs::write(format!("/sys/fs/fuse/connections/{conn}/abort"), "1");
        }
    }
}

/// What is left of the set-up: swap devices that were not active before, mounts, cgroups, loop
/// devices on our FUSE files.
fn leftovers(swaps_before: &[String]) -> Vec<String> {
    let mut left: Vec<String> = kswap::other_swaps()
        .into_iter()
        .filter(|s| !swaps_before.contains(s))
        .map(|s| format!("swap device {s}"))
        .collect();
    left.extend(our_mounts().into_iter().map(|(p, _)| format!("mount {p}")));
    left.extend(
        our_cgroups()
            .into_iter()
            .map(|c| format!("cgroup {}", c.display())),
    );
    let tag = format!("farmem-netswap-{}-", std::process::id());
    if let Ok(out) = Command::new("losetup").arg("-a").output() {
        left.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains(&tag))
                .map(|l| format!("loop device {l}")),
        );
    }
    left
}

/// The OOM kills counted in our cgroups (`oom_kill` of v1 `memory.oom_control` or of v2
/// `memory.events`).
fn oom_kills() -> u64 {
    our_cgroups()
        .iter()
        .flat_map(|c| {
            ["memory.oom_control", "memory.events"]
                .iter()
                .filter_map(|f| std::fs::read_to_string(c.join(f)).ok())
                .collect::<Vec<_>>()
        })
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.strip_prefix("oom_kill ")?.trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// What [`watch`] saw.
#[derive(Debug, Default)]
struct Watched {
    /// Distinct states, in the order first seen.
    states: String,
    /// Longest stretch in `D` (uninterruptible sleep).
    longest_d: Duration,
    /// When (after the kill) the workload was last seen alive.
    alive: Duration,
    /// Whether it was still alive at [`DEADLINE`].
    hit_deadline: bool,
    /// OOM kills in its cgroup.
    oom_kills: u64,
}

/// Watches the workload after the kill until `done`, escalating at [`DEADLINE`] as the module
/// docs say.
fn watch(killed_at: Instant, done: &AtomicBool) -> Watched {
    let mut w = Watched::default();
    let mut d_since: Option<Instant> = None;
    while !done.load(Ordering::Acquire) {
        let now = Instant::now();
        let mut in_d = false;
        for pid in workload_pids() {
            if let Some(c) = state_of(pid) {
                if c != 'Z' {
                    w.alive = killed_at.elapsed();
                }
                in_d |= c == 'D';
                if !w.states.contains(c) {
                    w.states.push(c);
                }
            }
        }
        match (in_d, d_since) {
            (true, None) => d_since = Some(now),
            (true, Some(t)) => w.longest_d = w.longest_d.max(now - t),
            (false, _) => d_since = None,
        }
        w.oom_kills = w.oom_kills.max(oom_kills());
        let since = killed_at.elapsed();
        if since >= DEADLINE && !w.hit_deadline {
            w.hit_deadline = true;
            for pid in workload_pids() {
                // SAFETY: kill(2) with a pid read from our own cgroup; no memory is involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if since >= DEADLINE + KILL_GRACE {
            abort_fuse();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    w
}

/// When the swap server is killed.
#[derive(Clone, Copy, Debug)]
enum KillPoint {
    /// Half-way through filling the working set: swap-outs fail.
    Filling,
    /// After the fill, during the random reads: swap-ins fail.
    Reading,
}

/// Runs the contrast twice (server killed while the workload fills its memory, and while it
/// reads it back); empty (with the reason printed) where kernel swap over TCP cannot run.
///
/// # Errors
/// When the set-up fails or the workload cannot be started.
pub(super) fn run(a: &Args) -> anyhow::Result<Vec<KswapKill>> {
    if let Err(why) = crate::netswap::available() {
        println!("kernel swap kill: skipped ({why})");
        return Ok(Vec::new());
    }
    let limit_mib: u64 = if a.quick { 32 } else { 64 };
    // Other processes' pages may go to the device too under global memory pressure, and they
    // would die with the server: only run with plenty of memory free.
    let need = (4 << 30) + ((4 * limit_mib) << 20);
    if mem_available() < need {
        println!(
            "kernel swap kill: skipped (less than {} MiB available; other processes could \
             swap to the device that is about to fail)",
            need >> 20
        );
        return Ok(Vec::new());
    }
    [KillPoint::Filling, KillPoint::Reading]
        .into_iter()
        .map(|at| one(limit_mib, at))
        .collect()
}

/// One run: a working set four times `limit_mib`, the server killed at `at`.
fn one(limit_mib: u64, at: KillPoint) -> anyhow::Result<KswapKill> {
    let ws_mib = 4 * limit_mib;
    eprintln!(
        "kernel swap over TCP: {ws_mib} MiB working set under a {limit_mib} MiB cgroup limit, \
         SIGKILL to its swap server while {at:?}"
    );
    let swaps_before = kswap::other_swaps();
    let mut server = SwapServer::start(2 * ws_mib)?;
    let watcher = TcpBackend::connect(TcpConfig::new([server.addr.as_str()]))
        .context("connecting to the swap server")?;
    let exe = std::env::current_exe().context("locating the farmem-bench binary")?;
    let (limit, factor) = (limit_mib.to_string(), (ws_mib / limit_mib).to_string());
    let child_args = [
        "paging",
        "--kswap-child",
        "--budget-mib",
        &limit,
        "--factor",
        &factor,
        "--ops",
        "1000000000",
    ];
    // Half of the pages that must leave (mid-fill), or nearly all of them (the fill is over).
    let must_leave = ((ws_mib - limit_mib) << 20) / 4096;
    let at_pages = match at {
        KillPoint::Filling => must_leave / 2,
        KillPoint::Reading => must_leave * 9 / 10,
    };
    let done = AtomicBool::new(false);
    let started = Instant::now();
    let server_addr = server.addr.clone();
    let (swap_run, kill) = std::thread::scope(|s| {
        let runner = s.spawn(|| {
            let r = kswap::run_under(
                limit_mib << 20,
                SwapDevice::Tcp {
                    server: &server_addr,
                },
                Path::new(&exe),
                &child_args,
            );
            done.store(true, Ordering::Release);
            r
        });
        let mut pages = 0;
        while !done.load(Ordering::Acquire) && started.elapsed() < FILL_LIMIT {
            pages = watcher.stats().map_or(pages, |st| st.objects);
            if pages >= at_pages {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let killed_at = Instant::now();
        server.kill9();
        let watched = watch(killed_at, &done);
        let r = runner.join().unwrap_or(Err(kswap::KswapError::Setup(
            "the workload thread panicked".into(),
        )));
        (r, (pages, killed_at - started, watched))
    });
    drop(watcher);
    drop(server);
    let (pages, killed_after, w) = kill;
    let swap_run = swap_run.context("running the workload under kernel swap over TCP")?;
    let status = swap_run.output.status;
    let outcome = match (status.signal(), status.code()) {
        (Some(libc::SIGBUS), _) => "SIGBUS: a page could not be swapped back in".to_owned(),
        (Some(libc::SIGKILL), _) if w.hit_deadline => {
            format!(
                "still alive {} s after the kill; killed then",
                DEADLINE.as_secs()
            )
        }
        (Some(libc::SIGKILL), _) if w.oom_kills > 0 => {
            "killed by the cgroup's OOM killer: pages could not be swapped out".to_owned()
        }
        (Some(sig), _) => format!("killed by signal {sig}"),
        (None, Some(0)) => "finished normally".to_owned(),
        (None, code) => format!("exited with code {code:?}"),
    };
    let swap_errors = swap_run.net.map_or(0, |n| n.daemon.backend_errors);
    Ok(KswapKill {
        killed_while: match at {
            KillPoint::Filling => "filling",
            KillPoint::Reading => "reading",
        },
        limit_bytes: limit_mib << 20,
        working_set_bytes: ws_mib << 20,
        pages_on_server_at_kill: pages,
        killed_after_seconds: killed_after.as_secs_f64(),
        outcome,
        status: status.to_string(),
        ended_after_kill_seconds: w.alive.as_secs_f64(),
        states_after_kill: w.states,
        longest_uninterruptible_ms: w.longest_d.as_secs_f64() * 1e3,
        oom_kills: w.oom_kills,
        swap_errors,
        hit_deadline: w.hit_deadline,
        leftovers: leftovers(&swaps_before),
    })
}

/// Prints the result line.
pub(super) fn print(k: &KswapKill) {
    println!(
        "kernel swap over TCP, SIGKILL to the swap server while {} ({} MiB under a {} MiB \
         limit, {} MiB swapped out): {} after {:.2} s (states {}, longest in D {:.0} ms; {} swap \
         I/O errors); {}",
        k.killed_while,
        k.working_set_bytes >> 20,
        k.limit_bytes >> 20,
        (k.pages_on_server_at_kill * 4096) >> 20,
        k.outcome,
        k.ended_after_kill_seconds,
        if k.states_after_kill.is_empty() {
            "-"
        } else {
            &k.states_after_kill
        },
        k.longest_uninterruptible_ms,
        k.swap_errors,
        if k.leftovers.is_empty() {
            "everything removed".to_owned()
        } else {
            format!("LEFT BEHIND: {:?}", k.leftovers)
        }
    );
}
