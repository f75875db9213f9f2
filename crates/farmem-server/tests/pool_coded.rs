//! Erasure-coded pools (4 data + 2 parity spans per stripe) over real `farmem-server`
//! processes: two servers killed with SIGKILL in the middle of a vector update lose nothing
//! (every element and every hash-map key checked), repair restores full redundancy so that two
//! more may die; and a
//! randomized history of batches, frees, reads, kills, restarts (as new members) and repairs is
//! checked against a model of what was acknowledged; and a pool with a size rule codes a
//! vector's chunks and replicates small boxes beside them, both surviving two kills.
//!
//! Seeded: `FARMEM_SEED` replays a history's seed (printed first and in every failure).

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use farmem::backend::pool::CodingOptions;
use farmem::backend::{PoolBackend, PoolConfig, Redundancy, TcpBackend};
use farmem::containers::{FarHashMap, FarVec, HashMapConfig};
use farmem::{Backend, BackendConfig, BackendError, FarBox, Runtime, RuntimeConfig};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use support::ServerProc;
use support::pool::member;

/// Silence after which a member is declared down: the product default, so that a server merely
/// slowed by a loaded machine is not taken for dead (SIGKILLs are seen at once, by the reset).
const SILENCE: Duration = Duration::from_secs(1);

/// A coded pool over `members`; members that go down stay down (servers restarted are added
/// back by hand).
fn coded_pool(members: &[Arc<TcpBackend>], k: u8, m: u8) -> Arc<PoolBackend> {
    let cfg = PoolConfig::new(Redundancy::coded(k, m))
        .maintenance_interval(Duration::from_millis(20))
        .rejoin(None, Duration::from_secs(30))
        .coding(CodingOptions::default().seal_after(Duration::from_millis(20)));
    let list = members
        .iter()
        .map(|b| b.clone() as Arc<dyn Backend>)
        .collect();
    Arc::new(PoolBackend::new(list, cfg).unwrap())
}

/// Runs maintenance passes until every stripe is sealed with full redundancy.
fn settle(pool: &PoolBackend) {
    support::wait_until("full redundancy", Duration::from_secs(60), || {
        pool.repair_now() == 0
    });
}

#[test]
fn four_plus_two_loses_nothing_to_two_kill9_and_repairs_for_two_more() {
    let mut servers: Vec<ServerProc> = (0..8).map(|_| ServerProc::start(&[])).collect();
    let members: Vec<Arc<TcpBackend>> = servers.iter().map(|s| member(&s.addr, SILENCE)).collect();
    let pool = coded_pool(&members, 4, 2);
    let rt = Runtime::new(RuntimeConfig::new(8 << 20).backend(BackendConfig::Custom(pool.clone())))
        .unwrap();
    // 32 MiB of u64 against an 8 MiB local budget: most of it lives on the servers.
    let n = 4usize << 20;
    let mut v: FarVec<u64> = FarVec::new(&rt);
    v.extend((0..n as u64).map(|i| i * 3)).unwrap();
    v.flush().unwrap();
    // A hash map beside it (server-side tables: replicated on m + 1 members).
    let map: FarHashMap<u64, u64> = FarHashMap::new(&rt, HashMapConfig::new(256 << 10)).unwrap();
    let keys = 50_000u64;
    for k in 0..keys / 2 {
        map.insert(k, k ^ 0x5555).unwrap();
    }
    map.flush().unwrap();

    // Scan and update; kill two servers (SIGKILL) at a third and two thirds of the way.
    let mut seen = 0usize;
    let mut victims = vec![5usize, 1];
    v.scan_mut(|chunk| {
        for x in chunk.iter_mut() {
            assert_eq!(*x, seen as u64 * 3, "element {seen}");
            *x += 1;
            seen += 1;
        }
        if seen >= n * (3 - victims.len()) / 3
            && let Some(i) = victims.pop()
        {
            servers[i].kill9();
            eprintln!("killed {} after {seen} elements", servers[i].addr);
        }
    })
    .unwrap();
    assert_eq!(seen, n);
    assert!(victims.is_empty());
    let check = |v: &FarVec<u64>| {
        let mut i = 0u64;
        v.scan(|chunk| {
            for &x in chunk {
                assert_eq!(x, i * 3 + 1, "element {i}");
                i += 1;
            }
        })
        .unwrap();
        assert_eq!(i, n as u64);
    };
    check(&v);
    v.flush().unwrap();
    for k in keys / 2..keys {
        map.insert(k, k ^ 0x5555).unwrap();
    }
    map.flush().unwrap();
    for k in 0..keys {
        assert_eq!(map.get(&k).unwrap(), Some(k ^ 0x5555), "key {k}");
    }
    let st = pool.coded_stats().unwrap();
    eprintln!("after two kills: {st:?}");

    // Six servers left: repair puts every lost span on them; then two more may die.
    settle(&pool);
    let st = pool.coded_stats().unwrap();
    assert!(st.rebuilt_spans > 0, "{st:?}");
    servers[0].kill9();
    servers[7].kill9();
    check(&v);
    for k in (0..keys).step_by(7) {
        assert_eq!(map.get(&k).unwrap(), Some(k ^ 0x5555), "key {k}");
    }
    eprintln!("after four kills: {:?}", pool.coded_stats().unwrap());
}

