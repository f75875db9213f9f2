//! A runtime over a pool of three real `farmem-server` processes with two replicas keeps
//! running, without an error and without losing a value, when one server is killed with
//! SIGKILL in the middle of a vector update and between hash-map inserts.

mod support;

use farmem::containers::{FarHashMap, FarVec, HashMapConfig};
use farmem::{BackendConfig, Runtime, RuntimeConfig};
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
