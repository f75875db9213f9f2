//! Random well-typed expressions over random columns: the agent (through [`super::execute`]),
//! the local evaluation ([`farmem_kernels::expr::eval_slices`]) and a naive per-row interpreter
//! written here give the same column.

use farmem_kernels::expr::{Slice, eval_slices};
use farmem_proto::agent::{AgentMessage, DeriveArgs, Domain, ElemType, OutSpec, VecRef, op};
use farmem_proto::expr::{BinaryOp, Expr, Lit, Type, UnaryOp};
use proptest::prelude::*;

use super::execute;
use super::tests::Ctx;
use crate::agent::AgentContext;

/// A tiny deterministic generator for tree shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const TYPES: [Type; 11] = [
    Type::U8,
    Type::U16,
    Type::U32,
    Type::U64,
    Type::I8,
    Type::I16,
    Type::I32,
    Type::I64,
    Type::F32,
    Type::F64,
    Type::Bool,
];

fn literal(r: &mut Rng, t: Type) -> Option<Expr> {
    let small = (r.next() % 200) as i64 - 100;
    Some(match t {
        Type::Bool => Expr::lit_bool(r.next() & 1 == 1),
        Type::U64 => Expr::lit_u64(if r.below(4) == 0 {
            r.next()
        } else {
            small as u64 & 0xff
        }),
        Type::I64 => Expr::lit_i64(if r.below(4) == 0 {
            r.next() as i64
        } else {
            small
        }),
        Type::F64 => Expr::lit_f64(match r.below(6) {
            0 => f64::NAN,
            1 => -0.0,
            _ => small as f64 * 0.37,
        }),
        _ => return None,
    })
}

/// A random expression of type `t` over inputs of types `inputs`.
fn random_expr(r: &mut Rng, t: Type, inputs: &[Type], depth: usize) -> Expr {
    if depth == 0 || r.below(4) == 0 {
        let cols: Vec<usize> = (0..inputs.len()).filter(|&i| inputs[i] == t).collect();
        if !cols.is_empty() && r.below(3) > 0 {
            return Expr::col(cols[r.below(cols.len())] as u16);
        }
        if let Some(l) = literal(r, t) {
            return l;
        }
        let i = r.below(inputs.len());
        return Expr::col(i as u16).cast(t);
    }
    let d = depth - 1;
    let any = TYPES[r.below(TYPES.len())];
    match (t, r.below(5)) {
        (_, 0) => random_expr(r, any, inputs, d).cast(t),
        (Type::Bool, 1) => random_expr(r, Type::Bool, inputs, d).not(),
        (Type::Bool, 2) => {
            let op = [BinaryOp::And, BinaryOp::Or][r.below(2)];
            random_expr(r, Type::Bool, inputs, d).binary(op, random_expr(r, Type::Bool, inputs, d))
        }
        (Type::Bool, _) => {
            let ops = [
                BinaryOp::Eq,
                BinaryOp::Ne,
                BinaryOp::Lt,
                BinaryOp::Le,
                BinaryOp::Gt,
                BinaryOp::Ge,
            ];
            let op = ops[r.below(ops.len())];
            random_expr(r, any, inputs, d).binary(op, random_expr(r, any, inputs, d))
        }
        (Type::I64, 1) => {
            let parts = [
                UnaryOp::Year,
                UnaryOp::Month,
                UnaryOp::Day,
                UnaryOp::Weekday,
                UnaryOp::Hour,
                UnaryOp::Minute,
            ];
            let int = [Type::I64, Type::I32, Type::U64, Type::U8][r.below(4)];
            random_expr(r, int, inputs, d).unary(parts[r.below(parts.len())])
        }
        (t, 2) if t.is_float() => {
            let ops = [
                UnaryOp::Sqrt,
                UnaryOp::Sin,
                UnaryOp::Cos,
                UnaryOp::Tan,
                UnaryOp::Asin,
                UnaryOp::Acos,
                UnaryOp::Atan,
                UnaryOp::Exp,
                UnaryOp::Ln,
                UnaryOp::Floor,
                UnaryOp::Ceil,
                UnaryOp::Round,
                UnaryOp::ToRadians,
                UnaryOp::Neg,
                UnaryOp::Abs,
            ];
            random_expr(r, t, inputs, d).unary(ops[r.below(ops.len())])
        }
        (t, 3) if t.is_float() => {
            let op = [BinaryOp::Atan2, BinaryOp::Pow][r.below(2)];
            random_expr(r, t, inputs, d).binary(op, random_expr(r, t, inputs, d))
        }
        (t, 2) => random_expr(r, t, inputs, d).unary([UnaryOp::Neg, UnaryOp::Abs][r.below(2)]),
        (t, _) => {
            let ops = [
                BinaryOp::Add,
                BinaryOp::Sub,
                BinaryOp::Mul,
                BinaryOp::Div,
                BinaryOp::Rem,
                BinaryOp::Min,
                BinaryOp::Max,
            ];
            let op = ops[r.below(ops.len())];
            random_expr(r, t, inputs, d).binary(op, random_expr(r, t, inputs, d))
        }
    }
}

