//! A randomized history against a pool of real `farmem-server` processes: four threads put,
//! batch-put, patch, free and read their own objects through a [`PoolBackend`] (two replicas
//! over 4-5 servers, three over 5) while a controller kills up to `replicas - 1` servers at once
//! with SIGKILL, freezes one (SIGSTOP until the heartbeat notices, then SIGCONT), brings servers
//! back as new members (restarted at the same address, or a thawed one as it is), drains members
//! (sometimes killing a server, the draining one included, in the middle of the drain), and adds
//! fresh servers; never more failures before repair has caught up.
//!
//! Every read is checked against a model of what was acknowledged: the last acknowledged write,
//! or, after a write that failed (in flight when a server died), any value it could have left; a
//! freed object never comes back. No error may reach the program at all. At the end every object
//! has full redundancy on live members, each copy holding the model's value, and the live
//! servers hold exactly the table's copies.
//!
//! Seeded: `FARMEM_SEED` replays a seed (the interleaving with the processes still varies),
//! `FARMEM_HISTORY_SECS` sets the length of each history's chaos (default 8 s). The seed is printed first
//! and in every failure.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use farmem::backend::pool::MemberState;
use farmem::backend::{MemberId, PoolBackend, TcpBackend};
use farmem::containers::{FarHashMap, HashMapConfig};
use farmem::{Backend, BackendError, Runtime, RuntimeConfig};
use rand::rngs::SmallRng;
use rand::{Rng as _, RngExt, SeedableRng};
use support::ServerProc;

/// Most servers live at once.
const MAX_LIVE: usize = 5;
const THREADS: u64 = 4;
const KEYS: u64 = 150;

type Rng = SmallRng;

/// 1 to 400 bytes of a pattern.
fn bytes(rng: &mut Rng) -> Vec<u8> {
    let mut v = vec![0u8; rng.random_range(1..=400)];
    rng.fill_bytes(&mut v);
    v
}

/// What an object may hold: one value after an acknowledged write (`None`: freed or never
/// written), several after writes that failed.
#[derive(Clone, Debug)]
struct Possible(Vec<Option<Vec<u8>>>);

impl Possible {
    fn known(v: Option<Vec<u8>>) -> Self {
        Self(vec![v])
    }
    fn single(&self) -> Option<&Option<Vec<u8>>> {
        (self.0.len() == 1).then(|| &self.0[0])
    }
    fn admits(&self, v: &Option<Vec<u8>>) -> bool {
        self.0.contains(v)
    }
}

/// One worker's model of its own keys, and the errors it saw.
#[derive(Default)]
struct Model {
    keys: HashMap<u64, Possible>,
    errors: Vec<String>,
}

impl Model {
    fn get(&self, id: u64) -> Possible {
        self.keys.get(&id).cloned().unwrap_or(Possible::known(None))
    }
    /// Records the outcome of a write that would leave `new`.
    fn wrote(&mut self, id: u64, new: Option<Vec<u8>>, r: &Result<(), BackendError>, what: &str) {
        match r {
            Ok(()) => {
                self.keys.insert(id, Possible::known(new));
            }
            Err(e) => {
                self.errors.push(format!("{what} {id:#x}: {e}"));
                let mut p = self.get(id);
                p.0.push(new);
                self.keys.insert(id, p);
            }
        }
    }
}

