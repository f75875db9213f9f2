//! Row expressions to wire expressions: [`eval_column`] compiles an [`Expr`] over a frame's
//! columns into a [`farmem_proto::expr::Expr`] over input columns, with polars' operand
//! conversions, and evaluates it where the columns live (the agent for far columns).

use std::sync::Arc;

use farmem_proto::expr::{BinaryOp, Expr as Wire, Lit, Type, UnaryOp};

use super::Expr;
use crate::derive::elem_type;
use crate::{Column, DType, DataFrame, Dictionary, FrameError, Result, Validity, Value};

/// A compiled operand.
enum Node {
    /// A numeric or boolean value; `ts` marks timestamps.
    Num { wire: Wire, ty: Type, ts: bool },
    /// Input column `idx` holding dictionary codes.
    StrCol {
        idx: u16,
        dict: Option<Arc<Dictionary>>,
    },
    /// A string constant.
    StrLit(String),
}

struct Compiler<'a> {
    df: &'a DataFrame,
    /// The output name, for errors.
    name: String,
    inputs: Vec<Column>,
}

fn invalid(column: &str, reason: impl Into<String>) -> FrameError {
    FrameError::InvalidExpr {
        column: column.into(),
        reason: reason.into(),
    }
}

/// Whether integer literal `v` fits type `t` exactly.
fn fits(v: i64, t: Type) -> bool {
    match t {
        Type::U8 => u8::try_from(v).is_ok(),
        Type::I32 => i32::try_from(v).is_ok(),
        Type::I64 => true,
        Type::U32 => u32::try_from(v).is_ok(),
        _ => false,
    }
}

