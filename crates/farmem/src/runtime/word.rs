//! The handle word: one far object's local address and state, packed into 64 bits.
//!
//! [`Word`] owns the encoding; nothing else in the crate knows which bit means what. The layout
//! is `address << 16 | flags`:
//!
//! | bits  | meaning                                                                  |
//! |-------|--------------------------------------------------------------------------|
//! | 16-63 | local address of the payload (user-space addresses fit 48 bits)          |
//! | 12-15 | pin count: explicit pins that keep the local copy where it is (see `pin`) |
//! | 11    | `LARGE`: the local copy is a dedicated allocation, not in a region       |
//! | 10    | `REMOTE`: a far copy exists (it must be freed with the object)           |
//! | 9     | `NT`: fetched by a non-temporal access (evict first, not hot)            |
//! | 8     | `DIRTY`: the local copy differs from the far copy                        |
//! | 7     | `PRESENT`: the local copy at the address is valid                        |
//! | 6     | `HOT`: dereferenced since the evacuator last looked (CLOCK bit)          |
//! | 5     | `MOVING`: the evacuator wants to move or evict the object (see `epoch`)  |
//! | 4     | `BUSY`: someone is moving, fetching, evicting or flushing it; others wait |
//! | 0-3   | always clear                                                             |
//!
//! The bits a hit checks fill the low byte, so a read hit is one byte compare (`PRESENT | HOT`:
//! present, hot, not moving, not busy) and the address is one shift; a write hit also tests
//! `DIRTY`.

/// Where the local address starts.
const ADDR_SHIFT: u32 = 16;
/// The address bits.
const ADDR: u64 = !((1 << ADDR_SHIFT) - 1);
const PRESENT: u64 = 1 << 7;
const HOT: u64 = 1 << 6;
const MOVING: u64 = 1 << 5;
const BUSY: u64 = 1 << 4;
const DIRTY: u64 = 1 << 8;
const NT: u64 = 1 << 9;
const REMOTE: u64 = 1 << 10;
const LARGE: u64 = 1 << 11;
/// Where the pin count starts.
const PIN_SHIFT: u32 = 12;
/// One pin.
const PIN_ONE: u64 = 1 << PIN_SHIFT;
/// The pin-count bits.
const PINS: u64 = 0xf << PIN_SHIFT;
/// The most pins a word holds.
pub(crate) const MAX_PINS: u64 = PINS >> PIN_SHIFT;
/// The low byte of a word a read can use as is.
const READY: u8 = (PRESENT | HOT) as u8;

/// How an object is dereferenced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Shared access; marks the object hot.
    Read,
    /// Exclusive access; marks the object hot and dirty.
    Write,
    /// Shared access that does not mark the object hot.
    ReadNt,
    /// Exclusive access that marks the object dirty, not hot.
    WriteNt,
}

impl Mode {
    /// Whether the access writes (the object becomes dirty).
    pub(crate) const fn is_write(self) -> bool {
        matches!(self, Self::Write | Self::WriteNt)
    }

    /// Whether the access is non-temporal.
    pub(crate) const fn is_nt(self) -> bool {
        matches!(self, Self::ReadNt | Self::WriteNt)
    }
}

/// One handle word (a value; the shared atomic is [`Slot`](super::slot::Slot)).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub(crate) struct Word(u64);

impl Word {
    /// No local copy, no far copy (a fresh or freed slot).
    pub(crate) const EMPTY: Self = Self(0);
    /// No local copy; the object lives in its far copy only.
    pub(crate) const FAR: Self = Self(REMOTE);

    /// A present local copy at `at` with no other flag set: a new object not yet written back.
    /// Chain `with_*` calls for the rest of its state.
    #[inline(always)]
    pub(crate) const fn local(at: usize) -> Self {
        debug_assert!((at as u64) >> (64 - ADDR_SHIFT) == 0);
        Self(((at as u64) << ADDR_SHIFT) | PRESENT)
    }

    /// The raw bits (for the atomic that stores the word).
    #[inline(always)]
    pub(crate) const fn to_bits(self) -> u64 {
        self.0
    }

    /// A word from its raw bits.
    #[inline(always)]
    pub(crate) const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    const fn with(self, bit: u64, on: bool) -> Self {
        if on {
            Self(self.0 | bit)
        } else {
            Self(self.0 & !bit)
        }
    }

