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

/// Batches a scan keeps in flight at once. One synchronous batch at a time leaves the connection
/// idle for a round trip (and the copy-in) between batches; two overlap them, which is what the
/// transport needs to reach its bulk bandwidth.
const PIPELINE: usize = 2;

/// Prefetch progress shared by a scan's consumer and its prefetchers.
struct Progress {
    /// Objects before this index have been prefetched (or given up on).
    fetched: usize,
    /// Which batches have completed (they may complete out of order).
    done: Vec<bool>,
    /// Batches before this index have all completed.
    done_prefix: usize,
}

/// Calls `f(i)` for every `i` in `0..objs.len()` in order, while [`PIPELINE`] helper threads fetch
/// the objects ahead of `i` in batches (one round trip per batch, several batches in flight), at
/// most `window.ahead` objects ahead of the consumer.
///
/// The consumer waits (outside any scope) until the batch holding object `i` has been fetched
/// before calling `f(i)`, so it never dereferences an object a prefetcher is still fetching
/// while holding a scope the evacuator might need to wait for. Prefetch failures are not fatal:
/// the prefetchers stop and `f`'s own access fetches (and reports any error).
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
    let batches = n.div_ceil(window.batch);
    let progress = Mutex::new(Progress {
        fetched: 0,
        done: vec![false; batches],
        done_prefix: 0,
    });
    let fetched_cv = Condvar::new();
    let next_batch = AtomicUsize::new(0);
    let pos = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..PIPELINE {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let b = next_batch.fetch_add(1, Ordering::Relaxed);
                    if b >= batches {
                        break;
                    }
                    let start = b * window.batch;
                    let end = (start + window.batch).min(n);
                    while start > pos.load(Ordering::Relaxed) + window.ahead
                        && !stop.load(Ordering::Relaxed)
                    {
                        std::thread::park_timeout(Duration::from_micros(50));
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let ok = match rt.prefetch(objs[start..end].iter().copied()) {
                        Ok(_) => true,
                        Err(e) => {
                            tracing::debug!("scan prefetch failed: {e}");
                            false
                        }
                    };
                    let mut p = progress.lock();
                    if ok {
                        p.done[b] = true;
                        while p.done_prefix < batches && p.done[p.done_prefix] {
                            p.done_prefix += 1;
                        }
                        p.fetched = p.fetched.max((p.done_prefix * window.batch).min(n));
                    } else {
                        // Give up on read-ahead: the consumer fetches (and reports) on its own.
                        p.fetched = n;
                        stop.store(true, Ordering::Relaxed);
                    }
                    drop(p);
                    fetched_cv.notify_all();
                }
            });
        }
        let r = (0..n).try_for_each(|i| {
            pos.store(i, Ordering::Relaxed);
            let mut p = progress.lock();
            while p.fetched <= i && !stop.load(Ordering::Relaxed) {
                fetched_cv.wait_for(&mut p, Duration::from_millis(1));
            }
            drop(p);
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
