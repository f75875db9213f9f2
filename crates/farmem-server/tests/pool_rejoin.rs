//! Members failed over because their server went silent (SIGSTOP) take their server back once
//! it answers again (SIGCONT), over real `farmem-server` processes. A replicated pool revives
//! the old session with its data (its objects readable again at once, then moved to live
//! members, then the session closed, freeing every copy written off there) and the server
//! joins as a new member too; a coded pool revives it the same way with its spans (its
//! stripes whole again, then rebuilt onto live members). Repair restores full redundancy.
//!
//! - One copy per object over three servers: while one is frozen its objects give the typed
//!   "unavailable" error and the rest of the pool works (reads, writes, frees, new objects);
//!   after SIGCONT every object reads back its last acknowledged value and the server holds
//!   exactly what the pool places on it.
//! - Three replicas over three servers under a workload: while one is frozen every object has
//!   two copies; after it rejoins every object has its third copy on it again, every value
//!   reads back, and the server holds exactly what the pool places on it (the stale copies are
//!   gone, with the old session).
//! - 4 + 2 erasure coding over six servers: after the rejoin every stripe has full parity
//!   again, and everything still reads back after two other servers are killed. With three
//!   of the six frozen at once (one more than the parity covers), their objects give the
//!   typed "unavailable" error; after SIGCONT every object reads back its last acknowledged
//!   value, freed ones are not found, and the revived sessions are closed.
//! - A flapping server (frozen again right after it rejoined, then killed and restarted) ends
//!   up as one live member with one session; a member the operator removed is never taken back.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use farmem::backend::pool::{CodingOptions, MemberState};
use farmem::backend::{MemberId, PoolBackend, PoolConfig, Redundancy, TcpBackend, TcpConfig};
use farmem::{Backend, BackendError};
use parking_lot::Mutex;
use support::pool::member;
use support::{ServerProc, wait_until};

/// Silence after which a member's transport declares its server down.
const SILENCE: Duration = Duration::from_millis(300);
/// The longest any wait of these tests may take.
const LIMIT: Duration = Duration::from_secs(30);

fn config(redundancy: Redundancy) -> PoolConfig {
    PoolConfig::new(redundancy)
        .maintenance_interval(Duration::from_millis(20))
        .rejoin(Some(Duration::from_millis(200)), Duration::from_secs(5))
        .coding(CodingOptions::default().seal_after(Duration::from_millis(20)))
}

fn pool_over(members: &[Arc<TcpBackend>], cfg: PoolConfig) -> Arc<PoolBackend> {
    let list = members
        .iter()
        .map(|m| m.clone() as Arc<dyn Backend>)
        .collect();
    Arc::new(PoolBackend::new(list, cfg).unwrap())
}

/// A session of its own on the server at `addr`, for its server-wide statistics (the test
/// servers have no admin token, so every client sees them).
fn observer(addr: &str) -> TcpBackend {
    TcpBackend::connect(
        TcpConfig::new([addr])
            .timeout(Duration::from_secs(10))
            .heartbeat(Duration::ZERO, Duration::ZERO),
    )
    .unwrap()
}

fn value(id: u64, round: u64) -> Vec<u8> {
    let len = 200 + ((id * 37 + round) % 1800) as usize;
    (0..len)
        .map(|i| (id * 7 + round * 13 + i as u64) as u8)
        .collect()
}

/// Writes, overwrites, frees and reads keys `base..base + keys` until `stop`, keeping the
/// acknowledged values in `model` and failing on any error or wrong value.
fn workload(
    p: &PoolBackend,
    base: u64,
    keys: u64,
    stop: &AtomicBool,
    model: &Mutex<HashMap<u64, Vec<u8>>>,
) {
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let id = base + (round.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) % keys;
        let known = model.lock().get(&id).cloned();
        match known {
            Some(_) if round.is_multiple_of(7) => {
                p.free(&[id])
                    .unwrap_or_else(|e| panic!("free {id:#x}: {e}"));
                model.lock().remove(&id);
            }
            Some(v) if !round.is_multiple_of(3) => {
                let got = p.get(id).unwrap_or_else(|e| panic!("get {id:#x}: {e}"));
                assert_eq!(got, v, "{id:#x}");
            }
            _ => {
                let v = value(id, round);
                p.put(id, &v).unwrap_or_else(|e| panic!("put {id:#x}: {e}"));
                model.lock().insert(id, v);
            }
        }
    }
}