    /// Sets or clears `DIRTY`.
    pub(crate) const fn with_dirty(self, on: bool) -> Self {
        self.with(DIRTY, on)
    }
    /// Sets or clears `REMOTE` (a far copy exists).
    pub(crate) const fn with_far_copy(self, on: bool) -> Self {
        self.with(REMOTE, on)
    }
    /// Sets or clears `LARGE` (dedicated allocation).
    pub(crate) const fn with_large(self, on: bool) -> Self {
        self.with(LARGE, on)
    }
    /// Sets or clears `HOT`.
    pub(crate) const fn with_hot(self, on: bool) -> Self {
        self.with(HOT, on)
    }
    /// Sets or clears `NT`.
    pub(crate) const fn with_nt(self, on: bool) -> Self {
        self.with(NT, on)
    }

    /// The local address of the payload (meaningful while [`is_present`](Self::is_present)).
    #[inline(always)]
    pub(crate) const fn addr(self) -> usize {
        (self.0 >> ADDR_SHIFT) as usize
    }
    /// The local copy is valid.
    #[inline(always)]
    pub(crate) const fn is_present(self) -> bool {
        self.0 & PRESENT != 0
    }
    /// Dereferenced since the evacuator last looked.
    pub(crate) const fn is_hot(self) -> bool {
        self.0 & HOT != 0
    }
    /// Marked by the evacuator.
    pub(crate) const fn is_moving(self) -> bool {
        self.0 & MOVING != 0
    }
    /// Claimed by a thread; everyone else waits.
    #[inline(always)]
    pub(crate) const fn is_busy(self) -> bool {
        self.0 & BUSY != 0
    }
    /// The local copy differs from the far copy.
    pub(crate) const fn is_dirty(self) -> bool {
        self.0 & DIRTY != 0
    }
    /// Fetched non-temporally.
    #[cfg(all(test, not(loom)))]
    pub(crate) const fn is_nt(self) -> bool {
        self.0 & NT != 0
    }
    /// A far copy exists.
    pub(crate) const fn has_far_copy(self) -> bool {
        self.0 & REMOTE != 0
    }
    /// The local copy is a dedicated allocation.
    pub(crate) const fn is_large(self) -> bool {
        self.0 & LARGE != 0
    }
    /// The far copy is not current (dirty, or never written back): evicting needs a write-back.
    pub(crate) const fn needs_writeback(self) -> bool {
        self.is_dirty() || !self.has_far_copy()
    }

    /// Whether a `mode` access may use this word as is: the hit test of the fast path, one byte
    /// compare (plus one bit test for writes).
    #[inline(always)]
    pub(crate) const fn hit(self, mode: Mode) -> bool {
        let low = self.0 as u8;
        match mode {
            Mode::Read => low == READY,
            Mode::Write => low == READY && self.0 & DIRTY != 0,
            Mode::ReadNt => low | HOT as u8 == READY,
            Mode::WriteNt => low | HOT as u8 == READY && self.0 & DIRTY != 0,
        }
    }

    /// The word once a `mode` access has used it (hot or not, dirty for writes); equal to `self`
    /// when nothing changes.
    pub(crate) const fn touched(self, mode: Mode) -> Self {
        let mut w = self.0;
        if mode.is_write() {
            w |= DIRTY;
        }
        if !mode.is_nt() {
            w = (w | HOT) & !NT;
        }
        Self(w)
    }

    /// The word of a fresh local copy at `at` just fetched for a `mode` access.
    pub(crate) const fn fetched(at: usize, large: bool, mode: Mode) -> Self {
        let nt = mode.is_nt();
        let write = mode.is_write();
        Self::local(at)
            .with_far_copy(true)
            .with_large(large)
            .with_nt(nt)
            .with_hot(!nt)
            .with_dirty(write)
    }

    /// The word with `BUSY` set (claimed).
    #[inline(always)]
    pub(crate) const fn claimed(self) -> Self {
        Self(self.0 | BUSY)
    }

    /// Marked by the evacuator: `MOVING` set, `HOT` cleared (CLOCK).
    pub(crate) const fn marked(self) -> Self {
        Self((self.0 | MOVING) & !HOT)
    }

