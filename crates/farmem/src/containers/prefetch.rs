//! Prefetching for the containers: batched read-ahead on a helper thread for scans, and a stride
//! detector for index access patterns.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::{Far, Runtime};

/// How much to fetch per batch and how far a scan may run ahead of its consumer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    /// Objects per `get_many`.
    pub batch: usize,
    /// Objects the prefetcher may be ahead of the consumer.
    pub ahead: usize,
}

impl Window {
    /// A window for objects of `obj_bytes` under `rt`'s budget: batches of up to 2 MiB, at most
    /// a quarter of the budget in flight, so read-ahead does not evict what is about to be used.
    pub(crate) fn for_objects(rt: &Runtime, obj_bytes: usize) -> Self {
        let obj = obj_bytes.max(1);
        let in_flight = (rt.budget() / 4).max(obj);
        let batch = ((2 << 20).min(in_flight / 2) / obj).max(1);
        let ahead = (in_flight / obj).max(batch);
        Self { batch, ahead }
    }
}

/// Calls `f(i)` for every `i` in `0..objs.len()` in order, while a helper thread fetches the
/// objects ahead of `i` in batches (one round trip per batch), at most `window.ahead` objects
/// ahead of the consumer.
///
/// The consumer waits (outside any scope) until the batch holding object `i` has been fetched
/// before calling `f(i)`, so it never dereferences an object the prefetcher is still fetching
/// while holding a scope the evacuator might need to wait for. Prefetch failures are not fatal:
/// the prefetcher stops and `f`'s own access fetches (and reports any error).
pub(crate) fn scan<O: Far + Sync, E>(
    rt: &Runtime,
    objs: &[&O],
    window: Window,
    mut f: impl FnMut(usize) -> Result<(), E>,
) -> Result<(), E> {
    let n = objs.len();
    if n <= window.batch {
        if let Err(e) = rt.prefetch(objs.iter().copied()) {
            tracing::debug!("scan prefetch failed: {e}");
        }
        return (0..n).try_for_each(f);
    }
    // `fetched`: objects before this index have been prefetched (or given up on).
    let fetched = Mutex::new(0usize);
    let fetched_cv = Condvar::new();
    let pos = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut next = 0;
            while next < n && !stop.load(Ordering::Relaxed) {
                if next > pos.load(Ordering::Relaxed) + window.ahead {
                    std::thread::park_timeout(Duration::from_micros(50));
                    continue;
                }
                let end = (next + window.batch).min(n);
                let failed = rt.prefetch(objs[next..end].iter().copied()).is_err();
                next = if failed { n } else { end };
                *fetched.lock() = next;
                fetched_cv.notify_all();
            }
        });
        let r = (0..n).try_for_each(|i| {
            pos.store(i, Ordering::Relaxed);
            let mut g = fetched.lock();
            while *g <= i && !stop.load(Ordering::Relaxed) {
                fetched_cv.wait_for(&mut g, Duration::from_millis(1));
            }
            drop(g);
            f(i)
        });
        stop.store(true, Ordering::Relaxed);
        r
    })
}

/// Detects a constant stride between the chunks touched by successive index accesses.
#[derive(Debug, Default)]
pub(crate) struct StrideDetector {
    last: AtomicI64,
    stride: AtomicI64,
    streak: AtomicU32,
}

impl StrideDetector {
    /// Records an access to chunk `c`; returns the stride (in chunks, non-zero) once the same
    /// stride was seen twice in a row. Accesses within the same chunk are ignored.
    pub(crate) fn observe(&self, c: usize) -> Option<i64> {
        let c = c as i64;
        let last = self.last.swap(c, Ordering::Relaxed);
        let d = c - last;
        if d == 0 {
            return None;
        }
        if self.stride.swap(d, Ordering::Relaxed) == d {
            let s = self.streak.fetch_add(1, Ordering::Relaxed) + 1;
            (s >= 2).then_some(d)
        } else {
            self.streak.store(0, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stride_needs_confirmation() {
        let d = StrideDetector::default();
        let seen: Vec<_> = [0, 3, 6, 9, 12, 13, 14, 15, 15]
            .iter()
            .map(|&c| d.observe(c))
            .collect();
        assert_eq!(
            seen,
            vec![
                None,
                None,
                None,
                Some(3),
                Some(3),
                None,
                None,
                Some(1),
                None
            ]
        );
    }
}
