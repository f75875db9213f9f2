//! `farmem-bench transport`: memory-server get/put throughput and latency, each compared with a
//! bare TCP reference measured in the same run (ping-pong RTT of the same size, bulk stream).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use farmem::Backend;
use farmem::backend::{ClientTls, TcpBackend, TcpConfig, Ticket};
use serde_json::json;

use crate::common::{self, Latency, TargetServer};
use crate::transport_refs::{IdleConnections, redis_gets};

/// Options of `farmem-bench transport`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Object size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Requests in flight per client thread.
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// Client threads (each with its own connection).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Distinct objects cycled through.
    #[arg(long, default_value_t = 4096)]
    pub objects: u64,
    /// Use this memory server instead of starting one on loopback.
    #[arg(long)]
    pub server: Option<String>,
    /// Shared-secret token for `--server`.
    #[arg(long)]
    pub token: Option<String>,
    /// Do not pin client and server threads to separate CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// Run the standard matrix (64 B at depths 1, 16 and 256; 4 KiB at depths 32 and 128) instead of one
    /// configuration.
    #[arg(long)]
    pub matrix: bool,
    /// Objects stored when measuring the server's memory overhead per object (0 = skip).
    #[arg(long, default_value_t = 1_000_000)]
    pub overhead_objects: u64,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The started server serves TLS with this PEM certificate chain (with --tls-key); the
    /// client trusts --tls-ca.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Connect over TLS, trusting this CA (PEM).
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Also measure gets while this many idle authenticated connections are open (compared
    /// with the gets measured just before and after them).
    #[arg(long, default_value_t = 0)]
    pub idle_conns: usize,
    /// Also measure Redis GETs of the same size, pipeline depth and connections with
    /// `redis-benchmark` against a `redis-server` started (and stopped) here.
    #[arg(long)]
    pub redis: bool,
}

/// Runs the benchmark.
pub fn run(args: Args) -> anyhow::Result<()> {
    let pin = !args.no_pin && common::cpus() >= 2;
    let (client_cpu, server_cpu) = if pin {
        (Some(0), Some(1))
    } else {
        (None, None)
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => {
            let (c, k) = (std::fs::read(c)?, std::fs::read(k)?);
            Some(farmem_server::ServerTls::from_pem(&c, &k)?)
        }
        _ => None,
    };
    let server = TargetServer::start_tls(args.server.as_deref(), u64::MAX, server_cpu, tls)?;
    let configs = if args.matrix {
        vec![(64, 1), (64, 16), (64, 256), (4096, 32), (4096, 128)]
    } else {
        vec![(args.size, args.depth)]
    };
    let bulk = common::bulk_tcp_bytes_per_s(Duration::from_secs(1), server_cpu, client_cpu)?;
    println!(
        "transport: server {}{}, {} client thread(s), bare bulk loopback TCP {}",
        server.addr,
        if server.is_local() {
            " (started here)"
        } else {
            ""
        },
        args.threads,
        common::human_rate(bulk)
    );
    let overhead = if args.overhead_objects > 0 {
        let o = server_overhead(args.overhead_objects, 64)?;
        println!(
            "  server memory overhead: {o:.1} bytes/object beyond the payload \
             ({} objects of 64 B, RSS delta of the server's storage engine)",
            args.overhead_objects
        );
        Some(o)
    } else {
        None
    };
    let mut results = Vec::new();
    for (size, depth) in configs {
        let a = Args {
            size,
            depth,
            ..args.clone()
        };
        let mut r = run_one(&a, &server, bulk, client_cpu, server_cpu)?;
        r["server_overhead_bytes_per_object"] = json!(overhead);
        results.push(r);
    }
    if let Some(path) = &args.json {
        let v = if results.len() == 1 {
            results.remove(0)
        } else {
            json!({ "runs": results })
        };
        common::write_json(path, &v)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Resident memory of this process in bytes.
fn rss_bytes() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").context("reading /proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .context("parsing /proc/self/statm")?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * u64::try_from(page).unwrap_or(4096))
}

/// Memory the server's storage engine uses per object beyond the payload: RSS growth while
/// `n` objects of `size` bytes are stored in one session namespace, minus the payload.
fn server_overhead(n: u64, size: usize) -> anyhow::Result<f64> {
    use farmem_store::{Budget, Namespace};
    let ns = Namespace::new(Arc::new(Budget::new(u64::MAX)), 1 << 20);
    let data = vec![1u8; size];
    let before = rss_bytes()?;
    for id in 0..n {
        ns.put(id.wrapping_mul(0x9E37_79B9_7F4A_7C15), &data)?;
    }
    let after = rss_bytes()?;
    anyhow::ensure!(ns.len() == n, "objects lost while measuring overhead");
    drop(ns);
    Ok((after.saturating_sub(before) as f64 - (n as usize * size) as f64) / n as f64)
}

