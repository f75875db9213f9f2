//! The transparent mode: ordinary `Vec`/`HashMap` code on a paged heap larger than the budget
//! gives the same results as an all-local run. Skips where userfaultfd paging is unavailable
//! (fails instead when `FARMEM_REQUIRE_PRIVILEGED` is set, as in CI).

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use farmem::paging::{self, AllocConfig, PagingAlloc};
use farmem::{Backend, EmbeddedStore};

#[global_allocator]
static ALLOC: PagingAlloc = PagingAlloc::new();

const BUDGET: usize = 4 << 20;

/// Sort, grow-by-push, and hash-map work over ~30 MB of data; returns a digest of the results.
fn workload() -> Vec<u64> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // 16 MiB vector grown by push (realloc), then sorted.
    let mut v: Vec<u64> = Vec::new();
    for _ in 0..2_000_000 {
        v.push(next() % 1_000_000_007);
    }
    v.sort_unstable();
    let sorted_digest = v.iter().enumerate().fold(0u64, |h, (i, &e)| {
        h.rotate_left(5) ^ e.wrapping_mul(i as u64 + 1)
    });
    let median = v[v.len() / 2];
    drop(v);
    // A hash map whose table (~8 MiB) is twice the budget.
    let mut m: HashMap<u64, u64> = HashMap::new();
    for i in 0..300_000u64 {
        *m.entry(next() % 400_000).or_insert(0) += i;
    }
    let mut hits = 0u64;
    let mut sum = 0u64;
    for k in 0..400_000u64 {
        if let Some(&s) = m.get(&k) {
            hits += 1;
            sum = sum.wrapping_add(s ^ k);
        }
    }
    vec![sorted_digest, median, m.len() as u64, hits, sum]
}

#[test]
fn vec_and_hashmap_beyond_the_budget_match_an_all_local_run() {
    let local = workload();
    if let Err(e) = paging::available() {
        support::skip_or_fail(&format!("paged run: {e}"));
        return;
    }
    let store = Arc::new(EmbeddedStore::new());
    PagingAlloc::enable(store.clone(), AllocConfig::new(BUDGET)).unwrap();
    assert!(PagingAlloc::is_enabled());
    // Small allocations stay local.
    let small = vec![0u8; 1000];
    assert_eq!(PagingAlloc::paged_bytes(), 0);
    drop(small);
    let big = vec![1u8; 8 << 20];
    assert_eq!(
        PagingAlloc::paged_bytes(),
        8 << 20,
        "large allocation is paged"
    );
    drop(big);
    assert_eq!(PagingAlloc::paged_bytes(), 0, "freed pages are given back");

    // A block that has to move to grow gets room to grow again in place.
    let mut a = vec![2u8; 1 << 20];
    let b = vec![3u8; 1 << 20];
    a.reserve_exact(1 << 20);
    let moved = a.as_ptr();
    a.resize(2 << 20, 4);
    a.reserve_exact(2 << 20);
    assert_eq!(a.as_ptr(), moved, "grown within its room");
    a.resize(4 << 20, 5);
    a.truncate(1 << 20);
    a.shrink_to_fit();
    assert_eq!(
        PagingAlloc::paged_bytes(),
        2 << 20,
        "a shrunk block counts its new size"
    );
    a.reserve_exact(3 << 20);
    assert_eq!(a.as_ptr(), moved, "regrown within its room");
    assert_eq!(PagingAlloc::paged_bytes(), 5 << 20);
    assert!(a.iter().all(|&x| x == 2) && b.iter().all(|&x| x == 3));
    drop((a, b));
    assert_eq!(
        PagingAlloc::paged_bytes(),
        0,
        "blocks and their room are given back"
    );

    let paged = workload();
    assert_eq!(paged, local);
    let s = PagingAlloc::stats().unwrap();
    assert!(
        s.fetch_faults > 0 && s.written_back > 0,
        "the workload really paged: {s:?}"
    );
    assert!(s.resident_pages as usize <= BUDGET / paging::PAGE_SIZE);
    assert_eq!(PagingAlloc::paged_bytes(), 0, "everything freed");
    assert_eq!(
        store.stats().unwrap().objects,
        0,
        "freed allocations give their pages back at the backend too"
    );
    assert!(matches!(
        PagingAlloc::enable(Arc::new(EmbeddedStore::new()), AllocConfig::new(BUDGET)),
        Err(paging::PagingError::Config(_))
    ));
}
