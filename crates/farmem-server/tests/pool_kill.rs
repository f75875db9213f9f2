//! A pool of three real `farmem-server` processes with two replicas keeps running, without an
//! error reaching the program and without losing a value, when one server is killed with SIGKILL
//! in the middle of: a vector update (then hash-map inserts); hash-map inserts and lookups from
//! several threads; random writes to a paged region from several threads (userfaultfd: skipped
//! where unavailable, failed instead when `FARMEM_REQUIRE_PRIVILEGED` is set).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use farmem::backend::PoolBackend;
use farmem::backend::pool::MemberState;
use farmem::containers::{FarHashMap, FarVec, HashMapConfig};
use farmem::paging::{self, PagedRegion, PagingConfig};
use farmem::{Backend, BackendConfig, Runtime, RuntimeConfig};
use rand::rngs::SmallRng;
use rand::{Rng, RngExt, SeedableRng};
use support::ServerProc;

fn value(k: u64) -> u64 {
    k.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555
}

#[test]
fn a_killed_server_costs_no_error_and_no_value() {
    let mut servers: Vec<ServerProc> = (0..3).map(|_| ServerProc::start(&[])).collect();
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let rt = Runtime::new(
        RuntimeConfig::new(16 << 20).backend(BackendConfig::servers(&addrs, "").replicas(2)),
    )
    .unwrap();
    // 32 MiB of u64 against a 16 MiB local budget: most of it lives on the servers.
    let n = 4usize << 20;
    let mut v: FarVec<u64> = FarVec::new(&rt);
    v.extend((0..n as u64).map(|i| i * 3)).unwrap();
    let map: FarHashMap<u64, u64> = FarHashMap::new(&rt, HashMapConfig::new(256 << 10)).unwrap();
    let keys = 100_000u64;
    for k in 0..keys / 2 {
        map.insert(k, value(k)).unwrap();
    }
    map.flush().unwrap();

    // Scan and update; kill server 1 (SIGKILL) half way through.
    let mut seen = 0usize;
    let killed = servers[1].addr.clone();
    let mut victim = Some(servers.remove(1));
    v.scan_mut(|chunk| {
        for x in chunk.iter_mut() {
            assert_eq!(*x, seen as u64 * 3);
            *x += 1;
            seen += 1;
        }
        if seen >= n / 2
            && let Some(mut p) = victim.take()
        {
            p.kill9();
            eprintln!("killed {} after {seen} elements", p.addr);
        }
    })
    .unwrap();
    assert_eq!(seen, n);
    assert!(victim.is_none());

    for k in keys / 2..keys {
        map.insert(k, value(k)).unwrap();
    }
    map.flush().unwrap();
    for k in 0..keys {
        assert_eq!(map.get(&k).unwrap(), Some(value(k)), "key {k}");
    }
    let batch: Vec<u64> = (0..keys).step_by(3).collect();
    let got = map.get_many(&batch).unwrap();
    assert!(batch.iter().zip(got).all(|(&k, g)| g == Some(value(k))));
    assert_eq!(map.len().unwrap(), keys as usize);

    let mut i = 0u64;
    v.scan(|chunk| {
        for &x in chunk {
            assert_eq!(x, i * 3 + 1, "element {i}");
            i += 1;
        }
    })
    .unwrap();
    assert_eq!(i, n as u64);
    // The pool knows the server is gone and serves from the other two.
    let desc = rt.backend().describe();
    assert!(desc.starts_with("pool(2 copies"), "{desc}");
    assert!(!desc.contains(&killed), "{desc}");
    assert!(
        desc.contains(&servers[0].addr) && desc.contains(&servers[1].addr),
        "{desc}"
    );
    drop(v);
    drop(map);
    drop(rt);
}

/// Three servers pooled with two replicas.
fn pool_of(servers: &[ServerProc]) -> Arc<PoolBackend> {
    let members: Vec<_> = servers
        .iter()
        .map(|s| support::pool::member(&s.addr, Duration::from_millis(500)))
        .collect();
    support::pool::pool(&members, 2)
}

/// Kills (SIGKILL) the server of a member holding an object: with a hash map alone, a copy of
/// its server-side table, the pool's only object. Returns the member's index.
fn kill_table_member(pool: &PoolBackend, servers: &mut [ServerProc]) -> usize {
    let victim = pool
        .members()
        .iter()
        .position(|m| m.objects > 0)
        .expect("the table is placed");
    servers[victim].kill9();
    eprintln!("killed the table's member {}", servers[victim].addr);
    victim
}

