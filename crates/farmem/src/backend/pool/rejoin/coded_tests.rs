//! Revival in erasure-coded pools over in-process servers: more than `m` members frozen at
//! once (their stripes unavailable), then back with their sessions and so with their spans.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::super::{CodingOptions, MemberId, MemberState, PoolBackend, PoolConfig, Redundancy};
use super::fakes::Server;
use crate::backend::{Backend, BackendError};

/// The longest any wait of these tests may take.
const LIMIT: Duration = Duration::from_secs(20);

fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Version `ver` of object `id`: 300 to 1,500 bytes.
fn value(id: u64, ver: u32) -> Vec<u8> {
    let len = 300 + ((id * 389 + u64::from(ver) * 97) % 1200) as usize;
    (0..len)
        .map(|i| (id as usize * 131 + ver as usize * 17 + i * 7) as u8)
        .collect()
}

/// `n` servers under a `k + m` pool with 2 KiB spans; maintenance, sealing and the watcher tick
/// every `tick`; down members are probed after `rejoin` (`None`: taken back by hand only).
fn rig(
    n: usize,
    k: u8,
    m: u8,
    tick: Duration,
    rejoin: Option<Duration>,
) -> (Vec<Arc<Server>>, PoolBackend) {
    let servers: Vec<Arc<Server>> = (0..n).map(|_| Arc::new(Server::default())).collect();
    let list = servers
        .iter()
        .enumerate()
        .map(|(i, s)| s.open(&format!("s{i}")) as Arc<dyn Backend>)
        .collect();
    let cfg = PoolConfig::new(Redundancy::coded(k, m))
        .maintenance_interval(tick)
        .rejoin(rejoin, Duration::from_millis(200))
        .coding(
            CodingOptions::default()
                .span_bytes(2 << 10)
                .seal_after(tick),
        );
    (servers, PoolBackend::new(list, cfg).unwrap())
}

/// Writes objects `ids` (version `ver`) in batches of 16 into `model`.
fn put(
    p: &PoolBackend,
    ids: impl Iterator<Item = u64>,
    ver: u32,
    model: &mut HashMap<u64, Vec<u8>>,
) {
    let ids: Vec<u64> = ids.collect();
    for chunk in ids.chunks(16) {
        let vals: Vec<(u64, Vec<u8>)> = chunk.iter().map(|&id| (id, value(id, ver))).collect();
        let items: Vec<(u64, &[u8])> = vals.iter().map(|(i, v)| (*i, v.as_slice())).collect();
        p.put_many(&items).unwrap();
        model.extend(vals);
    }
}

/// Runs maintenance passes until nothing is degraded, unsealed or short of copies.
fn settle(p: &PoolBackend) {
    wait("a settled pool", || p.repair_now() == 0);
}

/// Every object of `model` reads back its value (one by one and in one batch); every id of
/// `freed` is not found.
fn check(p: &PoolBackend, model: &HashMap<u64, Vec<u8>>, freed: &[u64]) {
    let mut ids: Vec<u64> = model.keys().copied().collect();
    ids.sort_unstable();
    for &id in &ids {
        let got = p.get(id).unwrap_or_else(|e| panic!("object {id}: {e}"));
        assert_eq!(got, model[&id], "object {id}");
    }
    for (id, got) in ids.iter().zip(p.get_many(&ids).unwrap()) {
        assert_eq!(got, model[id], "object {id} in a batch");
    }
    for &id in freed {
        assert!(
            matches!(p.get(id), Err(BackendError::NotFound(_))),
            "freed {id}"
        );
    }
}

/// Objects of `model` whose member is one of `frozen`.
fn on_members(p: &PoolBackend, model: &HashMap<u64, Vec<u8>>, frozen: &[usize]) -> Vec<u64> {
    let mut ids: Vec<u64> = model
        .keys()
        .copied()
        .filter(|&id| frozen.contains(&p.locations(id).unwrap()[0].0))
        .collect();
    ids.sort_unstable();
    ids
}

/// Every server holds exactly the keys the coded layout places on its current member, in one
/// session: the revived sessions, with what the pool wrote off there, are closed.
fn check_accounting(servers: &[Arc<Server>], p: &PoolBackend) {
    let c = p.coded().unwrap();
    let members = p.members();
    for (i, s) in servers.iter().enumerate() {
        let now = members[i].rejoined_as.unwrap_or(MemberId(i));
        let placed = c.keys_on(now.0 as super::Ix);
        wait("the revived session closed", || s.sessions() == 1);
        assert_eq!(s.objects(), placed, "server {i} (member {})", now.0);
    }
}

