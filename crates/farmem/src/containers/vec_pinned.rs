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
    /// # Errors
    /// [`Error::LocalHeapExhausted`] (with `pinned` set) when the vector is larger than the
    /// local budget; the runtime's error when a chunk cannot be fetched, or
    /// [`Error::TooManyPins`] when 15 guards of the vector are alive already.
    pub fn pin_all(&self) -> Result<PinnedVec<'_, T>> {
        let bytes = self.chunks.len() * self.chunk_len * size_of::<T>();
        if bytes > self.rt.budget() {
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
            p.chunks.push(ch.hold()?);
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
        // SAFETY: `chunk` is the payload of chunk `c`, local and pinned (so neither moved nor
        // evicted) until `drop` unpins it, holding at least `o + 1` values (`index < len`) of a
        // `T: Pod` (any bits valid); the guard borrows the vector shared, so nobody writes it,
        // and the returned reference borrows the guard.
        Some(unsafe { &*chunk.add(o) })
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

    #[test]
    fn a_vector_larger_than_the_budget_is_refused() {
        let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
        let v = FarVec::from_slice(&rt, &vec![3u64; 3 << 20]).unwrap();
        assert!(v.pin_all().is_err());
        assert_eq!(v.get(5).unwrap(), 3);
    }
}
