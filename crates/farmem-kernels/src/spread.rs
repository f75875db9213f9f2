//! Kernels for vector operations spread over several servers: chunks read from an offset,
//! filters numbering rows globally, per-group rank counts for exact medians, and merging the
//! answers of the parts.

#[allow(unused_imports)]
use crate::*;

use farmem_proto::agent::{
    FilterRowsArgs, GroupRankArgs, GroupRankResult, RankAnswer, SlicedArgs, U64List, order_key,
};

/// A [`ChunkIo`] where some chunk names (virtual ids) read another object from a byte offset
/// on ([`farmem_proto::agent::op::VEC_SLICED`]); every other id goes to the inner io.
#[derive(Debug)]
pub struct SlicedIo<'a, I: ?Sized> {
    inner: &'a I,
    slices: HashMap<u64, (u64, usize)>,
}

impl<'a, I: ChunkIo + ?Sized> SlicedIo<'a, I> {
    /// The io of `args.slices` over `inner`.
    ///
    /// # Errors
    /// [`KernelError::Invalid`] for a nested sliced operation or an offset beyond memory.
    pub fn new(inner: &'a I, args: &SlicedArgs) -> Result<Self, KernelError> {
        if args.op == farmem_proto::agent::op::VEC_SLICED {
            return Err(KernelError::Invalid("nested sliced operation".into()));
        }
        let slices = args
            .slices
            .iter()
            .map(|&(v, id, off)| {
                let off = usize::try_from(off)
                    .map_err(|_| KernelError::Invalid(format!("slice offset {off}")))?;
                Ok((v, (id, off)))
            })
            .collect::<Result<_, KernelError>>()?;
        Ok(Self { inner, slices })
    }
}

impl<I: ChunkIo + ?Sized> ChunkIo for SlicedIo<'_, I> {
    fn read(&self, id: u64, f: &mut dyn FnMut(&[u8])) -> Result<(), KernelError> {
        match self.slices.get(&id) {
            None => self.inner.read(id, f),
            Some(&(real, off)) => {
                let mut short = None;
                self.inner.read(real, &mut |bytes| match bytes.get(off..) {
                    Some(rest) => f(rest),
                    None => short = Some(bytes.len()),
                })?;
                match short {
                    None => Ok(()),
                    Some(len) => Err(KernelError::ShortChunk {
                        id: real,
                        needed: off as u64,
                        actual: len as u64,
                    }),
                }
            }
        }
    }

    fn write(&self, id: u64, data: &[u8]) -> Result<(), KernelError> {
        self.inner.write(id, data)
    }
}

/// The indices (global rows: `args.starts[c] + j` for element `j` of chunk `c`) of the elements
/// of `args.vec` matching `args.pred`.
///
/// # Errors
/// As [`filter`]; [`KernelError::Invalid`] when `starts` does not have one row per chunk.
pub fn filter_rows<I: ChunkIo + ?Sized>(
    io: &I,
    args: &FilterRowsArgs,
) -> Result<U64List, KernelError> {
    if args.starts.len() != args.vec.chunks.len() {
        return Err(KernelError::Invalid(format!(
            "{} chunk starts for {} chunks",
            args.starts.len(),
            args.vec.chunks.len()
        )));
    }
    let mut out = Vec::new();
    with_domain!(args.vec.ty.domain(), W => {
        let p = BoundPred::<W>::new(&args.pred)?;
        for (c, &chunk) in args.vec.chunks.iter().enumerate() {
            let one = VecRef { ty: args.vec.ty, chunks: vec![chunk] };
            let mut i = args.starts[c];
            with_test!(p, W, test => {
                for_each_elem::<W, I>(io, &one, |x| {
                    if test(x) {
                        out.push(i);
                    }
                    i += 1;
                })?
            });
        }
    });
    Ok(U64List(out))
}

/// Most order keys a [`group_rank`] answer may list for one query.
pub const RANK_VALUES_MAX: usize = 1 << 20;

