//! The server's counters and their Prometheus text form.
//!
//! Counters are plain atomics, striped by session so connections of different sessions do not
//! share cache lines; nothing is allocated on the request path. Latency histograms have fixed
//! buckets (one atomic add per request). Gauges (capacity, use, sessions, connections, RSS)
//! are read when scraped.
//!
//! Why not the `metrics` crate with `metrics-exporter-prometheus`: the exporter keeps every
//! histogram sample (value and time stamp, 32 bytes) in a queue until it is scraped or an
//! upkeep runs, so the server's memory would grow with its request rate between scrapes (and
//! without a scraper, until an upkeep thread drains it), against the promise that the server
//! stays within its capacity plus a fixed overhead; it also reads the clock once more per
//! sample. Measured on this machine, release, 2 cores: the exporter without its HTTP listener
//! builds in 81 s from scratch (0.9 MB binary), with its listener (hyper, tokio, rustls with
//! aws-lc) far longer. These counters cost neither.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use farmem_proto::{ErrorCode, FLAG_ERROR, HEADER_LEN, Op, QuotaKind, Request};
use farmem_store::{Session, encode_store_error, execute_request_watched};

use crate::server::Shared;

/// Op codes counted separately (higher ones are counted as `other`).
const OPS: usize = 16;
/// Stripes of the counters (a session always uses the same one).
const STRIPES: usize = 8;
/// Upper bounds of the latency buckets, in microseconds (then `+Inf`).
const BUCKETS_US: [u64; 16] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    1_000_000, 10_000_000,
];
/// Quota kinds counted (index = wire code).
const QUOTAS: [QuotaKind; 3] = [QuotaKind::Bytes, QuotaKind::Objects, QuotaKind::Rate];

/// One op's counters.
#[derive(Default)]
struct OpCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Requests per latency bucket (the last one is `+Inf`).
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    latency_ns: AtomicU64,
}

/// One stripe of counters, on its own cache lines.
#[derive(Default)]
#[repr(align(128))]
struct Stripe {
    ops: [OpCounters; OPS],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    agent_cpu_ns: AtomicU64,
    quota_refusals: [AtomicU64; QUOTAS.len()],
}

/// The server's request counters.
pub(crate) struct Metrics {
    stripes: Box<[Stripe]>,
    started: Instant,
    /// Where the metrics endpoint listens, once bound.
    pub(crate) addr: OnceLock<SocketAddr>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
            started: Instant::now(),
            addr: OnceLock::new(),
        }
    }
}

fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

/// CPU time of the calling thread (zero where it cannot be read).
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

impl Metrics {
    /// Records one answered request: `answer` is its answer frame.
    fn record(&self, stripe: usize, op: Op, took: Duration, bytes_in: usize, answer: &[u8]) {
        let s = &self.stripes[stripe % STRIPES];
        let o = &s.ops[(op as usize).min(OPS - 1)];
        add(&o.requests, 1);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let b = BUCKETS_US.partition_point(|&ub| ub < us);
        add(&o.buckets[b], 1);
        add(
            &o.latency_ns,
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
        );
        add(&s.bytes_in, bytes_in as u64);
        add(&s.bytes_out, answer.len() as u64);
        let flags = answer
            .get(10..12)
            .map_or(0, |f| u16::from_le_bytes([f[0], f[1]]));
        if flags & FLAG_ERROR != 0 {
            add(&o.errors, 1);
            let code = answer
                .get(HEADER_LEN..HEADER_LEN + 2)
                .map_or(0, |c| u16::from_le_bytes([c[0], c[1]]));
            if code == ErrorCode::QuotaExceeded as u16 {
                let kind = answer
                    .get(HEADER_LEN + 4..HEADER_LEN + 12)
                    .and_then(|k| k.try_into().ok())
                    .map_or(0, u64::from_le_bytes);
                if let Some(q) = QUOTAS.iter().position(|q| *q as u64 == kind) {
                    add(&s.quota_refusals[q], 1);
                }
            }
        }
    }

