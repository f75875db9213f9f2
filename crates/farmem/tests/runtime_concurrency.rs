//! Concurrent mutators while the evacuator thrashes the heap; hot objects survive cold scans;
//! allocation inside scopes under pressure.

use farmem::{FarBox, Runtime, RuntimeConfig};

fn rt(budget: usize) -> Runtime {
    Runtime::new(RuntimeConfig::new(budget).region_size(64 << 10)).unwrap()
}

#[test]
fn threads_write_disjoint_objects_while_heap_thrashes() {
    let rt = rt(2 << 20);
    let threads = 6;
    let per = 400; // 6 x 400 x 4 KiB = 9.4 MiB through 2 MiB
    let mut boxes: Vec<FarBox<[u64; 512]>> = (0..threads * per)
        .map(|_| FarBox::new_zeroed(&rt).unwrap())
        .collect();
    let shared: Vec<FarBox<[u64; 512]>> = (0..64)
        .map(|i| FarBox::new(&rt, [i as u64; 512]).unwrap())
        .collect();
    std::thread::scope(|sc| {
        for (t, part) in boxes.chunks_mut(per).enumerate() {
            let rt = &rt;
            let shared = &shared;
            sc.spawn(move || {
                for round in 1..=5u64 {
                    for (k, b) in part.iter_mut().enumerate() {
                        let s = rt.scope();
                        let v = b.write(&s).unwrap();
                        assert!(v.iter().all(|&w| w == (round - 1) * (t * per + k) as u64));
                        v.fill(round * (t * per + k) as u64);
                        // Readers share these objects with every other thread.
                        let x = shared[k % 64].read(&s).unwrap();
                        assert!(x.iter().all(|&w| w == (k % 64) as u64));
                    }
                }
            });
        }
    });
    for (i, b) in boxes.iter().enumerate() {
        assert!(b.get().unwrap().iter().all(|&w| w == 5 * i as u64));
    }
    let st = rt.stats();
    assert!(st.evacuation_rounds > 0 && st.misses > 0, "{st:?}");
}

#[test]
fn hot_objects_survive_a_cold_scan() {
    // Scaled down from 1 M to 64 Ki cold 4 KiB objects (256 MiB) to keep the test fast.
    let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    let hot: Vec<FarBox<[u64; 512]>> = (0..16)
        .map(|i| FarBox::new(&rt, [i as u64; 512]).unwrap())
        .collect();
    let cold: Vec<FarBox<[u64; 512]>> = (0..65536)
        .map(|i| FarBox::new(&rt, [i as u64; 512]).unwrap())
        .collect();
    let mut misses = [0u32; 16];
    for (i, c) in cold.iter().enumerate() {
        let s = rt.scope();
        assert_eq!(c.read(&s).unwrap()[7], i as u64);
        if i % 64 == 0 {
            for (k, h) in hot.iter().enumerate() {
                if !h.is_local() {
                    misses[k] += 1;
                }
                assert_eq!(h.read(&s).unwrap()[0], k as u64);
            }
        }
    }
    assert!(misses.iter().all(|&m| m <= 5), "hot misses {misses:?}");
    assert!(rt.stats().objects_evicted > 60_000);
}

#[test]
fn allocation_inside_a_scope_under_pressure() {
    let rt = rt(1 << 20);
    let keep = FarBox::new(&rt, 5u64).unwrap();
    // A renewed scope lets the evacuator work: 8x the budget allocated inside it.
    let mut s = rt.scope();
    let mut boxes = Vec::new();
    for i in 0..2048u64 {
        boxes.push(FarBox::new(&rt, [i; 512]).unwrap());
        assert_eq!(*keep.read(&s).unwrap(), 5);
        s.renew();
    }
    drop(s);
    // A scope held throughout pins only what it dereferenced: allocations inside it go on, 8x
    // the budget again, evicting everything else.
    let s = rt.scope();
    let r = keep.read(&s).unwrap();
    for i in 0..2048u64 {
        let b = FarBox::new(&rt, [2048 + i; 512]).unwrap_or_else(|e| panic!("box {i}: {e}"));
        boxes.push(b);
    }
    assert_eq!(*r, 5);
    assert!(rt.local_bytes() <= rt.budget() + rt.slack_bytes());
    drop(s);
    // Out of the scope it works again, and everything is intact.
    boxes.push(FarBox::new(&rt, [7; 512]).unwrap());
    for (i, b) in boxes.iter().take(4096).enumerate() {
        assert_eq!(b.get().unwrap()[511], i as u64);
    }
}