/// The member the server of `old` rejoined as, once it has.
fn rejoined(pool: &PoolBackend, old: MemberId) -> MemberId {
    let mut now = None;
    wait_until("the frozen server to rejoin", LIMIT, || {
        now = pool.members()[old.0].rejoined_as;
        now.is_some()
    });
    now.unwrap()
}

/// Objects, bytes (payload plus per-object overhead) and sessions the server of `obs` holds.
fn held(obs: &TcpBackend) -> (u64, u64, u64) {
    let st = obs.server_stats().unwrap().remove(0);
    (st.objects, st.used_bytes, st.sessions)
}

/// The first byte where `got` differs from `want` (or the length), for a readable message.
fn first_difference(got: &[u8], want: &[u8]) -> Option<usize> {
    if got.len() != want.len() {
        return Some(got.len().min(want.len()));
    }
    got.iter().zip(want).position(|(a, b)| a != b)
}

/// Every object of `model` reads back its value from `pool` and every id of `freed` is not
/// found; `what` names the moment in the messages.
fn reads_as_model(pool: &PoolBackend, model: &HashMap<u64, Vec<u8>>, freed: &[u64], what: &str) {
    for (id, v) in model {
        let got = pool
            .get(*id)
            .unwrap_or_else(|e| panic!("{what}: get {id}: {e}"));
        assert_eq!(first_difference(&got, v), None, "{what}: object {id}");
    }
    for id in freed {
        assert!(
            matches!(pool.get(*id), Err(BackendError::NotFound(_))),
            "{what}: freed {id} reads back"
        );
    }
}

