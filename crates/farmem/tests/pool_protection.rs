//! Per-container redundancy on an erasure-coded pool: a container built on a runtime handle
//! with a [`Protection`] (or a paged region configured with one) is replicated or coded
//! whatever the pool's size rule, survives as many failures as the rest, and gives its far
//! memory back when dropped. The paged-region test skips (passes with a message) where
//! userfaultfd paging is unavailable, and fails instead when `FARMEM_REQUIRE_PRIVILEGED` is set,
//! as in CI.

mod support;

use std::sync::Arc;
use std::time::Duration;

use farmem::backend::pool::{CodingOptions, Fault};
use farmem::backend::{FaultyBackend, PoolBackend, PoolConfig, Redundancy};
use farmem::containers::FarVec;
use farmem::paging::{PagedRegion, PagingConfig};
use farmem::{Protection, Runtime, RuntimeConfig};

/// Six members coding 4+2, replicating objects under 16 KiB by size.
fn coded_pool() -> (Vec<Arc<FaultyBackend>>, Arc<PoolBackend>) {
    let (stores, members) = support::faulty_members(6);
    let cfg = PoolConfig::new(Redundancy::coded(4, 2))
        .code_from(16 << 10)
        .maintenance_interval(Duration::from_millis(20))
        .coding(CodingOptions::default().seal_after(Duration::from_millis(20)));
    (stores, Arc::new(PoolBackend::new(members, cfg).unwrap()))
}

fn values(seed: u64, n: usize) -> Vec<u64> {
    (0..n as u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed)
        .collect()
}

fn check(v: &FarVec<u64>, want: &[u64], what: &str) {
    assert_eq!(v.len(), want.len(), "{what}");
    assert_eq!(v.to_vec().unwrap(), want, "{what}");
}

#[test]
fn containers_choose_replication_or_coding_on_a_coded_pool() {
    let (stores, pool) = coded_pool();
    let budget = 2 << 20;
    let cfg = RuntimeConfig::new(budget)
        .region_size(64 << 10)
        .custom_backend(pool.clone());
    let rt = Runtime::new(cfg).unwrap();
    assert_eq!(rt.protection(), Protection::BySize);

    // 64 KiB chunks: coded by size, replicated on request; 4 KiB chunks: coded on request.
    let (n, small_n) = (48 * 8192, 32 * 512);
    let by_size_want = values(1, n);
    let replicated_want = values(2, n);
    let coded_want = values(3, small_n);
    let mut by_size = FarVec::<u64>::new(&rt);
    let mut replicated = FarVec::<u64>::new(&rt.with_protection(Protection::Replicated));
    let mut coded =
        FarVec::<u64>::with_chunk_bytes(&rt.with_protection(Protection::Coded), 4 << 10).unwrap();
    by_size.extend_from_slice(&by_size_want).unwrap();
    replicated.extend_from_slice(&replicated_want).unwrap();
    coded.extend_from_slice(&coded_want).unwrap();
    for v in [&by_size, &replicated, &coded] {
        v.flush().unwrap();
    }
    assert_eq!(pool.repair_now(), 0);

    // Exactly the coded vectors' bytes are on the coded path; the replicated one is in the
    // location table, on 3 members.
    let coded_bytes = ((n + small_n) * 8) as u64;
    let st = pool.coded_stats().unwrap();
    assert_eq!(st.live_bytes, coded_bytes, "{st:?}");
    assert_eq!(st.objects, 48 + 32, "{st:?}");
    assert_eq!(pool.pool_stats().objects, 48);

    // Any two members may fail: every element of the three vectors is still there (most of
    // them are far: the local budget is 2 MiB of 6.3 MiB).
    stores[0].set(Fault::Down);
    stores[3].set(Fault::Down);
    check(&by_size, &by_size_want, "coded by size");
    check(&replicated, &replicated_want, "replicated");
    check(&coded, &coded_want, "coded on request");

    // Dropped containers give their far memory back on both paths.
    drop((by_size, replicated, coded));
    rt.flush_frees().unwrap();
    let st = pool.coded_stats().unwrap();
    assert_eq!((st.objects, st.live_bytes), (0, 0), "{st:?}");
    assert_eq!(pool.pool_stats().objects, 0);
}

/// 4 KiB pages would be replicated by the size rule; a region with `Protection::Coded` codes
/// them, and they survive two failures.
#[test]
fn a_paged_region_can_be_coded_page_by_page() {
    if !support::paging_usable() {
        return;
    }
    let (stores, pool) = coded_pool();
    let budget = 256 << 10;
    let len = 8 * budget;
    let cfg = PagingConfig {
        protection: Protection::Coded,
        ..PagingConfig::new(budget)
    };
    let region = PagedRegion::new(len, pool.clone(), cfg).unwrap();
    let p = region.as_ptr().cast::<u64>();
    let want = values(4, len / 8);
    for (i, &v) in want.iter().enumerate() {
        // SAFETY: `i < len / 8` and the region is alive and 4 KiB aligned.
        unsafe { p.add(i).write(v) };
    }
    // Most pages were evicted under the 256 KiB budget: all of them onto the coded path.
    let st = pool.coded_stats().unwrap();
    assert!(st.live_bytes >= (len - 2 * budget) as u64, "{st:?}");
    assert_eq!(pool.pool_stats().objects, 0);
    stores[1].set(Fault::Down);
    stores[4].set(Fault::Down);
    for (i, &v) in want.iter().enumerate() {
        // SAFETY: as above.
        assert_eq!(unsafe { p.add(i).read() }, v, "word {i}");
    }
}
