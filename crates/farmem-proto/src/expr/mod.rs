//! Row expressions: the typed expression language of derived columns ([`crate::agent::op::VEC_DERIVE`]).
//!
//! An [`Expr`] is a tree over the *input columns* of a derive (referenced by index), literals,
//! arithmetic, comparisons, boolean logic, casts, math functions and calendar parts of
//! timestamps. Every node has a [`Type`] derived from its children's ([`Expr::type_of`]); a tree
//! that does not type-check is rejected before anything is computed. Trees are encoded in
//! pre-order (see [`Expr::write`]) with hard limits on size ([`MAX_NODES`]) and depth
//! ([`MAX_DEPTH`]), so a hostile client can neither exhaust memory nor the stack.
//!
//! The builder reads like a DataFrame expression API:
//!
//! ```
//! use farmem_proto::agent::ElemType;
//! use farmem_proto::expr::{Expr, Type};
//! // (end - start) > 60 and fare >= 2.5
//! let e = Expr::col(1)
//!     .sub(Expr::col(0))
//!     .gt(Expr::lit_i64(60))
//!     .and(Expr::col(2).ge(Expr::lit_f64(2.5)));
//! let inputs = [ElemType::I64, ElemType::I64, ElemType::F64];
//! assert_eq!(e.type_of(&inputs.map(Type::from)).unwrap(), Type::Bool);
//! let bytes = e.encode();
//! assert_eq!(Expr::decode(&bytes).unwrap(), e);
//! ```
//!
//! # Semantics
//!
//! Values are computed in their *widened* domain (`u64`, `i64`, `f64`, or `bool`) and narrowed
//! to the node's type after every operation (wrapping for integers, rounding to `f32`), so a
//! `u8` addition wraps at 256. Binary operators take two operands of the same type (cast
//! first). Integer arithmetic wraps; integer division or remainder by zero gives 0. Float
//! arithmetic is IEEE-754. Comparisons of floats use the IEEE operators (NaN is unequal to
//! everything). `min`/`max` of floats ignore a NaN operand. Casts: integer to integer wraps,
//! float to integer saturates (NaN to 0), anything to `bool` is `!= 0`, `bool` to a number is 0
//! or 1. Calendar parts take an integer timestamp in seconds since the Unix epoch (UTC,
//! proleptic Gregorian) and give `i64`: year, month 1..=12, day of month 1..=31, day of week
//! 1 = Monday ..= 7 = Sunday, hour 0..=23, minute 0..=59.

mod build;
mod codec;
mod types;

pub use self::types::{BinaryOp, ExprError, Lit, Type, UnaryOp};

/// Most nodes an expression may have.
pub const MAX_NODES: usize = 1024;
/// Deepest an expression may nest (the root is at depth 1).
pub const MAX_DEPTH: usize = 64;

/// A row expression over the input columns of a derive.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// Input column `i` (its type is the column's element type).
    Col(u16),
    /// A constant.
    Lit(Lit),
    /// A one-operand operation.
    Unary(UnaryOp, Box<Expr>),
    /// A two-operand operation; both operands must have the same type.
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// Conversion to another type.
    Cast(Type, Box<Expr>),
}

impl Expr {
    /// Number of nodes and depth, without recursion (so any tree can be measured).
    pub fn size(&self) -> (usize, usize) {
        let mut stack = vec![(self, 1usize)];
        let (mut nodes, mut depth) = (0, 0);
        while let Some((e, d)) = stack.pop() {
            nodes += 1;
            depth = depth.max(d);
            match e {
                Expr::Col(_) | Expr::Lit(_) => {}
                Expr::Unary(_, a) | Expr::Cast(_, a) => stack.push((a, d + 1)),
                Expr::Binary(_, a, b) => {
                    stack.push((a, d + 1));
                    stack.push((b, d + 1));
                }
            }
        }
        (nodes, depth)
    }

    /// Checks the size limits.
    ///
    /// # Errors
    /// [`ExprError::TooManyNodes`] or [`ExprError::TooDeep`].
    pub fn check_limits(&self) -> Result<(), ExprError> {
        let (nodes, depth) = self.size();
        if nodes > MAX_NODES {
            return Err(ExprError::TooManyNodes(nodes));
        }
        if depth > MAX_DEPTH {
            return Err(ExprError::TooDeep(depth));
        }
        Ok(())
    }

    /// The type of the expression's value given the types of the input columns.
    ///
    /// # Errors
    /// [`ExprError::TooManyNodes`]/[`ExprError::TooDeep`] beyond the limits,
    /// [`ExprError::NoColumn`] for a reference past `inputs`, [`ExprError::Mismatch`] for
    /// operands of types the operation does not take.
    pub fn type_of(&self, inputs: &[Type]) -> Result<Type, ExprError> {
        self.check_limits()?;
        self.type_rec(inputs)
    }

    fn type_rec(&self, inputs: &[Type]) -> Result<Type, ExprError> {
        match self {
            Expr::Col(i) => inputs
                .get(usize::from(*i))
                .copied()
                .ok_or(ExprError::NoColumn {
                    index: *i,
                    inputs: inputs.len(),
                }),
            Expr::Lit(l) => Ok(l.ty()),
            Expr::Cast(t, a) => {
                a.type_rec(inputs)?;
                Ok(*t)
            }
            Expr::Unary(op, a) => op.result(a.type_rec(inputs)?),
            Expr::Binary(op, a, b) => op.result(a.type_rec(inputs)?, b.type_rec(inputs)?),
        }
    }
}
