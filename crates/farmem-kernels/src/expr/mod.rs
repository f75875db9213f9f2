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

use farmem_proto::agent::{Domain, ElemType};
use farmem_proto::expr::{BinaryOp, Expr, Lit, Type, UnaryOp};

use lane::Val;
pub use lane::{Lane, LaneRef};

use crate::KernelError;

/// Rows evaluated together, node by node.
pub const SUB_BLOCK: usize = 1024;

/// A type-checked node.
#[derive(Debug)]
enum Node {
    Col(usize),
    Const(Lit),
    /// Operator, operand type.
    Unary(UnaryOp, Type, Box<Node>),
    /// Operator, operand type.
    Binary(BinaryOp, Type, Box<Node>, Box<Node>),
    /// From, to.
    Cast(Type, Type, Box<Node>),
}

/// An expression checked against its input types, ready to evaluate.
#[derive(Debug)]
pub struct Program {
    root: Node,
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
        let (root, _) = compile(expr, &inputs)?;
        Ok(Self { root, out, inputs })
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
            let v = eval(&self.root, &sub, m);
            lane::store(&v, self.out, m, out);
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

/// The typed node tree of a checked expression, and its type.
fn compile(e: &Expr, inputs: &[Type]) -> Result<(Node, Type), KernelError> {
    Ok(match e {
        Expr::Col(i) => {
            let t = e.type_of(inputs)?;
            (Node::Col(usize::from(*i)), t)
        }
        Expr::Lit(l) => (Node::Const(*l), l.ty()),
        Expr::Unary(op, a) => {
            let (a, t) = compile(a, inputs)?;
            (Node::Unary(*op, t, Box::new(a)), op.result(t)?)
        }
        Expr::Binary(op, a, b) => {
            let (a, ta) = compile(a, inputs)?;
            let (b, tb) = compile(b, inputs)?;
            (
                Node::Binary(*op, ta, Box::new(a), Box::new(b)),
                op.result(ta, tb)?,
            )
        }
        Expr::Cast(to, a) => {
            let (a, from) = compile(a, inputs)?;
            (Node::Cast(from, *to, Box::new(a)), *to)
        }
    })
}

/// The value of `node` over a sub-block of `n` rows (recursion per node, never per row).
fn eval<'a>(node: &Node, cols: &[LaneRef<'a>], n: usize) -> Val<'a> {
    match node {
        Node::Col(i) => match cols.get(*i) {
            Some(c) => Val::Ref(*c),
            None => Val::Const(Lit::U64(0)),
        },
        Node::Const(l) => Val::Const(*l),
        Node::Unary(op, t, a) => Val::Own(lane::unary(*op, *t, &eval(a, cols, n), n)),
        Node::Binary(op, t, a, b) => {
            let (a, b) = (eval(a, cols, n), eval(b, cols, n));
            Val::Own(lane::binary(*op, *t, &a, &b, n))
        }
        Node::Cast(from, to, a) => {
            let a = eval(a, cols, n);
            if from == to {
                a
            } else {
                Val::Own(lane::cast(*from, *to, &a, n))
            }
        }
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
