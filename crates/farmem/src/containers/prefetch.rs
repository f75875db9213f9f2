//! Prefetching for the containers: batched read-ahead on a helper thread for scans, and a stride
//! detector for index access patterns.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use bytemuck::Pod;
use parking_lot::{Condvar, Mutex};

use crate::{Far, FarSlice, Runtime};

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
        // Stops the read-ahead threads however the consumer ends (a panic in `f` included),
        // so the scope can join them.
        let _stop = StopOnDrop {
            stop: &stop,
            cv: None,
        };
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

/// Sets `stop` (and wakes the waiters on `cv`) when dropped.
struct StopOnDrop<'a> {
    stop: &'a AtomicBool,
    cv: Option<&'a Condvar>,
}

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(cv) = self.cv {
            cv.notify_all();
        }
    }
}

/// Threads fetching batches for [`stream`]: each keeps one batch request in flight, so the
/// connection always has the next batch on the wire while the consumer works on the last one.
const STREAMERS: usize = 3;

/// The far copies of one batch's chunks, by position in the batch (`None`: the chunk was local
/// when the batch was fetched), or `None` as a whole when the fetch failed.
type Fetched = Option<Vec<Option<Vec<u8>>>>;

/// The consumer of a [`stream`]: chunk index and, when streamed, the chunk's far copy.
type Consumer<'f, E> = dyn FnMut(usize, Option<&[u8]>) -> Result<(), E> + 'f;

/// Shared state of a [`stream`]: fetched batches waiting for the consumer.
struct Stream {
    ready: Vec<Option<Fetched>>,
    /// Batches the consumer has finished with.
    consumed: usize,
}

/// Streams `chunks` through `f` in order without caching them: the chunks that are not local
/// are fetched straight from the backend in batches (one `get_many` each, [`STREAMERS`] batches
/// in flight) and handed to `f` as `Some(bytes)`, the far copy; chunks that are local are handed
/// over as `None` (the caller reads them under a scope). Read-ahead stays within
/// `window.ahead` chunks of the consumer, so at most that many chunks' bytes are buffered.
///
/// This is sound for a shared borrow of the chunks: a chunk that is not local has its current
/// contents in the backend (the evacuator clears the local copy only after the write-back), and
/// nobody can change it while the caller holds `&FarSlice`. A failed batch fetch is not fatal:
/// its chunks are handed over as `None`, so the caller's own access fetches and reports.
pub(crate) fn stream<T: Pod + Send + Sync, E>(
    rt: &Runtime,
    chunks: &[FarSlice<T>],
    window: Window,
    mut f: impl FnMut(usize, Option<&[u8]>) -> Result<(), E>,
) -> Result<(), E> {
    let n = chunks.len();
    let fetch = |range: std::ops::Range<usize>| -> Fetched {
        let far: Vec<usize> = range.clone().filter(|&c| !chunks[c].is_local()).collect();
        let mut out: Vec<Option<Vec<u8>>> = vec![None; range.len()];
        if far.is_empty() {
            return Some(out);
        }
        let ids: Vec<u64> = far.iter().map(|&c| chunks[c].far_id()).collect();
        match rt.backend().get_many(&ids) {
            Ok(data) if data.len() == far.len() => {
                let bytes: usize = data.iter().map(Vec::len).sum();
                rt.count_streamed(bytes);
                for (c, d) in far.into_iter().zip(data) {
                    out[c - range.start] = Some(d);
                }
                Some(out)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!("streaming fetch failed: {e}");
                None
            }
        }
    };
    let consume = |f: &mut Consumer<'_, E>, start: usize, got: Fetched| -> Result<(), E> {
        let mut got = got.unwrap_or_default();
        for k in 0..window.batch.min(n - start) {
            let far = got.get_mut(k).and_then(Option::take);
            f(start + k, far.as_deref())?;
        }
        Ok(())
    };
    if n <= window.batch {
        return consume(&mut f, 0, fetch(0..n));
    }
    let batches = n.div_ceil(window.batch);
    let ahead = (window.ahead / window.batch).max(STREAMERS);
    let state = Mutex::new(Stream {
        ready: (0..batches).map(|_| None).collect(),
        consumed: 0,
    });
    let fetched_cv = Condvar::new();
    let consumed_cv = Condvar::new();
    let next_batch = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..STREAMERS {
            s.spawn(|| {
                loop {
                    let b = next_batch.fetch_add(1, Ordering::Relaxed);
                    if b >= batches {
                        break;
                    }
                    {
                        let mut st = state.lock();
                        while b >= st.consumed + ahead && !stop.load(Ordering::Relaxed) {
                            consumed_cv.wait_for(&mut st, Duration::from_millis(1));
                        }
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let start = b * window.batch;
                    let got = fetch(start..(start + window.batch).min(n));
                    state.lock().ready[b] = Some(got);
                    fetched_cv.notify_all();
                }
            });
        }
        // Stops the streamers however the consumer ends (a panic in `f` included), so the
        // scope can join them.
        let _stop = StopOnDrop {
            stop: &stop,
            cv: Some(&consumed_cv),
        };
        let r = (0..batches).try_for_each(|b| {
            let got = {
                let mut st = state.lock();
                loop {
                    if let Some(g) = st.ready[b].take() {
                        break g;
                    }
                    fetched_cv.wait_for(&mut st, Duration::from_millis(1));
                }
            };
            let r = consume(&mut f, b * window.batch, got);
            state.lock().consumed = b + 1;
            consumed_cv.notify_all();
            r
        });
        stop.store(true, Ordering::Relaxed);
        consumed_cv.notify_all();
        r
    })
}

