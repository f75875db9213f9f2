//! Group-by with the median of each group: its two middle values, found in one pass.

#[allow(unused_imports)]
use crate::*;

/// Widest value range whose medians are found by counting (4 Mi counters, 16 MiB).
pub(crate) const COUNTED_RANGE: u64 = 1 << 22;

/// How one group's median is found in the second pass of [`group_median`].
pub(crate) enum MedianOf<V> {
    /// Integer values of a range small next to their number: one counter per value above `lo`.
    Counts { lo: V, counts: Vec<u32> },
    /// The non-NaN values, selected at the end.
    Values(Vec<V>),
}

impl<V: Wide> MedianOf<V> {
    /// The collector for a group with these aggregates.
    pub(crate) fn for_group(st: &AggState<V>) -> Self {
        if let (Some(lo), Some(hi)) = (st.min, st.max)
            && let Some(range) = hi.offset(lo)
            && range < COUNTED_RANGE
            && range / 4 <= st.count
        {
            return MedianOf::Counts {
                lo,
                counts: vec![0; range as usize + 1],
            };
        }
        MedianOf::Values(Vec::with_capacity(capacity_hint(st.count)))
    }

    #[inline(always)]
    pub(crate) fn push(&mut self, v: V) {
        match self {
            // Counted groups hold integers within `lo..=hi`; anything else has no counter.
            MedianOf::Counts { lo, counts } => {
                if let Some(c) = v.offset(*lo).and_then(|o| counts.get_mut(o as usize)) {
                    *c += 1;
                }
            }
            MedianOf::Values(vals) => {
                if !v.is_nan() {
                    vals.push(v);
                }
            }
        }
    }

    /// Adds what another collector of the same group gathered.
    pub(crate) fn merge(&mut self, other: Self) {
        match (self, other) {
            (MedianOf::Counts { counts, .. }, MedianOf::Counts { counts: more, .. }) => {
                for (c, m) in counts.iter_mut().zip(more) {
                    *c += m;
                }
            }
            (MedianOf::Values(vals), MedianOf::Values(more)) => vals.extend(more),
            // Collectors of one group are of one kind (made from the same aggregates).
            (MedianOf::Counts { .. }, MedianOf::Values(_))
            | (MedianOf::Values(_), MedianOf::Counts { .. }) => {}
        }
    }

    /// The two middle values of what was pushed, found together: the lower (element
    /// `(n - 1) / 2` in the total order) and the upper (element `n / 2`), equal for an odd
    /// count; `None` if nothing.
    pub(crate) fn middles(self) -> Option<(V, V)> {
        match self {
            MedianOf::Counts { lo, counts } => {
                let n: u64 = counts.iter().map(|&c| u64::from(c)).sum();
                let (low, high) = (n.checked_sub(1)? / 2, n / 2);
                let mut seen = 0u64;
                let mut lower = None;
                for (off, &c) in counts.iter().enumerate() {
                    seen += u64::from(c);
                    if lower.is_none() && seen > low {
                        lower = Some(V::from_offset(lo, off as u64));
                    }
                    if seen > high {
                        return Some((lower?, V::from_offset(lo, off as u64)));
                    }
                }
                None
            }
            MedianOf::Values(mut vals) => {
                let n = vals.len();
                let low = n.checked_sub(1)? / 2;
                let (_, m, above) = vals.select_nth_unstable_by(low, V::total);
                let m = *m;
                // An even count: the upper middle is the smallest of the values above.
                let upper = if n % 2 == 0 {
                    above.iter().copied().min_by(V::total).unwrap_or(m)
                } else {
                    m
                };
                Some((m, upper))
            }
        }
    }
}

/// The group of every key, and a maker of empty median collectors (one per group, sized by the
/// group's aggregates) for the second pass of a group median.
pub(crate) fn median_plan<V: Wide>(
    groups: &[GroupEntry<V>],
) -> (KeyIndex, impl Fn() -> Vec<MedianOf<V>> + Sync + '_) {
    let mut index = KeyIndex::new();
    for (g, (k, _)) in groups.iter().enumerate() {
        index.insert(*k, g as u32);
    }
    let fresh = move || {
        groups
            .iter()
            .map(|(_, st)| MedianOf::for_group(st))
            .collect()
    };
    (index, fresh)
}

