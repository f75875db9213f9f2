//! A sequential scan of a paged region at 10% local memory, with and without prefetching,
//! against the transport's bulk bandwidth for the same bytes.

use std::time::Instant;

use farmem::paging::{PAGE_SIZE, PagedRegion, PagingConfig, PagingStats};

use super::BackendKind;
use super::child::make_backend;
use super::report::Report;

/// This process's resident set in bytes (`VmRSS`), 0 if unknown.
fn rss() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<usize>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// One scan: populate a region of `bytes` at `budget`, write it back, then read every word in
/// order. Returns MB/s of the read pass, its counters, the peak RSS growth, and the bulk
/// bandwidth of fetching the same pages with batched gets of 1 MiB (when `bulk`; the mean of a
/// pass right before and one right after the scan).
fn one(
    kind: BackendKind,
    bytes: usize,
    budget: usize,
    prefetch: bool,
    bulk: bool,
) -> anyhow::Result<(f64, PagingStats, usize, Option<f64>)> {
    let (backend, server) = make_backend(kind, 2 * bytes as u64)?;
    // Every page gets a non-zero word, so every page is stored in the backend.
    let mut cfg = PagingConfig::new(budget);
    if !prefetch {
        cfg.readahead_max_pages = 0;
    }
    let rss0 = rss();
    let region = PagedRegion::new(bytes, backend.clone(), cfg)?;
    let words = bytes / 8;
    let p = region.as_ptr().cast::<u64>();
    for i in (0..words).step_by(PAGE_SIZE / 8) {
        // SAFETY: `i < words`; the region is alive and only this thread uses it.
        unsafe { p.add(i).write(i as u64 + 1) };
    }
    region.flush()?;
    let ids: Vec<u64> = (0..bytes)
        .step_by(PAGE_SIZE)
        .map(|o| region.object_id(o))
        .collect();
    // The bulk bandwidth right before and right after the scan (the machine is shared: the
    // mean of both is the fairest reference).
    let bulk_before = if bulk {
        Some(bulk_get(&*backend, &ids, bytes)?)
    } else {
        None
    };
    let before = region.stats();
    let t = Instant::now();
    let mut sum = 0u64;
    for i in 0..words {
        // SAFETY: as above.
        sum = sum.wrapping_add(unsafe { p.add(i).read() });
    }
    let secs = t.elapsed().as_secs_f64();
    let rss_growth = rss().saturating_sub(rss0);
    let pages = (words as u64).div_ceil(512);
    anyhow::ensure!(
        sum == (0..pages).map(|k| k * 512 + 1).sum::<u64>(),
        "scan read wrong data"
    );
    let after = region.stats();
    let stats = PagingStats {
        fetch_faults: after.fetch_faults - before.fetch_faults,
        prefetched: after.prefetched - before.prefetched,
        prefetch_hits: after.prefetch_hits - before.prefetch_hits,
        prefetch_late: after.prefetch_late - before.prefetch_late,
        prefetch_used: after.prefetch_used - before.prefetch_used,
        prefetch_wasted: after.prefetch_wasted - before.prefetch_wasted,
        reclaim_waits: after.reclaim_waits - before.reclaim_waits,
        ..after
    };
    let bulk_mb_s = match bulk_before {
        Some(b) => Some((b + bulk_get(&*backend, &ids, bytes)?) / 2.0),
        None => None,
    };
    drop(region);
    drop(backend);
    drop(server);
    Ok((bytes as f64 / secs / 1e6, stats, rss_growth, bulk_mb_s))
}

/// MB/s of fetching the pages `ids` (`bytes` in all) with batched gets of 1 MiB, one at a time.
fn bulk_get(backend: &dyn farmem::Backend, ids: &[u64], bytes: usize) -> anyhow::Result<f64> {
    let t = Instant::now();
    for chunk in ids.chunks(256) {
        let got = backend.get_many(chunk)?;
        anyhow::ensure!(
            got.iter().all(|g| g.len() == PAGE_SIZE),
            "bulk get: bad page"
        );
    }
    Ok(bytes as f64 / t.elapsed().as_secs_f64() / 1e6)
}

/// Runs the scans over `bytes` at 10% local and records the figures.
pub(super) fn run(kind: BackendKind, bytes: usize, r: &mut Report) -> anyhow::Result<()> {
    let budget = (bytes / 10).max(64 * PAGE_SIZE);
    let (on, s, rss_growth, bulk) = one(kind, bytes, budget, true, true)?;
    let (off, s_off, _, _) = one(kind, bytes, budget, false, false)?;
    let bulk = bulk.unwrap_or(f64::NAN);
    r.num("scan_bytes", bytes as f64);
    r.num("scan_budget_bytes", budget as f64);
    r.num("scan_prefetch_mb_s", on);
    r.num("scan_noprefetch_mb_s", off);
    r.num("scan_bulk_get_mb_s", bulk);
    r.num("scan_over_bulk", on / bulk);
    r.num("scan_fetch_faults", s.fetch_faults as f64);
    r.num("scan_noprefetch_fetch_faults", s_off.fetch_faults as f64);
    r.num("scan_prefetched", s.prefetched as f64);
    r.num("scan_prefetch_marker_hits", s.prefetch_hits as f64);
    r.num("scan_prefetch_late", s.prefetch_late as f64);
    r.num("scan_prefetch_accuracy", s.prefetch_accuracy());
    r.num("scan_prefetch_coverage", s.prefetch_coverage());
    r.num("scan_reclaim_waits", s.reclaim_waits as f64);
    r.num("scan_rss_growth_bytes", rss_growth as f64);
    println!(
        "sequential scan of {} MiB at 10% local: {on:.0} MB/s with prefetching ({:.0}% of the \
         transport's bulk {bulk:.0} MB/s; target >= 50%), {off:.0} MB/s without",
        bytes >> 20,
        100.0 * on / bulk
    );
    println!(
        "  prefetch: {} pages ({:.0} per fault or marker hit), accuracy {:.2}, coverage {:.2}; {} fetch \
         faults ({} without prefetching), {} marker hits, {} late; {} waits for the reclaimer; \
         RSS grew {} MiB (budget {} MiB)",
        s.prefetched,
        s.prefetched as f64 / (s.prefetch_hits + s.fetch_faults).max(1) as f64,
        s.prefetch_accuracy(),
        s.prefetch_coverage(),
        s.fetch_faults,
        s_off.fetch_faults,
        s.prefetch_hits,
        s.prefetch_late,
        s.reclaim_waits,
        rss_growth >> 20,
        budget >> 20
    );
    Ok(())
}
