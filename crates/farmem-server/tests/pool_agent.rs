//! Offloaded vector operations over a pool of three real `farmem-server` processes with two
//! replicas: each server computes over the chunks it holds, and a server killed with SIGKILL in
//! the middle of a group-by and a filter costs no error and no exactness.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use farmem::containers::{Cmp, FarVec, Offload, Predicate, Scalar};
use farmem::{BackendConfig, Runtime, RuntimeConfig};

const BIN: &str = env!("CARGO_BIN_EXE_farmem-server");

/// A server process; killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start() -> (Proc, String) {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn farmem-server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the startup line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected startup line {line:?}"))
        .to_string();
    (Proc(child), addr)
}

#[test]
fn a_server_killed_mid_group_by_and_filter_costs_no_error() {
    let mut servers: Vec<(Proc, String)> = (0..3).map(|_| start()).collect();
    let addrs: Vec<String> = servers.iter().map(|(_, a)| a.clone()).collect();
    let rt = Runtime::new(
        RuntimeConfig::new(8 << 20).backend(BackendConfig::servers(&addrs, "").replicas(2)),
    )
    .unwrap();
    let n = 3usize << 20;
    let keys: Vec<u8> = (0..n).map(|i| (i * 31 % 17) as u8).collect();
    let vals: Vec<i64> = (0..n as i64)
        .map(|i| (i * 7919) % 1_000_003 - 500_000)
        .collect();
    let k = FarVec::from_slice(&rt, &keys).unwrap();
    let v = FarVec::from_slice(&rt, &vals).unwrap();
    let pred = Predicate::new(Cmp::Lt, Scalar::I(-499_000));
    let want_groups = k.group_by(&v, 64, Offload::Local).unwrap();
    let want_idx = v.filter(pred, Offload::Local).unwrap().to_vec().unwrap();
    assert!(!want_idx.is_empty());
    let round = || {
        let g = k.group_by(&v, 64, Offload::Remote).unwrap();
        assert_eq!(g, want_groups);
        let idx = v.filter(pred, Offload::Remote).unwrap().to_vec().unwrap();
        assert_eq!(idx, want_idx);
    };
    let t = Instant::now();
    round();
    let one = t.elapsed();
    let (mut victim, addr) = servers.remove(1);
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(one / 3);
            victim.0.kill().unwrap();
            victim.0.wait().unwrap();
            eprintln!("killed {addr} {:?} into the offloaded operations", one / 3);
        });
        for _ in 0..3 {
            round();
        }
    });
    // The pool serves from the other two, and the answers stay exact afterwards.
    round();
    let desc = rt.backend().describe();
    assert!(desc.starts_with("pool(2 copies"), "{desc}");
    assert!(!desc.contains(&addrs[1]), "{desc}");
}

/// Several servers without replication (objects spread by owner): offloaded operations, derived
/// vectors included, give the client-side answers.
#[test]
fn servers_without_replication_answer_like_local() {
    let servers: Vec<(Proc, String)> = (0..3).map(|_| start()).collect();
    let addrs: Vec<String> = servers.iter().map(|(_, a)| a.clone()).collect();
    let rt = Runtime::new(RuntimeConfig::new(8 << 20).backend(BackendConfig::servers(&addrs, "")))
        .unwrap();
    let n = 1usize << 20;
    let keys: Vec<u8> = (0..n).map(|i| (i * 31 % 11) as u8).collect();
    let vals: Vec<i64> = (0..n as i64)
        .map(|i| (i * 7919) % 1_000_003 - 500_000)
        .collect();
    let k = FarVec::from_slice(&rt, &keys).unwrap();
    let v = FarVec::from_slice(&rt, &vals).unwrap();
    let pred = Predicate::new(Cmp::Gt, Scalar::I(499_000));
    let [remote, local] = [Offload::Remote, Offload::Local].map(|m| {
        let d = FarVec::<i64>::derive(
            &rt,
            &farmem_proto::expr::Expr::col(0).sub(farmem_proto::expr::Expr::lit_i64(1)),
            &[v.agent_input()],
            m,
        )
        .unwrap();
        (
            k.group_median(&d, 64, m).unwrap(),
            d.filter(pred, m).unwrap().to_vec().unwrap(),
            d.aggregate(m).unwrap(),
            k.unique(64, m).unwrap(),
        )
    });
    assert_eq!(remote, local);
    drop(servers);
}
