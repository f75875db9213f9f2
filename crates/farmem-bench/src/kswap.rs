//! Linux's own swapping as a measured peer: run a workload under a memory-cgroup limit with a zram
//! swap device ([`SwapDevice::Zram`], compressed local memory: the kernel's best case) or with
//! kernel swap to a memory server over TCP ([`SwapDevice::Tcp`], see [`crate::netswap`]: the
//! Fastswap-style far-memory peer).
//!
//! [`run_under_swap`] (zram; [`run_under`] picks the device) creates, for one run:
//! - a zram device (`/sys/class/zram-control/hot_add`, or an unused `/dev/zram0` when hot-add is
//!   missing), `disksize` [`ZRAM_BYTES`], `mkswap`, `swapon -p 32767` (top priority, so the
//!   workload swaps to zram first; other active swap devices are left alone and reported by
//!   [`available`]'s caller in the log, for fairness disable them beforehand);
//! - a memory cgroup limited to the local budget: v1 `/sys/fs/cgroup/memory/farmem-kswap-<pid>-<n>`
//!   with `memory.limit_in_bytes`, or v2 `/sys/fs/cgroup/farmem-kswap-<pid>-<n>` with
//!   `memory.max` and `memory.swap.max = max`;
//! - the workload as a child process (usually the current binary re-executed with a hidden
//!   subcommand), started through `sh -c 'echo $$ > cgroup.procs; exec ...'` so that it is inside
//!   the cgroup before it allocates anything. Its stdout (e.g. a JSON result) is returned.
//!
//! Everything is removed afterwards (swapoff, zram reset and hot-remove, cgroup rmdir), also on
//! error and on Ctrl-C (a SIGINT handler turns the signal into [`KswapError::Interrupted`]; a
//! `Drop` guard cleans up). The limit charges the child's whole memory (binary, libraries, stack)
//! like any process, so leave a few MiB of slack in the working set comparison.
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! if let Err(why) = kswap::available() {
//!     println!("kernel swap: skipped ({why})");
//!     return Ok(());
//! }
//! let exe = std::env::current_exe()?;
//! let run = kswap::run_under_swap(64 << 20, &exe, &["paging", "--kswap-child"])?;
//! println!("{}", String::from_utf8_lossy(&run.output.stdout));
//! # Ok(()) }
//! ```

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use signal_hook::consts::SIGINT;

/// Size of the zram swap device (zram only uses memory for pages actually swapped out).
pub const ZRAM_BYTES: u64 = 8 << 30;

const V1_ROOT: &str = "/sys/fs/cgroup/memory";
const V2_ROOT: &str = "/sys/fs/cgroup";
const ZRAM_CONTROL: &str = "/sys/class/zram-control";

/// Why a kernel-swap run failed or was not possible.
#[derive(Debug)]
pub enum KswapError {
    /// A prerequisite is missing (not root, no memory cgroup, no zram, no mkswap/swapon).
    Unavailable(String),
    /// Setting up or tearing down a piece failed.
    Setup(String),
    /// The child could not be started or waited for.
    Child(std::io::Error),
    /// Ctrl-C arrived during the run; everything was cleaned up.
    Interrupted,
    /// The SIGINT handler could not be installed.
    Signal(std::io::Error),
}

impl fmt::Display for KswapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(why) => write!(f, "kernel swap unavailable: {why}"),
            Self::Setup(why) => write!(f, "kernel swap set-up failed: {why}"),
            Self::Child(e) => write!(f, "kernel swap workload failed to run: {e}"),
            Self::Interrupted => write!(f, "kernel swap run interrupted by Ctrl-C"),
            Self::Signal(e) => write!(f, "cannot install the SIGINT handler: {e}"),
        }
    }
}

impl std::error::Error for KswapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Child(e) | Self::Signal(e) => Some(e),
            _ => None,
        }
    }
}

/// Result of a run under kernel swap.
#[derive(Debug)]
pub struct SwapRun {
    /// The child's exit status, stdout and stderr.
    pub output: Output,
    /// Peak uncompressed bytes held in zram during the run (sampled every 10 ms): how much of
    /// the workload was swapped out at once.
    pub zram_peak_bytes: u64,
    /// Compressed size of the data at that peak.
    pub zram_peak_compr_bytes: u64,
    /// Peak memory usage of the cgroup in bytes (0 if the kernel does not report it).
    pub peak_bytes: u64,
    /// For [`SwapDevice::Tcp`]: pages sent to and fetched from the memory server.
    pub net: Option<crate::netswap::NetSwapStats>,
    /// Largest growth of the system's page cache (`Buffers` + `Cached` in `/proc/meminfo`)
    /// during the run, sampled every 10 ms: near zero when swapped pages are not cached a second
    /// time on their way to the device (other processes' file I/O adds noise).
    pub page_cache_growth_bytes: u64,
    /// How many earlier attempts the cgroup's OOM killer took ([`run_under_retrying`]).
    pub oom_retries: u32,
}

