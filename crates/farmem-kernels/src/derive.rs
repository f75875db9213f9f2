//! Derived vectors: a new vector computed row by row from input vectors by one of the built-in
//! expressions ([`Expr`]), next to the data.
//!
//! The scalar functions here are the single definition of every expression: the kernel uses them,
//! and so do clients that compute the same column themselves (all-local frames, the client-side
//! path), so all of them produce bit-identical columns.
//!
//! ```
//! use farmem_kernels::derive;
//! assert_eq!(derive::hour(3_600 * 25 + 5), 1);
//! assert_eq!(derive::weekday(0), 4); // 1970-01-01 was a Thursday
//! assert_eq!(derive::month(1_456_790_399), 2); // 2016-02-29 23:59:59
//! assert!((derive::haversine_km(0.0, 0.0, 0.0, 1.0) - 111.19).abs() < 0.01);
//! ```

use farmem_proto::agent::{DeriveArgs, Domain, Expr};

use crate::KernelError;
use crate::{BLOCK, ChunkIo, Stream, capacity_hint, with_domain};

/// Great-circle distance in km between `(lon1, lat1)` and `(lon2, lat2)`, in degrees.
pub fn haversine_km(lon1: f64, lat1: f64, lon2: f64, lat2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * a.sqrt().asin()
}

/// Hour of day 0..=23 of seconds since the epoch (UTC).
pub fn hour(t: i64) -> i64 {
    t.rem_euclid(86_400) / 3600
}

/// Day of week, 1 = Monday ..= 7 = Sunday.
pub fn weekday(t: i64) -> i64 {
    // 1970-01-01 was a Thursday (4).
    (t.div_euclid(86_400) + 3).rem_euclid(7) + 1
}

/// Month 1..=12 (proleptic Gregorian calendar, days-from-civil algorithm).
pub fn month(t: i64) -> i64 {
    let z = t.div_euclid(86_400) + 719_468;
    let doe = z - z.div_euclid(146_097) * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    if mp < 10 { mp + 3 } else { mp - 9 }
}

/// Evaluates an integer expression (`Diff`, `Hour`, `Weekday`, `Month`) on one row.
///
/// # Errors
/// [`KernelError::Invalid`] for `Haversine` or the wrong number of arguments.
pub fn eval_i64(expr: Expr, args: &[i64]) -> Result<i64, KernelError> {
    Ok(match (expr, args) {
        (Expr::Diff, &[a, b]) => b.wrapping_sub(a),
        (Expr::Hour, &[t]) => hour(t),
        (Expr::Weekday, &[t]) => weekday(t),
        (Expr::Month, &[t]) => month(t),
        _ => return Err(bad_arity(expr, args.len())),
    })
}

/// Evaluates a float expression (`Haversine`) on one row.
///
/// # Errors
/// [`KernelError::Invalid`] for an integer expression or the wrong number of arguments.
pub fn eval_f64(expr: Expr, args: &[f64]) -> Result<f64, KernelError> {
    match (expr, args) {
        (Expr::Haversine, &[a, b, c, d]) => Ok(haversine_km(a, b, c, d)),
        _ => Err(bad_arity(expr, args.len())),
    }
}

/// Appends `expr` over rows `0..n` of signed input columns to `out` as the output type's
/// little-endian bytes: the loops the kernel runs, for clients that compute a derived column
/// themselves (identical values).
///
/// # Errors
/// [`KernelError::Invalid`] for a float expression or the wrong number of inputs.
pub fn eval_block_i64(expr: Expr, cols: &[&[i64]], out: &mut Vec<u8>) -> Result<(), KernelError> {
    i64::push_block(expr, cols, out)
}

/// Like [`eval_block_i64`] for float inputs (`Haversine`).
///
/// # Errors
/// [`KernelError::Invalid`] for an integer expression or the wrong number of inputs.
pub fn eval_block_f64(expr: Expr, cols: &[&[f64]], out: &mut Vec<u8>) -> Result<(), KernelError> {
    f64::push_block(expr, cols, out)
}

/// [`eval_block_i64`] over whole local columns on up to `threads` threads: each thread computes
/// a run of at least 2^18 rows, and the runs are concatenated in order, so the bytes are the same
/// as one thread's. The all-local frame placement derives its columns with it, with the same
/// parallelism as [`derive_parallel`] on the server.
///
/// # Errors
/// As [`eval_block_i64`], plus [`KernelError::Invalid`] for inputs of different lengths.
///
/// ```
/// use farmem_proto::agent::Expr;
/// use farmem_kernels::derive;
/// let t: Vec<i64> = (0..1_000_000).map(|i| i * 97).collect();
/// let mut one = Vec::new();
/// derive::eval_block_i64(Expr::Hour, &[&t], &mut one).unwrap();
/// assert_eq!(derive::eval_columns_i64(Expr::Hour, &[&t], 4).unwrap(), one);
/// ```
pub fn eval_columns_i64(
    expr: Expr,
    cols: &[&[i64]],
    threads: usize,
) -> Result<Vec<u8>, KernelError> {
    eval_columns(expr, cols, threads)
}

