//! Paged regions: contents under concurrent faults, prefetching, tiny budgets. Skips where
//! userfaultfd paging is unavailable (fails instead when `FARMEM_REQUIRE_PRIVILEGED` is set, as
//! in CI).

mod support;

use std::sync::Arc;
use std::time::Duration;

use farmem::backend::{Edit, PendingCompute};
use farmem::paging::{self, PAGE_SIZE, PagedRegion, PagingConfig};
use farmem::{Backend, BackendError, EmbeddedStore, ObjectId, StoreStats};
use rand::rngs::SmallRng;
use rand::{Rng, RngExt, SeedableRng};

/// An in-process store whose fetches take a little while, like a network round trip, so that
/// faults really overlap.
struct Slow(EmbeddedStore);

fn delay() {
    std::thread::sleep(Duration::from_micros(50));
}

impl Backend for Slow {
    fn put(&self, id: ObjectId, data: &[u8]) -> Result<(), BackendError> {
        self.0.put(id, data)
    }
    fn get(&self, id: ObjectId) -> Result<Vec<u8>, BackendError> {
        delay();
        self.0.get(id)
    }
    fn get_into(&self, id: ObjectId, buf: &mut [u8]) -> Result<(), BackendError> {
        delay();
        self.0.get_into(id, buf)
    }
    fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>, BackendError> {
        delay();
        self.0.get_many(ids)
    }
    fn put_many(&self, items: &[(ObjectId, &[u8])]) -> Result<(), BackendError> {
        delay();
        self.0.put_many(items)
    }
    fn patch_many(&self, items: &[(ObjectId, &[Edit<'_>])]) -> Result<(), BackendError> {
        delay();
        self.0.patch_many(items)
    }
    fn free(&self, ids: &[ObjectId]) -> Result<(), BackendError> {
        self.0.free(ids)
    }
    fn stats(&self) -> Result<StoreStats, BackendError> {
        self.0.stats()
    }
    fn compute(&self, route: ObjectId, op: u16, args: &[u8]) -> Result<Vec<u8>, BackendError> {
        self.0.compute(route, op, args)
    }
    fn submit_compute(&self, route: ObjectId, op: u16, args: &[u8]) -> PendingCompute {
        self.0.submit_compute(route, op, args)
    }
    fn describe(&self) -> String {
        "slow embedded".into()
    }
}

fn slow() -> Arc<dyn Backend> {
    Arc::new(Slow(EmbeddedStore::new()))
}

/// The 8-byte word `w` of `region`.
fn word(region: &PagedRegion, w: usize) -> *mut u64 {
    assert!((w + 1) * 8 <= region.len());
    region.as_ptr().cast::<u64>().wrapping_add(w)
}

#[test]
fn eight_threads_of_random_reads_and_writes_match_their_shadow_copies() {
    if !support::paging_usable() {
        return;
    }
    const THREADS: usize = 8;
    let len = 2 << 20;
    let words = len / 8;
    let mut cfg = PagingConfig::new(32 * PAGE_SIZE);
    cfg.evict_batch_pages = 8;
    let region = PagedRegion::new(len, slow(), cfg).unwrap();
    // Thread t owns the words w with w % THREADS == t: every page is shared by all threads, so
    // faults, write-protect faults and evictions of one page race between them.
    let shadows: Vec<Vec<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let region = &region;
                s.spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(t as u64 + 1);
                    let mut shadow = vec![0u64; words / THREADS];
                    for i in 0..20_000 {
                        let k = rng.random_range(0..shadow.len());
                        let p = word(region, k * THREADS + t);
                        if rng.random_bool(0.5) {
                            let v = rng.next_u64();
                            // SAFETY: in bounds (checked by `word`); only thread t writes it.
                            unsafe { p.write_volatile(v) };
                            shadow[k] = v;
                        } else {
                            // SAFETY: as above.
                            let got = unsafe { p.read_volatile() };
                            assert_eq!(got, shadow[k], "thread {t}, word {k}, op {i}");
                        }
                    }
                    shadow
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (t, shadow) in shadows.iter().enumerate() {
        for (k, &v) in shadow.iter().enumerate() {
            // SAFETY: in bounds; the writers have finished.
            let got = unsafe { word(&region, k * THREADS + t).read_volatile() };
            assert_eq!(got, v, "thread {t}, word {k} after the run");
        }
    }
    let s = region.stats();
    assert!(
        s.fetch_faults > 0 && s.written_back > 0 && s.wp_faults > 0,
        "{s:?}"
    );
    assert!(s.resident_pages <= 32, "{s:?}");
}

/// Fills `pages` pages with a pattern of `(page, word)`, then reads them forward, backward, with
/// a stride of 3 pages (writing into each visited page), and checks every word read. Returns the
/// final contents and the counters.
fn scans(prefetch: usize) -> Option<(Vec<u64>, paging::PagingStats)> {
    let pages = 1024;
    let per_page = PAGE_SIZE / 8;
    let mut cfg = PagingConfig::new(64 * PAGE_SIZE);
    cfg.readahead_max_pages = prefetch;
    cfg.evict_batch_pages = 8;
    let region = PagedRegion::new(pages * PAGE_SIZE, slow(), cfg).unwrap();
    let pattern = |p: usize, j: usize| ((p as u64) << 32) | j as u64;
    for p in 0..pages {
        for j in 0..per_page {
            // SAFETY: in bounds; one thread.
            unsafe { word(&region, p * per_page + j).write(pattern(p, j)) };
        }
    }
    let check = |p: usize| {
        for j in (0..per_page).step_by(61) {
            // SAFETY: in bounds; one thread.
            let got = unsafe { word(&region, p * per_page + j).read() };
            let want = if p.is_multiple_of(3) && j == 0 && got != pattern(p, j) {
                got // written by the strided pass; checked at the end
            } else {
                pattern(p, j)
            };
            assert_eq!(got, want, "page {p} word {j} (prefetch {prefetch})");
        }
    };
    (0..pages).for_each(check);
    (0..pages).rev().for_each(check);
    for p in (0..pages).step_by(3) {
        check(p);
        // SAFETY: in bounds; one thread.
        unsafe { word(&region, p * per_page).write(!pattern(p, 0)) };
    }
    (0..pages).for_each(check);
    let all = (0..pages * per_page)
        // SAFETY: in bounds; one thread.
        .map(|w| unsafe { word(&region, w).read() })
        .collect();
    Some((all, region.stats()))
}

#[test]
fn scans_with_and_without_prefetching_read_the_same_data() {
    if !support::paging_usable() {
        return;
    }
    let (on, s_on) = scans(256).unwrap();
    let (off, s_off) = scans(0).unwrap();
    assert!(on == off, "contents differ with and without prefetching");
    let per_page = PAGE_SIZE / 8;
    for (w, &v) in on.iter().enumerate() {
        let (p, j) = (w / per_page, w % per_page);
        let pattern = ((p as u64) << 32) | j as u64;
        let want = if p.is_multiple_of(3) && j == 0 {
            !pattern
        } else {
            pattern
        };
        assert_eq!(v, want, "word {w}");
    }
    assert!(s_on.prefetched > 0 && s_on.prefetch_used > 0, "{s_on:?}");
    assert!(
        s_on.fetch_faults < s_off.fetch_faults,
        "prefetching saves faults: {s_on:?} vs {s_off:?}"
    );
    assert_eq!(s_off.prefetched, 0);
    assert!(s_on.prefetch_accuracy() > 0.0 && s_on.prefetch_coverage() > 0.0);
}

#[test]
fn a_budget_of_a_few_pages_evicts_and_keeps_every_write() {
    if !support::paging_usable() {
        return;
    }
    let pages = 256;
    let region = PagedRegion::new(
        pages * PAGE_SIZE,
        Arc::new(EmbeddedStore::new()),
        PagingConfig::new(16 * PAGE_SIZE),
    )
    .unwrap();
    let per_page = PAGE_SIZE / 8;
    for round in 0..3u64 {
        for p in 0..pages {
            // SAFETY: in bounds; one thread.
            unsafe { word(&region, p * per_page + (p % per_page)).write(round * 1000 + p as u64) };
        }
        for p in (0..pages).rev() {
            // SAFETY: as above.
            let got = unsafe { word(&region, p * per_page + (p % per_page)).read() };
            assert_eq!(got, round * 1000 + p as u64, "round {round} page {p}");
            assert!(region.stats().resident_pages <= 16);
        }
    }
    let s = region.stats();
    assert!(s.written_back >= 2 * (pages as u64 - 16), "{s:?}");
    assert!(s.evicted_clean > 0 && s.resident_pages <= 16, "{s:?}");
    // Discarded pages read as zeros again, and flush leaves the rest intact.
    region.discard(0, 8 * PAGE_SIZE).unwrap();
    region.flush().unwrap();
    // SAFETY: in bounds; one thread.
    assert_eq!(unsafe { word(&region, 3 * per_page + 3).read() }, 0);
    // SAFETY: as above.
    assert_eq!(unsafe { word(&region, 9 * per_page + 9).read() }, 2009);
}
