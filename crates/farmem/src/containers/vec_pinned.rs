//! [`PinnedVec`]: a whole [`FarVec`] made local and held in place, indexed like a slice.
//!
//! For a vector that fits the local budget and is read at random many times (the previous
//! iteration's values of PageRank, a lookup table): an element read is a shift, a mask and two
//! loads (the chunk's address from a small table, then the element), with no handle word to check
//! and no scope to keep, because every chunk holds a pin that the evacuator respects.

use bytemuck::Pod;

use super::error::{ContainerError, Result};
use super::vec::{FarVec, locate};
use crate::Error;

/// A [`FarVec`]'s elements, every chunk local and pinned in place while this guard lives.
///
/// Made by [`FarVec::pin_all`]. Reads cost about a `Vec` index plus one load from a table of
/// chunk addresses that stays in the L1 cache. While it lives, the vector's chunks take local
/// memory the evacuator cannot reclaim, so keep it for a phase of random reads, then drop it.
///
/// ```
/// use farmem::{Runtime, RuntimeConfig};
/// use farmem::containers::FarVec;
/// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
/// let v = FarVec::from_slice(&rt, &(0..100_000u64).collect::<Vec<_>>()).unwrap();
/// let p = v.pin_all().unwrap();
/// assert_eq!(p[99_999] + p[7], 100_006);
/// assert_eq!(p.get(100_000), None);
/// ```
pub struct PinnedVec<'a, T: Pod> {
    vec: &'a FarVec<T>,
    /// Chunk `c`'s payload, pinned.
    chunks: Vec<*const T>,
    len: usize,
    chunk_len: usize,
    shift: u32,
}

impl<T: Pod + Send + Sync> FarVec<T> {
    /// Makes every chunk local and pins it in place until the returned guard is dropped (see
    /// [`PinnedVec`]): the fastest form of many random reads of a vector that fits the local
    /// budget.
    ///
    /// The chunks are moved next to each other in local memory as they are pinned, so the
    /// space their pins keep from the evacuator is about the vector's size, and everything
    /// else in the budget stays free to evict.
    ///
    /// # Errors
    /// [`Error::LocalHeapExhausted`] (with `pinned` set), before anything is pinned, when the
    /// packed chunks and the room the runtime needs to keep working (two regions: one to
    /// allocate in, one for the evacuator to compact into) would not fit the local budget; the
    /// runtime's error when a chunk cannot be fetched, or [`Error::TooManyPins`] when 15
    /// guards of the vector are alive already.
    pub fn pin_all(&self) -> Result<PinnedVec<'_, T>> {
        let footprint = self
            .rt
            .packed_footprint(self.chunks.len(), self.chunk_len * size_of::<T>());
        if footprint.saturating_add(2 * self.rt.region_size()) > self.rt.budget() {
            return Err(ContainerError::Runtime(Error::LocalHeapExhausted {
                budget: self.rt.budget(),
                in_use: self.rt.local_bytes(),
                pinned: true,
                cause: None,
            }));
        }
        let mut p = PinnedVec {
            vec: self,
            chunks: Vec::with_capacity(self.chunks.len()),
            len: self.len,
            chunk_len: self.chunk_len,
            shift: self.shift,
        };
        for ch in &self.chunks {
            // On an error, dropping `p` takes back the pins made so far.
            p.chunks.push(ch.hold_packed()?);
        }
        Ok(p)
    }
}

impl<T: Pod> PinnedVec<'_, T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the vector is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element `index`, or `None` past the end.
    #[inline(always)]
    pub fn get(&self, index: usize) -> Option<&T> {
        if index >= self.len {
            return None;
        }
        let (c, o) = locate(index, self.chunk_len, self.shift);
        let chunk = *self.chunks.get(c)?;
        // The chunk is local and pinned until `drop` unpins it, and the guard borrows the vector
        // shared, so nobody writes it; the returned reference borrows the guard.
        // SAFETY: `chunk` is chunk `c`'s pinned payload of at least `o + 1` `T: Pod` values.
        let value = unsafe { &*chunk.add(o) };
        Some(value)
    }
}

impl<T: Pod> std::ops::Index<usize> for PinnedVec<'_, T> {
    type Output = T;

    /// # Panics
    /// Panics if `index` is out of bounds, as a slice does; [`PinnedVec::get`] does not.
    #[inline(always)]
    fn index(&self, index: usize) -> &T {
        match self.get(index) {
            Some(v) => v,
            None => panic!("index {index} out of bounds for a vector of {}", self.len),
        }
    }
}