#[test]
fn with_one_copy_per_object_a_frozen_server_comes_back_with_its_objects() {
    let servers: Vec<ServerProc> = (0..3).map(|_| ServerProc::start(&[])).collect();
    let members: Vec<Arc<TcpBackend>> = servers.iter().map(|s| member(&s.addr, SILENCE)).collect();
    let pool = pool_over(&members, config(Redundancy::replicas(1)));
    let victim = MemberId(1);
    let obs = observer(&servers[victim.0].addr);
    let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
    for id in 0..600 {
        let v = value(id, 0);
        pool.put(id, &v).unwrap();
        model.insert(id, v);
    }
    let on_victim: Vec<u64> = (0..600)
        .filter(|&id| pool.locations(id).unwrap() == [victim])
        .collect();
    assert!(
        on_victim.len() > 100,
        "{} objects on the victim",
        on_victim.len()
    );
    let others: Vec<u64> = (0..600).filter(|id| !on_victim.contains(id)).collect();
    servers[victim.0].freeze();
    // A read of its objects waits out the detection, then fails with the typed error.
    match pool.get(on_victim[0]) {
        Err(BackendError::Unavailable { .. }) => {}
        other => panic!("read of a frozen object: {other:?}"),
    }
    assert_eq!(pool.member_state(victim), Some(MemberState::Down));
    for &id in &on_victim {
        assert!(
            matches!(pool.get(id), Err(BackendError::Unavailable { .. })),
            "{id}"
        );
    }
    // The rest of the pool works: reads, overwrites, frees, new objects; the frozen server's
    // objects can be overwritten (they go elsewhere) and freed, not patched.
    for &id in &others {
        assert_eq!(pool.get(id).unwrap(), model[&id], "{id}");
    }
    let mut freed = Vec::new();
    for (k, &id) in on_victim.iter().enumerate() {
        match k % 6 {
            0 | 1 => {
                let v = value(id, 1);
                pool.put(id, &v).unwrap();
                assert!(!pool.locations(id).unwrap().contains(&victim));
                model.insert(id, v);
            }
            2 => {
                pool.free(&[id]).unwrap();
                model.remove(&id);
                freed.push(id);
            }
            3 => assert!(matches!(
                pool.patch(id, &[(0, &[0xAB; 8])]),
                Err(BackendError::Unavailable { .. })
            )),
            _ => {}
        }
    }
    for (k, &id) in others.iter().enumerate().step_by(5) {
        if k % 2 == 0 {
            let v = value(id, 2);
            pool.put(id, &v).unwrap();
            model.insert(id, v);
        } else {
            pool.free(&[id]).unwrap();
            model.remove(&id);
            freed.push(id);
        }
    }
    for id in 1000..1200 {
        let v = value(id, 3);
        pool.put(id, &v).unwrap();
        model.insert(id, v);
    }
    servers[victim.0].thaw();
    let thawed = std::time::Instant::now();
    let now = rejoined(&pool, victim);
    assert_eq!(pool.member_state(now), Some(MemberState::Live));
    // Its objects are readable again, each with its last acknowledged value.
    wait_until("every object to be readable", LIMIT, || {
        on_victim
            .iter()
            .all(|id| !matches!(pool.get(*id), Err(BackendError::Unavailable { .. })))
    });
    eprintln!(
        "all objects readable {:.1} ms after SIGCONT",
        thawed.elapsed().as_secs_f64() * 1e3
    );
    let check = |what: &str| reads_as_model(&pool, &model, &freed, what);
    check("after SIGCONT");
    // Its objects move to live members, its old session is closed, and the server holds
    // exactly what the pool places on its fresh member.
    wait_until(
        "the revived session to be emptied and closed",
        LIMIT,
        || {
            pool.repair_now();
            pool.member_state(victim) == Some(MemberState::Drained)
        },
    );
    check("after the revived session closed");
    let overhead = obs.stats().unwrap().per_object_overhead;
    let placed: Vec<u64> = model
        .keys()
        .copied()
        .filter(|&id| pool.locations(id).unwrap().contains(&now))
        .collect();
    let placed_bytes: u64 = placed
        .iter()
        .map(|id| model[id].len() as u64 + overhead)
        .sum();
    let (objects, used, sessions) = held(&obs);
    assert_eq!(objects, placed.len() as u64);
    assert_eq!(used, placed_bytes);
    assert_eq!(sessions, 2, "the pool's fresh session and this observer's");
}

#[test]
fn a_replicated_member_frozen_past_its_failover_rejoins_and_gets_its_copies_back() {
    let servers: Vec<ServerProc> = (0..3).map(|_| ServerProc::start(&[])).collect();
    let members: Vec<Arc<TcpBackend>> = servers.iter().map(|s| member(&s.addr, SILENCE)).collect();
    let pool = pool_over(&members, config(Redundancy::replicas(3)));
    let victim = MemberId(1);
    let obs = observer(&servers[victim.0].addr);
    let model: Arc<Mutex<HashMap<u64, Vec<u8>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2u64)
        .map(|t| {
            let (p, stop, model) = (pool.clone(), stop.clone(), model.clone());
            std::thread::spawn(move || workload(&p, t << 32, 300, &stop, &model))
        })
        .collect();
    wait_until("objects on the victim", LIMIT, || {
        pool.members()[victim.0].objects > 200
    });
    // The workload frees too: the server's count is read until it shows them as well.
    wait_until("objects on the victim's server", LIMIT, || {
        held(&obs).0 > 200
    });
    servers[victim.0].freeze();
    wait_until("the frozen member to be failed over", LIMIT, || {
        pool.member_state(victim) == Some(MemberState::Down)
    });
    // Frozen past a few probes: they fail and it stays down.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(pool.members()[victim.0].rejoined_as, None);
    servers[victim.0].thaw();
    let now = rejoined(&pool, victim);
    assert_eq!(pool.member_state(now), Some(MemberState::Live));
    // The workload goes on with it, then everything gets its third copy.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    wait_until("full redundancy with the rejoined member", LIMIT, || {
        pool.repair_now() == 0
    });
    // The old session, revived, had its objects moved away and is closed.
    wait_until(
        "the revived session to be emptied and closed",
        LIMIT,
        || pool.member_state(victim) == Some(MemberState::Drained),
    );
    let model = model.lock();
    let overhead = obs.stats().unwrap().per_object_overhead;
    let mut placed_bytes = 0;
    for (id, v) in model.iter() {
        assert_eq!(&pool.get(*id).unwrap(), v, "{id:#x}");
        let loc = pool.locations(*id).unwrap();
        assert_eq!(loc.len(), 3, "{id:#x}: {loc:?}");
        assert!(
            loc.contains(&now),
            "{id:#x} has no copy on the rejoined member"
        );
        placed_bytes += v.len() as u64 + overhead;
    }
    // The server holds what the pool places on it and nothing else: the old session, with the
    // copies written off at the failover, is gone.
    let (objects, used, sessions) = held(&obs);
    assert_eq!(objects, model.len() as u64);
    assert_eq!(objects, pool.members()[now.0].objects as u64);
    assert_eq!(used, placed_bytes);
    assert_eq!(sessions, 2, "the pool's fresh session and this observer's");
    assert_eq!(pool.pool_stats().rejoins, 1);
    assert!(matches!(
        members[victim.0].get(*model.keys().next().unwrap()),
        Err(BackendError::ServerDown { .. })
    ));
}

