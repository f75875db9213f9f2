//! Rejoins over in-process members: renewals, and revivals with the data.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use parking_lot::Mutex;

use super::super::{PoolBackend, Redundancy};
use super::fakes::Server;
use super::*;
use crate::backend::{Backend, BackendError, EmbeddedStore, ObjectId, StoreStats};

/// A server in a box: answers while `up`, and renews into a fresh, empty store after
/// freeing what this session held.
#[derive(Debug)]
struct Boxed {
    name: String,
    store: EmbeddedStore,
    held: Mutex<HashSet<ObjectId>>,
    up: Arc<AtomicBool>,
    ended: AtomicBool,
}

impl Boxed {
    fn new(name: &str, up: Arc<AtomicBool>) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            store: EmbeddedStore::new(),
            held: Mutex::default(),
            up,
            ended: AtomicBool::new(false),
        })
    }

    fn check(&self) -> Result<(), BackendError> {
        if self.up.load(Ordering::SeqCst) && !self.ended.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(BackendError::Timeout {
                addr: "boxed".into(),
                after_ms: 1,
            })
        }
    }
}

impl Backend for Boxed {
    fn put(&self, id: ObjectId, data: &[u8]) -> Result<(), BackendError> {
        self.check()?;
        self.held.lock().insert(id);
        self.store.put(id, data)
    }
    fn get(&self, id: ObjectId) -> Result<Vec<u8>, BackendError> {
        self.check()?;
        self.store.get(id)
    }
    fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>, BackendError> {
        self.check()?;
        self.store.get_many(ids)
    }
    fn put_many(&self, items: &[(ObjectId, &[u8])]) -> Result<(), BackendError> {
        self.check()?;
        self.held.lock().extend(items.iter().map(|(id, _)| *id));
        self.store.put_many(items)
    }
    fn free(&self, ids: &[ObjectId]) -> Result<(), BackendError> {
        self.check()?;
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
    fn renew(&self, _probe: Duration) -> Option<Result<Arc<dyn Backend>, BackendError>> {
        self.ended.store(true, Ordering::SeqCst);
        if !self.up.load(Ordering::SeqCst) {
            return Some(Err(BackendError::Timeout {
                addr: "boxed".into(),
                after_ms: 1,
            }));
        }
        let ids: Vec<ObjectId> = self.held.lock().drain().collect();
        if let Err(e) = self.store.free(&ids) {
            return Some(Err(e));
        }
        Some(Ok(
            Boxed::new(&self.name, self.up.clone()) as Arc<dyn Backend>
        ))
    }
    fn describe(&self) -> String {
        self.name.clone()
    }
}

fn pool(members: &[Arc<Boxed>], first: Option<Duration>) -> PoolBackend {
    let cfg = PoolConfig::new(Redundancy::replicas(3))
        .maintenance_interval(Duration::from_millis(5))
        .rejoin(first, Duration::from_millis(200));
    let list = members
        .iter()
        .map(|m| m.clone() as Arc<dyn Backend>)
        .collect();
    PoolBackend::new(list, cfg).unwrap()
}

fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Three members, three copies; member 0 fails a write and goes down.
fn failed_over(first: Option<Duration>) -> (Vec<Arc<Boxed>>, Arc<AtomicBool>, PoolBackend) {
    let up = Arc::new(AtomicBool::new(true));
    let m = vec![
        Boxed::new("a", up.clone()),
        Boxed::new("b", Arc::new(AtomicBool::new(true))),
        Boxed::new("c", Arc::new(AtomicBool::new(true))),
    ];
    let p = pool(&m, first);
    for id in 0..50 {
        p.put(id, &[id as u8; 100]).unwrap();
    }
    up.store(false, Ordering::SeqCst);
    p.put(50, &[50; 100]).unwrap();
    assert_eq!(p.member_state(MemberId(0)), Some(MemberState::Down));
    (m, up, p)
}

#[test]
fn a_member_holding_the_only_copies_is_not_renewed() {
    // One copy per object: member 0's objects exist nowhere else.
    let up = Arc::new(AtomicBool::new(true));
    let m = [
        Boxed::new("a", up.clone()),
        Boxed::new("b", Arc::new(AtomicBool::new(true))),
    ];
    let cfg = PoolConfig::new(Redundancy::replicas(1))
        .maintenance_interval(Duration::from_millis(5))
        .rejoin(Some(Duration::from_millis(10)), Duration::from_millis(200));
    let list = m.iter().map(|x| x.clone() as Arc<dyn Backend>).collect();
    let p = PoolBackend::new(list, cfg).unwrap();
    let mut on_a = Vec::new();
    for id in 0..64 {
        p.put(id, &[id as u8; 100]).unwrap();
        if p.locations(id).unwrap() == [MemberId(0)] {
            on_a.push(id);
        }
    }
    assert!(!on_a.is_empty());
    up.store(false, Ordering::SeqCst);
    let _ = p.get(on_a[0]);
    assert_eq!(p.member_state(MemberId(0)), Some(MemberState::Down));
    up.store(true, Ordering::SeqCst);
    // Several probe turns pass: none renews the session that holds the only copies.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(p.rejoins(), 0);
    assert!(matches!(
        p.rejoin_member(MemberId(0)),
        Err(PoolError::NoRejoin { .. })
    ));
    assert!(!m[0].ended.load(Ordering::SeqCst), "its session was ended");
    for &id in &on_a {
        assert_eq!(m[0].store.get(id).unwrap(), vec![id as u8; 100]);
    }
}

#[test]
fn a_down_member_that_answers_again_rejoins_empty_and_gets_its_copies_back() {
    let (m, up, p) = failed_over(Some(Duration::from_millis(10)));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(p.rejoins(), 0, "rejoined while it does not answer");
    up.store(true, Ordering::SeqCst);
    wait("the rejoin", || p.rejoins() == 1);
    let now = p.members()[0].rejoined_as.unwrap();
    assert_eq!(now, MemberId(3));
    // The old session's objects are freed; the new member gets every object's third copy.
    assert_eq!(m[0].store.stats().unwrap().objects, 0);
    wait("full redundancy", || p.repair_now() == 0);
    for id in 0..=50 {
        assert_eq!(p.get(id).unwrap(), vec![id as u8; 100]);
        assert!(p.locations(id).unwrap().contains(&now));
    }
    assert_eq!(p.member_state(MemberId(0)), Some(MemberState::Down));
    assert!(p.rejoin_member(MemberId(0)).is_err(), "rejoined twice");
}

#[test]
fn with_rejoins_off_a_down_member_stays_out_until_asked() {
    let (m, up, p) = failed_over(None);
    up.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(p.rejoins(), 0);
    assert!(
        m[0].store.stats().unwrap().objects > 0,
        "stale copies left alone"
    );
    let now = p.rejoin_member(MemberId(0)).unwrap();
    assert_eq!(p.member_state(now), Some(MemberState::Live));
    assert_eq!(m[0].store.stats().unwrap().objects, 0);
}

/// A pool of `copies` replicas over three servers, repair and the watcher ticking every `tick`,
/// rejoins off (the tests take members back by hand).
fn three_servers(copies: usize, tick: Duration) -> (Vec<Arc<Server>>, PoolBackend) {
    let servers: Vec<Arc<Server>> = (0..3).map(|_| Arc::new(Server::default())).collect();
    let list = servers
        .iter()
        .zip(["a", "b", "c"])
        .map(|(s, n)| s.open(n) as Arc<dyn Backend>)
        .collect();
    let cfg = PoolConfig::new(Redundancy::replicas(copies))
        .maintenance_interval(tick)
        .rejoin(None, Duration::from_secs(1));
    (servers, PoolBackend::new(list, cfg).unwrap())
}

/// Three servers, one copy per object, `n` objects of which those on member 0 are returned;
/// repair and the watcher tick every `tick`; rejoins off (the tests take them back by hand).
fn single_copy(n: u64, tick: Duration) -> (Vec<Arc<Server>>, PoolBackend, Vec<u64>) {
    let (servers, p) = three_servers(1, tick);
    let mut on_a = Vec::new();
    for id in 0..n {
        p.put(id, &[id as u8; 64]).unwrap();
        if p.locations(id).unwrap() == [MemberId(0)] {
            on_a.push(id);
        }
    }
    assert!(on_a.len() >= 6, "{} objects on member 0", on_a.len());
    servers[0].frozen.store(true, Ordering::SeqCst);
    let _ = p.get(on_a[0]);
    assert_eq!(p.member_state(MemberId(0)), Some(MemberState::Down));
    (servers, p, on_a)
}

/// Objects the location table places on member `m`.
fn placed_on(p: &PoolBackend, m: MemberId) -> usize {
    p.members()[m.0].objects
}

#[test]
fn a_frozen_member_comes_back_with_its_data_and_nothing_stale_or_freed_is_read() {
    // Repair and the watcher practically never run by themselves: the test steps them.
    let (servers, p, on_a) = single_copy(64, Duration::from_secs(600));
    let mut want: std::collections::HashMap<u64, Vec<u8>> =
        (0..64).map(|id| (id, vec![id as u8; 64])).collect();
    // While it is down its objects are unavailable, the others work.
    assert!(matches!(
        p.get(on_a[0]),
        Err(BackendError::Unavailable { .. })
    ));
    let elsewhere = (0..64).find(|id| !on_a.contains(id)).unwrap();
    assert_eq!(p.get(elsewhere).unwrap(), want[&elsewhere]);
    // Rewritten elsewhere (a put substitutes the down member), freed, patched (refused: no
    // serving copy), new objects.
    let (rewritten, freed, patched) = (on_a[1], on_a[2], on_a[3]);
    p.put(rewritten, &[0xEE; 80]).unwrap();
    want.insert(rewritten, vec![0xEE; 80]);
    assert!(!p.locations(rewritten).unwrap().contains(&MemberId(0)));
    p.free(&[freed]).unwrap();
    want.remove(&freed);
    assert!(matches!(
        p.patch(patched, &[(0, &[1, 2, 3])]),
        Err(BackendError::Unavailable { .. })
    ));
    for id in 100..110 {
        p.put(id, &[7; 32]).unwrap();
        want.insert(id, vec![7; 32]);
    }
    servers[0].frozen.store(false, Ordering::SeqCst);
    let fresh = p.rejoin_member(MemberId(0)).unwrap();
    assert_ne!(fresh, MemberId(0));
    assert_eq!(p.member_state(MemberId(0)), Some(MemberState::Draining));
    assert_eq!(p.members()[0].rejoined_as, Some(fresh));
    // The old session is still there (with the stale and freed copies) beside the fresh one.
    assert_eq!(servers[0].sessions(), 2);
    // Everything reads back its last acknowledged value at once, from the revived session
    // where the table still places it; the stale and freed copies it holds are never read.
    for (&id, v) in &want {
        assert_eq!(&p.get(id).unwrap(), v, "{id}");
    }
    assert!(matches!(p.get(freed), Err(BackendError::NotFound(_))));
    p.patch(patched, &[(0, &[1, 2, 3])]).unwrap();
    want.get_mut(&patched).unwrap()[..3].copy_from_slice(&[1, 2, 3]);
    // Repair moves its objects to live members; then its session is closed.
    assert_eq!(p.repair_now(), 0);
    assert_eq!(placed_on(&p, MemberId(0)), 0);
    p.inner.retire_emptied();
    assert_eq!(p.member_state(MemberId(0)), Some(MemberState::Drained));
    // The session closes when the last call holding its member (a repair pass, say) ends.
    wait("the revived session closed", || servers[0].sessions() == 1);
    for (&id, v) in &want {
        assert_eq!(&p.get(id).unwrap(), v, "{id}");
    }
    assert!(matches!(p.get(freed), Err(BackendError::NotFound(_))));
    // The server holds exactly what the pool places on its fresh member.
    assert_eq!(servers[0].objects(), placed_on(&p, fresh) as u64);
}

#[test]
fn a_write_drops_the_members_that_did_not_take_it_from_the_entry() {
    let (servers, p) = three_servers(2, Duration::from_secs(600));
    // No background repair: it would replace the down member in the entries before the patch.
    p.inner.repair.shut_down();
    let mut both = Vec::new();
    for id in 0..40 {
        p.put(id, &[1; 16]).unwrap();
        if p.locations(id).unwrap().contains(&MemberId(0)) {
            both.push(id);
        }
    }
    servers[0].frozen.store(true, Ordering::SeqCst);
    let _ = p.stats();
    p.inner.refresh_members();
    assert_eq!(p.member_state(MemberId(0)), Some(MemberState::Down));
    // A patch goes to the live copy only: the entry forgets the frozen one, whose copy is
    // stale from now on.
    let (patched, untouched) = (both[0], both[1]);
    p.patch(patched, &[(0, &[9])]).unwrap();
    assert_eq!(p.locations(patched).unwrap().len(), 1);
    assert!(!p.locations(patched).unwrap().contains(&MemberId(0)));
    assert!(p.locations(untouched).unwrap().contains(&MemberId(0)));
    servers[0].frozen.store(false, Ordering::SeqCst);
    p.rejoin_member(MemberId(0)).unwrap();
    for _ in 0..50 {
        let mut v = vec![1; 16];
        v[0] = 9;
        assert_eq!(p.get(patched).unwrap(), v);
        assert_eq!(p.get(untouched).unwrap(), vec![1; 16]);
    }
}

#[test]
fn a_restarted_server_rejoins_empty_and_its_lost_objects_stay_unavailable() {
    let (servers, p, on_a) = single_copy(48, Duration::from_millis(5));
    servers[0].restart();
    servers[0].frozen.store(false, Ordering::SeqCst);
    let fresh = p.rejoin_member(MemberId(0)).unwrap();
    assert_eq!(p.member_state(fresh), Some(MemberState::Live));
    assert_eq!(p.member_state(MemberId(0)), Some(MemberState::Down));
    for &id in &on_a {
        assert!(matches!(p.get(id), Err(BackendError::Unavailable { .. })));
    }
    assert_eq!(servers[0].sessions(), 1);
}

#[test]
fn a_revived_member_that_freezes_again_is_revived_again() {
    let (servers, p, on_a) = single_copy(48, Duration::from_secs(600));
    servers[0].frozen.store(false, Ordering::SeqCst);
    let fresh = p.rejoin_member(MemberId(0)).unwrap();
    servers[0].frozen.store(true, Ordering::SeqCst);
    let _ = p.get(on_a[0]);
    assert_eq!(p.member_state(MemberId(0)), Some(MemberState::Down));
    assert_eq!(
        p.member_state(fresh),
        Some(MemberState::Live),
        "not asked yet"
    );
    servers[0].frozen.store(false, Ordering::SeqCst);
    // No second fresh member: the server serves as `fresh` already.
    assert_eq!(p.rejoin_member(MemberId(0)).unwrap(), fresh);
    assert_eq!(p.members().len(), 4);
    for &id in &on_a {
        assert_eq!(p.get(id).unwrap(), vec![id as u8; 64]);
    }
}

#[test]
fn a_probe_that_hangs_holds_up_neither_other_probes_nor_the_watcher() {
    let servers: Vec<Arc<Server>> = (0..4).map(|_| Arc::new(Server::default())).collect();
    let list = servers
        .iter()
        .zip(["a", "b", "c", "d"])
        .map(|(s, n)| s.open(n) as Arc<dyn Backend>)
        .collect();
    let cfg = PoolConfig::new(Redundancy::replicas(2))
        .maintenance_interval(Duration::from_millis(5))
        .rejoin(Some(Duration::from_millis(10)), Duration::from_millis(50));
    let p = PoolBackend::new(list, cfg).unwrap();
    for id in 0..40 {
        p.put(id, &[id as u8; 32]).unwrap();
    }
    // Member 0's server hangs every probe; member 1's answers again after a freeze.
    servers[0].hang.store(true, Ordering::SeqCst);
    for s in &servers[..2] {
        s.frozen.store(true, Ordering::SeqCst);
    }
    p.inner.refresh_members();
    assert_eq!(p.member_state(MemberId(0)), Some(MemberState::Down));
    assert_eq!(p.member_state(MemberId(1)), Some(MemberState::Down));
    servers[1].frozen.store(false, Ordering::SeqCst);
    wait("member 1 taken back while member 0's probe hangs", || {
        p.members()[1].rejoined_as.is_some()
    });
    assert!(servers[0].hang.load(Ordering::SeqCst));
    assert_eq!(p.member_state(MemberId(0)), Some(MemberState::Down));
    // The watcher's other work goes on too: the revived member is emptied and closed.
    wait("member 1's revived session emptied and closed", || {
        p.member_state(MemberId(1)) == Some(MemberState::Drained)
    });
    wait("member 1's revived session closed on its server", || {
        servers[1].sessions() == 1
    });
    servers[0].hang.store(false, Ordering::SeqCst);
    for id in 0..40 {
        assert_eq!(p.get(id).unwrap(), vec![id as u8; 32]);
    }
}
