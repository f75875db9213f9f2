//! The memory of one heap segment: an anonymous mapping of its own, so that a dropped segment
//! goes back to the operating system whole (never a hole in the process's allocator heap that
//! smaller allocations split and pin), and the part never written costs no resident memory.
//!
//! Each segment is one mapping (adjacent ones usually merge into one kernel mapping); where the
//! system refuses more mappings (`vm.max_map_count`), a segment is a zeroed allocation of the
//! process's allocator instead, which works the same, only without the whole return.

use memmap2::MmapMut;

enum Memory {
    None,
    Mapped(MmapMut),
    Allocated(Box<[u8]>),
}

/// Bytes written from the start of a fixed-size zeroed block: appended to, never moved.
pub(crate) struct SegBuf {
    mem: Memory,
    len: usize,
}

impl Default for SegBuf {
    fn default() -> Self {
        Self {
            mem: Memory::None,
            len: 0,
        }
    }
}

impl SegBuf {
    /// An empty buffer of `cap` zeroed bytes.
    pub(crate) fn with_capacity(cap: usize) -> Self {
        let mem = match MmapMut::map_anon(cap) {
            Ok(m) => Memory::Mapped(m),
            Err(e) => {
                tracing::debug!(error = %e, "no mapping for a heap segment: allocating it");
                Memory::Allocated(vec![0u8; cap].into_boxed_slice())
            }
        };
        Self { mem, len: 0 }
    }

    fn block(&self) -> &[u8] {
        match &self.mem {
            Memory::None => &[],
            Memory::Mapped(m) => m,
            Memory::Allocated(b) => b,
        }
    }

    fn block_mut(&mut self) -> &mut [u8] {
        match &mut self.mem {
            Memory::None => &mut [],
            Memory::Mapped(m) => m,
            Memory::Allocated(b) => b,
        }
    }

    /// Bytes of the block.
    pub(crate) fn capacity(&self) -> usize {
        self.block().len()
    }

    /// Appends `bytes`.
    ///
    /// # Panics
    /// Past the capacity.
    pub(crate) fn extend_from_slice(&mut self, bytes: &[u8]) {
        let at = self.len;
        self.block_mut()[at..at + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Extends the written part to `len` bytes with zeros (the block's bytes past what was
    /// written are still zero).
    ///
    /// # Panics
    /// Past the capacity.
    pub(crate) fn pad_to(&mut self, len: usize) {
        assert!(len <= self.capacity(), "padding past a segment's end");
        self.len = self.len.max(len);
    }
}

impl std::ops::Deref for SegBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.block()[..self.len]
    }
}

impl std::ops::DerefMut for SegBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.block_mut()[..len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_pads_and_reads_back() {
        let mut b = SegBuf::with_capacity(4096);
        assert_eq!((b.len(), b.capacity()), (0, 4096));
        b.extend_from_slice(&[1, 2, 3]);
        b.pad_to(8);
        b.extend_from_slice(&[9; 8]);
        assert_eq!(&b[..], &[1, 2, 3, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9]);
        b[0] = 7;
        assert_eq!(b[0], 7);
        let empty = std::mem::take(&mut b);
        assert_eq!((b.len(), b.capacity(), empty.len()), (0, 0, 16));
    }
}