fn worker(p: &PoolBackend, t: u64, seed: u64, stop: &AtomicBool) -> Model {
    let mut rng = Rng::seed_from_u64(seed);
    let mut m = Model::default();
    let key = |rng: &mut Rng| (t + 1) * 1_000_000 + rng.random_range(0..KEYS);
    let check = |m: &Model, id: u64, got: Option<Vec<u8>>, what: &str| {
        let want = m.get(id);
        assert!(
            want.admits(&got),
            "seed {seed}: {what} {id:#x} returned {got:?}, the model allows {want:?}"
        );
    };
    let mut ops = 0u64;
    while !stop.load(Ordering::Relaxed) {
        ops += 1;
        match rng.random_range(0..10) {
            0..=2 => {
                let (id, v) = (key(&mut rng), bytes(&mut rng));
                let r = p.put(id, &v);
                m.wrote(id, Some(v), &r, "put");
            }
            3 => {
                let mut batch: Vec<(u64, Vec<u8>)> = (0..1 + rng.random_range(0..8))
                    .map(|_| (key(&mut rng), bytes(&mut rng)))
                    .collect();
                // One value per id (a batch's duplicates have no defined winner).
                batch.sort_by_key(|(id, _)| *id);
                batch.dedup_by_key(|(id, _)| *id);
                let refs: Vec<(u64, &[u8])> =
                    batch.iter().map(|(id, v)| (*id, v.as_slice())).collect();
                let r = p.put_many(&refs);
                for (id, v) in batch {
                    m.wrote(id, Some(v), &r, "put_many");
                }
            }
            4 => {
                let id = key(&mut rng);
                let edit = [rng.next_u64() as u8, rng.next_u64() as u8];
                match m.get(id).single().cloned() {
                    Some(Some(mut v)) => {
                        let off = rng.random_range(0..v.len());
                        let edit = &edit[..edit.len().min(v.len() - off)];
                        let r = p.patch(id, &[(off as u32, edit)]);
                        v[off..off + edit.len()].copy_from_slice(edit);
                        m.wrote(id, Some(v), &r, "patch");
                    }
                    Some(None) => match p.patch(id, &[(0, &edit)]) {
                        Err(BackendError::NotFound(_)) => {}
                        r => panic!("seed {seed}: patch of freed {id:#x}: {r:?}"),
                    },
                    // After a failed write the base is unknown: no patch.
                    None => {}
                }
            }
            5 => {
                let id = key(&mut rng);
                let r = p.free(&[id]);
                m.wrote(id, None, &r, "free");
            }
            6 => {
                let ids: Vec<u64> = m
                    .keys
                    .iter()
                    .filter(|(_, v)| !v.admits(&None))
                    .map(|(id, _)| *id)
                    .filter(|_| rng.random_range(0..4) == 0)
                    .take(16)
                    .collect();
                match p.get_many(&ids) {
                    Ok(got) => {
                        for (id, g) in ids.iter().zip(got) {
                            check(&m, *id, Some(g), "get_many");
                        }
                    }
                    Err(e) => m.errors.push(format!("get_many: {e}")),
                }
            }
            _ => {
                let id = key(&mut rng);
                match p.get(id) {
                    Ok(g) => check(&m, id, Some(g), "get"),
                    Err(BackendError::NotFound(_)) => check(&m, id, None, "get"),
                    Err(e) => m.errors.push(format!("get {id:#x}: {e}")),
                }
            }
        }
    }
    eprintln!("worker {t}: {ops} operations");
    m
}

/// A server slot: its process (restartable at the same address) and its current member.
struct Slot {
    proc: ServerProc,
    member: Option<MemberId>,
}

/// The servers, the pool over them and each member's own backend (by member id).
struct Cluster {
    seed: u64,
    replicas: usize,
    pool: Arc<PoolBackend>,
    slots: Vec<Slot>,
    backends: Vec<Arc<TcpBackend>>,
}

/// A server; a session whose connections are gone (its member declared down while the server
/// lives on) is freed a second later.
fn server() -> ServerProc {
    ServerProc::start(&["--session-lease", "1s"])
}

fn connect(addr: &str) -> Arc<TcpBackend> {
    support::pool::member(addr, Duration::from_millis(500))
}

impl Cluster {
    /// `start` servers pooled with `replicas` copies.
    fn start(seed: u64, replicas: usize, start: usize) -> Self {
        let procs: Vec<ServerProc> = (0..start).map(|_| server()).collect();
        let backends: Vec<Arc<TcpBackend>> = procs.iter().map(|p| connect(&p.addr)).collect();
        let pool = support::pool::pool(&backends, replicas);
        Self {
            seed,
            replicas,
            pool,
            slots: procs
                .into_iter()
                .enumerate()
                .map(|(i, proc)| Slot {
                    proc,
                    member: Some(MemberId(i)),
                })
                .collect(),
            backends,
        }
    }

    fn state(&self, m: MemberId) -> MemberState {
        self.pool.members()[m.0].state
    }

