//! [`FarVec`]: a chunked, growable vector in far memory.

use bytemuck::Pod;

use super::error::{ContainerError, Result};
use super::prefetch::{self, StrideDetector, Window};
use crate::{FarSlice, Runtime, Scope};

/// Default chunk size in bytes.
pub const DEFAULT_CHUNK_BYTES: usize = 64 << 10;

/// Chunks prefetched ahead once index accesses show a stride.
pub(crate) const STRIDE_DEPTH: i64 = 16;

/// A growable vector of `T` whose elements live in far-memory chunks.
///
/// Each chunk is a [`FarSlice`] of `chunk_len()` elements (the last one partly used), so the
/// vector's local footprint is whatever chunks the runtime keeps local plus a few bytes of
/// metadata per chunk.
///
/// - Element access ([`get`](Self::get), [`set`](Self::set), [`read`](Self::read) under a scope)
///   detects strided chunk patterns and prefetches ahead in one batch.
/// - [`scan`](Self::scan) and [`iter`](Self::iter) visit the elements in order with batched
///   read-ahead on a helper thread; [`scan_nt`](Self::scan_nt) does so without marking chunks hot,
///   so a streaming pass does not evict the hot set.
/// - For primitive `T`, agent operations (sum, filter, group-by, ...) run on the server or locally,
///   see [`Offload`](super::Offload).
///
/// ```
/// use farmem::{Runtime, RuntimeConfig};
/// use farmem::containers::FarVec;
/// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
/// let mut v = FarVec::with_chunk_bytes(&rt, 4096).unwrap();
/// v.extend((0..10_000u32).rev()).unwrap();
/// v.set(0, 5).unwrap();
/// v.sort().unwrap();
/// assert_eq!(v.get(0).unwrap(), 0);
/// assert_eq!(v.binary_search(&5000).unwrap(), Ok(5001)); // 5 is there twice
/// let mut total = 0u64;
/// v.scan(|chunk| chunk.iter().for_each(|&x| total += u64::from(x))).unwrap();
/// assert_eq!(total, (0..10_000u64).sum::<u64>() - 9_999 + 5);
/// ```
pub struct FarVec<T: Pod> {
    pub(crate) rt: Runtime,
    pub(crate) chunks: Vec<FarSlice<T>>,
    pub(crate) len: usize,
    pub(crate) chunk_len: usize,
    /// `log2(chunk_len)` when that is a power of two (indexing shifts instead of dividing),
    /// else [`NO_SHIFT`].
    pub(crate) shift: u32,
    stride: StrideDetector,
}

/// [`FarVec::shift`] of a vector whose chunk length is not a power of two.
pub(crate) const NO_SHIFT: u32 = u32::MAX;

impl<T: Pod> std::fmt::Debug for FarVec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FarVec")
            .field("len", &self.len)
            .field("chunks", &self.chunks.len())
            .field("chunk_len", &self.chunk_len)
            .finish()
    }
}

impl<T: Pod + Send + Sync> FarVec<T> {
    /// An empty vector with chunks of 64 KiB.
    pub fn new(rt: &Runtime) -> Self {
        Self::with_chunk_len(rt, (DEFAULT_CHUNK_BYTES / size_of::<T>().max(1)).max(1))
    }

    /// An empty vector with chunks of about `bytes` bytes (at least one element).
    ///
    /// # Errors
    /// [`ContainerError::Invalid`] if `bytes` is 0.
    pub fn with_chunk_bytes(rt: &Runtime, bytes: usize) -> Result<Self> {
        if bytes == 0 {
            return Err(ContainerError::Invalid("chunk size 0".into()));
        }
        Ok(Self::with_chunk_len(
            rt,
            (bytes / size_of::<T>().max(1)).max(1),
        ))
    }

