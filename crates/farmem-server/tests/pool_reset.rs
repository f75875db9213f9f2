//! Connection resets under a replicated pool: three `farmem-server` processes, each behind a
//! proxy that resets every connection to it (both sides) several times while threads put,
//! patch, read and use a hash map through a [`PoolBackend`] with two replicas. Each member's
//! transport resumes its session and resends what was in flight: no error reaches the program,
//! no member is declared down, nothing is repaired, and every value reads back as written.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use farmem::backend::pool::MemberState;
use farmem::backend::{PoolBackend, TcpBackend};
use farmem::containers::{FarHashMap, HashMapConfig};
use farmem::{Backend, Runtime, RuntimeConfig};
use support::{Proxy, ServerProc};

fn object(id: u64, round: u64) -> Vec<u8> {
    (0..48 + id % 150)
        .map(|i| (i ^ id ^ round.wrapping_mul(31)) as u8)
        .collect()
}

/// Puts, patches and reads thread `t`'s own objects until `stop`; returns the last round.
fn worker(p: &PoolBackend, t: u64, stop: &AtomicBool) -> u64 {
    let base = (t + 1) << 32;
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) || round < 10 {
        round += 1;
        let items: Vec<(u64, Vec<u8>)> = (0..24)
            .map(|i| (base + i, object(base + i, round)))
            .collect();
        let refs: Vec<(u64, &[u8])> = items.iter().map(|(i, d)| (*i, d.as_slice())).collect();
        p.put_many(&refs).unwrap();
        p.patch(base, &[(0, &round.to_le_bytes()[..])]).unwrap();
        p.put(base + 100, &object(base + 100, round)).unwrap();
        let ids: Vec<u64> = (0..24).map(|i| base + i).collect();
        let got = p.get_many(&ids).unwrap();
        let mut first = object(base, round);
        first[..8].copy_from_slice(&round.to_le_bytes());
        assert_eq!(got[0], first, "thread {t} round {round}");
        for i in 1..24 {
            assert_eq!(
                got[i as usize],
                object(base + i, round),
                "thread {t} round {round}"
            );
        }
        assert_eq!(p.get(base + 100).unwrap(), object(base + 100, round));
    }
    round
}

#[test]
fn connection_resets_under_a_pool_cost_nothing() {
    let servers: Vec<ServerProc> = (0..3)
        .map(|_| ServerProc::start(&["--session-lease", "30s"]))
        .collect();
    let proxies: Vec<Proxy> = servers.iter().map(|s| Proxy::start(&s.addr)).collect();
    let members: Vec<Arc<TcpBackend>> = proxies
        .iter()
        .map(|p| support::pool::member(&p.addr, Duration::from_secs(2)))
        .collect();
    let pool = support::pool::pool(&members, 2);
    let rt = Runtime::new(RuntimeConfig::new(8 << 20).custom_backend(pool.clone())).unwrap();
    let map: Arc<FarHashMap<u64, u64>> =
        Arc::new(FarHashMap::new(&rt, HashMapConfig::new(8 << 10)).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads: Vec<std::thread::JoinHandle<u64>> = (0..3)
        .map(|t| {
            let (p, stop) = (pool.clone(), stop.clone());
            std::thread::spawn(move || worker(&p, t, &stop))
        })
        .collect();
    {
        let (map, stop) = (map.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) || k < 2000 {
                map.insert(k, k ^ 0xabc).unwrap();
                if k.is_multiple_of(3) {
                    let probe = k / 2;
                    assert_eq!(map.get(&probe).unwrap(), Some(probe ^ 0xabc), "key {probe}");
                }
                k += 1;
            }
            k
        }));
    }
    for round in 0..6usize {
        std::thread::sleep(Duration::from_millis(120));
        // One server's connections, then all of them at once.
        if round.is_multiple_of(2) {
            proxies[round / 2 % 3].cut();
        } else {
            proxies.iter().for_each(Proxy::cut);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let keys = threads.pop().unwrap().join().unwrap();
    for t in threads {
        let rounds = t.join().unwrap();
        eprintln!("worker: {rounds} rounds over 6 resets");
    }
    map.flush().unwrap();
    for k in 0..keys {
        assert_eq!(map.get(&k).unwrap(), Some(k ^ 0xabc), "key {k}");
    }
    for m in pool.members() {
        assert_eq!(m.state, MemberState::Live, "{m:?}");
    }
    for b in &members {
        assert!(b.server_health().iter().all(|h| h.down.is_none()));
        // The resets never created a second session.
        assert_eq!(b.server_stats().unwrap()[0].sessions, 1);
    }
    let st = pool.pool_stats();
    assert_eq!(st.under_replicated, 0, "{st:?}");
    assert_eq!(st.repair.copies, 0, "nothing to repair: {st:?}");
    drop(map);
    drop(rt);
}