/// Freezes `which` and has the pool find them down.
fn freeze(servers: &[Arc<Server>], p: &PoolBackend, which: &[usize]) {
    for &i in which {
        servers[i].frozen.store(true, Ordering::SeqCst);
    }
    p.inner.refresh_members();
    for &i in which {
        assert_eq!(p.member_state(MemberId(i)), Some(MemberState::Down));
    }
}

/// Sets its flag when dropped (a test that fails stops its writer).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Writes, reads and frees objects 3000..3200 until `stop`; returns the values written last
/// and the objects freed last. Panics on any error or wrong value.
fn writer(p: &PoolBackend, stop: &AtomicBool) -> (HashMap<u64, Vec<u8>>, Vec<u64>) {
    let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut freed = Vec::new();
    let mut round = 0u32;
    while !stop.load(Ordering::SeqCst) {
        round += 1;
        let id = 3000 + u64::from(round.wrapping_mul(2_654_435_761) >> 8) % 200;
        match (round % 5, model.get(&id)) {
            (0, Some(_)) => {
                p.free(&[id]).unwrap_or_else(|e| panic!("free {id}: {e}"));
                model.remove(&id);
                freed.push(id);
            }
            (1 | 2, Some(v)) => {
                let got = p.get(id).unwrap_or_else(|e| panic!("get {id}: {e}"));
                assert_eq!(&got, v, "{id}");
            }
            _ => {
                let v = value(id, round);
                p.put(id, &v).unwrap_or_else(|e| panic!("put {id}: {e}"));
                model.insert(id, v);
                freed.retain(|&f| f != id);
            }
        }
        if round.is_multiple_of(16) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    (model, freed)
}

#[test]
fn more_than_m_frozen_members_come_back_with_their_spans() {
    // Maintenance and the watcher practically never run by themselves: the test steps them.
    let (servers, p) = rig(6, 4, 2, Duration::from_secs(600), None);
    let mut model = HashMap::new();
    put(&p, 0..240, 1, &mut model);
    settle(&p);
    // A stripe left open, with spans on members about to freeze.
    let mut open = HashMap::new();
    put(&p, 240..243, 1, &mut open);
    let frozen = [0, 1, 2];
    freeze(&servers, &p, &frozen);
    // Every sealed stripe spans the six members: three spans lost, one more than the parity
    // covers. The objects on the frozen members are unavailable, the others read as usual.
    let lost = on_members(&p, &model, &frozen);
    assert!(
        lost.len() > 40,
        "{} objects on the frozen members",
        lost.len()
    );
    for (&id, v) in &model {
        match p.get(id) {
            Ok(got) => {
                assert!(!lost.contains(&id), "{id} read while its member is frozen");
                assert_eq!(&got, v, "{id}");
            }
            Err(BackendError::Unavailable { .. }) => assert!(lost.contains(&id), "{id}"),
            Err(e) => panic!("{id}: {e}"),
        }
    }
    // The open stripe reads from the client's copy; it cannot be sealed (no member left for
    // its parity, maybe none for its spans on frozen members) and stays in the client.
    check(&p, &open, &[]);
    assert!(p.repair_now() > 0, "stripes stay degraded");
    model.extend(open);
    // Meanwhile: objects rewritten (lost ones included), freed, added. Writes go to a stripe
    // on the three live members, held in the client (no member left for its parity); frees
    // leave dead space that compaction reclaims as it goes (rewriting what it can read).
    let rewritten: Vec<u64> = lost.iter().step_by(5).copied().chain([3, 5, 7]).collect();
    put(&p, rewritten.iter().copied(), 2, &mut model);
    let freed: Vec<u64> = lost
        .iter()
        .skip(2)
        .step_by(5)
        .copied()
        .chain([4, 6])
        .collect();
    p.free(&freed).unwrap();
    for id in &freed {
        model.remove(id);
    }
    put(&p, 1000..1040, 1, &mut model);
    assert!(p.repair_now() > 0, "stripes stay degraded");
    let st = p.coded_stats().unwrap();
    assert!(st.degraded > 0 && st.unsealed > 0, "{st:?}");
    for &id in lost.iter().skip(1).step_by(5) {
        assert!(
            matches!(p.get(id), Err(BackendError::Unavailable { .. })),
            "{id}"
        );
    }
    for id in rewritten.iter().copied().chain(1000..1040) {
        assert_eq!(p.get(id).unwrap(), model[&id], "{id}");
    }
    // The servers answer again with their sessions: each member is revived under its id,
    // draining, beside a fresh member over a new session on its server.
    let before = p.inner.members();
    for &i in &frozen {
        servers[i].frozen.store(false, Ordering::SeqCst);
        let fresh = p.rejoin_member(MemberId(i)).unwrap();
        assert_ne!(fresh, MemberId(i));
        assert_eq!(p.member_state(MemberId(i)), Some(MemberState::Draining));
        assert_eq!(p.member_state(fresh), Some(MemberState::Live));
        assert_eq!(servers[i].sessions(), 2);
    }
    // A call that started before the revival and failed on the let-go backend marks nothing
    // down: the revived member took its place.
    let late = BackendError::Timeout {
        addr: "s0".into(),
        after_ms: 1,
    };
    p.inner.mark_down(&before, 0, &late);
    assert_eq!(p.member_state(MemberId(0)), Some(MemberState::Draining));
    // At once, before any repair: every acknowledged object reads back its last value, freed
    // ones are not found.
    check(&p, &model, &freed);
    // Repair moves the spans to live members and seals the held stripe with full parity; the
    // revived sessions are then closed.
    wait("revived members emptied", || {
        p.repair_now();
        p.inner.retire_emptied();
        frozen
            .iter()
            .all(|&i| p.member_state(MemberId(i)) == Some(MemberState::Drained))
    });
    settle(&p);
    let st = p.coded_stats().unwrap();
    assert_eq!(
        (st.degraded, st.unsealed, st.short_parity),
        (0, 0, 0),
        "{st:?}"
    );
    check(&p, &model, &freed);
    check_accounting(&servers, &p);
    // Full redundancy again: any two servers may freeze now.
    freeze(&servers, &p, &[3, 4]);
    check(&p, &model, &freed);
}

#[test]
fn frozen_members_come_back_through_the_watcher_while_repair_runs() {
    // Eight servers: every stripe loses one to three of its six spans. Stripes that lost one
    // or two are rebuilt while the servers are frozen (onto the live members, or onto
    // substitutes), so the frozen sessions keep stale copies of those spans and of replaced
    // parity; stripes that lost three are unavailable until the servers come back.
    let (servers, p) = rig(
        8,
        4,
        2,
        Duration::from_millis(10),
        Some(Duration::from_millis(20)),
    );
    let mut model = HashMap::new();
    put(&p, 0..500, 1, &mut model);
    settle(&p);
    let frozen = [0, 1, 2];
    for &i in &frozen {
        servers[i].frozen.store(true, Ordering::SeqCst);
    }
    wait("the frozen members found down", || {
        frozen
            .iter()
            .all(|&i| p.member_state(MemberId(i)) == Some(MemberState::Down))
    });
    wait("the stripes that can be rebuilt are", || {
        p.coded_stats().unwrap().rebuilt_spans > 0
    });
    let lost = on_members(&p, &model, &frozen);
    let unavailable: Vec<u64> = lost
        .iter()
        .copied()
        .filter(|&id| matches!(p.get(id), Err(BackendError::Unavailable { .. })))
        .collect();
    assert!(!unavailable.is_empty(), "no stripe lost three spans");
    let rewritten: Vec<u64> = unavailable
        .iter()
        .step_by(3)
        .copied()
        .chain(0..10)
        .collect();
    put(&p, rewritten.iter().copied(), 2, &mut model);
    let freed: Vec<u64> = unavailable
        .iter()
        .skip(1)
        .step_by(3)
        .copied()
        .chain(10..20)
        .collect();
    p.free(&freed).unwrap();
    for id in &freed {
        model.remove(id);
    }
    put(&p, 2000..2050, 1, &mut model);
    // A writer keeps writing, reading and freeing objects of its own while the members come
    // back, are emptied and closed: every call succeeds and reads its last value.
    let stop = AtomicBool::new(false);
    let (mine, mine_freed) = std::thread::scope(|sc| {
        let writer = sc.spawn(|| writer(&p, &stop));
        let _stop = StopOnDrop(&stop);
        std::thread::sleep(Duration::from_millis(20));
        for &i in &frozen {
            servers[i].frozen.store(false, Ordering::SeqCst);
        }
        wait("the frozen members revived", || {
            frozen.iter().all(|&i| p.members()[i].rejoined_as.is_some())
        });
        check(&p, &model, &freed);
        wait("revived members emptied and closed", || {
            frozen.iter().all(|&i| {
                p.member_state(MemberId(i)) == Some(MemberState::Drained)
                    && servers[i].sessions() == 1
            })
        });
        stop.store(true, Ordering::SeqCst);
        writer.join().expect("writer")
    });
    assert!(mine.len() > 10, "{} objects written meanwhile", mine.len());
    model.extend(mine);
    let freed: Vec<u64> = freed.into_iter().chain(mine_freed).collect();
    settle(&p);
    check(&p, &model, &freed);
    assert_eq!(p.rejoins(), 3);
    check_accounting(&servers, &p);
}

#[test]
fn a_restarted_server_rejoins_empty_and_stripes_past_their_parity_stay_unavailable() {
    let (servers, p) = rig(6, 4, 2, Duration::from_secs(600), None);
    let mut model = HashMap::new();
    put(&p, 0..200, 1, &mut model);
    settle(&p);
    let frozen = [0, 1, 2];
    freeze(&servers, &p, &frozen);
    let lost = on_members(&p, &model, &frozen);
    assert!(!lost.is_empty());
    // The servers restart: their sessions, and the spans in them, are gone.
    for &i in &frozen {
        servers[i].restart();
        servers[i].frozen.store(false, Ordering::SeqCst);
        let fresh = p.rejoin_member(MemberId(i)).unwrap();
        assert_eq!(p.member_state(fresh), Some(MemberState::Live));
        assert_eq!(p.member_state(MemberId(i)), Some(MemberState::Down));
        assert_eq!(p.members()[i].rejoined_as, Some(fresh));
    }
    assert!(
        p.repair_now() > 0,
        "stripes that lost three spans cannot be rebuilt"
    );
    for (&id, v) in &model {
        if lost.contains(&id) {
            assert!(
                matches!(p.get(id), Err(BackendError::Unavailable { .. })),
                "{id}"
            );
        } else {
            assert_eq!(&p.get(id).unwrap(), v, "{id}");
        }
    }
    // The rest of the pool works: new objects get full redundancy on the fresh members.
    let mut fresh_model = HashMap::new();
    put(&p, 500..540, 1, &mut fresh_model);
    p.repair_now();
    check(&p, &fresh_model, &[]);
    assert_eq!(p.rejoins(), 3);
    for s in &servers {
        assert_eq!(s.sessions(), 1);
    }
}

#[test]
fn revived_members_with_no_member_to_move_to_keep_serving_their_spans() {
    // Six servers that cannot open a second session: the revived members get no fresh member
    // beside them, and a 4+2 stripe over all six has nowhere to move their spans.
    let (servers, p) = rig(6, 4, 2, Duration::from_secs(600), None);
    for s in &servers {
        s.single.store(true, Ordering::SeqCst);
    }
    let mut model = HashMap::new();
    put(&p, 0..200, 1, &mut model);
    settle(&p);
    let mut open = HashMap::new();
    put(&p, 200..203, 1, &mut open);
    let frozen = [0, 1, 2];
    freeze(&servers, &p, &frozen);
    // (A pass first takes the open stripe out of use: written into, its spans on the frozen
    // members would have nowhere to go.)
    assert!(p.repair_now() > 0);
    put(&p, 300..320, 1, &mut model);
    for &i in &frozen {
        servers[i].frozen.store(false, Ordering::SeqCst);
        assert_eq!(p.rejoin_member(MemberId(i)).unwrap(), MemberId(i));
        assert_eq!(p.member_state(MemberId(i)), Some(MemberState::Draining));
    }
    model.extend(open);
    check(&p, &model, &[]);
    // Maintenance seals what it can and moves nothing it has nowhere to put: the revived
    // members keep serving, and every object stays readable.
    for _ in 0..3 {
        p.repair_now();
        p.inner.retire_emptied();
    }
    for &i in &frozen {
        assert_eq!(p.member_state(MemberId(i)), Some(MemberState::Draining));
        assert_eq!(servers[i].sessions(), 1);
    }
    check(&p, &model, &[]);
    // Members added later take their spans, and they are let go.
    for i in 6..9 {
        let extra = Arc::new(Server::default());
        p.add_member(extra.open(&format!("s{i}"))).unwrap();
    }
    wait("revived members emptied", || {
        p.repair_now();
        p.inner.retire_emptied();
        frozen
            .iter()
            .all(|&i| p.member_state(MemberId(i)) == Some(MemberState::Drained))
    });
    check(&p, &model, &[]);
}
