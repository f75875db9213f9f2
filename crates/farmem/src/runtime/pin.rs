//! Explicit pins: a count in an object's handle word that keeps its local copy where it is,
//! with no scope open.
//!
//! The evacuator never marks a pinned object (`evacuator::mark` reports it, and the round keeps
//! its region), and pinning a marked object withdraws the mark, so the round that made it finds
//! the mark cancelled after its grace period and keeps the object too. Pin and unpin change the
//! word by compare-and-swap, never while someone holds its `BUSY` claim, so a claim holder's
//! plain store of the word it claimed keeps the count.
//!
//! A scope blocked on a miss pins what it dereferenced and leaves its epoch while it waits for
//! room (see `Inner::alloc_space`): the evacuator may then evict everything else.

use super::epoch::backoff;
use super::slot::Slot;

/// Pins the object of `slot` where it is, if it is local at `at`; returns whether it did.
/// `false` when it is not local, lives elsewhere, or its pin count is full.
///
/// A caller that got `at` from a dereference must still be inside the scope of that
/// dereference: then the object cannot have left `at` except by a mutator's self-move, which
/// this detects.
pub(crate) fn pin_at(slot: &Slot, at: usize) -> bool {
    let mut spins = 0;
    loop {
        let w = slot.load();
        if !w.is_present() || w.addr() != at {
            return false;
        }
        if w.is_busy() {
            backoff(&mut spins);
            continue;
        }
        let Some(new) = w.pinned() else {
            return false;
        };
        if slot.replace(w, new) {
            return true;
        }
    }
}

/// Takes back one pin of `slot` (made by [`pin_at`]).
pub(crate) fn unpin(slot: &Slot) {
    let mut spins = 0;
    loop {
        let w = slot.load();
        if w.is_busy() {
            backoff(&mut spins);
            continue;
        }
        if w.pins() == 0 {
            debug_assert!(false, "unpin without a pin: {w:?}");
            return;
        }
        if slot.replace(w, w.unpinned()) {
            return;
        }
    }
}
