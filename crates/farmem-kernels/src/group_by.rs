//! Group-by aggregates, with and without a mask.

#[allow(unused_imports)]
use crate::*;

/// Group-by aggregate: for every distinct key, the aggregates of the values with that key.
///
/// # Errors
/// [`KernelError::LengthMismatch`] for columns of different lengths, [`KernelError::TooManyGroups`]
/// for more than `args.limit` groups, plus those of [`aggregate`].
pub fn group_by<I: ChunkIo + ?Sized>(
    io: &I,
    args: &GroupByArgs,
) -> Result<GroupByResult, KernelError> {
    with_domain!(args.keys.ty.domain(), K => {
        with_domain!(args.values.ty.domain(), V => {
            Ok(by_result::<K, V>(args, &group_rows::<K, V, I>(io, args, None)?))
        })
    })
}

/// [`group_by`] on up to `threads` threads (integer values; float values use one).
///
/// # Errors
/// As [`group_by`].
pub fn group_by_parallel<I: ChunkIo + Sync + ?Sized>(
    io: &I,
    args: &GroupByArgs,
    threads: usize,
) -> Result<GroupByResult, KernelError> {
    with_domain!(args.keys.ty.domain(), K => {
        with_domain!(args.values.ty.domain(), V => {
            let groups = group_rows_parallel::<K, V, I>(io, args, None, threads)?;
            Ok(by_result::<K, V>(args, &groups))
        })
    })
}

/// The result message of sorted groups.
pub(crate) fn by_result<K: Wide, V: Wide>(
    args: &GroupByArgs,
    groups: &[GroupEntry<V>],
) -> GroupByResult {
    GroupByResult {
        key_ty: args.keys.ty,
        groups: groups
            .iter()
            .map(|(k, st)| (K::from_key(*k).scalar(), st.finish(args.values.ty)))
            .collect(),
    }
}

/// A multiply-shift hasher for `u64` group keys (keys are not attacker-chosen beyond the
/// client's own data, and a group limit bounds the table).
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, x: u64) {
        // Fold the high half of the full product in: the low bits of a plain product depend
        // only on the low bits of the key, and the table picks buckets from the low bits, so
        // keys that are multiples of a power of two would share a fraction of the buckets.
        let p = u128::from(x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = (p as u64) ^ ((p >> 64) as u64);
    }
}

/// One finished group: key bits and aggregates.
pub(crate) type GroupEntry<V> = (u64, AggState<V>);

/// Keys below this are looked up in a direct table instead of the hash map (every `u8` key, and
/// the small non-negative keys of wider types: hours, weekdays, months, vendor ids, ...).
pub(crate) const DENSE_KEYS: usize = 256;

/// No group yet for a dense key.
pub(crate) const NO_GROUP: u32 = u32::MAX;

/// Group number of each key: a direct table for keys below [`DENSE_KEYS`], a hash map above.
pub(crate) struct KeyIndex {
    pub(crate) dense: Box<[u32; DENSE_KEYS]>,
    pub(crate) map: HashMap<u64, u32, std::hash::BuildHasherDefault<KeyHasher>>,
}

impl KeyIndex {
    pub(crate) fn new() -> Self {
        Self {
            dense: Box::new([NO_GROUP; DENSE_KEYS]),
            map: HashMap::default(),
        }
    }

    #[inline(always)]
    pub(crate) fn get(&self, key: u64) -> Option<usize> {
        let g = match usize::try_from(key) {
            Ok(k) if k < DENSE_KEYS => self.dense[k],
            _ => *self.map.get(&key)?,
        };
        (g != NO_GROUP).then_some(g as usize)
    }

    /// Sets the group of `key` (`g < u32::MAX`).
    pub(crate) fn insert(&mut self, key: u64, g: u32) {
        match usize::try_from(key) {
            Ok(k) if k < DENSE_KEYS => self.dense[k] = g,
            _ => {
                self.map.insert(key, g);
            }
        }
    }
}

/// Groups being accumulated: per distinct key, the aggregates of its values.
pub(crate) struct Groups<V: Wide> {
    pub(crate) index: KeyIndex,
    pub(crate) groups: Vec<GroupEntry<V>>,
    pub(crate) limit: u32,
}

impl<V: Wide> Groups<V> {
    pub(crate) fn new(limit: u32) -> Self {
        Self {
            index: KeyIndex::new(),
            groups: Vec::new(),
            limit,
        }
    }

    /// A new group for `key`; its index.
    #[cold]
    pub(crate) fn add(&mut self, key: u64) -> Result<usize, KernelError> {
        // `limit` is a u32, so group numbers stay below `NO_GROUP`.
        if self.groups.len() >= self.limit as usize {
            return Err(KernelError::TooManyGroups { limit: self.limit });
        }
        let g = self.groups.len();
        self.index.insert(key, g as u32);
        self.groups.push((key, AggState::new()));
        Ok(g)
    }

