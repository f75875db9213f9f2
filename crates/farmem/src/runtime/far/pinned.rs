//! [`Pinned`] and [`PinnedMut`]: a far slice made local and held in place by a pin (see
//! `runtime::pin`), so it can be handed around like a plain slice (one chunk of a container's
//! iteration) without keeping a scope open: the evacuator goes on moving and evicting everything
//! else while the guard lives.

use std::marker::PhantomData;
use std::ptr::NonNull;

use bytemuck::Pod;

use super::{FarSlice, Mode, RawFar};
use crate::error::Result;

/// A [`FarSlice`]'s values, local and pinned while this guard lives: it dereferences to `&[T]`,
/// so loops over it are plain slice loops.
///
/// Made by [`FarSlice::pin`]; its memory stays local until the guard is dropped, so do not keep
/// many large ones at once.
///
/// ```
/// use farmem::{FarSlice, Runtime, RuntimeConfig};
/// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
/// let v = FarSlice::from_slice(&rt, &[1u32, 2, 3]).unwrap();
/// let p = v.pin().unwrap();
/// assert_eq!(p.iter().sum::<u32>(), 6);
/// ```
pub struct Pinned<'a, T: Pod> {
    ptr: NonNull<T>,
    len: usize,
    raw: &'a RawFar,
    _borrow: PhantomData<&'a [T]>,
}

/// A [`FarSlice`]'s values, local, pinned and writable while this guard lives: it dereferences
/// to `&mut [T]`. Made by [`FarSlice::pin_mut`]; the slice is marked dirty.
///
/// ```
/// use farmem::{FarSlice, Runtime, RuntimeConfig};
/// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
/// let mut v = FarSlice::from_slice(&rt, &[1u32, 2, 3]).unwrap();
/// v.pin_mut().unwrap().iter_mut().for_each(|x| *x *= 10);
/// assert_eq!(v.to_vec().unwrap(), [10, 20, 30]);
/// ```
pub struct PinnedMut<'a, T: Pod> {
    ptr: NonNull<T>,
    len: usize,
    raw: &'a RawFar,
    _borrow: PhantomData<&'a mut [T]>,
}

impl<T: Pod> FarSlice<T> {
    /// Makes the slice local (fetching it first, outside any scope, when it is not) and pins it
    /// in place while the returned guard lives, with no scope open. The natural way to read a
    /// large object: the fetch does not happen under a scope that pins other objects, and the
    /// guard holds up nothing but this slice.
    ///
    /// # Errors
    /// As [`FarSlice::read`], or [`Error::TooManyPins`](crate::Error::TooManyPins) with 15
    /// guards of the slice alive already.
    pub fn pin(&self) -> Result<Pinned<'_, T>> {
        Ok(Pinned {
            ptr: self.pinned_at(Mode::Read)?,
            len: self.len,
            raw: &self.raw,
            _borrow: PhantomData,
        })
    }

    /// Like [`FarSlice::pin`], non-temporal: fetched into the regions evacuated first, not
    /// marked hot (for streaming passes).
    ///
    /// # Errors
    /// As [`FarSlice::read`].
    pub fn pin_nt(&self) -> Result<Pinned<'_, T>> {
        Ok(Pinned {
            ptr: self.pinned_at(Mode::ReadNt)?,
            len: self.len,
            raw: &self.raw,
            _borrow: PhantomData,
        })
    }

    /// Like [`FarSlice::pin`], writable: the slice is marked hot and dirty.
    ///
    /// # Errors
    /// As [`FarSlice::read`].
    pub fn pin_mut(&mut self) -> Result<PinnedMut<'_, T>> {
        let ptr = self.pinned_at(Mode::Write)?;
        Ok(PinnedMut {
            ptr,
            len: self.len,
            raw: &self.raw,
            _borrow: PhantomData,
        })
    }

    /// Fetches the object outside any scope if it is not local, then dereferences it for `mode`
    /// and pins it (see `RawFar::hold`). For writes the caller must hold the slice exclusively.
    fn pinned_at(&self, mode: Mode) -> Result<NonNull<T>> {
        if !self.is_local() {
            self.raw.rt().prefetch(&[self.raw.idx()], mode.is_nt())?;
        }
        let p = self.raw.hold(mode)?;
        Ok(NonNull::new(p as *mut T).unwrap_or(NonNull::dangling()))
    }
}

macro_rules! guard_common {
    ($t:ident) => {
        impl<T: Pod> $t<'_, T> {
            /// Keeps only the first `len` values (no-op if there are fewer).
            pub fn truncate(&mut self, len: usize) {
                self.len = self.len.min(len);
            }
        }

        impl<T: Pod> std::ops::Deref for $t<'_, T> {
            type Target = [T];

            #[inline(always)]
            fn deref(&self) -> &[T] {
                // SAFETY: `ptr` is the payload of the pinned slice (at least `len` values of a
                // `T: Pod`, 16-byte aligned, any bits valid; dangling only for a zero-sized
                // payload, where `len` values take no bytes), kept in place by the guard's pin
                // until its drop; the guard borrows the `FarSlice` for its whole life (shared
                // for `Pinned`, exclusive for `PinnedMut`), so nobody writes it meanwhile except
                // through this guard's `&mut`.
                unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
            }
        }

        impl<T: Pod> Drop for $t<'_, T> {
            fn drop(&mut self) {
                self.raw.unhold();
            }
        }

        impl<T: Pod> std::fmt::Debug for $t<'_, T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t))
                    .field("len", &self.len)
                    .finish_non_exhaustive()
            }
        }
    };
}

guard_common!(Pinned);
guard_common!(PinnedMut);

// SAFETY: the guard only reads through its pointer (into a slice it pinned and borrows
// shared), as a `&[T]` would, and its pin is a count in the slice's handle word that any thread
// may take back (`pin::unpin` is a compare-and-swap); `T: Sync` makes that sendable and
// shareable.
unsafe impl<T: Pod + Sync> Send for Pinned<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Pod + Sync> Sync for Pinned<'_, T> {}

impl<T: Pod> std::ops::DerefMut for PinnedMut<'_, T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`; the guard holds the `FarSlice` exclusively and `&mut self`
        // makes this the only reference into it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}
