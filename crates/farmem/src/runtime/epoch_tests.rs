//! What a scope records of its dereferences, and what a miss under it may therefore let go.
use super::*;
use crate::{FarBox, Runtime, RuntimeConfig};

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::new(16 << 20)).unwrap()
}

/// `n` boxes, each read once (so that the next read is a fast-path hit).
fn boxes(rt: &Runtime, n: u64) -> Vec<FarBox<u64>> {
    let b: Vec<FarBox<u64>> = (0..n).map(|i| FarBox::new(rt, i).unwrap()).collect();
    let s = rt.scope();
    for (i, x) in b.iter().enumerate() {
        assert_eq!(*x.read(&s).unwrap(), i as u64);
    }
    b
}

/// The slot addresses of `touched()`, sorted.
fn touched_slots() -> Option<Vec<usize>> {
    touched().map(|t| t.into_iter().map(|(s, _)| s).collect())
}

fn slot_addr(b: &FarBox<u64>) -> usize {
    b.slot_addr()
}

#[test]
fn a_scope_records_every_object_it_dereferences() {
    let rt = runtime();
    let b = boxes(&rt, 300);
    let s = rt.scope();
    assert!(s.unpinnable());
    assert_eq!(touched_slots(), Some(vec![]));
    let sum: u64 = b.iter().map(|x| *x.read(&s).unwrap()).sum();
    assert_eq!(sum, (0..300).sum());
    assert!(!s.unpinnable());
    let mut want: Vec<usize> = b.iter().map(slot_addr).collect();
    want.sort_unstable();
    assert_eq!(touched_slots(), Some(want));
}

#[test]
fn repeats_in_a_row_take_no_record_and_still_count_as_hits() {
    let rt = runtime();
    let b = boxes(&rt, 2);
    let before = rt.stats().hits;
    {
        let s = rt.scope();
        for _ in 0..10_000 {
            assert_eq!(*b[1].read(&s).unwrap(), 1);
        }
        // SAFETY: this thread's log, no other reference to it held.
        assert_eq!(unsafe { s.ts.log() }.entries.len(), 1);
        assert!(s.touched().is_some(), "repeats do not fill the record");
        for _ in 0..10 {
            assert_eq!(*b[0].read(&s).unwrap(), 0);
            assert_eq!(*b[1].read(&s).unwrap(), 1);
        }
        assert_eq!(touched_slots().map(|t| t.len()), Some(2));
    }
    assert_eq!(rt.stats().hits - before, 10_020);
}

#[test]
fn past_the_bound_a_scope_no_longer_knows_what_it_holds() {
    let rt = runtime();
    let b = boxes(&rt, 2);
    let before = rt.stats().hits;
    let mut s = rt.scope();
    let n = RECORDED_HITS + 1;
    for i in 0..n {
        assert_eq!(*b[(i % 2) as usize].read(&s).unwrap(), i % 2);
    }
    assert!(s.touched().is_none());
    assert!(!s.unpinnable());
    // More hits past the bound are counted, not recorded.
    for _ in 0..100 {
        assert_eq!(*b[0].read(&s).unwrap(), 0);
    }
    // Renewal proves no reference is alive: a fresh record.
    s.renew();
    assert!(s.unpinnable());
    assert_eq!(*b[1].read(&s).unwrap(), 1);
    assert_eq!(touched_slots(), Some(vec![slot_addr(&b[1])]));
    drop(s);
    assert_eq!(rt.stats().hits - before, n + 101);
}

#[test]
fn nested_scopes_share_the_thread_record_until_the_last_user_scope_ends() {
    let rt = runtime();
    let b = boxes(&rt, 3);
    let outer = rt.scope();
    assert_eq!(*b[0].read(&outer).unwrap(), 0);
    {
        let inner = rt.scope();
        assert_eq!(*b[1].read(&inner).unwrap(), 1);
        // The outer scope is still used while the inner one is open.
        assert_eq!(*b[2].read(&outer).unwrap(), 2);
        let mut want: Vec<usize> = b.iter().map(slot_addr).collect();
        want.sort_unstable();
        assert_eq!(inner.touched().map(|t| t.len()), Some(3));
        assert_eq!(touched_slots(), Some(want));
    }
    // The inner scope's references are gone, but the record keeps them (conservative).
    assert_eq!(touched_slots().map(|t| t.len()), Some(3));
    drop(outer);
    let s = rt.scope();
    assert!(s.unpinnable(), "a new epoch starts with an empty record");
}

#[test]
fn scopes_dropped_out_of_order_keep_the_record() {
    let rt = runtime();
    let b = boxes(&rt, 2);
    let first = rt.scope();
    let second = rt.scope();
    assert_eq!(*b[0].read(&first).unwrap(), 0);
    assert_eq!(*b[1].read(&second).unwrap(), 1);
    drop(first);
    // `second` still holds its reference: it must stay recorded.
    assert_eq!(touched_slots().map(|t| t.len()), Some(2));
    assert!(!second.unpinnable());
    // Moving a scope changes nothing.
    let moved = Box::new(second);
    assert_eq!(*b[0].read(&moved).unwrap(), 0);
    assert_eq!(touched_slots().map(|t| t.len()), Some(2));
    drop(moved);
    assert_eq!(touched(), None, "outside any scope");
}

#[test]
fn internal_scopes_record_nothing_and_count_their_hits() {
    let rt = runtime();
    let b = boxes(&rt, 3);
    let before = rt.stats().hits;
    {
        let c = Scope::internal(&rt.inner.counters);
        for x in &b {
            x.read(&c).unwrap();
        }
        c.count_hits_internal(5);
        assert!(c.unpinnable());
        let u = rt.scope();
        assert!(
            c.unpinnable(),
            "a user scope that dereferenced nothing pins nothing"
        );
        assert_eq!(*b[0].read(&u).unwrap(), 0);
        assert!(!c.unpinnable());
        drop(u);
        assert!(c.unpinnable(), "no user scope left");
    }
    assert_eq!(rt.stats().hits - before, 3 + 5 + 1);
}
