//! Offloaded vector operations over a pool whose members hold different chunks give the
//! client-side results: random vectors, random placement over several embedded stores (with and
//! without replicas, and erasure-coded), and a member that dies before an operation.

use std::sync::Arc;
use std::time::Duration;

use farmem::backend::pool::Fault;
use farmem::backend::{FaultyBackend, PoolBackend, PoolConfig, Redundancy};
use farmem::containers::{Cmp, FarVec, Offload, Predicate, Scalar};
use farmem::{Backend, EmbeddedStore, Runtime, RuntimeConfig};
use farmem_proto::agent::{Aggregates, Sum};
use farmem_proto::expr::Expr;
use proptest::prelude::*;

struct Rig {
    rt: Runtime,
    members: Vec<Arc<FaultyBackend>>,
    pool: Arc<PoolBackend>,
}

fn rig(members: usize, copies: u8) -> Rig {
    rig_with(members, Redundancy::Replicas(copies))
}

fn rig_with(members: usize, redundancy: Redundancy) -> Rig {
    let members: Vec<Arc<FaultyBackend>> = (0..members)
        .map(|i| {
            Arc::new(FaultyBackend::new(
                Arc::new(EmbeddedStore::new()),
                format!("m{i}"),
            ))
        })
        .collect();
    let pool = Arc::new(
        PoolBackend::new(
            members
                .iter()
                .map(|m| m.clone() as Arc<dyn Backend>)
                .collect(),
            PoolConfig::new(redundancy)
                .repair_rate(None)
                .maintenance_interval(Duration::from_millis(50)),
        )
        .unwrap(),
    );
    // A small budget: most chunks are remote.
    let cfg = RuntimeConfig::new(1 << 20)
        .region_size(64 << 10)
        .custom_backend(pool.clone());
    Rig {
        rt: Runtime::new(cfg).unwrap(),
        members,
        pool,
    }
}

/// Aggregates equal, float sums up to rounding (partial sums add in another order).
fn same_agg(a: &Aggregates, b: &Aggregates) -> bool {
    let sums = match (a.sum, b.sum) {
        (Sum::F(x), Sum::F(y)) => (x - y).abs() <= 1e-9 * (1.0 + x.abs().max(y.abs())),
        (x, y) => x == y,
    };
    sums && a.count == b.count && a.min == b.min && a.max == b.max && a.ty == b.ty
}