/// Per-group counts below, above and within order-key ranges
/// ([`farmem_proto::agent::op::VEC_GROUP_RANK`]).
///
/// # Errors
/// [`KernelError::LengthMismatch`] for columns of different lengths, [`KernelError::Invalid`]
/// for more than 65536 buckets in a range or too many values in one; as [`group_by`].
pub fn group_rank<I: ChunkIo + ?Sized>(
    io: &I,
    args: &GroupRankArgs,
) -> Result<GroupRankResult, KernelError> {
    let g = &args.group;
    if g.keys.len() != g.values.len() {
        return Err(length_mismatch(
            "keys and values",
            g.keys.len(),
            g.values.len(),
        ));
    }
    let mut answers = Vec::with_capacity(args.queries.len());
    for q in &args.queries {
        let buckets = if q.values || q.hi < q.lo {
            0
        } else {
            (q.hi - q.lo)
                .checked_shr(u32::from(q.shift))
                .unwrap_or(0)
                .saturating_add(1)
        };
        if buckets > 65536 {
            return Err(KernelError::Invalid(format!("{buckets} rank buckets")));
        }
        answers.push(RankAnswer {
            below: 0,
            above: 0,
            counts: vec![0; buckets as usize],
        });
    }
    with_domain!(g.keys.ty.domain(), K => {
        with_domain!(g.values.ty.domain(), V => {
            let mut index = KeyIndex::new();
            for (i, q) in args.queries.iter().enumerate() {
                let k = K::from_scalar(q.key).ok_or_else(|| {
                    KernelError::TypeMismatch(format!("key {:?} not in {:?}", q.key, K::DOMAIN))
                })?;
                index.insert(k.key(), i as u32);
            }
            let (mut ks, mut vs) = (Stream::new(&g.keys), Stream::new(&g.values));
            let (mut kb, mut vb): (Vec<K>, Vec<V>) = Default::default();
            loop {
                ks.next::<K, I>(io, BLOCK, &mut kb)?;
                vs.next::<V, I>(io, BLOCK, &mut vb)?;
                if kb.is_empty() {
                    break;
                }
                for (&k, &v) in kb.iter().zip(&vb) {
                    let Some(qi) = index.get(k.key()) else { continue };
                    if v.is_nan() {
                        continue;
                    }
                    let (q, a) = (&args.queries[qi], &mut answers[qi]);
                    let o = order_key(v.scalar());
                    if o < q.lo {
                        a.below += 1;
                    } else if o > q.hi {
                        a.above += 1;
                    } else if q.values {
                        if a.counts.len() >= RANK_VALUES_MAX {
                            return Err(KernelError::Invalid("too many values in a rank range".into()));
                        }
                        a.counts.push(o);
                    } else if let Some(c) = (o - q.lo)
                        .checked_shr(u32::from(q.shift))
                        .and_then(|b| a.counts.get_mut(b as usize))
                    {
                        *c += 1;
                    }
                }
            }
        })
    });
    for (a, q) in answers.iter_mut().zip(&args.queries) {
        if q.values {
            a.counts.sort_unstable();
        }
    }
    Ok(GroupRankResult(answers))
}

/// Adds the aggregates `b` of later rows to `a` (of earlier rows): counts and sums add (exact for
/// integers; floats add the two partial sums), minima and maxima combine, the earlier winning ties.
pub fn merge_aggregates(a: &mut Aggregates, b: &Aggregates) {
    a.count += b.count;
    a.sum = match (a.sum, b.sum) {
        (Sum::U(x), Sum::U(y)) => Sum::U(x.wrapping_add(y)),
        (Sum::I(x), Sum::I(y)) => Sum::I(x.wrapping_add(y)),
        (Sum::F(x), Sum::F(y)) => Sum::F(x + y),
        (x, _) => x,
    };
    let less = |x: Scalar, y: Scalar| match (x, y) {
        (Scalar::U(x), Scalar::U(y)) => x < y,
        (Scalar::I(x), Scalar::I(y)) => x < y,
        (Scalar::F(x), Scalar::F(y)) => x < y,
        _ => false,
    };
    a.min = match (a.min, b.min) {
        (Some(x), Some(y)) => Some(if less(y, x) { y } else { x }),
        (x, y) => x.or(y),
    };
    a.max = match (a.max, b.max) {
        (Some(x), Some(y)) => Some(if less(x, y) { y } else { x }),
        (x, y) => x.or(y),
    };
}