    fn sum(&self, f: impl Fn(&Stripe) -> &AtomicU64) -> u64 {
        self.stripes
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    /// Requests answered and error answers so far, all ops (what tests and logs want).
    #[cfg(test)]
    pub(crate) fn totals(&self) -> (u64, u64) {
        let mut r = (0, 0);
        for i in 0..OPS {
            r.0 += self.sum(|s| &s.ops[i].requests);
            r.1 += self.sum(|s| &s.ops[i].errors);
        }
        r
    }
}

/// Runs `req` (request id `rid`, a body of `body_len` bytes) for session `s` under its
/// request-rate quota (`gone` tells whether its client hung up, see
/// [`execute_request_watched`]), answers into `wbuf` and counts it when the server has a metrics
/// endpoint: the one call the connection code makes per request after the hello. Without an
/// endpoint nothing is counted and the clock is not read (the request path stays as fast).
pub(crate) fn execute(
    shared: &Shared,
    s: &Session,
    req: &Request<'_>,
    rid: u64,
    body_len: usize,
    wbuf: &mut Vec<u8>,
    gone: &(dyn Fn() -> bool + Sync),
) {
    let op = req.op();
    if shared.config.metrics.is_none() {
        match s.admit(op) {
            Ok(()) => execute_request_watched(s, req, rid, wbuf, gone),
            Err(e) => encode_store_error(wbuf, op, rid, &e),
        }
        return;
    }
    let start = wbuf.len();
    let t0 = Instant::now();
    match s.admit(op) {
        Err(e) => encode_store_error(wbuf, op, rid, &e),
        Ok(()) if op == Op::Compute => {
            let cpu = thread_cpu();
            execute_request_watched(s, req, rid, wbuf, gone);
            add_agent_cpu(shared, s, cpu);
        }
        Ok(()) => execute_request_watched(s, req, rid, wbuf, gone),
    }
    let answer = wbuf.get(start..).unwrap_or_default();
    shared.metrics.record(
        s.key as usize,
        op,
        t0.elapsed(),
        HEADER_LEN + body_len,
        answer,
    );
}

/// As [`execute`] for a request that may be answered at once on the I/O thread (see
/// [`farmem_store::execute_inline`]); returns `false`, having done and counted nothing, when it
/// must run on the worker pool.
pub(crate) fn execute_inline(
    shared: &Shared,
    s: &Session,
    req: &Request<'_>,
    rid: u64,
    body_len: usize,
    wbuf: &mut Vec<u8>,
) -> bool {
    let op = req.op();
    if shared.config.metrics.is_none() {
        return farmem_store::execute_inline(s, req, rid, wbuf, || s.admit(op));
    }
    let start = wbuf.len();
    let t0 = Instant::now();
    let cpu = thread_cpu();
    if !farmem_store::execute_inline(s, req, rid, wbuf, || s.admit(op)) {
        return false;
    }
    add_agent_cpu(shared, s, cpu);
    let answer = wbuf.get(start..).unwrap_or_default();
    shared.metrics.record(
        s.key as usize,
        op,
        t0.elapsed(),
        HEADER_LEN + body_len,
        answer,
    );
    true
}

/// Adds the calling thread's CPU time since `since` to the session's agent CPU.
fn add_agent_cpu(shared: &Shared, s: &Session, since: Duration) {
    let used = thread_cpu().saturating_sub(since);
    let stripe = &shared.metrics.stripes[s.key as usize % STRIPES];
    add(
        &stripe.agent_cpu_ns,
        u64::try_from(used.as_nanos()).unwrap_or(u64::MAX),
    );
}

/// Every op name by code (index = code; unassigned codes are `other`).
fn op_name(code: usize) -> &'static str {
    u16::try_from(code)
        .ok()
        .and_then(|c| Op::from_code(c).ok())
        .map_or("other", Op::name)
}

