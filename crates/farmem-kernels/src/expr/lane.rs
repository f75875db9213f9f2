//! Block values and the vectorised operations on them: every node of an expression is one tight
//! loop over a block of rows.

use farmem_proto::expr::{BinaryOp, Lit, Type, UnaryOp};

use super::calendar;

/// Widened values of one block, borrowed.
#[derive(Clone, Copy, Debug)]
pub enum LaneRef<'a> {
    /// Booleans.
    B(&'a [bool]),
    /// Unsigned integers widened to `u64`.
    U(&'a [u64]),
    /// Signed integers widened to `i64`.
    I(&'a [i64]),
    /// Floats widened to `f64`.
    F(&'a [f64]),
}

/// Widened values of one block, owned.
#[derive(Clone, Debug)]
pub enum Lane {
    /// Booleans.
    B(Vec<bool>),
    /// Unsigned integers widened to `u64`.
    U(Vec<u64>),
    /// Signed integers widened to `i64`.
    I(Vec<i64>),
    /// Floats widened to `f64`.
    F(Vec<f64>),
}

impl Lane {
    /// The values, borrowed.
    pub fn as_ref(&self) -> LaneRef<'_> {
        match self {
            Lane::B(v) => LaneRef::B(v),
            Lane::U(v) => LaneRef::U(v),
            Lane::I(v) => LaneRef::I(v),
            Lane::F(v) => LaneRef::F(v),
        }
    }
}

/// The value of a node over a block: a column, a computed block, or a constant.
pub(crate) enum Val<'a> {
    Ref(LaneRef<'a>),
    Own(Lane),
    Const(Lit),
}

/// One operand of a typed loop: a block or a constant.
#[derive(Clone, Copy)]
enum Op<'a, T> {
    S(&'a [T]),
    C(T),
}

impl<'a> Val<'a> {
    /// A borrowed view of the value.
    pub(crate) fn view(&self) -> Val<'_> {
        match self {
            Val::Ref(r) => Val::Ref(*r),
            Val::Own(l) => Val::Ref(l.as_ref()),
            Val::Const(c) => Val::Const(*c),
        }
    }
}

macro_rules! operand {
    ($name:ident, $t:ty, $lane:ident, $conv:expr) => {
        fn $name<'x>(v: &'x Val<'_>) -> Op<'x, $t> {
            match v {
                Val::Ref(LaneRef::$lane(s)) => Op::S(s),
                Val::Own(Lane::$lane(s)) => Op::S(s),
                Val::Const(c) => Op::C($conv(*c)),
                // Type-checked trees never mix lanes; a wrong lane reads as the constant 0.
                _ => Op::C(Default::default()),
            }
        }
    };
}

operand!(as_b, bool, B, |c: Lit| c.bits() != 0);
operand!(as_u, u64, U, |c: Lit| c.bits());
operand!(as_i, i64, I, |c: Lit| c.bits() as i64);
operand!(as_f, f64, F, |c: Lit| match c {
    Lit::F64(v) => v,
    other => other.bits() as f64,
});

fn map<T: Copy, R>(a: Op<'_, T>, n: usize, f: impl Fn(T) -> R) -> Vec<R> {
    match a {
        Op::S(a) => a[..n].iter().map(|&x| f(x)).collect(),
        Op::C(a) => (0..n).map(|_| f(a)).collect(),
    }
}

fn zip<T: Copy, R>(a: Op<'_, T>, b: Op<'_, T>, n: usize, f: impl Fn(T, T) -> R) -> Vec<R> {
    match (a, b) {
        (Op::S(a), Op::S(b)) => a[..n].iter().zip(&b[..n]).map(|(&x, &y)| f(x, y)).collect(),
        (Op::S(a), Op::C(b)) => a[..n].iter().map(|&x| f(x, b)).collect(),
        (Op::C(a), Op::S(b)) => b[..n].iter().map(|&y| f(a, y)).collect(),
        (Op::C(a), Op::C(b)) => (0..n).map(|_| f(a, b)).collect(),
    }
}

/// Wraps widened values to the range of the node's type (integers wrap, `f32` rounds).
fn narrow(l: Lane, ty: Type) -> Lane {
    match (l, ty) {
        (Lane::U(mut v), Type::U8 | Type::U16 | Type::U32) => {
            let mask = match ty {
                Type::U8 => 0xff,
                Type::U16 => 0xffff,
                _ => 0xffff_ffff,
            };
            v.iter_mut().for_each(|x| *x &= mask);
            Lane::U(v)
        }
        (Lane::I(mut v), Type::I8) => {
            v.iter_mut().for_each(|x| *x = i64::from(*x as i8));
            Lane::I(v)
        }
        (Lane::I(mut v), Type::I16) => {
            v.iter_mut().for_each(|x| *x = i64::from(*x as i16));
            Lane::I(v)
        }
        (Lane::I(mut v), Type::I32) => {
            v.iter_mut().for_each(|x| *x = i64::from(*x as i32));
            Lane::I(v)
        }
        (Lane::F(mut v), Type::F32) => {
            v.iter_mut().for_each(|x| *x = f64::from(*x as f32));
            Lane::F(v)
        }
        (l, _) => l,
    }
}

/// `op` over a block of `n` rows of an operand of type `ty` (a type-checked node).
pub(crate) fn unary(op: UnaryOp, ty: Type, a: &Val<'_>, n: usize) -> Lane {
    use UnaryOp::*;
    let out = match op {
        Not => Lane::B(map(as_b(a), n, |x| !x)),
        Year | Month | Day | Weekday | Hour | Minute => {
            // One loop per function (function items, not pointers, so each is inlined).
            macro_rules! part {
                ($f:path) => {
                    match ty.domain() {
                        Some(farmem_proto::agent::Domain::Unsigned) => {
                            map(as_u(a), n, |x| $f(x as i64))
                        }
                        _ => map(as_i(a), n, $f),
                    }
                };
            }
            return Lane::I(match op {
                Year => part!(calendar::year),
                Month => part!(calendar::month),
                Day => part!(calendar::day),
                Weekday => part!(calendar::weekday),
                Hour => part!(calendar::hour),
                _ => part!(calendar::minute),
            });
        }
        Neg | Abs => match ty.domain() {
            Some(farmem_proto::agent::Domain::Unsigned) => Lane::U(if op == Neg {
                map(as_u(a), n, u64::wrapping_neg)
            } else {
                map(as_u(a), n, |x| x)
            }),
            Some(farmem_proto::agent::Domain::Signed) => Lane::I(if op == Neg {
                map(as_i(a), n, i64::wrapping_neg)
            } else {
                map(as_i(a), n, i64::wrapping_abs)
            }),
            _ => Lane::F(if op == Neg {
                map(as_f(a), n, |x| -x)
            } else {
                map(as_f(a), n, f64::abs)
            }),
        },
        _ => {
            let x = as_f(a);
            Lane::F(match op {
                Sqrt => map(x, n, f64::sqrt),
                Sin => map(x, n, f64::sin),
                Cos => map(x, n, f64::cos),
                Tan => map(x, n, f64::tan),
                Asin => map(x, n, f64::asin),
                Acos => map(x, n, f64::acos),
                Atan => map(x, n, f64::atan),
                Exp => map(x, n, f64::exp),
                Ln => map(x, n, f64::ln),
                Floor => map(x, n, f64::floor),
                Ceil => map(x, n, f64::ceil),
                Round => map(x, n, f64::round),
                _ => map(x, n, f64::to_radians),
            })
        }
    };
    narrow(out, ty)
}

macro_rules! arith {
    ($op:expr, $a:expr, $b:expr, $n:expr, $lane:ident, $get:ident, $div:expr, $rem:expr, $add:expr, $sub:expr, $mul:expr, $min:expr, $max:expr) => {{
        let (a, b) = ($get($a), $get($b));
        Lane::$lane(match $op {
            BinaryOp::Add => zip(a, b, $n, $add),
            BinaryOp::Sub => zip(a, b, $n, $sub),
            BinaryOp::Mul => zip(a, b, $n, $mul),
            BinaryOp::Div => zip(a, b, $n, $div),
            BinaryOp::Rem => zip(a, b, $n, $rem),
            BinaryOp::Min => zip(a, b, $n, $min),
            _ => zip(a, b, $n, $max),
        })
    }};
}

macro_rules! compare {
    ($op:expr, $a:expr, $b:expr, $n:expr) => {{
        let (a, b) = ($a, $b);
        match $op {
            BinaryOp::Eq => zip(a, b, $n, |x, y| x == y),
            BinaryOp::Ne => zip(a, b, $n, |x, y| x != y),
            BinaryOp::Lt => zip(a, b, $n, |x, y| x < y),
            BinaryOp::Le => zip(a, b, $n, |x, y| x <= y),
            BinaryOp::Gt => zip(a, b, $n, |x, y| x > y),
            _ => zip(a, b, $n, |x, y| x >= y),
        }
    }};
}

/// `op` over a block of `n` rows of two operands of type `ty` (a type-checked node).
pub(crate) fn binary(op: BinaryOp, ty: Type, a: &Val<'_>, b: &Val<'_>, n: usize) -> Lane {
    use farmem_proto::agent::Domain;
    if op.is_comparison() {
        return Lane::B(match ty.domain() {
            None => compare!(op, as_b(a), as_b(b), n),
            Some(Domain::Unsigned) => compare!(op, as_u(a), as_u(b), n),
            Some(Domain::Signed) => compare!(op, as_i(a), as_i(b), n),
            Some(Domain::Float) => compare!(op, as_f(a), as_f(b), n),
        });
    }
    let out = match (op, ty.domain()) {
        (BinaryOp::And, _) => Lane::B(zip(as_b(a), as_b(b), n, |x, y| x & y)),
        (BinaryOp::Or, _) => Lane::B(zip(as_b(a), as_b(b), n, |x, y| x | y)),
        (BinaryOp::Atan2, _) => Lane::F(zip(as_f(a), as_f(b), n, f64::atan2)),
        (BinaryOp::Pow, _) => Lane::F(zip(as_f(a), as_f(b), n, f64::powf)),
        (_, Some(Domain::Unsigned)) => arith!(
            op,
            a,
            b,
            n,
            U,
            as_u,
            |x: u64, y: u64| x.checked_div(y).unwrap_or(0),
            |x: u64, y: u64| x.checked_rem(y).unwrap_or(0),
            u64::wrapping_add,
            u64::wrapping_sub,
            u64::wrapping_mul,
            u64::min,
            u64::max
        ),
        (_, Some(Domain::Signed)) => arith!(
            op,
            a,
            b,
            n,
            I,
            as_i,
            |x: i64, y: i64| if y == 0 { 0 } else { x.wrapping_div(y) },
            |x: i64, y: i64| if y == 0 { 0 } else { x.wrapping_rem(y) },
            i64::wrapping_add,
            i64::wrapping_sub,
            i64::wrapping_mul,
            i64::min,
            i64::max
        ),
        _ => arith!(
            op,
            a,
            b,
            n,
            F,
            as_f,
            |x: f64, y: f64| x / y,
            |x: f64, y: f64| x % y,
            |x: f64, y: f64| x + y,
            |x: f64, y: f64| x - y,
            |x: f64, y: f64| x * y,
            f64::min,
            f64::max
        ),
    };
    narrow(out, ty)
}

/// `a` (of type `from`) converted to `to` over a block of `n` rows.
pub(crate) fn cast(from: Type, to: Type, a: &Val<'_>, n: usize) -> Lane {
    use farmem_proto::agent::Domain;
    let src = a.view();
    macro_rules! to_int {
        ($lane:ident, $t:ty, $w:ty) => {
            Lane::$lane(match from.domain() {
                None => map(as_b(&src), n, |x| <$w>::from(x)),
                Some(Domain::Unsigned) => map(as_u(&src), n, |x| x as $t as $w),
                Some(Domain::Signed) => map(as_i(&src), n, |x| x as $t as $w),
                Some(Domain::Float) => map(as_f(&src), n, |x| x as $t as $w),
            })
        };
    }
    macro_rules! to_float {
        ($t:ty) => {
            Lane::F(match from.domain() {
                None => map(as_b(&src), n, |x| f64::from(u8::from(x))),
                Some(Domain::Unsigned) => map(as_u(&src), n, |x| x as $t as f64),
                Some(Domain::Signed) => map(as_i(&src), n, |x| x as $t as f64),
                Some(Domain::Float) => map(as_f(&src), n, |x| x as $t as f64),
            })
        };
    }
    match to {
        Type::Bool => Lane::B(match from.domain() {
            None => map(as_b(&src), n, |x| x),
            Some(Domain::Unsigned) => map(as_u(&src), n, |x| x != 0),
            Some(Domain::Signed) => map(as_i(&src), n, |x| x != 0),
            Some(Domain::Float) => map(as_f(&src), n, |x| x != 0.0),
        }),
        Type::U8 => to_int!(U, u8, u64),
        Type::U16 => to_int!(U, u16, u64),
        Type::U32 => to_int!(U, u32, u64),
        Type::U64 => to_int!(U, u64, u64),
        Type::I8 => to_int!(I, i8, i64),
        Type::I16 => to_int!(I, i16, i64),
        Type::I32 => to_int!(I, i32, i64),
        Type::I64 => to_int!(I, i64, i64),
        Type::F32 => to_float!(f32),
        Type::F64 => to_float!(f64),
    }
}

/// Appends the `n` values of a node of type `ty` to `out` as little-endian elements of
/// `ty.elem()` (`bool` as `u8` 0/1).
pub(crate) fn store(v: &Val<'_>, ty: Type, n: usize, out: &mut Vec<u8>) {
    macro_rules! put {
        ($get:ident, $t:ty) => {
            match $get(v) {
                Op::S(s) => s[..n]
                    .iter()
                    .for_each(|&x| out.extend_from_slice(&(x as $t).to_le_bytes())),
                Op::C(c) => (0..n).for_each(|_| out.extend_from_slice(&(c as $t).to_le_bytes())),
            }
        };
    }
    match ty {
        Type::Bool => match as_b(v) {
            Op::S(s) => out.extend(s[..n].iter().map(|&x| u8::from(x))),
            Op::C(c) => out.resize(out.len() + n, u8::from(c)),
        },
        Type::U8 => match as_u(v) {
            Op::S(s) => out.extend(s[..n].iter().map(|&x| x as u8)),
            Op::C(c) => out.resize(out.len() + n, c as u8),
        },
        Type::U16 => put!(as_u, u16),
        Type::U32 => put!(as_u, u32),
        Type::U64 => put!(as_u, u64),
        Type::I8 => put!(as_i, i8),
        Type::I16 => put!(as_i, i16),
        Type::I32 => put!(as_i, i32),
        Type::I64 => put!(as_i, i64),
        Type::F32 => put!(as_f, f32),
        Type::F64 => put!(as_f, f64),
    }
}