/// Merges the group-by answers of parts (in row order) into one, ascending by key.
///
/// # Errors
/// [`KernelError::TooManyGroups`] for more than `limit` groups in all.
pub fn merge_group_results(
    parts: Vec<GroupByResult>,
    limit: u32,
) -> Result<Option<GroupByResult>, KernelError> {
    let mut it = parts.into_iter();
    let Some(first) = it.next() else {
        return Ok(None);
    };
    let key_ty = first.key_ty;
    let mut map: std::collections::BTreeMap<u64, (Scalar, Aggregates)> = Default::default();
    for part in std::iter::once(first).chain(it) {
        for (k, a) in part.groups {
            match map.entry(order_key(k)) {
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    merge_aggregates(&mut e.get_mut().1, &a)
                }
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert((k, a));
                }
            }
        }
        if map.len() > limit as usize {
            return Err(KernelError::TooManyGroups { limit });
        }
    }
    Ok(Some(GroupByResult {
        key_ty,
        groups: map.into_values().collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::Mem;
    use farmem_proto::agent::{Cmp, RankQuery, from_order_key};

    fn i64s(xs: &[i64]) -> Vec<u8> {
        xs.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn sliced_chunks_and_global_rows_filter_like_the_whole_vector() {
        let io = Mem::default();
        let xs: Vec<i64> = (0..100).map(|i| (i * 37) % 101 - 50).collect();
        let v = io.vec(ElemType::I64, &i64s(&xs), 30, 1);
        // Rows 45..100: chunk 1 from element 15 on (virtual id 99), then chunks 2 and 3.
        let args = SlicedArgs {
            slices: vec![(99, v.chunks[1].0, 15 * 8)],
            op: 0,
            args: Vec::new(),
        };
        let sliced = SlicedIo::new(&io, &args).unwrap();
        let part = VecRef {
            ty: ElemType::I64,
            chunks: vec![(99, 15), v.chunks[2], v.chunks[3]],
        };
        let pred = Predicate::new(Cmp::Gt, Scalar::I(10));
        let got = filter_rows(
            &sliced,
            &FilterRowsArgs {
                vec: part,
                pred,
                starts: vec![45, 60, 90],
            },
        )
        .unwrap();
        let want: Vec<u64> = (45..100)
            .filter(|&i| xs[i] > 10)
            .map(|i| i as u64)
            .collect();
        assert_eq!(got.0, want);
        // A slice past the end of its object is an error, not a panic.
        let bad = SlicedArgs {
            slices: vec![(98, v.chunks[0].0, 31 * 8)],
            op: 0,
            args: Vec::new(),
        };
        let sliced = SlicedIo::new(&io, &bad).unwrap();
        assert!(sliced.read(98, &mut |_| {}).is_err());
    }

    #[test]
    fn rank_counts_find_every_groups_median() {
        let io = Mem::default();
        let n = 5000usize;
        let keys: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        let vals: Vec<f64> = (0..n).map(|i| ((i * 7919) % 1013) as f64 - 500.5).collect();
        let k = io.vec(ElemType::U8, &keys, 700, 1);
        let vb: Vec<u8> = vals.iter().flat_map(|x| x.to_le_bytes()).collect();
        let v = io.vec(ElemType::F64, &vb, 256, 100);
        let group = GroupByArgs {
            keys: k,
            values: v,
            limit: 8,
        };
        let want = group_median(&io, &group).unwrap();
        for (key, _, median) in want.groups {
            let q = RankQuery {
                key,
                lo: 0,
                hi: u64::MAX,
                values: true,
                shift: 60,
            };
            let args = GroupRankArgs {
                group: group.clone(),
                queries: vec![q],
            };
            let a = &group_rank(&io, &args).unwrap().0[0];
            let (lo, hi) = ((a.counts.len() - 1) / 2, a.counts.len() / 2);
            let key = |i: usize| from_order_key(Domain::Float, a.counts[i]);
            assert_eq!(Some((key(lo), key(hi))), median);
            // Bucket counts add up to the values in the range.
            let args = GroupRankArgs {
                queries: vec![RankQuery { values: false, ..q }],
                ..args
            };
            let b = &group_rank(&io, &args).unwrap().0[0];
            assert_eq!(b.counts.iter().sum::<u64>(), a.counts.len() as u64);
        }
    }

    #[test]
    fn merged_group_results_are_the_whole_group_by() {
        let io = Mem::default();
        let keys: Vec<i64> = (0..3000).map(|i| (i * 13) % 29 - 14).collect();
        let vals: Vec<i64> = (0..3000).map(|i| i * 3 - 4000).collect();
        let k = io.vec(ElemType::I64, &i64s(&keys), 500, 1);
        let v = io.vec(ElemType::I64, &i64s(&vals), 500, 100);
        let whole = group_by(
            &io,
            &GroupByArgs {
                keys: k.clone(),
                values: v.clone(),
                limit: 64,
            },
        )
        .unwrap();
        let parts: Vec<GroupByResult> = (0..6)
            .map(|c| {
                let one = |x: &VecRef| VecRef {
                    ty: x.ty,
                    chunks: vec![x.chunks[c]],
                };
                group_by(
                    &io,
                    &GroupByArgs {
                        keys: one(&k),
                        values: one(&v),
                        limit: 64,
                    },
                )
                .unwrap()
            })
            .collect();
        assert_eq!(merge_group_results(parts.clone(), 64).unwrap(), Some(whole));
        assert_eq!(
            merge_group_results(parts, 10),
            Err(KernelError::TooManyGroups { limit: 10 })
        );
    }
}
