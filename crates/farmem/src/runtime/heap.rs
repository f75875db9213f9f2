//! The local object heap: log-structured regions plus dedicated allocations for large objects.
//!
//! The heap reserves one arena of `budget + slack` bytes (lazily backed by the OS) and cuts it into
//! regions. Each allocation lane (mutator lanes, the non-temporal lane, one per evacuator) bumps
//! through one open region; a full region is sealed and queued for the evacuator, which empties
//! whole regions (moving hot objects into its own lane, evicting the rest) and gives them back,
//! returning the pages to the OS. Every region is emptied in turn, so dead space never
//! accumulates beyond the regions currently queued.
//!
//! Each object in a region is preceded by a 16-byte header naming its slot and size; an object is
//! live while its slot's word points at it. Objects of at least a quarter region get their own
//! mapping instead.
//!
//! Accounting: `used` counts whole regions taken plus dedicated allocations (page-rounded), and is
//! kept at or below the budget, or budget + slack for allocations that cannot wait.

use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use parking_lot::{Condvar, Mutex};

use crate::sys;

/// Bytes of the trailer after each object in a region: its slot index and length (`u32` each;
/// regions are at most 64 MiB). An object of `len` bytes takes `(len + TRAILER)` rounded up to
/// `ALIGN`, so an 8-byte object takes 16 bytes.
pub(crate) const TRAILER: usize = 8;
/// Alignment of every object payload.
pub(crate) const ALIGN: usize = 16;

/// Bytes a region object of `len` bytes takes, trailer included.
const fn block_size(len: usize) -> usize {
    (len + TRAILER).next_multiple_of(ALIGN)
}

/// The trailer word of slot `slot`'s object of `len` bytes.
fn trailer(slot: u32, len: usize) -> u64 {
    debug_assert!(u32::try_from(len).is_ok());
    u64::from(slot) | ((len as u64) << 32)
}

/// Which open region an allocation bumps through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    /// A mutator lane (index chosen per thread).
    Mutator(usize),
    /// The non-temporal lane: its regions are evacuated first.
    Nt,
    /// The lane of objects about to be pinned for long (`FarVec::pin_all`): packed together, so
    /// that the regions they keep from the evacuator hold nothing else.
    Packed,
    /// An evacuator's compaction target.
    Evacuator(usize),
}

#[derive(Debug)]
struct RegionMeta {
    /// Allocations handed out but not yet published or abandoned.
    pending: AtomicU32,
    /// Bytes used, valid once sealed.
    top: AtomicUsize,
    /// Free with its pages kept (see `Heap::release_region`).
    warm: AtomicBool,
    /// Taken by the packed lane since it was last free.
    packed: AtomicBool,
}

#[derive(Debug, Default)]
struct OpenRegion {
    region: Option<u32>,
    top: usize,
}

/// A live object found in a region.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Resident {
    pub(crate) slot: u32,
    pub(crate) addr: usize,
}

/// Space handed out by [`Heap::alloc`]; must be published or abandoned.
#[derive(Debug)]
#[must_use]
pub(crate) struct Allocation {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) len: usize,
    region: Option<u32>,
    slot: u32,
}

impl Allocation {
    /// Whether this is a dedicated allocation (handle word gets `LARGE`).
    pub(crate) fn is_large(&self) -> bool {
        self.region.is_none()
    }
}

/// The local heap.
pub(crate) struct Heap {
    arena: NonNull<u8>,
    arena_len: usize,
    region_size: usize,
    large_threshold: usize,
    regions: Box<[RegionMeta]>,
    free: Mutex<Vec<u32>>,
    sealed: Mutex<VecDeque<u32>>,
    sealed_nt: Mutex<VecDeque<u32>>,
    large: Mutex<VecDeque<Resident>>,
    lanes: Box<[Mutex<OpenRegion>]>,
    mutator_lanes: usize,
    used: AtomicUsize,
    /// Bytes of free regions whose pages were kept: at most `budget - used`, so the heap's
    /// resident memory stays within the budget as if they had been given back.
    warm: AtomicUsize,
    pub(crate) budget: usize,
    /// Bytes of the budget lent to caches outside the heap (see `Runtime::lend_local`): the
    /// heap's objects keep to `budget - lent`.
    lent: AtomicUsize,
    pub(crate) slack: usize,
    freed_lock: Mutex<()>,
    freed: Condvar,
}

