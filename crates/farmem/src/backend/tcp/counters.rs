//! What a client counts about its traffic with one memory server: the client's side of the
//! server's metrics (requests, errors, bytes, reconnects, latency).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of [`TransportStats::latency_buckets`] in microseconds (the last bucket,
/// beyond them, is unbounded). The server's `farmem_request_duration_seconds` histogram uses
/// the same bounds.
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    1_000_000, 10_000_000,
];

/// Traffic of one [`TcpBackend`](super::TcpBackend) with one memory server since it connected
/// (all its connections, heartbeat pings included).
///
/// ```no_run
/// # use farmem::backend::{TcpBackend, TcpConfig};
/// let b = TcpBackend::connect(TcpConfig::new(["127.0.0.1:7070"])).unwrap();
/// for s in b.transport_stats() {
///     println!("{}: {} requests, mean {:?}", s.addr, s.requests, s.mean_latency());
/// }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    /// The server's address, as configured.
    pub addr: String,
    /// Requests sent (a request resent after a reconnect counts once).
    pub requests: u64,
    /// Answers received.
    pub answers: u64,
    /// Error answers received, and requests that timed out.
    pub errors: u64,
    /// Request bytes written (frames, headers included; resends not counted).
    pub bytes_sent: u64,
    /// Answer bytes received (frames, headers included).
    pub bytes_received: u64,
    /// Connections re-established after they broke (the session resumed).
    pub reconnects: u64,
    /// Time from sending a request to collecting its answer, summed over the requests timed
    /// (one in 16 is: timing costs two clock reads).
    pub latency_total: Duration,
    /// Timed requests per latency bucket ([`LATENCY_BUCKETS_US`], then one beyond).
    pub latency_buckets: [u64; LATENCY_BUCKETS_US.len() + 1],
}

impl TransportStats {
    /// Mean time from sending a request to collecting its answer, over the timed requests
    /// (zero before any).
    pub fn mean_latency(&self) -> Duration {
        let n: u64 = self.latency_buckets.iter().sum();
        if n == 0 {
            return Duration::ZERO;
        }
        self.latency_total / u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// The counters behind [`TransportStats`]: relaxed atomics, a few adds per request. What the
/// writers (under the connection's writer lock), the reading leader and the waiters update
/// sits on separate cache lines; latency is timed for one request in [`LATENCY_SAMPLE`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    tx: Line<Tx>,
    rx: Line<Rx>,
    rest: Line<Rest>,
}

/// One request in this many has its latency timed (two clock reads saved on the others).
pub(crate) const LATENCY_SAMPLE: u64 = 16;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Line<T>(T);

#[derive(Debug, Default)]
struct Tx {
    requests: AtomicU64,
    bytes_sent: AtomicU64,
}

#[derive(Debug, Default)]
struct Rx {
    answers: AtomicU64,
    errors: AtomicU64,
    bytes_received: AtomicU64,
}

#[derive(Debug, Default)]
struct Rest {
    timeouts: AtomicU64,
    reconnects: AtomicU64,
    latency_ns: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
}

fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    /// A request of `bytes` bytes was queued.
    pub(crate) fn sent(&self, bytes: usize) {
        add(&self.tx.0.requests, 1);
        add(&self.tx.0.bytes_sent, bytes as u64);
    }

    /// An answer of `bytes` bytes arrived; `error` if it is an error answer.
    pub(crate) fn received(&self, bytes: usize, error: bool) {
        let rx = &self.rx.0;
        add(&rx.answers, 1);
        add(&rx.bytes_received, bytes as u64);
        if error {
            add(&rx.errors, 1);
        }
    }

    /// A (sampled) request was collected `took` after it was sent.
    pub(crate) fn answered(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let r = &self.rest.0;
        add(
            &r.buckets[LATENCY_BUCKETS_US.partition_point(|&ub| ub < us)],
            1,
        );
        add(
            &r.latency_ns,
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
        );
    }

    /// A request timed out.
    pub(crate) fn timed_out(&self) {
        add(&self.rest.0.timeouts, 1);
    }

    /// A broken connection was re-established.
    pub(crate) fn reconnected(&self) {
        add(&self.rest.0.reconnects, 1);
    }

    pub(crate) fn snapshot(&self, addr: &str) -> TransportStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (tx, rx, r) = (&self.tx.0, &self.rx.0, &self.rest.0);
        TransportStats {
            addr: addr.to_owned(),
            requests: get(&tx.requests),
            answers: get(&rx.answers),
            errors: get(&rx.errors) + get(&r.timeouts),
            bytes_sent: get(&tx.bytes_sent),
            bytes_received: get(&rx.bytes_received),
            reconnects: get(&r.reconnects),
            latency_total: Duration::from_nanos(get(&r.latency_ns)),
            latency_buckets: std::array::from_fn(|i| get(&r.buckets[i])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_buckets() {
        let c = Counters::default();
        c.sent(100);
        c.sent(50);
        c.received(40, false);
        c.received(30, true);
        c.answered(Duration::from_micros(5));
        c.answered(Duration::from_micros(300));
        c.timed_out();
        c.reconnected();
        let s = c.snapshot("a:1");
        assert_eq!((s.requests, s.answers, s.errors), (2, 2, 2));
        assert_eq!((s.bytes_sent, s.bytes_received, s.reconnects), (150, 70, 1));
        assert_eq!((s.latency_buckets[0], s.latency_buckets[5]), (1, 1));
        assert_eq!(s.mean_latency(), Duration::from_nanos(152_500));
        assert_eq!(TransportStats::default().mean_latency(), Duration::ZERO);
    }
}
