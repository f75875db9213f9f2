//! Runtime calls made for the containers: prefetching next to a consumer inside a scope,
//! adopting objects written by someone else, non-temporal prefetch, batched write-back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use farmem::backend::Edit;
use farmem::test_support::{adopt_box, adopt_slice, evacuate_now, reserve_ids};
use farmem::{
    Backend, BackendError, EmbeddedStore, Error, FarBox, FarSlice, ObjectId, Runtime,
    RuntimeConfig, StoreStats,
};

fn small(budget: usize) -> RuntimeConfig {
    RuntimeConfig::new(budget).region_size(64 << 10)
}

/// A prefetching thread and a consumer dereferencing the same objects inside long-ish scopes,
/// in a heap much smaller than the data: nobody may wait for the allocation timeout (which would
/// surface as `LocalHeapExhausted`).
#[test]
fn prefetcher_and_scoped_consumer_do_not_stall() {
    let rt = Runtime::new(small(1 << 20).alloc_timeout(Duration::from_secs(3))).unwrap();
    let objs: Vec<FarSlice<u64>> = (0..1024u64)
        .map(|i| FarSlice::from_slice(&rt, &[i; 512]).unwrap())
        .collect();
    evacuate_now(&rt);
    let t = std::time::Instant::now();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            for batch in objs.chunks(16) {
                // Errors (heap momentarily full) are allowed; a stall is not.
                let _ = rt.prefetch(batch);
            }
        });
        for (k, batch) in objs.chunks(8).enumerate() {
            let s = rt.scope();
            for (j, o) in batch.iter().enumerate() {
                assert_eq!(o.read(&s).unwrap()[3], (k * 8 + j) as u64);
            }
        }
    });
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[test]
fn adopt_an_object_written_by_someone_else() {
    let rt = Runtime::new(small(1 << 20)).unwrap();
    let first = reserve_ids(&rt, 3).unwrap();
    let mine = FarBox::new(&rt, 1u8).unwrap();
    assert!(mine.far_id() >= first + 3, "reserved ids are not reused");
    let words: Vec<u32> = (0..1000).collect();
    rt.backend()
        .put(first, bytemuck::cast_slice(&words))
        .unwrap();
    rt.backend().put(first + 1, &7u64.to_ne_bytes()).unwrap();
    rt.backend().put(first + 2, &[0u8; 12]).unwrap();
    let mut v = adopt_slice::<u32>(&rt, first, 1000).unwrap();
    assert_eq!((v.len(), v.far_id(), v.is_local()), (1000, first, false));
    assert_eq!(v.to_vec().unwrap(), words);
    {
        let s = rt.scope();
        v.write(&s).unwrap()[0] = 42;
    }
    // It behaves as any other far object: eviction writes it back under the same id.
    evacuate_now(&rt);
    assert!(!v.is_local());
    assert_eq!(v.to_vec().unwrap()[0], 42);
    let b = adopt_box::<u64>(&rt, first + 1).unwrap();
    assert_eq!(b.get().unwrap(), 7);
    // A size that does not match the far object: a typed error on fetch, no panic.
    let bad = adopt_slice::<u32>(&rt, first + 2, 4).unwrap();
    assert!(matches!(bad.to_vec(), Err(Error::Backend(_))));
    assert!(matches!(
        adopt_slice::<u64>(&rt, first, usize::MAX / 8),
        Err(Error::ObjectTooLarge { .. })
    ));
    // Dropping frees the far copies.
    let before = rt.backend().stats().unwrap().objects;
    drop((v, b, bad));
    rt.flush_frees().unwrap();
    assert_eq!(rt.backend().stats().unwrap().objects, before - 3);
}

#[test]
fn non_temporal_prefetch_lands_in_regions_evacuated_first() {
    let rt = Runtime::new(small(2 << 20)).unwrap();
    let mk = |n: usize| -> Vec<FarBox<[u8; 4096]>> {
        (0..n)
            .map(|i| FarBox::new(&rt, [i as u8; 4096]).unwrap())
            .collect()
    };
    let (older, stream) = (mk(96), mk(96));
    evacuate_now(&rt);
    // Both batches are fetched and never touched again (neither is hot); the normal one first,
    // so by age alone it would be evicted first.
    assert_eq!(rt.prefetch(&older).unwrap(), 96);
    assert_eq!(rt.prefetch_nt(&stream).unwrap(), 96);
    assert!(stream.iter().chain(&older).all(FarBox::is_local));
    let misses = rt.stats().misses;
    {
        let s = rt.scope();
        for (i, b) in stream.iter().enumerate() {
            assert_eq!(b.read_nt(&s).unwrap()[9], i as u8);
        }
    }
    assert_eq!(rt.stats().misses, misses, "prefetched objects were hits");
    // Pressure: the evacuator empties the non-temporal regions before older ones.
    let mut churn = Vec::new();
    while older.iter().all(FarBox::is_local) && churn.len() < 4096 {
        churn.push(FarBox::new(&rt, [0u8; 4096]).unwrap());
    }
    let stream_local = stream.iter().filter(|b| b.is_local()).count();
    assert_eq!(stream_local, 0, "streamed objects outlived older ones");
}

/// Counts calls into an embedded store.
#[derive(Default)]
struct Counting {
    store: EmbeddedStore,
    puts: AtomicUsize,
    put_manys: AtomicUsize,
}