/// CPU time (user + system) this process has used so far, in seconds.
pub(crate) fn cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid value; getrusage writes it for this process.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, exclusively borrowed out pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

struct Phase {
    ops: u64,
    secs: f64,
    /// CPU seconds used by this process (client, and the server when it runs here).
    cpu: f64,
    latencies_ns: Vec<u64>,
}

fn run_one(
    a: &Args,
    server: &TargetServer,
    bulk: f64,
    client_cpu: Option<usize>,
    server_cpu: Option<usize>,
) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        a.size > 0 && a.depth > 0 && a.threads > 0,
        "size, depth and threads must be positive"
    );
    let rtt = common::tcp_rtt(a.size, 20_000, server_cpu, client_cpu)?;
    let mut cfg = TcpConfig::new([server.addr.clone()]).connections_per_server(a.threads);
    if let Some(t) = &a.token {
        cfg = cfg.token(t.as_bytes().to_vec());
    }
    if let Some(ca) = &a.tls_ca {
        cfg = cfg.tls(ClientTls::from_ca_pem(&std::fs::read(ca)?)?);
    }
    let backend = Arc::new(TcpBackend::connect(cfg).context("connecting to the memory server")?);
    // Populate.
    let data = vec![0x5Au8; a.size];
    let ids: Vec<u64> = (0..a.objects).collect();
    for chunk in ids.chunks(512) {
        let items: Vec<(u64, &[u8])> = chunk.iter().map(|&i| (i, data.as_slice())).collect();
        backend.put_many(&items)?;
    }
    let put = phase(a, &backend, client_cpu, true)?;
    let get = phase(a, &backend, client_cpu, false)?;
    let get_cpu_us = get.cpu * 1e6 / get.ops.max(1) as f64;
    let mut lat = get.latencies_ns;
    let glat = Latency::from_nanos(&mut lat);
    let get_ops = get.ops as f64 / get.secs;
    let put_ops = put.ops as f64 / put.secs;
    let get_bytes = get_ops * a.size as f64;
    let refs = references(
        a,
        server,
        &backend,
        client_cpu,
        server_cpu,
        get_ops,
        glat.p50_us,
    )?;
    backend.free(&ids)?;
    println!(
        "  {} B x depth {} x {} thread(s): get {:.0} ops/s ({}), p50 {:.2} us, p99 {:.2} us | \
         put {:.0} ops/s | CPU {:.2} us/get | bare TCP RTT p50 {:.2} us -> get p50 / RTT = {:.2}, get bytes / bulk = {:.2}",
        a.size,
        a.depth,
        a.threads,
        get_ops,
        common::human_rate(get_bytes),
        glat.p50_us,
        glat.p99_us,
        put_ops,
        get_cpu_us,
        rtt.p50_us,
        glat.p50_us / rtt.p50_us,
        get_bytes / bulk
    );
    Ok(json!({
        "op_size": a.size,
        "depth": a.depth,
        "threads": a.threads,
        "seconds_per_phase": a.seconds,
        "get_ops_per_s": get_ops,
        "put_ops_per_s": put_ops,
        "get_p50_us": glat.p50_us,
        "get_p99_us": glat.p99_us,
        "get_mean_us": glat.mean_us,
        "get_bytes_per_s": get_bytes,
        "put_bytes_per_s": put_ops * a.size as f64,
        "get_cpu_us_per_op": get.cpu * 1e6 / get.ops.max(1) as f64,
        "put_cpu_us_per_op": put.cpu * 1e6 / put.ops.max(1) as f64,
        "tcp_rtt_us": rtt.p50_us,
        "tcp_rtt_p99_us": rtt.p99_us,
        "bulk_tcp_bytes_per_s": bulk,
        "get_p50_over_tcp_rtt": glat.p50_us / rtt.p50_us,
        "get_bytes_over_bulk_tcp": get_bytes / bulk,
        "server": server.addr,
        "pinned": client_cpu.is_some(),
        "tls": a.tls_ca.is_some(),
        "references": refs,
    }))
}

