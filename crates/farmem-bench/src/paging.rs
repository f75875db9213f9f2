//! `farmem-bench paging`: paging mode vs object mode vs kernel swap vs all-local.
//!
//! One working set of `factor x budget` bytes (u64 words), three phases per mode: sequential
//! populate, random 8-byte reads, random 8-byte writes (same seed, so every mode must return the
//! same read checksum, which is checked). Also measured in the same run: the bare cost of a
//! userfaultfd fault (zero-fill, no backend), a bare 4 KiB TCP round trip on loopback, the pager's
//! fault service time, and the bytes written back by cache-line vs whole-page write-back.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use farmem::backend::{TcpBackend, TcpConfig};
use farmem::paging::{
    self, AllocConfig, PAGE_SIZE, PagedRegion, PagingAlloc, PagingConfig, PagingStats,
};
use farmem::{Backend, EmbeddedStore, FarSlice, Runtime, RuntimeConfig};
use farmem_server::{Server, ServerConfig};
use rand::rngs::SmallRng;
use rand::{Rng, RngExt, SeedableRng};

use crate::kswap;

/// Where the paged pages live.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// A memory server on loopback, in a child process (the fair setting).
    Tcp,
    /// In-process store (no network).
    Embedded,
}

/// Options of `farmem-bench paging`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Local memory budget in MiB (paging budget and kernel-swap cgroup limit).
    #[arg(long, default_value_t = 64)]
    budget_mib: usize,
    /// Working set as a multiple of the budget.
    #[arg(long, default_value_t = 4)]
    factor: usize,
    /// Operations per random phase.
    #[arg(long, default_value_t = 1_000_000)]
    ops: usize,
    /// Backend of the paging mode.
    #[arg(long, value_enum, default_value = "tcp")]
    backend: BackendKind,
    /// Chunk size of the object-mode run (bytes per `FarSlice` object).
    #[arg(long, default_value_t = 4096)]
    object_chunk_bytes: usize,
    /// Microseconds the pager polls for the next fault before sleeping (0: never spin).
    #[arg(long, default_value_t = 50)]
    spin_us: u64,
    /// Skip the kernel-swap run.
    #[arg(long)]
    no_kswap: bool,
    /// Write every figure to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Internal: run the all-local workload and print its JSON result (kernel-swap child).
    #[arg(long, hide = true)]
    kswap_child: bool,
    /// Internal: run a memory server, print its address, serve until stdin closes.
    #[arg(long, hide = true)]
    serve_child: bool,
    /// Internal, with `--serve-child`: lock the server's memory (it holds swapped-out pages, so
    /// it must never be swapped itself).
    #[arg(long, hide = true)]
    lock_memory: bool,
}

/// The transparent mode needs the global allocator to be [`PagingAlloc`]; it forwards everything
/// to the system allocator until [`PagingAlloc::enable`] is called (only by this subcommand).
#[global_allocator]
static ALLOC: PagingAlloc = PagingAlloc::new();

/// A memory server in a child process (the current binary re-executed with `--serve-child`).
///
/// Every mode uses one, like a real memory server on another machine. The transparent mode could
/// not use an in-process server anyway: the server's threads would allocate large buffers in paged
/// memory and then fault on pages only the pager, waiting for that very server, could bring in.
struct ServerProcess {
    child: std::process::Child,
    addr: String,
}

impl ServerProcess {
    fn start(capacity: u64, lock_memory: bool) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the current binary")?;
        let mut cmd = std::process::Command::new(exe);
        cmd.args(["paging", "--serve-child", "--budget-mib"])
            .arg((capacity >> 20).max(1).to_string());
        if lock_memory {
            cmd.arg("--lock-memory");
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("starting the memory-server child")?;
        let mut line = String::new();
        let out = child.stdout.take().context("server child stdout")?;
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)?;
        let addr = line.trim().to_string();
        anyhow::ensure!(!addr.is_empty(), "memory-server child printed no address");
        Ok(Self { child, addr })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        if self.child.wait().is_err() {
            let _ = self.child.kill();
        }
    }
}

/// `--serve-child`: a memory server of `capacity` bytes until stdin reaches end of file.
fn serve_child(capacity: u64, lock_memory: bool) -> anyhow::Result<()> {
    if lock_memory {
        crate::netswap::lock_memory().context("locking the swap server's memory")?;
    }
    let server = Server::start(ServerConfig {
        capacity,
        ..Default::default()
    })?;
    println!("{}", server.addr());
    std::io::stdout().flush()?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    server.shutdown();
    Ok(())
}

