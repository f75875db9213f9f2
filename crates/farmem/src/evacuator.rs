//! The evacuator: empties cold regions while mutators run.
//!
//! One round: take victim regions (non-temporal first, then oldest) and dedicated allocations;
//! mark every live object `MOVING` and clear its hot bit (CLOCK), remembering whether it was hot;
//! wait for a grace period (see `epoch`); then take each object's `BUSY` bit and either copy it
//! into the evacuator's own lane (hot objects: compaction) or evict it (cold ones: dirty objects
//! are written back with batched `put_many`, clean ones are dropped). Emptied regions go back to
//! the heap. A mutator touching a marked object moves it itself or cancels the mark; it never
//! waits for more than the one object it touches.

use crate::epoch::{self, backoff};
use crate::heap::{Lane, Resident};
use crate::loom::Ordering;
use crate::object::addr;
use crate::runtime::Inner;
use crate::slot::Slot;
use crate::slot::bits::{BUSY, DIRTY, HOT, LARGE, MOVING, PRESENT, REMOTE};
use crate::stats::Counters;

/// At most this many regions per round: bounds the work behind one grace period and the slack
/// that mutators moving marked objects may need.
pub(crate) const MAX_REGIONS: usize = 8;

#[derive(Clone, Copy, Debug)]
struct Marked {
    slot: u32,
    addr: usize,
    len: usize,
    hot: bool,
    /// Index of the region in the round's list, or `None` for a dedicated allocation.
    region: Option<usize>,
}

enum Acquired {
    Mine(u64),
    Gone,
    Cancelled,
}

fn mark(slot: &Slot, at: usize) -> Option<bool> {
    let mut spins = 0;
    loop {
        let w = slot.word.load(Ordering::Acquire);
        if w & PRESENT == 0 || addr(w) != at || w & MOVING != 0 {
            return None;
        }
        if w & BUSY != 0 {
            backoff(&mut spins);
            continue;
        }
        if slot
            .word
            .compare_exchange(w, (w | MOVING) & !HOT, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return Some(w & HOT != 0);
        }
    }
}

fn acquire(slot: &Slot, at: usize) -> Acquired {
    let mut spins = 0;
    loop {
        let w = slot.word.load(Ordering::Acquire);
        if w & PRESENT == 0 || addr(w) != at {
            return Acquired::Gone;
        }
        if w & BUSY != 0 {
            backoff(&mut spins);
            continue;
        }
        if w & MOVING == 0 {
            return Acquired::Cancelled;
        }
        if slot
            .word
            .compare_exchange(w, w | BUSY, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return Acquired::Mine(w);
        }
    }
}

struct Round<'a> {
    inner: &'a Inner,
    lane: usize,
    keep: Vec<bool>,
    done: Vec<bool>,
    requeue_large: Vec<Resident>,
    writeback: Vec<(Marked, u64)>,
    writeback_bytes: usize,
    evicted: u64,
    compacted: u64,
    written: u64,
}

/// Runs one evacuation round; returns whether it found anything to do. `force` takes every
/// queued region (not just down to the low watermark) and evicts hot objects too.
pub(crate) fn round(inner: &Inner, lane: usize, force: bool) -> bool {
    let region_size = inner.heap.region_size();
    let target = if force {
        inner.heap.used().max(1)
    } else {
        inner.evacuation_target()
    };
    if target == 0 {
        return false;
    }
    let mut regions = Vec::new();
    let mut larges = Vec::new();
    let mut picked = 0usize;
    let mut sealed = false;
    while picked < target && regions.len() < MAX_REGIONS {
        let mut got = false;
        if let Some(r) = inner.heap.pop_victim() {
            regions.push(r);
            picked += region_size;
            got = true;
        }
        if let Some(l) = inner.heap.pop_large() {
            if let Some(s) = inner.slots.get(l.slot) {
                picked += s.len();
            }
            larges.push(l);
            got = true;
        }
        if !got {
            if sealed || !force && !regions.is_empty() {
                break;
            }
            inner.heap.seal_all();
            sealed = true;
        }
    }
    if regions.is_empty() && larges.is_empty() {
        return false;
    }

    let mut marked = Vec::new();
    for (ri, &r) in regions.iter().enumerate() {
        for (slot_idx, at, len) in inner.heap.residents(r) {
            let Some(slot) = inner.slots.get(slot_idx) else {
                continue;
            };
            if let Some(hot) = mark(slot, at).map(|h| h && !force) {
                marked.push(Marked {
                    slot: slot_idx,
                    addr: at,
                    len,
                    hot,
                    region: Some(ri),
                });
            }
        }
    }
    for l in &larges {
        let Some(slot) = inner.slots.get(l.slot) else {
            continue;
        };
        if let Some(hot) = mark(slot, l.addr).map(|h| h && !force) {
            marked.push(Marked {
                slot: l.slot,
                addr: l.addr,
                len: slot.len(),
                hot,
                region: None,
            });
        }
    }

    epoch::synchronize(inner.id, || inner.heap.notify_freed());

    let mut round = Round {
        inner,
        lane,
        keep: vec![false; regions.len()],
        done: vec![false; regions.len()],
        requeue_large: Vec::new(),
        writeback: Vec::new(),
        writeback_bytes: 0,
        evicted: 0,
        compacted: 0,
        written: 0,
    };
    // Process region by region, releasing each as soon as it is empty, so compaction needs at
    // most one free region at a time.
    let mut i = 0;
    while i < marked.len() {
        let region = marked[i].region;
        while i < marked.len() && marked[i].region == region {
            round.process(marked[i]);
            i += 1;
        }
        round.flush_writeback();
        if let Some(ri) = region {
            round.finish_region(ri, regions[ri]);
        }
    }
    round.flush_writeback();
    for (ri, &r) in regions.iter().enumerate() {
        if !round.done[ri] {
            round.finish_region(ri, r);
        }
    }
    for l in round.requeue_large.drain(..) {
        inner.heap.requeue_large(l);
    }
    let (evicted, compacted, written) = (round.evicted, round.compacted, round.written);
    inner.counters.with(|c| {
        Counters::bump(&c.evacuation_rounds, 1);
        Counters::bump(&c.objects_evicted, evicted);
        Counters::bump(&c.objects_compacted, compacted);
        Counters::bump(&c.bytes_written_back, written);
    });
    tracing::trace!(
        regions = regions.len(),
        evicted,
        compacted,
        "evacuation round"
    );
    true
}

