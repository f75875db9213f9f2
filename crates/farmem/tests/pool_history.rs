//! A randomized history against a pool: several threads put, batch-put, patch, free and read
//! their own objects while a chaos thread fails members (never more than `replicas - 1` down
//! before repair catches up), adds fresh members, drains and removes. Every read is checked
//! against a model of the acknowledged values, and at the end every object has full redundancy
//! on live members, each copy holding the acknowledged value.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use farmem::backend::pool::{Fault, MemberState};
use farmem::backend::{FaultyBackend, MemberId, PoolBackend, PoolConfig, Redundancy};
use farmem::{Backend, BackendError, EmbeddedStore};
use parking_lot::Mutex;

/// xorshift64*: deterministic per seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn bytes(rng: &mut Rng) -> Vec<u8> {
    let len = 1 + rng.below(400) as usize;
    let seed = rng.next();
    (0..len)
        .map(|i| (seed >> (i % 8 * 8)) as u8 ^ i as u8)
        .collect()
}

const THREADS: u64 = 4;
const KEYS: u64 = 150;
const OPS: usize = 6000;

fn worker(p: &PoolBackend, t: u64, seed: u64) -> HashMap<u64, Vec<u8>> {
    let mut rng = Rng(seed | 1);
    let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
    let key = |rng: &mut Rng| t * 1_000_000 + rng.below(KEYS);
    for _ in 0..OPS {
        match rng.below(10) {
            0..=2 => {
                let (id, v) = (key(&mut rng), bytes(&mut rng));
                p.put(id, &v).unwrap();
                model.insert(id, v);
            }
            3 => {
                let batch: Vec<(u64, Vec<u8>)> = (0..1 + rng.below(8))
                    .map(|_| (key(&mut rng), bytes(&mut rng)))
                    .collect();
                let refs: Vec<(u64, &[u8])> =
                    batch.iter().map(|(id, v)| (*id, v.as_slice())).collect();
                p.put_many(&refs).unwrap();
                for (id, v) in batch {
                    model.insert(id, v);
                }
            }
            4 => {
                let id = key(&mut rng);
                let edit = [rng.next() as u8, rng.next() as u8];
                match model.get_mut(&id) {
                    Some(v) => {
                        let off = rng.below(v.len() as u64) as usize;
                        let edit = &edit[..edit.len().min(v.len() - off)];
                        p.patch(id, &[(off as u32, edit)]).unwrap();
                        v[off..off + edit.len()].copy_from_slice(edit);
                    }
                    None => assert!(matches!(
                        p.patch(id, &[(0, &edit)]),
                        Err(BackendError::NotFound(_))
                    )),
                }
            }
            5 => {
                let id = key(&mut rng);
                p.free(&[id]).unwrap();
                model.remove(&id);
            }
            6 => {
                let ids: Vec<u64> = model
                    .keys()
                    .copied()
                    .filter(|_| rng.below(4) == 0)
                    .take(16)
                    .collect();
                let got = p.get_many(&ids).unwrap();
                for (id, g) in ids.iter().zip(got) {
                    assert_eq!(&g, &model[id], "get_many {id}");
                }
            }
            _ => {
                let id = key(&mut rng);
                match (p.get(id), model.get(&id)) {
                    (Ok(g), Some(v)) => assert_eq!(&g, v, "get {id}"),
                    (Err(BackendError::NotFound(_)), None) => {}
                    (r, m) => panic!("get {id}: {r:?} vs model {m:?}"),
                }
            }
        }
    }
    model
}

fn fresh(name: String) -> Arc<FaultyBackend> {
    Arc::new(FaultyBackend::new(Arc::new(EmbeddedStore::new()), name))
}

