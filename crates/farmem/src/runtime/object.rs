//! The object protocol: dereference slow path, fetch, self-move, flush, invalidate, free,
//! prefetch. Everything here changes a handle word only through [`Slot`]: by compare-and-swap, or
//! by a plain store while holding the word's `BUSY` claim.

use super::Inner;
use super::access::{Resolved, resolve};
use super::epoch::{Scope, backoff};
use super::heap::{Allocation, Lane};
use super::slot::Slot;
use super::stats::Counters;
use super::word::{Mode, Word};
use crate::error::{Error, Result};

/// Copies `len` bytes between two local object payloads.
///
/// # Safety
/// Both ranges must be valid, non-overlapping, and nobody may write `src` or access `dst`
/// meanwhile.
unsafe fn copy(src: usize, dst: usize, len: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, len) }
}

impl Inner {
    /// The slow path of a dereference: returns the payload address once the object is local and
    /// its word carries the bits `mode` needs (see [`resolve`]).
    #[cold]
    #[inline(never)]
    pub(crate) fn deref_slow(
        &self,
        idx: u32,
        slot: &Slot,
        mode: Mode,
        scope: &Scope<'_>,
    ) -> Result<usize> {
        let Resolved { addr, hit } = resolve(
            slot,
            mode,
            |w| self.fetch(idx, slot, w, mode, scope),
            |w| self.self_move(idx, slot, w),
        )?;
        if hit {
            self.counters.with(|c| c.add_hits(1));
        }
        Ok(addr)
    }

    /// Fetches a non-present object; `None` when another thread changed the word first.
    ///
    /// Local space is found before the object is claimed (BUSY), so other threads never wait
    /// for an object whose fetcher waits for memory; while it waits, a `scope` that pins nothing
    /// yet does not hold the evacuator up (see `Inner::alloc_space`).
    fn fetch(
        &self,
        idx: u32,
        slot: &Slot,
        w: Word,
        mode: Mode,
        scope: &Scope<'_>,
    ) -> Result<Option<usize>> {
        let lane = if mode.is_nt() {
            Lane::Nt
        } else {
            self.mutator_lane()
        };
        let a = self.alloc_space(lane, idx, slot.len(), Some(scope))?;
        match self.fill(a, slot, w, mode)? {
            Ok(at) => Ok(Some(at)),
            Err(a) => {
                self.heap.abandon(a);
                Ok(None)
            }
        }
    }

    /// Claims the word `w` of `slot` and makes `a` (space for the object) its local copy: the
    /// object is fetched into it, or, if `w` is a local region object (not pinned), moved into
    /// it, cancelling any evacuator mark. Returns the new address, or gives `a` back when the
    /// word changed first.
    ///
    /// # Errors
    /// The backend's error when the fetch fails (`a` is then given up).
    fn fill(
        &self,
        a: Allocation,
        slot: &Slot,
        w: Word,
        mode: Mode,
    ) -> Result<std::result::Result<usize, Allocation>> {
        debug_assert!(!w.is_present() || (!w.is_large() && w.pins() == 0));
        if !slot.claim(w) {
            return Ok(Err(a));
        }
        let len = slot.len();
        let at = a.ptr.as_ptr() as usize;
        if w.is_present() {
            // We hold BUSY, so nobody else moves, evicts or frees the object, and the caller's
            // scope keeps its region from being reused; other references to it are shared ones.
            // SAFETY: the source is `len` unwritten bytes; the destination our unpublished `len`.
            unsafe { copy(w.addr(), at, len) };
            slot.store(w.relocated(at));
            self.heap.publish(a);
            self.counters.with(|c| Counters::bump(&c.self_moves, 1));
            return Ok(Ok(at));
        }
        // SAFETY: the allocation is `len` bytes that nobody else can reach before publication.
        let buf = unsafe { std::slice::from_raw_parts_mut(a.ptr.as_ptr(), len) };
        if let Err(e) = self.backend.get_into(slot.id(), buf) {
            slot.store(w);
            self.heap.abandon(a);
            return Err(e.into());
        }
        slot.store(Word::fetched(at, a.is_large(), mode));
        self.heap.publish(a);
        self.counters.with(|c| {
            Counters::bump(&c.misses, 1);
            Counters::bump(&c.bytes_fetched, len as u64);
        });
        Ok(Ok(at))
    }

