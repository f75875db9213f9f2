//! The paging mode over a replicated pool: page faults keep being served, and every byte
//! written before and after a member's death reads back, when one of three members dies in the
//! middle of random writes. Skips (passes with a message) where userfaultfd paging is
//! unavailable, and fails instead when `FARMEM_REQUIRE_PRIVILEGED` is set, as in CI.

mod support;

use std::sync::Arc;
use std::time::Duration;

use farmem::backend::pool::Fault;
use farmem::backend::{PoolBackend, PoolConfig, Redundancy};
use farmem::paging::{self, PagedRegion, PagingConfig};
use rand::rngs::SmallRng;
use rand::{Rng, RngExt, SeedableRng};

#[test]
fn page_faults_survive_a_member_death_with_two_replicas() {
    if let Err(e) = paging::available() {
        support::skip_or_fail(&format!("paging: {e}"));
        return;
    }
    let (members, backends) = support::faulty_members(3);
    let pool = Arc::new(
        PoolBackend::new(
            backends,
            PoolConfig::new(Redundancy::Replicas(2))
                .repair_rate(None)
                .maintenance_interval(Duration::from_millis(20)),
        )
        .unwrap(),
    );
    let budget = 256 << 10;
    let len = 8 * budget;
    let region = PagedRegion::new(len, pool.clone(), PagingConfig::new(budget)).unwrap();
    let p = region.as_ptr();
    let mut shadow = vec![0u8; len];
    let mut rng = SmallRng::seed_from_u64(0x5EED);
    for i in 0..120_000 {
        if i == 60_000 {
            // One member dies with half of the pages' copies on it.
            members[1].set(Fault::Down);
        }
        let off = rng.random_range(0..len - 8);
        if i % 2 == 0 {
            let v = rng.next_u64().to_le_bytes();
            // SAFETY: `off + 8 <= len` and the region is alive.
            unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), p.add(off), 8) };
            shadow[off..off + 8].copy_from_slice(&v);
        } else {
            let mut got = [0u8; 8];
            // SAFETY: as above.
            unsafe { std::ptr::copy_nonoverlapping(p.add(off), got.as_mut_ptr(), 8) };
            assert_eq!(got, shadow[off..off + 8], "offset {off}, op {i}");
        }
    }
    // SAFETY: the region is alive and `len` bytes long; no one writes it concurrently.
    let all = unsafe { std::slice::from_raw_parts(p, len) };
    assert!(all == &shadow[..], "final contents differ");
    let s = region.stats();
    assert!(s.fetch_faults > 0 && s.written_back > 0, "{s:?}");
    let st = pool.pool_stats();
    assert!(
        pool.members().iter().any(|m| !m.state.serves()),
        "the dead member is marked: {st:?}"
    );
}
