//! Element access to a [`FarVec`] at local speed when the data is resident: chunk iteration
//! that hands out plain slices ([`FarVec::chunks`], [`FarVec::chunks_mut`]), chunk-wise access
//! ([`FarVec::chunk`]), and cursors for indexed access ([`FarVec::reader`],
//! [`FarVec::writer`]) that keep their own scope, so an access to a resident chunk costs a shift,
//! a compare and one load of the chunk's handle word over a `Vec` index. Errors surface once per
//! chunk (iteration) or per call (cursors), never wrapped around every element of a slice loop.

use std::cell::Cell;

use bytemuck::Pod;

use super::error::{ContainerError, Result};
use super::prefetch::{CursorStride, Window};
use super::vec::{FarVec, STRIDE_DEPTH, locate, prefetch_stride};
use crate::{FarSlice, Pinned, PinnedMut, Runtime, Scope};

impl<T: Pod + Send + Sync> FarVec<T> {
    /// Number of chunks.
    pub fn num_chunks(&self) -> usize {
        self.chunks.len()
    }

    /// The used part of chunk `c` (elements `c * chunk_len()..`), local and pinned while the
    /// guard lives. Fetched first if it is not local.
    ///
    /// # Errors
    /// [`ContainerError::IndexOutOfBounds`] for a chunk past the end; the runtime's error.
    pub fn chunk(&self, c: usize) -> Result<Pinned<'_, T>> {
        let ch = self.chunks.get(c).ok_or(ContainerError::IndexOutOfBounds {
            index: c,
            len: self.chunks.len(),
        })?;
        let mut p = ch.pin()?;
        p.truncate(self.used_in(c));
        Ok(p)
    }

    /// The used part of chunk `c`, writable (marked dirty).
    ///
    /// # Errors
    /// As [`FarVec::chunk`].
    pub fn chunk_mut(&mut self, c: usize) -> Result<PinnedMut<'_, T>> {
        let used = if c < self.chunks.len() {
            self.used_in(c)
        } else {
            0
        };
        let len = self.chunks.len();
        let ch = self
            .chunks
            .get_mut(c)
            .ok_or(ContainerError::IndexOutOfBounds { index: c, len })?;
        let mut p = ch.pin_mut()?;
        p.truncate(used);
        Ok(p)
    }

    /// The elements chunk by chunk, each a plain slice pinned while its guard lives, with
    /// batched read-ahead. The fast way to visit every element: the inner loop is a slice loop
    /// (which the compiler can vectorise) and errors come once per chunk.
    ///
    /// ```
    /// use farmem::{Runtime, RuntimeConfig};
    /// use farmem::containers::FarVec;
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    /// let v = FarVec::from_slice(&rt, &(0..100_000u64).collect::<Vec<_>>()).unwrap();
    /// let mut sum = 0;
    /// for chunk in v.chunks() {
    ///     sum += chunk.unwrap().iter().sum::<u64>();
    /// }
    /// assert_eq!(sum, 99_999 * 100_000 / 2);
    /// ```
    pub fn chunks(&self) -> Chunks<'_, T> {
        Chunks {
            vec: self,
            next: 0,
            batch: Window::for_objects(&self.rt, self.chunk_len * size_of::<T>()).batch,
            nt: false,
        }
    }

    /// Like [`FarVec::chunks`], but non-temporal: chunks are fetched into the regions the
    /// evacuator empties first and not marked hot, so a streaming pass over a vector larger
    /// than local memory does not push out the hot data of other structures.
    pub fn chunks_nt(&self) -> Chunks<'_, T> {
        Chunks {
            nt: true,
            ..self.chunks()
        }
    }

    /// The elements chunk by chunk as writable slices (each chunk marked dirty), with batched
    /// read-ahead.
    ///
    /// ```
    /// use farmem::{Runtime, RuntimeConfig};
    /// use farmem::containers::FarVec;
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    /// let mut v = FarVec::from_slice(&rt, &[1u32; 50_000]).unwrap();
    /// for chunk in v.chunks_mut() {
    ///     chunk.unwrap().iter_mut().for_each(|x| *x *= 3);
    /// }
    /// assert_eq!(v.get(49_999).unwrap(), 3);
    /// ```
    pub fn chunks_mut(&mut self) -> ChunksMut<'_, T> {
        let batch = Window::for_objects(&self.rt, self.chunk_len * size_of::<T>()).batch;
        let n = self.chunks.len();
        let FarVec {
            rt,
            chunks,
            len,
            chunk_len,
            ..
        } = self;
        ChunksMut {
            rt,
            it: chunks.iter_mut(),
            next: 0,
            n,
            len: *len,
            chunk_len: *chunk_len,
            batch,
        }
    }

    /// A cursor for indexed reads: it keeps a scope of its own (let go between calls when an
    /// evacuator waits for it), detects strides and prefetches ahead like [`FarVec::get`], and
    /// costs about a `Vec` index plus one load when the chunk is local.
    ///
    /// ```
    /// use farmem::{Runtime, RuntimeConfig};
    /// use farmem::containers::FarVec;
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    /// let v = FarVec::from_slice(&rt, &(0..10_000u32).collect::<Vec<_>>()).unwrap();
    /// let mut r = v.reader();
    /// let picked: u32 = [7usize, 9_999, 4_096].iter().map(|&i| r.get(i).unwrap()).sum();
    /// assert_eq!(picked, 7 + 9_999 + 4_096);
    /// ```
    #[inline]
    pub fn reader(&self) -> Reader<'_, T> {
        Reader {
            chunks: &self.chunks,
            len: self.len,
            chunk_len: self.chunk_len,
            shift: self.shift,
            hits: 0,
            miss: Box::new(ReaderMiss {
                last_miss: Cell::new(0),
                stride: Cell::new(CursorStride::default()),
                rt: &self.rt,
                scope: self.rt.cursor_scope(),
            }),
        }
    }

    /// A cursor for indexed reads and writes (see [`FarVec::reader`]).
    ///
    /// ```
    /// use farmem::{Runtime, RuntimeConfig};
    /// use farmem::containers::FarVec;
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    /// let mut v = FarVec::from_slice(&rt, &[0u64; 10_000]).unwrap();
    /// let mut w = v.writer();
    /// for i in (0..10_000).step_by(7) {
    ///     let x = w.get(i).unwrap();
    ///     w.set(i, x + i as u64).unwrap();
    /// }
    /// drop(w);
    /// assert_eq!(v.get(9_996).unwrap(), 9_996);
    /// ```
    #[inline]
    pub fn writer(&mut self) -> Writer<'_, T> {
        let FarVec {
            rt,
            chunks,
            len,
            chunk_len,
            shift,
            ..
        } = self;
        Writer {
            chunks,
            len: *len,
            chunk_len: *chunk_len,
            shift: *shift,
            hits: 0,
            scope: Box::new(rt.cursor_scope()),
        }
    }
}

