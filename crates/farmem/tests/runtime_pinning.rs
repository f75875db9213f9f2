//! What a scope pins: only what was dereferenced under it. A fresh scope does not hold up the
//! eviction of objects it has not touched, so misses under it can make room.

use farmem::{Error, FarBox, FarSlice, Runtime, RuntimeConfig};

const SLICE: usize = 2 << 20; // u64s: 16 MiB

/// Evicts what is evictable until `gone` holds. The background evacuator may hold a large object
/// it popped (and will requeue) while a forced round runs, so one round can miss it: try again
/// for up to five seconds before giving up.
fn evacuate_until(rt: &Runtime, gone: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        farmem::test_support::evacuate_now(rt);
        if gone() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

fn eight_large_slices(rt: &Runtime) -> Vec<FarSlice<u64>> {
    (0..8u64)
        .map(|i| FarSlice::from_slice(rt, &vec![i; SLICE]).unwrap())
        .collect()
}

/// Eight 16 MiB slices under a 64 MiB budget, each read in a fresh scope, without prefetching:
/// the fourth (and every later) read must evict an earlier slice while its scope is open.
#[test]
fn large_slices_read_one_fresh_scope_at_a_time() {
    let rt = Runtime::new(RuntimeConfig::new(64 << 20)).unwrap();
    let slices = eight_large_slices(&rt);
    for round in 0..2 {
        for (i, sl) in slices.iter().enumerate() {
            let s = rt.scope();
            let v = sl
                .read(&s)
                .unwrap_or_else(|e| panic!("round {round}, slice {i}: {e}"));
            assert_eq!(v.len(), SLICE);
            assert!(v.iter().step_by(4093).all(|&x| x == i as u64));
            assert_eq!(v[SLICE - 1], i as u64);
        }
    }
    assert!(rt.local_bytes() <= rt.budget() + rt.slack_bytes());
}

/// The same through `FarSlice::pin` (which fetches before it pins) and a writable pin.
#[test]
fn large_slices_pinned_one_at_a_time() {
    let rt = Runtime::new(RuntimeConfig::new(64 << 20)).unwrap();
    let mut slices = eight_large_slices(&rt);
    for (i, sl) in slices.iter_mut().enumerate() {
        let mut p = sl.pin_mut().unwrap();
        p[7] = 100 + i as u64;
    }
    for (i, sl) in slices.iter().enumerate() {
        let p = sl.pin().unwrap();
        assert_eq!(
            (p[6], p[7], p[SLICE - 1]),
            (i as u64, 100 + i as u64, i as u64)
        );
    }
}

/// A scope that holds a reference still pins what it dereferenced: a miss that needs that
/// memory fails cleanly (`LocalHeapExhausted { pinned: true }`) instead of evicting it.
#[test]
fn a_scope_holding_references_still_pins_them() {
    let rt =
        Runtime::new(RuntimeConfig::new(64 << 20).alloc_timeout(std::time::Duration::from_secs(5)))
            .unwrap();
    let slices = eight_large_slices(&rt);
    let s = rt.scope();
    let mut held = Vec::new();
    let mut failed = None;
    for (i, sl) in slices.iter().enumerate() {
        match sl.read(&s) {
            Ok(v) => held.push((i, v)),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    // Every reference handed out is still valid.
    for (i, v) in &held {
        assert!(v.iter().step_by(65_521).all(|&x| x == *i as u64));
    }
    assert!(
        matches!(failed, Some(Error::LocalHeapExhausted { pinned: true, .. })),
        "{failed:?} after {} slices",
        held.len()
    );
}

/// A scope that dereferenced a small object first pins just that: the large misses after it
/// still evict the slices it never touched.
#[test]
fn a_scope_pins_only_what_it_dereferenced() {
    let rt = Runtime::new(RuntimeConfig::new(64 << 20)).unwrap();
    let header = FarBox::new(&rt, [7u64; 4]).unwrap();
    let slices = eight_large_slices(&rt);
    for round in 0..2 {
        for (i, sl) in slices.iter().enumerate() {
            let s = rt.scope();
            let h = header.read(&s).unwrap();
            let v = sl
                .read(&s)
                .unwrap_or_else(|e| panic!("round {round}, slice {i}: {e}"));
            assert!(v.iter().step_by(4093).all(|&x| x == i as u64));
            assert_eq!((v[SLICE - 1], h[3]), (i as u64, 7));
        }
    }
    // The same with one long scope renewed between slices.
    let mut s = rt.scope();
    for (i, sl) in slices.iter().enumerate().rev() {
        let h = header.read(&s).unwrap();
        let v = sl.read(&s).unwrap_or_else(|e| panic!("slice {i}: {e}"));
        assert_eq!((v[0], v[SLICE - 1], h[0]), (i as u64, i as u64, 7));
        s.renew();
    }
}

/// A write through a reference that a miss under the same scope had to pin lands in the object:
/// the pinned copy was neither evicted nor moved while the miss made room.
#[test]
fn a_write_held_across_a_miss_is_kept() {
    let rt = Runtime::new(RuntimeConfig::new(64 << 20)).unwrap();
    let mut counter = FarBox::new(&rt, 0u64).unwrap();
    let slices = eight_large_slices(&rt);
    let mut expect = 0;
    for (i, sl) in slices.iter().enumerate() {
        let s = rt.scope();
        let c = counter.write(&s).unwrap();
        *c += 1;
        let v = sl.read(&s).unwrap_or_else(|e| panic!("slice {i}: {e}"));
        *c += v[SLICE / 2] * 10;
        expect += 1 + i as u64 * 10;
    }
    assert!(evacuate_until(&rt, || !counter.is_local()));
    assert_eq!(counter.get().unwrap(), expect);
}

/// A `FarSlice::pin` guard holds its slice with a pin, not a scope: reads of other slices, in
/// fresh scopes or through more guards, still evict everything else while it lives.
#[test]
fn a_pin_guard_holds_only_its_slice() {
    let rt = Runtime::new(RuntimeConfig::new(64 << 20)).unwrap();
    let slices = eight_large_slices(&rt);
    let first = slices[0].pin().unwrap();
    for (i, sl) in slices.iter().enumerate().skip(1) {
        let s = rt.scope();
        let v = sl.read(&s).unwrap_or_else(|e| panic!("slice {i}: {e}"));
        assert_eq!((v[0], v[SLICE - 1]), (i as u64, i as u64));
        drop(s);
        let p = sl.pin().unwrap_or_else(|e| panic!("pin of slice {i}: {e}"));
        assert_eq!(p[SLICE / 3], i as u64);
    }
    assert!(first.iter().step_by(4093).all(|&x| x == 0));
    drop(first);
    assert!(evacuate_until(&rt, || !slices[0].is_local()));
}
