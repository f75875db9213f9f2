//! Far pointers: [`FarBox`] (one value), [`FarSlice`] (a run of values with a runtime length),
//! and [`FarPtr`] (a plain-data, non-owning name usable inside far objects).
//!
//! # Which types may live in far memory
//!
//! Far objects are `bytemuck::Pod` types. This is what makes moving them through far memory sound:
//! - no padding, so copying an object's bytes to the backend never reads uninitialised memory;
//! - every bit pattern is a valid value, so whatever bytes come back from a (possibly faulty or
//!   hostile) server still form a valid `T`;
//! - `Copy` with no `Drop` and `'static`, so an object can be duplicated, evicted or dropped as
//!   bytes without running code, and holds no borrowed data; and `Pod` excludes references, so a
//!   far object can never smuggle a reference whose lifetime the borrow checker cannot see.
//!
//! Linked structures hold [`FarPtr`]s, which are `Pod` (a slot index and generation, validated on
//! use) and own nothing. Ownership of a node lives in one [`FarBox`] at a time:
//! [`FarBox::into_ptr`] detaches the object (it stays allocated), [`FarBox::from_ptr`] claims it
//! back, checking that the pointer names a live detached object of the right size. Because at
//! most one box owns an object, `&mut` access through it is exclusive.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::Ordering as StdOrdering;

use bytemuck::Pod;

use super::epoch::Scope;
use super::slot::{BOXED, DETACHED, Slot};
use super::word::{Mode, Word};
use super::{Inner, Runtime};
use crate::backend::{ObjectId, Protection};
use crate::error::{Error, Result};

mod raw {
    use super::*;

    /// The untyped owner of one far object (internal): one pointer to its slot. It holds one
    /// strong count of its runtime (found through the slot's chunk), released on drop.
    #[derive(Debug)]
    pub struct RawFar {
        pub(crate) slot: NonNull<Slot>,
    }
}
pub(crate) use raw::RawFar;

/// The slot a [`FarPtr`]'s bits `raw` name (its index, generation and slot), if it is of this
/// generation and its length passes `len_ok`.
fn named(
    rt: &Inner,
    raw: u64,
    len_ok: impl FnOnce(usize) -> Result<()>,
) -> Result<(u32, u32, &Slot)> {
    let idx = (raw as u32).checked_sub(1).ok_or(Error::InvalidPtr(raw))?;
    let generation = (raw >> 32) as u32;
    let slot = rt.slots.get(idx).ok_or(Error::InvalidPtr(raw))?;
    if slot.meta().generation.load(StdOrdering::Acquire) != generation {
        return Err(Error::InvalidPtr(raw));
    }
    len_ok(slot.len())?;
    Ok((idx, generation, slot))
}

// SAFETY: a RawFar is a pointer to a slot of a runtime it keeps alive (a strong count); the slot
// is only accessed through atomics, so it may be sent to and shared between threads.
unsafe impl Send for RawFar {}
// SAFETY: as above.
unsafe impl Sync for RawFar {}

impl RawFar {
    /// Wraps slot `idx` of `rt`, taking a strong count of `rt`.
    fn own(rt: &Arc<Inner>, idx: u32) -> Result<Self> {
        let slot = rt.slots.get(idx).ok_or(Error::TooManyObjects)?;
        debug_assert!(std::ptr::eq(slot.rt_ptr(), Arc::as_ptr(rt)));
        std::mem::forget(rt.clone());
        Ok(Self {
            slot: NonNull::from(slot),
        })
    }

    fn alloc(
        rt: &Arc<Inner>,
        protection: Protection,
        len: usize,
        init: impl FnOnce(&mut [u8]),
    ) -> Result<Self> {
        let idx = rt.slots.alloc(rt.ids.reserve_in(1, protection)?, len)?;
        let a = match rt.alloc_space(rt.mutator_lane(), idx, len, None) {
            Ok(a) => a,
            Err(e) => {
                rt.slots.release(idx);
                return Err(e);
            }
        };
        let this = Self::own(rt, idx)?;
        // SAFETY: the allocation is `len` bytes that nobody else can reach before publication.
        init(unsafe { std::slice::from_raw_parts_mut(a.ptr.as_ptr(), len) });
        // New and never written back: dirty, no far copy.
        let at = a.ptr.as_ptr() as usize;
        this.slot()
            .store(Word::local(at).with_dirty(true).with_large(a.is_large()));
        rt.heap.publish(a);
        Ok(this)
    }