#[test]
fn a_coded_member_frozen_past_its_failover_rejoins_and_stripes_get_full_parity_again() {
    let mut servers: Vec<ServerProc> = (0..6).map(|_| ServerProc::start(&[])).collect();
    let members: Vec<Arc<TcpBackend>> = servers.iter().map(|s| member(&s.addr, SILENCE)).collect();
    let pool = pool_over(&members, config(Redundancy::coded(4, 2)));
    let victim = MemberId(2);
    let mut model = HashMap::new();
    let mut put = |pool: &PoolBackend, id: u64, round: u64| {
        let v: Vec<u8> = value(id, round).repeat(2);
        pool.put(id, &v).unwrap_or_else(|e| panic!("put {id}: {e}"));
        model.insert(id, v);
    };
    for id in 0..300 {
        put(&pool, id, 0);
    }
    wait_until("full redundancy", LIMIT, || pool.repair_now() == 0);
    servers[victim.0].freeze();
    // Writes go on: new stripes have five members to go on, so they are sealed one parity
    // span short or held unsealed in the client (which of the two depends on how long the
    // freeze has lasted when they fill); the stripes written before keep a span on the frozen
    // member or on a substitute, degraded either way.
    for id in 300..600 {
        put(&pool, id, 1);
    }
    wait_until("the frozen member to be failed over", LIMIT, || {
        pool.member_state(victim) == Some(MemberState::Down)
    });
    wait_until("stripes short of parity or degraded", LIMIT, || {
        pool.repair_now();
        pool.coded_stats()
            .is_some_and(|s| s.short_parity > 0 || s.degraded > 0)
    });
    servers[victim.0].thaw();
    let now = rejoined(&pool, victim);
    assert_eq!(pool.member_state(now), Some(MemberState::Live));
    wait_until("full parity with the rejoined member", LIMIT, || {
        pool.repair_now() == 0
            && pool
                .coded_stats()
                .is_some_and(|s| s.short_parity == 0 && s.degraded == 0)
    });
    for (id, v) in &model {
        assert_eq!(&pool.get(*id).unwrap(), v, "{id}");
    }
    // Full redundancy again: two other servers may die.
    servers[0].kill9();
    servers[4].kill9();
    for (id, v) in &model {
        assert_eq!(&pool.get(*id).unwrap(), v, "{id} after two kills");
    }
    assert_eq!(pool.pool_stats().rejoins, 1);
}

