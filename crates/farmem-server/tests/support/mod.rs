//! What this crate's tests share: `farmem-server` processes ([`ServerProc`]), a proxy that cuts
//! connections ([`Proxy`]), network namespaces for partitions ([`netns`]), pools over servers
//! ([`pool`]), hang guards, and skipping a test whose machine lacks what it needs.

#![allow(dead_code, unused_imports)]

pub mod netns;
pub mod ops;
pub mod pki;
pub mod pool;
mod proxy;
pub mod raw;
mod server;

use std::time::{Duration, Instant};

pub use proxy::Proxy;
pub use server::ServerProc;

/// Skips a test whose machine lacks what it needs (root, userfaultfd, `/dev/fuse`, zram, a
/// memory cgroup): prints `why` and returns, and the caller returns too.
///
/// # Panics
/// When `FARMEM_REQUIRE_PRIVILEGED` is set (to anything but `0`), as CI does: there every test
/// must run, so a missing facility fails the test instead of skipping it.
pub fn skip_or_fail(why: &str) {
    match std::env::var("FARMEM_REQUIRE_PRIVILEGED") {
        Ok(v) if !v.is_empty() && v != "0" => {
            panic!("FARMEM_REQUIRE_PRIVILEGED is set, but this test cannot run: {why}")
        }
        _ => eprintln!("skipping: {why}"),
    }
}

/// Runs `f` on a thread and fails the test if it does not finish within `limit` (a hang guard,
/// not a timing assertion). Returns its result and how long it took.
pub fn watchdog<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> (T, Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => (v, t0.elapsed()),
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

/// Polls `cond` until it holds, failing the test after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "{what}: not reached within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    t0.elapsed()
}
