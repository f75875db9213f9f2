//! `failover --parts drain`: the web frontend while one server drains, with the CPU each
//! process spent, and the frontier of drain bandwidth against the application's throughput.
//!
//! 1. The web frontend alone on a two-replica pool of three servers (its throughput and CPU),
//!    then again while server [`super::VICTIM`] drains (the pool's default pacing).
//! 2. For each `--drain-targets` latency target: a fresh server joins, the web frontend runs
//!    alone, then again while the oldest live server drains under that target.
//! 3. A fresh server joins and the oldest live one drains with no application running.
//!
//! Every step records the CPU-seconds of this process (the client: application and mover)
//! and of each server (`/proc/PID/stat`), so a drain's cost reads as CPU-µs per MiB moved
//! beside the bulk `get_many` reference's, and the machine's cores can be added up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use farmem::Backend;
use farmem::backend::pool::MemberState;
use farmem::backend::{MemberId, TcpBackend, TcpConfig};
use serde::Serialize;

use super::{Args, VICTIM, build_web, mib, verify};
use crate::apps_far::FarWeb;
use crate::pool_rig::{PoolRig, ServerProc};
use crate::web;

/// CPU-seconds (user and system) process `pid` has used so far, from `/proc/PID/stat`.
pub(super) fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start with the state (field 3);
    // utime and stime are fields 14 and 15.
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((utime + stime) as f64 / hz.max(1) as f64)
}

/// CPU-seconds of this process and of servers `pids` at one moment.
#[derive(Clone, Debug)]
pub(super) struct CpuMark {
    at: Instant,
    client: f64,
    servers: Vec<f64>,
}

impl CpuMark {
    pub(super) fn now(pids: &[u32]) -> Self {
        Self {
            at: Instant::now(),
            client: cpu_seconds(std::process::id()).unwrap_or(0.0),
            servers: pids
                .iter()
                .map(|&p| cpu_seconds(p).unwrap_or(0.0))
                .collect(),
        }
    }

    /// The CPU used since `self` (the same `pids`).
    pub(super) fn used(&self, pids: &[u32]) -> CpuUse {
        let now = Self::now(pids);
        let servers: Vec<f64> = now
            .servers
            .iter()
            .zip(&self.servers)
            .map(|(b, a)| (b - a).max(0.0))
            .collect();
        let client = (now.client - self.client).max(0.0);
        let wall = now.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let total = client + servers.iter().sum::<f64>();
        CpuUse {
            wall_seconds: wall,
            client_cpu_seconds: client,
            server_cpu_seconds: servers,
            total_cpu_seconds: total,
            cores: total / wall,
        }
    }
}

/// CPU used over an interval.
#[derive(Clone, Debug, Default, Serialize)]
pub(super) struct CpuUse {
    wall_seconds: f64,
    /// This process: the application and the pool's mover (or the bulk reader).
    client_cpu_seconds: f64,
    /// Each server, in the order of the rig's processes (then servers that joined).
    server_cpu_seconds: Vec<f64>,
    pub(super) total_cpu_seconds: f64,
    /// Total CPU-seconds per second.
    cores: f64,
}

/// One drain of the frontier.
#[derive(Debug, Default, Serialize)]
pub(super) struct DrainStep {
    /// Latency target of the pacing (multiple of the baseline); 0 with no application.
    target: f64,
    drained_bytes: u64,
    drain_seconds: f64,
    drain_mib_per_second: f64,
    drain_share_of_bulk: f64,
    /// Web requests per second on the same pool just before the drain.
    web_alone_requests_per_second: f64,
    web_requests_per_second: f64,
    /// Throughput during the drain against the same pool's just before.
    throughput_vs_alone: f64,
    cpu_web_alone: CpuUse,
    cpu_during: CpuUse,
    /// CPU-µs per web request with no drain (client and servers).
    web_cpu_us_per_request: f64,
    /// CPU-µs per MiB moved: the step's CPU less the application's share at its CPU per
    /// request alone (with no application: all of it).
    drain_cpu_us_per_mib: f64,
}

/// The drain part: the first drain (default pacing), the frontier, the drain alone.
#[derive(Debug, Serialize)]
pub(super) struct DrainRun {
    drained_bytes: u64,
    drain_seconds: f64,
    drain_mib_per_second: f64,
    requests_per_second: f64,
    /// Throughput during the drain against the idle reference pool.
    throughput_vs_idle: f64,
    /// Values read back and found right, in each of the two checks (after the drains with the
    /// application, and after the last drain).
    values_verified: u64,
    /// Every drain: the first under the default pacing, one per `--drain-targets`, the last
    /// with no application.
    steps: Vec<DrainStep>,
}

/// A server that joined the pool during the part, and its member backend.
type Joined = (ServerProc, Arc<TcpBackend>);

/// The pool's servers' pids in member order, then those that joined.
fn pids(rig: &PoolRig, joined: &[Joined]) -> Vec<u32> {
    rig.procs
        .iter()
        .chain(joined.iter().map(|(p, _)| p))
        .map(|p| p.pid() as u32)
        .collect()
}