    /// The evacuator's mark withdrawn (the object stays where it is), `BUSY` released.
    pub(crate) const fn unmarked(self) -> Self {
        Self(self.0 & !(MOVING | BUSY))
    }

    /// Moved by the evacuator to `to`: every flag kept, mark and claim released.
    pub(crate) const fn relocated(self, to: usize) -> Self {
        Self(Self::local(to).0 | (self.0 & !(ADDR | MOVING | BUSY)))
    }

    /// Moved by a mutator to `to`: dirty and far-copy state kept, hot, unmarked, unclaimed.
    pub(crate) const fn self_moved(self, to: usize) -> Self {
        Self(Self::local(to).0 | (self.0 & (DIRTY | REMOTE)) | HOT)
    }

    /// How many explicit pins hold the local copy in place.
    pub(crate) const fn pins(self) -> u64 {
        (self.0 & PINS) >> PIN_SHIFT
    }

    /// One more pin, and any evacuator mark withdrawn (the object stays where it is); `None`
    /// when the count is full.
    pub(crate) const fn pinned(self) -> Option<Self> {
        if self.pins() == MAX_PINS {
            None
        } else {
            Some(Self((self.0 + PIN_ONE) & !MOVING))
        }
    }

    /// One pin fewer (the count must not be zero).
    pub(crate) const fn unpinned(self) -> Self {
        debug_assert!(self.pins() > 0);
        Self(self.0 - PIN_ONE)
    }

    /// Written back: clean, with a far copy.
    pub(crate) const fn cleaned(self) -> Self {
        Self((self.0 & !DIRTY) | REMOTE)
    }
}

impl std::fmt::Debug for Word {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let flags = [
            (PRESENT, "P"),
            (HOT, "H"),
            (MOVING, "M"),
            (BUSY, "B"),
            (DIRTY, "D"),
            (NT, "N"),
            (REMOTE, "R"),
            (LARGE, "L"),
        ];
        write!(f, "Word({:#x} ", self.addr())?;
        for (bit, name) in flags {
            if self.0 & bit != 0 {
                f.write_str(name)?;
            }
        }
        f.write_str(")")
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const AT: usize = 0x7f12_3456_7890;
    const MODES: [Mode; 4] = [Mode::Read, Mode::Write, Mode::ReadNt, Mode::WriteNt];

    #[test]
    fn flags_live_in_the_low_byte_or_above_it_never_in_the_address() {
        let all = PRESENT | HOT | MOVING | BUSY | DIRTY | NT | REMOTE | LARGE;
        assert_eq!(all & ADDR, 0);
        assert_eq!((all | PINS) & ADDR, 0);
        assert_eq!(all & PINS, 0, "the pin count has bits of its own");
        assert_eq!(all & 0xf, 0, "bits 0-3 stay clear");
        assert_eq!(
            (PRESENT | HOT | MOVING | BUSY) >> 8,
            0,
            "hit bits fill the low byte"
        );
        assert_eq!(Word::local(AT).addr(), AT);
        assert_eq!(Word::FAR.addr(), 0);
        assert!(!Word::FAR.is_present() && Word::FAR.has_far_copy());
    }

    #[test]
    fn hits_need_present_hot_unmarked_unclaimed_and_dirty_for_writes() {
        let ready = Word::local(AT).with_hot(true);
        assert!(ready.hit(Mode::Read) && ready.hit(Mode::ReadNt));
        assert!(!ready.hit(Mode::Write) && !ready.hit(Mode::WriteNt));
        let dirty = ready.with_dirty(true);
        assert!(MODES.iter().all(|&m| dirty.hit(m)));
        // Non-temporal accesses do not need the hot bit.
        let cold = dirty.with_hot(false);
        assert!(cold.hit(Mode::ReadNt) && cold.hit(Mode::WriteNt));
        assert!(!cold.hit(Mode::Read) && !cold.hit(Mode::Write));
        for w in [dirty.marked(), dirty.claimed(), Word::FAR, Word::EMPTY] {
            assert!(MODES.iter().all(|&m| !w.hit(m)), "{w:?}");
        }
        // An NT-fetched object is no read hit until a hot access sets HOT and clears NT.
        let nt = Word::fetched(AT, false, Mode::ReadNt);
        assert!(!nt.hit(Mode::Read) && nt.hit(Mode::ReadNt));
        let touched = nt.touched(Mode::Read);
        assert!(touched.hit(Mode::Read) && !touched.is_nt());
    }

