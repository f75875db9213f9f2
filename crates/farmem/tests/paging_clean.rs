//! Background cleaning of a paged region: dirty pages written back ahead of eviction stay
//! correct when written again, evicted, discarded or read back. Skips where userfaultfd paging
//! is unavailable (fails instead when `FARMEM_REQUIRE_PRIVILEGED` is set, as in CI).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use farmem::EmbeddedStore;
use farmem::paging::{PAGE_SIZE, PagedRegion, PagingConfig};

/// The first word of page `p`.
fn word(region: &PagedRegion, p: usize) -> *mut u64 {
    assert!((p + 1) * PAGE_SIZE <= region.len());
    region.as_ptr().wrapping_add(p * PAGE_SIZE).cast::<u64>()
}

/// Writes `value(p)` into the first word of every page in `pages`.
fn write_all(region: &PagedRegion, pages: std::ops::Range<usize>, value: impl Fn(usize) -> u64) {
    for p in pages {
        // SAFETY: in bounds (checked by `word`); one thread.
        unsafe { word(region, p).write_volatile(value(p)) };
    }
}

#[test]
fn cleaned_pages_keep_later_writes_through_eviction_and_discard() {
    if !support::paging_usable() {
        return;
    }
    let pages = 256;
    let budget = 32;
    let cfg = PagingConfig {
        clean_interval_ms: 1,
        ..PagingConfig::new(budget * PAGE_SIZE)
    };
    let region = PagedRegion::new(pages * PAGE_SIZE, Arc::new(EmbeddedStore::new()), cfg).unwrap();
    let mut shadow = vec![0u64; pages];
    // Dirty a few resident pages and leave them alone: the cleaner writes them back while they
    // stay resident.
    write_all(&region, 0..16, |p| p as u64 + 1);
    for (p, v) in shadow.iter_mut().enumerate().take(16) {
        *v = p as u64 + 1;
    }
    let t = Instant::now();
    while region.stats().cleaned == 0 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let s = region.stats();
    assert!(s.cleaned > 0, "nothing cleaned: {s:?}");
    assert_eq!(s.fetch_faults, 0, "{s:?}");
    // Write some of them again (cleaned or not), then push everything out with other pages.
    write_all(&region, 0..16, |p| {
        if p % 3 == 0 {
            1000 + p as u64
        } else {
            p as u64 + 1
        }
    });
    for (p, v) in shadow.iter_mut().enumerate().take(16).step_by(3) {
        *v = 1000 + p as u64;
    }
    write_all(&region, 16..pages, |p| 2000 + p as u64);
    for (p, v) in shadow.iter_mut().enumerate().skip(16) {
        *v = 2000 + p as u64;
    }
    // Free a range that was written back (cleaned or evicted): it reads as zeros, and new
    // data written there survives another eviction.
    region.discard(4 * PAGE_SIZE, 8 * PAGE_SIZE).unwrap();
    for (p, v) in shadow.iter_mut().enumerate().take(12).skip(4) {
        // SAFETY: in bounds; one thread.
        assert_eq!(unsafe { word(&region, p).read_volatile() }, 0, "page {p}");
        *v = 3000 + p as u64;
    }
    write_all(&region, 4..12, |p| 3000 + p as u64);
    write_all(&region, 100..pages, |p| 2000 + p as u64);
    for (p, &v) in shadow.iter().enumerate() {
        // SAFETY: in bounds; one thread.
        assert_eq!(unsafe { word(&region, p).read_volatile() }, v, "page {p}");
    }
    let s = region.stats();
    assert!(s.resident_pages <= budget as u64, "{s:?}");
    assert!(s.freed_stored > 0 && s.written_back >= s.cleaned, "{s:?}");
}

#[test]
fn writers_racing_the_cleaner_keep_every_write() {
    if !support::paging_usable() {
        return;
    }
    const THREADS: usize = 4;
    let pages = 128;
    let cfg = PagingConfig {
        clean_interval_ms: 1,
        evict_batch_pages: 8,
        ..PagingConfig::new(64 * PAGE_SIZE)
    };
    let region = PagedRegion::new(pages * PAGE_SIZE, Arc::new(EmbeddedStore::new()), cfg).unwrap();
    // Thread t owns word t of every page: the cleaner's copies race the other threads' writes
    // to the same pages.
    let start = Instant::now();
    let shadows: Vec<Vec<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let region = &region;
                s.spawn(move || {
                    let mut shadow = vec![0u64; pages];
                    let mut i = 0u64;
                    while start.elapsed() < Duration::from_millis(300) {
                        let p = (i as usize * 7 + t) % pages;
                        let w = word(region, p).wrapping_add(t);
                        // SAFETY: in bounds; only thread t writes word t of a page.
                        unsafe { w.write_volatile(i) };
                        shadow[p] = i;
                        if i.is_multiple_of(5) {
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        i += 1;
                    }
                    shadow
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (t, shadow) in shadows.iter().enumerate() {
        for (p, &v) in shadow.iter().enumerate() {
            // SAFETY: in bounds; the writers have finished.
            let got = unsafe { word(&region, p).wrapping_add(t).read_volatile() };
            assert_eq!(got, v, "thread {t}, page {p}");
        }
    }
    let s = region.stats();
    assert!(s.cleaned > 0 && s.wp_faults > 0, "{s:?}");
}
