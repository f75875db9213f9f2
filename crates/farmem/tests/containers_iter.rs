//! `FarVec::iter` against a `Vec` model: `next`, `fold` and the adapters built on them agree
//! element for element (across chunk borders, after any number of `next` calls, local or
//! evicted), stop early where asked, and surface a failed fetch once, in place, then end; a
//! `reader()` counts every hit it made.

use std::sync::Arc;

use farmem::backend::FaultyBackend;
use farmem::backend::pool::Fault;
use farmem::containers::{ContainerError, FarVec};
use farmem::test_support::evacuate_now;
use farmem::{EmbeddedStore, Runtime, RuntimeConfig};
use proptest::prelude::*;

fn small_rt() -> Runtime {
    Runtime::new(RuntimeConfig::new(1 << 20).region_size(64 << 10)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// After `skip` calls to `next`, `fold`, `for_each`, `count`, `size_hint` and the rest of a
    /// `for` loop each see exactly the model's remaining elements.
    #[test]
    fn iter_matches_a_vec(
        n in 0usize..12_000,
        chunk_bytes in prop::sample::select(vec![8usize, 96, 4096]),
        skip in 0usize..3_000,
        evict in any::<bool>(),
    ) {
        let rt = small_rt();
        let xs: Vec<u64> = (0..n as u64).map(|i| i.wrapping_mul(0x9E37_79B9) >> 3).collect();
        let mut v = FarVec::with_chunk_bytes(&rt, chunk_bytes).unwrap();
        v.extend_from_slice(&xs).unwrap();
        if evict {
            evacuate_now(&rt);
        }
        let skip = skip.min(n);
        let rest = &xs[skip..];
        let start = || {
            let mut it = v.iter();
            for want in &xs[..skip] {
                assert_eq!(it.next().unwrap().unwrap(), *want);
            }
            it
        };

        let it = start();
        prop_assert_eq!(it.size_hint(), (rest.len(), Some(rest.len())));
        let folded = it.fold(Vec::new(), |mut acc, x| {
            acc.push(x.unwrap());
            acc
        });
        prop_assert_eq!(&folded[..], rest);

        let sum = start().fold(0u64, |a, x| a.wrapping_add(x.unwrap()));
        prop_assert_eq!(sum, rest.iter().fold(0u64, |a, &x| a.wrapping_add(x)));

        let mut each = Vec::new();
        start().for_each(|x| each.push(x.unwrap()));
        prop_assert_eq!(&each[..], rest);

        prop_assert_eq!(start().count(), rest.len());

        let mut looped = Vec::new();
        let mut it = start();
        for x in it.by_ref() {
            looped.push(x.unwrap());
        }
        prop_assert_eq!(&looped[..], rest);
        prop_assert!(it.next().is_none());
        prop_assert_eq!(it.len(), 0);
    }

    /// Early stops: `take`, `position` and `find` stop where the model does, and the iterator
    /// goes on from there.
    #[test]
    fn iter_stops_early_like_a_vec(n in 1usize..9_000, at in 0usize..9_000) {
        let rt = small_rt();
        let xs: Vec<u32> = (0..n as u32).collect();
        let mut v = FarVec::with_chunk_bytes(&rt, 400).unwrap();
        v.extend_from_slice(&xs).unwrap();
        let at = at % n;
        let mut it = v.iter();
        prop_assert_eq!(it.position(|x| x.unwrap() == at as u32), Some(at));
        prop_assert_eq!(it.len(), n - at - 1);
        let taken: Vec<u32> = it.by_ref().take(5).map(Result::unwrap).collect();
        prop_assert_eq!(&taken[..], &xs[at + 1..(at + 6).min(n)]);
        let after = it.fold(Vec::new(), |mut acc, x| {
            acc.push(x.unwrap());
            acc
        });
        prop_assert_eq!(&after[..], &xs[(at + 6).min(n)..]);
        let found = v.iter().find(|x| matches!(x, Ok(y) if *y == at as u32));
        prop_assert_eq!(found.map(Result::unwrap), Some(at as u32));
    }
}

/// A vector evicted to a backend that then fails: `next` yields the local prefix, then the
/// fetch error once, then nothing; `fold` hands the error to the closure as its last item.
#[test]
fn iter_surfaces_a_failed_fetch_once() {
    let store = Arc::new(FaultyBackend::new(Arc::new(EmbeddedStore::new()), "m0"));
    let rt = Runtime::new(
        RuntimeConfig::new(1 << 20)
            .region_size(64 << 10)
            .custom_backend(store.clone()),
    )
    .unwrap();
    let xs: Vec<u64> = (0..40_000).collect();
    let mut v = FarVec::with_chunk_bytes(&rt, 4096).unwrap();
    v.extend_from_slice(&xs).unwrap();
    evacuate_now(&rt);
    store.set(Fault::Down);

    let mut it = v.iter();
    let mut ok = 0;
    let err = loop {
        match it.next() {
            Some(Ok(x)) => {
                assert_eq!(x, xs[ok]);
                ok += 1;
            }
            Some(Err(e)) => break e,
            None => panic!("the iterator ended without the fetch error"),
        }
    };
    assert!(
        !matches!(err, ContainerError::IndexOutOfBounds { .. }),
        "{err:?}"
    );
    assert_eq!(
        ok % v.chunk_len(),
        0,
        "an error comes only at a chunk border"
    );
    assert!(ok < xs.len());
    assert!(it.next().is_none());
    assert!(it.next().is_none());

    let (seen, errors, last_was_err) =
        v.iter()
            .fold((0usize, 0usize, false), |(seen, errors, _), x| match x {
                Ok(_) => (seen + 1, errors, false),
                Err(_) => (seen, errors + 1, true),
            });
    assert_eq!((errors, last_was_err), (1, true));
    assert!(seen < xs.len());

    store.set(Fault::None);
    let all: Vec<u64> = v.iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(all, xs);
}

/// A reader's hits (kept in the cursor, handed to its scope every 4096 hits and on a miss) are
/// all counted once the reader is dropped.
#[test]
fn reader_counts_every_hit() {
    let rt = small_rt();
    let xs: Vec<u64> = (0..50_000).map(|i| i * 3).collect();
    let v = FarVec::from_slice(&rt, &xs[..30_000]).unwrap();
    let before = rt.stats();
    let mut r = v.reader();
    let mut x = 17usize;
    for _ in 0..10_000 {
        x = (x * 1_103_515_245 + 12_345) % 30_000;
        assert_eq!(r.get(x).unwrap(), xs[x]);
    }
    drop(r);
    let after = rt.stats();
    assert_eq!(
        (after.hits - before.hits) + (after.misses - before.misses),
        10_000
    );
}