impl Backend for Counting {
    fn put(&self, id: ObjectId, data: &[u8]) -> Result<(), BackendError> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        self.store.put(id, data)
    }
    fn get(&self, id: ObjectId) -> Result<Vec<u8>, BackendError> {
        self.store.get(id)
    }
    fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>, BackendError> {
        self.store.get_many(ids)
    }
    fn put_many(&self, items: &[(ObjectId, &[u8])]) -> Result<(), BackendError> {
        self.put_manys.fetch_add(1, Ordering::Relaxed);
        self.store.put_many(items)
    }
    fn patch(&self, id: ObjectId, edits: &[Edit<'_>]) -> Result<(), BackendError> {
        self.store.patch(id, edits)
    }
    fn free(&self, ids: &[ObjectId]) -> Result<(), BackendError> {
        self.store.free(ids)
    }
    fn stats(&self) -> Result<StoreStats, BackendError> {
        self.store.stats()
    }
    fn compute(&self, route: ObjectId, op: u16, args: &[u8]) -> Result<Vec<u8>, BackendError> {
        self.store.compute(route, op, args)
    }
    fn describe(&self) -> String {
        "counting".into()
    }
}

#[test]
fn flush_many_writes_dirty_objects_in_one_batch() {
    let backend = Arc::new(Counting::default());
    let rt = Runtime::new(small(4 << 20).custom_backend(backend.clone())).unwrap();
    let mut chunks: Vec<FarSlice<u64>> = (0..32u64)
        .map(|i| FarSlice::from_slice(&rt, &[i; 64]).unwrap())
        .collect();
    assert_eq!(rt.flush_many(&chunks).unwrap(), 32);
    assert_eq!(backend.put_manys.load(Ordering::Relaxed), 1);
    assert_eq!(backend.puts.load(Ordering::Relaxed), 0);
    assert!(chunks.iter().all(FarSlice::is_local), "copies stay local");
    assert_eq!(rt.flush_many(&chunks).unwrap(), 0, "clean now");
    {
        let s = rt.scope();
        for c in chunks.iter_mut().step_by(4) {
            c.write(&s).unwrap()[0] = 99;
        }
    }
    assert_eq!(rt.flush_many(&chunks).unwrap(), 8);
    assert_eq!(backend.put_manys.load(Ordering::Relaxed), 2);
    for (i, c) in chunks.iter().enumerate() {
        let far = rt.backend().get(c.far_id()).unwrap();
        let far: &[u64] = bytemuck::cast_slice(&far);
        let want = if i % 4 == 0 { 99 } else { i as u64 };
        assert_eq!((far[0], far[1]), (want, i as u64));
    }
    // Concurrently with the evacuator and writers of other objects: everything ends up current.
    let others: Vec<FarBox<[u64; 512]>> = (0..2048)
        .map(|i| FarBox::new(&rt, [i; 512]).unwrap())
        .collect();
    rt.flush_many(&others).unwrap();
    for (i, o) in others.iter().enumerate() {
        let far = rt.backend().get(o.far_id()).unwrap();
        assert_eq!(bytemuck::cast_slice::<u8, u64>(&far)[511], i as u64);
    }
}

/// Two runtimes on one backend: their object ids never collide, and each runtime's statistics
/// (agent traffic and streamed bytes included) count only its own work.
#[test]
fn runtimes_sharing_a_backend_keep_ids_and_statistics_apart() {
    use farmem::containers::{FarVec, Offload};
    let store = Arc::new(EmbeddedStore::new());
    let a = Runtime::new(small(2 << 20).custom_backend(store.clone())).unwrap();
    let b = Runtime::new(small(2 << 20).custom_backend(store.clone())).unwrap();
    let xs: Vec<FarBox<u64>> = (0..100).map(|i| FarBox::new(&a, i).unwrap()).collect();
    let ys: Vec<FarBox<u64>> = (0..100)
        .map(|i| FarBox::new(&b, 1000 + i).unwrap())
        .collect();
    let mut ids: Vec<u64> = xs.iter().chain(&ys).map(FarBox::far_id).collect();
    ids.push(reserve_ids(&a, 1).unwrap());
    ids.push(reserve_ids(&b, 1).unwrap());
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 202, "ids collide across runtimes");
    // Both evict into the shared store; each reads back its own values.
    evacuate_now(&a);
    evacuate_now(&b);
    assert!(
        xs.iter()
            .enumerate()
            .all(|(i, x)| x.get().unwrap() == i as u64)
    );
    assert!(
        ys.iter()
            .enumerate()
            .all(|(i, y)| y.get().unwrap() == 1000 + i as u64)
    );

    let v = FarVec::from_slice(&a, &[3u32, 9, 4]).unwrap();
    assert_eq!(v.max(Offload::Remote).unwrap(), Some(9));
    let (sa, sb) = (a.stats(), b.stats());
    assert!(
        sa.agent_bytes_sent > 0 && sa.agent_bytes_received > 0,
        "{sa:?}"
    );
    assert_eq!((sb.agent_bytes_sent, sb.agent_bytes_received), (0, 0));
    let big = FarVec::from_slice(&a, &vec![1u64; (4 << 20) / 8]).unwrap();
    evacuate_now(&a);
    let mut sum = 0;
    big.scan_nt(|c| sum += c.iter().sum::<u64>()).unwrap();
    assert_eq!(sum, (4 << 20) / 8);
    assert!(a.stats().bytes_streamed > 0);
    assert_eq!(b.stats().bytes_streamed, 0);
}
