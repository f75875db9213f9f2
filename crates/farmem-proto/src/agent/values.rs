//! Element types and widened values.

use std::cmp::Ordering;

use super::*;

/// Element type of a far vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum ElemType {
    U8 = 0,
    U16 = 1,
    U32 = 2,
    U64 = 3,
    I8 = 4,
    I16 = 5,
    I32 = 6,
    I64 = 7,
    F32 = 8,
    F64 = 9,
}

/// The widened domain of an element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Domain {
    /// Unsigned integers, widened to `u64`.
    Unsigned,
    /// Signed integers, widened to `i64`.
    Signed,
    /// Floats, widened to `f64`.
    Float,
}

impl ElemType {
    /// Every element type.
    pub const ALL: [ElemType; 10] = [
        Self::U8,
        Self::U16,
        Self::U32,
        Self::U64,
        Self::I8,
        Self::I16,
        Self::I32,
        Self::I64,
        Self::F32,
        Self::F64,
    ];

    /// The type with tag `tag`.
    ///
    /// # Errors
    /// [`AgentDecodeError::BadTag`] for an unknown tag.
    pub fn from_tag(tag: u8) -> Result<Self, AgentDecodeError> {
        Self::ALL
            .get(tag as usize)
            .copied()
            .ok_or(AgentDecodeError::BadTag {
                what: "element type",
                tag,
            })
    }

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
        }
    }

    /// The domain elements widen to.
    pub fn domain(self) -> Domain {
        match self {
            Self::U8 | Self::U16 | Self::U32 | Self::U64 => Domain::Unsigned,
            Self::I8 | Self::I16 | Self::I32 | Self::I64 => Domain::Signed,
            Self::F32 | Self::F64 => Domain::Float,
        }
    }
}

/// A widened value: 8 bytes on the wire, its domain implied by the element type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    /// An unsigned value.
    U(u64),
    /// A signed value.
    I(i64),
    /// A float value.
    F(f64),
}

impl Scalar {
    /// The 8 wire bytes' integer form.
    pub fn bits(self) -> u64 {
        match self {
            Self::U(v) => v,
            Self::I(v) => v as u64,
            Self::F(v) => v.to_bits(),
        }
    }

    /// Interprets 8 wire bytes in `domain`.
    pub fn from_bits(domain: Domain, bits: u64) -> Self {
        match domain {
            Domain::Unsigned => Self::U(bits),
            Domain::Signed => Self::I(bits as i64),
            Domain::Float => Self::F(f64::from_bits(bits)),
        }
    }

    /// The domain of this value.
    pub fn domain(self) -> Domain {
        match self {
            Self::U(_) => Domain::Unsigned,
            Self::I(_) => Domain::Signed,
            Self::F(_) => Domain::Float,
        }
    }

    /// The value as `f64` (rounded for large integers).
    pub fn as_f64(self) -> f64 {
        match self {
            Self::U(v) => v as f64,
            Self::I(v) => v as f64,
            Self::F(v) => v,
        }
    }

    /// Total order within one domain (`f64::total_cmp` for floats); across domains, by domain.
    pub fn total_cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::U(a), Self::U(b)) => a.cmp(b),
            (Self::I(a), Self::I(b)) => a.cmp(b),
            (Self::F(a), Self::F(b)) => a.total_cmp(b),
            _ => (self.domain() as u8).cmp(&(other.domain() as u8)),
        }
    }
}

/// An exact sum: `i128`/`u128` for integers, `f64` for floats. 16 bytes on the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sum {
    /// Sum of unsigned elements.
    U(u128),
    /// Sum of signed elements.
    I(i128),
    /// Sum of float elements (see the module docs for the order).
    F(f64),
}

impl Sum {
    /// The sum as `f64`.
    pub fn as_f64(self) -> f64 {
        match self {
            Self::U(v) => v as f64,
            Self::I(v) => v as f64,
            Self::F(v) => v,
        }
    }

    pub(super) fn bits(self) -> u128 {
        match self {
            Self::U(v) => v,
            Self::I(v) => v as u128,
            Self::F(v) => u128::from(v.to_bits()),
        }
    }

    pub(super) fn from_bits(domain: Domain, bits: u128) -> Self {
        match domain {
            Domain::Unsigned => Self::U(bits),
            Domain::Signed => Self::I(bits as i128),
            Domain::Float => Self::F(f64::from_bits(bits as u64)),
        }
    }
}
