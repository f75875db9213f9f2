//! Helpers shared by the benchmarks: a memory server to talk to, bare-TCP reference
//! measurements, percentiles, CPU pinning and JSON output.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use farmem_server::{Server, ServerConfig, ServerHandle};

/// The memory server a benchmark talks to: one it started on loopback, or `--server ADDR`.
pub struct TargetServer {
    /// Address to connect to.
    pub addr: String,
    handle: Option<ServerHandle>,
}

impl TargetServer {
    /// Uses `external` when given, else starts a server on `127.0.0.1:0` with `capacity`.
    ///
    /// When `pin_cpu` is given, the server's threads run on that CPU (they inherit the
    /// affinity of the thread that starts them); the calling thread is left unpinned.
    pub fn start(
        external: Option<&str>,
        capacity: u64,
        pin_cpu: Option<usize>,
    ) -> anyhow::Result<Self> {
        Self::start_tls(external, capacity, pin_cpu, None)
    }

    /// As [`TargetServer::start`]; a server started here serves TLS with `tls`.
    pub fn start_tls(
        external: Option<&str>,
        capacity: u64,
        pin_cpu: Option<usize>,
        tls: Option<farmem_server::ServerTls>,
    ) -> anyhow::Result<Self> {
        if let Some(a) = external {
            return Ok(Self {
                addr: a.to_string(),
                handle: None,
            });
        }
        let config = ServerConfig {
            capacity,
            tls,
            ..Default::default()
        };
        let handle = on_cpu(pin_cpu, move || Server::start(config))
            .context("starting a loopback memory server")?;
        Ok(Self {
            addr: handle.addr().to_string(),
            handle: Some(handle),
        })
    }

    /// Whether this process started the server.
    pub fn is_local(&self) -> bool {
        self.handle.is_some()
    }
}

/// Number of CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pins the calling thread to `cpu` (best effort; returns whether it worked).
pub fn pin_to_cpu(cpu: usize) -> bool {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write the local set, and
    // sched_setaffinity(0, ..) reads it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu % libc::CPU_SETSIZE as usize, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Runs `f` on a helper thread pinned to `cpu` (so threads `f` spawns inherit the pinning).
pub fn on_cpu<T: Send + 'static>(cpu: Option<usize>, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        if let Some(c) = cpu {
            pin_to_cpu(c);
        }
        f()
    })
    .join()
    .expect("helper thread panicked")
}

/// Latency figures in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl Latency {
    /// Summarises samples given in nanoseconds (sorts them).
    pub fn from_nanos(samples: &mut [u64]) -> Self {
        samples.sort_unstable();
        let mean = samples.iter().sum::<u64>() as f64 / samples.len().max(1) as f64;
        Self {
            p50_us: percentile(samples, 50.0) / 1e3,
            p99_us: percentile(samples, 99.0) / 1e3,
            mean_us: mean / 1e3,
        }
    }
}

/// The `p`-th percentile (0..=100) of sorted samples (nearest rank); 0 when empty.
pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

/// Bare blocking TCP ping-pong of `size`-byte messages over loopback: the reference a
/// depth-1 get is compared with. The echo side is a blocking thread with `TCP_NODELAY` (the
/// same style as the memory server); `echo_cpu`/`client_cpu` pin the two sides.
pub fn tcp_rtt(
    size: usize,
    iters: usize,
    echo_cpu: Option<usize>,
    client_cpu: Option<usize>,
) -> anyhow::Result<Latency> {
    let mut samples = tcp_rtt_samples(size, iters, echo_cpu, client_cpu)?;
    Ok(Latency::from_nanos(&mut samples))
}

/// [`tcp_rtt`]'s raw samples in nanoseconds, for benchmarks that interleave them with their own.
pub fn tcp_rtt_samples(
    size: usize,
    iters: usize,
    echo_cpu: Option<usize>,
    client_cpu: Option<usize>,
) -> anyhow::Result<Vec<u64>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        if let Some(c) = echo_cpu {
            pin_to_cpu(c);
        }
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; size];
        loop {
            if s.read_exact(&mut buf).is_err() {
                return Ok(());
            }
            s.write_all(&buf)?;
        }
    });
    let samples = on_cpu(client_cpu, move || -> anyhow::Result<Vec<u64>> {
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        let msg = vec![7u8; size];
        let mut buf = vec![0u8; size];
        let mut samples = Vec::with_capacity(iters);
        for i in 0..iters + iters / 10 {
            let t = Instant::now();
            s.write_all(&msg)?;
            s.read_exact(&mut buf)?;
            if i >= iters / 10 {
                samples.push(t.elapsed().as_nanos() as u64);
            }
        }
        Ok(samples)
    })?;
    let _ = echo.join();
    Ok(samples)
}

/// Throughput of a bare bulk TCP stream over loopback (one sender, one receiver) in bytes/s.
pub fn bulk_tcp_bytes_per_s(
    duration: Duration,
    sender_cpu: Option<usize>,
    receiver_cpu: Option<usize>,
) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        if let Some(c) = sender_cpu {
            pin_to_cpu(c);
        }
        let (mut s, _) = listener.accept()?;
        let chunk = vec![1u8; 256 << 10];
        while s.write_all(&chunk).is_ok() {}
        Ok(())
    });
    let rate = on_cpu(receiver_cpu, move || -> anyhow::Result<f64> {
        let mut s = TcpStream::connect(addr)?;
        let mut buf = vec![0u8; 256 << 10];
        let t0 = Instant::now();
        let mut total = 0u64;
        while t0.elapsed() < duration {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        Ok(total as f64 / t0.elapsed().as_secs_f64())
    })?;
    let _ = sender.join();
    Ok(rate)
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Formats a byte rate for humans.
pub fn human_rate(bytes_per_s: f64) -> String {
    if bytes_per_s >= 1e9 {
        format!("{:.2} GB/s", bytes_per_s / 1e9)
    } else {
        format!("{:.1} MB/s", bytes_per_s / 1e6)
    }
}

/// Pages of `[addr, addr + len)` resident in this process now (`mincore`), and the pages the
/// range spans; `None` if the kernel refuses (the range is not mapped).
pub fn resident_pages(addr: usize, len: usize) -> Option<(usize, usize)> {
    const PAGE: usize = 4096;
    let first = addr & !(PAGE - 1);
    let end = (addr + len).div_ceil(PAGE) * PAGE;
    let pages = (end - first) / PAGE;
    let mut vec = vec![0u8; pages];
    // SAFETY: mincore only reads the page tables of the range and writes one byte per page of
    // it into `vec`, which holds exactly `pages` bytes; it fails without side effects on an
    // unmapped range.
    let rc = unsafe { libc::mincore(first as *mut libc::c_void, end - first, vec.as_mut_ptr()) };
    (rc == 0).then(|| (vec.iter().filter(|&&b| b & 1 != 0).count(), pages))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[5], 0.0), 5.0);
    }
}
