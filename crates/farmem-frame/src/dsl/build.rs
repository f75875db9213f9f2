//! The builder methods of [`Expr`] and its operator overloads.

use farmem_proto::expr::{BinaryOp, UnaryOp};

use super::{AggFn, Expr};
use crate::DType;

macro_rules! unary {
    ($($(#[$m:meta])* $name:ident => $op:ident,)*) => {$(
        $(#[$m])*
        pub fn $name(self) -> Expr {
            Expr::Unary(UnaryOp::$op, Box::new(self))
        }
    )*};
}

macro_rules! binary {
    ($($(#[$m:meta])* $name:ident => $op:ident,)*) => {$(
        $(#[$m])*
        pub fn $name(self, rhs: impl Into<Expr>) -> Expr {
            Expr::Binary(BinaryOp::$op, Box::new(self), Box::new(rhs.into()))
        }
    )*};
}

macro_rules! agg {
    ($($(#[$m:meta])* $name:ident => $f:ident,)*) => {$(
        $(#[$m])*
        pub fn $name(self) -> Expr {
            Expr::Agg(AggFn::$f, Box::new(self))
        }
    )*};
}

#[allow(clippy::should_implement_trait)]
impl Expr {
    /// The same values under the output name `name`.
    pub fn alias(self, name: &str) -> Expr {
        Expr::Alias(Box::new(self), name.to_owned())
    }

    /// The values converted to `dtype` (integer to integer wraps, float to integer saturates,
    /// anything to `Bool` is `!= 0`; `Timestamp` is `i64` seconds).
    pub fn cast(self, dtype: DType) -> Expr {
        Expr::Cast(Box::new(self), dtype)
    }

    /// Whether the value is null.
    pub fn is_null(self) -> Expr {
        Expr::IsNull(Box::new(self))
    }

    /// Whether the value is not null.
    pub fn is_not_null(self) -> Expr {
        self.is_null().not()
    }

    /// Calendar parts of a timestamp column: `col("t").dt().hour()`.
    pub fn dt(self) -> DateParts {
        DateParts(self)
    }

    /// Quantile `q` (see [`AggFn::Quantile`]).
    pub fn quantile(self, q: f64) -> Expr {
        Expr::Agg(AggFn::Quantile(q), Box::new(self))
    }

    unary! {
        /// Logical not of a boolean.
        not => Not,
        /// `-self`.
        neg => Neg,
        /// Absolute value.
        abs => Abs,
        /// Square root (as `f64`).
        sqrt => Sqrt,
        /// Sine (as `f64`).
        sin => Sin,
        /// Cosine (as `f64`).
        cos => Cos,
        /// Tangent (as `f64`).
        tan => Tan,
        /// Arcsine (as `f64`).
        arcsin => Asin,
        /// Arccosine (as `f64`).
        arccos => Acos,
        /// Arctangent (as `f64`).
        arctan => Atan,
        /// `e^self` (as `f64`).
        exp => Exp,
        /// Natural logarithm (as `f64`).
        log => Ln,
        /// Round down (as `f64`).
        floor => Floor,
        /// Round up (as `f64`).
        ceil => Ceil,
        /// Round half away from zero (as `f64`).
        round => Round,
        /// Degrees to radians (as `f64`).
        radians => ToRadians,
    }

    binary! {
        /// `self + rhs`.
        add => Add,
        /// `self - rhs`.
        sub => Sub,
        /// `self * rhs`.
        mul => Mul,
        /// `self / rhs`, always as `f64` (true division).
        div => Div,
        /// `self % rhs` (sign of `self`; by zero gives 0 for integers).
        rem => Rem,
        /// `self == rhs`.
        eq => Eq,
        /// `self != rhs`.
        neq => Ne,
        /// `self < rhs`.
        lt => Lt,
        /// `self <= rhs`.
        lt_eq => Le,
        /// `self > rhs`.
        gt => Gt,
        /// `self >= rhs`.
        gt_eq => Ge,
        /// Logical and of booleans.
        and => And,
        /// Logical or of booleans.
        or => Or,
        /// `self` to the power `rhs` (as `f64`).
        pow => Pow,
        /// Four-quadrant arctangent of `self / rhs` (as `f64`).
        arctan2 => Atan2,
        /// The smaller of the two, row by row.
        min_horizontal => Min,
        /// The larger of the two, row by row.
        max_horizontal => Max,
    }

    agg! {
        /// Sum of the non-null values.
        sum => Sum,
        /// Mean of the non-null values.
        mean => Mean,
        /// Smallest non-null value.
        min => Min,
        /// Largest non-null value.
        max => Max,
        /// Median (the mean of the two middle values for an even count).
        median => Median,
        /// Number of non-null values.
        count => Count,
        /// Number of distinct non-null values.
        n_unique => NUnique,
        /// Sample standard deviation.
        std => Std,
    }
}

/// Calendar parts of a timestamp expression (seconds since the Unix epoch, UTC), from
/// [`Expr::dt`].
#[derive(Clone, Debug)]
pub struct DateParts(Expr);

macro_rules! part {
    ($($(#[$m:meta])* $name:ident => $op:ident as $t:ident,)*) => {$(
        $(#[$m])*
        pub fn $name(self) -> Expr {
            Expr::Unary(UnaryOp::$op, Box::new(self.0)).cast(DType::$t)
        }
    )*};
}

impl DateParts {
    part! {
        /// The year (`i32`).
        year => Year as I32,
        /// The month 1..=12 (`u8`).
        month => Month as U8,
        /// The day of the month 1..=31 (`u8`).
        day => Day as U8,
        /// The day of the week, 1 = Monday ..= 7 = Sunday (`u8`).
        weekday => Weekday as U8,
        /// The hour 0..=23 (`u8`).
        hour => Hour as U8,
        /// The minute 0..=59 (`u8`).
        minute => Minute as U8,
    }
}

macro_rules! ops {
    ($($tr:ident $m:ident => $op:ident),*) => {$(
        impl<R: Into<Expr>> std::ops::$tr<R> for Expr {
            type Output = Expr;
            fn $m(self, rhs: R) -> Expr {
                Expr::Binary(BinaryOp::$op, Box::new(self), Box::new(rhs.into()))
            }
        }
    )*};
}
ops!(Add add => Add, Sub sub => Sub, Mul mul => Mul, Div div => Div, Rem rem => Rem,
     BitAnd bitand => And, BitOr bitor => Or);

impl std::ops::Neg for Expr {
    type Output = Expr;
    fn neg(self) -> Expr {
        Expr::Unary(UnaryOp::Neg, Box::new(self))
    }
}

impl std::ops::Not for Expr {
    type Output = Expr;
    fn not(self) -> Expr {
        Expr::Unary(UnaryOp::Not, Box::new(self))
    }
}
