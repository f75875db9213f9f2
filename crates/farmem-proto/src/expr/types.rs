//! Types, literals, operators and errors of the expression language.

use crate::agent::{Domain, ElemType};
use crate::codec::CodecError;

/// The type of an expression node: an element type or `bool`. Wire tags: the [`ElemType`]
/// tags `0..=9`, and `10` for `bool`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Type {
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
    Bool = 10,
}

impl Type {
    /// The type with wire tag `tag`.
    ///
    /// # Errors
    /// [`ExprError::BadTag`] for an unknown tag.
    pub fn from_tag(tag: u8) -> Result<Self, ExprError> {
        if tag == 10 {
            return Ok(Type::Bool);
        }
        ElemType::from_tag(tag)
            .map(Type::from)
            .map_err(|_| ExprError::BadTag { what: "type", tag })
    }

    /// The element type a column of this type is stored as (`bool` as `u8` 0/1).
    pub fn elem(self) -> ElemType {
        match self {
            Type::U8 | Type::Bool => ElemType::U8,
            Type::U16 => ElemType::U16,
            Type::U32 => ElemType::U32,
            Type::U64 => ElemType::U64,
            Type::I8 => ElemType::I8,
            Type::I16 => ElemType::I16,
            Type::I32 => ElemType::I32,
            Type::I64 => ElemType::I64,
            Type::F32 => ElemType::F32,
            Type::F64 => ElemType::F64,
        }
    }

    /// The widened domain values of this type are computed in; `None` for `bool`.
    pub fn domain(self) -> Option<Domain> {
        match self {
            Type::Bool => None,
            t => Some(t.elem().domain()),
        }
    }

    /// Whether this is a float type.
    pub fn is_float(self) -> bool {
        self.domain() == Some(Domain::Float)
    }

    /// Whether this is an integer type.
    pub fn is_integer(self) -> bool {
        matches!(self.domain(), Some(Domain::Signed | Domain::Unsigned))
    }
}

impl From<ElemType> for Type {
    fn from(t: ElemType) -> Self {
        match t {
            ElemType::U8 => Type::U8,
            ElemType::U16 => Type::U16,
            ElemType::U32 => Type::U32,
            ElemType::U64 => Type::U64,
            ElemType::I8 => Type::I8,
            ElemType::I16 => Type::I16,
            ElemType::I32 => Type::I32,
            ElemType::I64 => Type::I64,
            ElemType::F32 => Type::F32,
            ElemType::F64 => Type::F64,
        }
    }
}

/// A constant. Wire: `type:u8 value:u64` with the type tag of [`Lit::ty`] and the value's bits
/// (`bool` as 0 or 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lit {
    /// A `bool`.
    Bool(bool),
    /// A `u64`.
    U64(u64),
    /// An `i64`.
    I64(i64),
    /// An `f64`.
    F64(f64),
}

impl Lit {
    /// The literal's type.
    pub fn ty(self) -> Type {
        match self {
            Lit::Bool(_) => Type::Bool,
            Lit::U64(_) => Type::U64,
            Lit::I64(_) => Type::I64,
            Lit::F64(_) => Type::F64,
        }
    }

    /// The 8 wire bytes' integer form.
    pub fn bits(self) -> u64 {
        match self {
            Lit::Bool(b) => u64::from(b),
            Lit::U64(v) => v,
            Lit::I64(v) => v as u64,
            Lit::F64(v) => v.to_bits(),
        }
    }
}

macro_rules! tagged {
    ($(#[$m:meta])* $name:ident, $what:literal { $($(#[$vm:meta])* $v:ident = $tag:literal => $text:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name {
            $($(#[$vm])* $v = $tag,)*
        }

        impl $name {
            /// Every operator, in tag order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];

            /// The operator with wire tag `tag`.
            ///
            /// # Errors
            /// [`ExprError::BadTag`] for an unknown tag.
            pub fn from_tag(tag: u8) -> Result<Self, ExprError> {
                Self::ALL
                    .get(usize::from(tag))
                    .copied()
                    .ok_or(ExprError::BadTag { what: $what, tag })
            }

            /// Lower-case name, for messages.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$v => $text,)*
                }
            }
        }
    };
}

tagged! {
    /// One-operand operations. Wire tags in declaration order.
    UnaryOp, "unary operator" {
        /// Negation (wrapping for integers); numbers.
        Neg = 0 => "neg",
        /// Logical not; `bool`.
        Not = 1 => "not",
        /// Absolute value (wrapping for signed integers); numbers.
        Abs = 2 => "abs",
        /// Square root; floats.
        Sqrt = 3 => "sqrt",
        /// Sine; floats.
        Sin = 4 => "sin",
        /// Cosine; floats.
        Cos = 5 => "cos",
        /// Tangent; floats.
        Tan = 6 => "tan",
        /// Arcsine; floats.
        Asin = 7 => "asin",
        /// Arccosine; floats.
        Acos = 8 => "acos",
        /// Arctangent; floats.
        Atan = 9 => "atan",
        /// `e^x`; floats.
        Exp = 10 => "exp",
        /// Natural logarithm; floats.
        Ln = 11 => "ln",
        /// Round down; floats.
        Floor = 12 => "floor",
        /// Round up; floats.
        Ceil = 13 => "ceil",
        /// Round half away from zero; floats.
        Round = 14 => "round",
        /// Degrees to radians; floats.
        ToRadians = 15 => "to_radians",
        /// Year of a timestamp in seconds; integers, gives `i64`.
        Year = 16 => "year",
        /// Month 1..=12 of a timestamp; integers, gives `i64`.
        Month = 17 => "month",
        /// Day of month 1..=31 of a timestamp; integers, gives `i64`.
        Day = 18 => "day",
        /// Day of week 1 = Monday ..= 7 = Sunday; integers, gives `i64`.
        Weekday = 19 => "weekday",
        /// Hour 0..=23 of a timestamp; integers, gives `i64`.
        Hour = 20 => "hour",
        /// Minute 0..=59 of a timestamp; integers, gives `i64`.
        Minute = 21 => "minute",
    }
}