/// A value of the naive interpreter.
#[derive(Clone, Copy, Debug)]
enum V {
    B(bool),
    U(u64),
    I(i64),
    F(f64),
}

fn narrow(v: V, t: Type) -> V {
    match (v, t) {
        (V::U(x), Type::U8) => V::U(u64::from(x as u8)),
        (V::U(x), Type::U16) => V::U(u64::from(x as u16)),
        (V::U(x), Type::U32) => V::U(u64::from(x as u32)),
        (V::I(x), Type::I8) => V::I(i64::from(x as i8)),
        (V::I(x), Type::I16) => V::I(i64::from(x as i16)),
        (V::I(x), Type::I32) => V::I(i64::from(x as i32)),
        (V::F(x), Type::F32) => V::F(f64::from(x as f32)),
        (v, _) => v,
    }
}

fn cast(v: V, to: Type) -> V {
    let v = match (v, to) {
        (V::B(b), Type::Bool) => V::B(b),
        (V::U(x), Type::Bool) => V::B(x != 0),
        (V::I(x), Type::Bool) => V::B(x != 0),
        (V::F(x), Type::Bool) => V::B(x != 0.0),
        (V::B(b), t) if t.is_float() => V::F(if b { 1.0 } else { 0.0 }),
        (V::B(b), t) => match t.domain() {
            Some(Domain::Unsigned) => V::U(u64::from(b)),
            _ => V::I(i64::from(b)),
        },
        (V::U(x), Type::F32) => V::F(f64::from(x as f32)),
        (V::I(x), Type::F32) => V::F(f64::from(x as f32)),
        (V::F(x), Type::F32) => V::F(f64::from(x as f32)),
        (V::U(x), Type::F64) => V::F(x as f64),
        (V::I(x), Type::F64) => V::F(x as f64),
        (V::F(x), Type::F64) => V::F(x),
        // Float to integer saturates in the target type.
        (V::F(x), Type::U8) => V::U(u64::from(x as u8)),
        (V::F(x), Type::U16) => V::U(u64::from(x as u16)),
        (V::F(x), Type::U32) => V::U(u64::from(x as u32)),
        (V::F(x), Type::U64) => V::U(x as u64),
        (V::F(x), Type::I8) => V::I(i64::from(x as i8)),
        (V::F(x), Type::I16) => V::I(i64::from(x as i16)),
        (V::F(x), Type::I32) => V::I(i64::from(x as i32)),
        (V::F(x), _) => V::I(x as i64),
        (V::U(x), t) => match t.domain() {
            Some(Domain::Unsigned) => V::U(x),
            _ => V::I(x as i64),
        },
        (V::I(x), t) => match t.domain() {
            Some(Domain::Unsigned) => V::U(x as u64),
            _ => V::I(x),
        },
    };
    narrow(v, to)
}

/// Year, month, day (the calendar functions are checked against known dates beside them).
fn civil(t: i64) -> (i64, i64, i64) {
    farmem_kernels::expr::calendar::civil(t)
}

