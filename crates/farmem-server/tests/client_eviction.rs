//! Data pushed through a small local heap survives eviction, byte for byte, against the embedded
//! store and against a loopback memory server.

use std::collections::VecDeque;
use std::sync::Arc;

use farmem::{BackendConfig, EmbeddedStore, FarBox, Runtime, RuntimeConfig};
use farmem_server::{Server, ServerConfig};

const WORDS: usize = 512; // 4 KiB objects

fn pattern(i: usize, j: usize) -> u64 {
    (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (j as u64)
}

fn push_through(rt: &Runtime, objects: usize) {
    let mut boxes = Vec::with_capacity(objects);
    for i in 0..objects {
        let mut b = FarBox::<[u64; WORDS]>::new_zeroed(rt).unwrap();
        {
            let s = rt.scope();
            let v = b.write(&s).unwrap();
            for (j, w) in v.iter_mut().enumerate() {
                *w = pattern(i, j);
            }
        }
        boxes.push(b);
        let used = rt.local_bytes();
        assert!(used <= rt.budget() + rt.slack_bytes(), "{used} bytes local");
    }
    // At most budget + slack worth of objects can still be local.
    let resident = (rt.budget() + rt.slack_bytes()) / 4096;
    let st = rt.stats();
    assert!(st.objects_evicted as usize >= objects - resident, "{st:?}");
    for (i, b) in boxes.iter().enumerate() {
        let s = rt.scope();
        let v = b.read(&s).unwrap();
        assert!(
            v.iter().enumerate().all(|(j, &w)| w == pattern(i, j)),
            "object {i} corrupted"
        );
    }
    let st = rt.stats();
    assert!(st.misses as usize >= objects - resident, "{st:?}");
    assert!(
        st.bytes_written_back >= (objects - resident) as u64 * 4096,
        "{st:?}"
    );
}

#[test]
fn one_gib_through_256_mib_embedded() {
    let rt = Runtime::new(RuntimeConfig::new(256 << 20)).unwrap();
    push_through(&rt, (1 << 30) / 4096);
}

#[test]
fn many_objects_through_loopback_server() {
    let server = Server::start(ServerConfig::default()).unwrap();
    let rt = Runtime::new(
        RuntimeConfig::new(32 << 20).backend(BackendConfig::Servers {
            addrs: vec![server.addr().to_string()],
            token: String::new(),
        }),
    )
    .unwrap();
    push_through(&rt, (128 << 20) / 4096);
}

#[test]
fn unreachable_server_is_a_typed_error() {
    // Bind then drop a listener to get a port nobody listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = Runtime::new(
        RuntimeConfig::new(16 << 20).backend(BackendConfig::Servers {
            addrs: vec![addr.to_string()],
            token: String::new(),
        }),
    );
    assert!(matches!(r, Err(farmem::Error::Backend(_))), "{r:?}");
}

/// Allocates ten times `capacity` in 4 KiB objects, keeping a window of 8 MiB live (more than the
/// local budget, so objects go remote) and checking and freeing the oldest; returns the window.
fn alloc_free_loop(rt: &Runtime, capacity: u64) -> VecDeque<FarBox<[u32; 1024]>> {
    let window = 2048;
    let total = (10 * capacity as usize) / 4096;
    let mut live = VecDeque::new();
    for i in 0..total {
        live.push_back(FarBox::new(rt, [i as u32; 1024]).unwrap());
        if live.len() > window {
            let old = live.pop_front().unwrap();
            assert_eq!(old.get().unwrap()[1023], (i - window) as u32);
        }
    }
    live
}

#[test]
fn alloc_free_loop_reclaims_remote_space() {
    // Ten times the store's capacity is allocated and freed over the loop.
    let capacity = 16u64 << 20;
    let store = Arc::new(EmbeddedStore::with_capacity(capacity));
    let rt = Runtime::new(
        RuntimeConfig::new(4 << 20)
            .region_size(64 << 10)
            .custom_backend(store.clone()),
    )
    .unwrap();
    let live = alloc_free_loop(&rt, capacity);
    assert!(rt.stats().objects_evicted > 0);
    drop(live);
    rt.flush_frees().unwrap();
    let used = farmem::Backend::stats(&*store).unwrap();
    assert_eq!(used.objects, 0, "{used:?}");
}

#[test]
fn alloc_free_loop_on_loopback_server() {
    let capacity = 16u64 << 20;
    let server = Server::start(ServerConfig {
        capacity,
        ..Default::default()
    })
    .unwrap();
    let rt = Runtime::new(RuntimeConfig::new(4 << 20).region_size(64 << 10).backend(
        BackendConfig::Servers {
            addrs: vec![server.addr().to_string()],
            token: String::new(),
        },
    ))
    .unwrap();
    drop(alloc_free_loop(&rt, capacity));
    assert!(rt.stats().objects_evicted > 0);
}