    /// Makes the object local in a region of the packed lane (fetching it there, or moving it
    /// there from a region shared with other objects) and pins it where it is, with no scope
    /// left open; returns the payload address. Objects pinned this way for a long phase fill
    /// regions of their own, so the evacuator can still free every other region, where pins
    /// scattered over shared regions would keep them all. Dedicated allocations and objects
    /// pinned already stay where they are.
    ///
    /// # Errors
    /// As a fetch, or [`Error::TooManyPins`].
    pub(crate) fn hold_packed(&self, idx: u32, slot: &Slot, mode: Mode) -> Result<usize> {
        // Space found but not used yet (the word changed while we waited for it): kept for
        // the next attempt rather than left as a hole in the packed lane.
        let mut spare = None;
        let r = self.hold_packed_with(idx, slot, mode, &mut spare);
        if let Some(a) = spare {
            self.heap.abandon(a);
        }
        r
    }

    fn hold_packed_with(
        &self,
        idx: u32,
        slot: &Slot,
        mode: Mode,
        spare: &mut Option<Allocation>,
    ) -> Result<usize> {
        let mut spins = 0;
        loop {
            let s = Scope::new(&self.counters);
            let w = slot.load();
            if w.is_busy() {
                drop(s);
                backoff(&mut spins);
                continue;
            }
            let at = if w.is_present()
                && (w.is_large() || w.pins() > 0 || self.heap.is_packed(w.addr()))
            {
                self.deref_slow(idx, slot, mode, &s)?
            } else {
                let a = match spare.take() {
                    Some(a) => a,
                    None => self.alloc_space(Lane::Packed, idx, slot.len(), Some(&s))?,
                };
                match self.fill(a, slot, w, mode)? {
                    Ok(at) => at,
                    Err(a) => {
                        *spare = Some(a);
                        continue;
                    }
                }
            };
            if super::pin::pin_at(slot, at) {
                return Ok(at);
            }
            if slot.load().pins() == super::word::MAX_PINS {
                return Err(Error::TooManyPins);
            }
        }
    }

    /// Moves an object the evacuator marked into this thread's lane, or cancels the mark when
    /// there is no room (or the object is a dedicated allocation, which never moves).
    fn self_move(&self, idx: u32, slot: &Slot, w: Word) {
        if !slot.claim(w) {
            return;
        }
        let len = slot.len();
        // Within the budget if possible, else from the slack reserved for this (see
        // `RuntimeConfig::slack_regions`).
        let lane = self.mutator_lane();
        let a = if w.is_large() {
            None
        } else {
            self.heap
                .alloc(lane, idx, len, self.heap.limit())
                .or_else(|| {
                    self.heap
                        .alloc(lane, idx, len, self.heap.limit() + self.heap.slack)
                })
        };
        let Some(a) = a else {
            slot.store(w.unmarked());
            return;
        };
        let to = a.ptr.as_ptr() as usize;
        // SAFETY: we hold BUSY, so nobody else moves, evicts or frees the object; any other
        // reference to it is a shared one (a writer would hold the FarBox exclusively), so the
        // source is not written; the destination is our unpublished allocation.
        unsafe { copy(w.addr(), to, len) };
        slot.store(w.self_moved(to));
        self.heap.publish(a);
        self.counters.with(|c| Counters::bump(&c.self_moves, 1));
    }

    /// Writes a dirty local copy to the backend, keeping it local and clean.
    pub(crate) fn flush(&self, slot: &Slot) -> Result<()> {
        let Some(w) = slot.claim_when(|w| w.is_present() && w.needs_writeback()) else {
            return Ok(());
        };
        let len = slot.len();
        // SAFETY: we hold BUSY so the copy stays put; the caller holds the box shared, so nobody
        // holds a mutable reference into it.
        let bytes = unsafe { std::slice::from_raw_parts(w.addr() as *const u8, len) };
        match self.backend.put(slot.id(), bytes) {
            Ok(()) => {
                slot.store(w.cleaned());
                self.counters
                    .with(|c| Counters::bump(&c.bytes_written_back, len as u64));
                Ok(())
            }
            Err(e) => {
                slot.store(w);
                Err(e.into())
            }
        }
    }

