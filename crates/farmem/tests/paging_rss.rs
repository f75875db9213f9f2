//! A paged region keeps its local memory within the budget plus the documented slack while far
//! more data passes through it. (Its own test binary, so other tests do not add to the RSS.)

mod support;

use std::sync::Arc;

use farmem::paging::{self, PAGE_SIZE, PagedRegion, PagingConfig};
use farmem::{Backend, EmbeddedStore};

/// This process's resident set in bytes (`VmRSS`).
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Pages of `[base, base+len)` resident in this process (`mincore`).
fn resident_pages(base: *mut u8, len: usize) -> usize {
    let mut vec = vec![0u8; len / PAGE_SIZE];
    // SAFETY: `base..base+len` is one mapping of ours; `vec` has one byte per page.
    let rc = unsafe { libc::mincore(base.cast(), len, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&b| b & 1 != 0).count()
}

#[test]
fn resident_memory_stays_within_the_budget_plus_slack() {
    if let Err(e) = paging::available() {
        support::skip_or_fail(&format!("paged region: {e}"));
        return;
    }
    let budget = 4 << 20;
    let len = 64 << 20;
    let store = Arc::new(EmbeddedStore::new());
    let before = rss();
    let cfg = PagingConfig::new(budget);
    let threads = cfg.pager_threads;
    let batch = cfg.evict_batch_pages;
    let region = PagedRegion::new(len, store.clone(), cfg).unwrap();
    let p = region.as_ptr();
    let mut peak_region = 0;
    let mut peak_extra = 0usize;
    let mut measure = |region: &PagedRegion| {
        peak_region = peak_region.max(resident_pages(region.as_ptr(), region.len()));
        // What the process holds beyond the backend's copies (which live in this process here).
        let stored = store.stats().unwrap().used_bytes as usize;
        peak_extra = peak_extra.max(rss().saturating_sub(before + stored));
    };
    // Write everything (every page dirty once), then read it sequentially and at random.
    for (i, off) in (0..len).step_by(PAGE_SIZE).enumerate() {
        // SAFETY: in bounds; one thread.
        unsafe { p.add(off + i % 512 * 8).cast::<u64>().write(i as u64 + 1) };
        if i % 1024 == 0 {
            measure(&region);
        }
    }
    let mut sum = 0u64;
    for off in (0..len).step_by(PAGE_SIZE) {
        // SAFETY: in bounds; one thread.
        sum += unsafe { p.add(off).read() } as u64;
    }
    measure(&region);
    let mut x = 7usize;
    for i in 0..20_000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        let page = (x >> 24) % (len / PAGE_SIZE);
        // SAFETY: in bounds; one thread.
        let v = unsafe {
            p.add(page * PAGE_SIZE + page % 512 * 8)
                .cast::<u64>()
                .read()
        };
        assert_eq!(v, page as u64 + 1);
        if i % 1000 == 0 {
            measure(&region);
        }
    }
    assert!(sum > 0);
    assert!(
        peak_region * PAGE_SIZE <= budget,
        "{peak_region} pages of the region resident, budget {budget} bytes"
    );
    // The documented slack: a twin per dirty resident page (up to the budget), per pager thread
    // one page and a 64-page run buffer, the reclaimer's batch buffer, and tables; plus 2 MiB
    // for the allocator and the test itself.
    let slack =
        budget + threads * 65 * PAGE_SIZE + batch * PAGE_SIZE + (len / PAGE_SIZE) * 64 + (2 << 20);
    assert!(
        peak_extra <= budget + slack,
        "RSS grew by {peak_extra} bytes beyond the backend's copies; budget {budget} + slack \
         {slack}"
    );
    eprintln!(
        "region resident at most {} KiB, process beyond the backend at most {} KiB (budget {} KiB)",
        (peak_region * PAGE_SIZE) >> 10,
        peak_extra >> 10,
        budget >> 10
    );
}
