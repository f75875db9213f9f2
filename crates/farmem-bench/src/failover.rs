//! `farmem-bench failover`: the memory pool over loopback memory servers (child processes of
//! this binary) at 25% local memory.
//!
//! 1. The web frontend (object mode, [`FarWeb`]) and the taxi analysis (no agent: a vector agent
//!    operation needs all its chunks on one member) with 1, 2 and 3 replicas: throughput and the
//!    overhead of redundancy against one replica; server memory per byte of application data.
//! 2. The web frontend while one server is killed (SIGKILL) and while one is frozen (SIGSTOP, a
//!    stand-in for a network partition; SIGCONT after the run): the longest request stall, the
//!    time to restore full redundancy, and repair bandwidth against bulk `get_many` bandwidth
//!    from one server.
//! 3. The web frontend while one server is drained: throughput and drain bandwidth.
//!
//! Every run's responses are checked against an all-local run, and after each failure or drain
//! every key and every element is read back and compared.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use farmem::backend::{TcpBackend, TcpConfig};
use farmem::{Backend, ObjectId};
use serde::Serialize;

use crate::apps_far::FarWeb;
use crate::demo_pool;
use crate::modes;
use crate::pool_rig::{PoolRig, Restore, ServerProc};
use crate::web::{self, ELEM, WebData};

#[path = "failover_ceiling.rs"]
mod ceiling;
#[path = "failover_coded.rs"]
mod coded;
#[path = "failover_drain.rs"]
mod drain;

pub use coded::parse_scheme;
#[path = "failover_kswap.rs"]
mod kswap_kill;
#[path = "failover_partition.rs"]
mod partition;

/// The server that fails (killed, frozen or drained).
const VICTIM: usize = 1;

/// Options of `farmem-bench failover`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Memory servers (child processes).
    #[arg(long, default_value_t = 3)]
    pub servers: usize,
    /// Local memory as a share of each application's working set.
    #[arg(long, default_value = "25%", value_parser = modes::parse_ratio)]
    pub local_mem: f64,
    /// Web frontend: key-value pairs in the hash map.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Web frontend: 8 KiB elements (65536: 512 MiB).
    #[arg(long, default_value_t = 65_536)]
    pub elements: u64,
    /// Web frontend: requests per timed run.
    #[arg(long, default_value_t = 100_000)]
    pub requests: u64,
    /// Web frontend: client threads.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Taxi analysis: synthetic trips.
    #[arg(long, default_value_t = 2_000_000)]
    pub rows: u64,
    /// A member that does not answer within this many milliseconds is failed over.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// Repair and drain bandwidth limit in MiB/s (0: unlimited).
    #[arg(long, default_value_t = 0)]
    pub repair_mib_s: u64,
    /// The most of the mover's full pace repair and drains may take while the application has
    /// requests in flight (0.01-1; within it, the pool's latency controller decides).
    #[arg(long, default_value_t = 1.0)]
    pub repair_share: f64,
    /// The application's request latency repair and drains aim under, as a multiple of its
    /// latency with no mover running (`PoolConfig::repair_target`).
    #[arg(long, default_value_t = 1.5)]
    pub repair_target: f64,
    /// `drain` part: latency targets of further drains beside the web frontend (each onto a
    /// server that joins), comma-separated: the frontier of drain bandwidth against the
    /// application's throughput.
    #[arg(long, value_delimiter = ',')]
    pub drain_targets: Vec<f64>,
    /// Repair and drain have the servers copy to each other directly (`OBJ_PUSH`) instead of
    /// through this client.
    #[arg(long)]
    pub server_copies: bool,
    /// MiB read from one server to measure the transport's bulk bandwidth.
    #[arg(long, default_value_t = 256)]
    pub bulk_mib: u64,
    /// A small, quick run (tests): 20k keys, 1024 elements, 8000 requests, 50k trips.
    #[arg(long)]
    pub quick: bool,
    /// Parts to run, comma-separated: `replicas` (1-3 replicas with the taxi analysis), `kill`,
    /// `stop`, `partition`, `kswap`, `drain`, `coded` (the `--coded` schemes: web, taxi,
    /// memory over a run with frees, degraded reads; `k + m` servers each), `ceiling` (copies
    /// between servers with nothing else running, against the bulk rate). Without `replicas`,
    /// an idle 2-replica web run is the reference.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "replicas,kill,stop,partition,kswap,drain"
    )]
    pub parts: Vec<String>,
    /// Erasure-coding schemes of the `coded` part, `K+M` comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4+2,8+2", value_parser = coded::parse_scheme)]
    pub coded: Vec<(u8, u8)>,
    /// `coded` part: MiB of objects overwritten and freed in the memory run (8 with
    /// `--quick`, else 64).
    #[arg(long)]
    pub churn_mib: Option<u64>,
    /// `coded` part: steps to run, comma-separated: `apps` (web frontend and taxi analysis),
    /// `churn` (memory over a run with frees), `reads` (degraded reads and repair).
    #[arg(long, value_delimiter = ',', default_value = "apps,churn,reads")]
    pub coded_steps: Vec<String>,
    /// `coded` part: compaction in step with the writes and frees (`inline`), or left to the
    /// maintenance thread (`deferred`).
    #[arg(long, default_value = "inline", value_parser = ["inline", "deferred"])]
    pub coded_compaction: String,
    /// `coded` part: dead bytes allowed before compaction, as a share of the live bytes
    /// (default: `CodingOptions`' own).
    #[arg(long)]
    pub coded_slack: Option<f64>,
    /// `coded` part: bytes of a data span in KiB (default: `CodingOptions`' own).
    #[arg(long)]
    pub coded_span_kib: Option<usize>,
    /// `coded` part: objects below this many bytes are replicated instead of coded (0: all
    /// coded; see `PoolConfig::code_from`).
    #[arg(long, default_value_t = 0)]
    pub code_from: usize,
    /// Results directory.
    #[arg(long, default_value = "results/failover")]
    pub out: PathBuf,
}

