//! Pools over embedded members: failover, degradation without redundancy, repair, drains under
//! concurrent writes, drain refusal, replicated server-side tables, a runtime over a pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use farmem::backend::pool::{Fault, MemberState};
use farmem::backend::{FaultyBackend, MemberId, PoolBackend, PoolConfig, PoolError, Redundancy};
use farmem::containers::{FarHashMap, FarVec, HashMapConfig};
use farmem::{Backend, BackendError, EmbeddedStore, Runtime, RuntimeConfig};

fn members(n: usize, capacity: u64) -> Vec<Arc<FaultyBackend>> {
    (0..n)
        .map(|i| {
            Arc::new(FaultyBackend::new(
                Arc::new(EmbeddedStore::with_capacity(capacity)),
                format!("m{i}"),
            ))
        })
        .collect()
}

fn pool(ms: &[Arc<FaultyBackend>], redundancy: Redundancy) -> PoolBackend {
    let list = ms.iter().map(|m| m.clone() as Arc<dyn Backend>).collect();
    PoolBackend::new(
        list,
        PoolConfig::new(redundancy)
            .repair_rate(None)
            .maintenance_interval(Duration::from_millis(20)),
    )
    .unwrap()
}

fn value(id: u64, generation: u64) -> Vec<u8> {
    let len = 16 + (id * 7 + generation) as usize % 300;
    (0..len)
        .map(|i| (id as usize * 31 + generation as usize * 7 + i) as u8)
        .collect()
}

/// Objects held by the members' own stores (each copy counted once).
fn copies_held(ms: &[Arc<FaultyBackend>], p: &PoolBackend) -> u64 {
    p.members()
        .iter()
        .filter(|m| m.state.serves())
        .map(|m| ms[m.id.0].inner().stats().unwrap().objects)
        .sum()
}