fn wait_down(p: &PoolBackend, m: MemberId) {
    let t0 = Instant::now();
    while p.members()[m.0].state != MemberState::Down {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{m:?} never marked down"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn wait_repaired(p: &PoolBackend) {
    let t0 = Instant::now();
    while p.pool_stats().under_replicated > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{:?}",
            p.pool_stats()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One randomized history with `replicas` copies starting from `start` members.
fn history(seed: u64, replicas: usize, start: usize) {
    let all: Arc<Mutex<Vec<Arc<FaultyBackend>>>> = Arc::new(Mutex::new(
        (0..start).map(|i| fresh(format!("m{i}"))).collect(),
    ));
    let list = all
        .lock()
        .iter()
        .map(|m| m.clone() as Arc<dyn Backend>)
        .collect();
    let p = Arc::new(
        PoolBackend::new(
            list,
            PoolConfig::new(Redundancy::replicas(replicas))
                .repair_rate(Some(256 << 20))
                .maintenance_interval(Duration::from_millis(5)),
        )
        .unwrap(),
    );
    let done = Arc::new(AtomicBool::new(false));
    let chaos = {
        let (p, all, done) = (p.clone(), all.clone(), done.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(seed.wrapping_mul(77) | 1);
            let mut events = Vec::new();
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(3 + rng.below(10)));
                let infos = p.members();
                let live: Vec<MemberId> = infos
                    .iter()
                    .filter(|m| m.state == MemberState::Live)
                    .map(|m| m.id)
                    .collect();
                match rng.below(4) {
                    // Kill a live member, when enough remain for full redundancy.
                    0 if live.len() > replicas => {
                        let victim = live[rng.below(live.len() as u64) as usize];
                        all.lock()[victim.0].set(if rng.below(4) == 0 {
                            Fault::Hang(Duration::from_millis(5))
                        } else {
                            Fault::Down
                        });
                        events.push(format!("kill {victim:?}"));
                        // Never two failures before repair: the next one could take the last
                        // copy. The pool notices a failure on its next call to the member (the
                        // maintenance thread makes one every few milliseconds).
                        wait_down(&p, victim);
                        wait_repaired(&p);
                    }
                    1 if live.len() < start + 2 => {
                        let m = fresh(format!("m{}", all.lock().len()));
                        all.lock().push(m.clone());
                        let id = p.add_member(m).unwrap();
                        events.push(format!("add {id:?}"));
                    }
                    2 if live.len() > replicas => {
                        let victim = live[rng.below(live.len() as u64) as usize];
                        p.drain_member(victim).unwrap();
                        // Nothing is left on the drained member (a free a worker sent just
                        // before may still be on its way).
                        let store = all.lock()[victim.0].inner().clone();
                        let t0 = Instant::now();
                        while store.stats().unwrap().objects != 0 {
                            assert!(
                                t0.elapsed() < Duration::from_secs(10),
                                "{victim:?} kept copies"
                            );
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        events.push(format!("drain {victim:?}"));
                    }
                    3 => {
                        // Remove members that are down or drained.
                        for m in infos {
                            if matches!(m.state, MemberState::Down | MemberState::Drained) {
                                p.remove_member(m.id).unwrap();
                                events.push(format!("remove {:?}", m.id));
                            }
                        }
                    }
                    _ => {}
                }
                // Keep at least `replicas` live members.
                let live_now = p
                    .members()
                    .iter()
                    .filter(|m| m.state == MemberState::Live)
                    .count();
                if live_now < replicas + 1 {
                    let m = fresh(format!("m{}", all.lock().len()));
                    all.lock().push(m.clone());
                    p.add_member(m).unwrap();
                }
            }
            events
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || worker(&p, t, seed ^ (t + 1).wrapping_mul(0x9e37)))
        })
        .collect();
    let models: Vec<HashMap<u64, Vec<u8>>> =
        workers.into_iter().map(|w| w.join().unwrap()).collect();
    done.store(true, Ordering::Relaxed);
    let events = chaos.join().unwrap();
    assert!(events.iter().any(|e| e.starts_with("kill")), "{events:?}");
    wait_repaired(&p);
    // Every acknowledged value is there, with full redundancy, on live members.
    let all = all.lock();
    let mut objects = 0;
    for model in &models {
        for (id, v) in model {
            assert_eq!(&p.get(*id).unwrap(), v, "{id}");
            let loc = p.locations(*id).unwrap();
            assert_eq!(loc.len(), replicas, "{id}: {loc:?}");
            for m in loc {
                assert_eq!(p.members()[m.0].state, MemberState::Live);
                assert_eq!(&all[m.0].inner().get(*id).unwrap(), v, "{id} on {m:?}");
            }
            objects += 1;
        }
    }
    assert_eq!(p.pool_stats().objects, objects);
    // Live members hold exactly the table's copies (no leftovers of moves or frees).
    let held: u64 = p
        .members()
        .iter()
        .filter(|m| m.state == MemberState::Live)
        .map(|m| all[m.id.0].inner().stats().unwrap().objects)
        .sum();
    assert_eq!(held, (objects * replicas) as u64, "events: {events:?}");
}

#[test]
fn history_two_replicas_over_four_members() {
    for seed in [1, 2] {
        history(seed, 2, 4);
    }
}

#[test]
fn history_three_replicas_over_five_members() {
    history(3, 3, 5);
}

#[test]
fn history_without_redundancy_drains_and_adds() {
    // No failures without redundancy (they lose data by design): drains and adds only, which
    // the chaos thread does at random too; failures are still injected but repaired from
    // nothing, so only membership churn is checked here.
    history_membership_only(4);
}

fn history_membership_only(seed: u64) {
    let ms: Vec<Arc<FaultyBackend>> = (0..3).map(|i| fresh(format!("m{i}"))).collect();
    let p = Arc::new(
        PoolBackend::new(
            ms.iter().map(|m| m.clone() as Arc<dyn Backend>).collect(),
            PoolConfig::new(Redundancy::None)
                .repair_rate(None)
                .maintenance_interval(Duration::from_millis(5)),
        )
        .unwrap(),
    );
    let done = Arc::new(AtomicBool::new(false));
    let churn = {
        let (p, done) = (p.clone(), done.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(seed | 1);
            let mut drained = 0;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(2 + rng.below(5)));
                let m = p.add_member(Arc::new(EmbeddedStore::new())).unwrap();
                let live: Vec<MemberId> = p
                    .members()
                    .iter()
                    .filter(|i| i.state == MemberState::Live && i.id != m)
                    .map(|i| i.id)
                    .collect();
                let victim = live[rng.below(live.len() as u64) as usize];
                p.drain_member(victim).unwrap();
                p.remove_member(victim).unwrap();
                drained += 1;
            }
            drained
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || worker(&p, t, seed ^ (t + 7).wrapping_mul(0x51ed)))
        })
        .collect();
    let models: Vec<HashMap<u64, Vec<u8>>> =
        workers.into_iter().map(|w| w.join().unwrap()).collect();
    done.store(true, Ordering::Relaxed);
    assert!(churn.join().unwrap() > 0);
    for model in &models {
        for (id, v) in model {
            assert_eq!(&p.get(*id).unwrap(), v, "{id}");
        }
    }
}
