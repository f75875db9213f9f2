//! Segmented sums of gathered values: the pull step of a sparse matrix-vector product with
//! unit weights (PageRank's `next[v] = base + d * sum of contrib[u] over v's in-edges`).

use std::ops::Range;

#[allow(unused_imports)]
use crate::*;

use farmem_proto::agent::GatherSumArgs;

/// Edges one thread of [`gather_sum_parallel`] gets at least.
const EDGES_PER_THREAD: u64 = 1 << 20;

/// Writes `out[v] = shift + scale * sum(values[idx[e]] for e in offsets[v]..offsets[v + 1])`
/// into `args.out` (each sum from `0.0`, left to right); returns its length. `idx` is read chunk
/// by chunk; `values` and `offsets` are read whole.
///
/// # Errors
/// [`KernelError::TypeMismatch`] unless `values` is `f64`, `idx` `u32` and `offsets` `u64`;
/// [`KernelError::Invalid`] for offsets that decrease or end past `idx`, or a bad
/// [`farmem_proto::agent::OutSpec`]; [`KernelError::IndexOutOfBounds`] for an index past
/// `values` (nothing written then), plus those of reading and writing chunks.
pub fn gather_sum<I: ChunkIo + ?Sized>(io: &I, args: &GatherSumArgs) -> Result<u64, KernelError> {
    let (offsets, values) = prepare(io, args)?;
    let segments = offsets.len().saturating_sub(1);
    let sums = sum_segments(io, args, &offsets, &values, 0..segments)?;
    write_out(io, &args.out, 8, &sums)
}

/// [`gather_sum`] on up to `threads` threads, each summing a run of whole output chunks with
/// about as many edges as the others. Every segment is still summed from `0.0`, left to right,
/// so the result is bit-identical to [`gather_sum`]'s; nothing is written unless every run
/// succeeds. Fewer than about a million edges per thread use fewer threads.
///
/// # Errors
/// As [`gather_sum`]; when several runs fail, the first run's error.
pub fn gather_sum_parallel<I: ChunkIo + Sync + ?Sized>(
    io: &I,
    args: &GatherSumArgs,
    threads: usize,
) -> Result<u64, KernelError> {
    split_sums(io, args, threads, EDGES_PER_THREAD)
}

/// [`gather_sum_parallel`] with at least `min_edges` edges per thread.
fn split_sums<I: ChunkIo + Sync + ?Sized>(
    io: &I,
    args: &GatherSumArgs,
    threads: usize,
    min_edges: u64,
) -> Result<u64, KernelError> {
    let (offsets, values) = prepare(io, args)?;
    let segments = offsets.len().saturating_sub(1);
    let per = args.out.chunk_elems as usize;
    let edges = offsets.last().map_or(0, |&l| l - offsets[0]);
    let parts = (threads as u64).min(edges / min_edges.max(1)).max(1) as usize;
    if parts <= 1 || per == 0 {
        let sums = sum_segments(io, args, &offsets, &values, 0..segments)?;
        return write_out(io, &args.out, 8, &sums);
    }
    let runs = split_segments(&offsets, parts, per);
    let spans: Vec<Range<u64>> = runs.iter().map(|r| r.start as u64..r.end as u64).collect();
    let sums = on_threads(&spans, |r| {
        sum_segments(
            io,
            args,
            &offsets,
            &values,
            r.start as usize..r.end as usize,
        )
    })?;
    // Runs start on output-chunk boundaries, so each run's sums are whole chunks of the result
    // (but the last).
    let need = segments.div_ceil(per);
    if args.out.ids.len() < need {
        return Err(KernelError::Invalid(format!(
            "result of {segments} elements needs {need} output ids, {} given",
            args.out.ids.len()
        )));
    }
    for (r, part) in runs.iter().zip(&sums) {
        let ids = &args.out.ids[r.start / per..];
        for (id, chunk) in ids.iter().zip(part.chunks(per * 8)) {
            io.write(*id, chunk)?;
        }
    }
    Ok(segments as u64)
}