/// The system's page cache in bytes (`Buffers` + `Cached`).
fn page_cache_bytes() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("Buffers:") || l.starts_with("Cached:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum::<u64>()
        * 1024
}

/// Which cgroup hierarchy carries the memory controller.
#[derive(Clone, Copy, Debug)]
enum CgroupVersion {
    V1,
    V2,
}

fn cgroup_version() -> Option<CgroupVersion> {
    if Path::new(V1_ROOT).join("memory.limit_in_bytes").exists() {
        return Some(CgroupVersion::V1);
    }
    let controllers = fs::read_to_string(Path::new(V2_ROOT).join("cgroup.controllers")).ok()?;
    controllers
        .split_whitespace()
        .any(|c| c == "memory")
        .then_some(CgroupVersion::V2)
}

/// Lowers the memory limit of the cgroup the calling process runs in to `limit_bytes`: a
/// kernel-swap child that needs scratch memory to set up (building a graph) starts under a
/// looser limit and tightens it itself before the measured work, so the kernel swaps out the
/// excess first. Refuses to touch any cgroup but one [`run_under`] created.
///
/// # Errors
/// [`KswapError::Unavailable`] outside such a cgroup; [`KswapError::Setup`] when the limit
/// cannot be written (the kernel could not reclaim down to it).
pub fn tighten_own_limit(limit_bytes: u64) -> Result<(), KswapError> {
    let version = cgroup_version()
        .ok_or_else(|| KswapError::Unavailable("no memory cgroup controller".into()))?;
    let own = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| KswapError::Unavailable(format!("reading /proc/self/cgroup: {e}")))?;
    // v1: `N:memory[,other]:/path`; v2: `0::/path`.
    let rel = own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let ours = match version {
            CgroupVersion::V1 => controllers.split(',').any(|c| c == "memory"),
            CgroupVersion::V2 => controllers.is_empty(),
        };
        ours.then(|| path.trim_start_matches('/').to_owned())
    });
    let rel = rel.filter(|r| {
        Path::new(r)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("farmem-kswap-"))
    });
    let Some(rel) = rel else {
        return Err(KswapError::Unavailable(
            "not running in a kernel-swap cgroup".into(),
        ));
    };
    let file = match version {
        CgroupVersion::V1 => Path::new(V1_ROOT).join(rel).join("memory.limit_in_bytes"),
        CgroupVersion::V2 => Path::new(V2_ROOT).join(rel).join("memory.max"),
    };
    write(file, &limit_bytes.to_string())
}

/// Whether `name` is in one of the usual binary directories.
pub(crate) fn has_tool(name: &str) -> bool {
    ["/sbin", "/usr/sbin", "/bin", "/usr/bin"]
        .iter()
        .any(|d| Path::new(d).join(name).exists())
}

fn is_root() -> bool {
    // /proc/self/status "Uid:" line: real, effective, saved, fs.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// What every swap device needs: root, a memory cgroup controller, the swap tools.
///
/// # Errors
/// The reason when something is missing.
pub(crate) fn available_common() -> Result<(), String> {
    if !is_root() {
        return Err("needs root (cgroups and swapon)".into());
    }
    if cgroup_version().is_none() {
        return Err(format!(
            "no memory cgroup controller ({V1_ROOT} or {V2_ROOT} with memory)"
        ));
    }
    for tool in ["mkswap", "swapon", "swapoff", "sh"] {
        if !has_tool(tool) {
            return Err(format!("`{tool}` not found"));
        }
    }
    Ok(())
}

/// Checks that kernel-swap runs (zram) are possible here.
///
/// # Errors
/// The reason when they are not (not root, no memory cgroup, no zram, missing tools).
pub fn available() -> Result<(), String> {
    available_common()?;
    if !Path::new(ZRAM_CONTROL).exists() && !Path::new("/sys/block/zram0").exists() {
        return Err("no zram (load the module: modprobe zram)".into());
    }
    Ok(())
}

/// The swap device a run pages to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapDevice<'a> {
    /// No swap device: the cgroup limit alone (a program that does not fit is OOM-killed).
    None,
    /// Compressed local memory (zram): no network, the kernel's best case.
    Zram,
    /// A memory server over TCP (`host:port`), through [`crate::netswap`].
    Tcp {
        /// The memory server.
        server: &'a str,
    },
}

