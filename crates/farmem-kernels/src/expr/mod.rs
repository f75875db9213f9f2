//! Evaluation of row expressions ([`farmem_proto::expr::Expr`]), vectorised per block.
//!
//! A [`Program`] is an expression type-checked against its input types. It evaluates a block of
//! rows node by node: every node is one loop over the block into a scratch buffer of its widened
//! type (no per-row tree walk), in sub-blocks of [`SUB_BLOCK`] rows so the scratch buffers stay
//! in cache. The remote agent's derive kernel ([`crate::derive`]), the client-side path and local
//! frames all evaluate through [`Program::eval_block`], so their columns are bit-identical.
//!
//! ```
//! use farmem_proto::expr::{Expr, Type};
//! use farmem_kernels::expr::{Slice, eval_slices};
//! let start = [0i64, 7_200];
//! let end = [60i64, 9_000];
//! let e = Expr::col(1).sub(Expr::col(0));
//! let (ty, bytes) = eval_slices(&e, &[Slice::I64(&start), Slice::I64(&end)], 1).unwrap();
//! assert_eq!(ty, Type::I64);
//! assert_eq!(bytes[8..16], 1_800i64.to_le_bytes());
//! ```

pub mod calendar;
mod lane;

use std::collections::HashMap;

use farmem_proto::agent::{Domain, ElemType};
use farmem_proto::expr::{BinaryOp, Expr, Lit, Type, UnaryOp};

use lane::Val;
pub use lane::{Lane, LaneRef};

use crate::KernelError;

/// Rows evaluated together, node by node.
pub const SUB_BLOCK: usize = 1024;

/// One step of a program: its value over a sub-block from earlier steps' values.
#[derive(Debug)]
enum Inst {
    Col(usize),
    Const(Lit),
    /// Operator, operand type, operand step.
    Unary(UnaryOp, Type, usize),
    /// Operator, operand type, operand steps.
    Binary(BinaryOp, Type, usize, usize),
    /// From, to, operand step.
    Cast(Type, Type, usize),
}

/// An expression checked against its input types, ready to evaluate: its distinct subtrees as
/// steps in evaluation order (a subtree that occurs several times, like `sin(x)` in
/// `sin(x) * sin(x)`, is computed once).
#[derive(Debug)]
pub struct Program {
    insts: Vec<Inst>,
    root: usize,
    out: Type,
    inputs: Vec<Type>,
}

impl Program {
    /// Checks `expr` (limits and types) over inputs of types `inputs`.
    ///
    /// # Errors
    /// [`KernelError::Expr`] when the expression is beyond the limits or ill-typed.
    pub fn new(expr: &Expr, inputs: &[ElemType]) -> Result<Self, KernelError> {
        let inputs: Vec<Type> = inputs.iter().map(|&t| Type::from(t)).collect();
        let out = expr.type_of(&inputs)?;
        let mut insts = Vec::new();
        let (root, _) = compile(expr, &inputs, &mut insts, &mut HashMap::new())?;
        Ok(Self {
            insts,
            root,
            out,
            inputs,
        })
    }

    /// Type of the result (stored as [`Type::elem`]).
    pub fn out_type(&self) -> Type {
        self.out
    }