#[test]
fn a_size_rule_codes_a_vector_and_replicates_small_boxes_in_one_runtime() {
    let servers: Vec<ServerProc> = (0..6).map(|_| ServerProc::start(&[])).collect();
    let members: Vec<Arc<TcpBackend>> = servers.iter().map(|s| member(&s.addr, SILENCE)).collect();
    let cfg = PoolConfig::new(Redundancy::coded(4, 2))
        .maintenance_interval(Duration::from_millis(20))
        .coding(CodingOptions::default().seal_after(Duration::from_millis(20)))
        .code_from(16 << 10);
    let list = members
        .iter()
        .map(|b| b.clone() as Arc<dyn Backend>)
        .collect();
    let pool = Arc::new(PoolBackend::new(list, cfg).unwrap());
    let rt = Runtime::new(RuntimeConfig::new(8 << 20).backend(BackendConfig::Custom(pool.clone())))
        .unwrap();
    // 16 MiB of u64 in 64 KiB chunks (coded) and 4,000 boxes of 64 bytes (replicated 3 times).
    let n = 2usize << 20;
    let mut v: FarVec<u64> = FarVec::new(&rt);
    v.extend((0..n as u64).map(|i| i * 5)).unwrap();
    let boxes: Vec<FarBox<[u64; 8]>> = (0..4000u64)
        .map(|i| FarBox::new(&rt, [i; 8]).unwrap())
        .collect();
    v.flush().unwrap();
    farmem::test_support::evacuate_now(&rt);
    settle(&pool);
    let coded = pool.coded_stats().unwrap();
    let table = pool.pool_stats();
    assert!(coded.objects >= (n * 8 / (64 << 10)) as u64, "{coded:?}");
    assert!(table.objects >= 4000, "boxes replicated: {table:?}");
    let on = pool.locations(boxes[0].far_id()).unwrap();
    assert_eq!(on.len(), 3, "a box on m + 1 members");

    let check = |v: &FarVec<u64>, boxes: &[FarBox<[u64; 8]>], add: u64| {
        let mut i = 0u64;
        v.scan(|chunk| {
            for &x in chunk {
                assert_eq!(x, i * 5 + add, "element {i}");
                i += 1;
            }
        })
        .unwrap();
        assert_eq!(i, n as u64);
        for (i, b) in boxes.iter().enumerate() {
            assert_eq!(b.get().unwrap(), [i as u64 + add; 8], "box {i}");
        }
    };
    // Two servers die: both kinds of object are still there, and can be written.
    let mut servers = servers;
    servers[1].kill9();
    servers[4].kill9();
    check(&v, &boxes, 0);
    let mut boxes = boxes;
    v.scan_mut(|c| c.iter_mut().for_each(|x| *x += 1)).unwrap();
    for b in &mut boxes {
        let x = b.get().unwrap();
        b.set(x.map(|y| y + 1)).unwrap();
    }
    v.flush().unwrap();
    farmem::test_support::evacuate_now(&rt);
    check(&v, &boxes, 1);
    eprintln!("after two kills: {:?}", pool.coded_stats().unwrap());
}

