//! Sorting and searching a [`FarVec`]: an external merge sort over chunks.
//!
//! Pass 1 sorts groups of chunks that fit in a quarter of the local budget (copied into a local
//! buffer, sorted stably, written back) into runs. Merge passes then merge up to `fan_in` runs at a
//! time, each run read one chunk at a time, until one run is left. Ties keep their original order
//! (the merge prefers the earlier run), so the sort is stable.

use std::cmp::Ordering;
use std::collections::VecDeque;

use bytemuck::Pod;

use super::error::Result;
use super::vec::FarVec;
use crate::{FarSlice, Runtime};

/// A sorted run: chunks (all full but the last) and its length.
struct Run<T: Pod> {
    chunks: VecDeque<FarSlice<T>>,
    len: usize,
}

/// Reads a run one chunk at a time.
struct Cursor<T: Pod> {
    run: Run<T>,
    buf: Vec<T>,
    pos: usize,
    left: usize,
}

impl<T: Pod + Send + Sync> Cursor<T> {
    fn new(run: Run<T>) -> Self {
        let left = run.len;
        Self {
            run,
            buf: Vec::new(),
            pos: 0,
            left,
        }
    }

    /// Makes `head` valid; false when the run is exhausted.
    fn fill(&mut self, rt: &Runtime, chunk_len: usize) -> Result<bool> {
        if self.pos < self.buf.len() {
            return Ok(true);
        }
        let Some(c) = self.run.chunks.pop_front() else {
            return Ok(false);
        };
        let _ = rt.prefetch(self.run.chunks.iter().take(2));
        let n = self.left.min(chunk_len);
        let s = rt.scope();
        self.buf.clear();
        self.buf.extend_from_slice(&c.read_nt(&s)?[..n]);
        self.left -= n;
        self.pos = 0;
        Ok(n > 0)
    }

    fn head(&self) -> &T {
        &self.buf[self.pos]
    }
}

/// Appends elements to a new run, a chunk at a time.
struct RunWriter<'rt, T: Pod> {
    rt: &'rt Runtime,
    chunk_len: usize,
    buf: Vec<T>,
    run: Run<T>,
}

impl<'rt, T: Pod + Send + Sync> RunWriter<'rt, T> {
    fn new(rt: &'rt Runtime, chunk_len: usize) -> Self {
        Self {
            rt,
            chunk_len,
            buf: Vec::with_capacity(chunk_len),
            run: Run {
                chunks: VecDeque::new(),
                len: 0,
            },
        }
    }

    fn push(&mut self, x: T) -> Result<()> {
        self.buf.push(x);
        if self.buf.len() == self.chunk_len {
            self.seal()?;
        }
        Ok(())
    }

    fn seal(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut c = FarSlice::new_zeroed(self.rt, self.chunk_len)?;
        {
            let s = self.rt.scope();
            c.write_nt(&s)?[..self.buf.len()].copy_from_slice(&self.buf);
        }
        self.run.len += self.buf.len();
        self.run.chunks.push_back(c);
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<Run<T>> {
        self.seal()?;
        Ok(self.run)
    }
}

/// "Is the head of cursor `a` before the head of cursor `b`?"
type Less<'a, T> = dyn FnMut(usize, usize, &[Cursor<T>]) -> bool + 'a;

/// Merges `runs` stably with `cmp`.
fn merge<T: Pod + Send + Sync>(
    rt: &Runtime,
    chunk_len: usize,
    runs: Vec<Run<T>>,
    cmp: &mut impl FnMut(&T, &T) -> Ordering,
) -> Result<Run<T>> {
    let mut cur: Vec<Cursor<T>> = runs.into_iter().map(Cursor::new).collect();
    // A binary min-heap of cursor indices; ties go to the lower index (the earlier run).
    let mut heap: Vec<usize> = Vec::with_capacity(cur.len());
    for (i, c) in cur.iter_mut().enumerate() {
        if c.fill(rt, chunk_len)? {
            heap.push(i);
        }
    }
    let mut less = |a: usize, b: usize, cur: &[Cursor<T>]| {
        cmp(cur[a].head(), cur[b].head()).then(a.cmp(&b)) == Ordering::Less
    };
    let sift_down =
        |heap: &mut Vec<usize>, mut i: usize, cur: &[Cursor<T>], less: &mut Less<'_, T>| {
            loop {
                let (l, r) = (2 * i + 1, 2 * i + 2);
                let mut m = i;
                if l < heap.len() && less(heap[l], heap[m], cur) {
                    m = l;
                }
                if r < heap.len() && less(heap[r], heap[m], cur) {
                    m = r;
                }
                if m == i {
                    break;
                }
                heap.swap(i, m);
                i = m;
            }
        };
    for i in (0..heap.len() / 2).rev() {
        sift_down(&mut heap, i, &cur, &mut less);
    }
    let mut out = RunWriter::new(rt, chunk_len);
    while let Some(&top) = heap.first() {
        out.push(*cur[top].head())?;
        cur[top].pos += 1;
        if !cur[top].fill(rt, chunk_len)? {
            let last = heap.len() - 1;
            heap.swap(0, last);
            heap.pop();
        }
        sift_down(&mut heap, 0, &cur, &mut less);
    }
    out.finish()
}

