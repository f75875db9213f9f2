//! Shared reads of detached objects through `FarPtr::read`: walks without claiming, from several
//! threads at once, across eviction; claims wait for the readers.

use farmem::{Error, ErrorKind, FarBox, FarPtr, FarSlice, Pod, Runtime, RuntimeConfig, Zeroable};

fn small_rt(budget: usize) -> Runtime {
    Runtime::new(RuntimeConfig::new(budget).region_size(64 << 10).lanes(2)).unwrap()
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Node {
    value: u64,
    next: FarPtr<Node>,
    pad: [u8; 1008],
}

/// A list of `n` 1 KiB nodes, head first (values n-1 down to 0).
fn list(rt: &Runtime, n: u64) -> FarPtr<Node> {
    let mut head = FarPtr::NULL;
    for i in 0..n {
        let node = Node {
            value: i,
            next: head,
            pad: [i as u8; 1008],
        };
        head = FarBox::new(rt, node).unwrap().into_ptr();
    }
    head
}

/// Walks the list read-only, one scope per node; returns the values seen.
fn walk(rt: &Runtime, head: FarPtr<Node>) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut p = head;
    while !p.is_null() {
        let s = rt.scope();
        let n = p.read(rt, &s).unwrap();
        assert!(
            n.pad.iter().all(|&b| b == n.value as u8),
            "node {}",
            n.value
        );
        seen.push(n.value);
        p = n.next;
    }
    seen
}

#[test]
fn read_only_walks_fetch_evicted_nodes_without_claiming_them() {
    // 5000 x 1 KiB through a 1 MiB budget: most nodes are far when walked.
    let rt = small_rt(1 << 20);
    let head = list(&rt, 5000);
    assert!(rt.stats().objects_evicted > 0);
    let misses = rt.stats().misses;
    let expect: Vec<u64> = (0..5000).rev().collect();
    assert_eq!(walk(&rt, head), expect);
    assert!(rt.stats().misses > misses + 1000, "{:?}", rt.stats());
    // Nothing was claimed: the nodes are still detached and can be walked again, then claimed.
    assert_eq!(walk(&rt, head), expect);
    let first = FarBox::from_ptr(&rt, head).unwrap();
    assert_eq!(first.get().unwrap().value, 4999);
    assert!(rt.local_bytes() <= rt.budget() + rt.slack_bytes());
}

#[test]
fn threads_walk_one_list_at_once() {
    let rt = small_rt(2 << 20);
    let head = list(&rt, 3000);
    let expect: Vec<u64> = (0..3000).rev().collect();
    std::thread::scope(|t| {
        let walkers: Vec<_> = (0..4).map(|_| t.spawn(|| walk(&rt, head))).collect();
        for w in walkers {
            assert_eq!(w.join().unwrap(), expect);
        }
    });
}

#[test]
fn a_claim_waits_for_every_reader() {
    let rt = small_rt(1 << 20);
    let p = FarBox::new(&rt, 41u64).unwrap().into_ptr();
    let s = rt.scope();
    let a = p.read(&rt, &s).unwrap();
    let b = p.read(&rt, &s).unwrap();
    assert_eq!((*a, *b), (41, 41));
    let e = FarBox::from_ptr(&rt, p).unwrap_err();
    assert!(matches!(e, Error::PtrShared(_)), "{e}");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    drop(a);
    assert!(matches!(FarBox::from_ptr(&rt, p), Err(Error::PtrShared(_))));
    drop(b);
    drop(s);
    let mut owned = FarBox::from_ptr(&rt, p).unwrap();
    owned.set(42).unwrap();
    // Claimed by a box: not detached, so no shared read.
    let s = rt.scope();
    assert!(matches!(p.read(&rt, &s), Err(Error::InvalidPtr(_))));
    let p = owned.into_ptr();
    assert_eq!(*p.read(&rt, &s).unwrap(), 42);
    drop(s);
    // Freed: stale.
    drop(FarBox::from_ptr(&rt, p).unwrap());
    let s = rt.scope();
    assert!(matches!(p.read(&rt, &s), Err(Error::InvalidPtr(_))));
    assert!(matches!(
        FarPtr::<u64>::NULL.read(&rt, &s),
        Err(Error::InvalidPtr(_))
    ));
}

#[test]
fn slices_read_through_their_pointer_after_eviction() {
    let rt = small_rt(1 << 20);
    let ptrs: Vec<FarPtr<[u32]>> = (0..64u32)
        .map(|i| {
            let v: Vec<u32> = (0..(i * 256)).map(|x| x ^ i).collect();
            FarSlice::from_slice(&rt, &v).unwrap().into_ptr()
        })
        .collect();
    assert!(rt.stats().objects_evicted > 0);
    for (i, p) in ptrs.iter().enumerate() {
        let i = i as u32;
        let s = rt.scope();
        let v = p.read(&rt, &s).unwrap();
        assert_eq!(v.len(), (i * 256) as usize);
        assert!(
            v.iter().enumerate().all(|(x, &y)| y == x as u32 ^ i),
            "slice {i}"
        );
    }
    let s = rt.scope();
    let one: FarPtr<[u32]> = FarSlice::from_slice(&rt, &[1u32, 2, 3]).unwrap().into_ptr();
    assert_eq!(&*one.read(&rt, &s).unwrap(), &[1, 2, 3]);
    let empty: FarPtr<[u32]> = FarSlice::from_slice(&rt, &[]).unwrap().into_ptr();
    assert!(empty.read(&rt, &s).unwrap().is_empty());
}