/// [`eval_columns_i64`] for float inputs (`Haversine`).
///
/// # Errors
/// As [`eval_block_f64`], plus [`KernelError::Invalid`] for inputs of different lengths.
pub fn eval_columns_f64(
    expr: Expr,
    cols: &[&[f64]],
    threads: usize,
) -> Result<Vec<u8>, KernelError> {
    eval_columns(expr, cols, threads)
}

fn eval_columns<R: Row + Sync>(
    expr: Expr,
    cols: &[&[R]],
    threads: usize,
) -> Result<Vec<u8>, KernelError> {
    let len = cols.first().map_or(0, |c| c.len());
    if let Some(c) = cols.iter().find(|c| c.len() != len) {
        return Err(KernelError::Invalid(format!(
            "{expr:?} inputs of {len} and {} elements",
            c.len()
        )));
    }
    let runs = crate::split_rows(len as u64, threads);
    let parts = crate::on_threads(&runs, |r| {
        let part: Vec<&[R]> = cols
            .iter()
            .map(|c| &c[r.start as usize..r.end as usize])
            .collect();
        let mut out = Vec::new();
        R::push_block(expr, &part, &mut out)?;
        Ok(out)
    })?;
    if let [_] = parts.as_slice() {
        return Ok(parts.into_iter().next().unwrap_or_default());
    }
    Ok(parts.concat())
}

fn bad_arity(expr: Expr, n: usize) -> KernelError {
    KernelError::Invalid(format!(
        "{expr:?} takes {} {:?} inputs, got {n}",
        expr.arity(),
        expr.input_domain()
    ))
}

