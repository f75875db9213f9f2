//! Primitive element types: those the remote agent can compute on.

use bytemuck::Pod;
use farmem_proto::agent::{ElemType, Scalar};

mod sealed {
    pub trait Sealed {}
}

/// A primitive number type whose far vectors support agent operations
/// (`u8`..`u64`, `i8`..`i64`, `f32`, `f64`).
///
/// Chunks hold elements in native byte order; the agent protocol is little-endian, so agent
/// operations assume a little-endian host (every platform farmem targets).
pub trait Primitive: Pod + PartialOrd + sealed::Sealed {
    /// The element-type tag.
    const TYPE: ElemType;
    /// The value widened to its domain.
    fn to_scalar(self) -> Scalar;
    /// Narrows a scalar of this type's domain (`None` for another domain or out of range).
    fn from_scalar(s: Scalar) -> Option<Self>;
}

macro_rules! primitive {
    ($($t:ty => $tag:ident, $var:ident, $w:ty, $narrow:ident;)*) => {$(
        impl sealed::Sealed for $t {}
        impl Primitive for $t {
            const TYPE: ElemType = ElemType::$tag;
            fn to_scalar(self) -> Scalar {
                Scalar::$var(<$w>::from(self))
            }
            #[allow(clippy::cast_possible_truncation)]
            fn from_scalar(s: Scalar) -> Option<Self> {
                match s {
                    Scalar::$var(v) => primitive!(@ $narrow $t, v),
                    _ => None,
                }
            }
        }
    )*};
    (@ exact $t:ty, $v:ident) => { <$t>::try_from($v).ok() };
    // f64 -> f32 rounds: values came from f32 elements, so they convert back exactly.
    (@ lossy $t:ty, $v:ident) => { Some($v as $t) };
}

primitive! {
    u8 => U8, U, u64, exact;
    u16 => U16, U, u64, exact;
    u32 => U32, U, u64, exact;
    u64 => U64, U, u64, exact;
    i8 => I8, I, i64, exact;
    i16 => I16, I, i64, exact;
    i32 => I32, I, i64, exact;
    i64 => I64, I, i64, exact;
    f32 => F32, F, f64, lossy;
    f64 => F64, F, f64, exact;
}
