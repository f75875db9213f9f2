//! Coded pools over embedded stores, checked against a model of what was acknowledged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::backend::pool::{CodingOptions, Fault, FaultyBackend, PoolBackend, PoolConfig};
use crate::backend::{Backend, BackendError, EmbeddedStore, Redundancy};

struct Rig {
    pool: PoolBackend,
    stores: Vec<Arc<FaultyBackend>>,
}

fn store(i: usize) -> Arc<FaultyBackend> {
    Arc::new(FaultyBackend::new(
        Arc::new(EmbeddedStore::new()),
        format!("s{i}"),
    ))
}

fn rig(n: usize, k: u8, m: u8, span: usize) -> Rig {
    rig_with(n, k, m, CodingOptions::default().span_bytes(span))
}

/// A pool of `n` members coding `k + m` with `opts`, sealing and maintaining every 20 ms.
fn rig_with(n: usize, k: u8, m: u8, opts: CodingOptions) -> Rig {
    let stores: Vec<Arc<FaultyBackend>> = (0..n).map(store).collect();
    let members = stores
        .iter()
        .map(|s| s.clone() as Arc<dyn Backend>)
        .collect();
    let cfg = PoolConfig::new(Redundancy::coded(k, m))
        .maintenance_interval(Duration::from_millis(20))
        .coding(opts.seal_after(Duration::from_millis(20)));
    Rig {
        pool: PoolBackend::new(members, cfg).unwrap(),
        stores,
    }
}

fn value(id: u64, ver: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (id as usize * 131 + ver as usize * 17 + i * 7) as u8)
        .collect()
}

/// Server bytes (payload plus per-object overhead) over live application bytes.
fn memory_factor(r: &Rig, model: &HashMap<u64, Vec<u8>>) -> f64 {
    let used: u64 = r
        .stores
        .iter()
        .filter(|s| s.fault() == Fault::None)
        .map(|s| s.stats().unwrap().used_bytes)
        .sum();
    let app: usize = model.values().map(Vec::len).sum();
    used as f64 / app.max(1) as f64
}

fn check_all(pool: &PoolBackend, model: &HashMap<u64, Vec<u8>>) {
    let mut ids: Vec<u64> = model.keys().copied().collect();
    ids.sort_unstable();
    for chunk in ids.chunks(97) {
        let got = pool.get_many(chunk).unwrap();
        for (id, v) in chunk.iter().zip(got) {
            assert_eq!(&v, &model[id], "object {id}");
        }
    }
    if let Some(&id) = ids.first() {
        assert_eq!(pool.get(id).unwrap(), model[&id]);
    }
}

/// Puts objects `0..n` of 700 bytes (version 1) and returns them.
fn put_values(pool: &PoolBackend, n: u64) -> Vec<(u64, Vec<u8>)> {
    let batch: Vec<(u64, Vec<u8>)> = (0..n).map(|id| (id, value(id, 1, 700))).collect();
    let items: Vec<(u64, &[u8])> = batch.iter().map(|(i, v)| (*i, v.as_slice())).collect();
    pool.put_many(&items).unwrap();
    batch
}

fn settle(pool: &PoolBackend) -> usize {
    let mut left = usize::MAX;
    for _ in 0..20 {
        left = pool.repair_now();
        if left == 0 {
            break;
        }
    }
    left
}