    #[test]
    fn transitions_keep_what_they_promise() {
        let w = Word::fetched(AT, true, Mode::Write);
        assert!(w.is_present() && w.is_hot() && w.is_dirty() && w.is_large() && !w.is_nt());
        assert!(w.has_far_copy() && w.needs_writeback());
        let nt = Word::fetched(AT, false, Mode::ReadNt);
        assert!(nt.is_nt() && !nt.is_hot() && !nt.is_dirty() && !nt.is_large());
        let m = w.marked();
        assert!(m.is_moving() && !m.is_hot());
        let moved = m.claimed().relocated(0x1000);
        assert_eq!(moved.addr(), 0x1000);
        assert!(!moved.is_moving() && !moved.is_busy() && moved.is_dirty() && moved.is_large());
        let self_moved = m.claimed().self_moved(0x2000);
        assert!(self_moved.hit(Mode::Write) && !self_moved.is_large());
        assert_eq!(m.claimed().unmarked(), w.with_hot(false));
        assert!(!w.cleaned().needs_writeback() && w.cleaned().has_far_copy());
        assert!(Word::local(AT).needs_writeback());
    }

    #[test]
    fn pins_count_keep_the_address_and_the_hit_and_withdraw_a_mark() {
        let w = Word::fetched(AT, false, Mode::Read);
        let p = w.marked().pinned().unwrap();
        assert_eq!((p.pins(), p.addr(), p.is_moving()), (1, AT, false));
        let hot = w.pinned().unwrap();
        assert!(hot.hit(Mode::Read), "a pin does not slow a hit");
        assert_eq!(hot.touched(Mode::Write).pins(), 1);
        assert_eq!(hot.cleaned().pins(), 1);
        let mut full = w;
        for _ in 0..MAX_PINS {
            full = full.pinned().unwrap();
        }
        assert_eq!(full.addr(), AT);
        assert!(full.pinned().is_none());
        assert_eq!(hot.unpinned(), w);
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(
            at in 0usize..(1 << 48),
            flags in proptest::collection::vec(any::<bool>(), 8),
        ) {
            let w = Word::local(at)
                .with_hot(flags[0])
                .with_dirty(flags[1])
                .with_nt(flags[2])
                .with_far_copy(flags[3])
                .with_large(flags[4]);
            let w = if flags[5] { w.marked() } else { w };
            let w = if flags[6] { w.claimed() } else { w };
            prop_assert_eq!(Word::from_bits(w.to_bits()), w);
            prop_assert_eq!(w.addr(), at);
            prop_assert!(w.is_present());
            prop_assert_eq!(w.is_hot(), flags[0] && !flags[5]);
            prop_assert_eq!(w.is_dirty(), flags[1]);
            prop_assert_eq!(w.is_nt(), flags[2]);
            prop_assert_eq!(w.has_far_copy(), flags[3]);
            prop_assert_eq!(w.is_large(), flags[4]);
            prop_assert_eq!(w.is_moving(), flags[5]);
            prop_assert_eq!(w.is_busy(), flags[6]);
            // Moving the object changes the address and nothing but the mark and claim.
            let to = at ^ 0x10;
            let r = w.relocated(to);
            prop_assert_eq!(r.addr(), to);
            prop_assert_eq!(r, Word::from_bits(w.to_bits()).unmarked().relocated(to));
            prop_assert_eq!(
                (r.is_dirty(), r.is_nt(), r.has_far_copy(), r.is_large()),
                (flags[1], flags[2], flags[3], flags[4])
            );
        }

        #[test]
        fn a_hit_is_exactly_a_word_the_access_leaves_unchanged(
            bits in any::<u64>(),
            m in 0usize..4,
        ) {
            let mode = MODES[m];
            let w = Word::from_bits(bits & !0xf);
            // Invariant of every word the runtime makes: hot and non-temporal exclude each other.
            prop_assume!(!(w.is_hot() && w.is_nt()));
            let usable = w.is_present() && !w.is_moving() && !w.is_busy();
            prop_assert_eq!(w.hit(mode), usable && w.touched(mode) == w);
        }
    }
}