impl Compiler<'_> {
    fn input(&mut self, c: Column) -> Result<u16> {
        if let Some(i) = self.inputs.iter().position(|x| x.name() == c.name()) {
            return Ok(i as u16);
        }
        let i = u16::try_from(self.inputs.len())
            .map_err(|_| invalid(&self.name, "reads too many columns"))?;
        self.inputs.push(c);
        Ok(i)
    }

    fn num(&mut self, e: &Expr) -> Result<(Wire, Type, bool)> {
        match self.node(e)? {
            Node::Num { wire, ty, ts } => Ok((wire, ty, ts)),
            Node::StrCol { .. } | Node::StrLit(_) => Err(invalid(
                &self.name,
                format!("{:?} is a string, a number is needed", e.output_name()),
            )),
        }
    }

    fn node(&mut self, e: &Expr) -> Result<Node> {
        Ok(match e {
            Expr::Column(n) => {
                let c = self.df.column(n)?;
                let dtype = c.dtype();
                let dict = c.dict.clone();
                let ty = Type::from(elem_type(c.data()));
                let idx = self.input(c.alias(n))?;
                match dtype {
                    DType::Str => Node::StrCol { idx, dict },
                    DType::Bool => Node::Num {
                        wire: Wire::col(idx).cast(Type::Bool),
                        ty: Type::Bool,
                        ts: false,
                    },
                    _ => Node::Num {
                        wire: Wire::col(idx),
                        ty,
                        ts: dtype == DType::Timestamp,
                    },
                }
            }
            Expr::Literal(v) => {
                let (wire, ty, ts) = match v {
                    Value::Int(x) => (Wire::lit_i64(*x), Type::I64, false),
                    Value::Timestamp(x) => (Wire::lit_i64(*x), Type::I64, true),
                    Value::Float(x) => (Wire::lit_f64(*x), Type::F64, false),
                    Value::Bool(b) => (Wire::lit_bool(*b), Type::Bool, false),
                    Value::Str(s) => return Ok(Node::StrLit(s.clone())),
                    Value::Null => return Err(invalid(&self.name, "a null constant")),
                };
                Node::Num { wire, ty, ts }
            }
            Expr::Alias(a, _) => self.node(a)?,
            Expr::Agg(..) | Expr::Len => {
                return Err(invalid(
                    &self.name,
                    "an aggregation where a value per row is needed",
                ));
            }
            Expr::IsNull(a) => {
                let c = eval_column(self.df, a)?;
                let flags: Vec<u8> = (0..c.len()).map(|i| u8::from(!c.is_valid(i))).collect();
                let tmp = format!("\u{0}is_null{}", self.inputs.len());
                let p = self.df.placement().clone();
                let m = Column::from_vec(&tmp, DType::Bool, flags, p.as_ref())?;
                let idx = self.input(m)?;
                Node::Num {
                    wire: Wire::col(idx).cast(Type::Bool),
                    ty: Type::Bool,
                    ts: false,
                }
            }
            Expr::Cast(a, dtype) => {
                let (wire, _, _) = self.num(a)?;
                let ty = match dtype {
                    DType::I64 | DType::Timestamp => Type::I64,
                    DType::I32 => Type::I32,
                    DType::U8 => Type::U8,
                    DType::F64 => Type::F64,
                    DType::Bool => Type::Bool,
                    DType::Str => return Err(invalid(&self.name, "a cast to str")),
                };
                Node::Num {
                    wire: wire.cast(ty),
                    ty,
                    ts: *dtype == DType::Timestamp,
                }
            }
            Expr::Unary(op, a) => self.unary(*op, a)?,
            Expr::Binary(op, a, b) => self.binary(*op, a, b)?,
        })
    }

    fn unary(&mut self, op: UnaryOp, a: &Expr) -> Result<Node> {
        use UnaryOp::*;
        let (wire, ty, ts) = self.num(a)?;
        let (wire, ty) = match op {
            Not if ty != Type::Bool => {
                return Err(invalid(&self.name, format!("not of a {ty:?} value")));
            }
            Neg | Abs if ty == Type::Bool => {
                return Err(invalid(&self.name, format!("{} of a bool", op.name())));
            }
            Year | Month | Day | Weekday | Hour | Minute if !ty.is_integer() => {
                return Err(invalid(
                    &self.name,
                    format!("{} of a {ty:?} value, a timestamp is needed", op.name()),
                ));
            }
            Sqrt | Sin | Cos | Tan | Asin | Acos | Atan | Exp | Ln | Floor | Ceil | Round
            | ToRadians
                if ty != Type::F64 =>
            {
                (wire.cast(Type::F64), Type::F64)
            }
            _ => (wire, ty),
        };
        let out = op.result(ty).map_err(FrameError::from)?;
        let ts = ts && matches!(op, Abs);
        Ok(Node::Num {
            wire: wire.unary(op),
            ty: out,
            ts,
        })
    }

    fn binary(&mut self, op: BinaryOp, a: &Expr, b: &Expr) -> Result<Node> {
        let (na, nb) = (self.node(a)?, self.node(b)?);
        let (na, nb) = match (na, nb) {
            (Node::Num { wire: wa, ty: ta, ts: sa }, Node::Num { wire: wb, ty: tb, ts: sb }) => {
                ((wa, ta, sa, a), (wb, tb, sb, b))
            }
            (x, y) => return self.strings(op, x, y),
        };
        let ((wa, ta, sa, ea), (wb, tb, sb, eb)) = (na, nb);
        use BinaryOp::*;
        let target = match op {
            And | Or => {
                if ta != Type::Bool || tb != Type::Bool {
                    return Err(invalid(
                        &self.name,
                        format!("{} of {ta:?} and {tb:?}, booleans are needed", op.name()),
                    ));
                }
                Type::Bool
            }
            Div | Pow | Atan2 => Type::F64,
            _ if ta == tb => ta,
            _ if ta.is_float() || tb.is_float() => Type::F64,
            // An integer constant takes the type of the other side when it fits.
            _ if matches!(eb, Expr::Literal(Value::Int(v)) if fits(*v, ta)) => ta,
            _ if matches!(ea, Expr::Literal(Value::Int(v)) if fits(*v, tb)) => tb,
            _ => Type::I64,
        };
        let conv = |w: Wire, t: Type| if t == target { w } else { w.cast(target) };
        let out = op.result(target, target).map_err(FrameError::from)?;
        let ts = match op {
            Add => sa != sb,
            Sub => sa && !sb,
            Min | Max => sa && sb,
            _ => false,
        };
        Ok(Node::Num {
            wire: conv(wa, ta).binary(op, conv(wb, tb)),
            ty: out,
            ts,
        })
    }

    /// Equality of string columns and constants, by dictionary code.
    fn strings(&mut self, op: BinaryOp, x: Node, y: Node) -> Result<Node> {
        if !matches!(op, BinaryOp::Eq | BinaryOp::Ne) {
            return Err(invalid(
                &self.name,
                format!("{} of strings (only == and != compare strings)", op.name()),
            ));
        }
        let code = |dict: &Option<Arc<Dictionary>>, s: &str| {
            dict.as_deref()
                .and_then(|d| d.code(s))
                .map_or(-1, i64::from)
        };
        let wire = match (x, y) {
            (Node::StrCol { idx, dict }, Node::StrLit(s))
            | (Node::StrLit(s), Node::StrCol { idx, dict }) => Wire::col(idx)
                .cast(Type::I64)
                .binary(op, Wire::Lit(Lit::I64(code(&dict, &s)))),
            (Node::StrCol { idx: i, dict: d1 }, Node::StrCol { idx: j, dict: d2 })
                if matches!((&d1, &d2), (Some(a), Some(b)) if Arc::ptr_eq(a, b)) =>
            {
                Wire::col(i).binary(op, Wire::col(j))
            }
            (Node::StrLit(s), Node::StrLit(t)) => Wire::lit_bool((s == t) == (op == BinaryOp::Eq)),
            _ => {
                return Err(invalid(
                    &self.name,
                    "a string compared with a number or with a column of another dictionary",
                ));
            }
        };
        Ok(Node::Num {
            wire,
            ty: Type::Bool,
            ts: false,
        })
    }
}