/// Every operation both ways over `keys` (u8), `vals` (i64) and `fl` (f64 in value order).
fn check(r: &Rig, keys: &[u8], vals: &[i64], chunk_bytes: usize, pivot: i64) {
    let rt = &r.rt;
    let mut k: FarVec<u8> = FarVec::with_chunk_bytes(rt, chunk_bytes / 2).unwrap();
    k.extend_from_slice(keys).unwrap();
    let mut v: FarVec<i64> = FarVec::with_chunk_bytes(rt, chunk_bytes).unwrap();
    v.extend_from_slice(vals).unwrap();
    let fl: Vec<f64> = vals.iter().map(|&x| x as f64 / 8.0).collect();
    let mut f: FarVec<f64> = FarVec::with_chunk_bytes(rt, chunk_bytes * 3).unwrap();
    f.extend_from_slice(&fl).unwrap();
    let pred = Predicate::new(Cmp::Gt, Scalar::I(pivot));
    let mask_pred = Predicate::new(Cmp::Le, Scalar::U(3));
    let [remote, local] = [Offload::Remote, Offload::Local].map(|m| {
        let agg = (v.aggregate(m).unwrap(), f.aggregate(m).unwrap());
        let count = v.count_where(pred, m).unwrap();
        let filt = v.filter(pred, m).unwrap().to_vec().unwrap();
        let uniq = k.unique(300, m).unwrap();
        let gb = k.group_by(&v, 300, m).unwrap();
        let gbf = k.group_by(&f, 300, m).unwrap();
        let gw = k
            .group_by_where(&v, &k.agent_input(), mask_pred, 300, m)
            .unwrap();
        let med = k.group_median(&v, 300, m).unwrap();
        let medf = k.group_median(&f, 300, m).unwrap();
        let d = FarVec::<f64>::derive(
            rt,
            &Expr::col(1)
                .cast(farmem_proto::expr::Type::F64)
                .add(Expr::col(0)),
            &[f.agent_input(), v.agent_input()],
            m,
        )
        .unwrap()
        .to_vec()
        .unwrap();
        let mut idx = FarVec::<u64>::new(rt);
        idx.extend_from_slice(&filt.iter().rev().copied().collect::<Vec<_>>())
            .unwrap();
        let g = v.gather(&idx, m).unwrap().to_vec().unwrap();
        (agg, count, filt, uniq, gb, gbf, gw, med, medf, d, g)
    });
    assert!(same_agg(&remote.0.0, &local.0.0));
    assert!(same_agg(&remote.0.1, &local.0.1));
    assert_eq!(remote.1, local.1);
    assert_eq!(remote.2, local.2);
    assert_eq!(remote.3, local.3);
    assert_eq!(remote.4, local.4);
    assert_eq!(remote.5.len(), local.5.len());
    for (a, b) in remote.5.iter().zip(&local.5) {
        assert_eq!(a.0, b.0);
        assert!(same_agg(&a.1, &b.1), "{a:?} {b:?}");
    }
    assert_eq!(remote.6, local.6);
    assert_eq!(remote.7, local.7);
    assert_eq!(remote.8.len(), local.8.len());
    for (a, b) in remote.8.iter().zip(&local.8) {
        assert_eq!((a.0, a.2), (b.0, b.2), "float medians");
        assert!(same_agg(&a.1, &b.1));
    }
    assert_eq!(remote.9.len(), local.9.len());
    for (a, b) in remote.9.iter().zip(&local.9) {
        assert_eq!(a.to_bits(), b.to_bits());
    }
    assert_eq!(remote.10, local.10);
}

/// Random keys and values from `seed`, then [`check`] on `redundancy` over `members`.
fn random_case(
    members: usize,
    redundancy: Redundancy,
    n: usize,
    seed: u64,
    spread_keys: u8,
    chunk: usize,
) {
    let r = rig_with(members, redundancy);
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let keys: Vec<u8> = (0..n)
        .map(|_| (next() % u64::from(spread_keys)) as u8)
        .collect();
    let vals: Vec<i64> = (0..n).map(|_| (next() % 20_000) as i64 - 10_000).collect();
    check(&r, &keys, &vals, chunk, (next() % 20_000) as i64 - 10_000);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random vectors over 3 members with 2 copies, and over 3 without replication.
    #[test]
    fn spread_results_equal_local(
        n in 0usize..6000,
        seed in any::<u64>(),
        spread_keys in 1u8..40,
        chunk in prop::sample::select(vec![256usize, 1024, 4096]),
        copies in 1u8..=2,
    ) {
        random_case(3, Redundancy::Replicas(copies), n, seed, spread_keys, chunk);
    }

    /// The same over an erasure-coded pool (4+2 on 6 members): chunks are named by their keys.
    #[test]
    fn spread_results_equal_local_on_a_coded_pool(
        n in 0usize..6000,
        seed in any::<u64>(),
        spread_keys in 1u8..40,
        chunk in prop::sample::select(vec![256usize, 1024, 4096]),
    ) {
        random_case(6, Redundancy::coded(4, 2), n, seed, spread_keys, chunk);
    }
}

