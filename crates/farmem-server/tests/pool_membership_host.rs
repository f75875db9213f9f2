//! The host reserve: a server whose host runs short of memory (an injected `MemAvailable`)
//! shrinks itself, pooled clients move the excess to another server, and the server grows back
//! when the host recovers.

mod membership_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use farmem::Backend;
use farmem::backend::MemberSource;
use farmem_server::{HostMemory, HostReserve, HostSample, Server, ServerConfig};
use membership_support::{pool, value, verify, wait_until};

const LEN: usize = 4096;
const MIB: u64 = 1 << 20;

/// Host memory the test sets.
#[derive(Debug)]
struct FakeHost {
    available: AtomicU64,
    resident: AtomicU64,
}

impl HostMemory for FakeHost {
    fn sample(&self) -> std::io::Result<HostSample> {
        Ok(HostSample {
            available: self.available.load(Ordering::SeqCst),
            resident: self.resident.load(Ordering::SeqCst),
        })
    }
}

#[test]
fn the_server_gives_memory_back_when_the_host_runs_short_and_takes_it_again() {
    let host = Arc::new(FakeHost {
        available: AtomicU64::new(1024 * MIB),
        resident: AtomicU64::new(100 * MIB),
    });
    let reserve = HostReserve {
        reserve: 256 * MIB,
        source: host.clone(),
        interval: Duration::from_millis(20),
        deadline: Duration::from_secs(20),
    };
    let config = ServerConfig {
        capacity: 64 * MIB,
        ..ServerConfig::default()
    };
    let a = Server::start(ServerConfig {
        host_reserve: Some(reserve),
        ..config.clone()
    })
    .unwrap();
    let b = Server::start(config).unwrap();
    let addrs = vec![a.addr().to_string(), b.addr().to_string()];
    let pool = pool(MemberSource::Static(addrs), 1);
    let n = 2000u64;
    for id in 0..n {
        pool.put(id, &value(id, 0, LEN)).unwrap();
    }
    let held = a.stats().used_bytes;
    assert!(held > 3 * MIB, "server a holds {held} bytes");
    assert_eq!(a.stats().capacity_bytes, 64 * MIB);

    // The host has only 2 MiB above the reserve, and the server holds no more than at start:
    // it may keep 2 MiB of data; the pool moves the rest to b.
    host.available.store(258 * MIB, Ordering::SeqCst);
    wait_until(
        20,
        "the server to shrink and the pool to move the excess",
        || {
            let st = a.stats();
            st.capacity_bytes == 2 * MIB && st.used_bytes <= 2 * MIB
        },
    );
    verify(&pool, &vec![0; n as usize], LEN);

    // The host recovers: back to the configured capacity.
    host.available.store(2048 * MIB, Ordering::SeqCst);
    wait_until(10, "the server to grow back", || {
        a.stats().capacity_bytes == 64 * MIB
    });
    for id in n..n + 100 {
        pool.put(id, &value(id, 0, LEN)).unwrap();
    }
    verify(&pool, &vec![0; (n + 100) as usize], LEN);
}
