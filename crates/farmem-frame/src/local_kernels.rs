//! The remote agent's kernels over local slices.
//!
//! The all-local placement ([`crate::LocalPlacement`]) runs its value counts, distinct values,
//! filtered value counts, group-bys and group medians with the very functions the memory server
//! runs ([`farmem_kernels`]), with the same number of threads
//! ([`farmem_kernels::default_threads`]).
//! A comparison of placements therefore measures where the data lives, not which algorithm runs.
//!
//! The kernels read "chunk objects"; here a chunk is a window of a borrowed slice, read in place.

use farmem::containers::{Aggregates, Cmp as AgentCmp, Predicate};
use farmem_kernels::{
    self as kernels, KernelError as AgentError, default_threads as agent_threads,
};
use farmem_proto::agent::{CountArgs, GroupByArgs, GroupWhereArgs, UniqueArgs, VecRef};

use crate::storage::{Cmp, GroupRow, Summary};
use crate::{Elem, FrameError, Result, Value};

/// Elements per chunk of a slice as the kernels see it (the far vectors' chunks are of a similar
/// size; chunking does not change any result).
const CHUNK: usize = 1 << 16;

/// Groups the local kernels accept: no limit (the far placements ask the server for at most
/// 2^16 groups because the answer crosses the network; here it does not).
const LIMIT: u32 = u32::MAX;

/// [`kernels::ChunkIo`] over borrowed slices: chunk `i` of column `c` has id `c << 32 | i`.
#[derive(Default)]
struct SliceIo<'a> {
    /// Each column's bytes and element size.
    cols: Vec<(&'a [u8], usize)>,
}

impl<'a> SliceIo<'a> {
    /// Adds a column; returns the kernels' reference to it.
    fn add<T: Elem>(&mut self, xs: &'a [T]) -> VecRef {
        let c = self.cols.len() as u64;
        self.cols
            .push((bytemuck::cast_slice(xs), std::mem::size_of::<T>()));
        VecRef {
            ty: T::TYPE,
            chunks: xs
                .chunks(CHUNK)
                .enumerate()
                .map(|(i, ch)| (c << 32 | i as u64, ch.len() as u32))
                .collect(),
        }
    }
}

impl kernels::ChunkIo for SliceIo<'_> {
    fn read(&self, id: u64, f: &mut dyn FnMut(&[u8])) -> std::result::Result<(), AgentError> {
        let (bytes, size) = self
            .cols
            .get((id >> 32) as usize)
            .ok_or(AgentError::NotFound(id))?;
        let start = (id & 0xffff_ffff) as usize * CHUNK * size;
        let end = (start + CHUNK * size).min(bytes.len());
        f(bytes.get(start..end).ok_or(AgentError::NotFound(id))?);
        Ok(())
    }

    fn write(&self, id: u64, _: &[u8]) -> std::result::Result<(), AgentError> {
        Err(AgentError::Invalid(format!(
            "local slices are read-only (write of {id:#x})"
        )))
    }
}

fn kernel_error(e: AgentError) -> FrameError {
    FrameError::Kernel(e)
}

/// The store's own [`Summary`] of kernel aggregates (exact for integers: see
/// [`Elem::KERNEL_SUMMARY`]).
pub(crate) fn summary_of<T: Elem>(a: &Aggregates) -> Summary<T> {
    Summary {
        count: a.count,
        sum: T::sum_of(a.sum),
        min: a.min.and_then(T::from_scalar),
        max: a.max.and_then(T::from_scalar),
    }
}

/// Converts an operand to a mask element type exactly, as [`crate::Column::select`] does.
pub(crate) fn operand_as<M: Elem>(v: &Value) -> Option<M> {
    let (i, f) = match v {
        Value::Int(v) | Value::Timestamp(v) => (Some(*v), *v as f64),
        Value::Bool(b) => (Some(i64::from(*b)), f64::from(u8::from(*b))),
        Value::Float(v) => (None, *v),
        Value::Str(_) | Value::Null => return None,
    };
    i.and_then(M::from_i64).or_else(|| M::from_f64(f))
}

/// The kernels' comparison for ours.
pub(crate) fn agent_cmp(c: Cmp) -> AgentCmp {
    match c {
        Cmp::Eq => AgentCmp::Eq,
        Cmp::Ne => AgentCmp::Ne,
        Cmp::Lt => AgentCmp::Lt,
        Cmp::Le => AgentCmp::Le,
        Cmp::Gt => AgentCmp::Gt,
        Cmp::Ge => AgentCmp::Ge,
    }
}