    pub(crate) fn with_chunk_len(rt: &Runtime, chunk_len: usize) -> Self {
        Self {
            rt: rt.clone(),
            chunks: Vec::new(),
            len: 0,
            chunk_len: chunk_len.max(1),
            shift: if chunk_len.max(1).is_power_of_two() {
                chunk_len.max(1).trailing_zeros()
            } else {
                NO_SHIFT
            },
            stride: StrideDetector::default(),
        }
    }

    /// A vector holding a copy of `values`.
    ///
    /// # Errors
    /// As [`FarVec::push`].
    pub fn from_slice(rt: &Runtime, values: &[T]) -> Result<Self> {
        let mut v = Self::new(rt);
        v.extend_from_slice(values)?;
        Ok(v)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements per chunk.
    pub fn chunk_len(&self) -> usize {
        self.chunk_len
    }

    /// The runtime this vector lives in.
    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// Number of elements used in chunk `c`.
    pub(crate) fn used_in(&self, c: usize) -> usize {
        (self.len - c * self.chunk_len).min(self.chunk_len)
    }

    /// Chunk and offset of element `index` (a shift and a mask for power-of-two chunks).
    #[inline(always)]
    pub(crate) fn locate(&self, index: usize) -> (usize, usize) {
        locate(index, self.chunk_len, self.shift)
    }

    #[inline(always)]
    fn check(&self, index: usize) -> Result<(usize, usize)> {
        if index >= self.len {
            return Err(ContainerError::IndexOutOfBounds {
                index,
                len: self.len,
            });
        }
        Ok(self.locate(index))
    }

    /// Records an index access to chunk `c`; on the way to a chunk that is not local, prefetches
    /// ahead when the misses show a stride. Within the last chunk: one load and a compare.
    #[inline(always)]
    fn note_access(&self, c: usize) {
        if let Some(prev) = self.stride.touch(c)
            && !self.chunks[c].is_local()
        {
            self.note_miss(c, prev);
        }
    }

    #[cold]
    fn note_miss(&self, c: usize, prev: usize) {
        if let Some(stride) = self.stride.confirm(c, prev) {
            prefetch_stride(&self.rt, &self.chunks, c, stride);
        }
    }

    /// Shared access to element `index` under a scope.
    ///
    /// # Errors
    /// [`ContainerError::IndexOutOfBounds`], or the runtime's error when the chunk must be
    /// fetched.
    #[inline]
    pub fn read<'a>(&'a self, s: &'a Scope<'_>, index: usize) -> Result<&'a T> {
        let (c, o) = self.check(index)?;
        self.note_access(c);
        Ok(&self.chunks[c].read(s)?[o])
    }

    /// Exclusive access to element `index` under a scope.
    ///
    /// # Errors
    /// As [`FarVec::read`].
    #[inline]
    pub fn write<'a>(&'a mut self, s: &'a Scope<'_>, index: usize) -> Result<&'a mut T> {
        let (c, o) = self.check(index)?;
        self.note_access(c);
        Ok(&mut self.chunks[c].write(s)?[o])
    }

    /// Copies element `index` out.
    ///
    /// # Errors
    /// As [`FarVec::read`].
    pub fn get(&self, index: usize) -> Result<T> {
        let s = self.rt.scope();
        self.read(&s, index).copied()
    }

    /// Replaces element `index`.
    ///
    /// # Errors
    /// As [`FarVec::read`].
    pub fn set(&mut self, index: usize, value: T) -> Result<()> {
        let rt = self.rt.clone();
        let s = rt.scope();
        *self.write(&s, index)? = value;
        Ok(())
    }

    /// The first element, if any.
    ///
    /// # Errors
    /// The runtime's error.
    pub fn first(&self) -> Result<Option<T>> {
        if self.is_empty() {
            return Ok(None);
        }
        self.get(0).map(Some)
    }

    /// The last element, if any.
    ///
    /// # Errors
    /// The runtime's error.
    pub fn last(&self) -> Result<Option<T>> {
        if self.is_empty() {
            return Ok(None);
        }
        self.get(self.len - 1).map(Some)
    }

    /// Appends an element.
    ///
    /// # Errors
    /// The runtime's error when a new chunk cannot be allocated (nothing changes then).
    pub fn push(&mut self, value: T) -> Result<()> {
        if self.len == self.chunks.len() * self.chunk_len {
            self.chunks
                .push(FarSlice::new_zeroed(&self.rt, self.chunk_len)?);
        }
        let (c, o) = self.locate(self.len);
        let rt = self.rt.clone();
        let s = rt.scope();
        self.chunks[c].write(&s)?[o] = value;
        self.len += 1;
        Ok(())
    }

    /// Removes and returns the last element.
    ///
    /// # Errors
    /// The runtime's error (the element stays then).
    pub fn pop(&mut self) -> Result<Option<T>> {
        if self.len == 0 {
            return Ok(None);
        }
        let v = self.get(self.len - 1)?;
        self.len -= 1;
        self.chunks.truncate(self.len.div_ceil(self.chunk_len));
        Ok(Some(v))
    }

    /// Appends all of `values`, a chunk at a time.
    ///
    /// # Errors
    /// The runtime's error; the elements appended so far stay.
    pub fn extend_from_slice(&mut self, mut values: &[T]) -> Result<()> {
        let rt = self.rt.clone();
        while !values.is_empty() {
            if self.len == self.chunks.len() * self.chunk_len {
                let take = values.len().min(self.chunk_len);
                if take == self.chunk_len {
                    self.chunks
                        .push(FarSlice::from_slice(&rt, &values[..take])?);
                } else {
                    let mut c = FarSlice::new_zeroed(&rt, self.chunk_len)?;
                    let s = rt.scope();
                    c.write(&s)?[..take].copy_from_slice(&values[..take]);
                    drop(s);
                    self.chunks.push(c);
                }
                self.len += take;
                values = &values[take..];
                continue;
            }
            let (c, o) = (self.len / self.chunk_len, self.len % self.chunk_len);
            let take = values.len().min(self.chunk_len - o);
            let s = rt.scope();
            self.chunks[c].write(&s)?[o..o + take].copy_from_slice(&values[..take]);
            self.len += take;
            values = &values[take..];
        }
        Ok(())
    }

    /// Appends every item of `iter`.
    ///
    /// # Errors
    /// As [`FarVec::extend_from_slice`].
    pub fn extend(&mut self, iter: impl IntoIterator<Item = T>) -> Result<()> {
        let mut buf = Vec::with_capacity(self.chunk_len);
        for x in iter {
            buf.push(x);
            if buf.len() == self.chunk_len {
                self.extend_from_slice(&buf)?;
                buf.clear();
            }
        }
        self.extend_from_slice(&buf)
    }

    /// Shortens the vector to `len` elements (no-op if already shorter).
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.len = len;
            self.chunks.truncate(len.div_ceil(self.chunk_len));
        }
    }

    /// Removes every element and frees the chunks.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Resizes to `len` elements, filling new ones with `value`.
    ///
    /// # Errors
    /// As [`FarVec::extend_from_slice`].
    pub fn resize(&mut self, len: usize, value: T) -> Result<()> {
        if len <= self.len {
            self.truncate(len);
            return Ok(());
        }
        let fill = vec![value; (len - self.len).min(self.chunk_len)];
        while self.len < len {
            let n = (len - self.len).min(fill.len());
            self.extend_from_slice(&fill[..n])?;
        }
        Ok(())
    }

    /// Fetches the chunks holding `range` now, in batches (explicit prefetch).
    ///
    /// # Errors
    /// The runtime's error.
    pub fn prefetch_range(&self, range: std::ops::Range<usize>) -> Result<()> {
        self.prefetch_range_mode(range, false)
    }

    /// Like [`FarVec::prefetch_range`], non-temporal: the chunks land in the regions evacuated
    /// first, not marked hot (for data about to be streamed through once, for example by
    /// [`FarVec::scan_range`], possibly from another thread running ahead of the reader).
    ///
    /// # Errors
    /// The runtime's error.
    pub fn prefetch_range_nt(&self, range: std::ops::Range<usize>) -> Result<()> {
        self.prefetch_range_mode(range, true)
    }

    fn prefetch_range_mode(&self, range: std::ops::Range<usize>, nt: bool) -> Result<()> {
        let end = range.end.min(self.len);
        if range.start >= end {
            return Ok(());
        }
        let chunks = &self.chunks[range.start / self.chunk_len..end.div_ceil(self.chunk_len)];
        let w = Window::for_objects(&self.rt, self.chunk_len * size_of::<T>());
        for batch in chunks.chunks(w.batch) {
            if nt {
                self.rt.prefetch_nt(batch)?;
            } else {
                self.rt.prefetch(batch)?;
            }
        }
        Ok(())
    }

    /// Calls `f` with the elements of `range` chunk by chunk, in order. Only the chunks holding
    /// `range` are fetched (non-temporally, in batches), so reading a few rows of a large vector
    /// costs a chunk or two, not a read-ahead window.
    ///
    /// ```
    /// use farmem::{Runtime, RuntimeConfig};
    /// use farmem::containers::FarVec;
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    /// let v = FarVec::from_slice(&rt, &(0..100_000u32).collect::<Vec<_>>()).unwrap();
    /// let mut got = Vec::new();
    /// v.scan_range(70_000..70_005, |xs| got.extend_from_slice(xs)).unwrap();
    /// assert_eq!(got, vec![70_000, 70_001, 70_002, 70_003, 70_004]);
    /// ```
    ///
    /// # Errors
    /// The runtime's error (`f` may have seen a prefix then).
    ///
    /// # Panics
    /// If `range` reaches past the end.
    pub fn scan_range(&self, range: std::ops::Range<usize>, mut f: impl FnMut(&[T])) -> Result<()> {
        assert!(
            range.end <= self.len,
            "range {range:?} past the end ({})",
            self.len
        );
        if range.start >= range.end {
            return Ok(());
        }
        let per = self.chunk_len;
        let (first, last) = (range.start / per, (range.end - 1) / per);
        let w = Window::for_objects(&self.rt, per * size_of::<T>());
        for start in (first..=last).step_by(w.batch) {
            let end = (start + w.batch).min(last + 1);
            self.rt.prefetch_nt(&self.chunks[start..end])?;
            for c in start..end {
                let lo = range.start.max(c * per) - c * per;
                let hi = range.end.min(c * per + self.used_in(c)) - c * per;
                let s = self.rt.scope();
                f(&self.chunks[c].read_nt(&s)?[lo..hi]);
            }
        }
        Ok(())
    }

    fn scan_mode(&self, nt: bool, mut f: impl FnMut(&[T])) -> Result<()> {
        let objs: Vec<&FarSlice<T>> = self.chunks.iter().collect();
        let w = Window::for_objects(&self.rt, self.chunk_len * size_of::<T>());
        prefetch::scan(&self.rt, &objs, w, |c| {
            let s = self.rt.scope();
            let data = if nt {
                self.chunks[c].read_nt(&s)?
            } else {
                self.chunks[c].read(&s)?
            };
            f(&data[..self.used_in(c)]);
            Ok(())
        })
    }

    /// Calls `f` with the elements chunk by chunk, in order, with batched read-ahead.
    ///
    /// # Errors
    /// The runtime's error (`f` may have seen a prefix then).
    pub fn scan(&self, f: impl FnMut(&[T])) -> Result<()> {
        self.scan_mode(false, f)
    }

    /// Like [`FarVec::scan`] but non-temporal: chunks that are not local are streamed from the
    /// server into a bounded read-ahead buffer and handed to `f` without entering the local heap
    /// (local chunks are read in place, not marked hot), so a streaming pass over a large vector
    /// neither evicts hot data of other structures nor costs the evacuator any work.
    ///
    /// # Errors
    /// As [`FarVec::scan`].
    pub fn scan_nt(&self, mut f: impl FnMut(&[T])) -> Result<()> {
        if size_of::<T>() == 0 {
            return self.scan_mode(true, f);
        }
        let w = Window::for_objects(&self.rt, self.chunk_len * size_of::<T>());
        // For far copies whose buffer is not aligned for `T` (allocators align these large
        // buffers in practice, so this is a fallback).
        let mut aligned: Vec<T> = Vec::new();
        prefetch::stream(&self.rt, &self.chunks, w, |c, far| {
            let used = self.used_in(c);
            let Some(bytes) = far else {
                let s = self.rt.scope();
                f(&self.chunks[c].read_nt(&s)?[..used]);
                return Ok(());
            };
            let whole = self.chunks[c].len() * size_of::<T>();
            if bytes.len() != whole {
                return Err(crate::BackendError::SizeMismatch {
                    id: self.chunks[c].far_id(),
                    expected: whole as u64,
                    actual: bytes.len() as u64,
                }
                .into());
            }
            match bytemuck::try_cast_slice::<u8, T>(bytes) {
                Ok(v) => f(&v[..used]),
                Err(_) => {
                    aligned.resize(self.chunks[c].len(), T::zeroed());
                    bytemuck::cast_slice_mut::<T, u8>(&mut aligned).copy_from_slice(bytes);
                    f(&aligned[..used]);
                }
            }
            Ok(())
        })
    }

    /// Calls `f` with the elements chunk by chunk, mutably, with batched read-ahead.
    ///
    /// # Errors
    /// As [`FarVec::scan`].
    pub fn scan_mut(&mut self, mut f: impl FnMut(&mut [T])) -> Result<()> {
        let w = Window::for_objects(&self.rt, self.chunk_len * size_of::<T>());
        let rt = self.rt.clone();
        for start in (0..self.chunks.len()).step_by(w.batch) {
            let end = (start + w.batch).min(self.chunks.len());
            rt.prefetch(&self.chunks[start..end])?;
            for c in start..end {
                let used = self.used_in(c);
                let s = rt.scope();
                f(&mut self.chunks[c].write(&s)?[..used]);
            }
        }
        Ok(())
    }

    /// Copies everything into a local `Vec`.
    ///
    /// # Errors
    /// As [`FarVec::scan`].
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let mut v = Vec::with_capacity(self.len);
        self.scan_nt(|c| v.extend_from_slice(c))?;
        Ok(v)
    }

    /// An iterator over copies of the elements, fetching a batch of chunks at a time. It walks
    /// chunk slices internally: errors can only come once per chunk, `fold` (and `for_each`,
    /// `count`) runs a slice loop per chunk, and a `for` loop costs a bounds check and a load
    /// per element of a local chunk, scalar ([`FarVec::chunks`] hands out the slices
    /// themselves, for loops the compiler vectorises).
    ///
    /// ```
    /// use farmem::{Runtime, RuntimeConfig};
    /// use farmem::containers::FarVec;
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    /// let v = FarVec::from_slice(&rt, &(0..100_000u64).collect::<Vec<_>>()).unwrap();
    /// let mut sum = 0;
    /// for x in v.iter() {
    ///     sum += x?;
    /// }
    /// assert_eq!(sum, 99_999 * 100_000 / 2);
    /// assert_eq!(v.iter().collect::<Result<Vec<_>, _>>()?.len(), 100_000);
    /// # Ok::<(), farmem::containers::ContainerError>(())
    /// ```
    #[inline]
    pub fn iter(&self) -> Iter<'_, T> {
        Iter {
            cur: &[],
            pos: 0,
            rest: Box::new(IterChunks {
                guard: None,
                chunks: self.chunks(),
            }),
        }
    }

    /// Writes every dirty local chunk back so the far copies are current (before an agent
    /// operation reads them), in batched round trips ([`Runtime::flush_many`]). Clean chunks cost
    /// nothing.
    ///
    /// # Errors
    /// The runtime's error.
    pub fn flush(&self) -> Result<()> {
        self.rt.flush_many(&self.chunks)?;
        Ok(())
    }
}