impl Args {
    fn resolve(mut self) -> Self {
        if self.quick {
            self.keys = 20_000;
            self.elements = 1024;
            self.requests = 8000;
            self.rows = 50_000;
            self.bulk_mib = 16;
        }
        self
    }

    fn web_args(&self) -> web::Args {
        web::Args {
            keys: self.keys,
            elements: self.elements,
            requests: self.requests,
            warmup: self.requests / 4,
            threads: self.threads,
            window: 16,
            map_share: 0.5,
            local_mem: vec![self.local_mem],
            modes: Vec::new(),
            json: false,
            out: self.out.clone(),
            child: None,
            budget_bytes: 0,
            server: None,
        }
    }

    fn web_budget(&self) -> u64 {
        (web::working_set_bytes(self.keys, self.elements) as f64 * self.local_mem) as u64
    }

    fn rig(&self, replicas: usize) -> anyhow::Result<PoolRig> {
        let rig = PoolRig::start_with(
            self.servers,
            farmem::backend::Redundancy::replicas(replicas),
            Duration::from_millis(self.timeout_ms),
            (self.repair_mib_s > 0).then_some(self.repair_mib_s << 20),
            self.server_copies,
            self.repair_share,
        )?;
        rig.pool
            .set_repair_pacing(self.repair_share, self.repair_target);
        Ok(rig)
    }
}

/// One replica count.
#[derive(Debug, Default, Serialize)]
struct ReplicaRun {
    /// Copies (0 for a coded scheme).
    replicas: usize,
    /// Copies (`1`, `2`, `3`) or a coded scheme (`4+2`).
    scheme: String,
    web_requests_per_second: f64,
    web_p99_us: f64,
    web_overhead: f64,
    taxi_analyze_seconds: f64,
    taxi_overhead: f64,
    app_bytes: u64,
    server_used_bytes: u64,
    server_rss_bytes: u64,
    server_rss_idle_bytes: u64,
    used_per_app_byte: f64,
    rss_per_app_byte: f64,
    values_verified: u64,
}