    /// Slots whose member is live.
    fn live(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&s| {
                self.slots[s]
                    .member
                    .is_some_and(|m| self.state(m) == MemberState::Live)
            })
            .collect()
    }

    /// Adds the (running) server of slot `s` as a new member.
    fn join(&mut self, s: usize) -> MemberId {
        let b = connect(&self.slots[s].proc.addr);
        let id = self.pool.add_member(b.clone()).unwrap();
        let all = &mut self.backends;
        assert_eq!(id.0, all.len(), "member ids are dense");
        all.push(b);
        self.slots[s].member = Some(id);
        id
    }

    fn wait(&self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let t0 = Instant::now();
        while !cond() {
            assert!(
                t0.elapsed() < limit,
                "seed {}: {what} not within {limit:?}: {:?} {:?}",
                self.seed,
                self.pool.pool_stats(),
                self.pool.members()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Kills the servers of `slots` at once and waits until the pool has noticed.
    fn kill(&mut self, slots: &[usize]) {
        let mut gone = Vec::new();
        for &s in slots {
            gone.push(self.slots[s].member.take().expect("a member"));
            self.slots[s].proc.kill9();
        }
        // (A member drained just before holds nothing and is not called again.)
        for m in gone {
            self.wait("kill noticed", Duration::from_secs(20), || {
                !self.state(m).serves()
            });
        }
    }

    /// Freezes slot `s`'s server (SIGSTOP) until the pool has noticed, then thaws it: the server
    /// lives on, outside the pool.
    fn freeze(&mut self, s: usize) {
        let m = self.slots[s].member.take().expect("a member");
        self.slots[s].proc.freeze();
        self.wait("freeze noticed", Duration::from_secs(20), || {
            !self.state(m).serves()
        });
        self.slots[s].proc.thaw();
    }

    fn wait_repaired(&self) {
        self.wait("full redundancy", Duration::from_secs(60), || {
            self.pool.pool_stats().under_replicated == 0
        });
    }

    /// Drains slot `s`'s member, optionally killing slot `also`'s server in the middle; then
    /// removes the drained member and stops its server.
    fn drain(&mut self, s: usize, also: Option<(usize, Duration)>, events: &mut Vec<String>) {
        let m = self.slots[s].member.expect("a member");
        let pool = self.pool.clone();
        let drainer = std::thread::spawn(move || pool.drain_member(m));
        if let Some((k, after)) = also {
            std::thread::sleep(after);
            events.push(format!("kill {} during the drain", self.slots[k].proc.addr));
            self.kill(&[k]);
        }
        let result = drainer.join().expect("drain thread");
        if also.is_some_and(|(k, _)| k == s) {
            // The draining server itself died: the drain may have finished first or not; the
            // member is down (or drained, when the drain won) and repair takes over.
            let state = self.state(m);
            assert!(
                matches!(state, MemberState::Down | MemberState::Drained),
                "seed {}: {state:?} after {result:?}",
                self.seed
            );
            events.push(format!("drain of the killed server: {result:?}"));
            return;
        }
        match result {
            Ok(()) => {
                // Nothing is left on the drained server (a free sent just before may still be
                // on its way).
                let b = self.backends[m.0].clone();
                self.wait("drained server empty", Duration::from_secs(10), || {
                    b.stats().is_ok_and(|st| st.objects == 0)
                });
                self.pool.remove_member(m).unwrap();
                self.slots[s].member = None;
                self.slots[s].proc.kill9();
                events.push(format!("drained and stopped {}", self.slots[s].proc.addr));
            }
            // A drain may give up (no room, too many writes); the member is live again.
            Err(e) => {
                assert_eq!(self.state(m), MemberState::Live, "seed {}: {e}", self.seed);
                events.push(format!("drain of {} gave up: {e}", self.slots[s].proc.addr));
            }
        }
    }

    /// One random step of the controller.
    fn step(&mut self, rng: &mut Rng, events: &mut Vec<String>) {
        let live = self.live();
        let dead: Vec<usize> = (0..self.slots.len())
            .filter(|&s| self.slots[s].member.is_none())
            .collect();
        let replicas = self.replicas;
        match rng.random_range(0..6) {
            // Kill up to `replicas - 1` servers at once, leaving at least `replicas` live.
            0 | 1 if live.len() > replicas => {
                let most = (replicas - 1).min(live.len() - replicas);
                let mut victims = live.clone();
                victims.retain(|_| rng.random_range(0..2) == 0);
                victims.truncate(most);
                if victims.is_empty() {
                    victims.push(live[rng.random_range(0..live.len())]);
                }
                let names: Vec<&str> = victims
                    .iter()
                    .map(|&v| self.slots[v].proc.addr.as_str())
                    .collect();
                events.push(format!("kill -9 {names:?}"));
                self.kill(&victims);
            }
            5 if live.len() > replicas => {
                let s = live[rng.random_range(0..live.len())];
                events.push(format!("freeze {}", self.slots[s].proc.addr));
                self.freeze(s);
            }
            // A server outside the pool comes back: restarted, or (when it still runs, after a
            // freeze) as it is, holding a dead session's objects until its lease ends.
            2 if !dead.is_empty() && live.len() < MAX_LIVE => {
                let s = dead[rng.random_range(0..dead.len())];
                let how = if self.slots[s].proc.is_running() && rng.random_range(0..2) == 0 {
                    "rejoin"
                } else {
                    self.slots[s].proc.restart();
                    "restart"
                };
                let m = self.join(s);
                events.push(format!("{how} {} as {m:?}", self.slots[s].proc.addr));
            }
            3 if live.len() > replicas => {
                let s = live[rng.random_range(0..live.len())];
                // Sometimes a server dies while the drain runs (when enough stay): another one,
                // or the draining one itself.
                let also = (live.len() > replicas + 1 && rng.random_range(0..3) == 0).then(|| {
                    let k = live[rng.random_range(0..live.len())];
                    (k, Duration::from_millis(rng.random_range(0..30)))
                });
                events.push(format!("drain {}", self.slots[s].proc.addr));
                self.drain(s, also, events);
            }
            4 if live.len() < MAX_LIVE => {
                self.slots.push(Slot {
                    proc: server(),
                    member: None,
                });
                let s = self.slots.len() - 1;
                let m = self.join(s);
                events.push(format!("add {} as {m:?}", self.slots[s].proc.addr));
            }
            _ => {}
        }
        // Never more than `replicas - 1` failures before repair has caught up.
        self.wait_repaired();
        // At least `replicas + 1` live servers, so the next failure leaves full redundancy.
        while self.live().len() < replicas + 1 {
            match (0..self.slots.len()).find(|&s| self.slots[s].member.is_none()) {
                Some(s) => {
                    self.slots[s].proc.restart();
                    let m = self.join(s);
                    events.push(format!("restart {} as {m:?}", self.slots[s].proc.addr));
                }
                None => unreachable!("a live count below the minimum means a dead slot"),
            }
        }
    }
}

fn seed() -> u64 {
    match std::env::var("FARMEM_SEED") {
        Ok(s) => s.parse().expect("FARMEM_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}

#[test]
fn history_two_replicas_over_four_or_five_servers() {
    history(2, 4);
}

#[test]
fn history_three_replicas_over_five_servers() {
    history(3, 5);
}

/// Seconds of chaos per history.
fn history_secs() -> u64 {
    std::env::var("FARMEM_HISTORY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
}

/// The controller: random steps for [`history_secs`] (or until member ids run short).
fn chaos(cluster: &mut Cluster) -> Vec<String> {
    let mut rng = Rng::seed_from_u64(cluster.seed.wrapping_mul(77));
    let mut events = Vec::new();
    let t0 = Instant::now();
    // Member ids are never reused: stay well below the pool's limit.
    while t0.elapsed() < Duration::from_secs(history_secs()) && cluster.pool.members().len() < 200 {
        std::thread::sleep(Duration::from_millis(20 + rng.random_range(0..150)));
        cluster.step(&mut rng, &mut events);
    }
    events
}

/// One history with `replicas` copies, starting from `start` servers.
fn history(replicas: usize, start: usize) {
    let seed = seed();
    eprintln!("seed {seed} (FARMEM_SEED={seed} replays it), {replicas} replicas");
    let mut cluster = Cluster::start(seed, replicas, start);
    let pool = cluster.pool.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (p, stop) = (pool.clone(), stop.clone());
            std::thread::spawn(move || worker(&p, t, seed ^ (t + 1).wrapping_mul(0x9e37), &stop))
        })
        .collect();
    let events = chaos(&mut cluster);
    stop.store(true, Ordering::Relaxed);
    let models: Vec<Model> = workers
        .into_iter()
        .map(|w| w.join().expect("worker"))
        .collect();
    eprintln!("seed {seed}: {} events: {events:?}", events.len());
    let errors: Vec<&String> = models.iter().flat_map(|m| &m.errors).collect();
    assert!(
        errors.is_empty(),
        "seed {seed}: {} errors reached the program, first {:?}; events {events:?}",
        errors.len(),
        errors.first()
    );
    assert!(
        events.iter().any(|e| e.starts_with("kill -9")),
        "seed {seed}: no kill in {events:?}"
    );
    cluster.wait_repaired();

    // Every acknowledged value is there with full redundancy on live members; every freed
    // object is gone.
    let backends = cluster.backends.clone();
    let mut objects = 0;
    for (id, p) in models.iter().flat_map(|m| &m.keys) {
        let want = p.single().expect("no failed writes");
        match (want, pool.get(*id)) {
            (Some(v), Ok(g)) => assert_eq!(&g, v, "seed {seed}: {id:#x}"),
            (None, Err(BackendError::NotFound(_))) => {
                assert!(pool.locations(*id).is_none(), "seed {seed}: {id:#x}");
                continue;
            }
            (w, r) => panic!("seed {seed}: {id:#x} is {r:?}, the model says {w:?}"),
        }
        let loc = pool.locations(*id).unwrap();
        assert_eq!(loc.len(), replicas, "seed {seed}: {id:#x}: {loc:?}");
        for m in loc {
            assert_eq!(cluster.state(m), MemberState::Live, "seed {seed}");
            assert_eq!(
                Some(support::pool::read_member(&backends[m.0], *id).unwrap()),
                *want,
                "seed {seed}: {id:#x} on {m:?}"
            );
        }
        objects += 1;
    }
    assert_eq!(pool.pool_stats().objects, objects, "seed {seed}");
    // The live servers hold exactly the table's copies (no leftovers of moves or frees).
    let live: Vec<MemberId> = cluster
        .live()
        .iter()
        .filter_map(|&s| cluster.slots[s].member)
        .collect();
    cluster.wait("leftover copies freed", Duration::from_secs(10), || {
        let held: u64 = live
            .iter()
            .map(|m| backends[m.0].stats().unwrap().objects)
            .sum();
        held == (objects * replicas) as u64
    });
}

/// Keys per thread of the hash-map history.
const MAP_KEYS: u64 = 3000;

/// One thread of the hash-map history: inserts, removes and lookups of its own keys through a
/// map whose table lives on the pool; returns its model.
fn map_worker(
    map: &FarHashMap<u64, u64>,
    t: u64,
    seed: u64,
    stop: &AtomicBool,
) -> HashMap<u64, u64> {
    let mut rng = Rng::seed_from_u64(seed);
    let mut model = HashMap::new();
    let key = |rng: &mut Rng| (t + 1) << 40 | rng.random_range(0..MAP_KEYS);
    let fail = |what: &str, e: &dyn std::fmt::Display| -> ! { panic!("seed {seed}: {what}: {e}") };
    while !stop.load(Ordering::Relaxed) {
        match rng.random_range(0..8) {
            0..=2 => {
                let (k, v) = (key(&mut rng), rng.next_u64());
                map.insert(k, v).unwrap_or_else(|e| fail("insert", &e));
                model.insert(k, v);
            }
            3 => {
                let k = key(&mut rng);
                let got = map.remove(&k).unwrap_or_else(|e| fail("remove", &e));
                assert_eq!(got, model.remove(&k), "seed {seed}: remove {k:#x}");
            }
            4 => {
                let keys: Vec<u64> = (0..32).map(|_| key(&mut rng)).collect();
                let got = map.get_many(&keys).unwrap_or_else(|e| fail("get_many", &e));
                for (k, g) in keys.iter().zip(got) {
                    assert_eq!(g, model.get(k).copied(), "seed {seed}: get_many {k:#x}");
                }
            }
            _ => {
                let k = key(&mut rng);
                let got = map.get(&k).unwrap_or_else(|e| fail("get", &e));
                assert_eq!(got, model.get(&k).copied(), "seed {seed}: get {k:#x}");
            }
        }
    }
    model
}

/// The same chaos under a [`FarHashMap`] whose server-side table is replicated by the pool
/// (mutating table operations go to every replica, repair and drains copy it page by page)
/// and whose small local cache writes back all the time.
#[test]
fn history_of_a_hash_map_two_replicas() {
    let seed = seed();
    eprintln!("seed {seed} (FARMEM_SEED={seed} replays it), hash map");
    let mut cluster = Cluster::start(seed, 2, 4);
    let rt =
        Runtime::new(RuntimeConfig::new(8 << 20).custom_backend(cluster.pool.clone())).unwrap();
    let map: Arc<FarHashMap<u64, u64>> =
        Arc::new(FarHashMap::new(&rt, HashMapConfig::new(16 << 10)).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (map, stop) = (map.clone(), stop.clone());
            std::thread::spawn(move || {
                map_worker(&map, t, seed ^ (t + 1).wrapping_mul(0x51ed), &stop)
            })
        })
        .collect();
    let events = chaos(&mut cluster);
    stop.store(true, Ordering::Relaxed);
    let models: Vec<HashMap<u64, u64>> = workers
        .into_iter()
        .map(|w| w.join().expect("worker"))
        .collect();
    eprintln!("seed {seed}: {} events: {events:?}", events.len());
    map.flush().unwrap();
    cluster.wait_repaired();
    let mut entries = 0;
    for (k, v) in models.iter().flatten() {
        assert_eq!(
            map.get(k).unwrap(),
            Some(*v),
            "seed {seed}: {k:#x}; events {events:?}"
        );
        entries += 1;
    }
    assert_eq!(
        map.len().unwrap(),
        entries,
        "seed {seed}; events {events:?}"
    );
}
