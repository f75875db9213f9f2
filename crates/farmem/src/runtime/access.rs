//! The dereference decision: what a thread inside a scope does with the handle word it loaded.
//!
//! [`decide`] is the whole protocol of the mutator's side of the handshake with the evacuator
//! (see `epoch`), given the word and the access mode; [`resolve`] runs it in a loop against a
//! slot. The runtime's dereference path and the loom model (`evacuator::loom_tests`) both call
//! [`resolve`], so the model checks the code the runtime runs. The fast path of a dereference
//! ([`RawFar::deref`](super::far)) is the first case of [`decide`], inlined: one load of the word,
//! a byte compare and a shift.

use super::epoch::backoff;
use super::slot::Slot;
use super::word::{Mode, Word};
use crate::error::Result;

/// What to do with a loaded word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Use the payload at this address: the word already says what the access needs.
    Hit(usize),
    /// Someone holds the word's claim (fetching, moving, evicting, flushing): wait.
    Wait,
    /// No local copy: fetch the object.
    Fetch,
    /// The evacuator marked the object: move it into the mutator's lane (or cancel the mark).
    Move,
    /// A hit once the word is replaced by this one (hot and/or dirty bits to set).
    Touch(Word),
}

/// The decision for a `mode` access of an object whose word is `w`, by a thread inside a scope.
#[inline(always)]
pub(crate) fn decide(w: Word, mode: Mode) -> Step {
    if w.hit(mode) {
        return Step::Hit(w.addr());
    }
    if w.is_busy() {
        Step::Wait
    } else if !w.is_present() {
        Step::Fetch
    } else if w.is_moving() {
        Step::Move
    } else {
        let new = w.touched(mode);
        if new == w {
            Step::Hit(w.addr())
        } else {
            Step::Touch(new)
        }
    }
}

/// How [`resolve`] made the object usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The payload address.
    pub(crate) addr: usize,
    /// Whether it was local already (a hit), not fetched.
    pub(crate) hit: bool,
}

/// Runs [`decide`] against `slot` until the object is usable by a `mode` access.
///
/// `fetch(w)` fetches a non-present object whose word was `w` (`None`: the word changed first);
/// `relocate(w)` moves or unmarks an object the evacuator marked. The caller must be inside a
/// scope.
///
/// # Errors
/// Whatever `fetch` returns.
pub(crate) fn resolve(
    slot: &Slot,
    mode: Mode,
    mut fetch: impl FnMut(Word) -> Result<Option<usize>>,
    mut relocate: impl FnMut(Word),
) -> Result<Resolved> {
    let mut spins = 0;
    loop {
        let w = slot.load();
        match decide(w, mode) {
            Step::Hit(addr) => return Ok(Resolved { addr, hit: true }),
            Step::Wait => backoff(&mut spins),
            Step::Fetch => {
                if let Some(addr) = fetch(w)? {
                    return Ok(Resolved { addr, hit: false });
                }
            }
            Step::Move => relocate(w),
            Step::Touch(new) => {
                if slot.replace_weak(w, new) {
                    return Ok(Resolved {
                        addr: w.addr(),
                        hit: true,
                    });
                }
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const AT: usize = 0x5000;

    #[test]
    fn every_state_gets_its_step() {
        let hot = Word::local(AT).with_hot(true).with_far_copy(true);
        assert_eq!(decide(hot, Mode::Read), Step::Hit(AT));
        assert_eq!(decide(hot, Mode::Write), Step::Touch(hot.with_dirty(true)));
        assert_eq!(decide(hot.claimed(), Mode::Read), Step::Wait);
        assert_eq!(decide(hot.marked().claimed(), Mode::Read), Step::Wait);
        assert_eq!(decide(hot.marked(), Mode::ReadNt), Step::Move);
        assert_eq!(decide(Word::FAR, Mode::Read), Step::Fetch);
        assert_eq!(decide(Word::FAR.claimed(), Mode::Read), Step::Wait);
        let cold = hot.with_hot(false);
        assert_eq!(decide(cold, Mode::ReadNt), Step::Hit(AT));
        assert_eq!(decide(cold, Mode::Read), Step::Touch(hot));
    }
}
