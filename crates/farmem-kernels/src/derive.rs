//! Derived vectors: a new vector computed from input vectors by a row expression
//! ([`farmem_proto::expr::Expr`]), next to the data, evaluated by [`crate::expr::Program`].

use farmem_proto::agent::{DeriveArgs, Domain};

use crate::KernelError;
use crate::expr::{Lane, LaneRef, Program};
use crate::{BLOCK, ChunkIo, Stream, capacity_hint};

/// Computes `args.expr` over the inputs and writes the result into `args.out`; returns its
/// length.
///
/// # Errors
/// [`KernelError::Invalid`] for the wrong number of inputs, inputs in the wrong domain or of
/// different lengths, or a bad [`farmem_proto::agent::OutSpec`]; [`KernelError::NotFound`] for a
/// missing chunk; [`KernelError::OutOfCapacity`].
pub fn derive<I: ChunkIo + ?Sized>(io: &I, args: &DeriveArgs) -> Result<u64, KernelError> {
    let (prog, len, per) = check(args)?;
    derive_rows(io, args, &prog, per, 0..len)?;
    Ok(len)
}

/// Rows each thread of [`derive_parallel`] gets at least.
const ROWS_PER_THREAD: u64 = 1 << 18;

/// [`derive()`] on up to `threads` threads, each computing a run of whole output chunks (the rows
/// are independent, so the result is the same). Small inputs use one thread.
///
/// # Errors
/// As [`derive()`]; when several parts fail, the first part's error.
pub fn derive_parallel<I: ChunkIo + Sync + ?Sized>(
    io: &I,
    args: &DeriveArgs,
    threads: usize,
) -> Result<u64, KernelError> {
    let (prog, len, per) = check(args)?;
    let out_chunks = len.div_ceil(per as u64);
    let parts = (threads as u64)
        .min(len / ROWS_PER_THREAD)
        .clamp(1, out_chunks.max(1));
    if parts <= 1 {
        derive_rows(io, args, &prog, per, 0..len)?;
        return Ok(len);
    }
    // Part `p` computes output chunks `p * each ..`, i.e. rows `p * each * per ..`.
    let each = out_chunks.div_ceil(parts);
    let results: Vec<Result<(), KernelError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..parts)
            .map(|p| {
                let lo = (p * each * per as u64).min(len);
                let hi = ((p + 1) * each * per as u64).min(len);
                {
                    let prog = &prog;
                    s.spawn(move || derive_rows(io, args, prog, per, lo..hi))
                }
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(KernelError::Invalid("a derive thread panicked".into()))
                })
            })
            .collect()
    });
    results.into_iter().collect::<Result<(), _>>()?;
    Ok(len)
}

/// Checks `args`; returns the program, the row count and the output chunk length.
fn check(args: &DeriveArgs) -> Result<(Program, u64, usize), KernelError> {
    let types: Vec<_> = args.inputs.iter().map(|v| v.ty).collect();
    let prog = Program::new(&args.expr, &types)?;
    let len = args.inputs.first().map_or(0, |v| v.len());
    if let Some(v) = args.inputs.iter().find(|v| v.len() != len) {
        return Err(KernelError::Invalid(format!(
            "derive inputs of {len} and {} elements",
            v.len()
        )));
    }
    let per = args.out.chunk_elems as usize;
    if len == 0 {
        return Ok((prog, 0, per.max(1)));
    }
    if per == 0 {
        return Err(KernelError::Invalid("output chunk_elems is 0".into()));
    }
    let need = usize::try_from(len)
        .map_err(|_| KernelError::Invalid("result too long".into()))?
        .div_ceil(per);
    if args.out.ids.len() < need {
        return Err(KernelError::Invalid(format!(
            "result of {len} elements needs {need} output ids, {} given",
            args.out.ids.len()
        )));
    }
    Ok((prog, len, per))
}