/// Runs the workload on an ordinary `Vec` allocated through the transparent paging allocator.
fn transparent(
    args: &Args,
    budget: usize,
    ws: usize,
) -> anyhow::Result<(Phases, Option<ServerProcess>)> {
    let (backend, server) = make_backend(args.backend, 2 * ws as u64)?;
    let mut config = AllocConfig::new(budget);
    config.paging.pager_spin_us = args.spin_us;
    PagingAlloc::enable(backend, config)?;
    let mut v = vec![0u64; ws / 8];
    anyhow::ensure!(
        PagingAlloc::paged_bytes() as usize >= ws,
        "the working set was not placed in paged memory"
    );
    let p = workload(&mut v, args.ops);
    drop(v);
    Ok((p, server))
}

/// Timings of one mode.
#[derive(Clone, Copy, Debug, Default)]
struct Phases {
    populate_s: f64,
    read_ops_s: f64,
    write_ops_s: f64,
    checksum: u64,
}

/// The access stream's generator: seeded, so every mode makes the same accesses.
fn access_rng() -> SmallRng {
    SmallRng::seed_from_u64(0xDEAD_BEEF_1234_5678)
}

/// Memory the workload runs on.
trait Words {
    fn ptr(&mut self) -> *mut u64;
    fn words(&self) -> usize;
    /// Called between phases (e.g. to flush dirty pages); returns nothing.
    fn between(&mut self, _phase: &str) {}
}

impl Words for Vec<u64> {
    fn ptr(&mut self) -> *mut u64 {
        self.as_mut_ptr()
    }
    fn words(&self) -> usize {
        self.len()
    }
}

/// The three phases over `mem`.
fn workload(mem: &mut dyn Words, ops: usize) -> Phases {
    let n = mem.words();
    let p = mem.ptr();
    let t = Instant::now();
    for i in 0..n {
        // SAFETY: `i < n`, the memory holds `n` words and is alive for the call.
        unsafe { p.add(i).write(i as u64 * 0x9E37_79B9) };
    }
    let populate_s = t.elapsed().as_secs_f64();
    mem.between("populate");
    let mut rng = access_rng();
    let mut checksum = 0u64;
    let t = Instant::now();
    for _ in 0..ops {
        let i = rng.random_range(0..n);
        // SAFETY: as above.
        checksum = checksum.wrapping_add(unsafe { p.add(i).read_volatile() });
    }
    let read_s = t.elapsed().as_secs_f64();
    mem.between("reads");
    let t = Instant::now();
    for _ in 0..ops {
        let r = rng.next_u64();
        let i = r as usize % n;
        // SAFETY: as above.
        unsafe { p.add(i).write_volatile(r) };
    }
    let write_s = t.elapsed().as_secs_f64();
    mem.between("writes");
    Phases {
        populate_s,
        read_ops_s: ops as f64 / read_s,
        write_ops_s: ops as f64 / write_s,
        // 52 bits, so that it survives a round trip through a JSON number.
        checksum: checksum & ((1 << 52) - 1),
    }
}

/// A paged region as workload memory, recording its counters after each phase.
struct Paged {
    region: PagedRegion,
    marks: Vec<(String, PagingStats)>,
}

impl Words for Paged {
    fn ptr(&mut self) -> *mut u64 {
        self.region.as_ptr().cast()
    }
    fn words(&self) -> usize {
        self.region.len() / 8
    }
    fn between(&mut self, phase: &str) {
        // Write back what the phase dirtied, so each phase's write-back is counted on its own.
        if let Err(e) = self.region.flush() {
            tracing::error!("flush after {phase}: {e}");
        }
        self.marks.push((phase.to_string(), self.region.stats()));
    }
}

/// The figures as a flat JSON object (numbers, `null` for a non-finite one, and strings).
#[derive(Default)]
struct Report(serde_json::Map<String, serde_json::Value>);