/// Chunk and offset of element `index` in chunks of `chunk_len` (`shift` its log2, or
/// [`NO_SHIFT`]).
#[inline(always)]
pub(crate) fn locate(index: usize, chunk_len: usize, shift: u32) -> (usize, usize) {
    if shift == NO_SHIFT {
        (index / chunk_len, index % chunk_len)
    } else {
        (index >> shift, index & (chunk_len - 1))
    }
}

/// Prefetches up to [`STRIDE_DEPTH`] chunks ahead of chunk `c` at `stride` chunks apart, unless
/// the next one is local already.
pub(crate) fn prefetch_stride<T: Pod>(rt: &Runtime, chunks: &[FarSlice<T>], c: usize, stride: i64) {
    let next = c as i64 + stride;
    let Some(first) = usize::try_from(next).ok().and_then(|n| chunks.get(n)) else {
        return;
    };
    if first.is_local() {
        return;
    }
    let ahead = (1..=STRIDE_DEPTH)
        .map(|k| c as i64 + k * stride)
        .take_while(|&i| i >= 0 && (i as usize) < chunks.len())
        .map(|i| &chunks[i as usize]);
    if let Err(e) = rt.prefetch(ahead) {
        tracing::debug!("stride prefetch failed: {e}");
    }
}

/// Iterator over a [`FarVec`]'s elements (copies), yielding `Result<T>`; stops after an error.
///
/// It walks the chunks as pinned slices ([`FarVec::chunks`], same read-ahead): an element of
/// the current chunk costs a slice iterator step, and an error can only come when the next
/// chunk is made local, once per chunk. Internal iteration (`fold`, `for_each`, `count`, ...)
/// runs a plain slice loop per chunk.
pub struct Iter<'a, T: Pod> {
    /// The current chunk's values not yet yielded (borrowed from `rest`'s pinned payload).
    /// Only `next`'s inlined fast path touches it, and the out-of-line chunk change never
    /// borrows it, so a loop over the iterator keeps it in registers (a `for` loop over the
    /// elements compiles to a slice loop per chunk).
    cur: &'a [T],
    /// The next value's position in `cur` (an index, not a slice iterator: a loop whose trip
    /// count is `cur.len() - pos` is one the compiler can vectorise).
    pos: usize,
    /// Boxed, so that changing chunks borrows no part of the iterator itself.
    rest: Box<IterChunks<'a, T>>,
}

