//! Gather by index.

#[allow(unused_imports)]
use crate::*;

/// Writes `out[i] = src[idx[i]]` into `args.out`; returns its length.
///
/// # Errors
/// [`KernelError::TypeMismatch`] when `idx` is not `u64`, [`KernelError::IndexOutOfBounds`] when an
/// index is out of bounds (nothing written then), plus those of [`filter`].
pub fn gather<I: ChunkIo + ?Sized>(io: &I, args: &GatherArgs) -> Result<u64, KernelError> {
    let idx = read_u64s(io, &args.idx)?;
    let size = args.src.ty.size();
    let len = args.src.len();
    // Start index of each source chunk.
    let starts: Vec<u64> = args
        .src
        .chunks
        .iter()
        .scan(0u64, |s, &(_, n)| {
            let st = *s;
            *s += u64::from(n);
            Some(st)
        })
        .collect();
    // Bucket the requests by source chunk, so every chunk is read once.
    let mut by_chunk: Vec<Vec<(u32, usize)>> = vec![Vec::new(); args.src.chunks.len()];
    for (i, &x) in idx.iter().enumerate() {
        if x >= len {
            return Err(KernelError::IndexOutOfBounds { index: x, len });
        }
        let c = starts.partition_point(|&s| s <= x) - 1;
        by_chunk[c].push(((x - starts[c]) as u32, i));
    }
    let mut out = vec![0u8; idx.len() * size];
    for (c, reqs) in by_chunk.iter().enumerate() {
        if reqs.is_empty() {
            continue;
        }
        let one = VecRef {
            ty: args.src.ty,
            chunks: vec![args.src.chunks[c]],
        };
        for_each_chunk(io, &one, |bytes| {
            for &(off, i) in reqs {
                let off = off as usize * size;
                out[i * size..(i + 1) * size].copy_from_slice(&bytes[off..off + size]);
            }
            Ok(())
        })?;
    }
    write_out(io, &args.out, size, &out)
}