/// Iterator over a [`FarVec`]'s chunks as pinned slices ([`FarVec::chunks`]); stops after an
/// error.
pub struct Chunks<'a, T: Pod> {
    vec: &'a FarVec<T>,
    next: usize,
    batch: usize,
    nt: bool,
}

impl<T: Pod> Chunks<'_, T> {
    /// Elements of the chunks not yet handed out.
    pub(super) fn elements_left(&self) -> usize {
        let v = self.vec;
        if self.next >= v.chunks.len() {
            return 0;
        }
        v.len - (self.next * v.chunk_len).min(v.len)
    }
}

impl<'a, T: Pod + Send + Sync> Iterator for Chunks<'a, T> {
    type Item = Result<Pinned<'a, T>>;

    fn next(&mut self) -> Option<Self::Item> {
        let v = self.vec;
        let c = self.next;
        if c >= v.chunks.len() {
            return None;
        }
        if c.is_multiple_of(self.batch) {
            let end = (c + self.batch).min(v.chunks.len());
            let batch = &v.chunks[c..end];
            let r = if self.nt {
                v.rt.prefetch_nt(batch)
            } else {
                v.rt.prefetch(batch)
            };
            if let Err(e) = r {
                tracing::debug!("chunk read-ahead failed: {e}");
            }
        }
        self.next += 1;
        let ch = &v.chunks[c];
        let pinned = if self.nt { ch.pin_nt() } else { ch.pin() };
        Some(match pinned {
            Ok(mut p) => {
                p.truncate(v.used_in(c));
                Ok(p)
            }
            Err(e) => {
                self.next = v.chunks.len();
                Err(e.into())
            }
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.vec.chunks.len() - self.next.min(self.vec.chunks.len());
        (n, Some(n))
    }
}

/// Iterator over a [`FarVec`]'s chunks as writable pinned slices ([`FarVec::chunks_mut`]);
/// stops after an error.
pub struct ChunksMut<'a, T: Pod> {
    rt: &'a Runtime,
    it: std::slice::IterMut<'a, FarSlice<T>>,
    next: usize,
    n: usize,
    len: usize,
    chunk_len: usize,
    batch: usize,
}

impl<'a, T: Pod + Send + Sync> Iterator for ChunksMut<'a, T> {
    type Item = Result<PinnedMut<'a, T>>;

