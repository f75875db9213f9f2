//! The `coded` part of `farmem-bench failover`: erasure-coded pools of `k + m` loopback
//! servers.
//!
//! For each scheme: the web frontend and the taxi analysis (as for replicas: throughput, server
//! memory per application byte); server memory per live application byte over a long run of
//! overwrites and frees (sampled during the run and after compaction); and the latency of
//! degraded reads (8 KiB objects whose server was killed with SIGKILL, decoded from `k` others)
//! against normal reads of the same objects before the kill. With exactly `k + m` servers a
//! lost data span has no member outside its stripe: the maintenance thread rebuilds it onto a
//! *substitute* member of the stripe (repair-ahead), racing the reads, so the reads after the
//! kill are counted in three kinds (decoded, served from a range an earlier read decoded,
//! served by the substitute) and the same objects are read again once every span has its
//! substitute; then a server is added and the time and bytes of the repair onto it are
//! measured (repair bandwidth). Memory is reported twice: as the servers count it
//! (payload plus per-object overhead) and as resident memory above the servers' own.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use farmem::backend::pool::{CodingOptions, MemberState};
use farmem::backend::{MemberId, PoolConfig, Redundancy};
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
#[derive(Debug, Default, Serialize)]
pub struct CodedRun {
    scheme: String,
    servers: usize,
    /// Memory over a long run of overwrites and frees.
    churn: Churn,
    /// The same run on a pool of as many servers without redundancy: what the servers' own
    /// storage costs per live byte.
    churn_without_redundancy: Churn,
    normal_read_p50_us: f64,
    normal_read_p99_us: f64,
    degraded_read_p50_us: f64,
    degraded_read_p99_us: f64,
    degraded_vs_normal_p50: f64,
    /// Reads of the dead server's objects timed after the kill.
    degraded_read_count: u64,
    /// The degraded reads that decoded (the others were served from a window decoded for a
    /// neighbour).
    decoding_read_p50_us: f64,
    decoding_read_p99_us: f64,
    decoding_vs_normal_p50: f64,
    /// Normal reads of a live server's 8 KiB objects, one between each two degraded reads (the
    /// same moments' load and rebuild traffic), and the degraded and decoding reads against
    /// them.
    reference_read_p50_us: f64,
    reference_read_p99_us: f64,
    degraded_vs_reference_p50: f64,
    decoding_vs_reference_p50: f64,
    /// Where the decoding reads' time went, as the pool counts it (means): fetching the `k`
    /// ranges, decoding them, and all of the read from the first request sent.
    decoding_fetch_mean_us: f64,
    decoding_decode_mean_us: f64,
    decoding_engine_mean_us: f64,
    /// The decoding reads that started while a rebuild was fetching or writing spans.
    decoding_during_rebuild: u64,
    degraded_reads: u64,
    /// Reads after the kill served by a substitute (already rebuilt by repair-ahead).
    substituted_reads: u64,
    /// Time from the kill being noticed until every data span of the dead server had a
    /// substitute.
    repair_ahead_seconds: f64,
    /// The same objects read once repair-ahead finished (all served by substitutes).
    after_repair_ahead_p50_us: f64,
    after_repair_ahead_p99_us: f64,
    after_repair_ahead_vs_normal_p50: f64,
    /// A server added after the kill: bytes the rebuild wrote to restore full redundancy, and
    /// how long it took.
    repair_bytes: u64,
    repair_seconds: f64,
    repair_mib_per_s: f64,
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

/// Server memory over a long run of overwrites and frees.
#[derive(Debug, Default, Serialize)]
pub struct Churn {
    /// Bytes written over the run, as a multiple of the live bytes at its end.
    written_per_live_byte: f64,
    live_bytes: u64,
    /// Server bytes (payload plus per-object overhead, as the servers count them) per live
    /// application byte: the largest sample during the run (every 16 batches once a quarter of
    /// the run is done), and after a final maintenance pass.
    used_per_live_byte_max: f64,
    used_per_live_byte_end: f64,
    /// The servers' resident memory above what they held before the run (idle, connected: code,
    /// runtime and connections are no per-byte cost), per live byte.
    rss_per_live_byte_max: f64,
    rss_per_live_byte_end: f64,
    /// The same, two seconds after the run (the servers idle meanwhile).
    rss_per_live_byte_settled: f64,
    /// The servers' whole resident memory per live byte, at the end and two seconds later.
    rss_raw_per_live_byte_end: f64,
    rss_raw_per_live_byte_settled: f64,
    /// The servers' resident memory before the run, in all.
    rss_base_bytes: u64,
    /// Dead bytes awaiting compaction and parity bytes at the end, per live byte (coded pools).
    dead_per_live_byte_end: f64,
    parity_per_live_byte_end: f64,
    /// At the end (coded pools): sealed stripes with fewer than `m` parity spans, the share of
    /// the live bytes in them, the parity sets written short over the run, and the bytes of
    /// full stripes the client still held unsealed.
    short_parity_stripes: u64,
    short_parity_live_share: f64,
    sealed_short: u64,
    unsealed_bytes: u64,
    /// Members failed over during the run (a server that missed the request timeout, e.g. on a
    /// loaded machine): with fewer than `k + m` left, stripes hold less than `m` parity.
    members_down: usize,
    /// Of them, those whose server answered again and rejoined the pool (as new members).
    rejoins: u64,
    /// Members failed over whose server is still out of the pool at the end.
    members_out: usize,
    /// Stripes compacted (coded pools).
    compacted: u64,
    #[serde(skip)]
    verified: u64,
}

/// Batches of 48 objects of 1-16 KiB over `mib` MiB worth of ids (overwrites), each followed by
/// 12 frees, until 6x the ids' bytes were written; every live object checked at the end.
fn churn(rig: &PoolRig, mib: u64, scheme: &str) -> anyhow::Result<Churn> {
    let pool = &rig.pool;
    let rss_base = rig.rss_bytes();
    let smaps_base = rig.smaps(&[]);
    let mut rng = SmallRng::seed_from_u64(17);
    let ids = (mib << 20) / (8 << 10);
    let mut model: HashMap<ObjectId, (u32, usize)> = HashMap::new();
    let (mut written, mut ver, mut max_used, mut max_rss) = (0u64, 0u32, 0f64, 0f64);
    let live_of = |model: &HashMap<ObjectId, (u32, usize)>| -> u64 {
        model.values().map(|v| v.1 as u64).sum::<u64>().max(1)
    };
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
        if round % 16 == 15 && round > rounds / 4 {
            let live = live_of(&model) as f64;
            max_used = max_used.max(rig.used_bytes() as f64 / live);
            max_rss = max_rss.max(rig.rss_bytes().saturating_sub(rss_base) as f64 / live);
        }
    }
    let live = live_of(&model);
    max_used = max_used.max(rig.used_bytes() as f64 / live as f64);
    let compacted = pool.coded_stats().map_or(0, |s| s.compacted);
    for _ in 0..20 {
        if pool.repair_now() == 0 {
            break;
        }
    }
    let end_used = rig.used_bytes() as f64 / live as f64;
    let end_raw = rig.rss_bytes();
    let end_rss = end_raw.saturating_sub(rss_base) as f64 / live as f64;
    std::thread::sleep(Duration::from_secs(2));
    let settled_raw = rig.rss_bytes();
    let settled_rss = settled_raw.saturating_sub(rss_base) as f64 / live as f64;
    // Where the counted bytes go (coded pools): dead objects awaiting compaction and parity
    // (the ideal is m/k of the live bytes; more when it covers dead bytes and padded spans).
    let stats = pool.coded_stats().unwrap_or_default();
    let (dead, parity) = (
        stats.dead_bytes as f64 / live as f64,
        stats.parity_bytes as f64 / live as f64,
    );
    let short_share = stats.short_parity_live_bytes as f64 / live as f64;
    let all = pool.members();
    let members_down = all.iter().filter(|m| m.state == MemberState::Down).count();
    let members_out = all
        .iter()
        .filter(|m| m.state == MemberState::Down && m.rejoined_as.is_none())
        .count();
    let rejoins = pool.rejoins();
    if pool.coded_stats().is_some() {
        eprintln!(
            "{scheme}: at the end: {members_down} members failed over ({rejoins} rejoined, {members_out} still out), {} stripes ({} unsealed, {:.1} MiB held in the client), {} sealed short of parity holding {:.3} of the live bytes ({} parity sets written short over the run), coded live {:.1} MiB of {:.1} MiB",
            stats.stripes,
            stats.unsealed,
            stats.unsealed_bytes as f64 / (1 << 20) as f64,
            stats.short_parity,
            short_share,
            stats.sealed_short,
            stats.live_bytes as f64 / (1 << 20) as f64,
            live as f64 / (1 << 20) as f64,
        );
    }
    eprintln!(
        "{scheme}: at the end, per live byte: dead {dead:.3}, parity {parity:.3}, counted {end_used:.3}, resident above the idle servers' {end_rss:.3} ({settled_rss:.3} 2 s later), whole resident {:.3} ({:.3}) (servers at {} MiB before the run)",
        end_raw as f64 / live as f64,
        settled_raw as f64 / live as f64,
        rss_base >> 20
    );
    let counted: Vec<String> = all
        .iter()
        .filter(|m| m.state.serves())
        .filter_map(|m| pool.member_stats(m.id).ok())
        .map(|s| format!("{:.2}", s.used_bytes as f64 / f64::from(1 << 20)))
        .collect();
    eprintln!(
        "{scheme}: counted MiB per serving member: {}",
        counted.join(" ")
    );
    for (i, (now, base)) in rig.smaps(&smaps_base).iter().zip(&smaps_base).enumerate() {
        if let (Some(now), Some(base)) = (now, base) {
            eprintln!("{scheme}: server {i} resident growth: {}", now.growth(base));
        }
    }
    let mut verified = 0;
    for (&id, &(v, len)) in &model {
        anyhow::ensure!(
            pool.get(id)? == bytes_of(id, v, len),
            "{scheme}: object {id} wrong after the churn"
        );
        verified += 1;
    }
    Ok(Churn {
        written_per_live_byte: written as f64 / live as f64,
        live_bytes: live,
        used_per_live_byte_max: max_used,
        used_per_live_byte_end: end_used,
        rss_per_live_byte_max: max_rss.max(end_rss),
        rss_per_live_byte_end: end_rss,
        rss_per_live_byte_settled: settled_rss,
        rss_raw_per_live_byte_end: end_raw as f64 / live as f64,
        rss_raw_per_live_byte_settled: settled_raw as f64 / live as f64,
        rss_base_bytes: rss_base,
        dead_per_live_byte_end: dead,
        parity_per_live_byte_end: parity,
        short_parity_stripes: stats.short_parity,
        short_parity_live_share: short_share,
        sealed_short: stats.sealed_short,
        unsealed_bytes: stats.unsealed_bytes,
        members_down,
        rejoins,
        members_out,
        compacted,
        verified,
    })
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
    let step = |s: &str| a.coded_steps.iter().any(|x| x == s);
    let cfg = |redundancy: Redundancy| {
        PoolConfig::new(redundancy)
            .repair_rate((a.repair_mib_s > 0).then_some(a.repair_mib_s << 20))
            .maintenance_interval(Duration::from_millis(100))
            .server_to_server(a.server_copies)
            .repair_share(a.repair_share)
            .coding({
                let mut c = CodingOptions::default().compact_inline(a.coded_compaction == "inline");
                if let Some(kib) = a.coded_span_kib {
                    c = c.span_bytes(kib << 10);
                }
                match a.coded_slack {
                    Some(s) => c.compact_slack(s),
                    None => c,
                }
            })
            .code_from(a.code_from)
    };
    let timeout = Duration::from_millis(a.timeout_ms);
    let start = || PoolRig::start_config(servers, timeout, cfg(Redundancy::coded(k, m)));
    let apps = if step("apps") {
        eprintln!("coded {scheme}: web frontend and taxi analysis ({servers} servers)");
        scheme_run(a, &start()?, 0, scheme.clone(), local_digest, local_taxi)?
    } else {
        ReplicaRun {
            scheme: scheme.clone(),
            ..ReplicaRun::default()
        }
    };
    let (coded, plain) = if step("churn") {
        eprintln!("coded {scheme}: memory over a run with overwrites and frees");
        let churn_mib = a.churn_mib.unwrap_or(if a.quick { 8 } else { 64 });
        let coded = churn(&start()?, churn_mib, &scheme)?;
        eprintln!("coded {scheme}: the same run without redundancy (server memory reference)");
        let plain = churn(
            &PoolRig::start_config(servers, timeout, cfg(Redundancy::None))?,
            churn_mib,
            "none",
        )?;
        (coded, plain)
    } else {
        (Churn::default(), Churn::default())
    };
    let verified = coded.verified + plain.verified;
    let mut run = if step("reads") {
        reads(&start()?, &scheme, timeout)?
    } else {
        CodedRun::default()
    };
    run.scheme = scheme;
    run.servers = servers;
    run.churn = coded;
    run.churn_without_redundancy = plain;
    run.values_verified += verified;
    Ok((apps, run))
}

