//! Shared by the `pool_membership_*` tests: `farmem-server` processes that can be killed and
//! restarted at the same address, an admin token file, pools over them, and waiting.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use farmem::Backend;
use farmem::backend::pool::TcpConnector;
use farmem::backend::{MemberSource, Membership, PoolBackend, PoolConfig, Redundancy};

pub const BIN: &str = env!("CARGO_BIN_EXE_farmem-server");

/// The admin token the servers of these tests accept.
pub const ADMIN: &[u8] = b"operator-secret";

/// A file holding [`ADMIN`], unique to `test`.
pub fn admin_token_file(test: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("farmem-admin-{}-{test}", std::process::id()));
    std::fs::write(&p, ADMIN).expect("write the admin token file");
    p
}

/// A `farmem-server` process, killed when dropped.
pub struct Srv {
    pub child: Option<Child>,
    pub addr: String,
    args: Vec<String>,
}

impl Srv {
    /// Starts the binary on a free port with `capacity` and the admin token of `test`.
    pub fn start(test: &str, capacity: &str, extra: &[&str]) -> Self {
        let mut args: Vec<String> = vec![
            "--capacity".into(),
            capacity.into(),
            "--admin-token-file".into(),
            admin_token_file(test).display().to_string(),
            "--session-lease".into(),
            "2s".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let (child, addr) = spawn("127.0.0.1:0", &args);
        Self {
            child: Some(child),
            addr,
            args,
        }
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again (empty) at the same address.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match try_spawn(&self.addr, &self.args) {
                Some((child, addr)) => {
                    assert_eq!(addr, self.addr);
                    self.child = Some(child);
                    return;
                }
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                None => panic!("cannot restart the server at {}", self.addr),
            }
        }
    }

    /// An admin client with the right token.
    pub fn admin(&self) -> farmem_server::AdminClient {
        farmem_server::AdminClient::new(self.addr.clone(), ADMIN.to_vec())
    }
}

impl Drop for Srv {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(listen: &str, args: &[String]) -> (Child, String) {
    try_spawn(listen, args).unwrap_or_else(|| panic!("farmem-server did not start on {listen}"))
}

/// Starts the binary; `None` when it exits without listening (the port is still taken).
fn try_spawn(listen: &str, args: &[String]) -> Option<(Child, String)> {
    let mut child = Command::new(BIN)
        .args(["--listen", listen])
        .args(args)
        .env("FARMEM_AGENT_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn farmem-server");
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    match line.trim().strip_prefix("listening on ") {
        Some(a) => Some((child, a.to_string())),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }
}

/// A pool over `addrs` keeping `copies` copies, quick maintenance, unlimited repair bandwidth,
/// re-admission retried every 100-400 ms.
pub fn pool(source: MemberSource, copies: usize) -> PoolBackend {
    let m = Membership::new(source, Arc::new(TcpConnector::new(Vec::new())))
        .readmit_backoff(Duration::from_millis(100), Duration::from_millis(400));
    let cfg = PoolConfig::new(Redundancy::replicas(copies))
        .repair_rate(None)
        .maintenance_interval(Duration::from_millis(100));
    PoolBackend::connect(m, cfg).expect("pool")
}

/// Waits up to `secs` seconds for `cond`; panics with `what` otherwise.
pub fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value object `id` holds in version `v` (`len` bytes).
pub fn value(id: u64, v: u64, len: usize) -> Vec<u8> {
    let mut x = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ v.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Checks every object `0..n` holds version `versions[id]`.
pub fn verify(b: &dyn Backend, versions: &[u64], len: usize) {
    for (id, &v) in versions.iter().enumerate() {
        let got = b
            .get(id as u64)
            .unwrap_or_else(|e| panic!("object {id}: {e}"));
        assert!(got == value(id as u64, v, len), "object {id} version {v}");
    }
}

/// Used bytes of the server at `addr` (admin status).
pub fn used(s: &Srv) -> u64 {
    s.admin().status().expect("status").used_bytes
}