// SAFETY: the arena pointer is only used to compute addresses of regions handed out under the
// heap's own synchronisation; all other fields are Send + Sync.
unsafe impl Send for Heap {}
// SAFETY: as above; shared access goes through atomics and mutexes.
unsafe impl Sync for Heap {}

impl Heap {
    /// Reserves a heap for `budget` bytes plus `slack_regions` regions.
    pub(crate) fn new(
        budget: usize,
        region_size: usize,
        slack_regions: usize,
        mutator_lanes: usize,
        evacuators: usize,
    ) -> std::io::Result<Self> {
        let nregions = budget.div_ceil(region_size) + slack_regions;
        let arena_len = nregions * region_size;
        let arena = sys::map(arena_len)?;
        Ok(Self {
            arena,
            arena_len,
            region_size,
            large_threshold: region_size / 4,
            regions: (0..nregions)
                .map(|_| RegionMeta {
                    pending: AtomicU32::new(0),
                    top: AtomicUsize::new(0),
                    warm: AtomicBool::new(false),
                    packed: AtomicBool::new(false),
                })
                .collect(),
            free: Mutex::new((0..nregions as u32).rev().collect()),
            sealed: Mutex::new(VecDeque::new()),
            sealed_nt: Mutex::new(VecDeque::new()),
            large: Mutex::new(VecDeque::new()),
            lanes: (0..mutator_lanes + 2 + evacuators)
                .map(|_| Mutex::new(OpenRegion::default()))
                .collect(),
            mutator_lanes,
            used: AtomicUsize::new(0),
            warm: AtomicUsize::new(0),
            budget,
            lent: AtomicUsize::new(0),
            slack: slack_regions * region_size,
            freed_lock: Mutex::new(()),
            freed: Condvar::new(),
        })
    }

    /// The bytes the heap's objects keep to: the budget less what is lent to caches.
    #[inline]
    pub(crate) fn limit(&self) -> usize {
        self.budget
            .saturating_sub(self.lent.load(Ordering::Relaxed))
    }