/// Bytes member `ix` holds (a rig member or one that joined).
fn held_bytes(rig: &PoolRig, joined: &[Joined], ix: usize) -> anyhow::Result<u64> {
    let b = match rig.members.get(ix) {
        Some(b) => b,
        None => {
            &joined
                .get(ix - rig.members.len())
                .context("no such member")?
                .1
        }
    };
    Ok(b.stats()?.used_bytes)
}

/// Runs the web frontend from request `*next` on while `work` runs (or for `wa.requests / 2`
/// requests with no `work`); returns requests per second.
fn web_beside<T>(
    data: &FarWeb,
    wa: &web::Args,
    next: &mut u64,
    work: Option<&(dyn Fn() -> T + Sync)>,
) -> anyhow::Result<(f64, Option<T>)> {
    let chunk = (wa.requests / 20).max(wa.threads as u64 * 16);
    let stop = AtomicBool::new(false);
    let served = AtomicU64::new(0);
    let start = *next;
    let (out, client) = std::thread::scope(|s| {
        let client = s.spawn(|| -> anyhow::Result<f64> {
            let t = Instant::now();
            let mut at = start;
            let alone_until = start + wa.requests / 2;
            while !stop.load(Ordering::Relaxed) && (work.is_some() || at < alone_until) {
                web::drive(data, wa, at..at + chunk, true)?;
                at += chunk;
                served.fetch_add(chunk, Ordering::Relaxed);
            }
            Ok(t.elapsed().as_secs_f64())
        });
        let out = work.map(|w| {
            let out = w();
            stop.store(true, Ordering::Relaxed);
            out
        });
        let client = client
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("client thread panicked")));
        (out, client)
    });
    let secs = client?;
    let n = served.load(Ordering::Relaxed);
    *next = start + n;
    Ok((n as f64 / secs.max(1e-9), out))
}

/// A drain of `victim` beside the web frontend (or alone with `data` `None`), measured.
struct Stepper<'a> {
    a: &'a Args,
    rig: &'a PoolRig,
    wa: web::Args,
    bulk: f64,
    next: u64,
}

impl Stepper<'_> {
    fn step(
        &mut self,
        data: Option<&FarWeb>,
        victim: usize,
        target: f64,
        joined: &[Joined],
    ) -> anyhow::Result<DrainStep> {
        let rig = self.rig;
        let pids = pids(rig, joined);
        let drained_bytes = held_bytes(rig, joined, victim)?;
        let mut s = DrainStep {
            target: if data.is_some() { target } else { 0.0 },
            drained_bytes,
            ..DrainStep::default()
        };
        if let Some(data) = data {
            rig.pool.set_repair_pacing(self.a.repair_share, target);
            let mark = CpuMark::now(&pids);
            let (rps, _) = web_beside::<()>(data, &self.wa, &mut self.next, None)?;
            s.cpu_web_alone = mark.used(&pids);
            s.web_alone_requests_per_second = rps;
            s.web_cpu_us_per_request = s.cpu_web_alone.total_cpu_seconds * 1e6
                / (rps * s.cpu_web_alone.wall_seconds).max(1.0);
        }
        let before = rig.pool.pool_stats().repair.bytes_copied;
        let mark = CpuMark::now(&pids);
        let drain = || {
            let t = Instant::now();
            rig.pool
                .drain_member(MemberId(victim))
                .map(|()| t.elapsed().as_secs_f64())
        };
        let secs = match data {
            Some(data) => {
                let (rps, out) = web_beside(data, &self.wa, &mut self.next, Some(&drain))?;
                s.web_requests_per_second = rps;
                s.throughput_vs_alone = rps / s.web_alone_requests_per_second.max(1e-9);
                out.context("the drain did not run")?
            }
            None => drain(),
        }
        .context("draining a member")?;
        s.cpu_during = mark.used(&pids);
        let copied = rig
            .pool
            .pool_stats()
            .repair
            .bytes_copied
            .saturating_sub(before);
        s.drain_seconds = secs;
        s.drain_mib_per_second = mib(copied) / secs.max(1e-9);
        s.drain_share_of_bulk = s.drain_mib_per_second / self.bulk.max(1e-9);
        let app_cpu = s.web_cpu_us_per_request / 1e6 * s.web_requests_per_second * secs;
        s.drain_cpu_us_per_mib =
            (s.cpu_during.total_cpu_seconds - app_cpu).max(0.0) * 1e6 / mib(copied).max(1e-9);
        Ok(s)
    }
}

/// The oldest live member other than `keep`.
fn oldest_live(rig: &PoolRig, keep: usize) -> Option<usize> {
    rig.pool
        .members()
        .iter()
        .position(|m| m.state == MemberState::Live && m.id.0 != keep)
}

/// A fresh server joins the pool; returns its member index.
fn join(a: &Args, rig: &PoolRig, joined: &mut Vec<Joined>) -> anyhow::Result<usize> {
    let p = ServerProc::start()?;
    let cfg = TcpConfig::new([p.addr()])
        .connections_per_server(2)
        .timeout(Duration::from_millis(a.timeout_ms));
    let b = Arc::new(TcpBackend::connect(cfg).context("connecting to a joining server")?);
    let id = rig.pool.add_member(b.clone())?;
    joined.push((p, b));
    Ok(id.0)
}

