//! Reads do not wait for a silent server to be declared down: a server that stops answering
//! (frozen with SIGSTOP here; a server killed with SIGKILL is silent in the same way until its
//! host has freed its memory) makes reads of the objects it holds go to their other replica
//! once it has been silent for the pool's read patience, long before its heartbeat declares it
//! down. Plain reads, batched reads and hash-table lookups all get their values while the
//! frozen member is still live in the pool, and it keeps its place once thawed.

mod support;

use std::sync::Arc;
use std::time::Duration;

use farmem::backend::pool::MemberState;
use farmem::backend::{MemberId, PoolBackend, PoolConfig, Redundancy, TcpBackend};
use farmem::containers::{FarHashMap, HashMapConfig};
use farmem::{Backend, Runtime, RuntimeConfig};
use support::ServerProc;

fn value(id: u64) -> Vec<u8> {
    (0..64 + id % 200).map(|i| (i ^ id) as u8).collect()
}

#[test]
fn reads_go_around_a_silent_server_before_it_is_declared_down() {
    let servers: Vec<ServerProc> = (0..2).map(|_| ServerProc::start(&[])).collect();
    // A minute of silence before a member is declared down: only the read patience can get a
    // read past the frozen server within this test.
    let members: Vec<Arc<TcpBackend>> = servers
        .iter()
        .map(|s| support::pool::member(&s.addr, Duration::from_secs(60)))
        .collect();
    let cfg = PoolConfig::new(Redundancy::replicas(2))
        .maintenance_interval(Duration::from_secs(3600))
        .read_patience(Some(Duration::from_millis(20)));
    let list = members
        .iter()
        .map(|m| m.clone() as Arc<dyn Backend>)
        .collect();
    let pool = Arc::new(PoolBackend::new(list, cfg).unwrap());
    let ids: Vec<u64> = (1..=300).collect();
    for &id in &ids {
        pool.put(id, &value(id)).unwrap();
    }
    let rt = Runtime::new(RuntimeConfig::new(8 << 20).custom_backend(pool.clone())).unwrap();
    // A small local cache: lookups go to the server-side table.
    let map: FarHashMap<u64, u64> = FarHashMap::new(&rt, HashMapConfig::new(4 << 10)).unwrap();
    for k in 0..5000u64 {
        map.insert(k, k * 7).unwrap();
    }
    map.flush().unwrap();

    servers[0].freeze();
    for &id in &ids {
        assert_eq!(pool.get(id).unwrap(), value(id), "get {id}");
    }
    let got = pool.get_many(&ids).unwrap();
    for (id, g) in ids.iter().zip(got) {
        assert_eq!(g, value(*id), "get_many {id}");
    }
    for k in (0..5000u64).step_by(7) {
        assert_eq!(map.get(&k).unwrap(), Some(k * 7), "lookup {k}");
    }
    let keys: Vec<u64> = (0..5000).step_by(3).collect();
    for (k, g) in keys.iter().zip(map.get_many(&keys).unwrap()) {
        assert_eq!(g, Some(k * 7), "batched lookup {k}");
    }
    // Every read above was answered while the frozen member was still a live member.
    assert_eq!(pool.member_state(MemberId(0)), Some(MemberState::Live));
    assert!(members[0].server_health()[0].down.is_none());

    servers[0].thaw();
    // Once it answers again it serves reads as before, and nothing was lost on it.
    for &id in &ids {
        assert_eq!(
            support::pool::read_member(&members[0], id).unwrap(),
            value(id),
            "member copy {id}"
        );
    }
    assert_eq!(pool.pool_stats().under_replicated, 0);
    drop(map);
    drop(rt);
}
