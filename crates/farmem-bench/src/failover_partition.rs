//! `failover`: a real network partition (root only) beside the SIGSTOP stand-in.
//!
//! The failing server runs in its own network namespace behind a veth pair (the namespace code
//! is the tests' `support/netns.rs`, shared by path); the other two run on loopback. 40% into
//! the timed web run the host end of the pair goes down: the server is silent, not gone (no
//! reset, no refused connection), so only the heartbeat notices. After the run the link comes
//! back up; every value is read back. The namespace, the pair and the route are removed also when
//! the run fails.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use farmem::Backend;
use farmem::backend::{PoolBackend, PoolConfig, Redundancy, TcpBackend, TcpConfig};

use super::{Args, FailureRun, Measure, VICTIM, failure_under_load};
use crate::pool_rig::{PoolRig, ServerProc, Timed};

#[path = "../../farmem-server/tests/support/netns.rs"]
#[allow(dead_code)]
mod netns;

/// The name [`FailureRun::signal`] carries for this run.
pub(super) const NAME: &str = "partition";

/// A `farmem-bench serve` child inside a network namespace; killed when dropped.
struct NsServer {
    child: Child,
    addr: String,
}

impl NsServer {
    fn start(ns: &netns::NetNs) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the farmem-bench binary")?;
        let handle = std::fs::File::open(format!("/run/netns/{}", ns.name))
            .with_context(|| format!("opening network namespace {}", ns.name))?;
        let fd = handle.as_raw_fd();
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--listen", &format!("{}:0", ns.ns_ip())])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: the closure runs in the child between fork and exec and makes one
        // async-signal-safe system call on a descriptor the parent keeps open until the spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let mut child = cmd
            .spawn()
            .context("starting a memory server in the namespace")?;
        drop(handle);
        let mut line = String::new();
        let read = child
            .stdout
            .take()
            .context("the server's stdout")
            .and_then(|o| Ok(BufReader::new(o).read_line(&mut line)?));
        match (read, line.trim().strip_prefix("listening on ")) {
            (Ok(_), Some(addr)) => Ok(Self {
                addr: addr.to_owned(),
                child,
            }),
            (r, _) => {
                let _ = child.kill();
                let _ = child.wait();
                r?;
                anyhow::bail!("the namespaced server printed {line:?} instead of its address")
            }
        }
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the web frontend with two replicas while server [`VICTIM`] is partitioned away; `None`
/// (with the reason printed) where namespaces cannot be made.
///
/// # Errors
/// A failed run, a wrong response or a lost value, a namespace command that fails.
pub(super) fn run(
    a: &Args,
    expected_secs: f64,
    local_digest: u64,
    bulk_mib_s: f64,
) -> anyhow::Result<Option<FailureRun>> {
    if let Some(why) = netns::unavailable() {
        println!("partition: skipped ({why})");
        return Ok(None);
    }
    eprintln!("replicas 2: web frontend, one server partitioned (link down) 40% into the run");
    // Dropped in reverse: the rig, then the servers, then the namespace.
    let ns = netns::NetNs::create().map_err(|e| anyhow::anyhow!("network namespace: {e}"))?;
    let behind = NsServer::start(&ns)?;
    let locals = [ServerProc::start()?, ServerProc::start()?];
    let addrs = [locals[0].addr(), behind.addr.as_str(), locals[1].addr()];
    debug_assert_eq!(addrs[VICTIM], behind.addr);
    let mut members = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let cfg = TcpConfig::new([addr])
            .connections_per_server(2)
            .timeout(Duration::from_millis(a.timeout_ms));
        members.push(Arc::new(TcpBackend::connect(cfg).with_context(|| {
            format!("connecting to the memory server at {addr}")
        })?));
    }
    let cfg = PoolConfig::new(Redundancy::replicas(2))
        .repair_rate((a.repair_mib_s > 0).then_some(a.repair_mib_s << 20))
        .maintenance_interval(Duration::from_millis(100));
    let list = members
        .iter()
        .map(|m| m.clone() as Arc<dyn Backend>)
        .collect();
    let pool = Arc::new(PoolBackend::new(list, cfg)?);
    // The servers are owned here, not by the rig (one of them is not a `ServerProc`).
    let rig = PoolRig {
        timed: Arc::new(Timed::new(pool.clone())),
        pool,
        members,
        procs: Vec::new(),
    };
    let m = Measure {
        name: NAME,
        expected_secs,
        local_digest,
        bulk_mib_s,
    };
    let cut = || {
        let at = Instant::now();
        ns.link_down()
            .map_err(|e| anyhow::anyhow!("partition: {e}"))?;
        Ok((at, rig.wait_redundant(VICTIM, at, Duration::from_secs(300))))
    };
    let heal = || {
        ns.heal()
            .map_err(|e| anyhow::anyhow!("healing the link: {e}"))
    };
    let run = failure_under_load(a, &rig, &m, cut, heal)?;
    drop(rig);
    drop(locals);
    drop(behind);
    drop(ns);
    Ok(Some(run))
}
