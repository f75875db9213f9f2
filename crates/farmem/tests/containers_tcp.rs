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