/// Count, sum, min and max of `xs` (the agent's aggregate kernel); `None` for floats, whose
/// kernel aggregates differ from [`Summary`] (far placements compute those on the client too).
///
/// # Errors
/// As [`value_counts`].
pub(crate) fn summary<T: Elem>(xs: &[T]) -> Option<Result<Summary<T>>> {
    if !T::KERNEL_SUMMARY {
        return None;
    }
    let mut io = SliceIo::default();
    let v = io.add(xs);
    Some(
        kernels::aggregate(&io, &v)
            .map(|a| summary_of(&a))
            .map_err(kernel_error),
    )
}

/// Number of elements of `xs` with `x <cmp> operand` (the agent's count kernel).
///
/// # Errors
/// As [`value_counts`].
pub(crate) fn count_where<T: Elem>(xs: &[T], cmp: Cmp, operand: T) -> Result<u64> {
    let mut io = SliceIo::default();
    let args = CountArgs {
        vec: io.add(xs),
        pred: Predicate::new(agent_cmp(cmp), operand.to_scalar()),
    };
    kernels::count(&io, &args).map_err(kernel_error)
}

/// Distinct elements of `xs` with their counts, ascending (the agent's group-by of a column by
/// itself, as far placements run it).
///
/// # Errors
/// Kernel errors as [`FrameError::Storage`] (none are expected for a well-formed slice).
pub(crate) fn value_counts<T: Elem>(xs: &[T]) -> Result<Vec<(T, u64)>> {
    let mut io = SliceIo::default();
    let v = io.add(xs);
    let args = GroupByArgs {
        keys: v.clone(),
        values: v,
        limit: LIMIT,
    };
    let r = kernels::group_by_parallel(&io, &args, agent_threads()).map_err(kernel_error)?;
    Ok(r.groups
        .into_iter()
        .filter_map(|(k, a)| Some((T::from_scalar(k)?, a.count)))
        .collect())
}

/// Distinct elements of `xs`, ascending (the agent's unique kernel).
///
/// # Errors
/// As [`value_counts`].
pub(crate) fn unique<T: Elem>(xs: &[T]) -> Result<Vec<T>> {
    let mut io = SliceIo::default();
    let vec = io.add(xs);
    let r = kernels::unique(&io, &UniqueArgs { vec, limit: LIMIT }).map_err(kernel_error)?;
    Ok(r.values.into_iter().filter_map(T::from_scalar).collect())
}

/// Group-by of `vals` by `keys` (integer values only: `None` for floats, whose kernel aggregates
/// differ from [`Summary`]), with lower medians when `medians`; ascending by key.
pub(crate) fn group_rows<K: Elem, V: Elem>(
    keys: &[K],
    vals: &[V],
    medians: bool,
) -> Option<Result<Vec<GroupRow<V>>>> {
    if !V::KERNEL_SUMMARY {
        return None;
    }
    let mut io = SliceIo::default();
    let args = GroupByArgs {
        keys: io.add(keys),
        values: io.add(vals),
        limit: LIMIT,
    };
    let key = |k| K::from_scalar(k).map_or(0, K::to_i64);
    let rows = if medians {
        kernels::group_median_parallel(&io, &args, agent_threads()).map(|r| {
            r.groups
                .into_iter()
                .map(|(k, a, m)| GroupRow {
                    key: key(k),
                    summary: summary_of(&a),
                    middles: m
                        .and_then(|(lo, hi)| Some((V::from_scalar(lo)?, V::from_scalar(hi)?))),
                })
                .collect()
        })
    } else {
        kernels::group_by_parallel(&io, &args, agent_threads()).map(|r| {
            r.groups
                .into_iter()
                .map(|(k, a)| GroupRow {
                    key: key(k),
                    summary: summary_of(&a),
                    middles: None,
                })
                .collect()
        })
    };
    Some(rows.map_err(kernel_error))
}

