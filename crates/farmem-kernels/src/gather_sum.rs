//! Segmented sums of gathered values: the pull step of a sparse matrix-vector product with
//! unit weights (PageRank's `next[v] = base + d * sum of contrib[u] over v's in-edges`).

#[allow(unused_imports)]
use crate::*;

use farmem_proto::agent::GatherSumArgs;

/// Writes `out[v] = shift + scale * sum(values[idx[e]] for e in offsets[v]..offsets[v + 1])`
/// into `args.out` (each sum from `0.0`, left to right); returns its length. `idx` is read chunk
/// by chunk; `values` and `offsets` are read whole.
///
/// # Errors
/// [`KernelError::TypeMismatch`] unless `values` is `f64`, `idx` `u32` and `offsets` `u64`;
/// [`KernelError::Invalid`] for offsets that decrease or end past `idx`;
/// [`KernelError::IndexOutOfBounds`] for an index past `values` (nothing written then), plus
/// those of reading and writing chunks.
pub fn gather_sum<I: ChunkIo + ?Sized>(io: &I, args: &GatherSumArgs) -> Result<u64, KernelError> {
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
    let segments = offsets.len().saturating_sub(1);
    let mut out = Vec::with_capacity(segments * 8);
    // The segment being summed, its running sum, and the global position of the chunk's first
    // index.
    let (mut v, mut sum, mut pos) = (0usize, 0.0f64, 0u64);
    let len = values.len() as u64;
    for_each_chunk(io, &args.idx, |bytes| {
        let n = (bytes.len() / 4) as u64;
        while v < segments {
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
    // Segments past the last index (empty ones at the end).
    while v < segments {
        out.extend_from_slice(&(args.shift + args.scale * sum).to_le_bytes());
        (v, sum) = (v + 1, 0.0);
    }
    write_out(io, &args.out, 8, &out)
}
