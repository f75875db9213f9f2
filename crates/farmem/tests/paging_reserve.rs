//! The free slots a paged region's reclaimer keeps follow what the prefetch streams need: a
//! batch's worth while faults come at random (the rest of the budget holds data), the full
//! reserve while a sequential stream is running. The budget's slots add up (`usage`), and data
//! survives either way. Skips where userfaultfd paging is unavailable (fails instead when
//! `FARMEM_REQUIRE_PRIVILEGED` is set, as in CI).

mod support;

use std::sync::Arc;

use farmem::EmbeddedStore;
use farmem::paging::{PAGE_SIZE, PagedRegion, PagingConfig, PagingUsage};

/// Pages of the region, and of its budget (a quarter).
const PAGES: usize = 8192;
const BUDGET: usize = 2048;
/// Pages per reclaimer batch.
const BATCH: usize = 64;

fn word(region: &PagedRegion, page: usize) -> *mut u64 {
    assert!(page < PAGES);
    region
        .as_ptr()
        .wrapping_add(page * PAGE_SIZE + 8 * (page % 500))
        .cast::<u64>()
}

fn value(page: usize) -> u64 {
    (page as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

/// The budget's slots add up to the budget, and the free ones stay within the high watermark
/// (the reclaimer stops there) but above nothing the watermarks do not explain.
fn check_sum(u: &PagingUsage) {
    assert_eq!(
        u.mapped_pages + u.sampled_pages + u.staged_pages + u.reserved_pages + u.free_pages,
        u.budget_pages,
        "{u:?}"
    );
    assert!(u.low_watermark < u.high_watermark, "{u:?}");
}

#[test]
fn random_faults_keep_a_batch_free_and_a_scan_the_full_reserve() {
    if !support::paging_usable() {
        return;
    }
    let mut cfg = PagingConfig::new(BUDGET * PAGE_SIZE);
    cfg.evict_batch_pages = BATCH;
    cfg.readahead_max_pages = 256;
    let region = PagedRegion::new(PAGES * PAGE_SIZE, Arc::new(EmbeddedStore::new()), cfg).unwrap();
    for p in 0..PAGES {
        // SAFETY: in bounds; one thread.
        unsafe { word(&region, p).write(value(p)) };
    }
    // Random reads: no stream, so the reserve is one batch and the reclaimer stops at two
    // (unless a fault had to wait for a free slot lately: the reserve then stays wider for a
    // while).
    let mut x = 99usize;
    let mut read_random = |n: usize| {
        for _ in 0..n {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let p = (x >> 33) % PAGES;
            // SAFETY: in bounds; one thread.
            assert_eq!(unsafe { word(&region, p).read() }, value(p), "page {p}");
        }
    };
    read_random(20_000);
    let waits = region.stats().reclaim_waits;
    read_random(6_000);
    let u = region.usage();
    check_sum(&u);
    assert_eq!(u.budget_pages, BUDGET as u64);
    assert!(
        u.free_pages + u.reserved_pages <= u.high_watermark + 1,
        "{u:?}"
    );
    if region.stats().reclaim_waits == waits {
        assert_eq!(
            (u.low_watermark, u.high_watermark),
            (BATCH as u64, 2 * BATCH as u64),
            "{u:?}"
        );
    } else {
        eprintln!("a fault waited for a free slot: the reserve may still be boosted ({u:?})");
    }
    // A sequential scan: its windows grow, and so does the reserve for them (at most the
    // quarter of the budget the static limits allow).
    let mut during = Vec::new();
    for p in 0..PAGES {
        // SAFETY: in bounds; one thread.
        assert_eq!(unsafe { word(&region, p).read() }, value(p), "page {p}");
        if p % 1024 == 1023 {
            during.push(region.usage());
        }
    }
    for u in &during {
        check_sum(u);
    }
    let widest = during.iter().map(|u| u.low_watermark).max().unwrap_or(0);
    assert!(
        widest > BATCH as u64 && widest <= (BUDGET / 4) as u64,
        "reserve during the scan: {during:?}"
    );
    let stats = region.stats();
    assert!(stats.prefetched > (PAGES / 2) as u64, "{stats:?}");
}