/// The optional same-run references: Redis, and gets with idle connections held open.
fn references(
    a: &Args,
    server: &TargetServer,
    backend: &Arc<TcpBackend>,
    client_cpu: Option<usize>,
    server_cpu: Option<usize>,
    get_ops: f64,
    get_p50: f64,
) -> anyhow::Result<serde_json::Value> {
    let mut out = json!({});
    if a.idle_conns > 0 {
        let token = a.token.as_deref().map(str::as_bytes);
        let idle = IdleConnections::open(&server.addr, a.idle_conns, token)?;
        let loaded = phase(a, backend, client_cpu, false)?;
        let n = idle.len();
        drop(idle);
        std::thread::sleep(Duration::from_millis(500));
        let after = phase(a, backend, client_cpu, false)?;
        let ops = |p: &Phase| p.ops as f64 / p.secs;
        let p50 = |p: Phase| Latency::from_nanos(&mut { p.latencies_ns }).p50_us;
        let (loaded_ops, after_ops) = (ops(&loaded), ops(&after));
        let ratio = loaded_ops / ((get_ops + after_ops) / 2.0);
        let (loaded_p50, after_p50) = (p50(loaded), p50(after));
        let p50_ratio = loaded_p50 / ((get_p50 + after_p50) / 2.0);
        println!(
            "  with {n} idle connections: get {loaded_ops:.0} ops/s, p50 {loaded_p50:.2} us | \
             without (before/after): {get_ops:.0}/{after_ops:.0} ops/s, p50 {get_p50:.2}/{after_p50:.2} us \
             -> throughput ratio {ratio:.3}, p50 ratio {p50_ratio:.3}"
        );
        out["idle_conns"] = json!(n);
        out["idle_get_ops_per_s"] = json!(loaded_ops);
        out["after_idle_get_ops_per_s"] = json!(after_ops);
        out["idle_over_unloaded"] = json!(ratio);
        out["idle_get_p50_us"] = json!(loaded_p50);
        out["after_idle_get_p50_us"] = json!(after_p50);
        out["idle_p50_over_unloaded"] = json!(p50_ratio);
    }
    if a.redis {
        let r = redis_gets(
            a.size, a.depth, a.threads, a.objects, a.seconds, server_cpu, client_cpu,
        )?;
        println!(
            "  redis-benchmark GET -d {} -P {} -c {}: {r:.0} req/s -> farmem get / redis = {:.2}",
            a.size,
            a.depth,
            a.threads,
            get_ops / r
        );
        out["redis_get_ops_per_s"] = json!(r);
        out["get_over_redis"] = json!(get_ops / r);
    }
    Ok(out)
}

/// Runs gets or puts for `a.seconds` on `a.threads` threads with `a.depth` requests in flight.
fn phase(
    a: &Args,
    backend: &Arc<TcpBackend>,
    client_cpu: Option<usize>,
    puts: bool,
) -> anyhow::Result<Phase> {
    let duration = Duration::from_secs_f64(a.seconds);
    let threads: Vec<_> = (0..a.threads)
        .map(|t| {
            let b = backend.clone();
            let (depth, size, objects) = (a.depth, a.size, a.objects);
            std::thread::spawn(move || -> anyhow::Result<(u64, Vec<u64>)> {
                if let Some(c) = client_cpu {
                    common::pin_to_cpu(c);
                }
                worker(&b, t as u64, depth, size, objects, duration, puts)
            })
        })
        .collect();
    let t0 = Instant::now();
    let cpu0 = cpu_seconds();
    let mut ops = 0;
    let mut latencies_ns = Vec::new();
    for t in threads {
        let (n, lat) = t.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
        ops += n;
        latencies_ns.extend(lat);
    }
    Ok(Phase {
        cpu: cpu_seconds() - cpu0,
        ops,
        secs: t0
            .elapsed()
            .as_secs_f64()
            .min(duration.as_secs_f64() * 1.05)
            .max(1e-9),
        latencies_ns,
    })
}

fn worker(
    b: &TcpBackend,
    seed: u64,
    depth: usize,
    size: usize,
    objects: u64,
    duration: Duration,
    puts: bool,
) -> anyhow::Result<(u64, Vec<u64>)> {
    let data = vec![0xA5u8; size];
    let mut latencies = Vec::with_capacity(1 << 20);
    let mut next = seed.wrapping_mul(7919) % objects;
    let mut ops = 0u64;
    let t0 = Instant::now();
    let mut inflight: VecDeque<(Ticket, Instant)> = VecDeque::with_capacity(depth);
    let mut buf = vec![0u8; size];
    let mut stopping = false;
    loop {
        stopping = stopping || (ops.is_multiple_of(64) && t0.elapsed() >= duration);
        if !stopping {
            // Write once half the window is queued, so the server works on one half while we
            // collect the other (client and server overlap instead of taking turns).
            let mut queued = 0;
            while inflight.len() < depth {
                let id = next;
                next = (next + 1) % objects;
                let t = if puts {
                    b.submit_put(id, &data)?
                } else {
                    b.submit_get(id)?
                };
                inflight.push_back((t, Instant::now()));
                queued += 1;
                if queued >= depth.div_ceil(2) {
                    b.flush();
                    queued = 0;
                }
            }
        }
        let Some((t, start)) = inflight.pop_front() else {
            break;
        };
        if puts {
            b.wait_done(t)?;
        } else {
            b.wait_get_into(t, &mut buf)?;
        }
        if latencies.len() < latencies.capacity() {
            latencies.push(start.elapsed().as_nanos() as u64);
        }
        ops += 1;
    }
    Ok((ops, latencies))
}