/// One failure under load.
#[derive(Debug, Serialize)]
struct FailureRun {
    signal: &'static str,
    requests_per_second: f64,
    longest_request_ms: f64,
    longest_backend_call_ms: f64,
    p99_us: f64,
    failed_during_run: bool,
    noticed_seconds: Option<f64>,
    restore_seconds: Option<f64>,
    repair_bytes: u64,
    repair_mib_per_second: f64,
    repair_share_of_bulk: f64,
    values_verified: u64,
}

/// CPUs this process may run on.
fn ncpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// Reads every key and every element back and compares it with what was stored.
fn verify(data: &FarWeb, a: &Args) -> anyhow::Result<u64> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < a.keys {
        let end = (start + 4096).min(a.keys);
        let keys: Vec<u64> = (start..end).map(web::key_of).collect();
        data.lookup_many(&keys, &mut out)?;
        for (r, &v) in (start..end).zip(&out) {
            anyhow::ensure!(v == web::value_of(r), "key of rank {r}: wrong value");
        }
        start = end;
    }
    let mut got = [0u8; ELEM];
    let mut want = [0u8; ELEM];
    for i in 0..a.elements {
        data.element(i, &mut got)?;
        web::fill_element(i, &mut want);
        anyhow::ensure!(got == want, "element {i}: wrong bytes");
    }
    Ok(a.keys + a.elements)
}

/// Bulk bandwidth of the transport: `get_many` of 2 MiB batches from one server, MiB/s.
pub(super) fn bulk_bandwidth(a: &Args) -> anyhow::Result<f64> {
    Ok(bulk_measure(a)?.0)
}

/// [`bulk_bandwidth`], and the CPU-µs (this process and the server) per MiB read.
fn bulk_measure(a: &Args) -> anyhow::Result<(f64, f64)> {
    const OBJ: usize = 64 << 10;
    const BATCH: usize = 32;
    let server = ServerProc::start()?;
    let b = TcpBackend::connect(TcpConfig::new([server.addr()]).connections_per_server(2))
        .context("connecting for the bulk measurement")?;
    let n = ((a.bulk_mib << 20) as usize / OBJ).max(BATCH);
    let ids: Vec<ObjectId> = (1..=n as u64).collect();
    let payload = vec![0x5au8; OBJ];
    for batch in ids.chunks(BATCH) {
        let items: Vec<(ObjectId, &[u8])> = batch.iter().map(|&i| (i, &payload[..])).collect();
        b.put_many(&items)?;
    }
    let pids = [server.pid() as u32];
    let mark = drain::CpuMark::now(&pids);
    let t = Instant::now();
    let mut bytes = 0u64;
    for _ in 0..2 {
        for batch in ids.chunks(BATCH) {
            bytes += b
                .get_many(batch)?
                .iter()
                .map(|v| v.len() as u64)
                .sum::<u64>();
        }
    }
    let rate = mib(bytes) / t.elapsed().as_secs_f64().max(1e-9);
    let cpu = mark.used(&pids);
    Ok((rate, cpu.total_cpu_seconds * 1e6 / mib(bytes).max(1e-9)))
}

/// Builds the web data set on `rig` and serves the warm-up requests.
fn build_web(rig: &PoolRig, a: &Args, wa: &web::Args) -> anyhow::Result<FarWeb> {
    let data = FarWeb::build_on(rig.timed.clone(), wa, a.web_budget(), &|_| {})?;
    web::drive(&data, wa, wa.requests..wa.requests + wa.warmup, true).context("warm-up")?;
    Ok(data)
}