tagged! {
    /// Two-operand operations (both operands of one type). Wire tags in declaration order.
    BinaryOp, "binary operator" {
        /// `a + b`; numbers.
        Add = 0 => "add",
        /// `a - b`; numbers.
        Sub = 1 => "sub",
        /// `a * b`; numbers.
        Mul = 2 => "mul",
        /// `a / b`; numbers (integer division truncates; by zero gives 0).
        Div = 3 => "div",
        /// `a % b`; numbers (sign of `a`; by zero gives 0).
        Rem = 4 => "rem",
        /// `a == b`; any type, gives `bool`.
        Eq = 5 => "eq",
        /// `a != b`; gives `bool`.
        Ne = 6 => "ne",
        /// `a < b`; gives `bool`.
        Lt = 7 => "lt",
        /// `a <= b`; gives `bool`.
        Le = 8 => "le",
        /// `a > b`; gives `bool`.
        Gt = 9 => "gt",
        /// `a >= b`; gives `bool`.
        Ge = 10 => "ge",
        /// Logical and; `bool`.
        And = 11 => "and",
        /// Logical or; `bool`.
        Or = 12 => "or",
        /// Four-quadrant arctangent of `a / b`; floats.
        Atan2 = 13 => "atan2",
        /// `a` to the power `b`; floats.
        Pow = 14 => "pow",
        /// The smaller operand; numbers.
        Min = 15 => "min",
        /// The larger operand; numbers.
        Max = 16 => "max",
    }
}

impl UnaryOp {
    /// The result type for an operand of type `a`.
    ///
    /// # Errors
    /// [`ExprError::Mismatch`] when the operation does not take `a`.
    pub fn result(self, a: Type) -> Result<Type, ExprError> {
        use UnaryOp::*;
        let ok = match self {
            Not => a == Type::Bool,
            Neg | Abs => a != Type::Bool,
            Sqrt | Sin | Cos | Tan | Asin | Acos | Atan | Exp | Ln | Floor | Ceil | Round
            | ToRadians => a.is_float(),
            Year | Month | Day | Weekday | Hour | Minute => {
                return if a.is_integer() {
                    Ok(Type::I64)
                } else {
                    Err(ExprError::Mismatch {
                        op: self.name(),
                        left: a,
                        right: None,
                    })
                };
            }
        };
        if ok {
            Ok(a)
        } else {
            Err(ExprError::Mismatch {
                op: self.name(),
                left: a,
                right: None,
            })
        }
    }
}

impl BinaryOp {
    /// The result type for operands of types `a` and `b`.
    ///
    /// # Errors
    /// [`ExprError::Mismatch`] when the types differ or the operation does not take them.
    pub fn result(self, a: Type, b: Type) -> Result<Type, ExprError> {
        use BinaryOp::*;
        let out = match self {
            Eq | Ne | Lt | Le | Gt | Ge => Some(Type::Bool),
            And | Or => (a == Type::Bool).then_some(a),
            Add | Sub | Mul | Div | Rem | Min | Max => (a != Type::Bool).then_some(a),
            Atan2 | Pow => a.is_float().then_some(a),
        };
        match out {
            Some(t) if a == b => Ok(t),
            _ => Err(ExprError::Mismatch {
                op: self.name(),
                left: a,
                right: Some(b),
            }),
        }
    }

    /// Whether the result is `bool` from two operands of another type (a comparison).
    pub fn is_comparison(self) -> bool {
        use BinaryOp::*;
        matches!(self, Eq | Ne | Lt | Le | Gt | Ge)
    }
}

/// Why an expression is invalid: malformed bytes, beyond the limits, or ill-typed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExprError {
    /// The encoding ended early or had trailing bytes.
    #[error("expression encoding: {0}")]
    Codec(#[from] CodecError),
    /// An unknown node, operator or type tag.
    #[error("bad {what} tag {tag} in expression")]
    BadTag {
        /// Which field.
        what: &'static str,
        /// The value found.
        tag: u8,
    },
    /// More nodes than [`super::MAX_NODES`].
    #[error("expression of {0} nodes exceeds the limit of {max}", max = super::MAX_NODES)]
    TooManyNodes(usize),
    /// Nested deeper than [`super::MAX_DEPTH`].
    #[error("expression nested {0} deep exceeds the limit of {max}", max = super::MAX_DEPTH)]
    TooDeep(usize),
    /// A column reference past the inputs.
    #[error("expression reads column {index} of {inputs} inputs")]
    NoColumn {
        /// The index referenced.
        index: u16,
        /// Number of inputs.
        inputs: usize,
    },
    /// An operation applied to operands of types it does not take.
    #[error("{op} does not take {left:?}{}", right.map(|r| format!(" and {r:?}")).unwrap_or_default())]
    Mismatch {
        /// The operation.
        op: &'static str,
        /// Type of the (first) operand.
        left: Type,
        /// Type of the second operand, for binary operations.
        right: Option<Type>,
    },
}