impl SwapDevice<'_> {
    /// Checks that runs with this device are possible here.
    ///
    /// # Errors
    /// The reason when they are not.
    pub fn available(self) -> Result<(), String> {
        match self {
            Self::None => available_common(),
            Self::Zram => available(),
            Self::Tcp { .. } => crate::netswap::available(),
        }
    }
}

/// Other active swap devices (they would also absorb the workload's pages).
pub fn other_swaps() -> Vec<String> {
    fs::read_to_string("/proc/swaps")
        .map(|s| {
            s.lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn write(path: impl AsRef<Path>, value: &str) -> Result<(), KswapError> {
    let path = path.as_ref();
    fs::write(path, value)
        .map_err(|e| KswapError::Setup(format!("writing {value:?} to {}: {e}", path.display())))
}

fn run_tool(cmd: &mut Command) -> Result<(), KswapError> {
    let out = cmd
        .stdout(Stdio::null())
        .output()
        .map_err(|e| KswapError::Setup(format!("{cmd:?}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(KswapError::Setup(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Everything a run created; `Drop` removes it in reverse order.
#[derive(Default)]
struct Guard {
    zram: Option<(u32, bool)>,
    swap_on: Option<PathBuf>,
    cgroup: Option<PathBuf>,
    child: Option<std::process::Child>,
    net: Option<crate::netswap::NetSwap>,
}

impl Guard {
    fn create_zram(&mut self) -> Result<PathBuf, KswapError> {
        let (index, hot) = if Path::new(ZRAM_CONTROL).join("hot_add").exists() {
            let s = fs::read_to_string(Path::new(ZRAM_CONTROL).join("hot_add"))
                .map_err(|e| KswapError::Setup(format!("zram hot_add: {e}")))?;
            let i = s
                .trim()
                .parse::<u32>()
                .map_err(|e| KswapError::Setup(format!("zram hot_add returned {s:?}: {e}")))?;
            (i, true)
        } else {
            let size = fs::read_to_string("/sys/block/zram0/disksize").unwrap_or_default();
            if size.trim() != "0" {
                return Err(KswapError::Unavailable(
                    "zram0 is in use and zram hot_add is missing".into(),
                ));
            }
            (0, false)
        };
        self.zram = Some((index, hot));
        let sys = PathBuf::from(format!("/sys/block/zram{index}"));
        write(sys.join("disksize"), &ZRAM_BYTES.to_string())?;
        let dev = PathBuf::from(format!("/dev/zram{index}"));
        // udev may need a moment to create the node after hot_add.
        for _ in 0..50 {
            if dev.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        run_tool(Command::new("mkswap").arg(&dev))?;
        run_tool(Command::new("swapon").args(["-p", "32767"]).arg(&dev))?;
        self.swap_on = Some(dev.clone());
        Ok(dev)
    }

    fn create_cgroup(&mut self, limit_bytes: u64) -> Result<PathBuf, KswapError> {
        let version = cgroup_version()
            .ok_or_else(|| KswapError::Unavailable("no memory cgroup controller".into()))?;
        static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "farmem-kswap-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        );
        let dir = match version {
            CgroupVersion::V1 => Path::new(V1_ROOT).join(name),
            CgroupVersion::V2 => Path::new(V2_ROOT).join(name),
        };
        fs::create_dir(&dir)
            .map_err(|e| KswapError::Setup(format!("creating {}: {e}", dir.display())))?;
        self.cgroup = Some(dir.clone());
        match version {
            CgroupVersion::V1 => {
                write(dir.join("memory.limit_in_bytes"), &limit_bytes.to_string())?;
                // Let the group swap as much as it needs (swappiness as the system's default).
                let _ = write(dir.join("memory.swappiness"), "60");
            }
            CgroupVersion::V2 => {
                write(dir.join("memory.max"), &limit_bytes.to_string())?;
                let _ = write(dir.join("memory.swap.max"), "max");
            }
        }
        Ok(dir)
    }

    fn zram_stats(&self) -> (u64, u64) {
        let Some((i, _)) = self.zram else {
            return (0, 0);
        };
        let s = fs::read_to_string(format!("/sys/block/zram{i}/mm_stat")).unwrap_or_default();
        let mut it = s.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    }

    fn peak(&self) -> u64 {
        let Some(dir) = &self.cgroup else { return 0 };
        ["memory.max_usage_in_bytes", "memory.peak"]
            .iter()
            .find_map(|f| fs::read_to_string(dir.join(f)).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.cgroup.take() {
            // The group is empty once the child is reaped; retry briefly while the kernel
            // finishes the exit.
            let mut ok = false;
            for _ in 0..100 {
                if fs::remove_dir(&dir).is_ok() {
                    ok = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !ok {
                tracing::warn!("kswap: could not remove cgroup {}", dir.display());
            }
        }
        if let Some(dev) = self.swap_on.take()
            && let Err(e) = run_tool(Command::new("swapoff").arg(&dev))
        {
            tracing::warn!("kswap: {e}");
        }
        if let Some((i, hot)) = self.zram.take() {
            let _ = fs::write(format!("/sys/block/zram{i}/reset"), "1");
            if hot {
                let _ = fs::write(Path::new(ZRAM_CONTROL).join("hot_remove"), i.to_string());
            }
        }
        // Swapoff, loop detach, unmount: after the child and the cgroup are gone.
        drop(self.net.take());
    }
}

/// While a run is under way, SIGINT sets the run's flag instead of ending the process, so the run
/// can remove what it set up; otherwise SIGINT keeps its default action (emulated by
/// `signal-hook`, which owns the process's SIGINT handler once installed).
struct SigintFlag {
    interrupted: Arc<AtomicBool>,
    id: signal_hook::SigId,
}

/// True while no run holds a [`SigintFlag`]: SIGINT then takes its default action.
static SIGINT_DEFAULT: OnceLock<Arc<AtomicBool>> = OnceLock::new();

impl SigintFlag {
    fn install() -> Result<Self, KswapError> {
        let default = match SIGINT_DEFAULT.get() {
            Some(d) => d.clone(),
            None => {
                let d = Arc::new(AtomicBool::new(true));
                signal_hook::flag::register_conditional_default(SIGINT, d.clone())
                    .map_err(KswapError::Signal)?;
                SIGINT_DEFAULT.get_or_init(|| d).clone()
            }
        };
        let interrupted = Arc::new(AtomicBool::new(false));
        let id =
            signal_hook::flag::register(SIGINT, interrupted.clone()).map_err(KswapError::Signal)?;
        default.store(false, Ordering::SeqCst);
        Ok(Self { interrupted, id })
    }

    fn is_set(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }
}

impl Drop for SigintFlag {
    fn drop(&mut self) {
        signal_hook::low_level::unregister(self.id);
        if let Some(d) = SIGINT_DEFAULT.get() {
            d.store(true, Ordering::SeqCst);
        }
    }
}

/// Runs `program args...` inside a memory cgroup limited to `limit_bytes`, with a fresh zram swap
/// device, and returns its output. Everything created is removed before returning.
///
/// # Errors
/// [`KswapError::Unavailable`] if [`available`] fails, [`KswapError::Setup`] if a piece cannot be
/// created, [`KswapError::Child`] if the child cannot run, [`KswapError::Interrupted`] on Ctrl-C.
// The documented entry point for callers wanting zram (see the module docs); the benchmarks
// in this crate call `run_under` with a device.
#[cfg_attr(not(test), expect(dead_code))]
pub fn run_under_swap(
    limit_bytes: u64,
    program: &Path,
    args: &[&str],
) -> Result<SwapRun, KswapError> {
    run_under(limit_bytes, SwapDevice::Zram, program, args)
}

/// How many times [`run_under_retrying`] runs a child again after the cgroup's OOM killer took it.
pub const OOM_RETRIES: u32 = 2;

/// [`run_under`], run again (from scratch, with fresh devices) up to [`OOM_RETRIES`] times when
/// the child is killed by SIGKILL: under heavy swapping a cgroup-v1 memory limit sometimes gives
/// up reclaim and its OOM killer takes the child although swap space is free. Each retry is
/// reported on stderr.
///
/// # Errors
/// As [`run_under`].
pub fn run_under_retrying(
    limit_bytes: u64,
    device: SwapDevice<'_>,
    program: &Path,
    args: &[&str],
) -> Result<SwapRun, KswapError> {
    use std::os::unix::process::ExitStatusExt;
    let mut kills = 0;
    loop {
        let mut run = run_under(limit_bytes, device, program, args)?;
        run.oom_retries = kills;
        if run.output.status.signal() == Some(libc::SIGKILL) && kills < OOM_RETRIES {
            kills += 1;
            eprintln!(
                "  kernel swap child was killed by the cgroup's OOM killer; running it again \
                 ({kills}/{OOM_RETRIES})"
            );
            continue;
        }
        return Ok(run);
    }
}

/// [`run_under_swap`] with a choice of swap device.
///
/// # Errors
/// As [`run_under_swap`].
pub fn run_under(
    limit_bytes: u64,
    device: SwapDevice<'_>,
    program: &Path,
    args: &[&str],
) -> Result<SwapRun, KswapError> {
    device.available().map_err(KswapError::Unavailable)?;
    let others: Vec<String> = other_swaps();
    if !others.is_empty() {
        tracing::warn!("kswap: other swap devices are active and may take pages: {others:?}");
    }
    let sigint = SigintFlag::install()?;
    let mut guard = Guard::default();
    match device {
        SwapDevice::None => {}
        SwapDevice::Zram => {
            guard.create_zram()?;
        }
        SwapDevice::Tcp { server } => {
            guard.net = Some(crate::netswap::NetSwap::start(server)?);
        }
    }
    if sigint.is_set() {
        return Err(KswapError::Interrupted);
    }
    let cg = guard.create_cgroup(limit_bytes)?;
    let procs = cg.join("cgroup.procs");
    let child = Command::new("sh")
        .arg("-c")
        .arg("echo $$ > \"$0\" && exec \"$@\"")
        .arg(&procs)
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(KswapError::Child)?;
    guard.child = Some(child);
    // Read the pipes on threads so a chatty child cannot block on a full pipe.
    let child = guard.child.as_mut().ok_or(KswapError::Interrupted)?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = std::io::Read::read_to_end(o, &mut v);
        }
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = std::io::Read::read_to_end(e, &mut v);
        }
        v
    });
    let (mut zram_peak_bytes, mut zram_peak_compr_bytes) = (0, 0);
    let cache_before = page_cache_bytes();
    let mut page_cache_growth_bytes = 0;
    let status = loop {
        page_cache_growth_bytes =
            page_cache_growth_bytes.max(page_cache_bytes().saturating_sub(cache_before));
        if sigint.is_set() {
            return Err(KswapError::Interrupted);
        }
        let (orig, compr) = guard.zram_stats();
        if orig > zram_peak_bytes {
            (zram_peak_bytes, zram_peak_compr_bytes) = (orig, compr);
        }
        let child = guard.child.as_mut().ok_or(KswapError::Interrupted)?;
        match child.try_wait().map_err(KswapError::Child)? {
            Some(status) => break status,
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    guard.child = None;
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    let peak_bytes = guard.peak();
    let net = guard.net.as_ref().map(crate::netswap::NetSwap::stats);
    Ok(SwapRun {
        net,
        page_cache_growth_bytes,
        output: Output {
            status,
            stdout,
            stderr,
        },
        zram_peak_bytes,
        zram_peak_compr_bytes,
        peak_bytes,
        oom_retries: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests compare the system's swap list before and after: run them one at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn child_runs_inside_the_cgroup_and_everything_is_removed() {
        if let Err(why) = available() {
            crate::test_support::skip_or_fail(&format!("kernel swap: {why}"));
            return;
        }
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let swaps_before = other_swaps();
        let run = run_under_swap(
            32 << 20,
            Path::new("/bin/sh"),
            &["-c", "cat /proc/self/cgroup"],
        )
        .unwrap();
        assert!(run.output.status.success());
        let out = String::from_utf8_lossy(&run.output.stdout);
        let name = format!("farmem-kswap-{}", std::process::id());
        assert!(out.contains(&name), "child not in the cgroup: {out}");
        assert_eq!(other_swaps(), swaps_before, "swap device left behind");
        let cg = out
            .lines()
            .find_map(|l| l.split('/').find(|p| p.starts_with(&name)))
            .unwrap_or_default()
            .to_string();
        assert!(!Path::new(V1_ROOT).join(&cg).exists(), "{cg} left behind");
        assert!(!Path::new(V2_ROOT).join(&cg).exists(), "{cg} left behind");
    }

    /// Outside a cgroup of `run_under`, tightening refuses and writes nothing.
    #[test]
    fn tightening_refuses_a_cgroup_it_did_not_create() {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        if own.contains("farmem-kswap-") {
            return;
        }
        assert!(matches!(
            tighten_own_limit(1 << 20),
            Err(KswapError::Unavailable(_))
        ));
    }

    #[test]
    fn failed_child_start_still_cleans_up() {
        if let Err(why) = available() {
            crate::test_support::skip_or_fail(&format!("kernel swap: {why}"));
            return;
        }
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let swaps_before = other_swaps();
        // `sh` starts but `exec` of a missing program fails: a non-zero exit, not a leak.
        let run = run_under_swap(32 << 20, Path::new("/nonexistent/program"), &[]).unwrap();
        assert!(!run.output.status.success());
        assert_eq!(other_swaps(), swaps_before);
    }
}