impl<T: Pod> Drop for PinnedVec<'_, T> {
    fn drop(&mut self) {
        for ch in &self.vec.chunks[..self.chunks.len()] {
            ch.unhold();
        }
    }
}

impl<T: Pod> std::fmt::Debug for PinnedVec<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedVec")
            .field("len", &self.len)
            .field("chunks", &self.chunks.len())
            .finish_non_exhaustive()
    }
}

// SAFETY: the guard only reads through its pointers (into chunks it pinned of a vector it
// borrows shared), as a `&[T]` would; `T: Sync` makes that shareable and sendable.
unsafe impl<T: Pod + Sync> Send for PinnedVec<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Pod + Sync> Sync for PinnedVec<'_, T> {}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::containers::FarVec;
    use crate::{Runtime, RuntimeConfig};

    #[test]
    fn reads_every_element_and_survives_eviction_pressure() {
        let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
        let v = FarVec::from_slice(&rt, &(0..300_000u64).collect::<Vec<_>>()).unwrap();
        let p = v.pin_all().unwrap();
        // Fill the rest of the budget several times over: the pinned chunks stay.
        for _ in 0..6 {
            let filler = FarVec::from_slice(&rt, &vec![1u8; 8 << 20]).unwrap();
            drop(filler);
        }
        crate::runtime::test_support::evacuate_now(&rt);
        assert!((0..300_000).step_by(997).all(|i| p[i] == i as u64));
        assert_eq!(p.get(300_000), None);
        assert_eq!(p.len(), 300_000);
        drop(p);
        crate::runtime::test_support::evacuate_now(&rt);
        assert_eq!(v.get(299_999).unwrap(), 299_999);
    }

    /// The PageRank contributions at 25% local memory: the vector to pin is local, but its
    /// chunks are scattered over every region of the budget among another vector's. Pinned
    /// where they were, they kept every region from the evacuator and the reads that followed
    /// failed with `LocalHeapExhausted`; packed, they keep about their own size.
    #[test]
    fn a_vector_scattered_over_every_region_is_pinned_with_room_left_to_work() {
        const CHUNK: usize = 512;
        const CHUNKS: usize = 124;
        let cfg = RuntimeConfig::new(2 << 20)
            .region_size(64 << 10)
            .lanes(1)
            .watermarks(0.99, 0.95)
            .alloc_timeout(std::time::Duration::from_secs(2));
        let rt = Runtime::new(cfg).unwrap();
        let big = FarVec::from_slice(&rt, &vec![3u64; 1 << 20]).unwrap();
        let vec_of = |fill: u64| {
            let mut v = FarVec::with_chunk_bytes(&rt, CHUNK * 8).unwrap();
            v.resize(CHUNK * CHUNKS, fill).unwrap();
            v
        };
        let (a, others) = (vec_of(1), [vec_of(2), vec_of(4), vec_of(8)]);
        crate::runtime::test_support::evacuate_now(&rt);
        // One chunk of `a`, then one of each other vector: `a` lands in every region.
        for c in 0..CHUNKS {
            assert_eq!(a.chunk(c).unwrap()[0], 1);
            for (o, fill) in others.iter().zip([2, 4, 8]) {
                assert_eq!(o.chunk(c).unwrap()[0], fill);
            }
        }
        let p = a.pin_all().unwrap();
        // Everything else can go: what stays is about the pinned chunks' own size (8.3 regions
        // of 64 KiB: 15 chunks of 4 KiB and their trailers fill one), where pinned in place they
        // kept the whole budget. (Twice: regions the background evacuator holds are out of reach
        // of one call.)
        for _ in 0..2 {
            crate::runtime::test_support::evacuate_now(&rt);
        }
        let kept = rt.local_bytes();
        assert!(kept <= rt.budget() / 2, "{kept} bytes kept");
        // New objects, made outside any scope: room for them must come from the evacuator.
        let fresh = FarVec::from_slice(&rt, &vec![5u64; 1 << 19]).unwrap();
        let mut sum = 0;
        for c in big.chunks().chain(fresh.chunks()) {
            sum += c.unwrap().iter().sum::<u64>();
        }
        assert_eq!(sum, (3 << 20) + (5 << 19));
        assert!((0..CHUNK * CHUNKS).step_by(97).all(|i| p[i] == 1));
    }

    #[test]
    fn a_vector_larger_than_the_budget_is_refused() {
        let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
        let v = FarVec::from_slice(&rt, &vec![3u64; 3 << 20]).unwrap();
        assert!(v.pin_all().is_err());
        assert_eq!(v.get(5).unwrap(), 3);
    }
}
