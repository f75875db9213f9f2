//! Deterministic interleavings of the batched mover (repair and drain) with frees and writes:
//! a member hook runs a pool operation at an exact point of a move (before or after the
//! target's batch write, or while the mover drops the leaving copies), then the test checks
//! that the acknowledged state holds on every member: a freed object is gone everywhere and
//! never comes back, a written value is the one every copy holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use farmem::backend::{MemberId, PoolBackend, PoolConfig, Redundancy};
use farmem::{Backend, BackendError, EmbeddedStore, ObjectId, StoreStats};
use parking_lot::Mutex;

type Hook = Box<dyn FnOnce(&PoolBackend, &[ObjectId]) + Send>;

/// When a hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    /// Before a `put_many` reaches the store.
    BeforeWrite,
    /// After a `put_many` was stored, before it is acknowledged.
    AfterWrite,
    /// Before a `free` reaches the store.
    Free,
}

/// An in-process member whose calls can be failed and hooked.
struct Member {
    store: EmbeddedStore,
    name: String,
    down: AtomicBool,
    hook: Mutex<Option<(At, Hook)>>,
    pool: OnceLock<Weak<PoolBackend>>,
}

impl Member {
    fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            store: EmbeddedStore::new(),
            name: name.into(),
            down: AtomicBool::new(false),
            hook: Mutex::new(None),
            pool: OnceLock::new(),
        })
    }

    fn arm(&self, at: At, hook: impl FnOnce(&PoolBackend, &[ObjectId]) + Send + 'static) {
        *self.hook.lock() = Some((at, Box::new(hook)));
    }

    fn check(&self) -> Result<(), BackendError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(BackendError::Timeout {
                addr: self.name.clone(),
                after_ms: 1,
            });
        }
        Ok(())
    }

    fn fire(&self, at: At, ids: &[ObjectId]) {
        let hook = {
            let mut h = self.hook.lock();
            match h.take() {
                Some((when, f)) if when == at => Some(f),
                other => {
                    *h = other;
                    None
                }
            }
        };
        if let Some(f) = hook
            && let Some(pool) = self.pool.get().and_then(Weak::upgrade)
        {
            f(&pool, ids);
        }
    }

    fn holds(&self, id: ObjectId) -> bool {
        self.store.get(id).is_ok()
    }
}

