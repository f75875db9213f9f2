//! The evacuator: empties cold regions while mutators run.
//!
//! One round: take victim regions (non-temporal first, then oldest) and dedicated allocations;
//! mark every live object `MOVING` and clear its hot bit (CLOCK), remembering whether it was hot;
//! wait for a grace period (see `epoch`); then take each object's `BUSY` bit and either copy it
//! into the evacuator's own lane (hot objects: compaction) or evict it (cold ones: dirty objects
//! are written back with batched `put_many`, clean ones are dropped). Emptied regions go back to
//! the heap. A mutator touching a marked object moves it itself or cancels the mark; it never
//! waits for more than the one object it touches.

use parking_lot::Mutex;

use super::epoch::{self, backoff};
use super::frees::FreeQueue;
use super::heap::{Heap, Lane, Resident};
use super::slot::{Slot, SlotTable};
use super::stats::{CounterSet, Counters};
use super::word::Word;
use crate::backend::Backend;

/// What an evacuation round works with: one runtime's heap, slot table and backend, and where it
/// reports.
pub(crate) struct Evacuation<'a> {
    pub(crate) heap: &'a Heap,
    pub(crate) slots: &'a SlotTable,
    pub(crate) backend: &'a dyn Backend,
    /// Flushed to make room in the backend when a write-back fails.
    pub(crate) frees: &'a FreeQueue,
    pub(crate) counters: &'a CounterSet,
    /// Where a failed write-back is recorded, for allocations that give up.
    pub(crate) last_error: &'a Mutex<Option<std::sync::Arc<crate::BackendError>>>,
    /// The runtime's number (names its evacuators in the grace-period handshake).
    pub(crate) runtime: u64,
    /// Largest write-back batch in bytes.
    pub(crate) writeback_batch: usize,
}

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
    /// Pinned (see `pin`): not marked, kept where it is.
    pinned: bool,
}

/// What [`mark`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mark {
    /// Marked; whether it was hot.
    Marked { hot: bool },
    /// Not (or no longer) there, or already marked: nothing to do.
    Absent,
    /// Pinned in place: its region (or dedicated allocation) must be kept.
    Pinned,
}

/// What [`acquire`] found.
pub(crate) enum Acquired {
    /// Claimed (`BUSY` held); the word before the claim.
    Mine(Word),
    /// Moved, evicted or freed meanwhile.
    Gone,
    /// A mutator cancelled the mark (it touched the object and found no room to move it).
    Cancelled,
}

/// Marks the object at `at` `MOVING` (clearing its hot bit), unless it is not (or no longer)
/// there, already marked, or pinned.
pub(crate) fn mark(slot: &Slot, at: usize) -> Mark {
    let mut spins = 0;
    loop {
        let w = slot.load();
        if !w.is_present() || w.addr() != at || w.is_moving() {
            return Mark::Absent;
        }
        if w.is_busy() {
            backoff(&mut spins);
            continue;
        }
        if w.pins() > 0 {
            return Mark::Pinned;
        }
        if slot.replace(w, w.marked()) {
            return Mark::Marked { hot: w.is_hot() };
        }
    }
}

/// The round's record of what [`mark`] did to one object, if it has to be visited again.
fn marked(
    m: Mark,
    slot: u32,
    addr: usize,
    len: usize,
    region: Option<usize>,
    force: bool,
) -> Option<Marked> {
    let (hot, pinned) = match m {
        Mark::Marked { hot } => (hot && !force, false),
        Mark::Pinned => (false, true),
        Mark::Absent => return None,
    };
    Some(Marked {
        slot,
        addr,
        len,
        hot,
        region,
        pinned,
    })
}

/// After the grace period: claims a marked object still at `at`.
pub(crate) fn acquire(slot: &Slot, at: usize) -> Acquired {
    let mut spins = 0;
    loop {
        let w = slot.load();
        if !w.is_present() || w.addr() != at {
            return Acquired::Gone;
        }
        if w.is_busy() {
            backoff(&mut spins);
            continue;
        }
        if !w.is_moving() {
            return Acquired::Cancelled;
        }
        if slot.claim(w) {
            return Acquired::Mine(w);
        }
    }
}