    /// Appends the result of rows `0..n` to `out` as little-endian elements of
    /// `out_type().elem()`. `cols[i]` holds input `i` widened, at least `n` rows.
    ///
    /// # Errors
    /// [`KernelError::Invalid`] when `cols` does not match the inputs (count, domain or length).
    pub fn eval_block(
        &self,
        cols: &[LaneRef<'_>],
        n: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), KernelError> {
        self.check_cols(cols, n)?;
        out.reserve(n * self.out.elem().size());
        let mut sub: Vec<LaneRef<'_>> = cols.to_vec();
        let mut at = 0;
        while at < n {
            let m = SUB_BLOCK.min(n - at);
            for (s, c) in sub.iter_mut().zip(cols) {
                *s = slice(*c, at, m);
            }
            let mut vals: Vec<Val<'_>> = Vec::with_capacity(self.insts.len());
            for inst in &self.insts {
                let v = step(inst, &vals, &sub, m);
                vals.push(v);
            }
            if let Some(v) = vals.get(self.root) {
                lane::store(v, self.out, m, out);
            }
            at += m;
        }
        Ok(())
    }

    fn check_cols(&self, cols: &[LaneRef<'_>], n: usize) -> Result<(), KernelError> {
        if cols.len() != self.inputs.len() {
            return Err(KernelError::Invalid(format!(
                "expression over {} inputs given {}",
                self.inputs.len(),
                cols.len()
            )));
        }
        for (c, t) in cols.iter().zip(&self.inputs) {
            let (len, d) = match c {
                LaneRef::B(s) => (s.len(), None),
                LaneRef::U(s) => (s.len(), Some(Domain::Unsigned)),
                LaneRef::I(s) => (s.len(), Some(Domain::Signed)),
                LaneRef::F(s) => (s.len(), Some(Domain::Float)),
            };
            if len < n || d != t.domain() {
                return Err(KernelError::Invalid(format!(
                    "expression input of type {t:?} given {len} rows of {d:?}"
                )));
            }
        }
        Ok(())
    }
}

fn slice(c: LaneRef<'_>, at: usize, n: usize) -> LaneRef<'_> {
    match c {
        LaneRef::B(s) => LaneRef::B(&s[at..at + n]),
        LaneRef::U(s) => LaneRef::U(&s[at..at + n]),
        LaneRef::I(s) => LaneRef::I(&s[at..at + n]),
        LaneRef::F(s) => LaneRef::F(&s[at..at + n]),
    }
}

/// Appends the steps of a checked expression to `insts` (sharing repeated subtrees through
/// `seen`, keyed by their encoding); returns its step and type.
fn compile(
    e: &Expr,
    inputs: &[Type],
    insts: &mut Vec<Inst>,
    seen: &mut HashMap<Vec<u8>, (usize, Type)>,
) -> Result<(usize, Type), KernelError> {
    let key = e.encode();
    if let Some(&hit) = seen.get(&key) {
        return Ok(hit);
    }
    let (inst, t) = match e {
        Expr::Col(i) => (Inst::Col(usize::from(*i)), e.type_of(inputs)?),
        Expr::Lit(l) => (Inst::Const(*l), l.ty()),
        Expr::Unary(op, a) => {
            let (a, t) = compile(a, inputs, insts, seen)?;
            (Inst::Unary(*op, t, a), op.result(t)?)
        }
        Expr::Binary(op, a, b) => {
            let (a, ta) = compile(a, inputs, insts, seen)?;
            let (b, tb) = compile(b, inputs, insts, seen)?;
            (Inst::Binary(*op, ta, a, b), op.result(ta, tb)?)
        }
        Expr::Cast(to, a) => {
            let (a, from) = compile(a, inputs, insts, seen)?;
            if from == *to {
                return Ok((a, from));
            }
            (Inst::Cast(from, *to, a), *to)
        }
    };
    insts.push(inst);
    let at = (insts.len() - 1, t);
    seen.insert(key, at);
    Ok(at)
}

/// The value of one step over a sub-block of `n` rows, given the earlier steps' values.
fn step<'a>(inst: &Inst, vals: &[Val<'_>], cols: &[LaneRef<'a>], n: usize) -> Val<'a> {
    let get = |i: usize| vals.get(i).map_or(Val::Const(Lit::U64(0)), Val::view);
    match inst {
        Inst::Col(i) => match cols.get(*i) {
            Some(c) => Val::Ref(*c),
            None => Val::Const(Lit::U64(0)),
        },
        Inst::Const(l) => Val::Const(*l),
        Inst::Unary(op, t, a) => Val::Own(lane::unary(*op, *t, &get(*a), n)),
        Inst::Binary(op, t, a, b) => Val::Own(lane::binary(*op, *t, &get(*a), &get(*b), n)),
        Inst::Cast(from, to, a) => Val::Own(lane::cast(*from, *to, &get(*a), n)),
    }
}

/// A local column of any element type, the input of [`eval_slices`].
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub enum Slice<'a> {
    U8(&'a [u8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
    U64(&'a [u64]),
    I8(&'a [i8]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    F32(&'a [f32]),
    F64(&'a [f64]),
}

macro_rules! with_slice {
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            Slice::U8($v) => $body,
            Slice::U16($v) => $body,
            Slice::U32($v) => $body,
            Slice::U64($v) => $body,
            Slice::I8($v) => $body,
            Slice::I16($v) => $body,
            Slice::I32($v) => $body,
            Slice::I64($v) => $body,
            Slice::F32($v) => $body,
            Slice::F64($v) => $body,
        }
    };
}

impl<'a> Slice<'a> {
    /// Element type.
    pub fn elem_type(&self) -> ElemType {
        match self {
            Slice::U8(_) => ElemType::U8,
            Slice::U16(_) => ElemType::U16,
            Slice::U32(_) => ElemType::U32,
            Slice::U64(_) => ElemType::U64,
            Slice::I8(_) => ElemType::I8,
            Slice::I16(_) => ElemType::I16,
            Slice::I32(_) => ElemType::I32,
            Slice::I64(_) => ElemType::I64,
            Slice::F32(_) => ElemType::F32,
            Slice::F64(_) => ElemType::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_slice!(self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows `r` widened: borrowed for the 64-bit types, else copied into `buf`.
    fn widen<'b>(&self, r: std::ops::Range<usize>, buf: &'b mut Lane) -> LaneRef<'b>
    where
        'a: 'b,
    {
        macro_rules! copy {
            ($v:expr, $lane:ident, $w:ty) => {{
                let src = &$v[r];
                let mut v = match std::mem::replace(buf, Lane::B(Vec::new())) {
                    Lane::$lane(v) => v,
                    _ => Vec::new(),
                };
                v.clear();
                v.extend(src.iter().map(|&x| <$w>::from(x)));
                *buf = Lane::$lane(v);
                buf.as_ref()
            }};
        }
        match *self {
            Slice::U64(v) => LaneRef::U(&v[r]),
            Slice::I64(v) => LaneRef::I(&v[r]),
            Slice::F64(v) => LaneRef::F(&v[r]),
            Slice::U8(v) => copy!(v, U, u64),
            Slice::U16(v) => copy!(v, U, u64),
            Slice::U32(v) => copy!(v, U, u64),
            Slice::I8(v) => copy!(v, I, i64),
            Slice::I16(v) => copy!(v, I, i64),
            Slice::I32(v) => copy!(v, I, i64),
            Slice::F32(v) => copy!(v, F, f64),
        }
    }
}

/// Evaluates `expr` over whole local columns on up to `threads` threads (runs of at least 2^18
/// rows, concatenated in order, so the bytes equal one thread's and the remote agent's). Returns
/// the result type and its little-endian elements.
///
/// # Errors
/// [`KernelError::Expr`] for an ill-typed expression, [`KernelError::Invalid`] for inputs of
/// different lengths.
pub fn eval_slices(
    expr: &Expr,
    cols: &[Slice<'_>],
    threads: usize,
) -> Result<(Type, Vec<u8>), KernelError> {
    let types: Vec<ElemType> = cols.iter().map(Slice::elem_type).collect();
    let prog = Program::new(expr, &types)?;
    let len = cols.first().map_or(0, Slice::len);
    if let Some(c) = cols.iter().find(|c| c.len() != len) {
        return Err(KernelError::Invalid(format!(
            "expression inputs of {len} and {} elements",
            c.len()
        )));
    }
    let runs = crate::split_rows(len as u64, threads);
    let parts = crate::on_threads(&runs, |r| {
        let mut out = Vec::new();
        let mut bufs: Vec<Lane> = vec![Lane::B(Vec::new()); cols.len()];
        let (mut at, end) = (r.start as usize, r.end as usize);
        while at < end {
            let n = crate::BLOCK.min(end - at);
            let lanes: Vec<LaneRef<'_>> = cols
                .iter()
                .zip(bufs.iter_mut())
                .map(|(c, b)| c.widen(at..at + n, b))
                .collect();
            prog.eval_block(&lanes, n, &mut out)?;
            at += n;
        }
        Ok(out)
    })?;
    let out = if parts.len() == 1 {
        parts.into_iter().next().unwrap_or_default()
    } else {
        parts.concat()
    };
    Ok((prog.out_type(), out))
}