/// The naive interpreter: one row, the tree walked per row.
fn naive(e: &Expr, row: &[V], types: &[Type]) -> (V, Type) {
    match e {
        Expr::Col(i) => (row[*i as usize], types[*i as usize]),
        Expr::Lit(l) => (
            match *l {
                Lit::Bool(b) => V::B(b),
                Lit::U64(x) => V::U(x),
                Lit::I64(x) => V::I(x),
                Lit::F64(x) => V::F(x),
            },
            l.ty(),
        ),
        Expr::Cast(to, a) => (cast(naive(a, row, types).0, *to), *to),
        Expr::Unary(op, a) => {
            let (v, t) = naive(a, row, types);
            let secs = match v {
                V::U(x) => x as i64,
                V::I(x) => x,
                _ => 0,
            };
            let r = match (op, v) {
                (UnaryOp::Not, V::B(b)) => V::B(!b),
                (UnaryOp::Neg, V::U(x)) => V::U(x.wrapping_neg()),
                (UnaryOp::Neg, V::I(x)) => V::I(x.wrapping_neg()),
                (UnaryOp::Neg, V::F(x)) => V::F(-x),
                (UnaryOp::Abs, V::U(x)) => V::U(x),
                (UnaryOp::Abs, V::I(x)) => V::I(x.wrapping_abs()),
                (UnaryOp::Abs, V::F(x)) => V::F(x.abs()),
                (UnaryOp::Year, _) => return (V::I(civil(secs).0), Type::I64),
                (UnaryOp::Month, _) => return (V::I(civil(secs).1), Type::I64),
                (UnaryOp::Day, _) => return (V::I(civil(secs).2), Type::I64),
                (UnaryOp::Weekday, _) => {
                    return (
                        V::I((secs.div_euclid(86_400) + 3).rem_euclid(7) + 1),
                        Type::I64,
                    );
                }
                (UnaryOp::Hour, _) => return (V::I(secs.rem_euclid(86_400) / 3_600), Type::I64),
                (UnaryOp::Minute, _) => return (V::I(secs.rem_euclid(3_600) / 60), Type::I64),
                (op, V::F(x)) => V::F(match op {
                    UnaryOp::Sqrt => x.sqrt(),
                    UnaryOp::Sin => x.sin(),
                    UnaryOp::Cos => x.cos(),
                    UnaryOp::Tan => x.tan(),
                    UnaryOp::Asin => x.asin(),
                    UnaryOp::Acos => x.acos(),
                    UnaryOp::Atan => x.atan(),
                    UnaryOp::Exp => x.exp(),
                    UnaryOp::Ln => x.ln(),
                    UnaryOp::Floor => x.floor(),
                    UnaryOp::Ceil => x.ceil(),
                    UnaryOp::Round => x.round(),
                    _ => x.to_radians(),
                }),
                other => panic!("ill-typed {other:?}"),
            };
            (narrow(r, t), t)
        }
        Expr::Binary(op, a, b) => {
            let (x, t) = naive(a, row, types);
            let (y, _) = naive(b, row, types);
            use BinaryOp::*;
            let cmp = |o: std::cmp::Ordering| match op {
                Eq => o.is_eq(),
                Ne => o.is_ne(),
                Lt => o.is_lt(),
                Le => o.is_le(),
                Gt => o.is_gt(),
                _ => o.is_ge(),
            };
            if op.is_comparison() {
                return (
                    V::B(match (x, y) {
                        (V::B(p), V::B(q)) => cmp(p.cmp(&q)),
                        (V::U(p), V::U(q)) => cmp(p.cmp(&q)),
                        (V::I(p), V::I(q)) => cmp(p.cmp(&q)),
                        (V::F(p), V::F(q)) => match p.partial_cmp(&q) {
                            Some(o) => cmp(o),
                            None => *op == Ne,
                        },
                        other => panic!("ill-typed {other:?}"),
                    }),
                    Type::Bool,
                );
            }
            let r = match (x, y) {
                (V::B(p), V::B(q)) => V::B(if *op == And { p && q } else { p || q }),
                (V::U(p), V::U(q)) => V::U(match op {
                    Add => p.wrapping_add(q),
                    Sub => p.wrapping_sub(q),
                    Mul => p.wrapping_mul(q),
                    Div => p.checked_div(q).unwrap_or(0),
                    Rem => p.checked_rem(q).unwrap_or(0),
                    Min => p.min(q),
                    _ => p.max(q),
                }),
                (V::I(p), V::I(q)) => V::I(match op {
                    Add => p.wrapping_add(q),
                    Sub => p.wrapping_sub(q),
                    Mul => p.wrapping_mul(q),
                    Div => p
                        .checked_div(q)
                        .unwrap_or(if q == 0 { 0 } else { p.wrapping_div(q) }),
                    Rem => p
                        .checked_rem(q)
                        .unwrap_or(if q == 0 { 0 } else { p.wrapping_rem(q) }),
                    Min => p.min(q),
                    _ => p.max(q),
                }),
                (V::F(p), V::F(q)) => V::F(match op {
                    Add => p + q,
                    Sub => p - q,
                    Mul => p * q,
                    Div => p / q,
                    Rem => p % q,
                    Min => p.min(q),
                    Max => p.max(q),
                    Atan2 => p.atan2(q),
                    _ => p.powf(q),
                }),
                other => panic!("ill-typed {other:?}"),
            };
            (narrow(r, t), t)
        }
    }
}