    /// Takes ownership of an object that exists only in the backend under `id` (written there
    /// by someone else, e.g. the remote agent), `len` bytes long. It is fetched on first use.
    fn adopt(rt: &Arc<Inner>, id: ObjectId, len: usize) -> Result<Self> {
        if len > rt.max_object() {
            return Err(Error::ObjectTooLarge {
                size: len,
                limit: rt.max_object(),
            });
        }
        let idx = rt.slots.alloc(id, len)?;
        let this = Self::own(rt, idx)?;
        this.slot().store(Word::FAR);
        Ok(this)
    }

    fn claim(rt: &Arc<Inner>, raw: u64, len_ok: impl FnOnce(usize) -> Result<()>) -> Result<Self> {
        let (idx, generation, slot) = named(rt, raw, len_ok)?;
        let meta = slot.meta();
        meta.owner
            .compare_exchange(DETACHED, BOXED, StdOrdering::AcqRel, StdOrdering::Acquire)
            .map_err(|now| {
                if now > DETACHED {
                    Error::PtrShared(raw)
                } else {
                    Error::InvalidPtr(raw)
                }
            })?;
        // The generation may have changed between the check and the claim only if the object was
        // freed and the slot reused and detached again; recheck to be exact.
        if meta.generation.load(StdOrdering::Acquire) != generation {
            meta.owner.store(DETACHED, StdOrdering::Release);
            return Err(Error::InvalidPtr(raw));
        }
        Self::own(rt, idx)
    }

    fn detach(self) -> u64 {
        let s = self.slot();
        let meta = s.meta();
        meta.owner.store(DETACHED, StdOrdering::Release);
        (u64::from(meta.generation.load(StdOrdering::Relaxed)) << 32) | u64::from(s.idx() + 1)
    }

    #[inline(always)]
    pub(crate) fn slot(&self) -> &Slot {
        // SAFETY: slots are never freed while the runtime (kept alive by our strong count)
        // exists.
        unsafe { self.slot.as_ref() }
    }

    /// The slot's index in its runtime's table.
    pub(crate) fn idx(&self) -> u32 {
        self.slot().idx()
    }

    /// The runtime owning the object.
    pub(crate) fn rt(&self) -> &Inner {
        // SAFETY: the chunk header names the runtime that owns the slot table, and our strong
        // count keeps it alive at least as long as `self`.
        unsafe { &*self.slot().rt_ptr() }
    }

    /// A new strong reference to the runtime owning the object.
    pub(crate) fn rt_arc(&self) -> Arc<Inner> {
        let p = self.slot().rt_ptr();
        // SAFETY: `p` is the `Arc::as_ptr` of the runtime's `Arc` (see `SlotTable::set_owner`),
        // alive thanks to our own strong count; we add a count for the `Arc` we make.
        unsafe {
            Arc::increment_strong_count(p);
            Arc::from_raw(p)
        }
    }

    /// Whether the object belongs to runtime `rt`.
    pub(crate) fn is_of(&self, rt: &Arc<Inner>) -> bool {
        std::ptr::eq(self.slot().rt_ptr(), Arc::as_ptr(rt))
    }

    /// Returns the local address of the payload, making the object local if needed.
    ///
    /// The fast path is the first case of the dereference decision (`access::decide`): one load
    /// of the word, a byte compare and a shift; everything else is `Inner::deref_slow`.
    #[inline(always)]
    fn deref(&self, s: &Scope<'_>, mode: Mode) -> Result<usize> {
        let w = self.slot().load();
        if w.hit(mode) {
            // One increment of a counter in the caller's scope (its stack) and one store of
            // what was hit: cheap enough to count and remember every hit.
            s.count_hit(self.slot(), w.addr());
            return Ok(w.addr());
        }
        std::hint::cold_path();
        let r = self.rt().deref_slow(self.idx(), self.slot(), mode, s);
        s.count_slow(self.slot(), r.as_ref().ok().copied());
        r
    }