    /// Writes every listed dirty local copy back with batched `put_many` calls (one per
    /// `writeback_batch` bytes); the copies stay local and become clean. Returns how many objects
    /// it wrote.
    ///
    /// Never waits for an object while holding others: when it meets one that is `BUSY`, it
    /// first sends (and releases) the batch collected so far. That rules out a deadlock with the
    /// evacuator, which holds a write-back batch while acquiring the next object.
    pub(crate) fn flush_many(&self, slots: &[&Slot]) -> Result<usize> {
        let wants = |w: Word| w.is_present() && w.needs_writeback();
        let mut batch: Vec<(&Slot, Word)> = Vec::new();
        let mut bytes = 0;
        let mut written = 0;
        for &slot in slots {
            let w = slot.load();
            if !w.is_busy() && !wants(w) {
                continue;
            }
            let claimed = if !w.is_busy() && slot.claim(w) {
                Some(w)
            } else {
                written += self.write_batch(&mut batch)?;
                bytes = 0;
                slot.claim_when(wants)
            };
            if let Some(w) = claimed {
                batch.push((slot, w));
                bytes += slot.len();
                if bytes >= self.cfg.writeback_batch {
                    written += self.write_batch(&mut batch)?;
                    bytes = 0;
                }
            }
        }
        written += self.write_batch(&mut batch)?;
        Ok(written)
    }

    /// Sends one `put_many` for objects whose `BUSY` bit we hold, and releases them: clean on
    /// success, unchanged (still dirty) on failure.
    fn write_batch(&self, batch: &mut Vec<(&Slot, Word)>) -> Result<usize> {
        if batch.is_empty() {
            return Ok(0);
        }
        let items: Vec<(u64, &[u8])> = batch
            .iter()
            .map(|&(slot, w)| {
                // SAFETY: we hold BUSY on the object, so its local copy stays put; the caller
                // holds the owners shared, so nobody holds a mutable reference into it.
                let b = unsafe { std::slice::from_raw_parts(w.addr() as *const u8, slot.len()) };
                (slot.id(), b)
            })
            .collect();
        let res = self.backend.put_many(&items);
        let len: usize = items.iter().map(|(_, b)| b.len()).sum();
        drop(items);
        let n = batch.len();
        for (slot, w) in batch.drain(..) {
            slot.store(if res.is_ok() { w.cleaned() } else { w });
        }
        res?;
        self.counters
            .with(|c| Counters::bump(&c.bytes_written_back, len as u64));
        Ok(n)
    }

    /// Drops the local copy so the next dereference fetches the far copy.
    pub(crate) fn invalidate(&self, slot: &Slot) -> Result<()> {
        let mut no_far = false;
        let Some(w) = slot.claim_when(|w| {
            no_far = !w.has_far_copy();
            w.is_present() && !no_far
        }) else {
            return if no_far {
                Err(Error::NoFarCopy)
            } else {
                Ok(())
            };
        };
        if w.is_large() {
            // SAFETY: the caller holds the box exclusively, so no reference into the dedicated
            // allocation exists, and we hold BUSY so nobody else reaches it.
            unsafe { self.heap.free_large(w.addr(), slot.len()) };
        }
        slot.store(Word::FAR);
        Ok(())
    }

    /// Frees an object: its local copy, its far copy (batched) and its slot.
    pub(crate) fn free_object(&self, idx: u32) {
        let Some(slot) = self.slots.get(idx) else {
            return;
        };
        let w = slot.take();
        if w.is_present() && w.is_large() {
            // SAFETY: the owner is dropping the box, so no reference exists, and the word no
            // longer points at the allocation, so the evacuator will not touch it.
            unsafe { self.heap.free_large(w.addr(), slot.len()) };
        }
        if w.has_far_copy() {
            self.frees.queue(slot.id(), &*self.backend);
        }
        self.slots.release(idx);
    }