/// Little-endian bytes of a value stored as `t.elem()`.
fn store(v: V, t: Type, out: &mut Vec<u8>) {
    match (v, t.elem()) {
        (V::B(b), _) => out.push(u8::from(b)),
        (V::U(x), ElemType::U8) => out.push(x as u8),
        (V::U(x), ElemType::U16) => out.extend_from_slice(&(x as u16).to_le_bytes()),
        (V::U(x), ElemType::U32) => out.extend_from_slice(&(x as u32).to_le_bytes()),
        (V::U(x), _) => out.extend_from_slice(&x.to_le_bytes()),
        (V::I(x), ElemType::I8) => out.extend_from_slice(&(x as i8).to_le_bytes()),
        (V::I(x), ElemType::I16) => out.extend_from_slice(&(x as i16).to_le_bytes()),
        (V::I(x), ElemType::I32) => out.extend_from_slice(&(x as i32).to_le_bytes()),
        (V::I(x), _) => out.extend_from_slice(&x.to_le_bytes()),
        (V::F(x), ElemType::F32) => out.extend_from_slice(&(x as f32).to_le_bytes()),
        (V::F(x), _) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

/// The bytes with every float NaN replaced by one canonical NaN (payloads are not part of the
/// contract).
fn canonical(bytes: &[u8], t: ElemType) -> Vec<u8> {
    match t {
        ElemType::F64 => bytes
            .chunks(8)
            .flat_map(|c| {
                let x = f64::from_le_bytes(c.try_into().unwrap());
                if x.is_nan() { f64::NAN } else { x }.to_le_bytes()
            })
            .collect(),
        ElemType::F32 => bytes
            .chunks(4)
            .flat_map(|c| {
                let x = f32::from_le_bytes(c.try_into().unwrap());
                if x.is_nan() { f32::NAN } else { x }.to_le_bytes()
            })
            .collect(),
        _ => bytes.to_vec(),
    }
}

/// A random column of `n` elements of `t` as little-endian bytes, and its widened values.
fn column(r: &mut Rng, t: ElemType, n: usize) -> (Vec<u8>, Vec<V>) {
    let mut bytes = Vec::with_capacity(n * t.size());
    let mut vals = Vec::with_capacity(n);
    for _ in 0..n {
        let raw = if r.below(3) == 0 {
            r.next()
        } else {
            r.next() % 256
        };
        let (b, v): (Vec<u8>, V) = match t {
            ElemType::U8 => (vec![raw as u8], V::U(u64::from(raw as u8))),
            ElemType::U16 => (
                (raw as u16).to_le_bytes().to_vec(),
                V::U(u64::from(raw as u16)),
            ),
            ElemType::U32 => (
                (raw as u32).to_le_bytes().to_vec(),
                V::U(u64::from(raw as u32)),
            ),
            ElemType::U64 => (raw.to_le_bytes().to_vec(), V::U(raw)),
            ElemType::I8 => (
                (raw as i8).to_le_bytes().to_vec(),
                V::I(i64::from(raw as i8)),
            ),
            ElemType::I16 => (
                (raw as i16).to_le_bytes().to_vec(),
                V::I(i64::from(raw as i16)),
            ),
            ElemType::I32 => (
                (raw as i32).to_le_bytes().to_vec(),
                V::I(i64::from(raw as i32)),
            ),
            ElemType::I64 => ((raw as i64).to_le_bytes().to_vec(), V::I(raw as i64)),
            ElemType::F32 => {
                let x = (raw as i64 as f32) * 0.01;
                (x.to_le_bytes().to_vec(), V::F(f64::from(x)))
            }
            ElemType::F64 => {
                let x = match r.below(20) {
                    0 => f64::NAN,
                    1 => f64::INFINITY,
                    2 => -0.0,
                    _ => (raw as i64 as f64) * 0.013,
                };
                (x.to_le_bytes().to_vec(), V::F(x))
            }
        };
        bytes.extend_from_slice(&b);
        vals.push(v);
    }
    (bytes, vals)
}

/// `bytes` as a typed slice (the typed copies are leaked: a few KiB per test case).
fn slice(bytes: &[u8], t: ElemType) -> Slice<'_> {
    macro_rules! s {
        ($v:ident, $t:ty) => {
            Slice::$v(Box::leak(
                bytes
                    .chunks(std::mem::size_of::<$t>())
                    .map(|c| <$t>::from_le_bytes(c.try_into().unwrap()))
                    .collect::<Vec<$t>>()
                    .into_boxed_slice(),
            ))
        };
    }
    match t {
        ElemType::U8 => Slice::U8(bytes),
        ElemType::U16 => s!(U16, u16),
        ElemType::U32 => s!(U32, u32),
        ElemType::U64 => s!(U64, u64),
        ElemType::I8 => s!(I8, i8),
        ElemType::I16 => s!(I16, i16),
        ElemType::I32 => s!(I32, i32),
        ElemType::I64 => s!(I64, i64),
        ElemType::F32 => s!(F32, f32),
        ElemType::F64 => s!(F64, f64),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn agent_equals_local_equals_naive(seed in any::<u64>(), n in 0usize..2_500, ncols in 1usize..4) {
        let mut r = Rng(seed);
        let elems: Vec<ElemType> = (0..ncols).map(|_| ElemType::ALL[r.below(10)]).collect();
        let types: Vec<Type> = elems.iter().map(|&t| Type::from(t)).collect();
        let out_ty = TYPES[r.below(TYPES.len())];
        let depth = 1 + r.below(6);
        let expr = random_expr(&mut r, out_ty, &types, depth);
        prop_assert_eq!(expr.type_of(&types), Ok(out_ty));
        let cols: Vec<(Vec<u8>, Vec<V>)> = elems.iter().map(|&t| column(&mut r, t, n)).collect();

        // Naive, row by row.
        let mut want = Vec::new();
        for i in 0..n {
            let row: Vec<V> = cols.iter().map(|c| c.1[i]).collect();
            let (v, t) = naive(&expr, &row, &types);
            store(v, t, &mut want);
        }
        // Local evaluation.
        let slices: Vec<Slice<'_>> = cols.iter().zip(&elems).map(|(c, &t)| slice(&c.0, t)).collect();
        let (ty, local) = eval_slices(&expr, &slices, 2).unwrap();
        prop_assert_eq!(ty, out_ty);
        // The agent, columns chunked differently.
        let ctx = Ctx::new(i64::MAX);
        let inputs: Vec<VecRef> = cols
            .iter()
            .zip(&elems)
            .enumerate()
            .map(|(k, (c, &t))| {
                let per = 100 + 37 * k;
                let chunks = c.0
                    .chunks(per * t.size())
                    .enumerate()
                    .map(|(j, b)| {
                        let id = ((k as u64 + 1) << 32) + j as u64;
                        ctx.put_object(id, b).unwrap();
                        (id, (b.len() / t.size()) as u32)
                    })
                    .collect();
                VecRef { ty: t, chunks }
            })
            .collect();
        let per = 333;
        let out = OutSpec { chunk_elems: per, ids: (1..=(n as u64).div_ceil(u64::from(per))).collect() };
        let args = DeriveArgs { expr: expr.clone(), inputs, out: out.clone() };
        let len = u64::decode(&execute(&ctx, op::VEC_DERIVE, &args.encode()).unwrap()).unwrap();
        prop_assert_eq!(len, n as u64);
        let objs = ctx.objects.lock().unwrap();
        let agent: Vec<u8> = out.ids.iter().flat_map(|id| objs[id].clone()).collect();
        let e = out_ty.elem();
        prop_assert_eq!(canonical(&local, e), canonical(&want, e), "local vs naive: {:?}", expr);
        prop_assert_eq!(canonical(&agent, e), canonical(&local, e), "agent vs local: {:?}", expr);
    }
}