#[test]
fn objects_stay_whole_and_memory_stays_near_k_plus_m_over_k_with_frees() {
    let r = rig(6, 4, 2, 8 << 10);
    let mut rng = SmallRng::seed_from_u64(7);
    let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut ver = 0u32;
    for round in 0..150 {
        let batch: Vec<(u64, Vec<u8>)> = (0..32)
            .map(|_| {
                let id = rng.random_range(0..1500u64);
                ver += 1;
                (id, value(id, ver, rng.random_range(200..1500)))
            })
            .collect();
        let items: Vec<(u64, &[u8])> = batch.iter().map(|(i, v)| (*i, v.as_slice())).collect();
        r.pool.put_many(&items).unwrap();
        for (id, v) in batch {
            model.insert(id, v);
        }
        if round % 3 == 0 {
            let ids: Vec<u64> = (0..10).map(|_| rng.random_range(0..1500u64)).collect();
            r.pool.free(&ids).unwrap();
            for id in ids {
                model.remove(&id);
            }
        }
    }
    check_all(&r.pool, &model);
    // Every object whole on one member, under its own key.
    let id = *model.keys().next().unwrap();
    assert_eq!(r.pool.locations(id).unwrap().len(), 1);
    settle(&r.pool);
    let st = r.pool.coded_stats().unwrap();
    assert_eq!(st.objects as usize, model.len());
    assert_eq!(st.unsealed, 0, "{st:?}");
    assert!(st.compacted > 0, "{st:?}");
    let f = memory_factor(&r, &model);
    assert!(f < 1.7, "memory per application byte {f:.3} ({st:?})");
    assert!(f > 1.4, "parity is there: {f:.3}");
    check_all(&r.pool, &model);
    // Freeing everything gives every byte back.
    let ids: Vec<u64> = model.keys().copied().collect();
    r.pool.free(&ids).unwrap();
    settle(&r.pool);
    let used: u64 = r.stores.iter().map(|s| s.stats().unwrap().objects).sum();
    assert_eq!(used, 0);
    assert!(matches!(r.pool.get(id), Err(BackendError::NotFound(_))));
}

#[test]
fn any_m_members_may_fail_and_repair_restores_redundancy() {
    let r = rig(8, 4, 2, 4 << 10);
    let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
    let write = |model: &mut HashMap<u64, Vec<u8>>, range: std::ops::Range<u64>, ver: u32| {
        let batch: Vec<(u64, Vec<u8>)> = range
            .map(|id| (id, value(id, ver, 300 + (id % 900) as usize)))
            .collect();
        for chunk in batch.chunks(40) {
            let items: Vec<(u64, &[u8])> = chunk.iter().map(|(i, v)| (*i, v.as_slice())).collect();
            r.pool.put_many(&items).unwrap();
        }
        model.extend(batch);
    };
    write(&mut model, 0..600, 1);
    settle(&r.pool);
    // Two members die: every object is still readable (degraded reads decode them).
    r.stores[1].set(Fault::Down);
    r.stores[4].set(Fault::Down);
    check_all(&r.pool, &model);
    // Decoded by degraded reads, or already rebuilt by the maintenance thread.
    let st = r.pool.coded_stats().unwrap();
    assert!(st.degraded_reads + st.rebuilt_spans > 0, "{st:?}");
    // Writes go on, including overwrites of objects whose member is gone.
    write(&mut model, 300..800, 2);
    check_all(&r.pool, &model);
    assert_eq!(settle(&r.pool), 0, "{:?}", r.pool.coded_stats());
    // Repaired: two more may fail.
    r.stores[0].set(Fault::Down);
    r.stores[6].set(Fault::Down);
    check_all(&r.pool, &model);
    // A third failure among the remaining four takes stripes below k: reads fail with a typed
    // error naming the servers, never with wrong data.
    r.stores[2].set(Fault::Down);
    let mut unavailable = 0;
    for (&id, v) in &model {
        match r.pool.get(id) {
            Ok(got) => assert_eq!(&got, v),
            Err(BackendError::Unavailable { .. }) => unavailable += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(unavailable > 0);
}

/// A read whose member and one more member of its stripe have gone silent, not yet declared
/// down, waits until they are (here: their next call fails as a dead server's) and decodes
/// from the others, instead of giving up while each attempt meets a silent member.
/// Six members coding 4 + 2, objects `0..200` of 700 bytes sealed with full parity, and no
/// maintenance pass meanwhile: nothing but the calls of a test find a member silent or down.
fn sealed_without_maintenance() -> (Rig, Vec<(u64, Vec<u8>)>) {
    let stores: Vec<Arc<FaultyBackend>> = (0..6).map(store).collect();
    let members = stores
        .iter()
        .map(|s| s.clone() as Arc<dyn Backend>)
        .collect();
    let cfg = PoolConfig::new(Redundancy::coded(4, 2))
        .maintenance_interval(Duration::from_secs(60))
        .coding(
            CodingOptions::default()
                .span_bytes(4 << 10)
                .seal_after(Duration::from_millis(1)),
        );
    let pool = PoolBackend::new(members, cfg).unwrap();
    let batch = put_values(&pool, 200);
    // Sealed with full parity (a stripe seals once it is 1 ms old).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while settle(&pool) != 0 || pool.coded_stats().unwrap().unsealed != 0 {
        assert!(std::time::Instant::now() < deadline, "not sealed");
        std::thread::sleep(Duration::from_millis(2));
    }
    (Rig { pool, stores }, batch)
}

#[test]
fn reads_wait_out_silent_members_until_they_are_declared_down() {
    let (Rig { pool, stores }, batch) = sealed_without_maintenance();
    let home = pool.locations(7).unwrap()[0].0;
    let other = (0..6).find(|&i| i != home).unwrap();
    stores[home].set(Fault::Silent);
    stores[other].set(Fault::Silent);
    let flip = {
        let (a, b) = (stores[home].clone(), stores[other].clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            a.set(Fault::Down);
            b.set(Fault::Down);
        })
    };
    assert_eq!(pool.get(7).unwrap(), value(7, 1, 700));
    flip.join().unwrap();
    for (id, v) in &batch {
        assert_eq!(&pool.get(*id).unwrap(), v, "object {id}");
    }
}