struct Round<'a> {
    ev: &'a Evacuation<'a>,
    lane: usize,
    keep: Vec<bool>,
    done: Vec<bool>,
    requeue_large: Vec<Resident>,
    writeback: Vec<(Marked, Word)>,
    writeback_bytes: usize,
    evicted: u64,
    compacted: u64,
    written: u64,
}

/// Runs one evacuation round freeing about `target` bytes; returns whether it found anything to
/// do. `force` takes every queued region (not just `target` bytes' worth) and evicts hot objects
/// too.
pub(crate) fn round(ev: &Evacuation<'_>, lane: usize, target: usize, force: bool) -> bool {
    let region_size = ev.heap.region_size();
    if target == 0 {
        return false;
    }
    let mut regions = Vec::new();
    let mut larges = Vec::new();
    let mut picked = 0usize;
    let mut sealed = false;
    while picked < target && regions.len() < MAX_REGIONS {
        let mut got = false;
        if let Some(r) = ev.heap.pop_victim() {
            regions.push(r);
            picked += region_size;
            got = true;
        }
        if let Some(l) = ev.heap.pop_large() {
            if let Some(s) = ev.slots.get(l.slot) {
                picked += s.len();
            }
            larges.push(l);
            got = true;
        }
        if !got {
            if sealed || !force && !regions.is_empty() {
                break;
            }
            ev.heap.seal_all(force);
            sealed = true;
        }
    }
    if regions.is_empty() && larges.is_empty() {
        return false;
    }

    let mut marked = Vec::new();
    for (ri, &r) in regions.iter().enumerate() {
        for (slot_idx, at, len) in ev.heap.residents(r) {
            let Some(slot) = ev.slots.get(slot_idx) else {
                continue;
            };
            marked.extend(self::marked(
                mark(slot, at),
                slot_idx,
                at,
                len,
                Some(ri),
                force,
            ));
        }
    }
    for l in &larges {
        let Some(slot) = ev.slots.get(l.slot) else {
            continue;
        };
        let m = mark(slot, l.addr);
        marked.extend(self::marked(m, l.slot, l.addr, slot.len(), None, force));
    }

    epoch::synchronize(ev.runtime, || ev.heap.notify_freed());

    let mut round = Round {
        ev,
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
        ev.heap.requeue_large(l);
    }
    let (evicted, compacted, written) = (round.evicted, round.compacted, round.written);
    ev.counters.with(|c| {
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
            self.ev.heap.requeue(r);
        } else {
            self.ev.heap.release_region(r);
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
        if m.pinned {
            self.keep(&m);
            return;
        }
        let Some(slot) = self.ev.slots.get(m.slot) else {
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
            if w.is_large() {
                slot.store(w.unmarked());
                self.keep(&m);
                return;
            }
            // Compaction stays within the budget (the slack is for mutators the evacuator waits
            // for and for objects they move); without room, hot objects are evicted.
            let limit = self.ev.heap.limit();
            if let Some(a) = self
                .ev
                .heap
                .alloc(Lane::Evacuator(self.lane), m.slot, m.len, limit)
            {
                let to = a.ptr.as_ptr() as usize;
                // SAFETY: we hold BUSY and the grace period has passed, so no reference to the
                // old copy is alive and nobody writes it; `a` is our unpublished allocation.
                unsafe { std::ptr::copy_nonoverlapping(m.addr as *const u8, to as *mut u8, m.len) };
                slot.store(w.relocated(to));
                self.ev.heap.publish(a);
                self.compacted += 1;
                return;
            }
        }
        if w.needs_writeback() {
            self.writeback_bytes += m.len;
            self.writeback.push((m, w));
            if self.writeback_bytes >= self.ev.writeback_batch {
                self.flush_writeback();
            }
        } else {
            self.evict(slot, &m);
        }
    }

    fn evict(&mut self, slot: &Slot, m: &Marked) {
        let w = slot.load();
        slot.store(Word::FAR);
        if w.is_large() {
            // SAFETY: the word no longer points at the allocation, the grace period has passed
            // and we held BUSY until now, so nobody references it.
            unsafe { self.ev.heap.free_large(m.addr, m.len) };
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
                let id = self.ev.slots.get(m.slot).map_or(0, Slot::id);
                // SAFETY: we hold BUSY on each object and the grace period has passed: the bytes
                // stay valid and unwritten until we release the word below.
                let bytes = unsafe { std::slice::from_raw_parts(m.addr as *const u8, m.len) };
                (id, bytes)
            })
            .collect();
        let mut res = self.ev.backend.put_many(&items);
        if res.is_err() && self.ev.frees.flush(self.ev.backend).is_ok() {
            res = self.ev.backend.put_many(&items);
        }
        // A server declared down fails the whole batch: write the objects one by one so those
        // of live servers go out. The objects of a down server are gone with it (a later access
        // reports `ServerDown`), so they are let go as well instead of filling the heap.
        let written: Vec<bool> = match &res {
            Ok(()) => vec![true; items.len()],
            Err(crate::BackendError::ServerDown { .. }) => items
                .iter()
                .map(|&(id, bytes)| {
                    matches!(
                        self.ev.backend.put(id, bytes),
                        Ok(()) | Err(crate::BackendError::ServerDown { .. })
                    )
                })
                .collect(),
            Err(_) => vec![false; items.len()],
        };
        drop(items);
        if let Err(e) = res {
            let kept = written.iter().filter(|w| !**w).count();
            tracing::warn!(
                "write-back of {} objects failed ({kept} kept): {e}",
                batch.len()
            );
            *self.ev.last_error.lock() = Some(std::sync::Arc::new(e));
        }
        for ((m, w), ok) in batch.iter().zip(written) {
            let slot = self.ev.slots.get(m.slot);
            if ok {
                if let Some(slot) = slot {
                    self.written += m.len as u64;
                    self.evict(slot, m);
                }
            } else {
                if let Some(slot) = slot {
                    slot.store(w.unmarked());
                }
                self.keep(m);
            }
        }
    }
}

