//! Network partitions (root only; skipped otherwise, failed instead when
//! `FARMEM_REQUIRE_PRIVILEGED` is set): one of three servers runs in its own network namespace
//! behind a veth pair, the client in this one. While three threads read and write through a pool
//! with two replicas, the link is cut, either by setting it down or by dropping every packet. The
//! server is silent, not gone: no reset, no refused connection. The pool must notice within its
//! detection time (the heartbeat period plus twice the silence allowed, see [`detection_limit`]),
//! no request may stall longer than that detection plus 50 ms, no error may reach the program
//! and no value may be lost; after the link heals the server is added back as a new member and
//! the pool keeps working with it. Namespace, links and routes are removed even when the test
//! fails.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use farmem::backend::pool::MemberState;
use farmem::backend::{MemberId, PoolBackend, TcpBackend};
use farmem::{Backend, BackendError};
use parking_lot::Mutex;
use support::ServerProc;
use support::netns::{self, NetNs};
use support::pool::HEARTBEAT;

/// Silence after which a member's transport declares it down.
const SILENCE: Duration = Duration::from_millis(300);
/// Keys per worker thread.
const KEYS: u64 = 400;
const THREADS: u64 = 3;

/// The longest a silent server may go unnoticed: a heartbeat sent just before the partition is
/// not declared lost while the connections heard from the server less than [`SILENCE`] ago, so
/// the ping that notices is sent up to one period and one silence later.
fn detection_limit() -> Duration {
    HEARTBEAT + 2 * SILENCE
}

#[derive(Clone, Copy, Debug)]
enum Cut {
    LinkDown,
    DropPackets,
}

fn value(t: u64, k: u64, round: u64) -> Vec<u8> {
    let len = 64 + ((k * 31 + round) % 960) as usize;
    (0..len)
        .map(|i| (t * 7 + k * 13 + round * 101 + i as u64) as u8)
        .collect()
}

/// What a worker did: the values it wrote (acknowledged), its longest call, its calls.
struct Outcome {
    model: HashMap<u64, Vec<u8>>,
    longest: Duration,
    ops: u64,
}

fn worker(p: &PoolBackend, t: u64, stop: &AtomicBool, errors: &Mutex<Vec<String>>) -> Outcome {
    let mut model = HashMap::new();
    let (mut longest, mut ops, mut round) = (Duration::ZERO, 0u64, 0u64);
    let key = |k: u64| (t + 1) << 32 | k;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let k = (round.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) % KEYS;
        let t0 = Instant::now();
        let r = if round % 5 == 0 {
            // Freed objects come back as new ones, placed afresh.
            let r = p.free(&[key(k)]);
            if r.is_ok() {
                model.remove(&key(k));
            }
            r.map(|()| None)
        } else if round % 3 == 0 || !model.contains_key(&key(k)) {
            let v = value(t, k, round);
            let r = p.put(key(k), &v);
            if r.is_ok() {
                model.insert(key(k), v);
            }
            r.map(|()| None)
        } else {
            p.get(key(k)).map(Some)
        };
        longest = longest.max(t0.elapsed());
        ops += 1;
        match r {
            Ok(Some(got)) => assert_eq!(&got, &model[&key(k)], "key {:#x}", key(k)),
            Ok(None) => {}
            Err(e) => errors.lock().push(format!("{:#x}: {e}", key(k))),
        }
    }
    Outcome {
        model,
        longest,
        ops,
    }
}

fn member(addr: &str) -> Arc<TcpBackend> {
    support::pool::member(addr, SILENCE)
}

fn wait(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
    t0.elapsed()
}

