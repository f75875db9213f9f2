//! `FarHashMap` over a loopback memory server, where write-backs are really in flight while the
//! map goes on: it behaves like a std `HashMap` under a small cache (constant eviction), bulk
//! inserts included, and every thread reads its own writes.

use std::collections::HashMap;
use std::sync::Arc;

use farmem::backend::{TcpBackend, TcpConfig};
use farmem::containers::{FarHashMap, HashMapConfig};
use farmem::{Runtime, RuntimeConfig};
use farmem_server::{Server, ServerConfig, ServerHandle};
use proptest::prelude::*;

fn tcp_rt(server: &ServerHandle) -> Runtime {
    let cfg = TcpConfig::new([server.addr()]).connections_per_server(2);
    let backend = TcpBackend::connect(cfg).unwrap();
    Runtime::new(RuntimeConfig::new(8 << 20).custom_backend(Arc::new(backend))).unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u64, u32),
    Get(u64),
    Remove(u64),
    Update(u64, u32),
    /// `n` entries from key `k` on, every third key, values from `v`.
    Extend(u64, usize, u32),
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u64..3000;
    prop_oneof![
        6 => (key.clone(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
        3 => key.clone().prop_map(Op::Get),
        2 => key.clone().prop_map(Op::Remove),
        1 => (key.clone(), any::<u32>()).prop_map(|(k, v)| Op::Update(k, v)),
        1 => (key, 0usize..1500, any::<u32>()).prop_map(|(k, n, v)| Op::Extend(k, n, v)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn far_hash_map_over_tcp_matches_hashmap(ops in proptest::collection::vec(op(), 1..400)) {
        let server = Server::start(ServerConfig::default()).unwrap();
        let rt = tcp_rt(&server);
        // About 1,500 cached entries in 4 shards: write-backs of several entries, in flight
        // while later operations run.
        let cfg = HashMapConfig { shards: 4, ..HashMapConfig::new(32 << 10) };
        let m: FarHashMap<u64, u32> = FarHashMap::new(&rt, cfg).unwrap();
        let mut std: HashMap<u64, u32> = HashMap::new();
        for op in ops {
            match op {
                Op::Insert(k, v) => {
                    m.insert(k, v).unwrap();
                    std.insert(k, v);
                }
                Op::Get(k) => prop_assert_eq!(m.get(&k).unwrap(), std.get(&k).copied()),
                Op::Remove(k) => prop_assert_eq!(m.remove(&k).unwrap(), std.remove(&k)),
                Op::Update(k, v) => {
                    let old = m.update(&k, |x| {
                        let old = *x;
                        *x = (v % 4 != 0).then(|| x.unwrap_or(0) ^ v);
                        old
                    }).unwrap();
                    prop_assert_eq!(old, std.get(&k).copied());
                    match (v % 4 != 0).then(|| old.unwrap_or(0) ^ v) {
                        Some(n) => std.insert(k, n),
                        None => std.remove(&k),
                    };
                }
                Op::Extend(k, n, v) => {
                    let entries: Vec<(u64, u32)> =
                        (0..n as u64).map(|i| (k + 3 * i, v.wrapping_add(i as u32))).collect();
                    m.extend(entries.iter().copied()).unwrap();
                    std.extend(entries);
                }
            }
        }
        let keys: Vec<u64> = (0..8000).collect();
        let want: Vec<Option<u32>> = keys.iter().map(|k| std.get(k).copied()).collect();
        prop_assert_eq!(m.get_many(&keys).unwrap(), want);
        prop_assert_eq!(m.len().unwrap(), std.len());
        let mut all = m.to_vec().unwrap();
        all.sort_unstable();
        let mut want: Vec<(u64, u32)> = std.into_iter().collect();
        want.sort_unstable();
        prop_assert_eq!(all, want);
        drop(m);
        server.shutdown();
    }
}

#[test]
fn threads_read_their_own_writes_while_write_backs_are_in_flight() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let rt = tcp_rt(&server);
    let m: FarHashMap<u64, u64> = FarHashMap::new(&rt, HashMapConfig::new(64 << 10)).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let m = &m;
            s.spawn(move || {
                let key = |i: u64| (i << 2 | t).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                for i in 0..20_000u64 {
                    m.insert(key(i), i).unwrap();
                    // A key written a while ago: long evicted, maybe still in flight.
                    if i >= 5000 {
                        let j = i - 5000;
                        assert_eq!(m.get(&key(j)).unwrap(), Some(j), "thread {t} key {j}");
                    }
                }
                // Bulk: replaces every other key.
                m.extend((0..20_000u64).step_by(2).map(|i| (key(i), i + 1)))
                    .unwrap();
                for i in (0..20_000u64).step_by(7) {
                    let want = if i % 2 == 0 { i + 1 } else { i };
                    assert_eq!(m.get(&key(i)).unwrap(), Some(want), "thread {t} key {i}");
                }
            });
        }
    });
    assert_eq!(m.len().unwrap(), 80_000);
    let st = m.stats();
    assert!(st.writebacks >= 80_000 && st.evictions > 0, "{st:?}");
    drop(m);
    server.shutdown();
}
