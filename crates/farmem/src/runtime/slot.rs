//! Object handles: one stable 8-byte word per far object, plus its id and size.
//!
//! A [`FarBox`](crate::FarBox) is one pointer to its [`Slot`], which is nothing but the handle
//! word (a [`Word`]: the object's local address and state bits). A hit loads it, checks the bits
//! and uses the address. Every change of a word goes through the methods here: compare-and-swap,
//! or a plain store by the thread holding the word's `BUSY` claim. The words of a chunk are packed densely (8 bytes per
//! object, so a hot set's words share cache lines); the rest of a slot's state ([`Meta`]: far id,
//! length, generation, owner) lies in a parallel array of the same chunk, and the chunk's header
//! names the runtime. Chunks are aligned to the size of their word array, so a slot reaches its
//! chunk by masking its own address: a `FarBox` needs no other field.
//!
//! Chunks are never freed while the runtime lives, so a slot pointer stays valid; freed slots are
//! reused (with a new generation, which invalidates stale [`FarPtr`](crate::FarPtr)s).

use std::alloc::Layout;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64 as StdAtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::Inner;
use super::epoch::backoff;
use super::word::Word;
use crate::error::{Error, Result};
use crate::loom::{AtomicU64, Ordering as WordOrdering};

/// Owner states of a slot.
pub(crate) const FREE: u32 = 0;
/// Owned by a `FarBox`/`FarSlice`.
pub(crate) const BOXED: u32 = 1;
/// Detached: owned by whoever holds its `FarPtr`.
pub(crate) const DETACHED: u32 = 2;

/// One far object's handle word. Every `Slot` lives in a [`Chunk`] of a [`SlotTable`] (the only
/// place that creates them, apart from a test-only constructor whose slots must never ask for
/// their [`Meta`]).
#[derive(Debug)]
#[repr(transparent)]
pub(crate) struct Slot {
    word: AtomicU64,
}

/// The rest of a slot's state, beside the word in its chunk.
#[derive(Debug)]
pub(crate) struct Meta {
    pub(crate) id: StdAtomicU64,
    pub(crate) len: AtomicUsize,
    pub(crate) generation: AtomicU32,
    pub(crate) owner: AtomicU32,
}

/// Slots per chunk: 64 Ki (1 Ki under miri, which would take minutes to initialise a full one).
const CHUNK_BITS: u32 = if cfg!(miri) { 10 } else { 16 };
const CHUNK: usize = 1 << CHUNK_BITS;
const MAX_CHUNKS: usize = 1 << 16;
/// A chunk's alignment: the size of its word array, so masking a word's address gives the chunk.
const CHUNK_ALIGN: usize = CHUNK * size_of::<Slot>();

/// `CHUNK` slots: the words first (at the chunk's aligned start), then their metadata, then the
/// header.
#[cfg_attr(not(miri), repr(C, align(524288)))]
#[cfg_attr(miri, repr(C, align(8192)))]
struct Chunk {
    words: [Slot; CHUNK],
    meta: [Meta; CHUNK],
    /// Index of `words[0]`.
    base: u32,
    /// The runtime owning the table (set before any chunk exists, stable while it lives).
    rt: *const Inner,
}

const _: () = assert!(size_of::<Slot>() == 8 && align_of::<Chunk>() == CHUNK_ALIGN);

impl Slot {
    /// A slot outside any table, for the loom model (it must never ask for its [`Meta`]).
    #[cfg(all(test, loom))]
    pub(crate) fn new_detached_for_test(w: Word) -> Self {
        Self {
            word: AtomicU64::new(w.to_bits()),
        }
    }

    /// The current word (Acquire: a present word's payload is visible).
    #[inline(always)]
    pub(crate) fn load(&self) -> Word {
        Word::from_bits(self.word.load(WordOrdering::Acquire))
    }

    /// Publishes `w`. Only for the thread holding the claim (`BUSY`) of the current word, or for
    /// a slot nobody else can reach yet.
    #[inline]
    pub(crate) fn store(&self, w: Word) {
        self.word.store(w.to_bits(), WordOrdering::Release);
    }