/// Writes a metric's `# HELP` and `# TYPE` lines.
fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The Prometheus text exposition (format 0.0.4) of `shared`'s state and counters.
pub(crate) fn render(shared: &Shared) -> String {
    let m = &shared.metrics;
    let st = shared.stats();
    let admin = shared.capacity.status();
    let mut out = String::with_capacity(16 << 10);
    let gauges: [(&str, &str, u64); 7] = [
        (
            "farmem_capacity_bytes",
            "Capacity now (lowered by shrinks and the host reserve).",
            st.capacity_bytes,
        ),
        (
            "farmem_max_capacity_bytes",
            "Configured capacity (--capacity).",
            admin.max_capacity_bytes,
        ),
        (
            "farmem_used_bytes",
            "Bytes charged: payload, per-object overhead, agent state.",
            st.used_bytes,
        ),
        (
            "farmem_objects",
            "Objects stored, all sessions.",
            st.objects,
        ),
        (
            "farmem_sessions",
            "Live sessions (with connections or within their lease).",
            st.sessions,
        ),
        (
            "farmem_connections",
            "Open client connections.",
            st.connections,
        ),
        (
            "process_resident_memory_bytes",
            "Resident set of the server process.",
            resident_bytes(),
        ),
    ];
    for (name, help, v) in gauges {
        head(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    }
    let counters: [(&str, &str, u64); 3] = [
        (
            "farmem_received_bytes_total",
            "Request bytes received (frames after the hello).",
            m.sum(|s| &s.bytes_in),
        ),
        (
            "farmem_sent_bytes_total",
            "Answer bytes sent (frames after the hello).",
            m.sum(|s| &s.bytes_out),
        ),
        (
            "farmem_written_bytes_total",
            "Payload bytes written by puts and patches.",
            st.bytes_written,
        ),
    ];
    for (name, help, v) in counters {
        head(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    let secs = |ns: u64| ns as f64 / 1e9;
    head(
        &mut out,
        "farmem_agent_cpu_seconds_total",
        "counter",
        "CPU time of remote-agent requests (of the thread serving them).",
    );
    let _ = writeln!(
        out,
        "farmem_agent_cpu_seconds_total {}",
        secs(m.sum(|s| &s.agent_cpu_ns))
    );
    head(
        &mut out,
        "farmem_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
    );
    let _ = writeln!(
        out,
        "farmem_uptime_seconds {}",
        m.started.elapsed().as_secs_f64()
    );
    head(
        &mut out,
        "farmem_quota_refusals_total",
        "counter",
        "Requests refused by a per-session quota.",
    );
    for (i, q) in QUOTAS.iter().enumerate() {
        let v = m.sum(|s| &s.quota_refusals[i]);
        let _ = writeln!(
            out,
            "farmem_quota_refusals_total{{quota=\"{}\"}} {v}",
            q.name()
        );
    }
    let used: Vec<usize> = (0..OPS)
        .filter(|&i| m.sum(|s| &s.ops[i].requests) > 0)
        .collect();
    head(
        &mut out,
        "farmem_requests_total",
        "counter",
        "Requests answered, by operation.",
    );
    for &i in &used {
        let v = m.sum(|s| &s.ops[i].requests);
        let _ = writeln!(out, "farmem_requests_total{{op=\"{}\"}} {v}", op_name(i));
    }
    head(
        &mut out,
        "farmem_errors_total",
        "counter",
        "Requests answered with an error, by operation.",
    );
    for &i in &used {
        let v = m.sum(|s| &s.ops[i].errors);
        let _ = writeln!(out, "farmem_errors_total{{op=\"{}\"}} {v}", op_name(i));
    }
    let name = "farmem_request_duration_seconds";
    head(
        &mut out,
        name,
        "histogram",
        "Time to answer a request (from its decoding to its answer in the write buffer).",
    );
    for &i in &used {
        let op = op_name(i);
        let mut cum = 0;
        for (b, ub) in BUCKETS_US.iter().enumerate() {
            cum += m.sum(|s| &s.ops[i].buckets[b]);
            let le = *ub as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{op=\"{op}\",le=\"{le}\"}} {cum}");
        }
        cum += m.sum(|s| &s.ops[i].buckets[BUCKETS_US.len()]);
        let _ = writeln!(out, "{name}_bucket{{op=\"{op}\",le=\"+Inf\"}} {cum}");
        let total = secs(m.sum(|s| &s.ops[i].latency_ns));
        let _ = writeln!(out, "{name}_sum{{op=\"{op}\"}} {total}");
        let _ = writeln!(out, "{name}_count{{op=\"{op}\"}} {cum}");
    }
    out
}

/// The resident set of this process (0 where unknown).
fn resident_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0);
    pages * rustix::param::page_size() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_errors_are_counted() {
        let m = Metrics::default();
        let mut ok = Vec::new();
        farmem_proto::Response::Done.encode(&mut ok, Op::Put, 1);
        let mut quota = Vec::new();
        let d = [QuotaKind::Objects as u64, 10, 11];
        farmem_proto::encode_error(&mut quota, Op::Put, 2, ErrorCode::QuotaExceeded, d, "q");
        m.record(3, Op::Put, Duration::from_micros(7), 100, &ok);
        m.record(4, Op::Put, Duration::from_millis(3), 100, &quota);
        m.record(4, Op::Get, Duration::from_secs(60), 20, &ok);
        assert_eq!(m.totals(), (3, 1));
        let put = Op::Put as usize;
        assert_eq!(m.sum(|s| &s.ops[put].buckets[0]), 1);
        assert_eq!(m.sum(|s| &s.ops[put].buckets[8]), 1); // 2.5 ms < 3 ms <= 5 ms
        assert_eq!(m.sum(|s| &s.ops[Op::Get as usize].buckets[16]), 1);
        assert_eq!(m.sum(|s| &s.quota_refusals[1]), 1);
        assert_eq!(m.sum(|s| &s.bytes_in), 220);
        assert_eq!(op_name(put), "put");
        assert_eq!(op_name(OPS - 1), "other");
    }
}
