//! The `coded` part of `farmem-bench failover`: erasure-coded pools of `k + m` loopback
//! servers.
//!
//! For each scheme: the web frontend and the taxi analysis (as for replicas: throughput, server
//! memory per application byte); server memory per live application byte over a long run of
//! overwrites and frees (sampled during the run and after compaction); and the latency of
//! degraded reads (8 KiB objects whose server was killed with SIGKILL, decoded from `k` others)
//! against normal reads of the same objects before the kill. With exactly `k + m` servers a
//! lost span has nowhere to be rebuilt, so every read of the dead server's objects stays
//! degraded while it is measured.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use farmem::backend::{MemberId, Redundancy};
use farmem::{Backend, ObjectId};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use super::{Args, ReplicaRun, scheme_run};
use crate::pool_rig::PoolRig;

/// Parses `K+M`.
///
/// # Errors
/// Anything else.
pub fn parse_scheme(s: &str) -> Result<(u8, u8), String> {
    let (k, m) = s
        .split_once('+')
        .ok_or_else(|| format!("expected K+M, got {s:?}"))?;
    let k: u8 = k.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    let m: u8 = m.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    if k == 0 || m == 0 {
        return Err(format!("{s:?}: k and m must be at least 1"));
    }
    Ok((k, m))
}

/// The coded-only figures of one scheme.
#[derive(Debug, Serialize)]
pub struct CodedRun {
    scheme: String,
    servers: usize,
    /// Bytes written over the churn run, as a multiple of the live bytes at its end.
    churn_written_per_live_byte: f64,
    churn_live_bytes: u64,
    /// Server bytes per live application byte: the largest sample during the run, and after a
    /// final maintenance pass (everything sealed, dead space compacted).
    churn_used_per_live_byte_max: f64,
    churn_used_per_live_byte_end: f64,
    normal_read_p50_us: f64,
    normal_read_p99_us: f64,
    degraded_read_p50_us: f64,
    degraded_read_p99_us: f64,
    degraded_vs_normal_p50: f64,
    degraded_reads: u64,
    values_verified: u64,
}

fn bytes_of(id: ObjectId, ver: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (id as usize * 31 + ver as usize * 7 + i) as u8)
        .collect()
}