    #[inline(always)]
    pub(crate) fn push(&mut self, key: u64, v: V) -> Result<(), KernelError> {
        let g = match self.index.get(key) {
            Some(g) => g,
            None => self.add(key)?,
        };
        self.groups[g].1.push(v);
        Ok(())
    }
}

/// `groups` ascending by key (in the key domain's total order).
pub(crate) fn sort_groups<K: Wide, V: Wide>(mut groups: Vec<GroupEntry<V>>) -> Vec<GroupEntry<V>> {
    groups.sort_by(|a, b| K::from_key(a.0).total(&K::from_key(b.0)));
    groups
}

/// Merges the groups of consecutive row runs (exact for integer values: counts and wrapping
/// sums add, minima and maxima combine), ascending by key.
pub(crate) fn merge_groups<K: Wide, V: Wide>(
    parts: Vec<Vec<GroupEntry<V>>>,
    limit: u32,
) -> Result<Vec<GroupEntry<V>>, KernelError> {
    let mut index = KeyIndex::new();
    let mut out: Vec<GroupEntry<V>> = Vec::new();
    for (k, st) in parts.into_iter().flatten() {
        match index.get(k) {
            Some(g) => out[g].1.merge(&st),
            None if out.len() >= limit as usize => {
                return Err(KernelError::TooManyGroups { limit });
            }
            None => {
                index.insert(k, out.len() as u32);
                out.push((k, st));
            }
        }
    }
    Ok(sort_groups::<K, V>(out))
}

pub(crate) fn length_mismatch(what: &'static str, left: u64, right: u64) -> KernelError {
    KernelError::LengthMismatch { what, left, right }
}

/// Reads the next block of the mask and evaluates the predicate on it.
pub(crate) fn mask_block<I: ChunkIo + ?Sized>(
    io: &I,
    s: &mut Stream<'_>,
    pred: &Predicate,
    n: usize,
    out: &mut Vec<bool>,
) -> Result<(), KernelError> {
    with_domain!(s.vec.ty.domain(), M => {
        let p = BoundPred::<M>::new(pred)?;
        with_test!(p, M, test => s.next_map::<M, bool, I>(io, n, out, test))
    })
}

/// Checks the arguments of a group-by (with an optional mask) before anything is read.
pub(crate) fn check_group(
    args: &GroupByArgs,
    mask: Option<(&VecRef, &Predicate)>,
) -> Result<(), KernelError> {
    let len = args.keys.len();
    if args.values.len() != len {
        return Err(length_mismatch("keys and values", len, args.values.len()));
    }
    if let Some((m, p)) = mask {
        if m.len() != len {
            return Err(length_mismatch("keys and mask", len, m.len()));
        }
        with_domain!(m.ty.domain(), M => BoundPred::<M>::new(p).map(|_| ()))?;
    }
    Ok(())
}

/// The groups of all rows, ascending by key.
pub(crate) fn group_rows<K: Wide, V: Wide, I: ChunkIo + ?Sized>(
    io: &I,
    args: &GroupByArgs,
    mask: Option<(&VecRef, &Predicate)>,
) -> Result<Vec<GroupEntry<V>>, KernelError> {
    check_group(args, mask)?;
    let groups = group_range::<K, V, I>(io, args, mask, 0..args.keys.len())?;
    Ok(sort_groups::<K, V>(groups))
}

/// [`group_rows`] on up to `threads` threads, each grouping a run of rows, the runs' groups then
/// merged. Only for integer values, whose aggregates merge exactly (float sums depend on the
/// order): float values are grouped on one thread.
pub(crate) fn group_rows_parallel<K: Wide, V: Wide, I: ChunkIo + Sync + ?Sized>(
    io: &I,
    args: &GroupByArgs,
    mask: Option<(&VecRef, &Predicate)>,
    threads: usize,
) -> Result<Vec<GroupEntry<V>>, KernelError> {
    if V::DOMAIN == Domain::Float {
        return group_rows::<K, V, I>(io, args, mask);
    }
    check_group(args, mask)?;
    let runs = split_rows(args.keys.len(), threads);
    let parts = on_threads(&runs, |r| group_range::<K, V, I>(io, args, mask, r))?;
    merge_groups::<K, V>(parts, args.limit)
}