#[test]
fn a_slow_member_is_waited_for_when_too_few_others_are_left_to_decode() {
    let (r, batch) = sealed_without_maintenance();
    let home = r.pool.locations(7).unwrap()[0].0;
    // Two other members die: the stripe has exactly k members left, the home one among them.
    let dead: Vec<usize> = (0..6).filter(|&i| i != home).take(2).collect();
    for &i in &dead {
        r.stores[i].set(Fault::Down);
    }
    let _ = r.pool.stats();
    // The home member's reads stay silent past the read patience for a while (it answers
    // everything else, heartbeats included), then it answers reads again.
    r.stores[home].set(Fault::Slow);
    let wake = {
        let s = r.stores[home].clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            s.set(Fault::None);
        })
    };
    assert_eq!(r.pool.get(7).unwrap(), value(7, 1, 700));
    wake.join().unwrap();
    for (id, v) in &batch {
        assert_eq!(&r.pool.get(*id).unwrap(), v, "object {id}");
    }
}

#[test]
fn a_member_failing_under_an_open_stripe_loses_nothing() {
    let r = rig(7, 4, 2, 64 << 10);
    let mut model = HashMap::new();
    let batch: Vec<(u64, Vec<u8>)> = (0..50u64).map(|id| (id, value(id, 1, 1000))).collect();
    let items: Vec<(u64, &[u8])> = batch.iter().map(|(i, v)| (*i, v.as_slice())).collect();
    r.pool.put_many(&items).unwrap();
    model.extend(batch);
    assert_eq!(r.pool.coded_stats().unwrap().unsealed, 1);
    // The open stripe's member dies: reads come from the client's copy, writes move its span.
    let victim = r.pool.locations(0).unwrap()[0].0;
    r.stores[victim].set(Fault::Down);
    check_all(&r.pool, &model);
    let batch: Vec<(u64, Vec<u8>)> = (0..80u64).map(|id| (id, value(id, 2, 900))).collect();
    let items: Vec<(u64, &[u8])> = batch.iter().map(|(i, v)| (*i, v.as_slice())).collect();
    r.pool.put_many(&items).unwrap();
    model.extend(batch);
    assert_eq!(settle(&r.pool), 0);
    assert_eq!(r.pool.coded_stats().unwrap().unsealed, 0);
    // Sealed with full parity on live members: two more failures are survivable.
    let others: Vec<usize> = (0..7).filter(|&i| i != victim).take(2).collect();
    for &i in &others {
        r.stores[i].set(Fault::Down);
    }
    check_all(&r.pool, &model);
}