/// Computes `args.expr` over the inputs and writes the result into `args.out`; returns its
/// length.
///
/// # Errors
/// [`KernelError::Invalid`] for the wrong number of inputs, inputs in the wrong domain or of
/// different lengths, or a bad [`farmem_proto::agent::OutSpec`]; [`KernelError::NotFound`] for a
/// missing chunk; [`KernelError::OutOfCapacity`].
pub fn derive<I: ChunkIo + ?Sized>(io: &I, args: &DeriveArgs) -> Result<u64, KernelError> {
    let (len, per) = check(args)?;
    derive_rows(io, args, per, 0..len)?;
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
    let (len, per) = check(args)?;
    let out_chunks = len.div_ceil(per as u64);
    let parts = (threads as u64)
        .min(len / ROWS_PER_THREAD)
        .clamp(1, out_chunks.max(1));
    if parts <= 1 {
        derive_rows(io, args, per, 0..len)?;
        return Ok(len);
    }
    // Part `p` computes output chunks `p * each ..`, i.e. rows `p * each * per ..`.
    let each = out_chunks.div_ceil(parts);
    let results: Vec<Result<(), KernelError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..parts)
            .map(|p| {
                let lo = (p * each * per as u64).min(len);
                let hi = ((p + 1) * each * per as u64).min(len);
                s.spawn(move || derive_rows(io, args, per, lo..hi))
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

/// Checks `args`; returns the row count and the output chunk length.
fn check(args: &DeriveArgs) -> Result<(u64, usize), KernelError> {
    let expr = args.expr;
    if args.inputs.len() != expr.arity() {
        return Err(bad_arity(expr, args.inputs.len()));
    }
    let len = args.inputs.first().map_or(0, |v| v.len());
    for v in &args.inputs {
        if v.ty.domain() != expr.input_domain() {
            return Err(KernelError::Invalid(format!(
                "{expr:?} needs {:?} inputs, got {:?}",
                expr.input_domain(),
                v.ty
            )));
        }
        if v.len() != len {
            return Err(KernelError::Invalid(format!(
                "{expr:?} inputs of {len} and {} elements",
                v.len()
            )));
        }
    }
    let per = args.out.chunk_elems as usize;
    if len == 0 {
        return Ok((0, per.max(1)));
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
    Ok((len, per))
}

/// Computes rows `rows` (starting on an output chunk boundary) and writes their output chunks.
fn derive_rows<I: ChunkIo + ?Sized>(
    io: &I,
    args: &DeriveArgs,
    per: usize,
    rows: std::ops::Range<u64>,
) -> Result<(), KernelError> {
    let expr = args.expr;
    let out_size = expr.out_type().size();
    let mut streams: Vec<Stream<'_>> = args
        .inputs
        .iter()
        .map(|v| Stream::at(v, rows.start))
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
    with_domain!(expr.input_domain(), W => {
        let mut cols: Vec<Vec<W>> = vec![Vec::new(); streams.len()];
        while left > 0 {
            let room = per - chunk.len() / out_size;
            let n = room.min(BLOCK).min(left);
            for (s, c) in streams.iter_mut().zip(&mut cols) {
                s.next::<W, I>(io, n, c)?;
                if c.len() != n {
                    return Err(KernelError::Invalid("input shorter than its chunk list".into()));
                }
            }
            let refs: Vec<&[W]> = cols.iter().map(Vec::as_slice).collect();
            W::push_block(expr, &refs, &mut chunk)?;
            left -= n;
            if chunk.len() / out_size == per || left == 0 {
                let id = next_id.next().ok_or_else(|| KernelError::Invalid("output ids".into()))?;
                io.write(*id, &chunk)?;
                chunk.clear();
            }
        }
    });
    Ok(())
}

/// Inputs of one domain, evaluated block by block (one tight loop per expression) to the
/// output's little-endian bytes.
trait Row: Copy {
    /// Appends `expr` of rows `0..cols[0].len()` to `out`; `cols` has the expression's arity.
    fn push_block(expr: Expr, cols: &[&[Self]], out: &mut Vec<u8>) -> Result<(), KernelError>;
}

impl Row for i64 {
    fn push_block(expr: Expr, cols: &[&[i64]], out: &mut Vec<u8>) -> Result<(), KernelError> {
        match (expr, cols) {
            (Expr::Diff, [a, b]) => {
                for (a, b) in a.iter().zip(b.iter()) {
                    out.extend_from_slice(&b.wrapping_sub(*a).to_le_bytes());
                }
            }
            (Expr::Hour, [t]) => out.extend(t.iter().map(|&t| hour(t) as u8)),
            (Expr::Weekday, [t]) => out.extend(t.iter().map(|&t| weekday(t) as u8)),
            (Expr::Month, [t]) => out.extend(t.iter().map(|&t| month(t) as u8)),
            _ => return Err(bad_arity(expr, cols.len())),
        }
        Ok(())
    }
}

impl Row for f64 {
    fn push_block(expr: Expr, cols: &[&[f64]], out: &mut Vec<u8>) -> Result<(), KernelError> {
        match (expr, cols) {
            (Expr::Haversine, [a, b, c, d]) => {
                for i in 0..a.len().min(b.len()).min(c.len()).min(d.len()) {
                    out.extend_from_slice(&haversine_km(a[i], b[i], c[i], d[i]).to_le_bytes());
                }
            }
            _ => return Err(bad_arity(expr, cols.len())),
        }
        Ok(())
    }
}

impl Row for u64 {
    fn push_block(expr: Expr, _: &[&[u64]], _: &mut Vec<u8>) -> Result<(), KernelError> {
        Err(KernelError::Invalid(format!(
            "{expr:?} takes no {:?} inputs",
            Domain::Unsigned
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::Mem;
    use farmem_proto::agent::{ElemType, OutSpec, VecRef};

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
    fn calendar_functions_match_known_dates() {
        // 2016-01-01 00:00:00 was a Friday.
        let t = 1_451_606_400;
        assert_eq!((hour(t), weekday(t), month(t)), (0, 5, 1));
        assert_eq!(month(t - 1), 12);
        assert_eq!(weekday(-1), 3);
        assert_eq!(hour(-1), 23);
        // 2000-02-29 12:00:00 and 2100-03-01.
        assert_eq!(month(951_825_600), 2);
        assert_eq!(month(4_107_542_400), 3);
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
            expr: Expr::Diff,
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
                expr: Expr::Month,
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
                expr: Expr::Haversine,
                inputs: vec![f.clone(), f.clone(), f.clone(), f.clone()],
                out: o.clone(),
            },
        )
        .unwrap();
        assert_eq!(m.read_vec(&o, n, 8), vec![0u8; 8000]);

        // Bad input: wrong arity, wrong domain, different lengths, too few ids.
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
                Err(KernelError::Invalid(_))
            )
        };
        assert!(bad(Expr::Diff, vec![a.clone()], out(5000, 20, 64)));
        assert!(bad(Expr::Hour, vec![f.clone()], out(5000, 20, 64)));
        let short = m.vec(
            ElemType::I64,
            &le(&start[..999], i64::to_le_bytes),
            64,
            6000,
        );
        assert!(bad(Expr::Diff, vec![a.clone(), short], out(5000, 20, 64)));
        assert!(bad(Expr::Hour, vec![a.clone()], out(5000, 1, 64)));
        assert!(bad(Expr::Hour, vec![a], out(5000, 1, 0)));
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
                    expr: Expr::Diff,
                    inputs: vec![huge.clone(), huge],
                    out: out(7000, 4, u32::MAX),
                }
            )
            .is_err()
        );
    }
}