/// One partition at a time: the stall bound is about the pool, not about CPU contention.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn partition(cut: Cut) {
    if let Some(why) = netns::unavailable() {
        support::skip_or_fail(&why);
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Declared first, dropped last: the servers go before their namespace.
    let ns = NetNs::create().unwrap_or_else(|e| panic!("network namespace: {e}"));
    let listen = format!("{}:0", ns.ns_ip());
    let servers = [
        ServerProc::start(&[]),
        ServerProc::start_in_netns(&ns.name, &["--listen", &listen]),
        ServerProc::start(&[]),
    ];
    let behind = MemberId(1);
    let members: Vec<Arc<TcpBackend>> = servers.iter().map(|s| member(&s.addr)).collect();
    let pool = support::pool::pool(&members, 2);
    let stop = Arc::new(AtomicBool::new(false));
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (p, stop, errors) = (pool.clone(), stop.clone(), errors.clone());
            std::thread::spawn(move || worker(&p, t, &stop, &errors))
        })
        .collect();
    // Let the workers fill their keys, part of them on the server behind the link.
    wait("objects behind the link", Duration::from_secs(30), || {
        pool.members()[behind.0].objects > 200
    });
    let cut_at = Instant::now();
    match cut {
        Cut::LinkDown => ns.link_down(),
        Cut::DropPackets => ns.drop_packets(),
    }
    .unwrap_or_else(|e| panic!("{cut:?}: {e}"));
    let detected = wait("detection", Duration::from_secs(30), || {
        pool.members()[behind.0].state == MemberState::Down
    });
    println!("{cut:?}: detected after {detected:?}");
    wait("full redundancy", Duration::from_secs(30), || {
        pool.pool_stats().under_replicated == 0
    });
    std::thread::sleep(Duration::from_millis(200));
    ns.heal().unwrap_or_else(|e| panic!("heal: {e}"));
    // The silent server is back on the network: a new member (the old one stays down).
    let again = member(&servers[1].addr);
    let rejoined = pool.add_member(again.clone()).unwrap();
    wait(
        "new objects on the rejoined server",
        Duration::from_secs(30),
        || pool.members()[rejoined.0].objects > 50,
    );
    stop.store(true, Ordering::Relaxed);
    let outcomes: Vec<Outcome> = workers
        .into_iter()
        .map(|w| w.join().expect("worker"))
        .collect();
    let longest = outcomes.iter().map(|o| o.longest).max().unwrap_or_default();
    let ops: u64 = outcomes.iter().map(|o| o.ops).sum();
    println!(
        "{cut:?}: detected after {detected:?} (limit {:?}), longest request {longest:?}, \
         {ops} requests in {:?} from the cut to the end",
        detection_limit(),
        cut_at.elapsed()
    );
    let errors = errors.lock();
    assert!(
        errors.is_empty(),
        "{} errors, first {:?}",
        errors.len(),
        errors.first()
    );
    assert!(
        detected <= detection_limit(),
        "{cut:?}: detected after {detected:?}"
    );
    assert!(
        longest <= detected + Duration::from_millis(50),
        "{cut:?}: a request stalled {longest:?}, detection took {detected:?}"
    );
    // Nothing lost; every object fully replicated on live members, the rejoined one included.
    let all = pool.members();
    assert_eq!(all[behind.0].state, MemberState::Down);
    assert_eq!(all[rejoined.0].state, MemberState::Live);
    for (id, v) in outcomes.iter().flat_map(|o| &o.model) {
        assert_eq!(&pool.get(*id).unwrap(), v, "{id:#x}");
        let loc = pool.locations(*id).unwrap();
        assert_eq!(loc.len(), 2, "{id:#x}");
        assert!(loc.iter().all(|m| all[m.0].state == MemberState::Live));
        assert!(
            !loc.contains(&behind),
            "{id:#x} still placed behind the old link"
        );
    }
    // The rejoined server answers directly too.
    let probe = 0xfeed_0000_0000_0001;
    again.put(probe, b"healed").unwrap();
    assert_eq!(
        support::pool::read_member(&again, probe).unwrap(),
        b"healed"
    );
    assert!(matches!(
        members[behind.0].get(probe),
        Err(BackendError::ServerDown { .. })
    ));
}

#[test]
fn a_link_set_down_is_detected_in_time_and_costs_nothing() {
    partition(Cut::LinkDown);
}

#[test]
fn dropped_packets_are_detected_in_time_and_cost_nothing() {
    partition(Cut::DropPackets);
}