fn replicas_run(
    a: &Args,
    replicas: usize,
    local_digest: u64,
    local_taxi: &str,
) -> anyhow::Result<ReplicaRun> {
    eprintln!("replicas {replicas}: web frontend and taxi analysis");
    let rig = a.rig(replicas)?;
    scheme_run(
        a,
        &rig,
        replicas,
        replicas.to_string(),
        local_digest,
        local_taxi,
    )
}

/// The web frontend and the taxi analysis on `rig`, checked against the all-local answers.
fn scheme_run(
    a: &Args,
    rig: &PoolRig,
    copies: usize,
    scheme: String,
    local_digest: u64,
    local_taxi: &str,
) -> anyhow::Result<ReplicaRun> {
    let replicas = scheme.as_str();
    let wa = a.web_args();
    let idle = rig.rss_bytes();
    let data = build_web(rig, a, &wa)?;
    let (secs, mut lat, digest) = web::drive(&data, &wa, 0..wa.requests, true)?;
    anyhow::ensure!(
        digest == local_digest,
        "replicas {replicas}: web responses differ from all-local"
    );
    lat.sort_unstable();
    let p99 = lat
        .get(lat.len().saturating_sub(1) * 99 / 100)
        .map_or(0.0, |&l| f64::from(l) / 1e3);
    let (used, rss) = (rig.used_bytes(), rig.rss_bytes());
    let verified = verify(&data, a)?;
    drop(data);
    let ta = demo_pool::taxi_args(a.rows, &a.out);
    let taxi_budget =
        (crate::pool_rig::taxi_bytes_per_row(ta.seed)? as f64 * a.rows as f64 * a.local_mem) as u64;
    let taxi = demo_pool::run_taxi(rig, &ta, taxi_budget, None, true)?;
    anyhow::ensure!(
        taxi.answers == local_taxi,
        "replicas {replicas}: taxi answers differ from all-local"
    );
    let app = web::working_set_bytes(a.keys, a.elements);
    Ok(ReplicaRun {
        replicas: copies,
        scheme,
        web_requests_per_second: wa.requests as f64 / secs.max(1e-9),
        web_p99_us: p99,
        web_overhead: 1.0,
        taxi_analyze_seconds: taxi.analyze_seconds,
        taxi_overhead: 1.0,
        app_bytes: app,
        server_used_bytes: used,
        server_rss_bytes: rss,
        server_rss_idle_bytes: idle,
        used_per_app_byte: used as f64 / app as f64,
        rss_per_app_byte: rss.saturating_sub(idle) as f64 / app as f64,
        values_verified: verified,
    })
}

/// Web throughput with 2 replicas and nothing else going on (the reference when the replica
/// runs are skipped).
fn idle_web(a: &Args, local_digest: u64) -> anyhow::Result<f64> {
    eprintln!("replicas 2: idle web frontend (reference)");
    let wa = a.web_args();
    let rig = a.rig(2)?;
    let data = build_web(&rig, a, &wa)?;
    rig.timed.take_max();
    let (secs, lat, digest) = web::drive(&data, &wa, 0..wa.requests, true)?;
    anyhow::ensure!(
        digest == local_digest,
        "idle: web responses differ from all-local"
    );
    eprintln!(
        "idle reference: longest request {:.1} ms, longest backend call {:.1} ms",
        lat.iter().max().map_or(0.0, |&l| f64::from(l) / 1e6),
        rig.timed.take_max().as_secs_f64() * 1e3
    );
    Ok(wa.requests as f64 / secs.max(1e-9))
}

