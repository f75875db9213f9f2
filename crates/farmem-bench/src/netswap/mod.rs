//! Kernel swap to a farmem memory server over TCP (Infiniswap/Fastswap-style), built from what
//! the kernel offers without network block devices: FUSE and the loop driver.
//!
//! [`NetSwap::start`] sets up, in this process (which must not be inside the limited cgroup):
//! - a FUSE file system served by [`daemon`] threads (a `fuser` session); it holds one file, `swap`, of [`DEVICE_BYTES`] whose 4 KiB
//!   pages are objects on the memory server, reached through [`farmem::backend::TcpBackend`];
//!   the file is opened with `FOPEN_DIRECT_IO`, so it has no page cache;
//! - a loop device on that file with direct I/O (`losetup --direct-io=on --sector-size 4096`;
//!   checked through `/sys/block/loopN/loop/dio`), so pages are not cached a second time;
//! - `mkswap` and `swapon -p 32767` on the loop device.
//!
//! The process's memory is locked as it is faulted in (`mlockall(MCL_ONFAULT)`) while the device
//! exists, so neither the daemon nor a memory server living in this process can be swapped out
//! to the device that needs them to swap in. Dropping the [`NetSwap`] undoes everything in
//! reverse order (swapoff, loop detach, connection abort, unmount, page objects freed, unlock).
//!
//! The FUSE side is a `fuser` session (`fuser` 0.18, built without libfuse) over a `/dev/fuse`
//! connection this module mounts itself with mount(2), so the teardown below keeps its order
//! (swapoff, loop detach, unmount, connection abort through fusectl) and can leave the daemon
//! serving when swapoff keeps failing.
//!
//! If the process is killed with SIGKILL, the kernel aborts the FUSE connection (I/O to the
//! device then fails) and the pieces stay: remove them with `swapoff /dev/loopN; losetup -d
//! /dev/loopN; umount -l /tmp/farmem-netswap-*` (`losetup -a` names the device).
//!
//! [`crate::kswap::run_under`] with [`crate::kswap::SwapDevice::Tcp`] runs a workload under a
//! memory cgroup with this device:
//!
//! ```no_run
//! # fn demo(server: &str) -> Result<(), Box<dyn std::error::Error>> {
//! use crate::kswap::{run_under, SwapDevice};
//! if let Err(why) = crate::netswap::available() {
//!     println!("kernel swap over TCP: skipped ({why})");
//!     return Ok(());
//! }
//! let exe = std::env::current_exe()?;
//! let run = run_under(64 << 20, SwapDevice::Tcp { server }, &exe, &["paging", "--kswap-child"])?;
//! if let Some(net) = run.net {
//!     println!("{} pages swapped out to {server}", net.daemon.pages_written);
//! }
//! # Ok(()) }
//! ```

mod check;
pub mod daemon;
mod sys;

pub use sys::lock_memory;

pub use check::{Args, run};

use std::fs::{self, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use farmem::Backend;
use farmem::backend::{TcpBackend, TcpConfig};

use crate::kswap::KswapError;
use daemon::{Daemon, DaemonStats, PageStore};

/// Size of the swap device (only pages actually swapped out use memory on the server).
pub const DEVICE_BYTES: u64 = 8 << 30;
/// FUSE worker threads (and TCP connections to the server): the kernel keeps this many swap
/// requests in flight when it can; on a busy 2-core machine 16 wrote pages faster than 4.
pub const WORKERS: usize = 16;

/// Checks that network swap runs are possible here (root, memory cgroup, FUSE, loop devices,
/// the tools).
///
/// # Errors
/// The reason when they are not.
pub fn available() -> Result<(), String> {
    crate::kswap::available_common()?;
    if !Path::new("/dev/fuse").exists() {
        return Err("no /dev/fuse (FUSE not available)".into());
    }
    let fs = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("fuse"))
    {
        return Err("the kernel has no fuse file system".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err("no loop devices (/dev/loop-control)".into());
    }
    if !crate::kswap::has_tool("losetup") {
        return Err("`losetup` not found".into());
    }
    Ok(())
}

/// What a network swap device did.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct NetSwapStats {
    /// The FUSE daemon's counters.
    pub daemon: DaemonStats,
    /// Payload bytes the memory server received while the device existed (all clients).
    pub server_bytes_written: u64,
}

