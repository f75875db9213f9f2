//! Object handles: one stable 8-byte word per far object, plus its id and size.
//!
//! A [`FarBox`](crate::FarBox) points at its [`Slot`]. The slot's `word` holds the object's local
//! address (high 48 bits) and state bits (low 16 bits); a hit loads it, checks the bits and uses
//! the address. Slots live in fixed chunks that are never freed while the runtime lives, so a
//! slot pointer stays valid; freed slots are reused (with a new generation, which invalidates
//! stale [`FarPtr`](crate::FarPtr)s).

use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64 as StdAtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::loom::AtomicU64;

/// Bits of a handle word.
///
/// The word is `address << ADDR_SHIFT | flags`. The bits a hit checks fill the low byte, so a
/// read hit is one byte compare (`word as u8 == PRESENT | HOT`: present, hot, not moving, not
/// busy, not counted) and the address is one shift; a write hit also tests `DIRTY`.
pub(crate) mod bits {
    /// Where the local address of the payload starts.
    pub(crate) const ADDR_SHIFT: u32 = 16;
    /// Local address of the payload (user-space addresses fit 48 bits).
    pub(crate) const ADDR: u64 = !((1 << ADDR_SHIFT) - 1);
    /// The local copy at `ADDR` is valid.
    pub(crate) const PRESENT: u64 = 1 << 7;
    /// Dereferenced since the evacuator last looked (CLOCK bit).
    pub(crate) const HOT: u64 = 1 << 6;
    /// The evacuator wants to move or evict the object (see `epoch`).
    pub(crate) const MOVING: u64 = 1 << 5;
    /// Someone is moving, fetching, evicting or flushing the object; others wait.
    pub(crate) const BUSY: u64 = 1 << 4;
    /// The runtime counts every hit (`RuntimeConfig::count_hits`): hits leave the one-compare
    /// path for the one that also counts. Set in every present word of such a runtime.
    pub(crate) const COUNT: u64 = 1 << 3;
    /// The local copy differs from the far copy.
    pub(crate) const DIRTY: u64 = 1 << 8;
    /// Fetched by a non-temporal access: evict first, not hot.
    pub(crate) const NT: u64 = 1 << 9;
    /// A far copy exists (it must be freed with the object).
    pub(crate) const REMOTE: u64 = 1 << 10;
    /// The local copy is a dedicated allocation, not in a region.
    pub(crate) const LARGE: u64 = 1 << 11;

    /// The address bits of a word naming local address `at`.
    #[inline(always)]
    pub(crate) const fn addr_bits(at: usize) -> u64 {
        debug_assert!((at as u64) >> (64 - ADDR_SHIFT) == 0);
        (at as u64) << ADDR_SHIFT
    }

    /// The local address in word `w`.
    #[inline(always)]
    pub(crate) const fn addr(w: u64) -> usize {
        (w >> ADDR_SHIFT) as usize
    }
}

/// Owner states of a slot.
pub(crate) const FREE: u32 = 0;
/// Owned by a `FarBox`/`FarSlice`.
pub(crate) const BOXED: u32 = 1;
/// Detached: owned by whoever holds its `FarPtr`.
pub(crate) const DETACHED: u32 = 2;

/// One far object's handle.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) word: AtomicU64,
    pub(crate) id: StdAtomicU64,
    pub(crate) len: AtomicUsize,
    pub(crate) generation: AtomicU32,
    pub(crate) owner: AtomicU32,
}

impl Slot {
    pub(crate) fn new() -> Self {
        Self {
            word: AtomicU64::new(0),
            id: StdAtomicU64::new(0),
            len: AtomicUsize::new(0),
            generation: AtomicU32::new(0),
            owner: AtomicU32::new(FREE),
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id.load(Ordering::Relaxed)
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

const CHUNK_BITS: u32 = 16;
const CHUNK: usize = 1 << CHUNK_BITS;
const MAX_CHUNKS: usize = 1 << 16;

/// All slots of a runtime.
pub(crate) struct SlotTable {
    chunks: Box<[AtomicPtr<Slot>]>,
    nchunks: AtomicUsize,
    free: Mutex<Vec<u32>>,
}

impl SlotTable {
    pub(crate) fn new() -> Self {
        Self {
            chunks: (0..MAX_CHUNKS)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            nchunks: AtomicUsize::new(0),
            free: Mutex::new(Vec::new()),
        }
    }

    /// The slot with index `idx`, if it was ever allocated.
    #[inline]
    pub(crate) fn get(&self, idx: u32) -> Option<&Slot> {
        let chunk = self.chunks[(idx >> CHUNK_BITS) as usize].load(Ordering::Acquire);
        if chunk.is_null() {
            return None;
        }
        // SAFETY: a non-null chunk pointer is a leaked `Box<[Slot; CHUNK]>` that stays alive until
        // `self` drops, and the offset is below CHUNK.
        Some(unsafe { &*chunk.add(idx as usize & (CHUNK - 1)) })
    }

    /// Allocates a slot, owned by a box, with the given id and length; its word is 0.
    pub(crate) fn alloc(&self, id: u64, len: usize) -> Result<u32> {
        let idx = {
            let mut free = self.free.lock();
            if free.is_empty() {
                let n = self.nchunks.load(Ordering::Relaxed);
                if n == MAX_CHUNKS {
                    return Err(Error::TooManyObjects);
                }
                let chunk: Box<[Slot]> = (0..CHUNK).map(|_| Slot::new()).collect();
                let p = Box::into_raw(chunk).cast::<Slot>();
                self.chunks[n].store(p, Ordering::Release);
                self.nchunks.store(n + 1, Ordering::Relaxed);
                let base = (n * CHUNK) as u32;
                free.extend((0..CHUNK as u32).rev().map(|i| base + i));
            }
            free.pop().ok_or(Error::TooManyObjects)?
        };
        let slot = self.get(idx).ok_or(Error::TooManyObjects)?;
        slot.id.store(id, Ordering::Relaxed);
        slot.len.store(len, Ordering::Relaxed);
        slot.owner.store(BOXED, Ordering::Relaxed);
        Ok(idx)
    }

    /// Returns a slot whose object is gone.
    pub(crate) fn release(&self, idx: u32) {
        if let Some(slot) = self.get(idx) {
            slot.generation.fetch_add(1, Ordering::Relaxed);
            slot.owner.store(FREE, Ordering::Release);
            self.free.lock().push(idx);
        }
    }

    /// Calls `f` for every slot ever allocated.
    pub(crate) fn for_each(&self, mut f: impl FnMut(u32, &Slot)) {
        let n = self.nchunks.load(Ordering::Acquire);
        for i in 0..(n * CHUNK) as u32 {
            if let Some(s) = self.get(i) {
                f(i, s);
            }
        }
    }
}

impl Drop for SlotTable {
    fn drop(&mut self) {
        for c in self.chunks.iter() {
            let p = c.load(Ordering::Acquire);
            if !p.is_null() {
                let raw = std::ptr::slice_from_raw_parts_mut(p, CHUNK);
                // SAFETY: `p` came from `Box::into_raw` of a CHUNK-long boxed slice, and the table
                // (and so every slot reference) is being dropped.
                drop(unsafe { Box::from_raw(raw) });
            }
        }
    }
}