    /// The fast path of [`RawFar::deref`] alone: the payload address on a hit, else `None`
    /// (nothing done). The hit is not counted: the caller counts it (with
    /// `Scope::count_hits_internal` for a cursor's internal scope, which never pins what it
    /// dereferenced; see `Scope::touched`). `s` ties the address to a scope: only an internal
    /// one, since a user scope must record what it hands out.
    #[inline(always)]
    fn deref_hit(&self, s: &Scope<'_>, mode: Mode) -> Option<usize> {
        debug_assert!(s.is_internal());
        let w = self.slot().load();
        w.hit(mode).then(|| w.addr())
    }

    #[inline]
    fn is_local(&self) -> bool {
        self.slot().load().is_present()
    }

    /// Makes the object local for a `mode` access and pins it where it is (see `pin`), with no
    /// scope left open; returns the payload address. [`RawFar::unhold`] takes the pin back. For
    /// writes the caller must hold the object exclusively until then.
    pub(crate) fn hold(&self, mode: Mode) -> Result<usize> {
        loop {
            let s = Scope::new(&self.rt().counters);
            let p = self.deref(&s, mode)?;
            if super::pin::pin_at(self.slot(), p) {
                return Ok(p);
            }
            if self.slot().load().pins() == super::word::MAX_PINS {
                return Err(Error::TooManyPins);
            }
        }
    }

    /// [`RawFar::hold`] for a long phase: the object is packed with others held this way
    /// first (see `Inner::hold_packed`).
    pub(crate) fn hold_packed(&self, mode: Mode) -> Result<usize> {
        self.rt().hold_packed(self.idx(), self.slot(), mode)
    }

    /// Takes back a pin of [`RawFar::hold`].
    pub(crate) fn unhold(&self) {
        super::pin::unpin(self.slot());
    }

    fn far_id(&self) -> ObjectId {
        self.slot().id()
    }
}

impl Drop for RawFar {
    fn drop(&mut self) {
        let rt = self.slot().rt_ptr();
        if self.slot().meta().owner.load(StdOrdering::Acquire) == BOXED {
            self.rt().free_object(self.idx());
        }
        // SAFETY: releases the strong count taken in `own`; the slot is not touched after this.
        unsafe { Arc::decrement_strong_count(rt) };
    }
}

/// Far objects that can be prefetched in a batch with [`Runtime::prefetch`].
pub trait Far: sealed::Sealed {}

mod sealed {
    pub trait Sealed {
        fn raw(&self) -> &super::RawFar;
    }
}

macro_rules! common_methods {
    () => {
        /// The object's id in the backend (for remote-agent operations).
        pub fn far_id(&self) -> ObjectId {
            self.raw.far_id()
        }

        /// Whether the object is currently in local memory.
        #[inline]
        pub fn is_local(&self) -> bool {
            self.raw.is_local()
        }

        /// Makes the far copy current: writes the local copy back if it is dirty (it stays
        /// local and becomes clean). Call before a remote-agent operation reads the object.
        ///
        /// # Errors
        /// The backend's error; the object stays dirty.
        pub fn flush(&self) -> Result<()> {
            self.raw.rt().flush(self.raw.slot())
        }

        /// Drops the local copy (and any local changes) so the next dereference fetches the far
        /// copy. Call after a remote-agent operation changed the object.
        ///
        /// # Errors
        /// [`Error::NoFarCopy`] if the object was never written back (flush it first).
        pub fn invalidate_local(&mut self) -> Result<()> {
            self.raw.rt().invalidate(self.raw.slot())
        }

        /// Fetches the object now if it is not local (one round trip).
        ///
        /// # Errors
        /// The backend's error, or [`Error::LocalHeapExhausted`].
        pub fn prefetch(&self) -> Result<()> {
            self.raw.rt().prefetch(&[self.raw.idx()], false).map(|_| ())
        }
    };
}

