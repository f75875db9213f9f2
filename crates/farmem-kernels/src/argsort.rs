//! Stable argsort.

#[allow(unused_imports)]
use crate::*;

/// Writes the stable ascending sorting permutation of `args.vec` (as `u64` indices) into
/// `args.out`; returns its length.
///
/// # Errors
/// Those of [`filter`].
pub fn argsort<I: ChunkIo + ?Sized>(io: &I, args: &ArgsortArgs) -> Result<u64, KernelError> {
    let perm: Vec<u64> = with_domain!(args.vec.ty.domain(), W => {
        let mut vals: Vec<W> = Vec::with_capacity(capacity_hint(args.vec.len()));
        for_each_elem::<W, I>(io, &args.vec, |x| vals.push(x))?;
        let mut perm: Vec<u64> = (0..vals.len() as u64).collect();
        perm.sort_by(|&a, &b| vals[a as usize].total(&vals[b as usize]));
        perm
    });
    let bytes: Vec<u8> = perm.iter().flat_map(|i| i.to_le_bytes()).collect();
    write_out(io, &args.out, 8, &bytes)
}