/// Distinct elements of `vals` with their counts among the rows `i` with `mask[i] <cmp>
/// operand`, ascending; `None` when the operand has no exact value in the mask's type.
pub(crate) fn value_counts_where<M: Elem, T: Elem>(
    vals: &[T],
    mask: &[M],
    cmp: Cmp,
    operand: &Value,
) -> Option<Result<Vec<(T, u64)>>> {
    let x: M = operand_as(operand)?;
    let mut io = SliceIo::default();
    let v = io.add(vals);
    let args = GroupWhereArgs {
        group: GroupByArgs {
            keys: v.clone(),
            values: v,
            limit: LIMIT,
        },
        mask: io.add(mask),
        pred: Predicate::new(agent_cmp(cmp), x.to_scalar()),
    };
    Some(
        kernels::group_by_where_parallel(&io, &args, agent_threads())
            .map(|r| {
                r.groups
                    .into_iter()
                    .filter_map(|(k, a)| Some((T::from_scalar(k)?, a.count)))
                    .collect()
            })
            .map_err(kernel_error),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_of_several_chunks_are_read_in_place() {
        let xs: Vec<u8> = (0..200_000u32).map(|i| (i % 7) as u8).collect();
        let counts = value_counts(&xs).unwrap();
        assert_eq!(counts.len(), 7);
        assert_eq!(counts.iter().map(|c| c.1).sum::<u64>(), 200_000);
        assert_eq!(unique(&xs).unwrap(), (0..7u8).collect::<Vec<_>>());
    }

    use std::collections::BTreeMap;

    use crate::column::ColumnData;
    use crate::storage::{ColumnStore, LocalStore};

    fn reference_groups(keys: &[i64], vals: &[i64]) -> BTreeMap<i64, Vec<i64>> {
        let mut g: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for (&k, &v) in keys.iter().zip(vals) {
            g.entry(k).or_default().push(v);
        }
        g
    }

    proptest::proptest! {
        /// The local store's kernel paths equal plain std computations (small keys take the
        /// kernels' direct tables, large ones their hash tables).
        #[test]
        fn local_store_matches_std(
            rows in proptest::collection::vec(
                (proptest::prop_oneof![0i64..20, -1_000_000i64..1_000_000], 0u8..4, -50i64..50),
                0..400,
            ),
            cut in 0u8..4,
        ) {
            let keys: Vec<i64> = rows.iter().map(|r| r.0).collect();
            let mask: Vec<u8> = rows.iter().map(|r| r.1).collect();
            let vals: Vec<i64> = rows.iter().map(|r| r.2).collect();
            let store = LocalStore(keys.clone());
            let mut want: BTreeMap<i64, u64> = BTreeMap::new();
            for &k in &keys {
                *want.entry(k).or_default() += 1;
            }
            proptest::prop_assert_eq!(store.value_counts().unwrap(), want.clone().into_iter().collect::<Vec<_>>());
            proptest::prop_assert_eq!(store.unique().unwrap(), want.keys().copied().collect::<Vec<_>>());
            let mut plain = Summary::default();
            plain.add_slice(&keys);
            proptest::prop_assert_eq!(store.summary().unwrap(), plain);
            let pivot = keys.first().copied().unwrap_or(0);
            for c in [Cmp::Eq, Cmp::Ne, Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge] {
                let n = keys.iter().filter(|&&k| c.eval(k, pivot)).count() as u64;
                proptest::prop_assert_eq!(store.count_where(c, pivot).unwrap(), n);
            }

            let mut want_where: BTreeMap<i64, u64> = BTreeMap::new();
            for (&k, &m) in keys.iter().zip(&mask) {
                if m < cut {
                    *want_where.entry(k).or_default() += 1;
                }
            }
            let m = ColumnData::U8(Box::new(LocalStore(mask.clone())));
            let got = store.value_counts_where(&m, Cmp::Lt, &Value::Int(i64::from(cut))).unwrap().unwrap();
            proptest::prop_assert_eq!(got, want_where.into_iter().collect::<Vec<_>>());

            let k = ColumnData::I64(Box::new(LocalStore(keys.clone())));
            let rows = LocalStore(vals.clone()).group_rows(&k, true).unwrap().unwrap();
            let want = reference_groups(&keys, &vals);
            proptest::prop_assert_eq!(rows.len(), want.len());
            for r in rows {
                let mut g = want[&r.key].clone();
                g.sort_unstable();
                proptest::prop_assert_eq!(r.summary.count, g.len() as u64);
                proptest::prop_assert_eq!(r.summary.sum, g.iter().map(|&v| i128::from(v)).sum::<i128>());
                proptest::prop_assert_eq!(r.summary.min, g.first().copied());
                proptest::prop_assert_eq!(r.summary.max, g.last().copied());
                proptest::prop_assert_eq!(r.middles, Some((g[(g.len() - 1) / 2], g[g.len() / 2])));
            }
        }
    }

    #[test]
    fn derive_on_threads_equals_one_thread() {
        use farmem_kernels::expr::{Slice, eval_slices};
        use farmem_proto::expr::Expr;
        let a: Vec<i64> = (0..600_000).map(|i| 1_451_606_400 + i * 37).collect();
        let b: Vec<i64> = a.iter().map(|t| t + t % 977).collect();
        let diff = Expr::col(1).sub(Expr::col(0));
        let one = eval_slices(&diff, &[Slice::I64(&a), Slice::I64(&b)], 1).unwrap();
        assert_eq!(
            eval_slices(&diff, &[Slice::I64(&a), Slice::I64(&b)], 3).unwrap(),
            one
        );
        assert!(eval_slices(&diff, &[Slice::I64(&a), Slice::I64(&b[1..])], 3).is_err());
    }

    #[test]
    fn writes_are_refused() {
        use kernels::ChunkIo;
        assert!(SliceIo::default().write(1, &[0]).is_err());
        assert!(matches!(
            SliceIo::default().read(1 << 32, &mut |_| {}),
            Err(AgentError::NotFound(_))
        ));
    }
}