    fn next(&mut self) -> Option<Self::Item> {
        let c = self.next;
        if c.is_multiple_of(self.batch) {
            let rest = self.it.as_slice();
            if let Err(e) = self.rt.prefetch(&rest[..self.batch.min(rest.len())]) {
                tracing::debug!("chunk read-ahead failed: {e}");
            }
        }
        let ch = self.it.next()?;
        self.next += 1;
        let used = (self.len - c * self.chunk_len).min(self.chunk_len);
        Some(match ch.pin_mut() {
            Ok(mut p) => {
                p.truncate(used);
                Ok(p)
            }
            Err(e) => {
                self.it = Default::default();
                self.next = self.n;
                Err(e.into())
            }
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.it.len(), Some(self.it.len()))
    }
}

/// A read cursor over a [`FarVec`] ([`FarVec::reader`]).
///
/// As for [`Writer`], what a hit needs stays in the cursor, the hit count too (handed to the
/// scope every 4096 hits, on a miss and at the end), and what a miss needs is boxed: no call
/// that is not inlined borrows the cursor, so a loop over [`Reader::get`] keeps its fields in
/// registers and makes no store.
pub struct Reader<'a, T: Pod> {
    chunks: &'a [FarSlice<T>],
    len: usize,
    chunk_len: usize,
    shift: u32,
    /// Hits not yet counted in the scope.
    hits: u64,
    miss: Box<ReaderMiss<'a>>,
}

/// What a [`Reader`] needs on a miss: its scope and stride detection.
struct ReaderMiss<'a> {
    /// The chunk of the last miss (or the last chunk prefetched for it).
    last_miss: Cell<usize>,
    stride: Cell<CursorStride>,
    rt: &'a Runtime,
    scope: Scope<'a>,
}

impl<T: Pod> Drop for Reader<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.miss.scope.count_hits_internal(self.hits);
    }
}

impl ReaderMiss<'_> {
    /// Records a miss in chunk `c` of `chunks` (when it is not local) and prefetches ahead on
    /// a stride.
    fn on_miss<T: Pod>(&self, chunks: &[FarSlice<T>], c: usize) {
        if chunks[c].is_local() {
            return;
        }
        let prev = self.last_miss.replace(c);
        let mut detector = self.stride.get();
        let stride = detector.observe(c, prev);
        self.stride.set(detector);
        if let Some(stride) = stride {
            prefetch_stride(self.rt, chunks, c, stride);
            // The next miss comes past the prefetched chunks: measure its move from there.
            let ahead = c as i64 + stride * STRIDE_DEPTH;
            self.last_miss
                .set(ahead.clamp(0, chunks.len() as i64) as usize);
        }
    }

    /// A miss of element `o` of chunk `c`, after `hits` uncounted hits: counts them, lets a
    /// waiting evacuator proceed (the caller holds no reference obtained under the scope),
    /// prefetches ahead when the misses show a stride, then reads.
    #[cold]
    #[inline(never)]
    fn get<T: Pod + Send + Sync>(
        &self,
        chunks: &[FarSlice<T>],
        hits: u64,
        c: usize,
        o: usize,
    ) -> Result<T> {
        self.scope.count_hits_internal(hits);
        self.scope.yield_if_waited();
        self.on_miss(chunks, c);
        Ok(chunks[c].read(&self.scope)?[o])
    }
}