/// Degraded reads of a killed server's objects, then repair onto a new server.
fn reads(rig: &PoolRig, scheme: &str, timeout: Duration) -> anyhow::Result<CodedRun> {
    let mut verified = 0;
    eprintln!("coded {scheme}: degraded reads");
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
    let decodes = || pool.coded_stats().map_or(0, |s| s.degraded_reads);
    let before = decodes();
    let phases0 = pool.coded_stats().unwrap_or_default();
    let t_down = Instant::now();
    // Each read timed alone; those that decoded (the others found their range decoded by an
    // earlier read, or their span on a substitute) also apart. A normal read of a live server's object between each two of them: the reference of the
    // same moments (the machine's load, the rebuild running), whatever the load was before.
    let on_live: Vec<ObjectId> = (0..n)
        .filter(|&i| {
            pool.locations(i)
                .is_some_and(|l| l == [MemberId(VICTIM + 2)])
        })
        .collect();
    anyhow::ensure!(!on_live.is_empty(), "{scheme}: no object on a live server");
    let mut reference = Vec::with_capacity(on_victim.len());
    let (mut degraded, mut decoding, mut substituted) = (Vec::new(), Vec::new(), 0u64);
    for (i, &id) in on_victim.iter().enumerate() {
        let live = on_live[i % on_live.len()];
        let t = Instant::now();
        let v = pool.get(live)?;
        reference.push(t.elapsed());
        anyhow::ensure!(v == obj(live), "{scheme}: object {live} wrong");
        if pool.locations(id).is_some_and(|l| l != [MemberId(VICTIM)]) {
            substituted += 1;
        }
        let d0 = decodes();
        let t = Instant::now();
        let v = pool.get(id)?;
        let took = t.elapsed();
        anyhow::ensure!(v == obj(id), "{scheme}: object {id} wrong");
        degraded.push(took);
        if decodes() > d0 {
            decoding.push(took);
        }
    }
    degraded.sort_unstable();
    decoding.sort_unstable();
    reference.sort_unstable();
    let degraded_reads = decodes() - before;
    let phases = pool.coded_stats().unwrap_or_default();
    let mean = |a: u64, b: u64| (a - b) as f64 / 1e3 / degraded_reads.max(1) as f64;
    verified += 2 * on_victim.len() as u64;
    // Until every span of the dead server has its substitute, then the same reads again.
    while on_victim
        .iter()
        .any(|&id| pool.locations(id).is_some_and(|l| l == [MemberId(VICTIM)]))
    {
        anyhow::ensure!(
            t_down.elapsed() < Duration::from_secs(120),
            "{scheme}: repair-ahead did not finish"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let repair_ahead_seconds = t_down.elapsed().as_secs_f64();
    let after = time(&on_victim)?;
    verified += on_victim.len() as u64;

    // Repair onto a server added now: every span of the killed one is rebuilt there.
    eprintln!("coded {scheme}: repair onto a new server");
    let spare = crate::pool_rig::ServerProc::start()?;
    let cfg = farmem::backend::TcpConfig::new([spare.addr()])
        .connections_per_server(2)
        .timeout(timeout);
    let rebuilt_before = pool.coded_stats().map_or(0, |s| s.rebuilt_bytes);
    let t0 = Instant::now();
    pool.add_member(std::sync::Arc::new(farmem::backend::TcpBackend::connect(
        cfg,
    )?))?;
    while pool.coded_stats().is_some_and(|s| s.degraded > 0) {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(120),
            "{scheme}: repair did not finish"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let repair_seconds = t0.elapsed().as_secs_f64();
    let repair_bytes = pool.coded_stats().map_or(0, |s| s.rebuilt_bytes) - rebuilt_before;
    for &id in &on_victim {
        anyhow::ensure!(
            pool.get(id)? == obj(id),
            "{scheme}: object {id} wrong after repair"
        );
    }
    verified += on_victim.len() as u64;
    Ok(CodedRun {
        normal_read_p50_us: pct(&normal, 50),
        normal_read_p99_us: pct(&normal, 99),
        degraded_read_p50_us: pct(&degraded, 50),
        degraded_read_p99_us: pct(&degraded, 99),
        degraded_vs_normal_p50: pct(&degraded, 50) / pct(&normal, 50).max(1e-9),
        degraded_read_count: degraded.len() as u64,
        decoding_read_p50_us: pct(&decoding, 50),
        decoding_read_p99_us: pct(&decoding, 99),
        decoding_vs_normal_p50: pct(&decoding, 50) / pct(&normal, 50).max(1e-9),
        reference_read_p50_us: pct(&reference, 50),
        reference_read_p99_us: pct(&reference, 99),
        degraded_vs_reference_p50: pct(&degraded, 50) / pct(&reference, 50).max(1e-9),
        decoding_vs_reference_p50: pct(&decoding, 50) / pct(&reference, 50).max(1e-9),
        decoding_fetch_mean_us: mean(phases.degraded_fetch_ns, phases0.degraded_fetch_ns),
        decoding_decode_mean_us: mean(phases.degraded_decode_ns, phases0.degraded_decode_ns),
        decoding_engine_mean_us: mean(phases.degraded_read_ns, phases0.degraded_read_ns),
        decoding_during_rebuild: phases.degraded_reads_during_rebuild
            - phases0.degraded_reads_during_rebuild,
        degraded_reads,
        substituted_reads: substituted,
        repair_ahead_seconds,
        after_repair_ahead_p50_us: pct(&after, 50),
        after_repair_ahead_p99_us: pct(&after, 99),
        after_repair_ahead_vs_normal_p50: pct(&after, 50) / pct(&normal, 50).max(1e-9),
        repair_bytes,
        repair_seconds,
        repair_mib_per_s: repair_bytes as f64 / (1 << 20) as f64 / repair_seconds.max(1e-9),
        values_verified: verified,
        ..CodedRun::default()
    })
}

/// Prints one scheme's coded-only figures, for the steps that ran.
pub(super) fn print(c: &CodedRun) {
    let (x, o) = (&c.churn, &c.churn_without_redundancy);
    if x.live_bytes > 0 {
        print_churn(c, x, o);
    }
    if c.values_verified > 0 {
        print_reads(c);
    }
}

fn print_churn(c: &CodedRun, x: &Churn, o: &Churn) {
    println!(
        "coded {} ({} servers): memory per live byte over a run with frees ({:.0} MiB live, \
         written {:.1}x live, {} stripes compacted): server-counted max {:.2}, end {:.2}; \
         resident above the idle servers' max {:.2}, end {:.2}, 2 s later {:.2}; whole resident \
         end {:.2}, 2 s later {:.2} (idle servers {:.1} MiB) (without redundancy: counted {:.2} \
         / {:.2}, resident above idle {:.2} / {:.2} / {:.2}, whole {:.2} / {:.2}); at the end \
         parity {:.3} and dead {:.3} per live byte, {} stripes short of parity holding {:.3} of \
         the live bytes ({} parity sets written short), {:.1} MiB held unsealed, {} members \
         failed over ({} rejoined, {} still out)",
        c.scheme,
        c.servers,
        x.live_bytes as f64 / (1 << 20) as f64,
        x.written_per_live_byte,
        x.compacted,
        x.used_per_live_byte_max,
        x.used_per_live_byte_end,
        x.rss_per_live_byte_max,
        x.rss_per_live_byte_end,
        x.rss_per_live_byte_settled,
        x.rss_raw_per_live_byte_end,
        x.rss_raw_per_live_byte_settled,
        x.rss_base_bytes as f64 / (1 << 20) as f64,
        o.used_per_live_byte_max,
        o.used_per_live_byte_end,
        o.rss_per_live_byte_max,
        o.rss_per_live_byte_end,
        o.rss_per_live_byte_settled,
        o.rss_raw_per_live_byte_end,
        o.rss_raw_per_live_byte_settled,
        x.parity_per_live_byte_end,
        x.dead_per_live_byte_end,
        x.short_parity_stripes,
        x.short_parity_live_share,
        x.sealed_short,
        x.unsealed_bytes as f64 / (1 << 20) as f64,
        x.members_down,
        x.rejoins,
        x.members_out,
    );
    if x.members_out > 0 || x.short_parity_stripes > 0 {
        println!(
            "coded {}: NOT a full {} layout at the end: {} members failed over (request timeout \
             --timeout-ms) and not back yet; stripes with fewer than m parity spans get the rest \
             from repair once enough members have room",
            c.scheme, c.scheme, x.members_out
        );
    }
}

fn print_reads(c: &CodedRun) {
    println!(
        "coded {}: reads of a killed server's 8 KiB objects p50 {:.1} us (p99 {:.0}) vs {:.1} us \
         (p99 {:.0}) before: {:.2}x; the {} that decoded p50 {:.0} us (p99 {:.0}): {:.2}x (mean \
         fetch {:.1} us, decode {:.1} us, in all {:.1} us; {} while a rebuild ran); a live \
         server's object read between each two p50 {:.1} us (p99 {:.0}): degraded {:.2}x, \
         decoding {:.2}x of it; {} of {} \
         served by a substitute; repair-ahead done {:.3} s after the kill, then p50 {:.1} us \
         (p99 {:.0}): {:.2}x; repair onto a new server {:.1} MiB in {:.2} s = {:.0} MiB/s; {} \
         values verified",
        c.scheme,
        c.degraded_read_p50_us,
        c.degraded_read_p99_us,
        c.normal_read_p50_us,
        c.normal_read_p99_us,
        c.degraded_vs_normal_p50,
        c.degraded_reads,
        c.decoding_read_p50_us,
        c.decoding_read_p99_us,
        c.decoding_vs_normal_p50,
        c.decoding_fetch_mean_us,
        c.decoding_decode_mean_us,
        c.decoding_engine_mean_us,
        c.decoding_during_rebuild,
        c.reference_read_p50_us,
        c.reference_read_p99_us,
        c.degraded_vs_reference_p50,
        c.decoding_vs_reference_p50,
        c.substituted_reads,
        c.degraded_read_count,
        c.repair_ahead_seconds,
        c.after_repair_ahead_p50_us,
        c.after_repair_ahead_p99_us,
        c.after_repair_ahead_vs_normal_p50,
        c.repair_bytes as f64 / (1 << 20) as f64,
        c.repair_seconds,
        c.repair_mib_per_s,
        c.values_verified
    );
}