impl<T: Pod + Send + Sync> FarVec<T> {
    /// Sorts stably in ascending order (external merge sort, see the module docs).
    ///
    /// # Errors
    /// The runtime's error; the vector's contents are unspecified (but its length kept) then.
    pub fn sort(&mut self) -> Result<()>
    where
        T: Ord,
    {
        self.sort_by(T::cmp)
    }

    /// Sorts in ascending order; same algorithm as [`FarVec::sort`].
    ///
    /// # Errors
    /// As [`FarVec::sort`].
    pub fn sort_unstable(&mut self) -> Result<()>
    where
        T: Ord,
    {
        self.sort_by(T::cmp)
    }

    /// Sorts stably by the key `f` extracts.
    ///
    /// # Errors
    /// As [`FarVec::sort`].
    pub fn sort_by_key<K: Ord>(&mut self, mut f: impl FnMut(&T) -> K) -> Result<()> {
        self.sort_by(|a, b| f(a).cmp(&f(b)))
    }

    /// Sorts stably with the comparator `cmp`.
    ///
    /// # Errors
    /// As [`FarVec::sort`].
    pub fn sort_by(&mut self, mut cmp: impl FnMut(&T, &T) -> Ordering) -> Result<()> {
        if self.len <= 1 {
            return Ok(());
        }
        let rt = self.rt.clone();
        let chunk_bytes = (self.chunk_len * size_of::<T>()).max(1);
        let group = (rt.budget() / 4 / chunk_bytes).max(1);
        let fan_in = group.max(2);
        // Pass 1: sorted runs of `group` chunks.
        let mut runs = Vec::new();
        let chunks = std::mem::take(&mut self.chunks);
        let mut left = self.len;
        let mut it = chunks.into_iter().peekable();
        let mut buf: Vec<T> = Vec::new();
        while it.peek().is_some() {
            let mut taken: VecDeque<FarSlice<T>> = it.by_ref().take(group).collect();
            rt.prefetch(taken.iter())?;
            buf.clear();
            for c in &taken {
                let n = left.min(self.chunk_len);
                let s = rt.scope();
                buf.extend_from_slice(&c.read_nt(&s)?[..n]);
                left -= n;
            }
            buf.sort_by(&mut cmp);
            for (c, part) in taken.iter_mut().zip(buf.chunks(self.chunk_len)) {
                let s = rt.scope();
                c.write_nt(&s)?[..part.len()].copy_from_slice(part);
            }
            runs.push(Run {
                chunks: taken,
                len: buf.len(),
            });
        }
        // Merge passes.
        while runs.len() > 1 {
            let mut next = Vec::with_capacity(runs.len().div_ceil(fan_in));
            let mut rest = runs.into_iter();
            loop {
                let batch: Vec<Run<T>> = rest.by_ref().take(fan_in).collect();
                if batch.is_empty() {
                    break;
                }
                next.push(merge(&rt, self.chunk_len, batch, &mut cmp)?);
            }
            runs = next;
        }
        if let Some(run) = runs.pop() {
            self.chunks = run.chunks.into();
        }
        Ok(())
    }

    /// Binary search in a vector sorted by `f` (see `slice::binary_search_by`).
    ///
    /// # Errors
    /// The runtime's error.
    pub fn binary_search_by(
        &self,
        mut f: impl FnMut(&T) -> Ordering,
    ) -> Result<std::result::Result<usize, usize>> {
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match f(&self.get(mid)?) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Ok(Ok(mid)),
            }
        }
        Ok(Err(lo))
    }

    /// Binary search for `x` in a sorted vector (see `slice::binary_search`).
    ///
    /// # Errors
    /// The runtime's error.
    pub fn binary_search(&self, x: &T) -> Result<std::result::Result<usize, usize>>
    where
        T: Ord,
    {
        self.binary_search_by(|e| e.cmp(x))
    }
}