    /// Lends `bytes` of the budget if at least `keep` bytes are left to the heap's objects.
    pub(crate) fn lend(&self, bytes: usize, keep: usize) -> bool {
        self.lent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                let l = l.checked_add(bytes)?;
                (self.budget.saturating_sub(l) >= keep).then_some(l)
            })
            .is_ok()
    }

    /// Takes back `bytes` lent by [`Heap::lend`].
    pub(crate) fn take_back(&self, bytes: usize) {
        self.lent.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bytes in use.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub(crate) fn region_size(&self) -> usize {
        self.region_size
    }

    fn lane_index(&self, lane: Lane) -> usize {
        match lane {
            Lane::Mutator(i) => i % self.mutator_lanes,
            Lane::Nt => self.mutator_lanes,
            Lane::Packed => self.mutator_lanes + 1,
            Lane::Evacuator(i) => {
                self.mutator_lanes + 2 + i % (self.lanes.len() - self.mutator_lanes - 2)
            }
        }
    }

    fn charge(&self, n: usize, limit: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |u| {
                (u + n <= limit).then_some(u + n)
            })
            .is_ok()
    }

    fn uncharge(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
        self.notify_freed();
    }

    /// Wakes allocations waiting for memory (to retry or re-check their situation).
    pub(crate) fn notify_freed(&self) {
        let _g = self.freed_lock.lock();
        self.freed.notify_all();
    }

    /// Waits up to `timeout` for memory to be freed.
    pub(crate) fn wait_freed(&self, timeout: std::time::Duration) {
        let mut g = self.freed_lock.lock();
        self.freed.wait_for(&mut g, timeout);
    }

    fn region_base(&self, r: u32) -> usize {
        self.arena.as_ptr() as usize + r as usize * self.region_size
    }

    fn take_region(&self, limit: usize) -> Option<u32> {
        if !self.charge(self.region_size, limit) {
            return None;
        }
        let r = self.free.lock().pop();
        match r {
            None => self.uncharge(self.region_size),
            Some(r) => {
                if self.regions[r as usize].warm.swap(false, Ordering::Relaxed) {
                    self.warm.fetch_sub(self.region_size, Ordering::Relaxed);
                }
            }
        }
        r
    }

    fn seal(&self, nt: bool, open: &mut OpenRegion) {
        if let Some(r) = open.region.take() {
            self.regions[r as usize]
                .top
                .store(open.top, Ordering::Release);
            open.top = 0;
            if nt {
                self.sealed_nt.lock().push_back(r);
            } else {
                self.sealed.lock().push_back(r);
            }
        }
    }

    /// Seals an open region early for the evacuator, unless it is empty or has allocations in
    /// flight. Those could not be evacuated yet anyway, and sealing them would make their lane
    /// start a fresh region: a thread that holds allocations while it makes more (a batched
    /// prefetch) would then pin one region per allocation, and with every region pinned neither
    /// it nor the evacuator could make progress.
    fn seal_idle(&self, nt: bool, open: &mut OpenRegion) {
        let idle = open
            .region
            .is_some_and(|r| self.regions[r as usize].pending.load(Ordering::Acquire) == 0);
        if open.top > 0 && idle {
            self.seal(nt, open);
        }
    }

    /// Seals every open region the evacuator could take (see `seal_idle`). The packed lane's
    /// only with `packed`: its objects are pinned one after the other, and a region sealed half
    /// full whenever the evacuator runs out of victims would spread the pins over more regions.
    pub(crate) fn seal_all(&self, packed: bool) {
        for (i, lane) in self.lanes.iter().enumerate() {
            if !packed && i == self.mutator_lanes + 1 {
                continue;
            }
            let mut open = lane.lock();
            self.seal_idle(i == self.mutator_lanes, &mut open);
        }
    }

    /// Allocates `len` payload bytes for slot `slot`, keeping `used` at or below `limit`.
    /// Returns `None` when that needs memory the evacuator must free first.
    pub(crate) fn alloc(
        &self,
        lane: Lane,
        slot: u32,
        len: usize,
        limit: usize,
    ) -> Option<Allocation> {
        if len >= self.large_threshold {
            let bytes = sys::page_round(len);
            if !self.charge(bytes, limit) {
                return None;
            }
            return match sys::map(bytes) {
                Ok(ptr) => Some(Allocation {
                    ptr,
                    len,
                    region: None,
                    slot,
                }),
                Err(e) => {
                    tracing::error!(bytes, "dedicated allocation failed: {e}");
                    self.uncharge(bytes);
                    None
                }
            };
        }
        let need = block_size(len);
        let li = self.lane_index(lane);
        let mut open = self.lanes[li].lock();
        loop {
            if let Some(r) = open.region
                && open.top + need <= self.region_size
            {
                let off = open.top;
                open.top += need;
                self.regions[r as usize]
                    .pending
                    .fetch_add(1, Ordering::Relaxed);
                drop(open);
                let at = self.region_base(r) + off;
                // SAFETY: `[at, at + need)` lies inside region `r` of the arena and was just
                // reserved for this allocation alone (bump pointer under the lane lock); the
                // trailer is its last 8 bytes, 8-byte aligned.
                unsafe { ((at + need - TRAILER) as *mut u64).write(trailer(slot, len)) };
                let ptr = NonNull::new(at as *mut u8)?;
                return Some(Allocation {
                    ptr,
                    len,
                    region: Some(r),
                    slot,
                });
            }
            self.seal(lane == Lane::Nt, &mut open);
            let r = self.take_region(limit)?;
            if lane == Lane::Packed {
                self.regions[r as usize]
                    .packed
                    .store(true, Ordering::Relaxed);
            }
            open.region = Some(r);
            open.top = 0;
        }
    }

    /// Makes an allocation visible to the evacuator (its handle word must point at it already).
    pub(crate) fn publish(&self, a: Allocation) {
        match a.region {
            Some(r) => {
                self.regions[r as usize]
                    .pending
                    .fetch_sub(1, Ordering::Release);
            }
            None => self.large.lock().push_back(Resident {
                slot: a.slot,
                addr: a.ptr.as_ptr() as usize,
            }),
        }
    }

    /// Gives up an allocation that no handle word points at.
    pub(crate) fn abandon(&self, a: Allocation) {
        match a.region {
            Some(r) => {
                self.regions[r as usize]
                    .pending
                    .fetch_sub(1, Ordering::Release);
            }
            // SAFETY: the dedicated mapping was never published, so nobody else can see it.
            None => unsafe { self.free_large(a.ptr.as_ptr() as usize, a.len) },
        }
    }

    /// Frees a dedicated allocation of an object of `len` bytes at `addr`.
    ///
    /// # Safety
    /// `addr` must be a dedicated allocation of this heap for `len` bytes that no handle word
    /// points at any more and that nobody reads or writes.
    pub(crate) unsafe fn free_large(&self, addr: usize, len: usize) {
        let bytes = sys::page_round(len);
        if let Some(p) = NonNull::new(addr as *mut u8) {
            // SAFETY: forwarded from the caller.
            unsafe { sys::unmap(p, bytes) };
        }
        self.uncharge(bytes);
    }

    /// Whether the region object at `addr` lives in a region of the packed lane (`false` for
    /// a dedicated allocation). Only meaningful while the object stays at `addr`.
    pub(crate) fn is_packed(&self, addr: usize) -> bool {
        let base = self.arena.as_ptr() as usize;
        if addr < base || addr >= base + self.arena_len {
            return false;
        }
        self.regions[(addr - base) / self.region_size]
            .packed
            .load(Ordering::Relaxed)
    }

    /// Bytes that `count` region objects of `len` bytes each take once packed in regions of
    /// their own (or in dedicated allocations, for large ones): what pinning them all keeps
    /// from the evacuator.
    pub(crate) fn packed_footprint(&self, count: usize, len: usize) -> usize {
        if len >= self.large_threshold {
            return count.saturating_mul(sys::page_round(len));
        }
        let per_region = (self.region_size / block_size(len)).max(1);
        count.div_ceil(per_region).saturating_mul(self.region_size)
    }

    /// Takes the next region to evacuate: non-temporal regions first (sealing the open
    /// non-temporal region if none is queued and it has no allocations in flight), then the
    /// oldest; skips regions with allocations in flight.
    pub(crate) fn pop_victim(&self) -> Option<u32> {
        if let Some(r) = self.pop_ready(&self.sealed_nt) {
            return Some(r);
        }
        self.seal_idle(true, &mut self.lanes[self.mutator_lanes].lock());
        self.pop_ready(&self.sealed_nt)
            .or_else(|| self.pop_ready(&self.sealed))
    }

    fn pop_ready(&self, q: &Mutex<VecDeque<u32>>) -> Option<u32> {
        let mut q = q.lock();
        for _ in 0..q.len() {
            let r = q.pop_front()?;
            if self.regions[r as usize].pending.load(Ordering::Acquire) == 0 {
                return Some(r);
            }
            q.push_back(r);
        }
        None
    }

    /// Takes the oldest dedicated allocation to consider for eviction.
    pub(crate) fn pop_large(&self) -> Option<Resident> {
        self.large.lock().pop_front()
    }

    /// Puts back a dedicated allocation that stays.
    pub(crate) fn requeue_large(&self, r: Resident) {
        self.large.lock().push_back(r);
    }

    /// Puts back a region that could not be emptied.
    pub(crate) fn requeue(&self, r: u32) {
        self.sealed.lock().push_back(r);
    }

    /// The objects of a sealed region whose handle might still point at them: `(slot, payload)`.
    pub(crate) fn residents(&self, r: u32) -> Vec<(u32, usize, usize)> {
        let base = self.region_base(r);
        let top = self.regions[r as usize].top.load(Ordering::Acquire);
        let mut out = Vec::new();
        let mut end = top;
        // Walk back from the top: each block ends with the trailer naming its length.
        while end >= TRAILER {
            // SAFETY: a sealed region with no pending allocations has a trailer just below every
            // block end at or below `top`, written before the allocation was published (Release
            // on `pending`, Acquire in `pop_victim`).
            let t = unsafe { ((base + end - TRAILER) as *const u64).read() };
            let (slot, len) = (t as u32, (t >> 32) as usize);
            let size = block_size(len);
            debug_assert!(size <= end, "corrupt region trailer");
            let Some(start) = end.checked_sub(size) else {
                break;
            };
            out.push((slot, base + start, len));
            end = start;
        }
        out.reverse();
        out
    }

    /// Gives an emptied region back. Its pages stay (the region is free but warm, and the
    /// next allocation that takes it does not fault them in again) while the heap's used bytes
    /// and the warm regions' fit the budget; otherwise they go back to the OS.
    pub(crate) fn release_region(&self, r: u32) {
        let rs = self.region_size;
        let used_after = self.used().saturating_sub(rs);
        let warm = self
            .warm
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                (used_after + w + rs <= self.limit()).then_some(w + rs)
            })
            .is_ok();
        if warm {
            self.regions[r as usize].warm.store(true, Ordering::Relaxed);
        } else if let Some(p) = NonNull::new(self.region_base(r) as *mut u8) {
            // SAFETY: the region is empty (no handle word points into it) and not open.
            unsafe { sys::discard(p, rs) };
        }
        self.regions[r as usize].top.store(0, Ordering::Relaxed);
        self.regions[r as usize]
            .packed
            .store(false, Ordering::Relaxed);
        self.free.lock().push(r);
        self.uncharge(self.region_size);
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        // SAFETY: the heap owns the arena; with the heap gone no handle can reach it.
        unsafe { sys::unmap(self.arena, self.arena_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_objects_are_found_back_from_their_trailers() {
        let heap = Heap::new(8 << 20, 1 << 20, 2, 1, 1).unwrap();
        let lens = [1usize, 8, 9, 16, 24, 100, 4096, 8];
        let mut allocs = Vec::new();
        for (i, &len) in lens.iter().enumerate() {
            let a = heap
                .alloc(Lane::Mutator(0), i as u32 + 7, len, usize::MAX)
                .unwrap();
            assert_eq!(a.ptr.as_ptr() as usize % ALIGN, 0, "payload alignment");
            allocs.push((a.ptr.as_ptr() as usize, a.region));
            heap.publish(a);
        }
        // An 8-byte object takes 16 bytes (payload + trailer), a 24-byte one 32.
        assert_eq!(allocs[2].0 - allocs[1].0, 16);
        assert_eq!(allocs[5].0 - allocs[4].0, 32);
        heap.seal_all(true);
        let r = heap.pop_victim().unwrap();
        assert!(allocs.iter().all(|&(_, region)| region == Some(r)));
        let found = heap.residents(r);
        let want: Vec<(u32, usize, usize)> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| (i as u32 + 7, allocs[i].0, len))
            .collect();
        assert_eq!(found, want);
    }
}