/// Detects a constant stride between the chunks touched by successive index accesses.
///
/// A heuristic shared by concurrent readers: plain loads and stores, no read-modify-write (a
/// lost update only delays or skips a prefetch). Accesses call [`StrideDetector::touch`] (one
/// load and a compare within the last chunk), and only accesses that miss call
/// [`StrideDetector::confirm`].
#[derive(Debug, Default)]
pub(crate) struct StrideDetector {
    last: AtomicI64,
    stride: AtomicI64,
    streak: AtomicU32,
}

impl StrideDetector {
    /// Records an access to chunk `c`; returns the chunk accessed before (when it was another).
    #[inline(always)]
    pub(crate) fn touch(&self, c: usize) -> Option<usize> {
        let last = self.last.load(Ordering::Relaxed);
        if last == c as i64 {
            return None;
        }
        self.last.store(c as i64, Ordering::Relaxed);
        Some(last as usize)
    }

    /// Records a miss in chunk `c`, entered from chunk `prev`; returns the stride (in chunks,
    /// non-zero) once the same move was seen on the way to three misses in a row.
    pub(crate) fn confirm(&self, c: usize, prev: usize) -> Option<i64> {
        let d = c as i64 - prev as i64;
        if d == 0 {
            return None;
        }
        if self.stride.swap(d, Ordering::Relaxed) == d {
            let s = self.streak.load(Ordering::Relaxed) + 1;
            self.streak.store(s, Ordering::Relaxed);
            (s >= 2).then_some(d)
        } else {
            self.streak.store(0, Ordering::Relaxed);
            None
        }
    }

    /// Records an access to chunk `c` that missed: [`StrideDetector::touch`] then
    /// [`StrideDetector::confirm`].
    #[cfg(test)]
    pub(crate) fn observe(&self, c: usize) -> Option<i64> {
        let prev = self.touch(c)?;
        self.confirm(c, prev)
    }
}

/// [`StrideDetector`] for one cursor (no sharing, no atomics): it is told the chunk each miss
/// was entered from.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CursorStride {
    stride: i64,
    streak: u32,
}

impl CursorStride {
    /// Records a miss in chunk `c` entered from chunk `prev`; returns the stride once the same
    /// move was seen on the way to three misses in a row.
    pub(crate) fn observe(&mut self, c: usize, prev: usize) -> Option<i64> {
        let d = c as i64 - prev as i64;
        if d != 0 && d == self.stride {
            self.streak += 1;
            (self.streak >= 2).then_some(d)
        } else {
            self.stride = d;
            self.streak = 0;
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
        let mut d = CursorStride::default();
        let seen: Vec<_> = [
            (3, 0),
            (6, 3),
            (9, 6),
            (12, 9),
            (13, 12),
            (14, 13),
            (15, 14),
        ]
        .iter()
        .map(|&(c, prev)| d.observe(c, prev))
        .collect();
        assert_eq!(
            seen,
            vec![None, None, Some(3), Some(3), None, None, Some(1)]
        );
    }
}
