//! The expression API, in the style of polars: `col("fare").gt(10).and(col("vendor").eq(1))`.
//!
//! An [`Expr`] names columns ([`col`]), constants ([`lit`]) and what to compute from them: row
//! expressions (arithmetic, comparisons, boolean logic, null tests, casts, math functions,
//! calendar parts, [`Expr::alias`]) and aggregations ([`Expr::sum`], [`Expr::mean`],
//! [`Expr::median`], [`len`], ...). Frames evaluate them eagerly in
//! [`crate::DataFrame::filter`], [`crate::DataFrame::with_columns`],
//! [`crate::DataFrame::select`] and [`crate::DataFrame::group_by`].
//!
//! A row expression is compiled to the wire expression language ([`farmem_proto::expr`]): far
//! columns evaluate it on the memory server's agent, local ones run the same kernel here, so the
//! values are identical. Nulls propagate: a row is null in the result if it is null in any
//! column the expression reads (except under [`Expr::is_null`]).
//!
//! Binary operands are converted like polars does: integers of different widths compute as
//! `i64`, an integer with a float as `f64`, and `/` always divides as `f64`. String columns
//! compare for equality with string literals (`col("flag").eq(lit("N"))`).
//!
//! ```
//! use farmem_frame::prelude::*;
//! let p = LocalPlacement::shared();
//! let df = DataFrame::from_columns(p.clone(), vec![
//!     Column::from_vec("fare", DType::F64, vec![5.0, 12.5, 30.0], p.as_ref()).unwrap(),
//!     Column::from_vec("vendor", DType::U8, vec![1u8, 1, 2], p.as_ref()).unwrap(),
//! ]).unwrap();
//! let f = df.filter(col("fare").gt(10).and(col("vendor").eq(1))).unwrap();
//! assert_eq!(f.len(), 1);
//! let s = df.select([col("fare").mean().alias("avg"), len()]).unwrap();
//! assert_eq!(s["avg"].get(0).unwrap(), Value::Float(47.5 / 3.0));
//! ```

mod build;
mod compile;
mod frame_ops;
mod group;
mod join;
mod sort;
mod stats;

pub use self::build::DateParts;
pub use self::group::GroupBy;
pub use self::join::JoinType;

use farmem_proto::expr::{BinaryOp, UnaryOp};

use crate::{DType, Value};

/// An aggregate function of [`Expr::Agg`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AggFn {
    /// Sum of the non-null values (`i64` for integers, exact; `f64` otherwise).
    Sum,
    /// Mean (`f64`).
    Mean,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Median (`f64`): the middle value, or the mean of the two middle values for an even
    /// count (as pandas, polars and AIFM).
    Median,
    /// Number of non-null values.
    Count,
    /// Number of distinct non-null values.
    NUnique,
    /// Sample standard deviation (`ddof = 1`), `f64`.
    Std,
    /// Quantile `q` in `0..=1` with linear interpolation between the closest values (as pandas'
    /// default), `f64`.
    Quantile(f64),
}

impl AggFn {
    /// Lower-case name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            AggFn::Sum => "sum",
            AggFn::Mean => "mean",
            AggFn::Min => "min",
            AggFn::Max => "max",
            AggFn::Median => "median",
            AggFn::Count => "count",
            AggFn::NUnique => "n_unique",
            AggFn::Std => "std",
            AggFn::Quantile(_) => "quantile",
        }
    }
}

/// An expression over the columns of a frame (see the [module docs](self)).
#[derive(Clone, Debug)]
pub enum Expr {
    /// The column of that name.
    Column(String),
    /// A constant.
    Literal(Value),
    /// A one-operand operation of the wire language.
    Unary(UnaryOp, Box<Expr>),
    /// A two-operand operation of the wire language.
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// Conversion to a column type.
    Cast(Box<Expr>, DType),
    /// Whether the value is null (`bool`, never null itself).
    IsNull(Box<Expr>),
    /// The inner expression under another output name.
    Alias(Box<Expr>, String),
    /// An aggregation of the inner expression's non-null values.
    Agg(AggFn, Box<Expr>),
    /// The number of rows (of the frame, or of each group).
    Len,
}

/// The column called `name`.
pub fn col(name: &str) -> Expr {
    Expr::Column(name.to_owned())
}

/// A constant: `lit(3)`, `lit(2.5)`, `lit(true)`, `lit("N")`.
pub fn lit(v: impl Into<Value>) -> Expr {
    Expr::Literal(v.into())
}

/// The number of rows (of the frame, or of each group in [`crate::GroupBy::agg`]), named `len`.
pub fn len() -> Expr {
    Expr::Len
}

impl Expr {
    /// The name of the column this expression produces: its alias, else the first column it
    /// reads (`len` for [`len`], `literal` for a constant).
    pub fn output_name(&self) -> String {
        match self {
            Expr::Column(n) | Expr::Alias(_, n) => n.clone(),
            Expr::Literal(_) => "literal".into(),
            Expr::Len => "len".into(),
            Expr::Unary(_, a) | Expr::Cast(a, _) | Expr::IsNull(a) | Expr::Agg(_, a) => {
                a.output_name()
            }
            Expr::Binary(_, a, b) => match **a {
                Expr::Literal(_) => b.output_name(),
                _ => a.output_name(),
            },
        }
    }

    /// Whether the expression aggregates (contains an aggregation or [`len`]).
    pub fn is_aggregation(&self) -> bool {
        match self {
            Expr::Agg(..) | Expr::Len => true,
            Expr::Column(_) | Expr::Literal(_) => false,
            Expr::Unary(_, a) | Expr::Cast(a, _) | Expr::IsNull(a) | Expr::Alias(a, _) => {
                a.is_aggregation()
            }
            Expr::Binary(_, a, b) => a.is_aggregation() || b.is_aggregation(),
        }
    }

    /// The expression without its outer aliases, and the output name.
    pub(crate) fn unaliased(&self) -> (&Expr, String) {
        let mut e = self;
        while let Expr::Alias(inner, _) = e {
            e = inner;
        }
        (e, self.output_name())
    }
}

impl From<&str> for Expr {
    /// A column name.
    fn from(name: &str) -> Self {
        col(name)
    }
}

impl From<&&str> for Expr {
    /// A column name.
    fn from(name: &&str) -> Self {
        col(name)
    }
}

impl From<String> for Expr {
    /// A column name.
    fn from(name: String) -> Self {
        Expr::Column(name)
    }
}

impl From<&String> for Expr {
    /// A column name.
    fn from(name: &String) -> Self {
        Expr::Column(name.clone())
    }
}

impl From<&Expr> for Expr {
    fn from(e: &Expr) -> Self {
        e.clone()
    }
}

macro_rules! lit_from {
    ($($t:ty => $v:ident $(as $w:ty)?),*) => {$(
        impl From<$t> for Expr {
            /// A constant.
            fn from(x: $t) -> Self {
                Expr::Literal(Value::$v(x $(as $w)?))
            }
        }
    )*};
}
lit_from!(i64 => Int, i32 => Int as i64, u8 => Int as i64, u32 => Int as i64, f64 => Float, bool => Bool);

macro_rules! value_from {
    ($($t:ty => $v:ident $(as $w:ty)?),*) => {$(
        impl From<$t> for Value {
            fn from(x: $t) -> Self {
                Value::$v(x $(as $w)?)
            }
        }
    )*};
}
value_from!(i64 => Int, i32 => Int as i64, u8 => Int as i64, u32 => Int as i64, f64 => Float, bool => Bool);

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}