#[test]
fn patches_are_new_versions_and_direct_agent_calls_are_refused() {
    let r = rig(6, 4, 2, 4 << 10);
    r.pool.put(1, &[0u8; 100]).unwrap();
    r.pool.patch(1, &[(10, b"abc"), (98, b"zz")]).unwrap();
    let v = r.pool.get(1).unwrap();
    assert_eq!(&v[10..13], b"abc");
    assert_eq!(&v[98..], b"zz");
    assert!(matches!(
        r.pool.patch(1, &[(99, b"xy")]),
        Err(BackendError::SizeMismatch { .. })
    ));
    let mut buf = vec![0u8; 100];
    r.pool.get_into(1, &mut buf).unwrap();
    assert_eq!(buf, v);
    assert!(matches!(
        r.pool
            .compute(1, farmem_proto::agent::op::VEC_AGGREGATE, &[]),
        Err(BackendError::Config(_))
    ));
    // Spread operations name each chunk by its key on its member instead.
    assert!(r.pool.sites().is_some());
    let bad = PoolBackend::new(
        vec![Arc::new(EmbeddedStore::new()) as Arc<dyn Backend>],
        PoolConfig::new(Redundancy::coded(0, 2)),
    );
    assert!(matches!(bad, Err(crate::backend::PoolError::Scheme(_))));
}

/// Random batches, frees, member kills (never more than `m` at once among unrepaired stripes),
/// new members, over a long run; every acknowledged object is checked against the model.
#[test]
fn randomized_history_with_kills_adds_and_frees() {
    let (k, m) = (3u8, 2u8);
    let r = rig(7, k, m, 4 << 10);
    let mut stores = r.stores.clone();
    let mut rng = SmallRng::seed_from_u64(42);
    let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut down_since_repair = 0usize;
    let mut ver = 0;
    let mut refused = 0;
    for step in 0..1500 {
        match rng.random_range(0..100) {
            0..=54 => {
                let n = rng.random_range(1..24);
                let batch: Vec<(u64, Vec<u8>)> = (0..n)
                    .map(|_| {
                        let id = rng.random_range(0..800u64);
                        ver += 1;
                        (id, value(id, ver, rng.random_range(0..2500)))
                    })
                    .collect();
                let items: Vec<(u64, &[u8])> =
                    batch.iter().map(|(i, v)| (*i, v.as_slice())).collect();
                match r.pool.put_many(&items) {
                    Ok(()) => model.extend(batch),
                    // A full member refused its share: each object is its old or its new value.
                    Err(BackendError::OutOfCapacity { .. }) => {
                        refused += 1;
                        let mut ids: Vec<u64> = batch.iter().map(|b| b.0).collect();
                        ids.dedup();
                        for id in ids {
                            let old = model.get(&id);
                            match r.pool.get(id) {
                                Ok(v) if batch.iter().any(|b| b.0 == id && b.1 == v) => {
                                    model.insert(id, v);
                                }
                                Ok(v) => assert_eq!(Some(&v), old, "object {id} at step {step}"),
                                Err(BackendError::NotFound(_)) => assert!(old.is_none()),
                                Err(e) => panic!("object {id} at step {step}: {e}"),
                            }
                        }
                    }
                    Err(e) => panic!("step {step}: {e}"),
                }
            }
            55..=69 => {
                let ids: Vec<u64> = (0..rng.random_range(1..16))
                    .map(|_| rng.random_range(0..800u64))
                    .collect();
                r.pool.free(&ids).unwrap();
                for id in ids {
                    model.remove(&id);
                }
            }
            70..=89 => {
                let id = rng.random_range(0..800u64);
                match (r.pool.get(id), model.get(&id)) {
                    (Ok(v), Some(want)) => assert_eq!(&v, want, "object {id} at step {step}"),
                    (Err(BackendError::NotFound(_)), None) => {}
                    (got, want) => panic!(
                        "object {id} at step {step}: got {:?}, want {:?}",
                        got.map(|v| v.len()),
                        want.map(Vec::len)
                    ),
                }
            }
            90 => {
                // A member fills up, or the full one has room again.
                match stores.iter().find(|s| s.fault() == Fault::Full) {
                    Some(s) => s.set(Fault::None),
                    None => {
                        let live: Vec<&Arc<FaultyBackend>> =
                            stores.iter().filter(|s| s.fault() == Fault::None).collect();
                        live[rng.random_range(0..live.len())].set(Fault::Full);
                    }
                }
            }
            91..=94 => {
                let live: Vec<usize> = (0..stores.len())
                    .filter(|&i| stores[i].fault() == Fault::None)
                    .collect();
                // Keep enough members to place full stripes after repair.
                if down_since_repair < usize::from(m) && live.len() > usize::from(k + m) {
                    let v = live[rng.random_range(0..live.len())];
                    stores[v].set(Fault::Down);
                    down_since_repair += 1;
                }
            }
            95..=97 => {
                if settle(&r.pool) == 0 {
                    down_since_repair = 0;
                }
            }
            _ => {
                let s = store(stores.len());
                r.pool.add_member(s.clone() as Arc<dyn Backend>).unwrap();
                stores.push(s);
            }
        }
    }
    check_all(&r.pool, &model);
    for s in &stores {
        if s.fault() == Fault::Full {
            s.set(Fault::None);
        }
    }
    assert_eq!(settle(&r.pool), 0);
    check_all(&r.pool, &model);
    let st = r.pool.coded_stats().unwrap();
    assert!(st.rebuilt_spans > 0 && st.degraded_reads > 0, "{st:?}");
    eprintln!("batches refused by a full member: {refused}");
}