/// Reads the next `n` rows of every input, widened, into `lanes`.
fn read_inputs<I: ChunkIo + ?Sized>(
    io: &I,
    streams: &mut [Stream<'_>],
    lanes: &mut [Lane],
    n: usize,
) -> Result<(), KernelError> {
    for (s, l) in streams.iter_mut().zip(lanes.iter_mut()) {
        let got = match l {
            Lane::U(v) => {
                s.next::<u64, I>(io, n, v)?;
                v.len()
            }
            Lane::I(v) => {
                s.next::<i64, I>(io, n, v)?;
                v.len()
            }
            Lane::F(v) => {
                s.next::<f64, I>(io, n, v)?;
                v.len()
            }
            Lane::B(_) => 0,
        };
        if got != n {
            return Err(KernelError::Invalid(
                "input shorter than its chunk list".into(),
            ));
        }
    }
    Ok(())
}

/// Computes rows `rows` (starting on an output chunk boundary) and writes their output chunks.
fn derive_rows<I: ChunkIo + ?Sized>(
    io: &I,
    args: &DeriveArgs,
    prog: &Program,
    per: usize,
    rows: std::ops::Range<u64>,
) -> Result<(), KernelError> {
    let out_size = prog.out_type().elem().size();
    let mut streams: Vec<Stream<'_>> = args
        .inputs
        .iter()
        .map(|v| Stream::at(v, rows.start))
        .collect();
    let mut lanes: Vec<Lane> = args
        .inputs
        .iter()
        .map(|v| match v.ty.domain() {
            Domain::Unsigned => Lane::U(Vec::new()),
            Domain::Signed => Lane::I(Vec::new()),
            Domain::Float => Lane::F(Vec::new()),
        })
        .collect();
    // One output chunk at a time, filled in blocks.
    // `per` and `len` are the client's: reserve one block, the chunk grows as data arrives.
    let mut left = usize::try_from(rows.end - rows.start)
        .map_err(|_| KernelError::Invalid("result too long".into()))?;
    let mut chunk: Vec<u8> =
        Vec::with_capacity(capacity_hint(per.min(BLOCK) as u64).min(left) * out_size);
    let first = usize::try_from(rows.start / per as u64)
        .map_err(|_| KernelError::Invalid("result too long".into()))?;
    let mut next_id = args.out.ids.iter().skip(first);
    while left > 0 {
        let room = per - chunk.len() / out_size;
        let n = room.min(BLOCK).min(left);
        read_inputs(io, &mut streams, &mut lanes, n)?;
        let refs: Vec<LaneRef<'_>> = lanes.iter().map(Lane::as_ref).collect();
        prog.eval_block(&refs, n, &mut chunk)?;
        left -= n;
        if chunk.len() / out_size == per || left == 0 {
            let id = next_id
                .next()
                .ok_or_else(|| KernelError::Invalid("output ids".into()))?;
            io.write(*id, &chunk)?;
            chunk.clear();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::calendar::month;
    use crate::tests::Mem;
    use farmem_proto::agent::{ElemType, OutSpec, VecRef};
    use farmem_proto::expr::{Expr, Type};

    fn le<T: Copy, const N: usize>(xs: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        xs.iter().flat_map(|&x| f(x)).collect()
    }

    fn out(base: u64, n: usize, per: u32) -> OutSpec {
        OutSpec {
            chunk_elems: per,
            ids: (base..base + n as u64).collect(),
        }
    }

    #[test]
    fn derive_across_different_chunkings() {
        let m = Mem::default();
        let start: Vec<i64> = (0..1000).map(|i| 1_451_606_400 + i * 9_973).collect();
        let end: Vec<i64> = start.iter().map(|&t| t + (t % 977)).collect();
        let a = m.vec(ElemType::I64, &le(&start, i64::to_le_bytes), 64, 1);
        let b = m.vec(ElemType::I64, &le(&end, i64::to_le_bytes), 100, 100);
        let o = out(1000, 100, 70);
        let args = DeriveArgs {
            expr: Expr::col(1).sub(Expr::col(0)),
            inputs: vec![a.clone(), b.clone()],
            out: o.clone(),
        };
        let n = derive(&m, &args).unwrap();
        let want: Vec<i64> = start.iter().zip(&end).map(|(s, e)| e - s).collect();
        assert_eq!(m.read_vec(&o, n, 8), le(&want, i64::to_le_bytes));

        let o = out(2000, 10, 128);
        let n = derive(
            &m,
            &DeriveArgs {
                expr: Expr::col(0).month().cast(Type::U8),
                inputs: vec![a.clone()],
                out: o.clone(),
            },
        )
        .unwrap();
        let want: Vec<u8> = start.iter().map(|&t| month(t) as u8).collect();
        assert_eq!(m.read_vec(&o, n, 1), want);

        let pts: Vec<f64> = (0..1000).map(|i| f64::from(i) * 0.01 - 5.0).collect();
        let f = m.vec(ElemType::F64, &le(&pts, f64::to_le_bytes), 33, 3000);
        let o = out(4000, 20, 64);
        let n = derive(
            &m,
            &DeriveArgs {
                expr: Expr::col(0)
                    .sub(Expr::col(1))
                    .add(Expr::col(2).sub(Expr::col(3))),
                inputs: vec![f.clone(), f.clone(), f.clone(), f.clone()],
                out: o.clone(),
            },
        )
        .unwrap();
        assert_eq!(m.read_vec(&o, n, 8), vec![0u8; 8000]);

        // Bad input: wrong arity, wrong domain, different lengths, too few ids.
        let diff = || Expr::col(1).sub(Expr::col(0));
        let hour = || Expr::col(0).hour();
        let bad = |expr, inputs: Vec<VecRef>, o: OutSpec| {
            matches!(
                derive(
                    &m,
                    &DeriveArgs {
                        expr,
                        inputs,
                        out: o
                    }
                ),
                Err(KernelError::Invalid(_) | KernelError::Expr(_))
            )
        };
        assert!(bad(diff(), vec![a.clone()], out(5000, 20, 64)));
        assert!(bad(hour(), vec![f.clone()], out(5000, 20, 64)));
        let short = m.vec(
            ElemType::I64,
            &le(&start[..999], i64::to_le_bytes),
            64,
            6000,
        );
        assert!(bad(diff(), vec![a.clone(), short], out(5000, 20, 64)));
        assert!(bad(hour(), vec![a.clone()], out(5000, 1, 64)));
        assert!(bad(hour(), vec![a], out(5000, 1, 0)));
        // A declared length far beyond the data (u32::MAX-element chunks and output chunks of
        // 8-byte values: 32 GiB) is an error when the data runs out, not an up-front
        // allocation that aborts the server.
        let huge = VecRef {
            ty: ElemType::I64,
            chunks: vec![(1, u32::MAX); 4],
        };
        assert!(
            derive(
                &m,
                &DeriveArgs {
                    expr: diff(),
                    inputs: vec![huge.clone(), huge],
                    out: out(7000, 4, u32::MAX),
                }
            )
            .is_err()
        );
    }
}