fn failure_run(
    a: &Args,
    sig: i32,
    expected_secs: f64,
    local_digest: u64,
    bulk_mib_s: f64,
) -> anyhow::Result<FailureRun> {
    let name = if sig == libc::SIGKILL {
        "SIGKILL"
    } else {
        "SIGSTOP"
    };
    eprintln!("replicas 2: web frontend, {name} to one server 40% into the run");
    let rig = a.rig(2)?;
    let m = Measure {
        name,
        expected_secs,
        local_digest,
        bulk_mib_s,
    };
    let sigcont = || {
        if sig == libc::SIGSTOP {
            let r = rig.thaw_and_rejoin(VICTIM)?;
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            match r.after {
                Some(after) => println!(
                    "SIGSTOP: after SIGCONT the failed-over server was taken back in {:.2} s \
                     (its old session revived with what the pool still placed on it, to be \
                     moved to live members and closed, and a fresh session as a new member), \
                     holding {:.1} MiB for the pool then; its RSS {:.0} MiB at SIGCONT, {:.0} MiB \
                     1 s after",
                    after.as_secs_f64(),
                    mib(r.used_bytes),
                    mib(r.rss_at_sigcont),
                    mib(r.rss_after)
                ),
                None => println!("SIGSTOP: the failed-over server did not rejoin within 30 s"),
            }
        }
        Ok(())
    };
    failure_under_load(a, &rig, &m, || rig.fail(VICTIM, sig), sigcont)
}

/// What a failure run is measured against.
struct Measure {
    name: &'static str,
    expected_secs: f64,
    local_digest: u64,
    bulk_mib_s: f64,
}

/// Builds the web data set on `rig` (two replicas), drives the timed requests, calls `fail` 40%
/// into them (it fails server [`VICTIM`] and waits for full redundancy, as [`PoolRig::fail`]),
/// calls `undo` after the requests (SIGCONT, healing a link), checks the responses and reads
/// every value back.
fn failure_under_load(
    a: &Args,
    rig: &PoolRig,
    m: &Measure,
    fail: impl FnOnce() -> anyhow::Result<(Instant, Option<Restore>)> + Send,
    undo: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<FailureRun> {
    let &Measure {
        name,
        expected_secs,
        local_digest,
        bulk_mib_s,
    } = m;
    let wa = a.web_args();
    let data = build_web(rig, a, &wa)?;
    let before = rig.pool.pool_stats().repair.bytes_copied;
    rig.timed.take_max();
    let delay = Duration::from_secs_f64(expected_secs * 0.4);
    // The failing thread waits for full redundancy while the requests go on (and after them,
    // with the data still alive).
    let (run, failed_at) = std::thread::scope(|s| {
        let failer = s.spawn(|| {
            std::thread::sleep(delay);
            fail()
        });
        let run = web::drive(&data, &wa, 0..wa.requests, true);
        let end = Instant::now();
        let failed_at = failer
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("failing thread panicked")));
        (run.map(|r| (r, end)), failed_at)
    });
    let longest = rig.timed.take_longest();
    let longest_call = longest.map_or(Duration::ZERO, |l| l.took);
    let undone = undo();
    let (failed_at, restore) = failed_at?;
    undone?;
    if let Some(l) = longest {
        let after = l.ended.saturating_duration_since(failed_at).as_secs_f64()
            - (failed_at.saturating_duration_since(l.ended)).as_secs_f64();
        eprintln!(
            "{name}: longest backend call {:.1} ms ({}), ended {after:+.3} s after the failure",
            l.took.as_secs_f64() * 1e3,
            l.what
        );
    }
    let ((secs, mut lat, digest), end) = run?;
    anyhow::ensure!(
        digest == local_digest,
        "{name}: web responses differ from all-local"
    );
    let verified = verify(&data, a)?;
    lat.sort_unstable();
    let repair_bytes = rig
        .pool
        .pool_stats()
        .repair
        .bytes_copied
        .saturating_sub(before);
    // Repair bandwidth over the time repair ran: from the member marked down to the last copy.
    let repair_mib_s = restore.map_or(0.0, |d| {
        mib(repair_bytes)
            / d.last_copy
                .saturating_sub(d.noticed)
                .as_secs_f64()
                .max(1e-9)
    });
    Ok(FailureRun {
        signal: name,
        requests_per_second: wa.requests as f64 / secs.max(1e-9),
        longest_request_ms: lat.last().map_or(0.0, |&l| f64::from(l) / 1e6),
        longest_backend_call_ms: longest_call.as_secs_f64() * 1e3,
        p99_us: lat
            .get(lat.len().saturating_sub(1) * 99 / 100)
            .map_or(0.0, |&l| f64::from(l) / 1e3),
        failed_during_run: failed_at < end,
        noticed_seconds: restore.map(|d| d.noticed.as_secs_f64()),
        restore_seconds: restore.map(|d| d.restored.as_secs_f64()),
        repair_bytes,
        repair_mib_per_second: repair_mib_s,
        repair_share_of_bulk: repair_mib_s / bulk_mib_s.max(1e-9),
        values_verified: verified,
    })
}

