//! Shared reads of detached objects: [`FarPtr::read`] and the [`FarRef`] it returns.
//!
//! Walking a linked structure only to read it should not need ownership of every node. A
//! shared read marks the object as read (its owner state counts readers above `DETACHED`), so
//! any number of readers, on any threads, can hold it at once, and nobody can claim it with
//! [`FarBox::from_ptr`](super::FarBox::from_ptr) (and so write or free it) until the last
//! [`FarRef`] is dropped.

use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use bytemuck::Pod;

use super::super::epoch::Scope;
use super::super::slot::{DETACHED, Slot};
use super::super::word::Mode;
use super::super::{Inner, Runtime};
use super::{FarPtr, RawFar};
use crate::error::{Error, Result};

/// A shared, read-only view of a detached far object, from [`FarPtr::read`].
///
/// While it lives the object stays local (the scope it was read under keeps it in place) and
/// cannot be claimed: [`FarBox::from_ptr`](super::FarBox::from_ptr) fails with
/// [`Error::PtrShared`]. Dropping it ends the read.
pub struct FarRef<'a, T: ?Sized> {
    value: &'a T,
    owner: &'a AtomicU32,
}

impl<T: ?Sized> std::ops::Deref for FarRef<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        self.value
    }
}

impl<T: ?Sized> Drop for FarRef<'_, T> {
    fn drop(&mut self) {
        self.owner.fetch_sub(1, Ordering::Release);
    }
}

impl<T: ?Sized + std::fmt::Debug> std::fmt::Debug for FarRef<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("FarRef").field(&self.value).finish()
    }
}

/// Marks the object `raw` names as read by one more reader and makes it local under `s`;
/// returns its slot and payload address.
fn share<'a>(
    rt: &'a Inner,
    raw: u64,
    s: &Scope<'_>,
    len_ok: impl FnOnce(usize) -> Result<()>,
) -> Result<(&'a Slot, usize)> {
    let (_, generation, slot) = super::named(rt, raw, len_ok)?;
    let meta = slot.meta();
    let mut owner = meta.owner.load(Ordering::Acquire);
    loop {
        // Detached (no reader yet) or detached and already read: anything else is free or
        // owned by a box.
        if owner < DETACHED {
            return Err(Error::InvalidPtr(raw));
        }
        if owner == u32::MAX {
            return Err(Error::TooManyPins);
        }
        match meta.owner.compare_exchange_weak(
            owner,
            owner + 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => break,
            Err(now) => owner = now,
        }
    }
    // As in a claim: the generation can have moved between the check and the count only if the
    // object was freed, its slot reused and detached again.
    if meta.generation.load(Ordering::Acquire) != generation {
        meta.owner.fetch_sub(1, Ordering::Release);
        return Err(Error::InvalidPtr(raw));
    }
    // A borrowed handle: no strong count of the runtime is taken, so none may be released.
    let handle = ManuallyDrop::new(RawFar {
        slot: NonNull::from(slot),
    });
    match handle.deref(s, Mode::Read) {
        Ok(p) => Ok((slot, p)),
        Err(e) => {
            meta.owner.fetch_sub(1, Ordering::Release);
            Err(e)
        }
    }
}

fn size_is(expected: usize) -> impl FnOnce(usize) -> Result<()> {
    move |actual| {
        if actual == expected {
            Ok(())
        } else {
            Err(Error::TypeMismatch { expected, actual })
        }
    }
}

impl<T: Pod> FarPtr<T> {
    /// Reads the object this pointer names without claiming it: a read-only walk of a linked
    /// structure needs no [`FarBox`](super::FarBox) per node, and several threads may read the
    /// same object at once. The object is fetched if it is not local.
    ///
    /// ```
    /// use farmem::{FarBox, FarPtr, Pod, Runtime, RuntimeConfig, Zeroable};
    ///
    /// #[derive(Clone, Copy, Pod, Zeroable)]
    /// #[bytemuck(crate = "farmem::bytemuck")]
    /// #[repr(C)]
    /// struct Node {
    ///     value: u64,
    ///     next: FarPtr<Node>,
    /// }
    ///
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    /// let mut head = FarPtr::NULL;
    /// for value in 0..100 {
    ///     head = FarBox::new(&rt, Node { value, next: head }).unwrap().into_ptr();
    /// }
    /// let (mut sum, mut p) = (0, head);
    /// let s = rt.scope();
    /// while !p.is_null() {
    ///     let node = p.read(&rt, &s).unwrap();
    ///     sum += node.value;
    ///     p = node.next;
    /// }
    /// assert_eq!(sum, 4950);
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] unless the pointer names a live detached object of `rt` (one
    /// claimed by a box is not detached); [`Error::TypeMismatch`] if its size is not
    /// `size_of::<T>()`; when it must be fetched, as [`FarBox::read`](super::FarBox::read).
    pub fn read<'a>(&self, rt: &'a Runtime, s: &'a Scope<'_>) -> Result<FarRef<'a, T>> {
        let (slot, p) = share(&rt.inner, self.raw, s, size_is(size_of::<T>()))?;
        // SAFETY: `p` is the object's payload: `size_of::<T>()` bytes (checked), aligned, a valid
        // `T` (Pod); the scope keeps it in place for 'a, our reader count keeps claims out.
        let value = unsafe { &*(p as *const T) };
        Ok(FarRef {
            value,
            owner: &slot.meta().owner,
        })
    }
}

impl<T: Pod> FarPtr<[T]> {
    /// Reads the slice this pointer names without claiming it (see [`FarPtr::read`]).
    ///
    /// # Errors
    /// [`Error::InvalidPtr`] unless the pointer names a live detached slice of `rt`;
    /// [`Error::TypeMismatch`] if its size is not a whole number of `T`; when it must be fetched,
    /// as [`FarSlice::read`](super::FarSlice::read).
    pub fn read<'a>(&self, rt: &'a Runtime, s: &'a Scope<'_>) -> Result<FarRef<'a, [T]>> {
        let size = size_of::<T>();
        let mut len = 0;
        let (slot, p) = share(&rt.inner, self.raw, s, |bytes| {
            match bytes.checked_div(size) {
                Some(n) if n * size == bytes => {
                    len = n;
                    Ok(())
                }
                None if bytes == 0 => Ok(()),
                _ => Err(Error::TypeMismatch {
                    expected: size,
                    actual: bytes,
                }),
            }
        })?;
        let value = if len == 0 {
            &[][..]
        } else {
            // SAFETY: as for one value: `len * size_of::<T>()` bytes of valid `T`s, aligned, kept
            // in place by the scope and unclaimable while the `FarRef` lives.
            unsafe { std::slice::from_raw_parts(p as *const T, len) }
        };
        Ok(FarRef {
            value,
            owner: &slot.meta().owner,
        })
    }
}