impl Report {
    fn num(&mut self, key: &str, v: f64) {
        let v = serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into);
        self.0.insert(key.into(), v);
    }
    fn int(&mut self, key: &str, v: u64) {
        self.0.insert(key.into(), v.into());
    }
    fn text(&mut self, key: &str, v: &str) {
        self.0.insert(key.into(), v.into());
    }
    fn to_json(&self) -> String {
        format!("{:#}\n", serde_json::Value::Object(self.0.clone()))
    }
}

fn phases_json(r: &mut Report, prefix: &str, p: &Phases) {
    r.num(&format!("{prefix}_populate_s"), p.populate_s);
    r.num(&format!("{prefix}_read_ops_s"), p.read_ops_s);
    r.num(&format!("{prefix}_write_ops_s"), p.write_ops_s);
    r.int(&format!("{prefix}_read_checksum"), p.checksum);
}

/// Cost of a zero-fill userfaultfd fault through the pager (no backend I/O), in us: the best
/// mean of 5 rounds of 2048 first touches (the machine may be shared).
fn bare_uffd_fault_us() -> anyhow::Result<f64> {
    let pages = 2048;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let region = PagedRegion::new(
            pages * PAGE_SIZE,
            Arc::new(EmbeddedStore::new()),
            PagingConfig::new(pages * PAGE_SIZE),
        )?;
        let p = region.as_ptr();
        let t = Instant::now();
        let mut sum = 0u64;
        for i in 0..pages {
            // SAFETY: in bounds of the live region.
            sum += u64::from(unsafe { p.add(i * PAGE_SIZE).read_volatile() });
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e6 / pages as f64);
        anyhow::ensure!(sum == 0, "fresh pages must read as zero");
    }
    Ok(best)
}

