//! Column types, cell values and the element types column storage holds.

use std::cmp::Ordering;
use std::fmt;

use farmem::containers::Primitive;
use farmem_proto::agent::Sum as AgentSum;

/// The logical type of a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 64-bit signed integers.
    I64,
    /// 32-bit signed integers.
    I32,
    /// Small unsigned integers 0..=255.
    U8,
    /// 64-bit floats; an empty CSV field loads as NaN (missing).
    F64,
    /// Booleans (stored as one byte).
    Bool,
    /// Short strings, dictionary-encoded as `u32` codes (categoricals).
    Str,
    /// Seconds since the Unix epoch, shown as `YYYY-MM-DD HH:MM:SS`.
    Timestamp,
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::U8 => "u8",
            DType::F64 => "f64",
            DType::Bool => "bool",
            DType::Str => "str",
            DType::Timestamp => "timestamp",
        })
    }
}

impl DType {
    /// Whether the column holds integers (including booleans and timestamps).
    pub fn is_integer(self) -> bool {
        !matches!(self, DType::F64 | DType::Str)
    }
}

/// One cell.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// An integer (from `I64`, `I32` or `U8` columns).
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// A timestamp in seconds since the epoch.
    Timestamp(i64),
    /// A missing value.
    Null,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Str(v) => f.write_str(v),
            Value::Timestamp(t) => f.write_str(&crate::time::format_timestamp(*t)),
            Value::Null => f.write_str("null"),
        }
    }
}

/// A plain element type that column storage holds: `i64`, `i32`, `u8`, `u32` or `f64`.
///
/// Every element type is also a far-memory [`Primitive`], so that the agent's kernels (on the
/// memory server, or on local slices for the all-local placement) can run over its columns.
pub trait Elem:
    bytemuck::Pod + PartialOrd + Default + fmt::Debug + Send + Sync + Primitive + 'static
{
    /// The exact accumulator of sums (`i128` for integers, `f64` for floats).
    type Sum: Copy + Default + fmt::Debug + Send + Sync + 'static;
    /// Whether the agent kernels' aggregates equal [`crate::Summary`] (floats differ: the
    /// kernels count NaNs), so that summaries and group-bys may be computed by them.
    const KERNEL_SUMMARY: bool = true;
    /// A kernel's exact sum as this type's accumulator.
    fn sum_of(s: AgentSum) -> Self::Sum;
    /// Adds to a sum.
    fn add(acc: Self::Sum, x: Self) -> Self::Sum;
    /// Combines two sums.
    fn merge(a: Self::Sum, b: Self::Sum) -> Self::Sum;
    /// A sum as a float.
    fn sum_to_f64(s: Self::Sum) -> f64;
    /// A sum as an integer (float sums truncate).
    fn sum_to_i128(s: Self::Sum) -> i128;
    /// The element as a float.
    fn to_f64(self) -> f64;
    /// The element as an integer (floats truncate toward zero).
    fn to_i64(self) -> i64;
    /// Converts from an integer, `None` if out of range.
    fn from_i64(v: i64) -> Option<Self>;
    /// Converts from a float (integers: must be integral and in range).
    fn from_f64(v: f64) -> Option<Self>;
    /// A total order (NaN sorts last for floats).
    fn total_cmp(&self, other: &Self) -> Ordering;
    /// A hashable key with the same equality as the element.
    fn key(self) -> u64;
    /// Whether the element is a missing value (NaN floats).
    fn is_missing(self) -> bool {
        false
    }
}

macro_rules! int_elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            type Sum = i128;
            fn add(acc: i128, x: Self) -> i128 { acc + x as i128 }
            fn merge(a: i128, b: i128) -> i128 { a + b }
            fn sum_to_f64(s: i128) -> f64 { s as f64 }
            fn sum_to_i128(s: i128) -> i128 { s }
            fn to_f64(self) -> f64 { self as f64 }
            fn to_i64(self) -> i64 { self as i64 }
            fn from_i64(v: i64) -> Option<Self> { Self::try_from(v).ok() }
            fn from_f64(v: f64) -> Option<Self> {
                if v.fract() == 0.0 && v >= Self::MIN as f64 && v <= Self::MAX as f64 {
                    Some(v as Self)
                } else {
                    None
                }
            }
            fn total_cmp(&self, other: &Self) -> Ordering { self.cmp(other) }
            fn key(self) -> u64 { self as i64 as u64 }
            fn sum_of(s: AgentSum) -> i128 {
                match s {
                    AgentSum::I(v) => v,
                    AgentSum::U(v) => v as i128,
                    AgentSum::F(v) => v as i128,
                }
            }
        }
    )*};
}
int_elem!(i64, i32, u8, u32);

impl Elem for f64 {
    type Sum = f64;
    const KERNEL_SUMMARY: bool = false;
    fn sum_of(s: AgentSum) -> f64 {
        s.as_f64()
    }
    fn add(acc: f64, x: f64) -> f64 {
        if x.is_nan() { acc } else { acc + x }
    }
    fn merge(a: f64, b: f64) -> f64 {
        a + b
    }
    fn sum_to_f64(s: f64) -> f64 {
        s
    }
    fn sum_to_i128(s: f64) -> i128 {
        s as i128
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_i64(v: i64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_f64(v: f64) -> Option<Self> {
        Some(v)
    }
    fn total_cmp(&self, other: &Self) -> Ordering {
        match (self.is_nan(), other.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => f64::total_cmp(self, other),
        }
    }
    fn key(self) -> u64 {
        self.to_bits()
    }
    fn is_missing(self) -> bool {
        self.is_nan()
    }
}
