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

/// `n` small objects, each a different value.
fn small_boxes(rt: &Runtime, n: u64) -> Vec<FarBox<[u64; 4]>> {
    (0..n)
        .map(|i| FarBox::new(rt, [i, i + 1, i + 2, 1000 + i]).unwrap())
        .collect()
}

/// A scope that dereferenced a hundred objects (and still holds references to all of them) pins
/// just those: each large miss after them evicts slices the scope never touched, and the hundred
/// references still read their values.
#[test]
fn a_scope_that_dereferenced_a_hundred_objects_still_makes_room() {
    let rt = Runtime::new(RuntimeConfig::new(64 << 20)).unwrap();
    let small = small_boxes(&rt, 100);
    let slices = eight_large_slices(&rt);
    for round in 0..2 {
        for (i, sl) in slices.iter().enumerate() {
            let s = rt.scope();
            let held: Vec<&[u64; 4]> = small.iter().map(|b| b.read(&s).unwrap()).collect();
            let v = sl
                .read(&s)
                .unwrap_or_else(|e| panic!("round {round}, slice {i}: {e}"));
            assert!(v.iter().step_by(4093).all(|&x| x == i as u64));
            for (j, h) in held.iter().enumerate() {
                let j = j as u64;
                assert_eq!(
                    **h,
                    [j, j + 1, j + 2, 1000 + j],
                    "object {j} after slice {i}"
                );
            }
        }
    }
    assert!(rt.local_bytes() <= rt.budget() + rt.slack_bytes());
}

/// Nested scopes: what the outer and the inner scope dereferenced stays pinned and valid while
/// misses under either make room, and the slices neither holds are evicted.
#[test]
fn nested_scopes_pin_what_both_dereferenced_and_nothing_else() {
    let rt = Runtime::new(RuntimeConfig::new(64 << 20)).unwrap();
    let mut small = small_boxes(&rt, 100);
    let slices = eight_large_slices(&rt);
    let (front, back) = small.split_at_mut(50);
    for i in 0..slices.len() {
        let outer = rt.scope();
        let a: Vec<&[u64; 4]> = front.iter().map(|b| b.read(&outer).unwrap()).collect();
        let inner = rt.scope();
        let mut b: Vec<&mut [u64; 4]> = back.iter_mut().map(|b| b.write(&inner).unwrap()).collect();
        for x in &mut b {
            x[2] += 1;
        }
        // A miss under the inner scope, then one under the outer scope while both are open.
        let v = slices[i]
            .read(&inner)
            .unwrap_or_else(|e| panic!("inner, slice {i}: {e}"));
        let j = (i + 4) % slices.len();
        let w = slices[j]
            .read(&outer)
            .unwrap_or_else(|e| panic!("outer, slice {j}: {e}"));
        assert_eq!((v[0], v[SLICE - 1]), (i as u64, i as u64));
        assert_eq!((w[1], w[SLICE - 2]), (j as u64, j as u64));
        for (k, x) in a.iter().enumerate() {
            let k = k as u64;
            assert_eq!(**x, [k, k + 1, k + 2, 1000 + k]);
        }
        for (k, x) in b.iter().enumerate() {
            let k = 50 + k as u64;
            assert_eq!(**x, [k, k + 1, k + 2 + 1 + i as u64, 1000 + k]);
        }
    }
    // The writes held across the misses landed.
    drop(slices);
    for (k, x) in small.iter().enumerate().skip(50) {
        let k = k as u64;
        assert_eq!(x.get().unwrap(), [k, k + 1, k + 2 + 8, 1000 + k]);
    }
}

/// Scopes that between them hold more than the budget still fail cleanly: the miss that cannot
/// fit beside what they pinned gets `LocalHeapExhausted { pinned: true }` (it does not wait for
/// room that cannot come), and every reference they hold still reads its value.
#[test]
fn scopes_pinning_more_than_the_budget_get_local_heap_exhausted() {
    let rt =
        Runtime::new(RuntimeConfig::new(64 << 20).alloc_timeout(std::time::Duration::from_secs(5)))
            .unwrap();
    let small = small_boxes(&rt, 100);
    let slices = eight_large_slices(&rt);
    let outer = rt.scope();
    let held_small: Vec<&[u64; 4]> = small.iter().map(|b| b.read(&outer).unwrap()).collect();
    let inner = rt.scope();
    let mut held = Vec::new();
    let mut failed = None;
    for (i, sl) in slices.iter().enumerate() {
        match sl.read(if i % 2 == 0 { &outer } else { &inner }) {
            Ok(v) => held.push((i, v)),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(failed, Some(Error::LocalHeapExhausted { pinned: true, .. })),
        "{failed:?} after {} slices",
        held.len()
    );
    assert!(held.len() >= 2, "only {} slices fit", held.len());
    for (i, v) in &held {
        assert!(v.iter().step_by(65_521).all(|&x| x == *i as u64));
    }
    for (k, x) in held_small.iter().enumerate() {
        let k = k as u64;
        assert_eq!(**x, [k, k + 1, k + 2, 1000 + k]);
    }
    drop(inner);
}

/// A cursor (a vector's reader) reading more than the budget inside a user scope that holds a
/// reference: its misses pin only what the user scope dereferenced and evict the rest.
#[test]
fn a_cursor_inside_a_scope_that_holds_a_reference_reads_past_the_budget() {
    let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    let header = FarBox::new(&rt, [9u64; 4]).unwrap();
    let n = 8 << 20; // u64s: 64 MiB, four times the budget
    let values: Vec<u64> = (0..n as u64).collect();
    let v = farmem::containers::FarVec::from_slice(&rt, &values).unwrap();
    drop(values);
    let s = rt.scope();
    let h = header.read(&s).unwrap();
    let mut r = v.reader();
    for round in 0..2 {
        let mut sum = 0u64;
        for i in (0..n).step_by(511) {
            sum += r
                .get(i)
                .unwrap_or_else(|e| panic!("round {round}, element {i}: {e}"));
        }
        assert_eq!(sum, (0..n as u64).step_by(511).sum::<u64>());
    }
    assert_eq!(*h, [9; 4]);
}