/// An owned far pointer to one `T`.
///
/// Dereference it under a [`Scope`]: `let s = rt.scope(); let v = b.read(&s)?;`. A hit (object
/// local and already marked hot) costs one extra load, a byte compare, a branch and a shift over
/// a `Box` dereference. A `FarBox` is one pointer (8 bytes, and so is `Option<FarBox<T>>`); an
/// object of up to 8 bytes takes 16 bytes of the local heap.
///
/// ```
/// use farmem::{FarBox, Runtime, RuntimeConfig};
/// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
/// let mut b = FarBox::new(&rt, [1u32; 4]).unwrap();
/// {
///     let s = rt.scope();
///     b.write(&s).unwrap()[0] = 9;
/// }
/// assert_eq!(b.get().unwrap(), [9, 1, 1, 1]);
/// ```
pub struct FarBox<T: Pod> {
    raw: RawFar,
    _t: PhantomData<T>,
}

impl<T: Pod> FarBox<T> {
    /// The address of the object's slot (what scopes record).
    #[cfg(test)]
    pub(crate) fn slot_addr(&self) -> usize {
        std::ptr::from_ref(self.raw.slot()) as usize
    }

    const ALIGN_OK: () = assert!(
        std::mem::align_of::<T>() <= super::heap::ALIGN,
        "far objects are at most 16-byte aligned"
    );

    /// Allocates a far object holding `value` (it starts local and dirty).
    ///
    /// # Errors
    /// [`Error::LocalHeapExhausted`] when no room can be made, [`Error::ObjectTooLarge`].
    pub fn new(rt: &Runtime, value: T) -> Result<Self> {
        let () = Self::ALIGN_OK;
        let raw = RawFar::alloc(&rt.inner, rt.protection, size_of::<T>(), |b| {
            b.copy_from_slice(bytemuck::bytes_of(&value));
        })?;
        Ok(Self {
            raw,
            _t: PhantomData,
        })
    }

    /// Allocates a zeroed far object without building it on the stack (for large `T`).
    ///
    /// # Errors
    /// As [`FarBox::new`].
    pub fn new_zeroed(rt: &Runtime) -> Result<Self> {
        let () = Self::ALIGN_OK;
        let raw = RawFar::alloc(&rt.inner, rt.protection, size_of::<T>(), |b| b.fill(0))?;
        Ok(Self {
            raw,
            _t: PhantomData,
        })
    }