impl Backend for Member {
    fn put(&self, id: ObjectId, data: &[u8]) -> Result<(), BackendError> {
        self.check()?;
        self.store.put(id, data)
    }
    fn get(&self, id: ObjectId) -> Result<Vec<u8>, BackendError> {
        self.check()?;
        self.store.get(id)
    }
    fn get_into(&self, id: ObjectId, buf: &mut [u8]) -> Result<(), BackendError> {
        self.check()?;
        self.store.get_into(id, buf)
    }
    fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>, BackendError> {
        self.check()?;
        self.store.get_many(ids)
    }
    fn put_many(&self, items: &[(ObjectId, &[u8])]) -> Result<(), BackendError> {
        self.check()?;
        let ids: Vec<ObjectId> = items.iter().map(|i| i.0).collect();
        self.fire(At::BeforeWrite, &ids);
        self.store.put_many(items)?;
        self.fire(At::AfterWrite, &ids);
        Ok(())
    }
    fn patch(&self, id: ObjectId, edits: &[farmem::backend::Edit<'_>]) -> Result<(), BackendError> {
        self.check()?;
        self.store.patch(id, edits)
    }
    fn free(&self, ids: &[ObjectId]) -> Result<(), BackendError> {
        self.check()?;
        self.fire(At::Free, ids);
        self.store.free(ids)
    }
    fn stats(&self) -> Result<StoreStats, BackendError> {
        self.check()?;
        self.store.stats()
    }
    fn compute(&self, route: ObjectId, op: u16, args: &[u8]) -> Result<Vec<u8>, BackendError> {
        self.check()?;
        self.store.compute(route, op, args)
    }
    fn describe(&self) -> String {
        self.name.clone()
    }
}

const OBJECTS: u64 = 40;

fn value(id: ObjectId, round: u8) -> Vec<u8> {
    (0..64 + id as usize).map(|i| i as u8 ^ round).collect()
}

/// Three hooked members, two copies of `OBJECTS` objects, no background repair.
fn setup() -> (Arc<PoolBackend>, Vec<Arc<Member>>) {
    let ms: Vec<Arc<Member>> = ["a", "b", "c"].iter().map(|n| Member::new(n)).collect();
    let pool = Arc::new(
        PoolBackend::new(
            ms.iter().map(|m| m.clone() as Arc<dyn Backend>).collect(),
            PoolConfig::new(Redundancy::replicas(2))
                .repair_rate(None)
                .maintenance_interval(Duration::from_secs(3600)),
        )
        .unwrap(),
    );
    for m in &ms {
        m.pool.set(Arc::downgrade(&pool)).unwrap();
    }
    for id in 1..=OBJECTS {
        pool.put(id, &value(id, 0)).unwrap();
    }
    (pool, ms)
}

/// Fails member `victim` and lets the pool notice.
fn kill(pool: &PoolBackend, ms: &[Arc<Member>], victim: usize) {
    ms[victim].down.store(true, Ordering::SeqCst);
    let _ = pool.stats();
    assert!(
        pool.member_state(MemberId(victim))
            .is_some_and(|s| !s.serves())
    );
}

/// Every object of `expect` (id -> value) has two copies on serving members holding the value,
/// every other id is on no member, and the serving members hold nothing else.
fn check(pool: &PoolBackend, ms: &[Arc<Member>], expect: &[(ObjectId, Vec<u8>)]) {
    assert_eq!(
        pool.pool_stats().under_replicated,
        0,
        "{:?}",
        pool.pool_stats()
    );
    assert_eq!(pool.pool_stats().objects, expect.len());
    for id in 1..=OBJECTS {
        match expect.iter().find(|(e, _)| *e == id) {
            Some((_, v)) => {
                assert_eq!(&pool.get(id).unwrap(), v, "{id}");
                let loc = pool.locations(id).unwrap();
                assert_eq!(loc.len(), 2, "{id}: {loc:?}");
                for m in loc {
                    assert_eq!(&ms[m.0].store.get(id).unwrap(), v, "{id} on {m:?}");
                }
            }
            None => {
                assert!(
                    matches!(pool.get(id), Err(BackendError::NotFound(_))),
                    "{id}"
                );
                // A member that is down is gone with its copies.
                for (i, m) in ms.iter().enumerate() {
                    let down = m.down.load(Ordering::SeqCst);
                    assert!(down || !m.holds(id), "freed {id} still on member {i}");
                }
            }
        }
    }
    let held: u64 = ms
        .iter()
        .enumerate()
        .filter(|(i, _)| pool.member_state(MemberId(*i)).is_some_and(|s| s.serves()))
        .map(|(_, m)| m.store.stats().unwrap().objects)
        .sum();
    assert_eq!(held, 2 * expect.len() as u64);
}

fn all_but(gone: &[ObjectId], round_of: impl Fn(ObjectId) -> u8) -> Vec<(ObjectId, Vec<u8>)> {
    (1..=OBJECTS)
        .filter(|id| !gone.contains(id))
        .map(|id| (id, value(id, round_of(id))))
        .collect()
}

/// Runs a repair after killing member 0 with `hook` armed at `at` on both other members; the
/// hook gets the first id of the batch write it interrupts and returns what it did.
fn repair_with(
    at: At,
    hook: fn(&PoolBackend, ObjectId),
) -> (Vec<Arc<Member>>, Arc<PoolBackend>, ObjectId) {
    let (pool, ms) = setup();
    let hit = Arc::new(Mutex::new(None));
    for m in &ms[1..] {
        let hit = hit.clone();
        m.arm(at, move |p, ids| {
            let mut h = hit.lock();
            if h.is_none() {
                *h = Some(ids[0]);
                hook(p, ids[0]);
            }
        });
    }
    // The failure wakes the maintenance thread: its pass (or this one) runs the hook.
    kill(&pool, &ms, 0);
    let t0 = Instant::now();
    while pool.repair_now() > 0 || hit.lock().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{:?}",
            pool.pool_stats()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let id = hit.lock().expect("the repair wrote a batch");
    for m in &ms {
        *m.hook.lock() = None;
    }
    (ms, pool, id)
}

#[test]
fn free_before_the_batch_reaches_the_target() {
    let (ms, pool, id) = repair_with(At::BeforeWrite, |p, id| p.free(&[id]).unwrap());
    check(&pool, &ms, &all_but(&[id], |_| 0));
}

#[test]
fn free_after_the_target_stored_the_batch() {
    let (ms, pool, id) = repair_with(At::AfterWrite, |p, id| {
        p.free(&[id]).unwrap();
        // The entry is held by the mover: the freed id is not found, not adopted from a copy.
        assert!(matches!(p.get(id), Err(BackendError::NotFound(_))));
    });
    check(&pool, &ms, &all_but(&[id], |_| 0));
}

#[test]
fn put_during_a_batched_move() {
    for at in [At::BeforeWrite, At::AfterWrite] {
        let (ms, pool, id) = repair_with(at, |p, id| p.put(id, &value(id, 7)).unwrap());
        check(&pool, &ms, &all_but(&[], |x| if x == id { 7 } else { 0 }));
    }
}

#[test]
fn patch_during_a_batched_move() {
    let (ms, pool, id) = repair_with(At::AfterWrite, |p, id| {
        let v = value(id, 9);
        p.patch(id, &[(0, &v[..])]).unwrap();
    });
    check(&pool, &ms, &all_but(&[], |x| if x == id { 9 } else { 0 }));
}

#[test]
fn free_then_put_again_during_a_batched_move() {
    let (ms, pool, id) = repair_with(At::AfterWrite, |p, id| p.free(&[id]).unwrap());
    check(&pool, &ms, &all_but(&[id], |_| 0));
    pool.put(id, &value(id, 3)).unwrap();
    check(&pool, &ms, &all_but(&[], |x| if x == id { 3 } else { 0 }));
}

/// A drain drops the drained member's copies after the moves commit; a free landing then must
/// reach the new copies and leave nothing behind, and reads meanwhile must not revive it.
#[test]
fn free_while_a_drain_drops_the_old_copies() {
    let (pool, ms) = setup();
    let hit = Arc::new(Mutex::new(Vec::new()));
    {
        let hit = hit.clone();
        ms[0].arm(At::Free, move |p, ids| {
            let id = ids[0];
            p.free(&[id]).unwrap();
            assert!(matches!(p.get(id), Err(BackendError::NotFound(_))));
            hit.lock().push(id);
        });
    }
    pool.drain_member(MemberId(0)).unwrap();
    let gone = hit.lock().clone();
    assert_eq!(gone.len(), 1, "the drain dropped no copy");
    assert!(!ms[0].holds(gone[0]));
    assert_eq!(ms[0].store.stats().unwrap().objects, 0);
    check(&pool, &ms, &all_but(&gone, |_| 0));
}

/// A put landing while a drain drops the old copies goes to the new ones.
#[test]
fn put_while_a_drain_drops_the_old_copies() {
    let (pool, ms) = setup();
    let hit = Arc::new(Mutex::new(None));
    {
        let hit = hit.clone();
        ms[0].arm(At::Free, move |p, ids| {
            p.put(ids[0], &value(ids[0], 5)).unwrap();
            *hit.lock() = Some(ids[0]);
        });
    }
    pool.drain_member(MemberId(0)).unwrap();
    let id = hit.lock().expect("the drain dropped a copy");
    assert_eq!(ms[0].store.stats().unwrap().objects, 0);
    check(&pool, &ms, &all_but(&[], |x| if x == id { 5 } else { 0 }));
}