impl<T: Pod + Send + Sync> Reader<'_, T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the vector is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies element `index` out.
    ///
    /// # Errors
    /// [`ContainerError::IndexOutOfBounds`], or the runtime's error when the chunk must be
    /// fetched.
    #[inline(always)]
    pub fn get(&mut self, index: usize) -> Result<T> {
        if index >= self.len {
            return Err(ContainerError::IndexOutOfBounds {
                index,
                len: self.len,
            });
        }
        let (c, o) = locate(index, self.chunk_len, self.shift);
        if let Some(d) = self.chunks[c].read_hit_uncounted(&self.miss.scope) {
            let v = d[o];
            self.hits += 1;
            if self.hits == YIELD_EVERY {
                count_and_yield(&self.miss.scope, std::mem::take(&mut self.hits));
            }
            return Ok(v);
        }
        self.miss
            .get(self.chunks, std::mem::take(&mut self.hits), c, o)
    }

    /// Copies elements `range` into `out` (cleared first), a chunk at a time.
    ///
    /// # Errors
    /// As [`Reader::get`].
    pub fn read_range(&mut self, range: std::ops::Range<usize>, out: &mut Vec<T>) -> Result<()> {
        out.clear();
        if range.end > self.len {
            return Err(ContainerError::IndexOutOfBounds {
                index: range.end.saturating_sub(1),
                len: self.len,
            });
        }
        let mut i = range.start;
        while i < range.end {
            let (c, o) = locate(i, self.chunk_len, self.shift);
            let m = &self.miss;
            m.scope.yield_if_waited();
            m.on_miss(self.chunks, c);
            let n = (self.chunk_len - o).min(range.end - i);
            out.extend_from_slice(&self.chunks[c].read(&m.scope)?[o..o + n]);
            i += n;
        }
        Ok(())
    }

    /// Appends the elements at `indices` to `out`, in order: the fast form of many random
    /// reads (gather, then compute over the plain slice `out`).
    ///
    /// ```
    /// use farmem::{Runtime, RuntimeConfig};
    /// use farmem::containers::FarVec;
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    /// let v = FarVec::from_slice(&rt, &(0..10_000u64).map(|i| i * i).collect::<Vec<_>>()).unwrap();
    /// let mut out = Vec::new();
    /// v.reader().gather([3usize, 9_999, 0], &mut out).unwrap();
    /// assert_eq!(out, [9, 9_999 * 9_999, 0]);
    /// ```
    ///
    /// # Errors
    /// As [`Reader::get`]; `out` holds the elements gathered before the error.
    pub fn gather(
        &mut self,
        indices: impl IntoIterator<Item = usize>,
        out: &mut Vec<T>,
    ) -> Result<()> {
        let indices = indices.into_iter();
        out.reserve(indices.size_hint().0);
        let m = &self.miss;
        m.scope.yield_if_waited();
        let (len, chunk_len, shift) = (self.len, self.chunk_len, self.shift);
        // Two passes per batch: find the elements (handle words only, all in cache), then load
        // them, loads independent of each other so the CPU overlaps their cache misses. Hits are
        // counted here, in a register, and added to the scope once.
        let mut hits = 0;
        let mut result = Ok(());
        let mut found: Vec<&T> = Vec::with_capacity(GATHER_BATCH);
        for i in indices {
            if i >= len {
                result = Err(ContainerError::IndexOutOfBounds { index: i, len });
                break;
            }
            let (c, o) = locate(i, chunk_len, shift);
            if let Some(d) = self.chunks[c].read_hit_uncounted(&m.scope) {
                hits += 1;
                found.push(&d[o]);
                if found.len() == GATHER_BATCH {
                    out.extend(found.drain(..).copied());
                }
                continue;
            }
            // The slow path may leave the scope's epoch: no reference may be held across it.
            out.extend(found.drain(..).copied());
            match m.get(self.chunks, std::mem::take(&mut hits), c, o) {
                Ok(v) => out.push(v),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        out.extend(found.drain(..).copied());
        m.scope.count_hits_internal(hits);
        result
    }
}

/// A read-write cursor over a [`FarVec`] ([`FarVec::writer`]).
///
/// What a hit needs stays in the cursor (the hit count too, handed to the scope every
/// 4096 hits, on a miss and at the end) and the scope is boxed: no call that is not
/// inlined borrows the cursor, so a loop over [`Writer::get`] and [`Writer::set`] can keep its
/// fields in registers and makes no store but the element's.
pub struct Writer<'a, T: Pod> {
    chunks: &'a mut [FarSlice<T>],
    len: usize,
    chunk_len: usize,
    shift: u32,
    /// Hits not yet counted in the scope.
    hits: u64,
    scope: Box<Scope<'a>>,
}