/// Runs the benchmark.
///
/// # Errors
/// A failed run, a value that differs from the all-local run, or a lost value.
pub fn run(args: Args) -> anyhow::Result<()> {
    let a = args.resolve();
    anyhow::ensure!(
        a.servers >= 3,
        "failover needs 3 or more servers (3 replicas)"
    );
    let t0 = Instant::now();
    let wa = a.web_args();
    eprintln!(
        "all-local reference: web {} keys + {} elements ({:.0} MiB), taxi {} trips",
        a.keys,
        a.elements,
        mib(web::working_set_bytes(a.keys, a.elements)),
        a.rows
    );
    let local_web = web::run_with(&wa, true, |p| {
        Ok(web::LocalWeb::build(a.keys, a.elements, p))
    })?;
    let local_digest = u64::from_str_radix(&local_web.digest, 16)?;
    let ta = demo_pool::taxi_args(a.rows, &a.out);
    let local_taxi =
        crate::taxi::run_in_process(&ta, farmem_frame::LocalPlacement::shared(), true)?;
    eprintln!("bulk bandwidth: get_many of 2 MiB batches from one server");
    let (bulk, bulk_cpu_us_per_mib) = bulk_measure(&a)?;

    let part = |p: &str| a.parts.iter().any(|x| x == p);
    let mut reps = Vec::new();
    if part("replicas") {
        for r in 1..=3 {
            reps.push(replicas_run(&a, r, local_digest, &local_taxi.answers)?);
        }
        let (base_web, base_taxi) = (
            reps[0].web_requests_per_second,
            reps[0].taxi_analyze_seconds,
        );
        for r in &mut reps {
            r.web_overhead = base_web / r.web_requests_per_second.max(1e-9);
            r.taxi_overhead = r.taxi_analyze_seconds / base_taxi.max(1e-9);
        }
    }
    let coded_runs = if part("coded") {
        let mut runs = Vec::new();
        for &(k, m) in &a.coded {
            let (mut run, extra) = coded::run(&a, k, m, local_digest, &local_taxi.answers)?;
            if let Some(base) = reps.iter().find(|r| r.replicas == 1) {
                run.web_overhead =
                    base.web_requests_per_second / run.web_requests_per_second.max(1e-9);
                run.taxi_overhead = run.taxi_analyze_seconds / base.taxi_analyze_seconds.max(1e-9);
            }
            reps.push(run);
            runs.push(extra);
        }
        runs
    } else {
        Vec::new()
    };
    let idle_rps = match reps.iter().find(|r| r.replicas == 2) {
        Some(two) => two.web_requests_per_second,
        None => idle_web(&a, local_digest)?,
    };
    let expected = a.requests as f64 / idle_rps.max(1e-9);
    let mut failures = [(libc::SIGKILL, "kill"), (libc::SIGSTOP, "stop")]
        .into_iter()
        .filter(|(_, p)| part(p))
        .map(|(sig, _)| failure_run(&a, sig, expected, local_digest, bulk))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if part("partition") {
        failures.extend(partition::run(&a, expected, local_digest, bulk)?);
    }
    let kswap_kill = if part("kswap") {
        kswap_kill::run(&a)?
    } else {
        Vec::new()
    };
    let drain = if part("drain") {
        Some(drain::run(&a, idle_rps, bulk)?)
    } else {
        None
    };
    let ceiling = if part("ceiling") {
        Some(ceiling::run(&a)?)
    } else {
        None
    };

    println!(
        "\nfailover: {} loopback servers, {:.0}% local memory, web {:.0} MiB, taxi {} trips \
         (shared, noisy machine: single runs)",
        a.servers,
        a.local_mem * 100.0,
        mib(web::working_set_bytes(a.keys, a.elements)),
        a.rows
    );
    println!(
        "all-local: web {:.0} req/s, taxi {:.3} s; bulk get_many from one server {bulk:.0} MiB/s",
        local_web.throughput, local_taxi.analyze_seconds
    );
    println!(
        "{:>8} {:>10} {:>9} {:>9} {:>9} {:>11} {:>11} {:>9}",
        "replicas",
        "web req/s",
        "web cost",
        "taxi s",
        "taxi cost",
        "used/app B",
        "RSS/app B",
        "verified"
    );
    for r in &reps {
        println!(
            "{:>8} {:>10.0} {:>8.2}x {:>9.3} {:>8.2}x {:>11.2} {:>11.2} {:>9}",
            r.scheme,
            r.web_requests_per_second,
            r.web_overhead,
            r.taxi_analyze_seconds,
            r.taxi_overhead,
            r.used_per_app_byte,
            r.rss_per_app_byte,
            r.values_verified
        );
    }
    println!(
        "{:>8} {:>10} {:>12} {:>12} {:>10} {:>10} {:>12} {:>12} {:>9}",
        "failure",
        "req/s",
        "longest ms",
        "longest call",
        "noticed s",
        "restored s",
        "repair MiB/s",
        "of bulk",
        "verified"
    );
    for f in &failures {
        let secs = |s: Option<f64>| s.map_or("never".to_owned(), |s| format!("{s:.2}"));
        println!(
            "{:>8} {:>10.0} {:>12.1} {:>12.1} {:>10} {:>10} {:>12.0} {:>11.0}% {:>9}",
            f.signal,
            f.requests_per_second,
            f.longest_request_ms,
            f.longest_backend_call_ms,
            secs(f.noticed_seconds),
            secs(f.restore_seconds),
            f.repair_mib_per_second,
            f.repair_share_of_bulk * 100.0,
            f.values_verified
        );
    }
    if let Some(d) = &drain {
        drain::print(d, bulk, bulk_cpu_us_per_mib, ncpus());
    }
    if let Some(c) = &ceiling {
        ceiling::print(c);
    }
    for c in &coded_runs {
        coded::print(c);
    }
    for k in &kswap_kill {
        kswap_kill::print(k);
    }
    println!(
        "(SIGSTOP freezes the server, resumed with SIGCONT after the run; partition: the server \
         in a network namespace, its link set down, back up after the run)"
    );
    let dir = modes::results_dir(&a.out)?;
    modes::write_json(
        &dir.join("failover.json"),
        &serde_json::json!({
            "bench": "failover",
            "servers": a.servers,
            "local_mem": a.local_mem,
            "keys": a.keys,
            "elements": a.elements,
            "requests": a.requests,
            "rows": a.rows,
            "timeout_ms": a.timeout_ms,
            "repair_mib_s": a.repair_mib_s,
            "local_web_requests_per_second": local_web.throughput,
            "local_taxi_analyze_seconds": local_taxi.analyze_seconds,
            "bulk_mib_per_second": bulk,
            "bulk_cpu_us_per_mib": bulk_cpu_us_per_mib,
            "cpus": ncpus(),
            "repair_target": a.repair_target,
            "replicas": reps,
            "failures": failures,
            "drain": drain,
            "ceiling": ceiling,
            "idle_web_requests_per_second": idle_rps,
            "kernel_swap_kill": kswap_kill,
            "coded": coded_runs,
            "all_verified": true,
            "seconds": t0.elapsed().as_secs_f64(),
        }),
    )?;
    Ok(())
}