/// Waits until `progress` reaches `at`, then kills `victim` with SIGKILL.
fn kill_at(progress: &AtomicU64, at: u64, victim: &mut ServerProc) {
    wait_for(progress, at);
    victim.kill9();
    eprintln!("killed {} at {at}", victim.addr);
}

/// Waits until `progress` reaches `at`.
fn wait_for(progress: &AtomicU64, at: u64) {
    let t0 = Instant::now();
    while progress.load(Ordering::Relaxed) < at {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the workers never got to {at}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_killed_server_mid_hash_map_inserts_and_lookups_costs_nothing() {
    let mut servers: Vec<ServerProc> = (0..3).map(|_| ServerProc::start(&[])).collect();
    let pool = pool_of(&servers);
    let rt = Runtime::new(RuntimeConfig::new(8 << 20).custom_backend(pool.clone())).unwrap();
    // A small cache: most lookups and all write-backs go to the server-side table.
    let map: FarHashMap<u64, u64> = FarHashMap::new(&rt, HashMapConfig::new(64 << 10)).unwrap();
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 40_000;
    let done = AtomicU64::new(0);
    let victim = std::thread::scope(|s| {
        for t in 0..THREADS {
            let (map, done) = (&map, &done);
            s.spawn(move || {
                let key = |i: u64| i * THREADS + t;
                for i in 0..PER_THREAD {
                    map.insert(key(i), value(key(i))).unwrap();
                    if i % 4 == 3 {
                        // Look up an earlier key (most are on the servers by now) and a batch.
                        let j = value(i) % i;
                        assert_eq!(map.get(&key(j)).unwrap(), Some(value(key(j))), "{j}");
                    }
                    if i % 512 == 511 {
                        let batch: Vec<u64> = (0..64).map(|b| key((i * 7 + b * 13) % i)).collect();
                        let got = map.get_many(&batch).unwrap();
                        for (k, g) in batch.iter().zip(got) {
                            assert_eq!(g, Some(value(*k)), "batch key {k}");
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // The victim holds a copy of the server-side table (the pool's only object).
        wait_for(&done, THREADS * PER_THREAD / 2);
        kill_table_member(&pool, &mut servers)
    });
    map.flush().unwrap();
    let keys = THREADS * PER_THREAD;
    for k in 0..keys {
        assert_eq!(map.get(&k).unwrap(), Some(value(k)), "key {k}");
    }
    let all: Vec<u64> = (0..keys).collect();
    for chunk in all.chunks(4096) {
        let got = map.get_many(chunk).unwrap();
        assert!(chunk.iter().zip(got).all(|(&k, g)| g == Some(value(k))));
    }
    assert_eq!(map.len().unwrap(), keys as usize);
    for m in pool.members() {
        let want = if m.id.0 == victim {
            MemberState::Down
        } else {
            MemberState::Live
        };
        assert_eq!(m.state, want, "{m:?}");
    }
    drop(map);
    drop(rt);
}

#[test]
fn a_killed_server_mid_paged_writes_from_several_threads_costs_nothing() {
    if let Err(e) = paging::available() {
        support::skip_or_fail(&format!("paging: {e}"));
        return;
    }
    let mut servers: Vec<ServerProc> = (0..3).map(|_| ServerProc::start(&[])).collect();
    let pool = pool_of(&servers);
    let budget = 256 << 10;
    let len = 8 * budget;
    let region = PagedRegion::new(len, pool.clone(), PagingConfig::new(budget)).unwrap();
    let base = region.as_ptr() as usize;
    const THREADS: usize = 4;
    const OPS: u64 = 12_000;
    // Thread `t` owns the 8-byte slots `s` with `s % THREADS == t`: the threads share pages.
    let slots = len / 8;
    let done = AtomicU64::new(0);
    let shadows: Vec<Vec<u64>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let done = &done;
                s.spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(0x9A6E + t as u64);
                    let mut shadow = vec![0u64; slots / THREADS];
                    let slot = |i: usize| (base + (i * THREADS + t) * 8) as *mut u64;
                    for _ in 0..OPS {
                        let i = rng.random_range(0..shadow.len());
                        if rng.random_range(0..3) < 2 {
                            let v = rng.next_u64();
                            // SAFETY: the slot is 8 aligned bytes inside the live region, and
                            // only this thread touches it.
                            unsafe { slot(i).write_volatile(v) };
                            shadow[i] = v;
                        } else {
                            // SAFETY: as above.
                            let got = unsafe { slot(i).read_volatile() };
                            assert_eq!(got, shadow[i], "thread {t} slot {i}");
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    shadow
                })
            })
            .collect();
        kill_at(&done, THREADS as u64 * OPS / 2, &mut servers[2]);
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for (t, shadow) in shadows.iter().enumerate() {
        for (i, &want) in shadow.iter().enumerate() {
            let p = (base + (i * THREADS + t) * 8) as *const u64;
            // SAFETY: inside the live region; the writers have finished.
            assert_eq!(unsafe { p.read_volatile() }, want, "thread {t} slot {i}");
        }
    }
    let st = region.stats();
    assert!(st.fetch_faults > 0 && st.written_back > 0, "{st:?}");
    assert!(!pool.members()[2].state.serves(), "{:?}", pool.members());
    drop(region);
}

/// A mover copies an object and commits only if no write started or ended meanwhile. The
/// server-side table of a hash map whose write-backs never pause is never idle for a whole copy
/// (a scan of every page), so after a few lost races the mover fences the entry: new writes wait
/// for the copy. Without that, the table kept a single copy for as long as the writes went on.
#[test]
fn a_hot_hash_map_table_regains_its_second_copy_while_written() {
    let mut servers: Vec<ServerProc> = (0..3).map(|_| ServerProc::start(&[])).collect();
    let pool = pool_of(&servers);
    let rt = Runtime::new(RuntimeConfig::new(8 << 20).custom_backend(pool.clone())).unwrap();
    // A tiny cache: nearly every insert writes an entry back to the table.
    let map: FarHashMap<u64, u64> = FarHashMap::new(&rt, HashMapConfig::new(4 << 10)).unwrap();
    map.insert_many(&(0..20_000).map(|k| (k, value(k))).collect::<Vec<_>>())
        .unwrap();
    map.flush().unwrap();
    let stop = AtomicBool::new(false);
    let restored = std::thread::scope(|s| {
        for t in 0..2u64 {
            let (map, stop) = (&map, &stop);
            s.spawn(move || {
                let mut k = 20_000 + t;
                while !stop.load(Ordering::Relaxed) {
                    map.insert(k, value(k)).unwrap();
                    k += 2;
                }
            });
        }
        std::thread::sleep(Duration::from_millis(200));
        let victim = kill_table_member(&pool, &mut servers);
        let t0 = Instant::now();
        let mut restored = None;
        while t0.elapsed() < Duration::from_secs(20) {
            if pool.members()[victim].state == MemberState::Down
                && pool.pool_stats().under_replicated == 0
            {
                restored = Some(t0.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        restored
    });
    let st = pool.pool_stats();
    // Without writes the same repair succeeds within seconds.
    let t0 = Instant::now();
    while pool.pool_stats().under_replicated > 0 && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let idle = pool.pool_stats().under_replicated == 0;
    assert!(
        restored.is_some(),
        "the table still has one copy 20 s after the kill, with writes going on: {st:?}; \
         repaired {:?} after the writes stopped",
        idle.then(|| t0.elapsed())
    );
    for k in 0..20_000 {
        assert_eq!(map.get(&k).unwrap(), Some(value(k)), "key {k}");
    }
}

/// A member that holds nothing gets no request that could fail, yet its death is noticed (its
/// transport's periodic statistics fail once its server is declared down), so the pool stops
/// counting on it for new copies.
#[test]
fn a_killed_server_holding_nothing_is_noticed() {
    let mut servers: Vec<ServerProc> = (0..3).map(|_| ServerProc::start(&[])).collect();
    let pool = pool_of(&servers);
    pool.put(1, b"one object, two copies").unwrap();
    let empty = pool
        .members()
        .iter()
        .position(|m| m.objects == 0)
        .expect("a member without a copy");
    servers[empty].kill9();
    let t0 = Instant::now();
    while pool.members()[empty].state == MemberState::Live {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the death of an empty member went unnoticed: {:?}",
            pool.members()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // New objects go to the live members only.
    for id in 2..50u64 {
        pool.put(id, &id.to_le_bytes()).unwrap();
        let at = pool.locations(id).unwrap();
        assert_eq!(at.len(), 2);
        assert!(
            at.iter().all(|m| m.0 != empty),
            "{id} placed on the dead member"
        );
    }
}