impl<T: Pod> Drop for Writer<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.scope.count_hits_internal(self.hits);
    }
}

/// Hits a cursor makes between two checks whether an evacuator waits for its scope (misses
/// always check).
const YIELD_EVERY: u64 = 4096;

/// Elements [`Reader::gather`] locates before it loads them.
const GATHER_BATCH: usize = 32;

impl<T: Pod + Send + Sync> Writer<'_, T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the vector is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    fn at(&self, index: usize) -> Result<(usize, usize)> {
        if index >= self.len {
            return Err(ContainerError::IndexOutOfBounds {
                index,
                len: self.len,
            });
        }
        Ok(locate(index, self.chunk_len, self.shift))
    }

    /// Counts a hit; every [`YIELD_EVERY`] hits, hands them to the scope and lets a waiting
    /// evacuator proceed.
    #[inline(always)]
    fn hit(&mut self) {
        self.hits += 1;
        if self.hits == YIELD_EVERY {
            count_and_yield(&self.scope, std::mem::take(&mut self.hits));
        }
    }

    /// Copies element `index` out.
    ///
    /// # Errors
    /// As [`Reader::get`].
    #[inline(always)]
    pub fn get(&mut self, index: usize) -> Result<T> {
        let (c, o) = self.at(index)?;
        if let Some(d) = self.chunks[c].read_hit_uncounted(&self.scope) {
            let v = d[o];
            self.hit();
            return Ok(v);
        }
        count_and_yield(&self.scope, std::mem::take(&mut self.hits));
        Ok(self.chunks[c].read(&self.scope)?[o])
    }

    /// Replaces element `index`.
    ///
    /// # Errors
    /// As [`Reader::get`].
    #[inline(always)]
    pub fn set(&mut self, index: usize, value: T) -> Result<()> {
        let (c, o) = self.at(index)?;
        if let Some(d) = self.chunks[c].write_hit_uncounted(&self.scope) {
            d[o] = value;
            self.hit();
            return Ok(());
        }
        count_and_yield(&self.scope, std::mem::take(&mut self.hits));
        self.chunks[c].write(&self.scope)?[o] = value;
        Ok(())
    }
}

/// Counts a cursor's `hits` in its `scope` and lets a waiting evacuator proceed (the cursor
/// holds no reference into a chunk between calls).
#[cold]
#[inline(never)]
fn count_and_yield(scope: &Scope<'_>, hits: u64) {
    scope.count_hits_internal(hits);
    scope.yield_if_waited();
}