    /// Shared access; marks the object hot.
    ///
    /// # Errors
    /// When the object must be fetched: the backend's error, or [`Error::LocalHeapExhausted`].
    #[inline(always)]
    pub fn read<'a>(&'a self, s: &'a Scope<'_>) -> Result<&'a T> {
        let p = self.raw.deref(s, Mode::Read)?;
        // SAFETY: `p` is the payload of this object, `size_of::<T>()` bytes, 16-byte aligned and
        // holding a valid `T` (any bits are, `T: Pod`). The scope keeps it in place while the
        // reference lives; writers need `&mut self`, which this borrow excludes.
        Ok(unsafe { &*(p as *const T) })
    }

    /// Exclusive access; marks the object hot and dirty.
    ///
    /// # Errors
    /// As [`FarBox::read`].
    #[inline(always)]
    pub fn write<'a>(&'a mut self, s: &'a Scope<'_>) -> Result<&'a mut T> {
        let p = self.raw.deref(s, Mode::Write)?;
        // SAFETY: as in `read`; `&mut self` makes this the only reference to the object.
        Ok(unsafe { &mut *(p as *mut T) })
    }

    /// Non-temporal shared access: does not mark the object hot; if it has to be fetched it
    /// lands in a region evacuated first.
    ///
    /// # Errors
    /// As [`FarBox::read`].
    pub fn read_nt<'a>(&'a self, s: &'a Scope<'_>) -> Result<&'a T> {
        let p = self.raw.deref(s, Mode::ReadNt)?;
        // SAFETY: as in `read`.
        Ok(unsafe { &*(p as *const T) })
    }

    /// Non-temporal exclusive access (marks dirty, not hot).
    ///
    /// # Errors
    /// As [`FarBox::read`].
    pub fn write_nt<'a>(&'a mut self, s: &'a Scope<'_>) -> Result<&'a mut T> {
        let p = self.raw.deref(s, Mode::WriteNt)?;
        // SAFETY: as in `write`.
        Ok(unsafe { &mut *(p as *mut T) })
    }

    /// Copies the value out (opens a scope of its own).
    ///
    /// # Errors
    /// As [`FarBox::read`].
    pub fn get(&self) -> Result<T> {
        let s = Scope::new(&self.raw.rt().counters);
        self.read(&s).copied()
    }

    /// Replaces the value (opens a scope of its own).
    ///
    /// # Errors
    /// As [`FarBox::read`].
    pub fn set(&mut self, value: T) -> Result<()> {
        let rt = self.raw.rt_arc();
        let s = Scope::new(&rt.counters);
        *self.write(&s)? = value;
        Ok(())
    }

    /// Detaches the object: it stays allocated, owned by whoever holds the returned pointer
    /// (store it in another far object). Reclaim it with [`FarBox::from_ptr`]; objects still
    /// detached when the runtime ends are freed then.
    pub fn into_ptr(self) -> FarPtr<T> {
        FarPtr::from_raw(self.raw.detach())
    }

    /// Claims a detached object back.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] unless `ptr` names a live detached object of `rt`;
    /// [`Error::PtrShared`] while [`FarPtr::read`] reads it; [`Error::TypeMismatch`] if its size
    /// is not `size_of::<T>()`.
    pub fn from_ptr(rt: &Runtime, ptr: FarPtr<T>) -> Result<Self> {
        let raw = RawFar::claim(&rt.inner, ptr.raw, |len| {
            if len == size_of::<T>() {
                Ok(())
            } else {
                Err(Error::TypeMismatch {
                    expected: size_of::<T>(),
                    actual: len,
                })
            }
        })?;
        Ok(Self {
            raw,
            _t: PhantomData,
        })
    }

    /// Takes ownership of an object that so far exists only in the backend, under `id` (for
    /// example one the remote agent wrote under an id from `Runtime::reserve_ids`). Nothing is
    /// fetched now; the first dereference fetches it. Dropping the box frees the far copy.
    ///
    /// The caller must not adopt one id twice, nor an id owned by another box.
    ///
    /// # Errors
    /// [`Error::TooManyObjects`]. If the far object turns out not to be `size_of::<T>()` bytes,
    /// the dereference that fetches it fails with the backend's size error.
    pub(crate) fn from_far(rt: &Runtime, id: ObjectId) -> Result<Self> {
        let () = Self::ALIGN_OK;
        Ok(Self {
            raw: RawFar::adopt(&rt.inner, id, size_of::<T>())?,
            _t: PhantomData,
        })
    }

    common_methods!();
}

impl<T: Pod> sealed::Sealed for FarBox<T> {
    fn raw(&self) -> &RawFar {
        &self.raw
    }
}
impl<T: Pod> Far for FarBox<T> {}

impl<T: Pod> std::fmt::Debug for FarBox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FarBox")
            .field("id", &self.far_id())
            .field("local", &self.is_local())
            .finish()
    }
}