fn repair_fully(p: &PoolBackend) {
    for _ in 0..200 {
        if p.repair_now() == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("repair did not converge: {:?}", p.pool_stats());
}

#[test]
fn replicas_fail_over_and_repair_restores_redundancy() {
    let ms = members(4, u64::MAX);
    let p = pool(&ms, Redundancy::replicas(2));
    let ids: Vec<u64> = (1..=400).collect();
    let items: Vec<(u64, Vec<u8>)> = ids.iter().map(|&id| (id, value(id, 0))).collect();
    let refs: Vec<(u64, &[u8])> = items.iter().map(|(id, v)| (*id, v.as_slice())).collect();
    p.put_many(&refs).unwrap();
    assert_eq!(copies_held(&ms, &p), 800);
    for &id in &ids {
        let loc = p.locations(id).unwrap();
        assert_eq!(loc.len(), 2);
        assert_ne!(loc[0], loc[1]);
    }
    ms[1].set(Fault::Down);
    // Every read succeeds, single and batched, through the failure.
    for &id in &ids {
        assert_eq!(p.get(id).unwrap(), value(id, 0));
    }
    let got = p.get_many(&ids).unwrap();
    assert!(got.iter().zip(&ids).all(|(g, &id)| *g == value(id, 0)));
    assert_eq!(p.members()[1].state, MemberState::Down);
    repair_fully(&p);
    let stats = p.pool_stats();
    assert_eq!(stats.under_replicated, 0);
    assert!(stats.repair.copies > 0);
    for &id in &ids {
        let loc = p.locations(id).unwrap();
        assert_eq!(loc.len(), 2, "{id}");
        assert!(!loc.contains(&MemberId(1)));
        for m in loc {
            assert_eq!(ms[m.0].inner().get(id).unwrap(), value(id, 0));
        }
    }
    assert_eq!(copies_held(&ms, &p), 800);
}

#[test]
fn without_redundancy_a_dead_member_loses_exactly_its_objects() {
    let ms = members(3, u64::MAX);
    let p = pool(&ms, Redundancy::None);
    for id in 1..=300u64 {
        p.put(id, &value(id, 0)).unwrap();
    }
    ms[2].set(Fault::Down);
    let mut lost = 0;
    for id in 1..=300u64 {
        let on_dead = p.locations(id).unwrap() == vec![MemberId(2)];
        match p.get(id) {
            Ok(v) => {
                assert!(!on_dead);
                assert_eq!(v, value(id, 0));
            }
            Err(BackendError::Unavailable { id: got, servers }) => {
                assert!(on_dead, "{id}");
                assert_eq!(got, id);
                assert_eq!(servers, "m2");
                lost += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(lost > 0 && lost < 300, "{lost}");
    // Whole-object writes to a lost object land on a live member; new objects too.
    let victim = (1..=300u64)
        .find(|&id| p.locations(id).unwrap() == vec![MemberId(2)])
        .unwrap();
    p.put(victim, b"again").unwrap();
    assert_eq!(p.get(victim).unwrap(), b"again");
    assert!(matches!(
        p.patch(
            (1..=300u64)
                .find(|&id| p.locations(id).unwrap() == vec![MemberId(2)])
                .unwrap(),
            &[(0, b"x")]
        ),
        Err(BackendError::Unavailable { .. })
    ));
    p.put(1000, b"new").unwrap();
    assert_ne!(p.locations(1000).unwrap(), vec![MemberId(2)]);
}

#[test]
fn a_hung_member_is_failed_over() {
    let ms = members(3, u64::MAX);
    let p = pool(&ms, Redundancy::replicas(2));
    for id in 1..=50u64 {
        p.put(id, &value(id, 1)).unwrap();
    }
    ms[0].set(Fault::Hang(Duration::from_millis(50)));
    for id in 1..=50u64 {
        assert_eq!(p.get(id).unwrap(), value(id, 1));
        p.put(id, &value(id, 2)).unwrap();
    }
    assert_eq!(p.members()[0].state, MemberState::Down);
    for id in 1..=50u64 {
        assert_eq!(p.get(id).unwrap(), value(id, 2));
    }
}

#[test]
fn drain_under_concurrent_writes_loses_nothing() {
    let ms = members(3, u64::MAX);
    let p = Arc::new(pool(&ms, Redundancy::None));
    let n = 2000u64;
    for id in 0..n {
        p.put(id, &value(id, 0)).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3u64)
        .map(|t| {
            let (p, stop) = (p.clone(), stop.clone());
            std::thread::spawn(move || {
                // Thread t owns ids = t (mod 3): its last acknowledged generation is the truth.
                let mut gens = vec![0u64; n as usize];
                let mut round = 1;
                while !stop.load(Ordering::Relaxed) {
                    for id in (t..n).step_by(3) {
                        if (id + round) % 4 == 0 {
                            p.patch(id, &[(0, &[round as u8])]).unwrap();
                            gens[id as usize] = u64::MAX - round;
                        } else {
                            p.put(id, &value(id, round)).unwrap();
                            gens[id as usize] = round;
                        }
                    }
                    round += 1;
                }
                gens
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    p.drain_member(MemberId(0)).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    let gens: Vec<Vec<u64>> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(p.members()[0].state, MemberState::Drained);
    assert_eq!(p.members()[0].objects, 0);
    for id in 0..n {
        let g = gens[(id % 3) as usize][id as usize];
        let got = p.get(id).unwrap();
        if g > u64::MAX / 2 {
            let round = u64::MAX - g;
            assert_eq!(got[0], round as u8, "{id}");
        } else if g > 0 {
            assert_eq!(got, value(id, g), "{id}");
        }
        assert!(!p.locations(id).unwrap().contains(&MemberId(0)));
    }
    // The drained member's own store is empty: every moved copy was dropped there.
    assert_eq!(ms[0].inner().stats().unwrap().objects, 0);
}

#[test]
fn draining_the_last_holder_without_room_is_refused() {
    let ms = members(2, 64 << 10);
    let p = pool(&ms, Redundancy::None);
    // Fill the pool to about 3/4 of both members: member 0's objects cannot all fit on member 1.
    let mut id = 0u64;
    while p.pool_stats().objects < 90 {
        p.put(id, &[7u8; 1000]).unwrap();
        id += 1;
    }
    match p.drain_member(MemberId(0)) {
        Err(PoolError::NoRoom { member, .. }) => assert_eq!(member, "m0"),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.members()[0].state, MemberState::Live);
    for i in 0..id {
        assert_eq!(p.get(i).unwrap(), vec![7u8; 1000]);
    }
    // A bigger member makes room: now the drain succeeds.
    let big = p
        .add_member(Arc::new(EmbeddedStore::with_capacity(1 << 20)))
        .unwrap();
    p.drain_member(MemberId(0)).unwrap();
    assert!(p.members()[big.0].objects > 0);
    for i in 0..id {
        assert_eq!(p.get(i).unwrap(), vec![7u8; 1000]);
    }
    assert!(matches!(
        p.drain_member(MemberId(0)),
        Err(PoolError::NotLive { .. })
    ));
    assert!(matches!(
        p.drain_member(MemberId(9)),
        Err(PoolError::UnknownMember(MemberId(9)))
    ));
}

#[test]
fn runtime_containers_over_a_pool_survive_a_member_loss() {
    let ms = members(3, u64::MAX);
    let p = Arc::new(pool(&ms, Redundancy::replicas(2)));
    let rt = Runtime::new(RuntimeConfig::new(8 << 20).custom_backend(p.clone())).unwrap();
    let n = 1 << 20; // 8 MiB of u64: the budget cannot hold it
    let mut v: FarVec<u64> = FarVec::new(&rt);
    v.extend((0..n as u64).map(|i| i * 3)).unwrap();
    let map: FarHashMap<u64, u64> = FarHashMap::new(&rt, HashMapConfig::new(64 << 10)).unwrap();
    for k in 0..20_000u64 {
        map.insert(k, k * k).unwrap();
    }
    ms[1].set(Fault::Down);
    v.scan_mut(|c| c.iter_mut().for_each(|x| *x += 1)).unwrap();
    for k in 20_000..30_000u64 {
        map.insert(k, k * k).unwrap();
    }
    repair_fully(&p);
    let mut i = 0u64;
    v.scan(|c| {
        for &x in c {
            assert_eq!(x, i * 3 + 1);
            i += 1;
        }
    })
    .unwrap();
    assert_eq!(i, n as u64);
    for k in (0..30_000u64).step_by(7) {
        assert_eq!(map.get(&k).unwrap(), Some(k * k), "{k}");
    }
    assert_eq!(map.len().unwrap(), 30_000);
}

/// A server-side table larger than the table copy's pages (1,024 entries while the application
/// works, 16,384 while it is idle) is drained whole, idle and with lookups running, and under
/// any latency target.
#[test]
fn large_tables_drain_whole_idle_and_under_lookups() {
    let ms = members(4, u64::MAX);
    let p = Arc::new(pool(&ms, Redundancy::replicas(2)));
    let rt = Runtime::new(RuntimeConfig::new(8 << 20).custom_backend(p.clone())).unwrap();
    let map: FarHashMap<u64, u64> = FarHashMap::new(&rt, HashMapConfig::new(64 << 10)).unwrap();
    let n = 40_000u64;
    for k in 0..n {
        map.insert(k, k * 3 + 1).unwrap();
    }
    // Idle: large pages.
    p.drain_member(MemberId(0)).unwrap();
    assert_eq!(p.member_state(MemberId(0)), Some(MemberState::Drained));
    // Lookups running, a tight latency target: small pages, a slow window.
    p.set_repair_pacing(1.0, 1.1);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(map.get(&k).unwrap(), Some(k * 3 + 1), "{k}");
                k = (k + 7919) % n;
            }
        });
        let r = p.drain_member(MemberId(1));
        stop.store(true, Ordering::Relaxed);
        r.unwrap();
    });
    assert_eq!(p.member_state(MemberId(1)), Some(MemberState::Drained));
    for k in 0..n {
        assert_eq!(map.get(&k).unwrap(), Some(k * 3 + 1), "{k}");
    }
    assert_eq!(map.len().unwrap() as u64, n);
}