/// Runs the drain part (see the module docs); `idle_rps` is the idle reference pool's web
/// throughput, `bulk` the bulk rate in MiB/s.
pub(super) fn run(a: &Args, idle_rps: f64, bulk: f64) -> anyhow::Result<DrainRun> {
    eprintln!("replicas 2: web frontend while one server drains");
    // Dropped after the rig's pool.
    let mut joined: Vec<Joined> = Vec::new();
    let rig = a.rig(2)?;
    let wa = a.web_args();
    let data = build_web(&rig, a, &wa)?;
    let mut st = Stepper {
        a,
        rig: &rig,
        wa,
        bulk,
        next: 0,
    };
    let mut steps = vec![st.step(Some(&data), VICTIM, a.repair_target, &joined)?];
    for &target in &a.drain_targets {
        let fresh = join(a, &rig, &mut joined)?;
        let victim = oldest_live(&rig, fresh).context("no member left to drain")?;
        eprintln!("drain of member {victim} at a {target}x latency target");
        steps.push(st.step(Some(&data), victim, target, &joined)?);
    }
    let verified = verify(&data, a)?;
    let fresh = join(a, &rig, &mut joined)?;
    let victim = oldest_live(&rig, fresh).context("no member left to drain")?;
    eprintln!("drain of member {victim} with no application");
    steps.push(st.step(None, victim, 0.0, &joined)?);
    // Every value is checked after the drains with the application and again after the last
    // one; a wrong or missing value fails the run, so both checks count the same values.
    let verified = verified.min(verify(&data, a)?);
    let s0 = &steps[0];
    Ok(DrainRun {
        drained_bytes: s0.drained_bytes,
        drain_seconds: s0.drain_seconds,
        drain_mib_per_second: s0.drain_mib_per_second,
        requests_per_second: s0.web_requests_per_second,
        throughput_vs_idle: s0.web_requests_per_second / idle_rps.max(1e-9),
        values_verified: verified,
        steps,
    })
}

/// Prints the drains and the CPU accounting against the bulk reference (`bulk_cpu_us_per_mib`
/// CPU-µs per MiB at `bulk` MiB/s).
pub(super) fn print(d: &DrainRun, bulk: f64, bulk_cpu_us_per_mib: f64, cores: usize) {
    println!(
        "drain of {:.0} MiB: {:.2} s, {:.0} MiB/s ({:.0}% of bulk); web {:.0} req/s meanwhile \
         ({:.2}x idle); {} values verified",
        mib(d.drained_bytes),
        d.drain_seconds,
        d.drain_mib_per_second,
        d.drain_mib_per_second / bulk.max(1e-9) * 100.0,
        d.requests_per_second,
        d.throughput_vs_idle,
        d.values_verified
    );
    println!(
        "{:>7} {:>8} {:>8} {:>7} {:>9} {:>9} {:>7} {:>10} {:>10} {:>11} {:>11}",
        "target",
        "MiB",
        "MiB/s",
        "of bulk",
        "web alone",
        "web drain",
        "ratio",
        "cores alone",
        "cores drain",
        "web µs/req",
        "drain µs/MiB"
    );
    for s in &d.steps {
        let target = if s.target > 0.0 {
            format!("{:.2}x", s.target)
        } else {
            "no app".to_owned()
        };
        println!(
            "{:>7} {:>8.0} {:>8.0} {:>6.0}% {:>9.0} {:>9.0} {:>6.2}x {:>10.2} {:>10.2} {:>11.0} {:>11.0}",
            target,
            mib(s.drained_bytes),
            s.drain_mib_per_second,
            s.drain_share_of_bulk * 100.0,
            s.web_alone_requests_per_second,
            s.web_requests_per_second,
            s.throughput_vs_alone,
            s.cpu_web_alone.cores,
            s.cpu_during.cores,
            s.web_cpu_us_per_request,
            s.drain_cpu_us_per_mib
        );
    }
    // Does half of bulk beside the application at 0.7x fit in the machine's cores?
    let Some(alone) = d.steps.iter().rev().find(|s| s.target == 0.0) else {
        return;
    };
    let web_cores = d
        .steps
        .iter()
        .filter(|s| s.target > 0.0)
        .map(|s| s.cpu_web_alone.cores)
        .fold(0.0, f64::max);
    let need_drain = bulk * 0.5 * alone.drain_cpu_us_per_mib / 1e6;
    println!(
        "CPU: bulk get_many {bulk_cpu_us_per_mib:.0} µs/MiB; drain alone \
         {:.0} µs/MiB ({:.1}x bulk); half of bulk ({:.0} MiB/s) needs {need_drain:.2} cores, \
         the web frontend at 0.7x {:.2} ({web_cores:.2} alone): {:.2} of {cores} cores",
        alone.drain_cpu_us_per_mib,
        alone.drain_cpu_us_per_mib / bulk_cpu_us_per_mib.max(1e-9),
        bulk * 0.5,
        web_cores * 0.7,
        need_drain + web_cores * 0.7
    );
}