/// The groups of rows `rows` (checked arguments), in no particular order.
pub(crate) fn group_range<K: Wide, V: Wide, I: ChunkIo + ?Sized>(
    io: &I,
    args: &GroupByArgs,
    mask: Option<(&VecRef, &Predicate)>,
    rows: std::ops::Range<u64>,
) -> Result<Vec<GroupEntry<V>>, KernelError> {
    if args.values == args.keys && args.keys.ty == ElemType::U8 {
        return byte_histogram::<V, I>(io, args, mask, rows);
    }
    let mut groups = Groups::<V>::new(args.limit);
    let (mut ks, mut vs) = (
        Stream::at(&args.keys, rows.start),
        Stream::at(&args.values, rows.start),
    );
    let mut ms = mask.map(|(m, p)| (Stream::at(m, rows.start), p));
    let (mut kb, mut vb, mut mb): (Vec<K>, Vec<V>, Vec<bool>) = Default::default();
    let mut left = rows.end - rows.start;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        ks.next::<K, I>(io, n, &mut kb)?;
        vs.next::<V, I>(io, n, &mut vb)?;
        if kb.is_empty() {
            break;
        }
        left -= kb.len() as u64;
        match &mut ms {
            Some((s, p)) => {
                mask_block(io, s, p, n, &mut mb)?;
                for ((&k, &v), &keep) in kb.iter().zip(&vb).zip(&mb) {
                    if keep {
                        groups.push(k.key(), v)?;
                    }
                }
            }
            None => {
                for (&k, &v) in kb.iter().zip(&vb) {
                    groups.push(k.key(), v)?;
                }
            }
        }
    }
    Ok(groups.groups)
}

/// [`group_rows`] of a `u8` column by itself (value counts), optionally masked: one counter per
/// byte value instead of a group lookup and an aggregate update per row. Every group's aggregates
/// follow from its key and count (`n` equal values), so the result equals the general path's.
pub(crate) fn byte_histogram<V: Wide, I: ChunkIo + ?Sized>(
    io: &I,
    args: &GroupByArgs,
    mask: Option<(&VecRef, &Predicate)>,
    rows: std::ops::Range<u64>,
) -> Result<Vec<GroupEntry<V>>, KernelError> {
    let mut counts = [0u64; 256];
    let mut ks = Stream::at(&args.keys, rows.start);
    let mut ms = mask.map(|(m, p)| (Stream::at(m, rows.start), p));
    let (mut kb, mut mb): (Vec<u8>, Vec<bool>) = Default::default();
    let mut left = rows.end - rows.start;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        ks.next_raw(io, n, &mut kb)?;
        if kb.is_empty() {
            break;
        }
        left -= kb.len() as u64;
        match &mut ms {
            Some((s, p)) => {
                mask_block(io, s, p, n, &mut mb)?;
                for (&k, &keep) in kb.iter().zip(&mb) {
                    counts[usize::from(k)] += u64::from(keep);
                }
            }
            None => {
                for &k in &kb {
                    counts[usize::from(k)] += 1;
                }
            }
        }
    }
    let present = counts.iter().filter(|&&n| n > 0).count();
    if present > args.limit as usize {
        return Err(KernelError::TooManyGroups { limit: args.limit });
    }
    // Byte keys ascending are the key order of the unsigned domain.
    Ok((0u64..256)
        .zip(counts)
        .filter(|&(_, n)| n > 0)
        .map(|(k, n)| {
            let v = V::from_key(k);
            let st = AggState {
                count: n,
                acc: v.times(n),
                min: Some(v),
                max: Some(v),
            };
            (k, st)
        })
        .collect())
}

/// Group-by aggregate over the rows `i` where `args.mask[i]` matches `args.pred`: for every
/// distinct key among them, the aggregates of their values (ascending by key).
///
/// # Errors
/// [`KernelError::LengthMismatch`] for vectors of different lengths, [`KernelError::TypeMismatch`]
/// for operands outside the mask's domain, [`KernelError::TooManyGroups`] for more than `limit`
/// groups, plus those of [`aggregate`].
pub fn group_by_where<I: ChunkIo + ?Sized>(
    io: &I,
    args: &GroupWhereArgs,
) -> Result<GroupByResult, KernelError> {
    let (g, mask) = (&args.group, Some((&args.mask, &args.pred)));
    with_domain!(g.keys.ty.domain(), K => {
        with_domain!(g.values.ty.domain(), V => {
            Ok(by_result::<K, V>(g, &group_rows::<K, V, I>(io, g, mask)?))
        })
    })
}

/// [`group_by_where`] on up to `threads` threads (integer values; float values use one).
///
/// # Errors
/// As [`group_by_where`].
pub fn group_by_where_parallel<I: ChunkIo + Sync + ?Sized>(
    io: &I,
    args: &GroupWhereArgs,
    threads: usize,
) -> Result<GroupByResult, KernelError> {
    let (g, mask) = (&args.group, Some((&args.mask, &args.pred)));
    with_domain!(g.keys.ty.domain(), K => {
        with_domain!(g.values.ty.domain(), V => {
            let groups = group_rows_parallel::<K, V, I>(io, g, mask, threads)?;
            Ok(by_result::<K, V>(g, &groups))
        })
    })
}
