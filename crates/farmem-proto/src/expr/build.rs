//! The builder API: `Expr::col(0).sub(Expr::col(1)).gt(Expr::lit_i64(60))`.

use super::{BinaryOp, Expr, Lit, Type, UnaryOp};

macro_rules! unary {
    ($($(#[$m:meta])* $name:ident => $op:ident,)*) => {
        $(
            $(#[$m])*
            pub fn $name(self) -> Expr {
                Expr::Unary(UnaryOp::$op, Box::new(self))
            }
        )*
    };
}

macro_rules! binary {
    ($($(#[$m:meta])* $name:ident => $op:ident,)*) => {
        $(
            $(#[$m])*
            pub fn $name(self, rhs: Expr) -> Expr {
                Expr::Binary(BinaryOp::$op, Box::new(self), Box::new(rhs))
            }
        )*
    };
}

#[allow(clippy::should_implement_trait)]
impl Expr {
    /// Input column `i`.
    pub fn col(i: u16) -> Expr {
        Expr::Col(i)
    }
    /// An `i64` constant.
    pub fn lit_i64(v: i64) -> Expr {
        Expr::Lit(Lit::I64(v))
    }
    /// A `u64` constant.
    pub fn lit_u64(v: u64) -> Expr {
        Expr::Lit(Lit::U64(v))
    }
    /// An `f64` constant.
    pub fn lit_f64(v: f64) -> Expr {
        Expr::Lit(Lit::F64(v))
    }
    /// A `bool` constant.
    pub fn lit_bool(v: bool) -> Expr {
        Expr::Lit(Lit::Bool(v))
    }
    /// This value converted to `t` (see the module docs for the rules).
    pub fn cast(self, t: Type) -> Expr {
        Expr::Cast(t, Box::new(self))
    }
    /// Applies `op` to this value.
    pub fn unary(self, op: UnaryOp) -> Expr {
        Expr::Unary(op, Box::new(self))
    }
    /// Applies `op` to this value and `rhs`.
    pub fn binary(self, op: BinaryOp, rhs: Expr) -> Expr {
        Expr::Binary(op, Box::new(self), Box::new(rhs))
    }

    unary! {
        /// `-self`.
        neg => Neg,
        /// `!self` (bool).
        not => Not,
        /// `|self|`.
        abs => Abs,
        /// Square root.
        sqrt => Sqrt,
        /// Sine.
        sin => Sin,
        /// Cosine.
        cos => Cos,
        /// Tangent.
        tan => Tan,
        /// Arcsine.
        asin => Asin,
        /// Arccosine.
        acos => Acos,
        /// Arctangent.
        atan => Atan,
        /// `e^self`.
        exp => Exp,
        /// Natural logarithm.
        ln => Ln,
        /// Round down.
        floor => Floor,
        /// Round up.
        ceil => Ceil,
        /// Round half away from zero.
        round => Round,
        /// Degrees to radians.
        to_radians => ToRadians,
        /// Year of a timestamp in seconds.
        year => Year,
        /// Month 1..=12 of a timestamp in seconds.
        month => Month,
        /// Day of month of a timestamp in seconds.
        day => Day,
        /// Day of week (1 = Monday) of a timestamp in seconds.
        weekday => Weekday,
        /// Hour of a timestamp in seconds.
        hour => Hour,
        /// Minute of a timestamp in seconds.
        minute => Minute,
    }

    binary! {
        /// `self + rhs`.
        add => Add,
        /// `self - rhs`.
        sub => Sub,
        /// `self * rhs`.
        mul => Mul,
        /// `self / rhs`.
        div => Div,
        /// `self % rhs`.
        rem => Rem,
        /// `self == rhs`.
        eq => Eq,
        /// `self != rhs`.
        ne => Ne,
        /// `self < rhs`.
        lt => Lt,
        /// `self <= rhs`.
        le => Le,
        /// `self > rhs`.
        gt => Gt,
        /// `self >= rhs`.
        ge => Ge,
        /// `self && rhs`.
        and => And,
        /// `self || rhs`.
        or => Or,
        /// `atan2(self, rhs)`.
        atan2 => Atan2,
        /// `self ^ rhs`.
        pow => Pow,
        /// The smaller of the two.
        min => Min,
        /// The larger of the two.
        max => Max,
    }
}