/// The values an object may hold after the history so far.
#[derive(Clone, Debug)]
enum Known {
    /// The last acknowledged write (`None`: freed or never written).
    Is(Option<Vec<u8>>),
    /// A write failed: the old value or any of the failed ones.
    AnyOf(Vec<Option<Vec<u8>>>),
}

impl Known {
    fn allows(&self, got: Option<&[u8]>) -> bool {
        match self {
            Known::Is(v) => v.as_deref() == got,
            Known::AnyOf(vs) => vs.iter().any(|v| v.as_deref() == got),
        }
    }
}

#[test]
fn randomized_history_with_kills_restarts_and_frees_keeps_every_acknowledged_object() {
    let seed = std::env::var("FARMEM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("FARMEM_SEED={seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let (k, m) = (3u8, 2u8);
    let mut servers: Vec<ServerProc> = (0..7).map(|_| ServerProc::start(&[])).collect();
    let members: Vec<Arc<TcpBackend>> = servers.iter().map(|s| member(&s.addr, SILENCE)).collect();
    let pool = coded_pool(&members, k, m);
    let mut dead: Vec<usize> = Vec::new();
    let mut down_since_repair = 0usize;
    let keys = 600u64;
    let mut model: HashMap<u64, Known> = HashMap::new();
    let mut ver = 0u64;
    for step in 0..2500 {
        match rng.random_range(0..100) {
            0..=49 => {
                let batch: Vec<(u64, Vec<u8>)> = (0..rng.random_range(1..32))
                    .map(|_| {
                        ver += 1;
                        let id = rng.random_range(0..keys);
                        let len = rng.random_range(0..3000);
                        let v: Vec<u8> = (0..len).map(|i| (ver as usize * 7 + i) as u8).collect();
                        (id, v)
                    })
                    .collect();
                let items: Vec<(u64, &[u8])> =
                    batch.iter().map(|(i, v)| (*i, v.as_slice())).collect();
                match pool.put_many(&items) {
                    Ok(()) => {
                        for (id, v) in batch {
                            model.insert(id, Known::Is(Some(v)));
                        }
                    }
                    Err(e) => {
                        eprintln!("seed {seed} step {step}: batch failed: {e}");
                        for (id, v) in batch {
                            let mut any = match model.remove(&id) {
                                Some(Known::Is(old)) => vec![old],
                                Some(Known::AnyOf(olds)) => olds,
                                None => vec![None],
                            };
                            any.push(Some(v));
                            model.insert(id, Known::AnyOf(any));
                        }
                    }
                }
            }
            50..=64 => {
                let ids: Vec<u64> = (0..rng.random_range(1..12))
                    .map(|_| rng.random_range(0..keys))
                    .collect();
                pool.free(&ids).unwrap();
                for id in ids {
                    model.insert(id, Known::Is(None));
                }
            }
            65..=89 => {
                let ids: Vec<u64> = (0..rng.random_range(1..16))
                    .map(|_| rng.random_range(0..keys))
                    .collect();
                for id in ids {
                    let got = match pool.get(id) {
                        Ok(v) => Some(v),
                        Err(BackendError::NotFound(_)) => None,
                        Err(e) => panic!("seed {seed} step {step}: object {id}: {e}"),
                    };
                    let want = model.get(&id).cloned().unwrap_or(Known::Is(None));
                    assert!(
                        want.allows(got.as_deref()),
                        "seed {seed} step {step}: object {id}: got {:?} bytes",
                        got.map(|g| g.len())
                    );
                }
            }
            90..=93 => {
                // Kill one more, never more than m before repair has caught up, and keep
                // k + m servers alive so that repair can restore every stripe.
                let live: Vec<usize> = (0..servers.len()).filter(|i| !dead.contains(i)).collect();
                if down_since_repair < usize::from(m) && live.len() > usize::from(k + m) {
                    let i = live[rng.random_range(0..live.len())];
                    servers[i].kill9();
                    dead.push(i);
                    down_since_repair += 1;
                    eprintln!("seed {seed} step {step}: killed {}", servers[i].addr);
                }
            }
            94..=96 => {
                settle(&pool);
                down_since_repair = 0;
            }
            _ => {
                // A killed server comes back empty, as a new member.
                if let Some(i) = dead.pop() {
                    servers[i].restart();
                    pool.add_member(member(&servers[i].addr, SILENCE)).unwrap();
                    eprintln!("seed {seed} step {step}: restarted {}", servers[i].addr);
                }
            }
        }
    }
    settle(&pool);
    for id in 0..keys {
        let got = match pool.get(id) {
            Ok(v) => Some(v),
            Err(BackendError::NotFound(_)) => None,
            Err(e) => panic!("seed {seed}: object {id}: {e}"),
        };
        let want = model.get(&id).cloned().unwrap_or(Known::Is(None));
        assert!(want.allows(got.as_deref()), "seed {seed}: object {id}");
    }
    let st = pool.coded_stats().unwrap();
    eprintln!("seed {seed}: {st:?}");
    assert_eq!(st.unsealed + st.degraded, 0);
}

#[test]
fn memory_stays_near_the_scheme_factor_during_and_after_a_run_with_frees() {
    let servers: Vec<ServerProc> = (0..6).map(|_| ServerProc::start(&[])).collect();
    let members: Vec<Arc<TcpBackend>> = servers.iter().map(|s| member(&s.addr, SILENCE)).collect();
    let pool = coded_pool(&members, 4, 2);
    let mut rng = SmallRng::seed_from_u64(17);
    let ids = 1024u64;
    let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
    let used = || -> u64 { members.iter().map(|m| m.stats().unwrap().used_bytes).sum() };
    let mut peak = 0f64;
    for round in 0..160u32 {
        let batch: Vec<(u64, Vec<u8>)> = (0..48)
            .map(|_| {
                let id = rng.random_range(0..ids);
                let len = rng.random_range(1024..16 << 10);
                (id, (0..len).map(|i| (i as u32 ^ round) as u8).collect())
            })
            .collect();
        let items: Vec<(u64, &[u8])> = batch.iter().map(|(i, v)| (*i, v.as_slice())).collect();
        pool.put_many(&items).unwrap();
        model.extend(batch);
        let frees: Vec<u64> = (0..12).map(|_| rng.random_range(0..ids)).collect();
        pool.free(&frees).unwrap();
        for id in frees {
            model.remove(&id);
        }
        // During the run too: compaction keeps pace with the frees and overwrites.
        if round >= 40 && round % 8 == 0 {
            let live: usize = model.values().map(Vec::len).sum();
            peak = peak.max(used() as f64 / live as f64);
        }
    }
    settle(&pool);
    let used = used();
    let objects: u64 = members.iter().map(|m| m.stats().unwrap().objects).sum();
    let live: usize = model.values().map(Vec::len).sum();
    let f = used as f64 / live as f64;
    let st = pool.coded_stats().unwrap();
    eprintln!("{f:.3} at the end, {peak:.3} at the peak ({objects} server objects) {st:?}");
    for (id, v) in &model {
        assert_eq!(&pool.get(*id).unwrap(), v, "object {id}");
    }
    assert!(f < 1.75, "memory per application byte {f:.3} ({st:?})");
    // About 7 MiB live in stripes of 512 KiB: a stripe being compacted or filled is 7% of it.
    assert!(
        peak < 1.8,
        "memory per application byte at the peak {peak:.3} ({st:?})"
    );
}
