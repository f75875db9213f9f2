//! [`FarPtr`]: a plain-data, non-owning name of a detached far object.

use std::marker::PhantomData;

use bytemuck::{Pod, Zeroable};

/// A non-owning, plain-data name of a detached far object, for use inside far objects.
///
/// `FarPtr<T>` is `Pod` (8 bytes: slot index and generation); a forged or stale value is rejected
/// by [`FarBox::from_ptr`](super::FarBox::from_ptr) / [`FarSlice::from_ptr`](super::FarSlice::from_ptr). The all-zero value is [`FarPtr::NULL`].
#[repr(transparent)]
pub struct FarPtr<T: ?Sized> {
    pub(super) raw: u64,
    _t: PhantomData<fn() -> *const T>,
}

impl<T: ?Sized> FarPtr<T> {
    /// The null pointer.
    pub const NULL: Self = Self::from_raw(0);

    pub(super) const fn from_raw(raw: u64) -> Self {
        Self {
            raw,
            _t: PhantomData,
        }
    }

    /// Whether this is [`FarPtr::NULL`].
    pub fn is_null(&self) -> bool {
        self.raw == 0
    }

    /// The raw encoding.
    pub fn to_bits(self) -> u64 {
        self.raw
    }
}

impl<T: ?Sized> Clone for FarPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: ?Sized> Copy for FarPtr<T> {}
impl<T: ?Sized> PartialEq for FarPtr<T> {
    fn eq(&self, o: &Self) -> bool {
        self.raw == o.raw
    }
}
impl<T: ?Sized> Eq for FarPtr<T> {}
impl<T: ?Sized> Default for FarPtr<T> {
    fn default() -> Self {
        Self::NULL
    }
}
impl<T: ?Sized> std::fmt::Debug for FarPtr<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FarPtr({:#x})", self.raw)
    }
}
// SAFETY: `FarPtr` is `repr(transparent)` over a `u64` (the PhantomData is a ZST), so the all-zero
// bit pattern is a valid value.
unsafe impl<T: ?Sized + 'static> Zeroable for FarPtr<T> {}
// SAFETY: `repr(transparent)` over `u64`: no padding, every bit pattern valid, `Copy + 'static`.
// Validity of the pointed-to object is checked when the pointer is used, never assumed.
unsafe impl<T: ?Sized + 'static> Pod for FarPtr<T> {}
