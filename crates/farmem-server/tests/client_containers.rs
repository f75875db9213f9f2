//! Containers over a loopback memory server: agent operations offloaded over TCP agree with the
//! local path, and the hash map keeps its cold entries in the server's table.

use std::collections::HashMap;

use farmem::backend::{TcpBackend, TcpConfig};
use farmem::containers::{Cmp, FarHashMap, FarVec, HashMapConfig, Offload, Predicate, Scalar};
use farmem::{Runtime, RuntimeConfig};
use farmem_server::{Server, ServerConfig};

fn tcp_rt(addr: std::net::SocketAddr, budget: usize) -> Runtime {
    let backend = TcpBackend::connect(TcpConfig::new([addr])).unwrap();
    Runtime::new(RuntimeConfig::new(budget).custom_backend(std::sync::Arc::new(backend))).unwrap()
}

#[test]
fn far_vec_and_agent_ops_over_tcp() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let rt = tcp_rt(server.addr(), 8 << 20);
    let n = 3 << 20; // 24 MiB of u64: three times the budget
    let mut v: FarVec<u64> = FarVec::new(&rt);
    v.extend((0..n as u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 44))
        .unwrap();
    let keys =
        FarVec::from_slice(&rt, &(0..n).map(|i| (i % 13) as u16).collect::<Vec<_>>()).unwrap();
    let mut sum = 0u128;
    v.scan(|c| sum += c.iter().map(|&x| u128::from(x)).sum::<u128>())
        .unwrap();
    // The streaming scan sees the same elements in the same order.
    let mut streamed = Vec::with_capacity(n);
    v.scan_nt(|c| streamed.extend_from_slice(c)).unwrap();
    assert!(
        streamed
            .iter()
            .enumerate()
            .all(|(i, &x)| x == (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 44)
    );
    assert_eq!(streamed.len(), n);
    let r = v.aggregate(Offload::Remote).unwrap();
    assert_eq!(r, v.aggregate(Offload::Local).unwrap());
    assert_eq!(r.sum, farmem::containers::Sum::U(sum));
    let pred = Predicate::new(Cmp::Lt, Scalar::U(1000));
    let fr = v.filter(pred, Offload::Remote).unwrap();
    assert_eq!(
        fr.to_vec().unwrap(),
        v.filter(pred, Offload::Local).unwrap().to_vec().unwrap()
    );
    let gr = v.gather(&fr, Offload::Remote).unwrap().to_vec().unwrap();
    assert!(gr.iter().all(|&x| x < 1000));
    assert_eq!(gr, v.gather(&fr, Offload::Local).unwrap().to_vec().unwrap());
    let g = keys.group_by(&v, 100, Offload::Remote).unwrap();
    assert_eq!(g, keys.group_by(&v, 100, Offload::Local).unwrap());
    assert_eq!(g.len(), 13);
    let small = FarVec::from_slice(&rt, &[3.5f64, -1.0, 2.25, f64::NAN, -1.0]).unwrap();
    let ar = small.argsort(Offload::Remote).unwrap().to_vec().unwrap();
    assert_eq!(ar, vec![1, 4, 2, 0, 3]);
    assert_eq!(ar, small.argsort(Offload::Local).unwrap().to_vec().unwrap());
    assert_eq!(small.unique(10, Offload::Remote).unwrap().len(), 4);
    server.shutdown();
}

#[test]
fn far_hash_map_over_tcp_with_threads() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let rt = tcp_rt(server.addr(), 8 << 20);
    let m: FarHashMap<u32, u64> = FarHashMap::new(&rt, HashMapConfig::new(16 << 10)).unwrap();
    // Four threads, disjoint key ranges, each with its own model.
    let models: Vec<HashMap<u32, u64>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4u32)
            .map(|t| {
                let m = &m;
                s.spawn(move || {
                    let mut model = HashMap::new();
                    for i in 0..3000u32 {
                        let k = t * 1_000_000 + (i * 7) % 2000;
                        match i % 5 {
                            0..=2 => {
                                m.insert(k, u64::from(i)).unwrap();
                                model.insert(k, u64::from(i));
                            }
                            3 => assert_eq!(m.get(&k).unwrap(), model.get(&k).copied()),
                            _ => assert_eq!(m.remove(&k).unwrap(), model.remove(&k)),
                        }
                    }
                    model
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total: usize = models.iter().map(HashMap::len).sum();
    assert_eq!(m.len().unwrap(), total);
    // Concurrent counters on shared keys through the entry API.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for i in 0..500u32 {
                    m.update(&(9_000_000 + i % 50), |v| *v = Some(v.unwrap_or(0) + 1))
                        .unwrap();
                }
            });
        }
    });
    let keys: Vec<u32> = (9_000_000..9_000_050).collect();
    let counts = m.get_many(&keys).unwrap();
    assert!(counts.iter().all(|c| *c == Some(40)), "{counts:?}");
    assert!(m.stats().misses > 0 && m.stats().evictions > 0);
    server.shutdown();
}

/// Pipelined lookups from several threads while another thread changes its own keys: every
/// answer is the current value, in batch order.
#[test]
fn pipelined_lookups_over_tcp_with_threads() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let rt = tcp_rt(server.addr(), 8 << 20);
    let cfg = HashMapConfig {
        pipeline_misses: 16,
        pipeline_depth: 3,
        ..HashMapConfig::new(32 << 10)
    };
    let m: FarHashMap<u64, u64> = FarHashMap::new(&rt, cfg).unwrap();
    let entries: Vec<(u64, u64)> = (0..20_000u64).map(|k| (k, k * 3)).collect();
    m.insert_many(&entries).unwrap();
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let m = &m;
            s.spawn(move || {
                // Skewed keys, some absent (>= 20000).
                let keys: Vec<u64> = (0..30_000u64)
                    .map(|i| {
                        (i * (t + 7)).wrapping_mul(0x9E37_79B9)
                            % if i % 3 == 0 { 200 } else { 21_000 }
                    })
                    .collect();
                let mut next = 0;
                m.get_many_pipelined(keys.chunks(64), |i, values| {
                    assert_eq!(i, next);
                    next += 1;
                    for (k, v) in keys[i * 64..].iter().zip(values) {
                        assert_eq!(v, (*k < 20_000).then_some(k * 3), "key {k}");
                    }
                })
                .unwrap();
                assert_eq!(next, keys.len().div_ceil(64));
            });
        }
        let m = &m;
        s.spawn(move || {
            let mut model = HashMap::new();
            for round in 0..40u64 {
                for k in 100_000..100_200u64 {
                    if (k + round) % 4 == 0 {
                        m.remove(&k).unwrap();
                        model.remove(&k);
                    } else {
                        m.insert(k, k + round).unwrap();
                        model.insert(k, k + round);
                    }
                }
                let keys: Vec<u64> = (100_000..100_200).collect();
                let mut got = Vec::new();
                m.get_many_pipelined(keys.chunks(9), |_, v| got.extend(v))
                    .unwrap();
                let want: Vec<Option<u64>> = keys.iter().map(|k| model.get(k).copied()).collect();
                assert_eq!(got, want, "round {round}");
            }
        });
    });
    assert!(m.stats().round_trips > 0 && m.stats().misses > 0);
    // A dead server: a typed error, no hang.
    server.shutdown();
    let keys: Vec<u64> = (20_000..30_000).collect();
    assert!(m.get_many_pipelined(keys.chunks(64), |_, _| {}).is_err());
}