#[test]
fn concurrent_writers_and_readers_through_a_failure() {
    let r = Arc::new(rig(7, 4, 2, 8 << 10));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let r = r.clone();
            std::thread::spawn(move || {
                let mut model = HashMap::new();
                for round in 0..60u32 {
                    let batch: Vec<(u64, Vec<u8>)> = (0..16u64)
                        .map(|i| {
                            let id = t * 10_000 + (u64::from(round) * 7 + i) % 200;
                            (id, value(id, round, 100 + (i as usize * 37) % 1200))
                        })
                        .collect();
                    let items: Vec<(u64, &[u8])> =
                        batch.iter().map(|(i, v)| (*i, v.as_slice())).collect();
                    r.pool.put_many(&items).unwrap();
                    model.extend(batch);
                    if round == 30 && t == 0 {
                        r.stores[3].set(Fault::Down);
                    }
                    let id = *model.keys().next().unwrap();
                    assert_eq!(r.pool.get(id).unwrap(), model[&id]);
                }
                model
            })
        })
        .collect();
    let mut model = HashMap::new();
    for h in threads {
        model.extend(h.join().unwrap());
    }
    check_all(&r.pool, &model);
    assert_eq!(settle(&r.pool), 0);
    r.stores[5].set(Fault::Down);
    r.stores[6].set(Fault::Down);
    check_all(&r.pool, &model);
}

#[test]
fn churn_of_large_objects_stays_near_the_scheme_factor() {
    let r = rig(6, 4, 2, 32 << 10);
    let mut rng = SmallRng::seed_from_u64(17);
    let ids = 1024u64;
    let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
    for round in 0..160u32 {
        let batch: Vec<(u64, Vec<u8>)> = (0..48)
            .map(|_| {
                let id = rng.random_range(0..ids);
                (id, value(id, round, rng.random_range(1024..16 << 10)))
            })
            .collect();
        let items: Vec<(u64, &[u8])> = batch.iter().map(|(i, v)| (*i, v.as_slice())).collect();
        r.pool.put_many(&items).unwrap();
        model.extend(batch);
        let frees: Vec<u64> = (0..12).map(|_| rng.random_range(0..ids)).collect();
        r.pool.free(&frees).unwrap();
        for id in frees {
            model.remove(&id);
        }
    }
    settle(&r.pool);
    let st = r.pool.coded_stats().unwrap();
    let f = memory_factor(&r, &model);
    eprintln!("{f:.3} {st:?}");
    check_all(&r.pool, &model);
    assert!(f < 1.75, "memory per application byte {f:.3} ({st:?})");
}

