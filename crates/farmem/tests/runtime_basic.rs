//! Basic far-pointer behaviour: values survive eviction, nested scopes, linked lists, sizes.

use farmem::{Error, FarBox, FarPtr, FarSlice, Pod, Runtime, RuntimeConfig, Zeroable};

fn small_rt(budget: usize) -> Runtime {
    Runtime::new(RuntimeConfig::new(budget).region_size(64 << 10).lanes(2)).unwrap()
}

#[test]
fn values_survive_eviction() {
    let rt = small_rt(1 << 20);
    let n = 2000usize; // 2000 x 4 KiB = 8 MiB through a 1 MiB budget
    let mut boxes = Vec::new();
    for i in 0..n {
        boxes.push(FarBox::new(&rt, [i as u8; 4096]).unwrap());
    }
    assert!(rt.local_bytes() <= rt.budget() + rt.slack_bytes());
    for (i, b) in boxes.iter().enumerate() {
        let s = rt.scope();
        let v = b.read(&s).unwrap();
        assert!(v.iter().all(|&x| x == i as u8), "object {i}");
    }
    let st = rt.stats();
    assert!(st.misses > 0 && st.objects_evicted > 0, "{st:?}");
    assert!(st.bytes_written_back >= (n as u64 - 300) * 4096, "{st:?}");
}

#[test]
fn nested_scopes_and_renew() {
    let rt = small_rt(1 << 20);
    let mut a = FarBox::new(&rt, 1u64).unwrap();
    let b = FarBox::new(&rt, 2u64).unwrap();
    let outer = rt.scope();
    let ra = *a.read(&outer).unwrap();
    {
        let inner = rt.scope();
        assert!(!inner.is_outermost());
        assert_eq!(*b.read(&inner).unwrap() + ra, 3);
    }
    drop(outer);
    let mut s = rt.scope();
    for i in 0..10 {
        *a.write(&s).unwrap() += i;
        s.renew();
    }
    assert_eq!(*a.read(&s).unwrap(), 46);
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Node {
    value: u64,
    next: FarPtr<Node>,
    pad: [u8; 1008],
}

#[test]
fn linked_list_survives_eviction() {
    let rt = small_rt(1 << 20);
    let mut head: FarPtr<Node> = FarPtr::NULL;
    for i in 0..5000u64 {
        let node = FarBox::new(
            &rt,
            Node {
                value: i,
                next: head,
                pad: [i as u8; 1008],
            },
        )
        .unwrap();
        head = node.into_ptr();
    }
    assert!(rt.stats().objects_evicted > 0);
    let mut p = head;
    let mut expect = 5000u64;
    while !p.is_null() {
        let node = FarBox::from_ptr(&rt, p).unwrap();
        expect -= 1;
        let s = rt.scope();
        let n = node.read(&s).unwrap();
        assert_eq!(n.value, expect);
        assert!(n.pad.iter().all(|&b| b == expect as u8));
        p = n.next;
        drop(s);
        drop(node); // frees the node
    }
    assert_eq!(expect, 0);
    // Freed: a stale pointer is rejected.
    assert!(matches!(
        FarBox::from_ptr(&rt, head),
        Err(Error::InvalidPtr(_))
    ));
}

#[test]
fn slices_of_many_sizes() {
    let rt = small_rt(64 << 20);
    for len in [0usize, 1, 7, 100, 4096, 1 << 16, 1 << 20, 2 << 20] {
        let data: Vec<u64> = (0..len as u64).collect();
        let mut v = FarSlice::from_slice(&rt, &data).unwrap();
        v.flush().unwrap();
        v.invalidate_local().unwrap();
        assert!(!v.is_local() || len == 0);
        assert_eq!(v.to_vec().unwrap(), data);
        let s = rt.scope();
        if len > 0 {
            v.write(&s).unwrap()[len - 1] = 7;
            assert_eq!(v.read(&s).unwrap()[len - 1], 7);
        }
    }
    let big = FarSlice::<u8>::new_zeroed(&rt, 16 << 20).unwrap();
    assert!(big.to_vec().unwrap().iter().all(|&b| b == 0));
}

#[test]
fn bad_config_is_a_typed_error() {
    assert!(matches!(
        Runtime::new(RuntimeConfig::new(1000)),
        Err(Error::BudgetTooSmall { .. })
    ));
}
