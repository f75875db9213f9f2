//! Drop-behind in a paged region: a sequential scan recycles the frames of the pages it has
//! left behind instead of evicting the rest of the resident set. Skips where userfaultfd paging
//! is unavailable (fails instead when `FARMEM_REQUIRE_PRIVILEGED` is set, as in CI).

mod support;

use std::sync::Arc;

use farmem::EmbeddedStore;
use farmem::paging::{PAGE_SIZE, PagedRegion, PagingConfig, PagingStats};

/// Pages of the region, and of its budget (a quarter).
const PAGES: usize = 16384;
const BUDGET: usize = 4096;
const WORDS: usize = PAGE_SIZE / 8;

fn word(region: &PagedRegion, w: usize) -> *mut u64 {
    assert!((w + 1) * 8 <= region.len());
    region.as_ptr().wrapping_add(w * 8).cast::<u64>()
}

fn pattern(p: usize, j: usize) -> u64 {
    ((p as u64) << 32) | j as u64 | 1 << 63
}

/// A region four times its budget, every page written with [`pattern`] (a few words per page),
/// so that the last pages written are resident and dirty.
fn filled() -> PagedRegion {
    let mut cfg = PagingConfig::new(BUDGET * PAGE_SIZE);
    cfg.readahead_max_pages = 64;
    let region = PagedRegion::new(PAGES * PAGE_SIZE, Arc::new(EmbeddedStore::new()), cfg).unwrap();
    for p in 0..PAGES {
        for j in (0..WORDS).step_by(97) {
            // SAFETY: in bounds; one thread.
            unsafe { word(&region, p * WORDS + j).write(pattern(p, j)) };
        }
    }
    region
}

/// Reads pages `pages` in order, checking every word the fill wrote; returns the counters the
/// scan added.
fn scan(region: &PagedRegion, pages: impl Iterator<Item = usize>) -> PagingStats {
    let before = region.stats();
    for p in pages {
        for j in (0..WORDS).step_by(97) {
            // SAFETY: in bounds; one thread.
            let got = unsafe { word(region, p * WORDS + j).read_volatile() };
            assert_eq!(got, pattern(p, j), "page {p} word {j}");
        }
    }
    region.stats().since(&before)
}

#[test]
fn a_scan_keeps_the_dirty_resident_tail_and_finds_it_resident() {
    if !support::paging_usable() {
        return;
    }
    let region = filled();
    let head = PAGES - BUDGET;
    // The head was written back while the region was filled; the tail is resident and dirty.
    let fill = region.stats();
    assert!(fill.written_back >= (head - BUDGET / 4) as u64, "{fill:?}");
    let s = scan(&region, 0..head);
    assert!(s.prefetched >= (head / 2) as u64, "the scan streams: {s:?}");
    // The scan evicts the pages it left behind: of the dirty tail, only what the stream needed
    // while no page was behind it yet (its first windows, or a reclaimer that ran ahead of it
    // on a busy machine) is written back; evicting in order would write back all of it.
    assert!(s.dropped_behind >= (head / 2) as u64, "{s:?}");
    assert!(
        s.written_back <= (BUDGET / 2) as u64,
        "dirty tail written back during the scan: {s:?}"
    );
    // The tail is then found resident: little of it is fetched.
    let t = scan(&region, head..PAGES);
    assert!(
        t.fetch_faults + t.prefetched <= (BUDGET / 2) as u64,
        "tail fetched again: {t:?}"
    );
    // Everything reads back as written, once more from the start.
    scan(&region, 0..PAGES);
}

#[test]
fn a_second_scan_of_an_array_larger_than_the_budget_fetches_less_than_the_first() {
    if !support::paging_usable() {
        return;
    }
    let region = filled();
    region.flush().unwrap();
    let first = scan(&region, 0..PAGES);
    let second = scan(&region, 0..PAGES);
    let fetched = |s: &PagingStats| s.fetch_faults + s.prefetched;
    // The first scan kept most of what was resident before it (the tail), so the second finds
    // it there; a scan that evicted in order would fetch every page both times.
    assert!(
        fetched(&second) <= (PAGES - BUDGET / 4) as u64,
        "first {first:?}, second {second:?}"
    );
    assert_eq!(second.written_back, 0, "{second:?}");
}