/// Median 4 KiB request / 4 KiB reply round trip over loopback TCP, in us.
fn bare_tcp_rtt_us() -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; PAGE_SIZE];
        while s.read_exact(&mut buf).is_ok() {
            s.write_all(&buf)?;
        }
        Ok(())
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let mut buf = vec![7u8; PAGE_SIZE];
    let mut samples = Vec::with_capacity(3000);
    for i in 0..3000 {
        let t = Instant::now();
        c.write_all(&buf)?;
        c.read_exact(&mut buf)?;
        if i >= 200 {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    drop(c);
    let _ = server.join();
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// The same three phases on far objects: the working set as `FarSlice<u64>` chunks of
/// `chunk_bytes` in an object runtime with the same local budget.
fn object_mode(
    backend: Arc<dyn Backend>,
    budget: usize,
    ws: usize,
    ops: usize,
    chunk_bytes: usize,
) -> anyhow::Result<(Phases, farmem::Stats)> {
    let rt = Runtime::new(RuntimeConfig::new(budget).custom_backend(backend))?;
    let cw = (chunk_bytes / 8).max(1);
    let n = ws / 8;
    let mut chunks: Vec<FarSlice<u64>> = Vec::with_capacity(n.div_ceil(cw));
    let t = Instant::now();
    for c in 0..n.div_ceil(cw) {
        let len = cw.min(n - c * cw);
        let mut chunk = FarSlice::new_zeroed(&rt, len)?;
        {
            let s = rt.scope();
            for (k, w) in chunk.write(&s)?.iter_mut().enumerate() {
                *w = (c * cw + k) as u64 * 0x9E37_79B9;
            }
        }
        chunks.push(chunk);
    }
    let populate_s = t.elapsed().as_secs_f64();
    let mut rng = access_rng();
    let mut checksum = 0u64;
    let t = Instant::now();
    {
        let mut s = rt.scope();
        for op in 0..ops {
            let i = rng.random_range(0..n);
            checksum = checksum.wrapping_add(chunks[i / cw].read(&s)?[i % cw]);
            if op % 64 == 63 {
                s.renew();
            }
        }
    }
    let read_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    {
        let mut s = rt.scope();
        for op in 0..ops {
            let r = rng.next_u64();
            let i = r as usize % n;
            chunks[i / cw].write(&s)?[i % cw] = r;
            if op % 64 == 63 {
                s.renew();
            }
        }
    }
    let write_s = t.elapsed().as_secs_f64();
    let stats = rt.stats();
    drop(chunks);
    Ok((
        Phases {
            populate_s,
            read_ops_s: ops as f64 / read_s,
            write_ops_s: ops as f64 / write_s,
            checksum: checksum & ((1 << 52) - 1),
        },
        stats,
    ))
}

/// Mean latency of a 4 KiB `get_into` from `backend`, in us (the backend's share of a fault).
fn backend_get_4k_us(backend: &dyn Backend) -> anyhow::Result<f64> {
    let id = u64::MAX - 7;
    backend.put(id, &[1u8; PAGE_SIZE])?;
    let mut buf = vec![0u8; PAGE_SIZE];
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        backend.get_into(id, &mut buf)?;
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    backend.free(&[id])?;
    Ok(us)
}

/// The backend of a mode, and the loopback memory server behind it (a child process, kept alive
/// by the caller; every mode gets a fresh one).
fn make_backend(
    kind: BackendKind,
    capacity: u64,
) -> anyhow::Result<(Arc<dyn Backend>, Option<ServerProcess>)> {
    Ok(match kind {
        BackendKind::Embedded => (Arc::new(EmbeddedStore::new()), None),
        BackendKind::Tcp => {
            let server = ServerProcess::start(capacity, false)?;
            let backend = TcpBackend::connect(TcpConfig::new([server.addr.clone()]))
                .context("connecting to the memory-server child")?;
            (Arc::new(backend), Some(server))
        }
    })
}

/// The all-local workload in a child under a memory cgroup of `budget` bytes swapping to zram
/// (`net == false`) or to a memory server over TCP in another process (`net == true`). `None`
/// when the device is not available here.
fn kernel_swap(
    args: &Args,
    budget: usize,
    ws: usize,
    net: bool,
    r: &mut Report,
) -> anyhow::Result<Option<Phases>> {
    let (key, label) = if net {
        ("kswap_net", "kernel swap over TCP")
    } else {
        ("kswap", "kernel swap (zram)")
    };
    let why = if net {
        crate::netswap::available()
    } else {
        kswap::available()
    };
    if let Err(why) = why {
        println!("{label}: skipped ({why})");
        r.text(&format!("{key}_skipped"), &why);
        return Ok(None);
    }
    let exe = std::env::current_exe().context("locating the current binary")?;
    let (b, f, o) = (
        args.budget_mib.to_string(),
        args.factor.to_string(),
        args.ops.to_string(),
    );
    let child_args = [
        "paging",
        "--kswap-child",
        "--budget-mib",
        &b,
        "--factor",
        &f,
        "--ops",
        &o,
    ];
    // The swap server: like the other modes' servers, a separate process on loopback.
    let server = if net {
        Some(ServerProcess::start(2 * ws as u64, true)?)
    } else {
        None
    };
    let device = match &server {
        Some(s) => kswap::SwapDevice::Tcp { server: &s.addr },
        None => kswap::SwapDevice::Zram,
    };
    let run = kswap::run_under_retrying(budget as u64, device, &exe, &child_args)?;
    drop(server);
    let out = String::from_utf8_lossy(&run.output.stdout);
    anyhow::ensure!(
        run.output.status.success(),
        "{label} child failed ({}): {}",
        run.output.status,
        String::from_utf8_lossy(&run.output.stderr)
    );
    let figures: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("child output is not JSON: {out}"))?;
    let get = |k: &str| {
        figures[k]
            .as_f64()
            .with_context(|| format!("child output lacks {k}: {out}"))
    };
    let p = Phases {
        populate_s: get("local_populate_s")?,
        read_ops_s: get("local_read_ops_s")?,
        write_ops_s: get("local_write_ops_s")?,
        checksum: figures["local_read_checksum"]
            .as_u64()
            .with_context(|| format!("child output lacks local_read_checksum: {out}"))?,
    };
    phases_json(r, key, &p);
    r.num(&format!("{key}_cgroup_peak_bytes"), run.peak_bytes as f64);
    r.num(&format!("{key}_oom_retries"), f64::from(run.oom_retries));
    let swapped = match &run.net {
        Some(n) => {
            anyhow::ensure!(
                n.daemon.backend_errors == 0,
                "{label}: {} swap requests to the memory server failed",
                n.daemon.backend_errors
            );
            r.num("kswap_net_pages_out", n.daemon.pages_written as f64);
            r.num("kswap_net_pages_in", n.daemon.pages_read as f64);
            r.num(
                "kswap_net_server_bytes_written",
                n.server_bytes_written as f64,
            );
            format!(
                "{} MiB out, {} MiB in over TCP",
                n.daemon.pages_written >> 8,
                n.daemon.pages_read >> 8
            )
        }
        None => {
            r.num("kswap_zram_peak_bytes", run.zram_peak_bytes as f64);
            r.num(
                "kswap_zram_peak_compr_bytes",
                run.zram_peak_compr_bytes as f64,
            );
            format!("zram, peak {} MiB swapped out", run.zram_peak_bytes >> 20)
        }
    };
    println!(
        "{:<13} reads {:>12.0} ops/s   writes {:>12.0} ops/s   ({swapped})",
        format!("{}:", if net { "kswap-net" } else { "kernel swap" }),
        p.read_ops_s,
        p.write_ops_s
    );
    Ok(Some(p))
}

/// Runs the benchmark.
pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.budget_mib > 0, "--budget-mib must be positive");
    anyhow::ensure!(args.factor > 0, "--factor must be positive");
    anyhow::ensure!(args.ops > 0, "--ops must be positive");
    anyhow::ensure!(
        args.object_chunk_bytes >= 8,
        "--object-chunk-bytes must be at least 8"
    );
    let budget = args.budget_mib << 20;
    let ws = budget * args.factor;
    if args.serve_child {
        return serve_child(budget as u64, args.lock_memory);
    }
    if args.kswap_child {
        let mut mem = vec![0u64; ws / 8];
        let p = workload(&mut mem, args.ops);
        let mut r = Report::default();
        phases_json(&mut r, "local", &p);
        print!("{}", r.to_json());
        return Ok(());
    }
    let mut r = Report::default();
    r.num("budget_bytes", budget as f64);
    r.num("working_set_bytes", ws as f64);
    r.num("ops", args.ops as f64);
    r.text("backend", &format!("{:?}", args.backend).to_lowercase());
    println!(
        "paging benchmark: working set {} MiB, local budget {} MiB ({}% local), {} ops per phase",
        ws >> 20,
        args.budget_mib,
        100 / args.factor,
        args.ops
    );

    // All-local.
    let mut mem = vec![0u64; ws / 8];
    let local = workload(&mut mem, args.ops);
    drop(mem);
    phases_json(&mut r, "local", &local);
    println!(
        "all-local:    reads {:>12.0} ops/s   writes {:>12.0} ops/s",
        local.read_ops_s, local.write_ops_s
    );

    // Object mode (before the transparent mode: it must not run on paged memory).
    let object = {
        let (backend, server) = make_backend(args.backend, 2 * ws as u64)?;
        let res = object_mode(backend, budget, ws, args.ops, args.object_chunk_bytes);
        drop(server);
        match res {
            Ok((p, st)) => {
                anyhow::ensure!(
                    p.checksum == local.checksum,
                    "object mode read checksum {} differs from all-local {}",
                    p.checksum,
                    local.checksum
                );
                phases_json(&mut r, "object", &p);
                r.num("object_chunk_bytes", args.object_chunk_bytes as f64);
                r.num("object_misses", st.misses as f64);
                r.num("object_bytes_fetched", st.bytes_fetched as f64);
                r.num("object_bytes_written_back", st.bytes_written_back as f64);
                println!(
                    "object mode:  reads {:>12.0} ops/s   writes {:>12.0} ops/s   (FarSlice chunks \
                     of {} B)",
                    p.read_ops_s, p.write_ops_s, args.object_chunk_bytes
                );
                Some(p)
            }
            Err(e) => {
                println!("object mode: failed ({e:#})");
                r.text("object_failed", &format!("{e:#}"));
                None
            }
        }
    };

    // Paging mode.
    let paging_figs = match paging::available() {
        Err(e) => {
            println!("paging mode: skipped ({e})");
            r.text("paging_skipped", &e.to_string());
            None
        }
        Ok(()) => {
            let uffd_us = bare_uffd_fault_us()?;
            let rtt_us = bare_tcp_rtt_us()?;
            r.num("bare_uffd_fault_us", uffd_us);
            r.num("bare_tcp_rtt_4k_us", rtt_us);
            // Twice the working set: objects carry per-object overhead on the server.
            let (backend, server) = make_backend(args.backend, 2 * ws as u64)?;
            let get_us = backend_get_4k_us(&*backend)?;
            r.num("backend_get_4k_us", get_us);
            let config = PagingConfig {
                pager_spin_us: args.spin_us,
                ..PagingConfig::new(budget)
            };
            let region = PagedRegion::new(ws, backend, config)?;
            let mut paged = Paged {
                region,
                marks: Vec::new(),
            };
            let p = workload(&mut paged, args.ops);
            anyhow::ensure!(
                p.checksum == local.checksum,
                "paging mode read checksum {} differs from all-local {}",
                p.checksum,
                local.checksum
            );
            phases_json(&mut r, "paging", &p);
            let m = |name: &str| {
                paged
                    .marks
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, s)| *s)
                    .unwrap_or_default()
            };
            let (s_pop, s_read, s_write) = (m("populate"), m("reads"), m("writes"));
            let faults = s_read.fetch_faults - s_pop.fetch_faults;
            let fault_us = if faults == 0 {
                0.0
            } else {
                (s_read.fetch_fault_ns - s_pop.fetch_fault_ns) as f64 / faults as f64 / 1000.0
            };
            let sent = (s_write.bytes_sent - s_read.bytes_sent) as f64;
            let whole = (s_write.whole_page_bytes - s_read.whole_page_bytes) as f64;
            let changed = (s_write.bytes_changed - s_read.bytes_changed) as f64;
            let app = 8.0 * args.ops as f64;
            r.num("paging_read_fetch_faults", faults as f64);
            let per_fault = |a: u64, b: u64| {
                if faults == 0 {
                    0.0
                } else {
                    (a - b) as f64 / faults as f64 / 1000.0
                }
            };
            let backend_us = per_fault(s_read.fetch_backend_ns, s_pop.fetch_backend_ns);
            let evict_us = per_fault(s_read.evict_ns, s_pop.evict_ns);
            r.num("paging_fault_backend_us", backend_us);
            r.num("paging_fault_evict_us", evict_us);
            r.num("paging_fault_service_us", fault_us);
            r.num("paging_prefetched", s_write.prefetched as f64);
            r.num("paging_wp_faults", s_write.wp_faults as f64);
            r.num("writes_app_bytes", app);
            r.num("writes_changed_bytes", changed);
            r.num("writes_cacheline_sent_bytes", sent);
            r.num("writes_wholepage_sent_bytes", whole);
            r.num("write_amp_cacheline", sent / app);
            r.num("write_amp_wholepage", whole / app);
            r.num("wholepage_over_cacheline", whole / sent);
            let fault_ref = uffd_us + rtt_us;
            // What the program sees: the read phase's wall time per fetch fault (hits cost ns).
            let app_fault_us = if faults == 0 {
                0.0
            } else {
                args.ops as f64 / p.read_ops_s * 1e6 / faults as f64
            };
            r.num("paging_app_fault_us", app_fault_us);
            r.num("fault_service_over_reference", fault_us / fault_ref);
            r.num("app_fault_over_reference", app_fault_us / fault_ref);
            println!(
                "paging mode:  reads {:>12.0} ops/s   writes {:>12.0} ops/s   ({:?} backend)",
                p.read_ops_s, p.write_ops_s, args.backend
            );
            println!(
                "  fault service (pager: fault read -> page mapped) {fault_us:.1} us, as the \
                 program sees it {app_fault_us:.1} us; reference = bare uffd fault {uffd_us:.1} us \
                 + bare 4 KiB TCP RTT {rtt_us:.1} us = {fault_ref:.1} us: {:.2}x / {:.2}x \
                 (target <= 2x)",
                fault_us / fault_ref,
                app_fault_us / fault_ref
            );
            println!(
                "  per read fault in the pager: backend {backend_us:.1} us (4 KiB get alone \
                 {get_us:.1} us); eviction, done after the wake-up, {evict_us:.1} us"
            );
            println!(
                "  random 8-byte writes: program wrote {:.1} MB; cache-line write-back sent {:.1} MB \
                 (amplification {:.1}x), whole-page would send {:.1} MB ({:.1}x): {:.1}x fewer \
                 bytes (target >= 4x)",
                app / 1e6,
                sent / 1e6,
                sent / app,
                whole / 1e6,
                whole / app,
                whole / sent
            );
            drop(paged);
            drop(server);
            Some(p)
        }
    };

    // Kernel swap: to zram (local, compressed) and to a memory server over TCP.
    let (kswap_figs, kswap_net_figs) = if args.no_kswap {
        println!("kernel swap: skipped (--no-kswap)");
        (None, None)
    } else {
        let zram = kernel_swap(&args, budget, ws, false, &mut r)?;
        let net = kernel_swap(&args, budget, ws, true, &mut r)?;
        (zram, net)
    };
    for (figs, key, label) in [
        (kswap_figs, "kswap", "kernel swap (zram)"),
        (kswap_net_figs, "kswap_net", "kernel swap over TCP"),
    ] {
        if let Some(p) = figs {
            anyhow::ensure!(
                p.checksum == local.checksum,
                "{label} read checksum {} differs from all-local {}",
                p.checksum,
                local.checksum
            );
            if let Some(ob) = object {
                r.num(
                    &format!("object_over_{key}_reads"),
                    ob.read_ops_s / p.read_ops_s,
                );
                println!(
                    "object / {label}: reads {:.2}x, writes {:.2}x",
                    ob.read_ops_s / p.read_ops_s,
                    ob.write_ops_s / p.write_ops_s
                );
            }
        }
    }

    // Transparent mode last: enabling the paging allocator cannot be undone in this process.
    let mut server_child = None;
    if let Some(pg) = paging_figs {
        let (t, server) = transparent(&args, budget, ws)?;
        server_child = server;
        anyhow::ensure!(
            t.checksum == local.checksum,
            "transparent mode read checksum {} differs from all-local {}",
            t.checksum,
            local.checksum
        );
        phases_json(&mut r, "transparent", &t);
        println!(
            "transparent:  reads {:>12.0} ops/s   writes {:>12.0} ops/s   (plain Vec on \
             PagingAlloc; {:.2}x the region's reads)",
            t.read_ops_s,
            t.write_ops_s,
            t.read_ops_s / pg.read_ops_s
        );
    }

    if let (Some(pg), Some(ks)) = (paging_figs, kswap_figs) {
        r.num("paging_over_kswap_reads", pg.read_ops_s / ks.read_ops_s);
        r.num("paging_over_kswap_writes", pg.write_ops_s / ks.write_ops_s);
        println!(
            "paging / kernel swap: reads {:.2}x (target >= 1), writes {:.2}x",
            pg.read_ops_s / ks.read_ops_s,
            pg.write_ops_s / ks.write_ops_s
        );
    }
    if let (Some(pg), Some(kn)) = (paging_figs, kswap_net_figs) {
        r.num("paging_over_kswap_net_reads", pg.read_ops_s / kn.read_ops_s);
        r.num(
            "paging_over_kswap_net_writes",
            pg.write_ops_s / kn.write_ops_s,
        );
        println!(
            "paging / kernel swap over TCP: reads {:.2}x, writes {:.2}x",
            pg.read_ops_s / kn.read_ops_s,
            pg.write_ops_s / kn.write_ops_s
        );
    }
    if let Some(pg) = paging_figs {
        r.num("paging_over_local_reads", pg.read_ops_s / local.read_ops_s);
    }
    if let (Some(pg), Some(ob)) = (paging_figs, object) {
        r.num("object_over_paging_reads", ob.read_ops_s / pg.read_ops_s);
        r.num("object_over_paging_writes", ob.write_ops_s / pg.write_ops_s);
        println!(
            "object / paging: reads {:.2}x, writes {:.2}x",
            ob.read_ops_s / pg.read_ops_s,
            ob.write_ops_s / pg.write_ops_s
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, r.to_json()).with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    drop(server_child);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips_numbers() {
        let mut r = Report::default();
        r.num("a_b", 1.5);
        r.text("s", "x\"y");
        r.num("c", 42.0);
        r.num("nan", f64::NAN);
        r.int("big", u64::MAX);
        let j: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(j["a_b"].as_f64(), Some(1.5));
        assert_eq!(j["c"].as_f64(), Some(42.0));
        assert_eq!(j["s"].as_str(), Some("x\"y"));
        assert!(j["nan"].is_null());
        assert_eq!(j["big"].as_u64(), Some(u64::MAX));
        assert!(j.get("missing").is_none());
    }

    #[test]
    fn workload_is_deterministic() {
        let mut a = vec![0u64; 4096];
        let mut b = vec![0u64; 4096];
        assert_eq!(
            workload(&mut a, 1000).checksum,
            workload(&mut b, 1000).checksum
        );
    }
}