impl Round<'_> {
    fn finish_region(&mut self, ri: usize, r: u32) {
        self.done[ri] = true;
        if self.keep[ri] {
            self.inner.heap.requeue(r);
        } else {
            self.inner.heap.release_region(r);
        }
    }

    fn keep(&mut self, m: &Marked) {
        match m.region {
            Some(ri) => self.keep[ri] = true,
            None => self.requeue_large.push(Resident {
                slot: m.slot,
                addr: m.addr,
            }),
        }
    }

    fn process(&mut self, m: Marked) {
        let Some(slot) = self.inner.slots.get(m.slot) else {
            return;
        };
        let w = match acquire(slot, m.addr) {
            Acquired::Mine(w) => w,
            Acquired::Gone => return,
            Acquired::Cancelled => {
                self.keep(&m);
                return;
            }
        };
        if m.hot {
            if w & LARGE != 0 {
                slot.word.store(w & !(MOVING | BUSY), Ordering::Release);
                self.keep(&m);
                return;
            }
            // Compaction stays within the budget (the slack is for mutators the evacuator waits
            // for and for objects they move); without room, hot objects are evicted.
            let limit = self.inner.heap.budget;
            if let Some(a) = self
                .inner
                .heap
                .alloc(Lane::Evacuator(self.lane), m.slot, m.len, limit)
            {
                let to = a.ptr.as_ptr() as usize;
                // SAFETY: we hold BUSY and the grace period has passed, so no reference to the
                // old copy is alive and nobody writes it; `a` is our unpublished allocation.
                unsafe { std::ptr::copy_nonoverlapping(m.addr as *const u8, to as *mut u8, m.len) };
                let new = (w & !(MOVING | BUSY | crate::slot::bits::ADDR))
                    | crate::slot::bits::addr_bits(to);
                slot.word.store(new, Ordering::Release);
                self.inner.heap.publish(a);
                self.compacted += 1;
                return;
            }
        }
        if w & DIRTY != 0 || w & REMOTE == 0 {
            self.writeback_bytes += m.len;
            self.writeback.push((m, w));
            if self.writeback_bytes >= self.inner.cfg.writeback_batch {
                self.flush_writeback();
            }
        } else {
            self.evict(slot, &m);
        }
    }

    fn evict(&mut self, slot: &Slot, m: &Marked) {
        let w = slot.word.load(Ordering::Acquire);
        slot.word.store(REMOTE, Ordering::Release);
        if w & LARGE != 0 {
            // SAFETY: the word no longer points at the allocation, the grace period has passed
            // and we held BUSY until now, so nobody references it.
            unsafe { self.inner.heap.free_large(m.addr, m.len) };
        }
        self.evicted += 1;
    }

    fn flush_writeback(&mut self) {
        if self.writeback.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.writeback);
        self.writeback_bytes = 0;
        let items: Vec<(u64, &[u8])> = batch
            .iter()
            .map(|(m, _)| {
                let id = self.inner.slots.get(m.slot).map_or(0, Slot::id);
                // SAFETY: we hold BUSY on each object and the grace period has passed: the bytes
                // stay valid and unwritten until we release the word below.
                let bytes = unsafe { std::slice::from_raw_parts(m.addr as *const u8, m.len) };
                (id, bytes)
            })
            .collect();
        let mut res = self.inner.backend.put_many(&items);
        if res.is_err() && self.inner.flush_frees().is_ok() {
            res = self.inner.backend.put_many(&items);
        }
        drop(items);
        match res {
            Ok(()) => {
                for (m, _) in &batch {
                    if let Some(slot) = self.inner.slots.get(m.slot) {
                        self.written += m.len as u64;
                        self.evict(slot, m);
                    }
                }
            }
            Err(e) => {
                tracing::warn!("write-back of {} objects failed: {e}", batch.len());
                *self.inner.last_error.lock() = Some(std::sync::Arc::new(e));
                for (m, w) in &batch {
                    if let Some(slot) = self.inner.slots.get(m.slot) {
                        slot.word.store(w & !(MOVING | BUSY), Ordering::Release);
                    }
                    self.keep(m);
                }
            }
        }
    }
}

