//! Distinct values.

#[allow(unused_imports)]
use crate::*;

/// The distinct values of `args.vec`, ascending in the total order.
///
/// # Errors
/// [`KernelError::TooManyGroups`] when there are more than `args.limit` of them, plus those of
/// [`aggregate`].
pub fn unique<I: ChunkIo + ?Sized>(io: &I, args: &UniqueArgs) -> Result<UniqueResult, KernelError> {
    let mut seen: std::collections::HashSet<u64, std::hash::BuildHasherDefault<KeyHasher>> =
        std::collections::HashSet::default();
    // Small keys in a direct table (see `DENSE_KEYS`), the rest in the set.
    let mut dense = [false; DENSE_KEYS];
    let mut distinct = 0usize;
    with_domain!(args.vec.ty.domain(), W => {
        for_each_elem::<W, I>(io, &args.vec, |x| {
            let new = match usize::try_from(x.key()) {
                Ok(k) if k < DENSE_KEYS => !std::mem::replace(&mut dense[k], true),
                _ => distinct <= args.limit as usize && seen.insert(x.key()),
            };
            distinct += usize::from(new);
        })?;
        if distinct > args.limit as usize {
            return Err(KernelError::TooManyGroups { limit: args.limit });
        }
        let small = (0..DENSE_KEYS).filter(|&k| dense[k]).map(|k| k as u64);
        let mut vals: Vec<W> = seen.into_iter().chain(small).map(W::from_key).collect();
        vals.sort_by(W::total);
        Ok(UniqueResult {
            ty: args.vec.ty,
            values: vals.into_iter().map(W::scalar).collect(),
        })
    })
}
