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
    /// A numeric or boolean value; `ts` marks timestamps; `valid` is the boolean expression
    /// of the rows where it is not null (`None`: never null).
    Num {
        wire: Wire,
        ty: Type,
        ts: bool,
        valid: Option<Wire>,
    },
    /// Input column `idx` holding dictionary codes.
    StrCol {
        idx: u16,
        dict: Option<Arc<Dictionary>>,
        valid: Option<Wire>,
    },
    /// A string constant.
    StrLit(String),
}

/// Rows valid in both (`None`: all rows).
fn both(a: Option<Wire>, b: Option<Wire>) -> Option<Wire> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.and(b)),
        (a, b) => a.or(b),
    }
}

/// `valid` as an expression (`true` when `None`).
fn valid_or_true(v: Option<Wire>) -> Wire {
    v.unwrap_or_else(|| Wire::lit_bool(true))
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

    /// The rows of column `c` that hold a value, as an input flag column (`None`: all).
    fn valid_input(&mut self, c: &Column) -> Result<Option<Wire>> {
        let Some(v) = c.validity() else {
            return Ok(None);
        };
        let name = format!("\u{0}valid:{}", c.name());
        if let Some(i) = self.inputs.iter().position(|x| x.name() == name) {
            return Ok(Some(Wire::col(i as u16).cast(Type::Bool)));
        }
        let flags: Vec<u8> = (0..v.len()).map(|i| u8::from(v.is_valid(i))).collect();
        let p = self.df.placement().clone();
        let m = Column::from_vec(&name, DType::U8, flags, p.as_ref())?;
        Ok(Some(Wire::col(self.input(m)?).cast(Type::Bool)))
    }

    fn num(&mut self, e: &Expr) -> Result<(Wire, Type, bool, Option<Wire>)> {
        match self.node(e)? {
            Node::Num {
                wire,
                ty,
                ts,
                valid,
            } => Ok((wire, ty, ts, valid)),
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
                let c = c.alias(n);
                let valid = self.valid_input(&c)?;
                let idx = self.input(c)?;
                match dtype {
                    DType::Str => Node::StrCol { idx, dict, valid },
                    DType::Bool => Node::Num {
                        wire: Wire::col(idx).cast(Type::Bool),
                        ty: Type::Bool,
                        ts: false,
                        valid,
                    },
                    _ => Node::Num {
                        wire: Wire::col(idx),
                        ty,
                        ts: dtype == DType::Timestamp,
                        valid,
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
                Node::Num {
                    wire,
                    ty,
                    ts,
                    valid: None,
                }
            }
            Expr::Alias(a, _) => self.node(a)?,
            Expr::Agg(..) | Expr::Len => {
                return Err(invalid(
                    &self.name,
                    "an aggregation where a value per row is needed",
                ));
            }
            Expr::IsNull(a) => {
                let valid = match self.node(a)? {
                    Node::Num { valid, .. } | Node::StrCol { valid, .. } => valid,
                    Node::StrLit(_) => None,
                };
                Node::Num {
                    wire: valid_or_true(valid).not(),
                    ty: Type::Bool,
                    ts: false,
                    valid: None,
                }
            }
            Expr::Cast(a, dtype) => {
                let (wire, _, _, valid) = self.num(a)?;
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
                    valid,
                }
            }
            Expr::Unary(op, a) => self.unary(*op, a)?,
            Expr::Binary(op, a, b) => self.binary(*op, a, b)?,
        })
    }

    fn unary(&mut self, op: UnaryOp, a: &Expr) -> Result<Node> {
        use UnaryOp::*;
        let (wire, ty, ts, valid) = self.num(a)?;
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
            valid,
        })
    }

    fn binary(&mut self, op: BinaryOp, a: &Expr, b: &Expr) -> Result<Node> {
        let (na, nb) = (self.node(a)?, self.node(b)?);
        let (na, nb) = match (na, nb) {
            (
                Node::Num {
                    wire: wa,
                    ty: ta,
                    ts: sa,
                    valid: va,
                },
                Node::Num {
                    wire: wb,
                    ty: tb,
                    ts: sb,
                    valid: vb,
                },
            ) => ((wa, ta, sa, va, a), (wb, tb, sb, vb, b)),
            (x, y) => return self.strings(op, x, y),
        };
        let ((wa, ta, sa, va, ea), (wb, tb, sb, vb, eb)) = (na, nb);
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
        let (wa, wb) = (conv(wa, ta), conv(wb, tb));
        // Kleene logic: `false and null` is false, `true or null` is true.
        let valid = match (op, &va, &vb) {
            (And | Or, Some(x), Some(y)) => {
                let decided = |w: &Wire| {
                    if op == And {
                        w.clone().not()
                    } else {
                        w.clone()
                    }
                };
                Some(
                    x.clone()
                        .and(y.clone())
                        .or(x.clone().and(decided(&wa)))
                        .or(y.clone().and(decided(&wb))),
                )
            }
            (And | Or, Some(x), None) => {
                let decided = if op == And {
                    wb.clone().not()
                } else {
                    wb.clone()
                };
                Some(x.clone().or(decided))
            }
            (And | Or, None, Some(y)) => {
                let decided = if op == And {
                    wa.clone().not()
                } else {
                    wa.clone()
                };
                Some(y.clone().or(decided))
            }
            _ => both(va, vb),
        };
        Ok(Node::Num {
            wire: wa.binary(op, wb),
            ty: out,
            ts,
            valid,
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
        let (wire, valid) = match (x, y) {
            (Node::StrCol { idx, dict, valid }, Node::StrLit(s))
            | (Node::StrLit(s), Node::StrCol { idx, dict, valid }) => (
                Wire::col(idx)
                    .cast(Type::I64)
                    .binary(op, Wire::Lit(Lit::I64(code(&dict, &s)))),
                valid,
            ),
            (
                Node::StrCol {
                    idx: i,
                    dict: d1,
                    valid: v1,
                },
                Node::StrCol {
                    idx: j,
                    dict: d2,
                    valid: v2,
                },
            ) if matches!((&d1, &d2), (Some(a), Some(b)) if Arc::ptr_eq(a, b)) => {
                (Wire::col(i).binary(op, Wire::col(j)), both(v1, v2))
            }
            (Node::StrLit(s), Node::StrLit(t)) => {
                (Wire::lit_bool((s == t) == (op == BinaryOp::Eq)), None)
            }
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
            valid,
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
    let (wire, ts, valid, inputs) = compile(df, inner, &name)?;
    let refs: Vec<&Column> = inputs.iter().collect();
    let mut out = df.derive_cols(&name, &wire, &refs)?;
    if ts && out.dtype == DType::I64 {
        out.dtype = DType::Timestamp;
    }
    let validity = match valid {
        None => None,
        Some(v) => {
            let flags = df.derive_cols("\u{0}valid", &v, &refs)?;
            let flags = flags.read_i64(0..flags.len())?;
            Some(Validity::from_bools(flags.into_iter().map(|f| f != 0)))
        }
    };
    out.with_validity(validity)
}

/// Compiles a row expression: its wire form, whether it is a timestamp, the wire form of its
/// validity (`None`: never null), and the input columns both read.
fn compile(
    df: &DataFrame,
    e: &Expr,
    name: &str,
) -> Result<(Wire, bool, Option<Wire>, Vec<Column>)> {
    let mut c = Compiler {
        df,
        name: name.to_owned(),
        inputs: Vec::new(),
    };
    let (wire, ts, valid) = match c.node(e)? {
        Node::Num {
            wire, ts, valid, ..
        } => (wire, ts, valid),
        Node::StrCol { .. } | Node::StrLit(_) => {
            return Err(invalid(name, "a string expression (only comparisons)"));
        }
    };
    if c.inputs.is_empty() {
        return Err(invalid(
            name,
            "an expression of constants only (use lit alone)",
        ));
    }
    Ok((wire, ts, valid, c.inputs))
}

/// The rows where a boolean row expression is true (null counts as false), as a `Bool` column
/// without nulls.
pub(crate) fn eval_predicate(df: &DataFrame, e: &Expr) -> Result<Column> {
    let (inner, name) = e.unaliased();
    if let Expr::Column(_) = inner {
        let c = eval_column(df, e)?;
        if c.validity().is_none() {
            return Ok(c);
        }
    }
    let (wire, _, valid, inputs) = compile(df, inner, &name)?;
    let refs: Vec<&Column> = inputs.iter().collect();
    let wire = match valid {
        Some(v) => wire.and(v),
        None => wire,
    };
    df.derive_cols(&name, &wire, &refs)
}