/// An owned far object holding `len` values of `T`, the length chosen at run time.
///
/// This is the chunk type for far containers. Slices of a quarter region (256 KiB by default)
/// or more get a dedicated local allocation; sizes up to half the local budget are accepted.
///
/// ```
/// use farmem::{FarSlice, Runtime, RuntimeConfig};
/// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
/// let mut v = FarSlice::from_slice(&rt, &[1u64, 2, 3]).unwrap();
/// let s = rt.scope();
/// v.write(&s).unwrap()[2] = 30;
/// assert_eq!(v.read(&s).unwrap(), &[1, 2, 30]);
/// ```
pub struct FarSlice<T: Pod> {
    raw: RawFar,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> FarSlice<T> {
    const ALIGN_OK: () = assert!(
        std::mem::align_of::<T>() <= super::heap::ALIGN,
        "far objects are at most 16-byte aligned"
    );

    fn bytes(rt: &Runtime, len: usize) -> Result<usize> {
        len.checked_mul(size_of::<T>())
            .ok_or(Error::ObjectTooLarge {
                size: usize::MAX,
                limit: rt.inner.max_object(),
            })
    }

    /// Allocates `len` zeroed values.
    ///
    /// # Errors
    /// [`Error::ObjectTooLarge`], [`Error::LocalHeapExhausted`].
    pub fn new_zeroed(rt: &Runtime, len: usize) -> Result<Self> {
        let () = Self::ALIGN_OK;
        let raw = RawFar::alloc(&rt.inner, rt.protection, Self::bytes(rt, len)?, |b| {
            b.fill(0)
        })?;
        Ok(Self {
            raw,
            len,
            _t: PhantomData,
        })
    }

    /// Allocates a copy of `values`.
    ///
    /// # Errors
    /// As [`FarSlice::new_zeroed`].
    pub fn from_slice(rt: &Runtime, values: &[T]) -> Result<Self> {
        let () = Self::ALIGN_OK;
        let raw = RawFar::alloc(
            &rt.inner,
            rt.protection,
            Self::bytes(rt, values.len())?,
            |b| {
                b.copy_from_slice(bytemuck::cast_slice(values));
            },
        )?;
        Ok(Self {
            raw,
            len: values.len(),
            _t: PhantomData,
        })
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the slice is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slice<'a>(&self, p: usize) -> &'a [T] {
        // SAFETY: `p` is this object's payload of `len * size_of::<T>()` bytes, 16-byte aligned,
        // valid for any bits (`T: Pod`), kept in place by the scope the caller borrows for 'a,
        // and not mutably borrowed (callers hold `&self`).
        unsafe { std::slice::from_raw_parts(p as *const T, self.len) }
    }

    fn slice_mut<'a>(&mut self, p: usize) -> &'a mut [T] {
        // SAFETY: as in `slice`; the callers hold `&mut self` for 'a, so this is the only
        // reference to the object.
        unsafe { std::slice::from_raw_parts_mut(p as *mut T, self.len) }
    }

    /// Shared access; marks the object hot.
    ///
    /// # Errors
    /// When the object must be fetched: the backend's error, or [`Error::LocalHeapExhausted`].
    #[inline(always)]
    pub fn read<'a>(&'a self, s: &'a Scope<'_>) -> Result<&'a [T]> {
        let p = self.raw.deref(s, Mode::Read)?;
        Ok(self.slice(p))
    }