#[test]
fn prefetch_batches_and_non_temporal_access() {
    let rt = rt(1 << 20);
    let boxes: Vec<FarBox<[u8; 4096]>> = (0..1024)
        .map(|i| FarBox::new(&rt, [i as u8; 4096]).unwrap())
        .collect();
    farmem::test_support::evacuate_now(&rt);
    let far: Vec<&FarBox<[u8; 4096]>> = boxes[..64].iter().filter(|b| !b.is_local()).collect();
    assert!(!far.is_empty());
    let n = rt.prefetch(far.iter().copied()).unwrap();
    assert_eq!(n, far.len());
    assert!(far.iter().all(|b| b.is_local()));
    let before = rt.stats().misses;
    let s = rt.scope();
    for (i, b) in boxes[..64].iter().enumerate() {
        assert_eq!(b.read(&s).unwrap()[0], i as u8);
    }
    assert_eq!(rt.stats().misses, before);
    drop(s);
    // Non-temporal reads of everything: the first 64 (hot now) stay local.
    for (i, b) in boxes.iter().enumerate() {
        let s = rt.scope();
        assert_eq!(b.read_nt(&s).unwrap()[1], i as u8);
    }
    let local_hot = boxes[..64].iter().filter(|b| b.is_local()).count();
    assert!(local_hot >= 48, "only {local_hot} of 64 hot objects local");
}

#[test]
fn runtimes_are_independent_and_boxes_are_send() {
    let a = rt(1 << 20);
    let b = rt(1 << 20);
    let x = FarBox::new(&a, 1u64).unwrap();
    let y = FarBox::new(&b, 2u64).unwrap();
    let h = std::thread::spawn(move || x.get().unwrap() + y.get().unwrap());
    assert_eq!(h.join().unwrap(), 3);
}

/// Boxes find their runtime through their slot: across slot chunks, after the `Runtime` handle
/// is gone, and never confused with another runtime's.
#[test]
fn boxes_find_their_runtime_across_chunks_and_outlive_the_handle() {
    let a = rt(16 << 20);
    let b = rt(16 << 20);
    // More objects than one slot chunk holds (64 Ki).
    let n = 70_000u32;
    let mut xs: Vec<FarBox<u32>> = (0..n).map(|i| FarBox::new(&a, i).unwrap()).collect();
    let ys: Vec<FarBox<u32>> = (0..8).map(|i| FarBox::new(&b, 1000 + i).unwrap()).collect();
    // Detach and claim back objects on both sides of the chunk boundary.
    for i in [0usize, 65_535, 65_536, 69_999] {
        let p = std::mem::replace(&mut xs[i], FarBox::new(&a, 0).unwrap()).into_ptr();
        assert!(
            FarBox::<u32>::from_ptr(&b, p).is_err(),
            "claimed through the wrong runtime"
        );
        xs[i] = FarBox::from_ptr(&a, p).unwrap();
    }
    // Only the runtime's own objects are flushed.
    let mixed: Vec<&FarBox<u32>> = xs[65_530..65_540].iter().chain(&ys).collect();
    assert_eq!(b.flush_many(mixed.iter().copied()).unwrap(), ys.len());
    assert_eq!(a.flush_many(mixed.iter().copied()).unwrap(), 10);
    drop(a);
    for (i, x) in xs.iter().enumerate() {
        assert_eq!(x.get().unwrap(), i as u32);
    }
    let s = b.scope();
    assert_eq!(*ys[7].read(&s).unwrap(), 1007);
}