/// The chunk-changing part of an [`Iter`].
struct IterChunks<'a, T: Pod> {
    /// Keeps the current chunk local and in place; replaced only once `Iter::cur` is emptied.
    guard: Option<crate::Pinned<'a, T>>,
    chunks: super::vec_access::Chunks<'a, T>,
}

impl<'a, T: Pod + Send + Sync> IterChunks<'a, T> {
    /// Lets go of the current chunk (whose values the caller has all taken) and pins the
    /// next: its values, `None` at the end, `Some(Err)` when it cannot be made local.
    #[cold]
    #[inline(never)]
    fn advance(&mut self) -> Option<Result<&'a [T]>> {
        self.guard = None;
        Some(match self.chunks.next()? {
            Ok(p) => {
                // The guard is kept in `self.guard` until the caller has emptied the slice (it
                // calls `advance` again only then, or drops both); the iterator yields copies.
                // SAFETY: the payload stays local and in place while its guard lives (above),
                // and no reference into it outlives the guard.
                let vals: &'a [T] = unsafe { std::slice::from_raw_parts(p.as_ptr(), p.len()) };
                self.guard = Some(p);
                Ok(vals)
            }
            Err(e) => Err(e),
        })
    }
}

impl<T: Pod> std::fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iter")
            .field("left_in_chunk", &(self.cur.len() - self.pos))
            .finish_non_exhaustive()
    }
}