    /// [`FarSlice::read`] when it is a hit (local and hot), else `None` with nothing done: for
    /// callers that do bookkeeping (stride detection, yielding) only on the way to a miss. The
    /// hit is not counted: the caller, a cursor with an internal scope, counts its hits and adds
    /// them with `Scope::count_hits_internal`.
    #[inline(always)]
    pub(crate) fn read_hit_uncounted<'a>(&'a self, s: &'a Scope<'_>) -> Option<&'a [T]> {
        self.raw.deref_hit(s, Mode::Read).map(|p| self.slice(p))
    }

    /// Makes the slice local and pins it in place with no scope open, until
    /// [`FarSlice::unhold`]; returns its payload. While held, the evacuator neither moves nor
    /// evicts it, so the caller may read it through the pointer for as long as it holds the
    /// slice shared. Meant for a long phase of reads: the slice is first moved beside others
    /// held this way, so the regions their pins keep from the evacuator hold nothing else.
    ///
    /// # Errors
    /// As [`FarSlice::read`], or [`Error::TooManyPins`].
    pub(crate) fn hold_packed(&self) -> Result<*const T> {
        Ok(self.raw.hold_packed(Mode::Read)? as *const T)
    }

    /// Takes back one [`FarSlice::hold_packed`].
    pub(crate) fn unhold(&self) {
        self.raw.unhold();
    }

    /// [`FarSlice::write`] when it is a hit (local, hot and dirty), else `None`, without
    /// counting the hit (see [`FarSlice::read_hit_uncounted`]).
    #[inline(always)]
    pub(crate) fn write_hit_uncounted<'a>(&'a mut self, s: &'a Scope<'_>) -> Option<&'a mut [T]> {
        let p = self.raw.deref_hit(s, Mode::Write)?;
        Some(self.slice_mut(p))
    }

    /// Exclusive access; marks the object hot and dirty.
    ///
    /// # Errors
    /// As [`FarSlice::read`].
    #[inline(always)]
    pub fn write<'a>(&'a mut self, s: &'a Scope<'_>) -> Result<&'a mut [T]> {
        let p = self.raw.deref(s, Mode::Write)?;
        Ok(self.slice_mut(p))
    }

    /// Non-temporal shared access (see [`FarBox::read_nt`]).
    ///
    /// # Errors
    /// As [`FarSlice::read`].
    pub fn read_nt<'a>(&'a self, s: &'a Scope<'_>) -> Result<&'a [T]> {
        let p = self.raw.deref(s, Mode::ReadNt)?;
        Ok(self.slice(p))
    }

    /// Non-temporal exclusive access (see [`FarBox::write_nt`]).
    ///
    /// # Errors
    /// As [`FarSlice::read`].
    pub fn write_nt<'a>(&'a mut self, s: &'a Scope<'_>) -> Result<&'a mut [T]> {
        let p = self.raw.deref(s, Mode::WriteNt)?;
        Ok(self.slice_mut(p))
    }

    /// Copies the values out.
    ///
    /// # Errors
    /// As [`FarSlice::read`].
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let s = Scope::new(&self.raw.rt().counters);
        Ok(self.read(&s)?.to_vec())
    }

    /// Detaches the object (see [`FarBox::into_ptr`]).
    pub fn into_ptr(self) -> FarPtr<[T]> {
        FarPtr::from_raw(self.raw.detach())
    }

    /// Claims a detached slice back.
    ///
    /// # Errors
    /// [`Error::InvalidPtr`], [`Error::PtrShared`] while [`FarPtr::read`] reads it, or
    /// [`Error::TypeMismatch`] if its size is not a multiple of `size_of::<T>()`.
    pub fn from_ptr(rt: &Runtime, ptr: FarPtr<[T]>) -> Result<Self> {
        let mut len = 0;
        let raw = RawFar::claim(&rt.inner, ptr.raw, |bytes| {
            let sz = size_of::<T>();
            if sz == 0 && bytes == 0 {
                return Ok(());
            }
            if sz == 0 || bytes % sz != 0 {
                return Err(Error::TypeMismatch {
                    expected: sz,
                    actual: bytes,
                });
            }
            len = bytes / sz;
            Ok(())
        })?;
        Ok(Self {
            raw,
            len,
            _t: PhantomData,
        })
    }

    /// Takes ownership of a slice of `len` values that so far exists only in the backend, under
    /// `id` (the output of a remote-agent operation written under an id from
    /// `Runtime::reserve_ids`). Nothing is fetched now: the first dereference (or a prefetch)
    /// fetches it. Dropping the slice frees the far copy.
    ///
    /// The caller must not adopt one id twice, nor an id owned by another far object.
    ///
    /// # Errors
    /// [`Error::ObjectTooLarge`], [`Error::TooManyObjects`]. If the far object is not
    /// `len * size_of::<T>()` bytes, the dereference that fetches it fails with the backend's
    /// size error.
    pub(crate) fn from_far(rt: &Runtime, id: ObjectId, len: usize) -> Result<Self> {
        let () = Self::ALIGN_OK;
        Ok(Self {
            raw: RawFar::adopt(&rt.inner, id, Self::bytes(rt, len)?)?,
            len,
            _t: PhantomData,
        })
    }

    common_methods!();
}

impl<T: Pod> sealed::Sealed for FarSlice<T> {
    fn raw(&self) -> &RawFar {
        &self.raw
    }
}
impl<T: Pod> Far for FarSlice<T> {}

impl<T: Pod> std::fmt::Debug for FarSlice<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FarSlice")
            .field("id", &self.far_id())
            .field("len", &self.len)
            .field("local", &self.is_local())
            .finish()
    }
}

const _: () = assert!(size_of::<FarBox<u64>>() == 8 && size_of::<Option<FarBox<u64>>>() == 8);

mod batch;
mod pinned;
mod ptr;
mod shared;
pub use pinned::{Pinned, PinnedMut};
pub use ptr::FarPtr;
pub use shared::FarRef;