#[test]
fn a_lost_span_goes_to_a_substitute_in_its_stripe_until_a_member_is_added() {
    // Exactly k + m members: no member outside any stripe.
    let r = rig(6, 4, 2, 4 << 10);
    let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
    let batch: Vec<(u64, Vec<u8>)> = (0..400)
        .map(|id| (id, value(id, 1, 500 + (id % 700) as usize)))
        .collect();
    for chunk in batch.chunks(40) {
        let items: Vec<(u64, &[u8])> = chunk.iter().map(|(i, v)| (*i, v.as_slice())).collect();
        r.pool.put_many(&items).unwrap();
    }
    model.extend(batch);
    assert_eq!(settle(&r.pool), 0);
    let on_victim: Vec<u64> = (0..400)
        .filter(|&id| r.pool.locations(id).unwrap()[0].0 == 1)
        .collect();
    assert!(!on_victim.is_empty());
    r.stores[1].set(Fault::Down);
    let _ = r.pool.get(on_victim[0]);
    // The lost data spans are rebuilt onto members of their own stripes: reads of the dead
    // member's objects are one request again, and the stripes still count as degraded.
    assert!(settle(&r.pool) > 0, "substitutes stay degraded");
    for &id in &on_victim {
        assert_ne!(r.pool.locations(id).unwrap()[0].0, 1, "object {id} moved");
    }
    let before = r.pool.coded_stats().unwrap();
    check_all(&r.pool, &model);
    assert_eq!(
        r.pool.coded_stats().unwrap().degraded_reads,
        before.degraded_reads,
        "no read decodes"
    );
    assert!(before.rebuilt_spans > 0);
    // A second failure, of any member, loses nothing: the stripes still tolerate one.
    r.stores[3].set(Fault::Down);
    check_all(&r.pool, &model);
    // Two members added: every span goes to distinct members again, full redundancy.
    for i in 6..8 {
        r.pool.add_member(store(i)).unwrap();
    }
    assert_eq!(settle(&r.pool), 0, "{:?}", r.pool.coded_stats());
    r.stores[0].set(Fault::Down);
    r.stores[5].set(Fault::Down);
    check_all(&r.pool, &model);
}

/// A repair right after a kill, before any heartbeat noticed it, still finds the dead member.
#[test]
fn a_repair_right_after_a_kill_finds_the_dead_member() {
    let r = rig(7, 3, 2, 4 << 10);
    let batch = put_values(&r.pool, 400);
    assert_eq!(settle(&r.pool), 0);
    let on = |m: usize| {
        (0..400u64)
            .filter(|&id| r.pool.locations(id).unwrap()[0].0 == m)
            .count()
    };
    assert!(on(0) > 0);
    r.stores[0].set(Fault::Down);
    assert_eq!(settle(&r.pool), 0);
    assert_eq!(
        on(0),
        0,
        "a repair that counts nothing left moved every span off the dead member"
    );
    check_all(&r.pool, &batch.into_iter().collect());
}

/// With more than `m` members of a stripe lost, its objects are unavailable (a typed error
/// naming the servers), and repair and compaction give up on it instead of retrying forever.
#[test]
fn more_than_m_losses_fail_their_objects_and_repair_still_returns() {
    let r = Arc::new(rig(6, 3, 2, 4 << 10));
    put_values(&r.pool, 400);
    assert_eq!(settle(&r.pool), 0);
    for s in &r.stores[..3] {
        s.set(Fault::Down);
    }
    // Frees leave dead space over the slack in stripes that can no longer be read whole.
    let frees: Vec<u64> = (0..400).filter(|id| id % 3 != 0).collect();
    r.pool.free(&frees).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let pool = r.clone();
    std::thread::spawn(move || tx.send(settle(&pool.pool)).unwrap());
    let left = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("a repair pass over unreadable stripes returns");
    assert!(left > 0, "stripes with more than m losses stay degraded");
    let mut lost = 0;
    for id in (0..400u64).filter(|id| id % 3 == 0) {
        match r.pool.get(id) {
            Ok(v) => assert_eq!(v, value(id, 1, 700)),
            Err(BackendError::Unavailable { servers, .. }) => {
                assert!(servers.contains('s'), "{servers}");
                lost += 1;
            }
            Err(e) => panic!("object {id}: {e}"),
        }
    }
    assert!(lost > 0);
}

