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

/// An embedded store whose `put_many` takes a second once armed.
#[derive(Default)]
struct SlowPuts {
    store: EmbeddedStore,
    armed: std::sync::atomic::AtomicBool,
    started: std::sync::atomic::AtomicBool,
}

impl farmem::Backend for SlowPuts {
    fn put(&self, id: u64, data: &[u8]) -> Result<(), farmem::BackendError> {
        self.store.put(id, data)
    }
    fn get(&self, id: u64) -> Result<Vec<u8>, farmem::BackendError> {
        self.store.get(id)
    }
    fn get_many(&self, ids: &[u64]) -> Result<Vec<Vec<u8>>, farmem::BackendError> {
        self.store.get_many(ids)
    }
    fn put_many(&self, items: &[(u64, &[u8])]) -> Result<(), farmem::BackendError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.armed.load(SeqCst) {
            self.started.store(true, SeqCst);
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        self.store.put_many(items)
    }
    fn free(&self, ids: &[u64]) -> Result<(), farmem::BackendError> {
        self.store.free(ids)
    }
    fn stats(&self) -> Result<farmem::StoreStats, farmem::BackendError> {
        self.store.stats()
    }
    fn compute(&self, r: u64, op: u16, args: &[u8]) -> Result<Vec<u8>, farmem::BackendError> {
        self.store.compute(r, op, args)
    }
    fn describe(&self) -> String {
        "slow puts".into()
    }
}

/// A mutator touching objects while the evacuator writes them back does not wait for the
/// write-back's round trip: it moves the objects itself, and nothing is lost.
#[test]
fn mutators_do_not_wait_for_write_back_io() {
    use std::sync::atomic::Ordering::SeqCst;
    let backend = Arc::new(SlowPuts::default());
    let rt = Runtime::new(
        RuntimeConfig::new(4 << 20)
            .region_size(64 << 10)
            .custom_backend(backend.clone()),
    )
    .unwrap();
    let mut boxes: Vec<FarBox<[u64; WORDS]>> = (0..32)
        .map(|i| FarBox::new(&rt, [i as u64; WORDS]).unwrap())
        .collect();
    backend.armed.store(true, SeqCst);
    std::thread::scope(|sc| {
        let evac = sc.spawn(|| rt.evacuate_now());
        while !backend.started.load(SeqCst) {
            std::thread::yield_now();
        }
        let t = std::time::Instant::now();
        {
            let s = rt.scope();
            for (i, b) in boxes.iter_mut().enumerate() {
                let v = b.write(&s).unwrap();
                assert_eq!(v[7], i as u64);
                v[0] = 1000 + i as u64;
            }
        }
        let waited = t.elapsed();
        evac.join().unwrap();
        assert!(
            waited < std::time::Duration::from_millis(500),
            "mutator waited {waited:?} for a write-back"
        );
    });
    backend.armed.store(false, SeqCst);
    assert!(rt.stats().self_moves > 0);
    rt.evacuate_now();
    for (i, b) in boxes.iter().enumerate() {
        let v = b.get().unwrap();
        assert_eq!((v[0], v[7]), (1000 + i as u64, i as u64));
    }
}