macro_rules! cursor_debug {
    ($($t:ident),*) => {$(
        impl<T: Pod> std::fmt::Debug for $t<'_, T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t)).finish_non_exhaustive()
            }
        }
    )*};
}
cursor_debug!(Chunks, ChunksMut, Reader, Writer);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RuntimeConfig;

    fn small_rt() -> Runtime {
        Runtime::new(RuntimeConfig::new(1 << 20).region_size(64 << 10)).unwrap()
    }

    /// Chunks, cursors and chunk-wise access see and change exactly the elements, with chunk
    /// lengths that are and are not powers of two, in a heap a fraction of the data's size.
    #[test]
    fn every_access_form_agrees_with_a_vec() {
        let rt = small_rt();
        for bytes in [4096usize, 3000] {
            let xs: Vec<u64> = (0..300_000u64).map(|i| i * 7 + 1).collect();
            let mut v = FarVec::with_chunk_bytes(&rt, bytes).unwrap();
            v.extend_from_slice(&xs).unwrap();
            let mut seen = Vec::new();
            for c in v.chunks() {
                seen.extend_from_slice(&c.unwrap());
            }
            assert_eq!(seen, xs);
            seen.clear();
            for c in v.chunks_nt() {
                seen.extend_from_slice(&c.unwrap());
            }
            assert_eq!(seen, xs);
            let mut r = v.reader();
            for i in (0..xs.len()).rev().step_by(997).chain([0, 299_999]) {
                assert_eq!(r.get(i).unwrap(), xs[i]);
            }
            assert!(matches!(
                r.get(xs.len()),
                Err(ContainerError::IndexOutOfBounds { .. })
            ));
            let mut out = Vec::new();
            r.read_range(1_000..9_000, &mut out).unwrap();
            assert_eq!(out, xs[1_000..9_000]);
            out.clear();
            r.gather([5, 299_998, 17], &mut out).unwrap();
            assert_eq!(out, [xs[5], xs[299_998], xs[17]]);
            drop(r);
            for c in v.chunks_mut() {
                c.unwrap().iter_mut().for_each(|x| *x += 1);
            }
            let mut w = v.writer();
            for i in (0..xs.len()).step_by(13) {
                let x = w.get(i).unwrap();
                w.set(i, x * 2).unwrap();
            }
            assert!(w.set(xs.len(), 0).is_err());
            drop(w);
            let last = v.num_chunks() - 1;
            v.chunk_mut(last).unwrap()[0] = 42;
            let want: Vec<u64> = xs
                .iter()
                .enumerate()
                .map(|(i, &x)| if i % 13 == 0 { (x + 1) * 2 } else { x + 1 })
                .collect();
            let mut got = v.to_vec().unwrap();
            let first_of_last = last * v.chunk_len();
            assert_eq!(got[first_of_last], 42);
            got[first_of_last] = want[first_of_last];
            assert_eq!(got, want);
            assert_eq!(v.chunk(last).unwrap().len(), xs.len() - first_of_last);
            assert!(v.chunk(last + 1).is_err());
        }
    }

    /// A cursor never holds up the evacuator for long: two readers and a writer walking vectors
    /// far larger than the heap at random finish (no `LocalHeapExhausted`).
    #[test]
    fn cursors_make_room_for_their_misses() {
        let rt = small_rt();
        let a = FarVec::from_slice(&rt, &(0..400_000u32).collect::<Vec<_>>()).unwrap();
        let b = FarVec::from_slice(&rt, &(0..400_000u32).rev().collect::<Vec<_>>()).unwrap();
        let mut c = FarVec::from_slice(&rt, &[0u32; 400_000]).unwrap();
        let (mut ra, mut rb, mut wc) = (a.reader(), b.reader(), c.writer());
        let mut x = 12_345usize;
        for _ in 0..20_000 {
            x = (x * 1_103_515_245 + 12_345) % 400_000;
            let v = ra.get(x).unwrap() + rb.get(x).unwrap();
            assert_eq!(v, 399_999);
            wc.set(x, v).unwrap();
        }
        drop(wc);
        assert_eq!(c.get(x).unwrap(), 399_999);
    }
}