/// Compaction rewrites live objects; when members refuse the new copies (full), the objects
/// stay readable at their old place.
#[test]
fn a_compaction_refused_by_full_members_loses_nothing() {
    let stores: Vec<Arc<FaultyBackend>> = (0..6).map(store).collect();
    let members = stores
        .iter()
        .map(|s| s.clone() as Arc<dyn Backend>)
        .collect();
    let cfg = PoolConfig::new(Redundancy::coded(3, 2))
        .maintenance_interval(Duration::from_secs(3600))
        .coding(CodingOptions::default().span_bytes(4 << 10));
    let pool = PoolBackend::new(members, cfg).unwrap();
    let batch = put_values(&pool, 300);
    assert_eq!(settle(&pool), 0);
    for s in &stores {
        s.set(Fault::Full);
    }
    // Frees leave dead space over the slack: compaction runs, and its writes are refused.
    let frees: Vec<u64> = (0..300).filter(|id| id % 3 != 0).collect();
    pool.free(&frees).unwrap();
    pool.repair_now();
    let model: HashMap<u64, Vec<u8>> = batch.into_iter().filter(|(id, _)| id % 3 == 0).collect();
    check_all(&pool, &model);
    for s in &stores {
        s.set(Fault::None);
    }
    assert_eq!(settle(&pool), 0);
    check_all(&pool, &model);
    assert!(pool.coded_stats().unwrap().compacted > 0);
}

/// An overwrite refused by full members leaves the previous version readable, as a replicated
/// pool does, whether that version is sealed or still in the open stripe.
#[test]
fn a_refused_overwrite_keeps_the_previous_version() {
    let r = rig(6, 3, 2, 4 << 10);
    let mut batch = put_values(&r.pool, 300);
    assert_eq!(settle(&r.pool), 0);
    // One more object, still in the open stripe when it is overwritten.
    batch.push((1000, value(1000, 1, 300)));
    r.pool.put(1000, &batch[300].1).unwrap();
    let live = r.pool.coded_stats().unwrap().live_bytes;
    for s in &r.stores {
        s.set(Fault::Full);
    }
    let newer: Vec<(u64, Vec<u8>)> = (0..100)
        .chain([1000])
        .map(|id| (id, value(id, 2, 900)))
        .collect();
    let items: Vec<(u64, &[u8])> = newer.iter().map(|(i, v)| (*i, v.as_slice())).collect();
    assert!(matches!(
        r.pool.put_many(&items),
        Err(BackendError::OutOfCapacity { .. })
    ));
    let model: HashMap<u64, Vec<u8>> = batch.into_iter().collect();
    check_all(&r.pool, &model);
    assert_eq!(r.pool.coded_stats().unwrap().live_bytes, live);
    for s in &r.stores {
        s.set(Fault::None);
    }
    assert_eq!(settle(&r.pool), 0);
    check_all(&r.pool, &model);
}

/// Six members coding 4+2 with 4 KiB spans, holding at most `hold` bytes unsealed; member 5
/// is full when objects `0..300` are put.
fn full_member_rig(hold: usize) -> (Rig, HashMap<u64, Vec<u8>>) {
    let opts = CodingOptions::default()
        .span_bytes(4 << 10)
        .hold_unsealed(hold);
    let r = rig_with(6, 4, 2, opts);
    r.stores[5].set(Fault::Full);
    r.pool.repair_now();
    let model = put_values(&r.pool, 300).into_iter().collect();
    (r, model)
}