impl<T: Pod + Send + Sync> Iterator for Iter<'_, T> {
    type Item = Result<T>;

    #[inline(always)]
    fn next(&mut self) -> Option<Result<T>> {
        loop {
            if let Some(&x) = self.cur.get(self.pos) {
                self.pos += 1;
                return Some(Ok(x));
            }
            match self.rest.advance()? {
                Ok(vals) => (self.cur, self.pos) = (vals, 0),
                Err(e) => return Some(Err(e)),
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.cur.len() - self.pos + self.rest.chunks.elements_left();
        (n, Some(n))
    }

    #[inline]
    fn fold<B, F: FnMut(B, Result<T>) -> B>(mut self, init: B, mut f: F) -> B {
        let mut acc = self.cur[self.pos..].iter().fold(init, |a, &x| f(a, Ok(x)));
        self.cur = &[];
        self.rest.guard = None;
        for c in self.rest.chunks.by_ref() {
            match c {
                Ok(c) => acc = c.iter().fold(acc, |a, &x| f(a, Ok(x))),
                Err(e) => return f(acc, Err(e)),
            }
        }
        acc
    }
}

impl<T: Pod + Send + Sync> ExactSizeIterator for Iter<'_, T> {}

impl<T: Pod + Send + Sync> std::iter::FusedIterator for Iter<'_, T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RuntimeConfig;

    /// `iter` yields every element in order across chunks (local or evicted), its size hint is
    /// exact at every step, and `fold` after a few `next` calls sees exactly the rest.
    #[test]
    fn iter_walks_every_chunk_with_an_exact_size() {
        let rt = Runtime::new(RuntimeConfig::new(1 << 20).region_size(64 << 10)).unwrap();
        let xs: Vec<u32> = (0..50_001).map(|i| i * 7).collect();
        let mut v = FarVec::with_chunk_bytes(&rt, 4096).unwrap();
        v.extend_from_slice(&xs).unwrap();
        rt.evacuate_now();
        let mut it = v.iter();
        for (k, want) in xs.iter().take(1_500).enumerate() {
            assert_eq!(it.len(), xs.len() - k);
            assert_eq!(it.next().unwrap().unwrap(), *want);
        }
        let rest = it.fold(Vec::new(), |mut acc, x| {
            acc.push(x.unwrap());
            acc
        });
        assert_eq!(rest, xs[1_500..]);
        let all: Vec<u32> = v.iter().collect::<Result<_>>().unwrap();
        assert_eq!(all, xs);
        let mut it = v.iter();
        assert_eq!(it.by_ref().count(), xs.len());
        assert!(it.next().is_none());
        assert_eq!(
            FarVec::<u64>::new(&rt).iter().next().map(|r| r.is_ok()),
            None
        );
    }

    /// `scan_range` yields exactly the rows of the range, far or local, dirty or clean.
    #[test]
    fn scan_range_reads_exactly_the_range() {
        let rt = Runtime::new(RuntimeConfig::new(1 << 20).region_size(64 << 10)).unwrap();
        let xs: Vec<u32> = (0..200_000).collect();
        let mut v = FarVec::with_chunk_bytes(&rt, 4096).unwrap();
        v.extend_from_slice(&xs).unwrap();
        v.set(1_500, 7).unwrap();
        let mut want = xs.clone();
        want[1_500] = 7;
        for r in [
            0..1,
            1_000..1_025,
            1_023..1_024,
            1_020..5_000,
            199_000..200_000,
            9..9,
        ] {
            let mut got = Vec::new();
            v.scan_range(r.clone(), |c| got.extend_from_slice(c))
                .unwrap();
            assert_eq!(got, want[r.clone()], "{r:?}");
        }
        rt.evacuate_now();
        let mut got = Vec::new();
        v.scan_range(1_400..160_000, |c| got.extend_from_slice(c))
            .unwrap();
        assert_eq!(got, want[1_400..160_000]);
    }
}