    /// Replaces `old` by `new` if the word still is `old`.
    #[inline]
    pub(crate) fn replace(&self, old: Word, new: Word) -> bool {
        self.word
            .compare_exchange(
                old.to_bits(),
                new.to_bits(),
                WordOrdering::AcqRel,
                WordOrdering::Acquire,
            )
            .is_ok()
    }

    /// Like [`replace`](Self::replace), but may fail spuriously (for retry loops).
    #[inline]
    pub(crate) fn replace_weak(&self, old: Word, new: Word) -> bool {
        self.word
            .compare_exchange_weak(
                old.to_bits(),
                new.to_bits(),
                WordOrdering::AcqRel,
                WordOrdering::Acquire,
            )
            .is_ok()
    }

    /// Claims the object (sets `BUSY`) if its word still is `w`.
    #[inline]
    pub(crate) fn claim(&self, w: Word) -> bool {
        self.replace(w, w.claimed())
    }

    /// Waits until the word is not `BUSY` and claims it, if `want` accepts the word; returns the
    /// word claimed (without `BUSY`).
    pub(crate) fn claim_when(&self, mut want: impl FnMut(Word) -> bool) -> Option<Word> {
        let mut spins = 0;
        loop {
            let w = self.load();
            if w.is_busy() {
                backoff(&mut spins);
                continue;
            }
            if !want(w) {
                return None;
            }
            if self.claim(w) {
                return Some(w);
            }
        }
    }

    /// Waits until the word is not `BUSY` and empties it; returns the word it held.
    pub(crate) fn take(&self) -> Word {
        let mut spins = 0;
        loop {
            let w = self.load();
            if w.is_busy() {
                backoff(&mut spins);
                continue;
            }
            if self.replace(w, Word::EMPTY) {
                return w;
            }
        }
    }

    /// The chunk this slot lies in.
    #[inline]
    fn chunk(&self) -> &Chunk {
        // Every slot outside tests is an element of the word array of a chunk, which starts at
        // a `CHUNK_ALIGN`-aligned address and spans `CHUNK_ALIGN` bytes: masking gives the chunk.
        let at = std::ptr::from_ref(self).addr() & !(CHUNK_ALIGN - 1);
        // SAFETY: `at` is a live chunk (above); `new_chunk` exposed the whole chunk's provenance
        // (a `&Slot` carries only its 8 bytes'), and the chunk outlives the table's slots.
        unsafe { &*std::ptr::with_exposed_provenance::<Chunk>(at) }
    }

    #[inline]
    fn offset(&self) -> usize {
        (std::ptr::from_ref(self).addr() & (CHUNK_ALIGN - 1)) / size_of::<Slot>()
    }

    /// The slot's metadata.
    #[inline]
    pub(crate) fn meta(&self) -> &Meta {
        &self.chunk().meta[self.offset()]
    }

    /// The slot's index in its table.
    #[inline]
    pub(crate) fn idx(&self) -> u32 {
        self.chunk().base + self.offset() as u32
    }

    /// The runtime whose table holds this slot.
    #[inline]
    pub(crate) fn rt_ptr(&self) -> *const Inner {
        self.chunk().rt
    }

    pub(crate) fn id(&self) -> u64 {
        self.meta().id.load(Ordering::Relaxed)
    }

    pub(crate) fn len(&self) -> usize {
        self.meta().len.load(Ordering::Relaxed)
    }
}

/// All slots of a runtime.
pub(crate) struct SlotTable {
    chunks: Box<[AtomicPtr<Chunk>]>,
    nchunks: AtomicUsize,
    free: Mutex<Vec<u32>>,
    rt: AtomicPtr<Inner>,
}