    /// Fetches the listed non-local objects in one `get_many` (waiting for room for the first
    /// one only, stopping at the first later one that does not fit); returns how many it
    /// fetched.
    /// With `nt`, the objects land in the non-temporal lane (evacuated first) marked `NT`.
    pub(crate) fn prefetch(&self, idxs: &[u32], nt: bool) -> Result<usize> {
        let lane = if nt { Lane::Nt } else { self.mutator_lane() };
        // Find room first, then claim (see `fetch`); allocations for objects that turn out to be
        // claimed by someone else meanwhile are abandoned.
        let mut candidates = Vec::new();
        for &i in idxs {
            let Some(slot) = self.slots.get(i) else {
                continue;
            };
            let w = slot.load();
            if !w.is_present() && !w.is_busy() && w.has_far_copy() {
                if !candidates.is_empty() {
                    // Only the first object waits for room: waiting while holding the
                    // allocations found so far would keep their regions from the evacuator.
                    match self.heap.alloc(lane, i, slot.len(), self.heap.limit()) {
                        Some(a) => candidates.push((slot, w, a)),
                        None => {
                            self.wake_evacuator();
                            break;
                        }
                    }
                    continue;
                }
                match self.alloc_space(lane, i, slot.len(), None) {
                    Ok(a) => candidates.push((slot, w, a)),
                    Err(e) => return Err(e),
                }
            }
        }
        let mut claimed: Vec<(&Slot, Word)> = Vec::new();
        let mut allocs = Vec::new();
        for (slot, w, a) in candidates {
            if slot.claim(w) {
                claimed.push((slot, w));
                allocs.push(a);
            } else {
                self.heap.abandon(a);
            }
        }
        if claimed.is_empty() {
            return Ok(0);
        }
        let ids: Vec<u64> = claimed.iter().map(|(s, _)| s.id()).collect();
        let data = match self.backend.get_many(&ids) {
            Ok(d) if d.len() == ids.len() => d,
            Ok(d) => {
                self.undo_claims(&claimed, allocs);
                return Err(Error::Backend(crate::BackendError::Protocol(
                    crate::backend::ProtocolError::WrongCount {
                        what: "get_many",
                        expected: ids.len(),
                        actual: d.len(),
                    },
                )));
            }
            Err(e) => {
                self.undo_claims(&claimed, allocs);
                return Err(e.into());
            }
        };
        let mut fetched = 0;
        let mut bytes = 0;
        let mut bad = None;
        for ((&(slot, w), a), d) in claimed.iter().zip(allocs).zip(data) {
            if d.len() != a.len {
                bad = Some(Error::Backend(crate::BackendError::SizeMismatch {
                    id: slot.id(),
                    expected: a.len as u64,
                    actual: d.len() as u64,
                }));
                slot.store(w);
                self.heap.abandon(a);
                continue;
            }
            let at = a.ptr.as_ptr() as usize;
            // SAFETY: `d` is a separate buffer of `a.len` bytes; `a` is our unpublished allocation.
            unsafe { copy(d.as_ptr() as usize, at, a.len) };
            // A prefetched object is neither hot nor dirty; `NT` only for non-temporal ones.
            slot.store(Word::fetched(at, a.is_large(), Mode::ReadNt).with_nt(nt));
            self.heap.publish(a);
            fetched += 1;
            bytes += d.len() as u64;
        }
        self.counters.with(|c| {
            Counters::bump(&c.prefetched, fetched as u64);
            Counters::bump(&c.bytes_fetched, bytes);
        });
        match bad {
            Some(e) => Err(e),
            None => Ok(fetched),
        }
    }

    fn undo_claims(&self, claimed: &[(&Slot, Word)], allocs: Vec<Allocation>) {
        for a in allocs {
            self.heap.abandon(a);
        }
        for &(slot, w) in claimed {
            slot.store(w);
        }
    }
}