/// Model check of the mutator/evacuator handshake with loom:
/// `RUSTFLAGS="--cfg loom" cargo test -p farmem --lib --release loom`.
///
/// The mutator runs the real scope epoch and the dereference decision (fast path, or self-move
/// under BUSY, or wait); the evacuator runs the real `mark`, grace-period wait and `acquire`, then
/// reuses the old location. loom's `UnsafeCell` flags any access to the old location that races
/// with that reuse, and the mutator asserts it never reads a reused value.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::epoch::Epoch;
    use crate::loom::fence;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;

    fn rd(c: &UnsafeCell<u64>) -> u64 {
        c.with(|p| {
            // SAFETY: `p` points into a live UnsafeCell; loom fails the model if this read races
            // with a write.
            unsafe { *p }
        })
    }

    fn wr(c: &UnsafeCell<u64>, v: u64) {
        c.with_mut(|p| {
            // SAFETY: as in `rd`, for a write.
            unsafe { *p = v }
        })
    }

    const OLD: u64 = 0x1000;
    const NEW: u64 = 0x2000;

    fn mutator(slot: &Slot, epoch: &Epoch, old: &UnsafeCell<u64>, new: &UnsafeCell<u64>) {
        epoch.enter();
        let mut spins = 0;
        loop {
            let w = slot.word.load(Ordering::Acquire);
            if w & BUSY != 0 {
                backoff(&mut spins);
                continue;
            }
            if w & PRESENT == 0 {
                break; // evicted: a real mutator would fetch it
            }
            if w & MOVING != 0 {
                if slot
                    .word
                    .compare_exchange(w, w | BUSY, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    // Self-move: copy the old location into our own.
                    let v = rd(old);
                    wr(new, v);
                    slot.word.store(
                        (w & !(MOVING | ADDR_BITS)) | addr_bits(NEW as usize),
                        Ordering::Release,
                    );
                }
                continue;
            }
            let v = if addr(w) as u64 == OLD {
                rd(old)
            } else {
                rd(new)
            };
            assert_eq!(v, 7, "read a reused location");
            break;
        }
        epoch.exit();
    }

    const ADDR_BITS: u64 = crate::slot::bits::ADDR;
    use crate::slot::bits::addr_bits;

    #[test]
    fn loom_mutator_evacuator_handshake() {
        loom::model(|| {
            let slot = Arc::new(Slot::new_detached_for_test());
            slot.word.store(
                PRESENT | HOT | DIRTY | addr_bits(OLD as usize),
                Ordering::Relaxed,
            );
            let epoch = Arc::new(Epoch::new());
            let old = Arc::new(UnsafeCell::new(7u64));
            let new = Arc::new(UnsafeCell::new(0u64));
            let m = {
                let (slot, epoch, old, new) =
                    (slot.clone(), epoch.clone(), old.clone(), new.clone());
                loom::thread::spawn(move || mutator(&slot, &epoch, &old, &new))
            };
            if mark(&slot, OLD as usize).is_some() {
                // The grace period of `epoch::synchronize`, for the one mutator thread.
                fence(Ordering::SeqCst);
                let snap = epoch.load();
                epoch.wait_past(snap);
                match acquire(&slot, OLD as usize) {
                    Acquired::Mine(_) => {
                        // Evict, then reuse the old location.
                        slot.word.store(REMOTE, Ordering::Release);
                        wr(&old, 99);
                    }
                    Acquired::Gone => wr(&old, 99),
                    Acquired::Cancelled => {}
                }
            }
            m.join().unwrap();
        });
    }
}