impl SlotTable {
    pub(crate) fn new() -> Self {
        Self {
            chunks: (0..MAX_CHUNKS)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            nchunks: AtomicUsize::new(0),
            free: Mutex::new(Vec::new()),
            rt: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// Records the runtime that owns this table (once it has its final address, in its `Arc`);
    /// before this no slot can be allocated.
    pub(crate) fn set_owner(&self, rt: *const Inner) {
        self.rt.store(rt.cast_mut(), Ordering::Release);
    }

    /// The slot with index `idx`, if it was ever allocated.
    #[inline]
    pub(crate) fn get(&self, idx: u32) -> Option<&Slot> {
        let chunk = self.chunks[(idx >> CHUNK_BITS) as usize].load(Ordering::Acquire);
        if chunk.is_null() {
            return None;
        }
        // SAFETY: a non-null chunk pointer is an initialised chunk that stays alive until `self`
        // drops, and the offset is below CHUNK.
        Some(unsafe { &(*chunk).words[idx as usize & (CHUNK - 1)] })
    }

    /// The slot at address `addr`, if it is one of this table's.
    pub(crate) fn find(&self, addr: usize) -> Option<&Slot> {
        let chunk = addr & !(CHUNK_ALIGN - 1);
        let n = self.nchunks.load(Ordering::Acquire);
        let c = self.chunks[..n]
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .find(|&c| c as usize == chunk)?;
        let offset = addr - chunk;
        if !offset.is_multiple_of(size_of::<Slot>()) {
            return None;
        }
        // SAFETY: `c` is an initialised chunk of this table, alive until `self` drops; the offset
        // is within its word array (which fills `CHUNK_ALIGN` bytes) and slot-aligned.
        Some(unsafe { &(*c).words[offset / size_of::<Slot>()] })
    }

    /// Allocates and initialises chunk number `n`.
    fn new_chunk(&self, n: usize) -> Result<*mut Chunk> {
        let rt = self.rt.load(Ordering::Acquire);
        if rt.is_null() {
            return Err(Error::TooManyObjects);
        }
        let layout = Layout::new::<Chunk>();
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc(layout) }.cast::<Chunk>();
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        // SAFETY: `p` is a fresh allocation of `Chunk`'s layout; every field is written through
        // raw pointers before any reference to the chunk is made.
        unsafe {
            let words = std::ptr::addr_of_mut!((*p).words).cast::<Slot>();
            let meta = std::ptr::addr_of_mut!((*p).meta).cast::<Meta>();
            for i in 0..CHUNK {
                words.add(i).write(Slot {
                    word: AtomicU64::new(Word::EMPTY.to_bits()),
                });
                meta.add(i).write(Meta {
                    id: StdAtomicU64::new(0),
                    len: AtomicUsize::new(0),
                    generation: AtomicU32::new(0),
                    owner: AtomicU32::new(FREE),
                });
            }
            std::ptr::addr_of_mut!((*p).base).write((n * CHUNK) as u32);
            std::ptr::addr_of_mut!((*p).rt).write(rt);
        }
        // `Slot::chunk` gets back to the chunk from a slot's address.
        let _ = p.expose_provenance();
        Ok(p)
    }

    /// Allocates a slot, owned by a box, with the given id and length; its word is empty.
    pub(crate) fn alloc(&self, id: u64, len: usize) -> Result<u32> {
        let idx = {
            let mut free = self.free.lock();
            if free.is_empty() {
                let n = self.nchunks.load(Ordering::Relaxed);
                if n == MAX_CHUNKS {
                    return Err(Error::TooManyObjects);
                }
                let p = self.new_chunk(n)?;
                self.chunks[n].store(p, Ordering::Release);
                self.nchunks.store(n + 1, Ordering::Relaxed);
                let base = (n * CHUNK) as u32;
                free.extend((0..CHUNK as u32).rev().map(|i| base + i));
            }
            free.pop().ok_or(Error::TooManyObjects)?
        };
        let meta = self.get(idx).ok_or(Error::TooManyObjects)?.meta();
        meta.id.store(id, Ordering::Relaxed);
        meta.len.store(len, Ordering::Relaxed);
        meta.owner.store(BOXED, Ordering::Relaxed);
        Ok(idx)
    }

    /// Returns a slot whose object is gone.
    pub(crate) fn release(&self, idx: u32) {
        if let Some(slot) = self.get(idx) {
            let meta = slot.meta();
            meta.generation.fetch_add(1, Ordering::Relaxed);
            meta.owner.store(FREE, Ordering::Release);
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
                // SAFETY: `p` came from `alloc` with `Chunk`'s layout in `new_chunk` and was fully
                // initialised there; the table (and so every slot reference) is being dropped.
                unsafe {
                    std::ptr::drop_in_place(p);
                    std::alloc::dealloc(p.cast(), Layout::new::<Chunk>());
                }
            }
        }
    }
}