/// Checks the types and the offsets; returns the offsets and the values, read whole.
fn prepare<I: ChunkIo + ?Sized>(
    io: &I,
    args: &GatherSumArgs,
) -> Result<(Vec<u64>, Vec<f64>), KernelError> {
    for (name, v, ty) in [
        ("values", &args.values, ElemType::F64),
        ("indices", &args.idx, ElemType::U32),
        ("offsets", &args.offsets, ElemType::U64),
    ] {
        if v.ty != ty {
            return Err(KernelError::TypeMismatch(format!(
                "{name} must be {ty:?}, not {:?}",
                v.ty
            )));
        }
    }
    let offsets = read_u64s(io, &args.offsets)?;
    let edges = args.idx.len();
    if offsets.windows(2).any(|w| w[0] > w[1]) || offsets.last().is_some_and(|&l| l > edges) {
        return Err(KernelError::Invalid(format!(
            "segment offsets must be non-decreasing and end within the {edges} indices"
        )));
    }
    let mut values = Vec::with_capacity(capacity_hint(args.values.len()));
    for_each_chunk(io, &args.values, |bytes| {
        values.extend(
            bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or_default())),
        );
        Ok(())
    })?;
    Ok((offsets, values))
}

/// Segments `0..offsets.len() - 1` cut into at most `parts` runs that start on multiples of
/// `per` (an output chunk's length) and hold about as many edges each.
fn split_segments(offsets: &[u64], parts: usize, per: usize) -> Vec<Range<usize>> {
    let segments = offsets.len().saturating_sub(1);
    let (first, last) = (offsets[0], offsets[segments]);
    let mut bounds = vec![0];
    for p in 1..parts {
        let target = first + (last - first) * p as u64 / parts as u64;
        // The first segment starting at or past the target, rounded down to a chunk start.
        let at = offsets[..segments].partition_point(|&o| o < target) / per * per;
        if at > *bounds.last().unwrap_or(&0) && at < segments {
            bounds.push(at);
        }
    }
    bounds.push(segments);
    bounds.windows(2).map(|w| w[0]..w[1]).collect()
}

/// The little-endian `f64` bytes of `shift + scale * sum` for every segment in `segs`, reading
/// only the index chunks their edges lie in.
fn sum_segments<I: ChunkIo + ?Sized>(
    io: &I,
    args: &GatherSumArgs,
    offsets: &[u64],
    values: &[f64],
    segs: Range<usize>,
) -> Result<Vec<u8>, KernelError> {
    let mut out = Vec::with_capacity(segs.len() * 8);
    if segs.is_empty() {
        return Ok(out);
    }
    let (lo_edge, hi_edge) = (offsets[segs.start], offsets[segs.end]);
    // The chunks holding edges `lo_edge..hi_edge`, and the global position of the first's first
    // index.
    let mut pos = 0u64;
    let mut first = args.idx.chunks.len();
    for (c, &(_, count)) in args.idx.chunks.iter().enumerate() {
        if pos + u64::from(count) > lo_edge {
            first = c;
            break;
        }
        pos += u64::from(count);
    }
    let mut end = first;
    let mut reach = pos;
    while end < args.idx.chunks.len() && reach < hi_edge {
        reach += u64::from(args.idx.chunks[end].1);
        end += 1;
    }
    // The segment being summed and its running sum.
    let (mut v, mut sum) = (segs.start, 0.0f64);
    let len = values.len() as u64;
    let within = VecRef {
        ty: args.idx.ty,
        chunks: args.idx.chunks[first..end].to_vec(),
    };
    for_each_chunk(io, &within, |bytes| {
        let n = (bytes.len() / 4) as u64;
        while v < segs.end {
            let (lo, hi) = (offsets[v].max(pos), offsets[v + 1]);
            let end = hi.min(pos + n);
            if lo < end {
                let run = &bytes[(lo - pos) as usize * 4..(end - pos) as usize * 4];
                // A local accumulator stays in a register (the captured one would be stored
                // back at every index).
                let mut s = sum;
                for b in run.chunks_exact(4) {
                    let u = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    s += *values
                        .get(u as usize)
                        .ok_or_else(|| KernelError::IndexOutOfBounds {
                            index: u64::from(u),
                            len,
                        })?;
                }
                sum = s;
            }
            if hi > pos + n {
                break;
            }
            out.extend_from_slice(&(args.shift + args.scale * sum).to_le_bytes());
            (v, sum) = (v + 1, 0.0);
        }
        pos += n;
        Ok(())
    })?;
    // Segments past the last index read (empty ones).
    while v < segs.end {
        out.extend_from_slice(&(args.shift + args.scale * sum).to_le_bytes());
        (v, sum) = (v + 1, 0.0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