/// On an erasure-coded pool the agent computes where the chunks are (only answers cross the
/// network), a derived vector is written through the coded path and survives two member
/// failures, and operations over a dead member's chunks still give exact answers.
#[test]
fn coded_pools_compute_on_the_members_and_survive_failures() {
    let r = rig_with(6, Redundancy::coded(4, 2));
    let n = 400_000usize;
    let vals: Vec<i64> = (0..n)
        .map(|i| (i as i64 * 7919) % 100_003 - 50_000)
        .collect();
    let v = FarVec::from_slice(&r.rt, &vals).unwrap();
    let want_sum: i64 = vals.iter().sum();
    let pred = Predicate::new(Cmp::Lt, Scalar::I(0));
    let want_count = vals.iter().filter(|&&x| x < 0).count();
    v.flush().unwrap();
    r.pool.repair_now();
    let before = r.rt.stats();
    let agg = v.aggregate(Offload::Remote).unwrap();
    let after = r.rt.stats();
    let moved = after.bytes_fetched - before.bytes_fetched;
    assert_eq!(agg.sum, Sum::I(i128::from(want_sum)));
    assert_eq!(agg.count, n as u64);
    // The budget keeps at most a quarter of the vector local: the rest was computed remotely.
    assert!(
        moved < (n * 8 / 20) as u64 && after.agent_bytes_received > before.agent_bytes_received,
        "the aggregate fetched {moved} bytes of a {} byte vector",
        n * 8
    );
    assert_eq!(v.count_where(pred, Offload::Remote).unwrap(), want_count);
    let d = doubled_remotely(&r.rt, &v);
    d.flush().unwrap();
    r.pool.repair_now();
    // Two members down behind the pool's back: every value is still there, exactly.
    r.members[0].set(Fault::Down);
    r.members[3].set(Fault::Down);
    let doubled: Vec<i64> = vals.iter().map(|x| x * 2).collect();
    assert_eq!(d.to_vec().unwrap(), doubled);
    assert_eq!(v.count_where(pred, Offload::Remote).unwrap(), want_count);
    let agg = v.aggregate(Offload::Remote).unwrap();
    assert_eq!(agg.sum, Sum::I(i128::from(want_sum)));
}

/// `2 * v`, derived with the agent.
fn doubled_remotely(rt: &Runtime, v: &FarVec<i64>) -> FarVec<i64> {
    FarVec::<i64>::derive(
        rt,
        &Expr::col(0).add(Expr::col(0)),
        &[v.agent_input()],
        Offload::Remote,
    )
    .unwrap()
}

/// A member that died unnoticed: offloaded operations fail over to the other copies.
#[test]
fn a_dead_member_fails_over_with_exact_answers() {
    let r = rig(3, 2);
    let n = 50_000usize;
    let keys: Vec<u8> = (0..n).map(|i| (i * 7 % 5) as u8).collect();
    let vals: Vec<i64> = (0..n)
        .map(|i| (i as i64 * 7919) % 100_003 - 50_000)
        .collect();
    let k = FarVec::from_slice(&r.rt, &keys).unwrap();
    let v = FarVec::from_slice(&r.rt, &vals).unwrap();
    let local_g = k.group_median(&v, 64, Offload::Local).unwrap();
    let pred = Predicate::new(Cmp::Lt, Scalar::I(0));
    let local_f = v.filter(pred, Offload::Local).unwrap().to_vec().unwrap();
    // Flush everything to the pool, then kill a member behind the pool's back.
    v.aggregate(Offload::Remote).unwrap();
    k.aggregate(Offload::Remote).unwrap();
    r.members[1].set(Fault::Down);
    assert_eq!(k.group_median(&v, 64, Offload::Remote).unwrap(), local_g);
    assert_eq!(
        v.filter(pred, Offload::Remote).unwrap().to_vec().unwrap(),
        local_f
    );
    let d = doubled_remotely(&r.rt, &v);
    let want: Vec<i64> = vals.iter().map(|x| x * 2).collect();
    assert_eq!(d.to_vec().unwrap(), want);
    // The derived chunks the agent wrote are placed with two copies each.
    assert_eq!(r.pool.repair_now(), 0);
}