/// Model check of the mutator/evacuator handshake with loom:
/// `RUSTFLAGS="--cfg loom" cargo test -p farmem --lib --release loom`.
///
/// The mutator runs the real scope epoch and the real dereference loop (`access::resolve`, which
/// decides hit, wait, fetch or move from the word); only the fetch and the self-move copy are the
/// model's own (they copy between loom cells instead of calling the backend and the heap), built
/// on the real word transitions and slot claims. The evacuator runs the real `mark`, the
/// grace-period wait of `epoch::synchronize` for the one mutator thread, and the real `acquire`,
/// then reuses the old location. loom's `UnsafeCell` flags any access to the old location that
/// races with that reuse, and the mutator asserts it never reads a reused value.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::error::Result;
    use crate::loom::{Ordering, fence};
    use crate::runtime::access::resolve;
    use crate::runtime::epoch::Epoch;
    use crate::runtime::word::Mode;
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

    const OLD: usize = 0x1000;
    const NEW: usize = 0x2000;
    const VALUE: u64 = 7;

    fn cell(at: usize, old: &UnsafeCell<u64>, new: &UnsafeCell<u64>) -> *const UnsafeCell<u64> {
        if at == OLD { old } else { new }
    }

    fn mutator(
        slot: &Slot,
        epoch: &Epoch,
        mode: Mode,
        old: &UnsafeCell<u64>,
        new: &UnsafeCell<u64>,
    ) {
        epoch.enter();
        let fetch = |w: Word| -> Result<Option<usize>> {
            // The far copy holds VALUE (the model's evacuator never loses a write).
            if !slot.claim(w) {
                return Ok(None);
            }
            wr(new, VALUE);
            slot.store(Word::fetched(NEW, false, mode));
            Ok(Some(NEW))
        };
        let relocate = |w: Word| {
            if slot.claim(w) {
                let v = rd(old);
                wr(new, v);
                slot.store(w.self_moved(NEW));
            }
        };
        let got = resolve(slot, mode, fetch, relocate).expect("the model's fetch cannot fail");
        // SAFETY: `cell` returns one of the two cells, alive for the whole model run.
        let v = rd(unsafe { &*cell(got.addr, old, new) });
        assert_eq!(v, VALUE, "read a reused location");
        epoch.exit();
    }

    /// One evacuation of the object at `OLD` by the real `mark` and `acquire`, with the grace
    /// period of `epoch::synchronize` for the one mutator thread: evict (the far copy holds
    /// VALUE), then reuse the old location.
    fn evacuate(slot: &Slot, epoch: &Epoch, old: &UnsafeCell<u64>) {
        if matches!(mark(slot, OLD), Mark::Marked { .. }) {
            fence(Ordering::SeqCst);
            let snap = epoch.load();
            epoch.wait_past(snap);
            match acquire(slot, OLD) {
                Acquired::Mine(_) => {
                    slot.store(Word::FAR);
                    wr(old, 99);
                }
                Acquired::Gone => wr(old, 99),
                Acquired::Cancelled => {}
            }
        }
    }

    fn model(mode: Mode, start: Word) {
        loom::model(move || {
            let slot = Arc::new(Slot::new_detached_for_test(start));
            let epoch = Arc::new(Epoch::new());
            let old = Arc::new(UnsafeCell::new(VALUE));
            let new = Arc::new(UnsafeCell::new(0u64));
            let m = {
                let (slot, epoch, old, new) =
                    (slot.clone(), epoch.clone(), old.clone(), new.clone());
                loom::thread::spawn(move || mutator(&slot, &epoch, mode, &old, &new))
            };
            evacuate(&slot, &epoch, &old);
            m.join().unwrap();
        });
    }

    /// A mutator that dereferences the object, pins it, leaves its epoch (as a scope blocked on
    /// a miss does) and reads it again outside: the evacuator must not reuse the location while
    /// the pin holds, whatever it marked before.
    #[test]
    fn loom_pinned_object_outlives_the_epoch() {
        use crate::runtime::pin::{pin_at, unpin};
        loom::model(|| {
            let start = Word::local(OLD).with_hot(true).with_far_copy(true);
            let slot = Arc::new(Slot::new_detached_for_test(start));
            let epoch = Arc::new(Epoch::new());
            let old = Arc::new(UnsafeCell::new(VALUE));
            let new = Arc::new(UnsafeCell::new(0u64));
            let m = {
                let (slot, epoch, old, new) =
                    (slot.clone(), epoch.clone(), old.clone(), new.clone());
                loom::thread::spawn(move || {
                    epoch.enter();
                    let fetch = |w: Word| -> Result<Option<usize>> {
                        if !slot.claim(w) {
                            return Ok(None);
                        }
                        wr(&new, VALUE);
                        slot.store(Word::fetched(NEW, false, Mode::Read));
                        Ok(Some(NEW))
                    };
                    let relocate = |w: Word| {
                        // No room to move: cancel the mark, as `self_move` does.
                        if slot.claim(w) {
                            slot.store(w.unmarked());
                        }
                    };
                    let got = resolve(&slot, Mode::Read, fetch, relocate)
                        .expect("the model's fetch cannot fail");
                    let pinned = pin_at(&slot, got.addr);
                    if pinned {
                        epoch.exit();
                    }
                    // SAFETY: `cell` returns one of the two cells, alive for the whole run.
                    let v = rd(unsafe { &*cell(got.addr, &old, &new) });
                    assert_eq!(v, VALUE, "read a reused location");
                    if pinned {
                        epoch.enter();
                        unpin(&slot);
                    }
                    epoch.exit();
                })
            };
            evacuate(&slot, &epoch, &old);
            m.join().unwrap();
        });
    }

    #[test]
    fn loom_mutator_evacuator_handshake() {
        model(Mode::Read, Word::local(OLD).with_hot(true).with_dirty(true));
    }

    #[test]
    fn loom_handshake_with_a_write_that_touches_the_word() {
        model(Mode::Write, Word::local(OLD).with_far_copy(true));
    }
}