/// A swap device on a memory server; see the [module docs](self). Dropping it removes it.
pub struct NetSwap {
    store: Arc<PageStore>,
    backend: Arc<TcpBackend>,
    server_written_before: u64,
    daemon: Option<Daemon>,
    mountpoint: Option<PathBuf>,
    mounted: bool,
    conn: Option<u64>,
    loop_dev: Option<PathBuf>,
    swap_on: Option<PathBuf>,
    locked: bool,
}

fn setup_err(what: &str, e: impl std::fmt::Display) -> KswapError {
    KswapError::Setup(format!("{what}: {e}"))
}

fn run_tool(cmd: &mut Command) -> Result<String, KswapError> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| setup_err(&format!("{cmd:?}"), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(KswapError::Setup(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl NetSwap {
    /// Creates the device with its pages on the memory server at `server` (`host:port`) and
    /// turns swapping to it on.
    ///
    /// # Errors
    /// [`KswapError::Unavailable`] when [`available`] fails, [`KswapError::Setup`] when a step
    /// fails (whatever was created is removed again).
    pub fn start(server: &str) -> Result<Self, KswapError> {
        available().map_err(KswapError::Unavailable)?;
        let backend = TcpBackend::connect(
            TcpConfig::new([server.to_owned()])
                .timeout(Duration::from_secs(10))
                .connections_per_server(WORKERS),
        )
        .map_err(|e| setup_err(&format!("connecting to memory server {server}"), e))?;
        let backend = Arc::new(backend);
        let server_written_before = backend
            .stats()
            .map_err(|e| setup_err("memory server stats", e))?
            .bytes_written;
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Object ids: "ns" tag, then process and run, then 28 bits of page index (1 TiB).
        let base = (0x6e73u64 << 48)
            | ((u64::from(std::process::id()) & 0xffff) << 32)
            | ((run & 0xf) << 28);
        let dyn_backend: Arc<dyn Backend> = backend.clone();
        let store = Arc::new(PageStore::new(dyn_backend, base, DEVICE_BYTES));
        let mut me = Self {
            store,
            backend,
            server_written_before,
            daemon: None,
            mountpoint: None,
            mounted: false,
            conn: None,
            loop_dev: None,
            swap_on: None,
            locked: false,
        };
        match sys::lock_memory() {
            Ok(()) => me.locked = true,
            Err(e) => tracing::warn!("netswap: mlockall failed ({e}); continuing unlocked"),
        }
        let mnt = std::env::temp_dir().join(format!("farmem-netswap-{}-{run}", std::process::id()));
        fs::create_dir(&mnt).map_err(|e| setup_err(&format!("creating {}", mnt.display()), e))?;
        me.mountpoint = Some(mnt.clone());
        let fuse = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .map_err(|e| setup_err("opening /dev/fuse", e))?;
        sys::mount_fuse(fuse.as_fd(), &mnt)
            .map_err(|e| setup_err(&format!("mounting FUSE on {}", mnt.display()), e))?;
        me.mounted = true;
        me.daemon = Some(
            Daemon::start(fuse, me.store.clone(), WORKERS)
                .map_err(|e| setup_err("starting FUSE workers", e))?,
        );
        // The fusectl connection id is the mount's device number (kernel encoding).
        if let Ok(md) = fs::metadata(&mnt) {
            let dev = md.dev();
            me.conn = Some((libc::major(dev) as u64) << 20 | libc::minor(dev) as u64);
        }
        let file = mnt.join(std::str::from_utf8(daemon::FILE_NAME).unwrap_or("swap"));
        let dev = run_tool(
            Command::new("losetup")
                .args([
                    "--find",
                    "--show",
                    "--direct-io=on",
                    "--sector-size",
                    "4096",
                ])
                .arg(&file),
        )?;
        let dev = PathBuf::from(dev);
        me.loop_dev = Some(dev.clone());
        let name = dev
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dio = fs::read_to_string(format!("/sys/block/{name}/loop/dio")).unwrap_or_default();
        if dio.trim() != "1" {
            return Err(KswapError::Setup(format!(
                "{} did not enable direct I/O on the FUSE file (dio={:?}): pages would be cached \
                 twice",
                dev.display(),
                dio.trim()
            )));
        }
        run_tool(Command::new("mkswap").arg(&dev))?;
        run_tool(Command::new("swapon").args(["-p", "32767"]).arg(&dev))?;
        me.swap_on = Some(dev);
        Ok(me)
    }

    /// Counters so far.
    pub fn stats(&self) -> NetSwapStats {
        let now = self.backend.stats().map(|s| s.bytes_written).unwrap_or(0);
        NetSwapStats {
            daemon: self.store.stats(),
            server_bytes_written: now.saturating_sub(self.server_written_before),
        }
    }

    fn abort_connection(&self) {
        if let Some(conn) = self.conn {
            let _ = fs::write(format!("/sys/fs/fuse/connections/{conn}/abort"), "1");
        }
    }
}

/// How many times teardown tries `swapoff`, a second apart.
const SWAPOFF_TRIES: usize = 30;

impl Drop for NetSwap {
    fn drop(&mut self) {
        if let Some(dev) = self.swap_on.take() {
            // swapoff fails (ENOMEM) while the pages it must bring back do not fit; the child
            // that used them has exited, so memory frees up: retry for a while.
            let mut last = None;
            for attempt in 0..SWAPOFF_TRIES {
                match run_tool(Command::new("swapoff").arg(&dev)) {
                    Ok(_) => {
                        last = None;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!("netswap: swapoff attempt {}: {e}", attempt + 1);
                        last = Some(e);
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            if let Some(e) = last {
                // The kernel still has pages on this device: removing the loop device, the
                // mount or the pages on the server would lose them. Leave everything serving
                // for as long as this process lives and tell the operator.
                tracing::error!(
                    "netswap: {} is still an active swap device ({e}); leaving it, its FUSE \
                     daemon and its pages in place. Run `swapoff {}` before this process exits.",
                    dev.display(),
                    dev.display()
                );
                eprintln!(
                    "netswap: could not swapoff {}; the swap device is left in place, run \
                     `swapoff {}`",
                    dev.display(),
                    dev.display()
                );
                self.loop_dev = None;
                self.mounted = false;
                self.mountpoint = None;
                if let Some(d) = self.daemon.take() {
                    std::mem::forget(d);
                }
                return;
            }
        }
        if let Some(dev) = self.loop_dev.take() {
            // The loop driver may still be releasing the device right after swapoff: retry.
            let mut last = None;
            for _ in 0..50 {
                match run_tool(Command::new("losetup").arg("-d").arg(&dev)) {
                    Ok(_) => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some(e) = last {
                tracing::warn!("netswap: {e}");
            }
        }
        if let Some(mnt) = &self.mountpoint
            && self.mounted
        {
            if let Err(e) = sys::unmount_lazy(mnt) {
                tracing::warn!("netswap: unmounting {}: {e}", mnt.display());
            }
            self.mounted = false;
        }
        if let Some(mut d) = self.daemon.take() {
            // Unmounting ends the connection once the file is closed; aborting it wakes the
            // workers even if something still holds the file.
            if !d.join(Duration::from_millis(500)) {
                self.abort_connection();
                if !d.join(Duration::from_secs(2)) {
                    tracing::warn!("netswap: FUSE workers did not stop; left detached");
                }
            }
        }
        if let Some(mnt) = self.mountpoint.take() {
            let _ = fs::remove_dir(&mnt);
        }
        if let Err(e) = self.store.free_all() {
            tracing::warn!("netswap: freeing swapped pages on the memory server: {e}");
        }
        if self.locked {
            sys::unlock_memory();
        }
    }
}