/// The second pass of a group median over rows `rows`: every value into its group's collector
/// (counted for small integer ranges, else kept in a buffer of the group's size), so no value
/// buffer grows or is copied.
pub(crate) fn median_range<K: Wide, V: Wide, I: ChunkIo + ?Sized>(
    io: &I,
    args: &GroupByArgs,
    index: &KeyIndex,
    mut medians: Vec<MedianOf<V>>,
    rows: std::ops::Range<u64>,
) -> Result<Vec<MedianOf<V>>, KernelError> {
    let (mut ks, mut vs) = (
        Stream::at(&args.keys, rows.start),
        Stream::at(&args.values, rows.start),
    );
    let (mut kb, mut vb): (Vec<K>, Vec<V>) = Default::default();
    let mut left = rows.end - rows.start;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        ks.next::<K, I>(io, n, &mut kb)?;
        vs.next::<V, I>(io, n, &mut vb)?;
        if kb.is_empty() {
            break;
        }
        left -= kb.len() as u64;
        for (&k, &v) in kb.iter().zip(&vb) {
            let g = index
                .get(k.key())
                .ok_or_else(|| KernelError::Invalid("keys changed during a group-by".into()))?;
            medians[g].push(v);
        }
    }
    Ok(medians)
}

/// Group-by aggregate with each group's lower median (see
/// [`farmem_proto::agent::GroupMedianResult`]).
///
/// # Errors
/// As [`group_by`].
pub fn group_median<I: ChunkIo + ?Sized>(
    io: &I,
    args: &GroupByArgs,
) -> Result<GroupMedianResult, KernelError> {
    with_domain!(args.keys.ty.domain(), K => {
        with_domain!(args.values.ty.domain(), V => {
            let groups = group_rows::<K, V, I>(io, args, None)?;
            let (index, fresh) = median_plan(&groups);
            let medians = median_range::<K, V, I>(io, args, &index, fresh(), 0..args.keys.len())?;
            Ok(median_result::<K, V>(args, &groups, medians))
        })
    })
}

/// [`group_median`] on up to `threads` threads (integer values; float values use one): both
/// passes split the rows, the runs' aggregates and counters are merged.
///
/// # Errors
/// As [`group_median`].
pub fn group_median_parallel<I: ChunkIo + Sync + ?Sized>(
    io: &I,
    args: &GroupByArgs,
    threads: usize,
) -> Result<GroupMedianResult, KernelError> {
    with_domain!(args.keys.ty.domain(), K => {
        with_domain!(args.values.ty.domain(), V => {
            let groups = group_rows_parallel::<K, V, I>(io, args, None, threads)?;
            let (index, fresh) = median_plan(&groups);
            let threads = if V::DOMAIN == Domain::Float { 1 } else { threads };
            let runs = split_rows(args.keys.len(), threads);
            let parts = on_threads(&runs, |r| median_range::<K, V, I>(io, args, &index, fresh(), r))?;
            let mut parts = parts.into_iter();
            let mut medians = parts.next().unwrap_or_default();
            for part in parts {
                for (m, o) in medians.iter_mut().zip(part) {
                    m.merge(o);
                }
            }
            Ok(median_result::<K, V>(args, &groups, medians))
        })
    })
}

/// The result message of sorted groups and their medians' collectors.
pub(crate) fn median_result<K: Wide, V: Wide>(
    args: &GroupByArgs,
    groups: &[GroupEntry<V>],
    medians: Vec<MedianOf<V>>,
) -> GroupMedianResult {
    GroupMedianResult {
        key_ty: args.keys.ty,
        groups: groups
            .iter()
            .zip(medians)
            .map(|((k, st), m)| {
                let median = m.middles().map(|(l, u)| (l.scalar(), u.scalar()));
                (K::from_key(*k).scalar(), st.finish(args.values.ty), median)
            })
            .collect(),
    }
}