fn pct(sorted: &[Duration], p: usize) -> f64 {
    sorted
        .get(sorted.len().saturating_sub(1) * p / 100)
        .map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// Runs one scheme.
///
/// # Errors
/// A failed run, an answer that differs from the all-local run, or a lost value.
pub(super) fn run(
    a: &Args,
    k: u8,
    m: u8,
    local_digest: u64,
    local_taxi: &str,
) -> anyhow::Result<(ReplicaRun, CodedRun)> {
    let scheme = format!("{k}+{m}");
    let servers = usize::from(k) + usize::from(m);
    let start = || {
        PoolRig::start_with(
            servers,
            Redundancy::coded(k, m),
            Duration::from_millis(a.timeout_ms),
            (a.repair_mib_s > 0).then_some(a.repair_mib_s << 20),
            a.server_copies,
            a.repair_share,
        )
    };
    eprintln!("coded {scheme}: web frontend and taxi analysis ({servers} servers)");
    let apps = scheme_run(a, &start()?, 0, scheme.clone(), local_digest, local_taxi)?;

    eprintln!("coded {scheme}: memory over a run with overwrites and frees");
    let rig = start()?;
    let pool = &rig.pool;
    let mut rng = SmallRng::seed_from_u64(17);
    let live_target: u64 = if a.quick { 8 << 20 } else { 64 << 20 };
    let ids = live_target / (8 << 10);
    let mut model: HashMap<ObjectId, (u32, usize)> = HashMap::new();
    let (mut written, mut ver, mut max_ratio) = (0u64, 0u32, 0f64);
    let rounds = (ids * 6 / 48) as usize;
    for round in 0..rounds {
        let batch: Vec<(ObjectId, u32, Vec<u8>)> = (0..48)
            .map(|_| {
                ver += 1;
                let id = rng.random_range(0..ids);
                let len = rng.random_range(1024..16 << 10);
                (id, ver, bytes_of(id, ver, len))
            })
            .collect();
        let items: Vec<(ObjectId, &[u8])> = batch.iter().map(|(i, _, v)| (*i, &v[..])).collect();
        pool.put_many(&items)?;
        for (id, ver, v) in &batch {
            written += v.len() as u64;
            model.insert(*id, (*ver, v.len()));
        }
        let frees: Vec<ObjectId> = (0..12).map(|_| rng.random_range(0..ids)).collect();
        pool.free(&frees)?;
        for id in frees {
            model.remove(&id);
        }
        if round % 64 == 63 && round > rounds / 4 {
            let live: u64 = model.values().map(|v| v.1 as u64).sum();
            max_ratio = max_ratio.max(rig.used_bytes() as f64 / live.max(1) as f64);
        }
    }
    for _ in 0..20 {
        if pool.repair_now() == 0 {
            break;
        }
    }
    let live: u64 = model.values().map(|v| v.1 as u64).sum();
    let end_ratio = rig.used_bytes() as f64 / live.max(1) as f64;
    let mut verified = 0;
    for (&id, &(v, len)) in &model {
        anyhow::ensure!(
            pool.get(id)? == bytes_of(id, v, len),
            "{scheme}: object {id} wrong after the churn"
        );
        verified += 1;
    }

    eprintln!("coded {scheme}: degraded reads");
    let rig = start()?;
    let pool = &rig.pool;
    let n = 4000u64;
    let obj = |id: ObjectId| bytes_of(id, 1, 8 << 10);
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        let vals: Vec<Vec<u8>> = chunk.iter().map(|&i| obj(i)).collect();
        let items: Vec<(ObjectId, &[u8])> =
            chunk.iter().zip(&vals).map(|(&i, v)| (i, &v[..])).collect();
        pool.put_many(&items)?;
    }
    for _ in 0..20 {
        if pool.repair_now() == 0 {
            break;
        }
    }
    const VICTIM: usize = 1;
    let on_victim: Vec<ObjectId> = (0..n)
        .filter(|&i| pool.locations(i).is_some_and(|l| l == [MemberId(VICTIM)]))
        .collect();
    let time = |ids: &[ObjectId]| -> anyhow::Result<Vec<Duration>> {
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            let t = Instant::now();
            let v = pool.get(id)?;
            out.push(t.elapsed());
            anyhow::ensure!(v == obj(id), "{scheme}: object {id} wrong");
        }
        out.sort_unstable();
        Ok(out)
    };
    // Warm, then the same objects before and after their server dies.
    time(&on_victim)?;
    let normal = time(&on_victim)?;
    rig.procs[VICTIM].signal(libc::SIGKILL)?;
    let _ = pool.get(on_victim[0]);
    crate::pool_rig::wait_down(pool, VICTIM);
    let before = pool.coded_stats().map_or(0, |s| s.degraded_reads);
    let degraded = time(&on_victim)?;
    let degraded_reads = pool.coded_stats().map_or(0, |s| s.degraded_reads) - before;
    verified += 2 * on_victim.len() as u64;
    let run = CodedRun {
        scheme,
        servers,
        churn_written_per_live_byte: written as f64 / live.max(1) as f64,
        churn_live_bytes: live,
        churn_used_per_live_byte_max: max_ratio,
        churn_used_per_live_byte_end: end_ratio,
        normal_read_p50_us: pct(&normal, 50),
        normal_read_p99_us: pct(&normal, 99),
        degraded_read_p50_us: pct(&degraded, 50),
        degraded_read_p99_us: pct(&degraded, 99),
        degraded_vs_normal_p50: pct(&degraded, 50) / pct(&normal, 50).max(1e-9),
        degraded_reads,
        values_verified: verified,
    };
    Ok((apps, run))
}

/// Prints one scheme's coded-only figures.
pub(super) fn print(c: &CodedRun) {
    println!(
        "coded {} ({} servers): memory per live byte over a run with frees (written {:.1}x live) \
         max {:.2}, after compaction {:.2}; reads of a killed server's 8 KiB objects p50 {:.0} us \
         (p99 {:.0}) vs {:.0} us (p99 {:.0}) before: {:.2}x ({} decoded); {} values verified",
        c.scheme,
        c.servers,
        c.churn_written_per_live_byte,
        c.churn_used_per_live_byte_max,
        c.churn_used_per_live_byte_end,
        c.degraded_read_p50_us,
        c.degraded_read_p99_us,
        c.normal_read_p50_us,
        c.normal_read_p99_us,
        c.degraded_vs_normal_p50,
        c.degraded_reads,
        c.values_verified
    );
}
