//! Widened element values and the per-domain dispatch macros.

#[allow(unused_imports)]
use crate::*;

/// A widened element value: `u64`, `i64` or `f64`.
pub(crate) trait Wide: Copy + PartialOrd + Send + Sync {
    type Acc: Copy + Send + Sync;
    const ZERO: Self::Acc;
    const DOMAIN: Domain;
    fn add(acc: &mut Self::Acc, v: Self);
    fn sum(acc: Self::Acc) -> Sum;
    fn scalar(self) -> Scalar;
    fn from_scalar(s: Scalar) -> Option<Self>;
    fn total(&self, other: &Self) -> Ordering;
    fn is_nan(self) -> bool;
    /// Bits that are equal exactly when the values are equal in the total order.
    fn key(self) -> u64;
    fn from_key(k: u64) -> Self;
    /// The accumulated sum of `n` copies of `self` (what `n` calls of [`Wide::add`] give).
    fn times(self, n: u64) -> Self::Acc;
    /// Adds another accumulated sum.
    fn add_acc(acc: &mut Self::Acc, other: Self::Acc);
    /// `self - base` when it is exact and fits in a `u64` (`base <= self`); `None` for floats.
    fn offset(self, base: Self) -> Option<u64>;
    /// The value `off` above `base` (inverse of [`Wide::offset`]).
    fn from_offset(base: Self, off: u64) -> Self;
    /// Calls `f` with every element of `bytes` (of element type `ty`), widened.
    fn decode(ty: ElemType, bytes: &[u8], f: &mut impl FnMut(Self)) -> Result<(), KernelError>;
}

macro_rules! decode_arms {
    ($ty:expr, $bytes:expr, $f:expr, $w:ty, $($tag:ident => $t:ty),*) => {
        match $ty {
            $(ElemType::$tag => {
                let (chunks, _) = $bytes.as_chunks::<{ size_of::<$t>() }>();
                for c in chunks {
                    $f(<$t>::from_le_bytes(*c) as $w);
                }
                Ok(())
            })*
            other => Err(KernelError::TypeMismatch(format!("element type {other:?} in the wrong domain"))),
        }
    };
}

impl Wide for u64 {
    type Acc = u128;
    const ZERO: u128 = 0;
    const DOMAIN: Domain = Domain::Unsigned;
    fn add(acc: &mut u128, v: u64) {
        *acc = acc.wrapping_add(u128::from(v));
    }
    fn sum(acc: u128) -> Sum {
        Sum::U(acc)
    }
    fn scalar(self) -> Scalar {
        Scalar::U(self)
    }
    fn from_scalar(s: Scalar) -> Option<Self> {
        if let Scalar::U(v) = s { Some(v) } else { None }
    }
    fn total(&self, other: &Self) -> Ordering {
        self.cmp(other)
    }
    fn is_nan(self) -> bool {
        false
    }
    fn key(self) -> u64 {
        self
    }
    fn from_key(k: u64) -> Self {
        k
    }
    fn add_acc(acc: &mut u128, other: u128) {
        *acc = acc.wrapping_add(other);
    }
    fn times(self, n: u64) -> u128 {
        u128::from(self).wrapping_mul(u128::from(n))
    }
    fn offset(self, base: Self) -> Option<u64> {
        self.checked_sub(base)
    }
    fn from_offset(base: Self, off: u64) -> Self {
        base.wrapping_add(off)
    }
    fn decode(ty: ElemType, bytes: &[u8], f: &mut impl FnMut(Self)) -> Result<(), KernelError> {
        decode_arms!(ty, bytes, f, u64, U8 => u8, U16 => u16, U32 => u32, U64 => u64)
    }
}

impl Wide for i64 {
    type Acc = i128;
    const ZERO: i128 = 0;
    const DOMAIN: Domain = Domain::Signed;
    fn add(acc: &mut i128, v: i64) {
        *acc = acc.wrapping_add(i128::from(v));
    }
    fn sum(acc: i128) -> Sum {
        Sum::I(acc)
    }
    fn scalar(self) -> Scalar {
        Scalar::I(self)
    }
    fn from_scalar(s: Scalar) -> Option<Self> {
        if let Scalar::I(v) = s { Some(v) } else { None }
    }
    fn total(&self, other: &Self) -> Ordering {
        self.cmp(other)
    }
    fn is_nan(self) -> bool {
        false
    }
    fn key(self) -> u64 {
        self as u64
    }
    fn from_key(k: u64) -> Self {
        k as i64
    }
    fn add_acc(acc: &mut i128, other: i128) {
        *acc = acc.wrapping_add(other);
    }
    fn times(self, n: u64) -> i128 {
        i128::from(self).wrapping_mul(i128::from(n))
    }
    fn offset(self, base: Self) -> Option<u64> {
        u64::try_from(i128::from(self) - i128::from(base)).ok()
    }
    fn from_offset(base: Self, off: u64) -> Self {
        base.wrapping_add(off as i64)
    }
    fn decode(ty: ElemType, bytes: &[u8], f: &mut impl FnMut(Self)) -> Result<(), KernelError> {
        decode_arms!(ty, bytes, f, i64, I8 => i8, I16 => i16, I32 => i32, I64 => i64)
    }
}

impl Wide for f64 {
    type Acc = f64;
    const ZERO: f64 = 0.0;
    const DOMAIN: Domain = Domain::Float;
    fn add(acc: &mut f64, v: f64) {
        *acc += v;
    }
    fn sum(acc: f64) -> Sum {
        Sum::F(acc)
    }
    fn scalar(self) -> Scalar {
        Scalar::F(self)
    }
    fn from_scalar(s: Scalar) -> Option<Self> {
        if let Scalar::F(v) = s { Some(v) } else { None }
    }
    fn total(&self, other: &Self) -> Ordering {
        self.total_cmp(other)
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    fn key(self) -> u64 {
        self.to_bits()
    }
    fn from_key(k: u64) -> Self {
        f64::from_bits(k)
    }
    fn add_acc(acc: &mut f64, other: f64) {
        *acc += other;
    }
    fn times(self, n: u64) -> f64 {
        // Sequential, as `n` calls of `add` (float addition is not exact).
        (0..n).fold(0.0, |acc, _| acc + self)
    }
    fn offset(self, _: Self) -> Option<u64> {
        None
    }
    fn from_offset(base: Self, _: u64) -> Self {
        base
    }
    fn decode(ty: ElemType, bytes: &[u8], f: &mut impl FnMut(Self)) -> Result<(), KernelError> {
        decode_arms!(ty, bytes, f, f64, F32 => f32, F64 => f64)
    }
}

/// Runs `$body` with `$W` bound to the widened type of domain `$d`.
macro_rules! with_domain_impl {
    ($d:expr, $W:ident => $body:expr) => {
        match $d {
            Domain::Unsigned => {
                pub(crate) type $W = u64;
                $body
            }
            Domain::Signed => {
                pub(crate) type $W = i64;
                $body
            }
            Domain::Float => {
                pub(crate) type $W = f64;
                $body
            }
        }
    };
}

pub(crate) use with_domain_impl as with_domain;
