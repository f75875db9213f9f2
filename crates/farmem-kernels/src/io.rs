//! Chunk access: reading vectors chunk by chunk or in blocks, and writing results.

#[allow(unused_imports)]
use crate::*;

/// Object access for the kernels.
pub trait ChunkIo {
    /// Calls `f` with the bytes of object `id`.
    ///
    /// # Errors
    /// [`KernelError::NotFound`] when there is no such object (or any fetch failure).
    fn read(&self, id: u64, f: &mut dyn FnMut(&[u8])) -> Result<(), KernelError>;

    /// Stores `data` as object `id`.
    ///
    /// # Errors
    /// [`KernelError::OutOfCapacity`] when it does not fit (or any store failure).
    fn write(&self, id: u64, data: &[u8]) -> Result<(), KernelError>;
}

/// Calls `f` with the raw element bytes of every chunk of `vec`, in order (exactly
/// `count * size` bytes each).
pub(crate) fn for_each_chunk<I: ChunkIo + ?Sized>(
    io: &I,
    vec: &VecRef,
    mut f: impl FnMut(&[u8]) -> Result<(), KernelError>,
) -> Result<(), KernelError> {
    let size = vec.ty.size();
    for &(id, count) in &vec.chunks {
        let need = count as usize * size;
        let mut res = Ok(());
        io.read(id, &mut |bytes| {
            res = if bytes.len() < need {
                Err(KernelError::ShortChunk {
                    id,
                    needed: need as u64,
                    actual: bytes.len() as u64,
                })
            } else {
                f(&bytes[..need])
            };
        })?;
        res?;
    }
    Ok(())
}

/// Calls `f` with every element of `vec`, widened, in vector order.
pub(crate) fn for_each_elem<W: Wide, I: ChunkIo + ?Sized>(
    io: &I,
    vec: &VecRef,
    mut f: impl FnMut(W),
) -> Result<(), KernelError> {
    for_each_chunk(io, vec, |bytes| W::decode(vec.ty, bytes, &mut f))
}

/// Writes `bytes` (elements of `elem_size` bytes) as chunk objects per `out`; returns the element
/// count.
pub(crate) fn write_out<I: ChunkIo + ?Sized>(
    io: &I,
    out: &OutSpec,
    elem_size: usize,
    bytes: &[u8],
) -> Result<u64, KernelError> {
    let n = bytes.len() / elem_size;
    if n == 0 {
        return Ok(0);
    }
    if out.chunk_elems == 0 {
        return Err(KernelError::Invalid("output chunk_elems is 0".into()));
    }
    let per = out.chunk_elems as usize;
    let need = n.div_ceil(per);
    if out.ids.len() < need {
        return Err(KernelError::Invalid(format!(
            "result of {n} elements needs {need} output ids, {} given",
            out.ids.len()
        )));
    }
    for (id, chunk) in out.ids.iter().zip(bytes.chunks(per * elem_size)) {
        io.write(*id, chunk)?;
    }
    Ok(n as u64)
}

/// Reads a whole `u64` vector.
pub(crate) fn read_u64s<I: ChunkIo + ?Sized>(
    io: &I,
    vec: &VecRef,
) -> Result<Vec<u64>, KernelError> {
    if vec.ty != ElemType::U64 {
        return Err(KernelError::TypeMismatch(format!(
            "index vector must be u64, not {:?}",
            vec.ty
        )));
    }
    let mut v = Vec::with_capacity(capacity_hint(vec.len()));
    for_each_elem::<u64, I>(io, vec, |x| v.push(x))?;
    Ok(v)
}

/// Sequential reading of a vector in blocks whose boundaries need not match its chunks', so that
/// vectors with different chunkings can be read in lockstep.
pub(crate) struct Stream<'v> {
    pub(crate) vec: &'v VecRef,
    pub(crate) chunk: usize,
    pub(crate) off: usize,
}

impl<'v> Stream<'v> {
    pub(crate) fn new(vec: &'v VecRef) -> Self {
        Self {
            vec,
            chunk: 0,
            off: 0,
        }
    }

    /// A stream starting at element `start` (at the end if the vector is shorter).
    pub(crate) fn at(vec: &'v VecRef, start: u64) -> Self {
        let mut s = Self::new(vec);
        let mut left = start;
        while let Some(&(_, count)) = vec.chunks.get(s.chunk) {
            if left < u64::from(count) {
                s.off = left as usize;
                break;
            }
            left -= u64::from(count);
            s.chunk += 1;
        }
        s
    }

    /// Replaces `out` with the next up to `n` elements, widened (fewer only at the end).
    pub(crate) fn next<W: Wide, I: ChunkIo + ?Sized>(
        &mut self,
        io: &I,
        n: usize,
        out: &mut Vec<W>,
    ) -> Result<(), KernelError> {
        self.next_map(io, n, out, |x: W| x)
    }

    /// Replaces `out` with `f` of the next up to `n` elements, widened.
    pub(crate) fn next_map<W: Wide, T, I: ChunkIo + ?Sized>(
        &mut self,
        io: &I,
        n: usize,
        out: &mut Vec<T>,
        f: impl Fn(W) -> T,
    ) -> Result<(), KernelError> {
        out.clear();
        let ty = self.vec.ty;
        self.next_bytes(io, n, |bytes| W::decode(ty, bytes, &mut |x| out.push(f(x))))
    }

    /// Replaces `out` with the raw little-endian bytes of the next up to `n` elements.
    pub(crate) fn next_raw<I: ChunkIo + ?Sized>(
        &mut self,
        io: &I,
        n: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), KernelError> {
        out.clear();
        self.next_bytes(io, n, |bytes| {
            out.extend_from_slice(bytes);
            Ok(())
        })
    }

    /// Calls `f` with the bytes of the next up to `n` elements (fewer only at the end), one
    /// slice per chunk they span.
    pub(crate) fn next_bytes<I: ChunkIo + ?Sized>(
        &mut self,
        io: &I,
        n: usize,
        mut f: impl FnMut(&[u8]) -> Result<(), KernelError>,
    ) -> Result<(), KernelError> {
        let size = self.vec.ty.size();
        let mut done = 0;
        while done < n && self.chunk < self.vec.chunks.len() {
            let (id, count) = self.vec.chunks[self.chunk];
            let count = count as usize;
            let take = (count - self.off).min(n - done);
            let (lo, hi) = (self.off * size, (self.off + take) * size);
            let mut res = Ok(());
            io.read(id, &mut |bytes| {
                res = if bytes.len() < count * size {
                    Err(KernelError::ShortChunk {
                        id,
                        needed: (count * size) as u64,
                        actual: bytes.len() as u64,
                    })
                } else {
                    f(&bytes[lo..hi])
                };
            })?;
            res?;
            done += take;
            self.off += take;
            if self.off == count {
                self.chunk += 1;
                self.off = 0;
            }
        }
        Ok(())
    }
}

/// Rows read per block by the multi-vector kernels.
pub(crate) const BLOCK: usize = 8192;

/// Elements to reserve for a vector whose length a client *declared*: at most 1 Mi, so a
/// request naming huge chunk counts cannot make the server allocate before any data is read
/// (the buffer still grows to the real length as chunks arrive).
pub(crate) fn capacity_hint(declared: u64) -> usize {
    usize::try_from(declared.min(1 << 20)).unwrap_or(0)
}