#[test]
fn more_than_m_coded_members_frozen_at_once_come_back_with_their_spans() {
    let mut servers: Vec<ServerProc> = (0..6).map(|_| ServerProc::start(&[])).collect();
    let members: Vec<Arc<TcpBackend>> = servers.iter().map(|s| member(&s.addr, SILENCE)).collect();
    // Small spans: many stripes, each over all six members.
    let cfg = config(Redundancy::coded(4, 2)).coding(
        CodingOptions::default()
            .span_bytes(16 << 10)
            .seal_after(Duration::from_millis(20)),
    );
    let pool = pool_over(&members, cfg);
    let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
    for chunk in (0..600u64).collect::<Vec<_>>().chunks(20) {
        let vals: Vec<(u64, Vec<u8>)> = chunk.iter().map(|&id| (id, value(id, 0))).collect();
        let items: Vec<(u64, &[u8])> = vals.iter().map(|(i, v)| (*i, v.as_slice())).collect();
        pool.put_many(&items).unwrap();
        model.extend(vals);
    }
    wait_until("full redundancy", LIMIT, || pool.repair_now() == 0);
    let frozen = [MemberId(0), MemberId(1), MemberId(2)];
    let lost: Vec<u64> = (0..600)
        .filter(|&id| frozen.contains(&pool.locations(id).unwrap()[0]))
        .collect();
    assert!(
        lost.len() > 100,
        "{} objects on the frozen servers",
        lost.len()
    );
    let observers: Vec<TcpBackend> = frozen
        .iter()
        .map(|m| observer(&servers[m.0].addr))
        .collect();
    for m in frozen {
        servers[m.0].freeze();
    }
    wait_until("the frozen members to be failed over", LIMIT, || {
        let _ = pool.get(lost[0]);
        frozen
            .iter()
            .all(|&m| pool.member_state(m) == Some(MemberState::Down))
    });
    // Three of each stripe's six spans are out: the frozen servers' objects are unavailable
    // (the typed error), the others read, and the pool takes writes and frees.
    for (id, v) in &model {
        match pool.get(*id) {
            Ok(got) => assert_eq!(first_difference(&got, v), None, "object {id}"),
            Err(BackendError::Unavailable { .. }) => assert!(lost.contains(id), "{id}"),
            Err(e) => panic!("get {id}: {e}"),
        }
    }
    let mut freed = Vec::new();
    for (k, &id) in lost.iter().enumerate() {
        match k % 5 {
            0 => {
                let v = value(id, 1);
                pool.put(id, &v).unwrap();
                model.insert(id, v);
            }
            1 => {
                pool.free(&[id]).unwrap();
                model.remove(&id);
                freed.push(id);
            }
            2 => assert!(
                matches!(pool.get(id), Err(BackendError::Unavailable { .. })),
                "{id}"
            ),
            _ => {}
        }
    }
    for id in 1000..1100 {
        let v = value(id, 2);
        pool.put(id, &v).unwrap();
        model.insert(id, v);
    }
    for m in frozen {
        servers[m.0].thaw();
    }
    let thawed = std::time::Instant::now();
    for m in frozen {
        let now = rejoined(&pool, m);
        assert_eq!(pool.member_state(now), Some(MemberState::Live));
    }
    wait_until("every object to be readable", LIMIT, || {
        lost.iter()
            .all(|id| !matches!(pool.get(*id), Err(BackendError::Unavailable { .. })))
    });
    eprintln!(
        "all objects readable {:.1} ms after SIGCONT",
        thawed.elapsed().as_secs_f64() * 1e3
    );
    let check = |what: &str| reads_as_model(&pool, &model, &freed, what);
    check("after SIGCONT");
    // The revived members' spans are rebuilt onto live members and their sessions closed.
    wait_until(
        "the revived sessions to be emptied and closed",
        LIMIT,
        || {
            pool.repair_now() == 0
                && frozen
                    .iter()
                    .all(|&m| pool.member_state(m) == Some(MemberState::Drained))
        },
    );
    let st = pool.coded_stats().unwrap();
    assert_eq!(
        (st.degraded, st.unsealed, st.short_parity),
        (0, 0, 0),
        "{st:?}"
    );
    check("after the revived sessions closed");
    for obs in &observers {
        wait_until("one pool session per server", LIMIT, || held(obs).2 == 2);
    }
    // Full redundancy again: two servers may die.
    servers[0].kill9();
    servers[4].kill9();
    check("after two kills");
    assert_eq!(pool.pool_stats().rejoins, 3);
}

