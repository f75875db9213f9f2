//! `farmem-bench paging`: paging mode vs object mode vs kernel swap vs all-local.
//!
//! One working set of `factor x budget` bytes (u64 words), three phases per mode: sequential
//! populate, random 8-byte reads, random 8-byte writes (same seed, so every mode must return the
//! same read checksum, which is checked). Also measured in the same run: the bare cost of a
//! userfaultfd fault (zero-fill, no backend), a bare 4 KiB TCP round trip on loopback, the pager's
//! fault service time, and the bytes written back by cache-line vs whole-page write-back.

mod child;
pub(crate) use child::ServerProcess;
mod kernel;
mod refs;
mod report;
mod scan;
mod workload;

use std::path::PathBuf;

use anyhow::Context;
use farmem::paging::{self, PagedRegion, PagingAlloc, PagingConfig};

use self::child::{make_backend, serve_child};
use self::kernel::kernel_swap;
use self::refs::{backend_get_4k_us, bare_tcp_rtt_us, bare_uffd_fault_us};
use self::report::{Report, phases_json};
use self::workload::{Paged, object_mode, transparent, workload};

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
    #[arg(long, default_value_t = 0)]
    spin_us: u64,
    /// Skip the kernel-swap run.
    #[arg(long)]
    no_kswap: bool,
    /// Size of the sequential-scan region in MiB (scanned at 10% local; 0 skips the scan).
    #[arg(long, default_value_t = 256)]
    scan_mib: usize,
    /// Run only the sequential scan.
    #[arg(long)]
    scan_only: bool,
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

    if args.scan_mib > 0 && paging::available().is_ok() {
        scan::run(args.backend, args.scan_mib << 20, &mut r)?;
    }
    if args.scan_only {
        return write_json(&args, &r);
    }

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
            r.num(
                "paging_read_reclaim_waits",
                (s_read.reclaim_waits - s_pop.reclaim_waits) as f64,
            );
            r.num("paging_refaults", s_write.refaults as f64);
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
                 (target <= 1.2x)",
                fault_us / fault_ref,
                app_fault_us / fault_ref
            );
            println!(
                "  per read fault in the pager: backend {backend_us:.1} us (4 KiB get alone \
                 {get_us:.1} us); background reclaim {evict_us:.1} us per fault, off the fault \
                 path ({} faults waited for it)",
                s_read.reclaim_waits - s_pop.reclaim_waits
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
    write_json(&args, &r)?;
    drop(server_child);
    Ok(())
}

/// Writes the figures to `--json`, if given.
fn write_json(args: &Args, r: &Report) -> anyhow::Result<()> {
    if let Some(path) = &args.json {
        std::fs::write(path, r.to_json()).with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
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