/// Kills the two serving members of `stores` (the pool's, in order) holding the most objects
/// of `model` (never `spare`).
fn kill_two(
    pool: &PoolBackend,
    stores: &[Arc<FaultyBackend>],
    model: &HashMap<u64, Vec<u8>>,
    spare: usize,
) {
    let mut count = vec![0usize; stores.len()];
    for &id in model.keys() {
        count[pool.locations(id).unwrap()[0].0] += 1;
    }
    let mut by: Vec<usize> = (0..stores.len())
        .filter(|&i| i != spare && stores[i].fault() == Fault::None)
        .collect();
    by.sort_by_key(|&i| std::cmp::Reverse(count[i]));
    for &i in &by[..2] {
        stores[i].set(Fault::Down);
    }
}

/// With one of six members full, a 4+2 stripe has room for one parity span only. The stripes
/// stay in the client instead, so two failures lose nothing; they seal with full parity once
/// members are back, and then survive two more.
#[test]
fn stripes_wait_in_the_client_while_parity_has_no_room() {
    let (r, model) = full_member_rig(64 << 20);
    assert!(
        settle(&r.pool) > 0,
        "held stripes count as not yet redundant"
    );
    let st = r.pool.coded_stats().unwrap();
    assert_eq!(st.degraded, 0, "{st:?}");
    assert!(st.unsealed > 1 && st.unsealed_bytes >= 300 * 700, "{st:?}");
    kill_two(&r.pool, &r.stores, &model, 5);
    check_all(&r.pool, &model);
    // Room again: the full member frees up and two members join.
    r.stores[5].set(Fault::None);
    let mut stores = r.stores.clone();
    for i in 6..8 {
        let s = store(i);
        r.pool.add_member(s.clone() as Arc<dyn Backend>).unwrap();
        stores.push(s);
    }
    assert_eq!(settle(&r.pool), 0);
    let st = r.pool.coded_stats().unwrap();
    assert_eq!((st.unsealed, st.unsealed_bytes), (0, 0), "{st:?}");
    check_all(&r.pool, &model);
    kill_two(&r.pool, &stores, &model, usize::MAX);
    check_all(&r.pool, &model);
}

/// Past `hold_unsealed`, stripes are sealed with the parity there is room for (one span of
/// two here): the client's copies stay bounded, and two failures can then make objects
/// unavailable until repair.
#[test]
fn past_the_hold_stripes_seal_with_short_parity() {
    let (r, model) = full_member_rig(32 << 10);
    settle(&r.pool);
    let st = r.pool.coded_stats().unwrap();
    assert!(st.degraded > 0, "{st:?}");
    assert!(
        st.short_parity > 0 && st.sealed_short >= st.short_parity,
        "{st:?}"
    );
    assert!(st.short_parity_live_bytes > 0, "{st:?}");
    // At most the hold plus the stripe that went past it.
    assert!(
        st.unsealed_bytes <= (32 << 10) + 4 * (4 << 10) + 700,
        "{st:?}"
    );
    kill_two(&r.pool, &r.stores, &model, 5);
    let unavailable = model
        .keys()
        .filter(|&&id| matches!(r.pool.get(id), Err(BackendError::Unavailable { .. })))
        .count();
    assert!(unavailable > 0);
}

/// Stripes sealed short of parity get the rest from repair once the full member has room.
#[test]
fn short_parity_is_topped_up_once_members_have_room() {
    let (r, model) = full_member_rig(32 << 10);
    settle(&r.pool);
    let st = r.pool.coded_stats().unwrap();
    assert!(st.short_parity > 0, "{st:?}");
    r.stores[5].set(Fault::None);
    assert_eq!(settle(&r.pool), 0);
    let st = r.pool.coded_stats().unwrap();
    assert_eq!(
        (st.short_parity, st.short_parity_live_bytes),
        (0, 0),
        "{st:?}"
    );
    assert_eq!(st.degraded, 0, "{st:?}");
    kill_two(&r.pool, &r.stores, &model, usize::MAX);
    check_all(&r.pool, &model);
}