#[test]
fn a_flapping_server_ends_up_as_one_live_member_with_one_session() {
    let mut servers: Vec<ServerProc> = (0..3).map(|_| ServerProc::start(&[])).collect();
    let members: Vec<Arc<TcpBackend>> = servers.iter().map(|s| member(&s.addr, SILENCE)).collect();
    let pool = pool_over(&members, config(Redundancy::replicas(2)));
    let name = pool.members()[1].name.clone();
    let model: Arc<Mutex<HashMap<u64, Vec<u8>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (p, stop, model) = (pool.clone(), stop.clone(), model.clone());
        std::thread::spawn(move || workload(&p, 0, 400, &stop, &model))
    };
    let mut current = MemberId(1);
    // Frozen, thawed, and frozen again as soon as it is back (its sessions revived with their
    // data each time); then killed and restarted as a new process (its sessions gone with it):
    // it comes back empty.
    for round in 0..3 {
        wait_until("objects on the flapping server", LIMIT, || {
            pool.members()[current.0].objects > 20
        });
        if round < 2 {
            servers[1].freeze();
        } else {
            servers[1].kill9();
        }
        wait_until("the member to be failed over", LIMIT, || {
            pool.member_state(current) == Some(MemberState::Down)
        });
        if round < 2 {
            servers[1].thaw();
        } else {
            servers[1].restart();
        }
        current = rejoined(&pool, current);
    }
    stop.store(true, Ordering::Relaxed);
    worker.join().expect("worker");
    wait_until("full redundancy", LIMIT, || pool.repair_now() == 0);
    let all = pool.members();
    let live: Vec<_> = all
        .iter()
        .filter(|m| m.name == name && m.state == MemberState::Live)
        .collect();
    assert_eq!(live.len(), 1, "{all:?}");
    assert_eq!(live[0].id, current);
    // Three comebacks, and revived sessions that froze again revived again.
    assert!(pool.pool_stats().rejoins >= 3);
    let model = model.lock();
    let mut placed = 0;
    for (id, v) in model.iter() {
        assert_eq!(&pool.get(*id).unwrap(), v, "{id:#x}");
        placed += u64::from(pool.locations(*id).unwrap().contains(&current));
    }
    let obs = observer(&servers[1].addr);
    let (objects, _, sessions) = held(&obs);
    assert_eq!(objects, placed);
    assert_eq!(sessions, 2, "the pool's session and this observer's");
}

#[test]
fn a_member_the_operator_removed_is_never_taken_back() {
    let servers: Vec<ServerProc> = (0..3).map(|_| ServerProc::start(&[])).collect();
    let members: Vec<Arc<TcpBackend>> = servers.iter().map(|s| member(&s.addr, SILENCE)).collect();
    let pool = pool_over(&members, config(Redundancy::replicas(2)));
    for id in 0..100 {
        pool.put(id, &value(id, 0)).unwrap();
    }
    let victim = MemberId(0);
    servers[victim.0].freeze();
    wait_until("the frozen member to be failed over", LIMIT, || {
        pool.repair_now();
        pool.member_state(victim) == Some(MemberState::Down)
    });
    pool.remove_member(victim).unwrap();
    servers[victim.0].thaw();
    // Several probe periods: none takes it back.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(pool.member_state(victim), Some(MemberState::Removed));
    assert_eq!(pool.members()[victim.0].rejoined_as, None);
    assert_eq!(pool.pool_stats().rejoins, 0);
    assert!(matches!(
        pool.rejoin_member(victim),
        Err(farmem::backend::pool::PoolError::NoRejoin { .. })
    ));
    for id in 0..100 {
        assert_eq!(pool.get(id).unwrap(), value(id, 0));
    }
}
