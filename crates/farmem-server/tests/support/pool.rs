//! A replicated pool over server processes, as the `pool_*` tests build it: each member over
//! its own TCP backend with a quick heartbeat, repair unlimited, maintenance every 20 ms.

use std::sync::Arc;
use std::time::Duration;

use farmem::backend::{PoolBackend, PoolConfig, Redundancy, TcpBackend, TcpConfig};
use farmem::{Backend, BackendError};

/// Heartbeat period of [`member`] backends.
pub const HEARTBEAT: Duration = Duration::from_millis(50);

/// A TCP backend to the server at `addr` (10 s timeout) that declares it down after
/// `silence` without an answer to its heartbeat (sent every [`HEARTBEAT`]).
///
/// # Panics
/// When the server cannot be reached.
pub fn member(addr: &str, silence: Duration) -> Arc<TcpBackend> {
    let cfg = TcpConfig::new([addr])
        .timeout(Duration::from_secs(10))
        .heartbeat(HEARTBEAT, silence);
    Arc::new(TcpBackend::connect(cfg).unwrap())
}

/// A pool with `replicas` copies over `members`. Members that go down stay down (the tests
/// add a server that comes back by hand; `pool_rejoin` tests the pool taking it back itself).
pub fn pool(members: &[Arc<TcpBackend>], replicas: usize) -> Arc<PoolBackend> {
    let cfg = PoolConfig::new(Redundancy::replicas(replicas))
        .repair_rate(None)
        .maintenance_interval(Duration::from_millis(20))
        .rejoin(None, Duration::from_secs(30));
    let list = members
        .iter()
        .map(|m| m.clone() as Arc<dyn Backend>)
        .collect();
    Arc::new(PoolBackend::new(list, cfg).unwrap())
}

/// Reads `id` straight from a member's own backend. A pool sets a read patience on its members
/// ([`farmem::Backend::set_read_patience`]), so a direct read of a busy server may give up with
/// [`BackendError::Silent`]: it is asked again.
///
/// # Errors
/// Any other error of the read.
pub fn read_member(b: &TcpBackend, id: u64) -> Result<Vec<u8>, BackendError> {
    loop {
        match b.get(id) {
            Err(BackendError::Silent { .. }) => std::thread::yield_now(),
            r => return r,
        }
    }
}