/// Evaluates a row expression over `df`: a column of `df.len()` rows named by
/// [`Expr::output_name`]. A bare (aliased) column is shared, not copied.
pub(crate) fn eval_column(df: &DataFrame, e: &Expr) -> Result<Column> {
    let (inner, name) = e.unaliased();
    match inner {
        Expr::Column(n) => return Ok(df.column(n)?.alias(&name)),
        Expr::Literal(v) if !matches!(v, Value::Null) => {
            let p = df.placement().clone();
            let dtype = match v {
                Value::Int(_) => DType::I64,
                Value::Float(_) => DType::F64,
                Value::Bool(_) => DType::Bool,
                Value::Timestamp(_) => DType::Timestamp,
                _ => DType::Str,
            };
            let mut b = crate::ColumnBuilder::new(&name, dtype, p.as_ref());
            for _ in 0..df.len() {
                b.push_value(v)?;
            }
            return b.finish();
        }
        _ => {}
    }
    let mut c = Compiler {
        df,
        name: name.clone(),
        inputs: Vec::new(),
    };
    let (wire, ts) = match c.node(inner)? {
        Node::Num { wire, ts, .. } => (wire, ts),
        Node::StrCol { .. } | Node::StrLit(_) => {
            return Err(invalid(&name, "a string expression (only comparisons)"));
        }
    };
    let inputs = c.inputs;
    if inputs.is_empty() {
        return Err(invalid(&name, "an expression of constants only (use lit alone)"));
    }
    let refs: Vec<&Column> = inputs.iter().collect();
    let mut out = df.derive_cols(&name, &wire, &refs)?;
    if ts && out.dtype == DType::I64 {
        out.dtype = DType::Timestamp;
    }
    let mut validity: Option<Validity> = None;
    for c in &inputs {
        if let Some(v) = c.validity() {
            validity = Some(match validity {
                None => v.clone(),
                Some(acc) => acc.and(v),
            });
        }
    }
    out.with_validity(validity)
}
