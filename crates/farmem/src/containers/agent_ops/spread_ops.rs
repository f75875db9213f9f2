//! The operations of [`FarVec`] spread over several servers ([`spread`]): the arguments of each
//! part and the merge of the parts' answers.

#[allow(unused_imports)]
use super::*;

use farmem_proto::agent::{
    Domain, FilterRowsArgs, GroupRankArgs, GroupRankResult, RankQuery, Scalar, U64List,
    from_order_key, order_key,
};

use super::spread::{Job, Part, spread};
use crate::backend::Sites;

/// Most buckets per median round: each round narrows a group's range about four-thousandfold
/// (an integer range this narrow is resolved in one round, with one bucket per value).
const RANK_BUCKETS: u64 = 4096;
/// A group's median range holding at most this many values is fetched and selected from.
const RANK_FETCH: u64 = 4096;

/// Runs `job` spread; `None` when it must run here instead (empty or mismatched inputs).
fn answers<R: AgentMessage>(
    rt: &Runtime,
    sites: &dyn Sites,
    sources: &[&dyn Source],
    job: &Job<'_>,
) -> Result<Option<Vec<R>>> {
    let Some(raw) = spread(rt, sites, sources, job)? else {
        return Ok(None);
    };
    Ok(Some(
        raw.iter().map(|a| R::decode(a)).collect::<Result<_, _>>()?,
    ))
}

/// The sorted, deduplicated union of the parts' distinct values; too many is an error.
fn merge_unique(parts: Vec<UniqueResult>, limit: u32) -> Result<Vec<Scalar>> {
    let mut all: Vec<Scalar> = parts.into_iter().flat_map(|p| p.values).collect();
    all.sort_by_key(|&s| order_key(s));
    all.dedup_by_key(|s| order_key(*s));
    if all.len() > limit as usize {
        return Err(AgentError::TooManyGroups { limit }.into());
    }
    Ok(all)
}

/// A group's median search: the order-key range still holding it, the median's rank among the
/// group's non-NaN values, and the median once found.
struct Search {
    query: RankQuery,
    /// The rank sought: the lower middle's, then (an even count whose upper middle was not in
    /// the last range) the upper middle's.
    rank: Option<u64>,
    /// Number of the group's non-NaN values, once known.
    n: Option<u64>,
    /// Order key of the group's largest value.
    max: u64,
    lower: Option<Scalar>,
    upper: Option<Scalar>,
}

impl Search {
    /// The value of order key `key` is at the sought rank; `next` is the order key at the next
    /// rank when the last range held it. Returns whether the search goes on (for the upper
    /// middle, among the values above `key`).
    fn found(&mut self, d: Domain, key: u64, next: Option<u64>) -> bool {
        let v = from_order_key(d, key);
        if self.lower.is_some() {
            self.upper = Some(v);
            return false;
        }
        self.lower = Some(v);
        let n = self.n.unwrap_or(1);
        let upper_rank = n / 2;
        let rank = self.rank.unwrap_or(0);
        match (upper_rank == rank, next, key.checked_add(1)) {
            (true, ..) => self.upper = Some(v),
            (false, Some(k), _) => self.upper = Some(from_order_key(d, k)),
            (false, None, Some(above)) if above <= self.max => {
                self.rank = Some(upper_rank);
                self.query.lo = above;
                self.query.hi = self.max;
                self.query.shift = 0;
                self.query.values = n - upper_rank <= RANK_FETCH;
                return true;
            }
            (false, None, _) => self.upper = Some(v),
        }
        false
    }
}

impl<T: Primitive + Send + Sync> FarVec<T> {
    /// [`FarVec::aggregate`] spread; `None` to run it here.
    pub(super) fn spread_aggregate(&self, sites: &dyn Sites) -> Result<Option<Aggregates>> {
        let inputs = [self.vec_ref()];
        let src = VecSource::new(self);
        let job = Job {
            opn: op::VEC_AGGREGATE,
            inputs: &inputs,
            make: &|p: &Part| p.vecs[0].encode(),
            out: None,
        };
        let Some(parts) = answers::<Aggregates>(&self.rt, sites, &[&src], &job)? else {
            return Ok(None);
        };
        let mut it = parts.into_iter();
        Ok(it.next().map(|mut a| {
            it.for_each(|b| kernels::merge_aggregates(&mut a, &b));
            a
        }))
    }

    /// [`FarVec::count_where`] spread.
    pub(super) fn spread_count(&self, sites: &dyn Sites, pred: Predicate) -> Result<Option<u64>> {
        let inputs = [self.vec_ref()];
        let src = VecSource::new(self);
        let make = |p: &Part| {
            CountArgs {
                vec: p.vecs[0].clone(),
                pred,
            }
            .encode()
        };
        let job = Job {
            opn: op::VEC_COUNT,
            inputs: &inputs,
            make: &make,
            out: None,
        };
        Ok(answers::<u64>(&self.rt, sites, &[&src], &job)?.map(|v| v.into_iter().sum()))
    }

    /// [`FarVec::filter`] spread: the parts answer their (global) indices, written here into
    /// a new vector the backend places and replicates.
    pub(super) fn spread_filter(
        &self,
        sites: &dyn Sites,
        pred: Predicate,
    ) -> Result<Option<FarVec<u64>>> {
        let inputs = [self.vec_ref()];
        let src = VecSource::new(self);
        let make = |p: &Part| {
            FilterRowsArgs {
                vec: p.vecs[0].clone(),
                pred,
                starts: p.starts.clone(),
            }
            .encode()
        };
        let job = Job {
            opn: op::VEC_FILTER_ROWS,
            inputs: &inputs,
            make: &make,
            out: None,
        };
        let Some(parts) = answers::<U64List>(&self.rt, sites, &[&src], &job)? else {
            return Ok(None);
        };
        let mut idx: Vec<u64> = parts.into_iter().flat_map(|p| p.0).collect();
        idx.sort_unstable();
        Ok(Some(FarVec::from_slice(&self.rt, &idx)?))
    }

    /// [`FarVec::unique`] spread.
    pub(super) fn spread_unique(&self, sites: &dyn Sites, limit: u32) -> Result<Option<Vec<T>>> {
        let inputs = [self.vec_ref()];
        let src = VecSource::new(self);
        let make = |p: &Part| {
            UniqueArgs {
                vec: p.vecs[0].clone(),
                limit,
            }
            .encode()
        };
        let job = Job {
            opn: op::VEC_UNIQUE,
            inputs: &inputs,
            make: &make,
            out: None,
        };
        let Some(parts) = answers::<UniqueResult>(&self.rt, sites, &[&src], &job)? else {
            return Ok(None);
        };
        merge_unique(parts, limit)?
            .into_iter()
            .map(|s| T::from_scalar(s).ok_or_else(|| ContainerError::Agent("bad value".into())))
            .collect::<Result<_>>()
            .map(Some)
    }

    /// [`FarVec::group_by`] (`mask: None`) or [`FarVec::group_by_where`] spread.
    pub(super) fn spread_group_by(
        &self,
        sites: &dyn Sites,
        values: (&VecRef, &dyn Source),
        mask: Option<(&AgentInput<'_>, Predicate)>,
        limit: u32,
    ) -> Result<Option<GroupByResult>> {
        let mut inputs = vec![self.vec_ref(), values.0.clone()];
        let keys = VecSource::new(self);
        let mut sources: Vec<&dyn Source> = vec![&keys, values.1];
        if let Some((m, _)) = mask {
            inputs.push(m.vec.clone());
            sources.push(&*m.src);
        }
        let pred = mask.map(|(_, p)| p);
        let make = |p: &Part| {
            let group = GroupByArgs {
                keys: p.vecs[0].clone(),
                values: p.vecs[1].clone(),
                limit,
            };
            match pred {
                None => group.encode(),
                Some(pred) => GroupWhereArgs {
                    group,
                    mask: p.vecs[2].clone(),
                    pred,
                }
                .encode(),
            }
        };
        let job = Job {
            opn: if mask.is_some() {
                op::VEC_GROUP_BY_WHERE
            } else {
                op::VEC_GROUP_BY
            },
            inputs: &inputs,
            make: &make,
            out: None,
        };
        let Some(parts) = answers::<GroupByResult>(&self.rt, sites, &sources, &job)? else {
            return Ok(None);
        };
        Ok(kernels::merge_group_results(parts, limit)?)
    }

    /// [`FarVec::group_median`] spread: the group-by's aggregates, then rounds of per-group
    /// counts narrowing each group's range until its lower middle value is known exactly, and
    /// its upper middle (an even count) when the last range did not hold it too.
    pub(super) fn spread_group_median<V: Primitive + Send + Sync>(
        &self,
        sites: &dyn Sites,
        values: &FarVec<V>,
        limit: u32,
    ) -> Result<Option<GroupMedianResult>> {
        let vs = VecSource::new(values);
        let vr = values.vec_ref();
        let Some(groups) = self.spread_group_by(sites, (&vr, &vs), None, limit)? else {
            return Ok(None);
        };
        let mut search: Vec<Search> = groups
            .groups
            .iter()
            .map(|(k, a)| Search {
                query: RankQuery {
                    key: *k,
                    lo: a.min.map_or(0, order_key),
                    hi: a.max.map_or(0, order_key),
                    values: a.count <= RANK_FETCH,
                    shift: 0,
                },
                rank: None,
                n: None,
                max: a.max.map_or(0, order_key),
                lower: None,
                upper: None,
            })
            .collect();
        let inputs = [self.vec_ref(), vr.clone()];
        let keys = VecSource::new(self);
        let d = V::TYPE.domain();
        let mut active: Vec<usize> = (0..search.len())
            .filter(|&g| groups.groups[g].1.min.is_some())
            .collect();
        for _ in 0..80 {
            if active.is_empty() {
                break;
            }
            let queries: Vec<RankQuery> = active
                .iter()
                .map(|&g| {
                    let mut q = search[g].query;
                    // Buckets as narrow as a power of two allows, at most RANK_BUCKETS of them.
                    while (q.hi - q.lo).checked_shr(u32::from(q.shift)).unwrap_or(0) >= RANK_BUCKETS
                    {
                        q.shift += 1;
                    }
                    search[g].query.shift = q.shift;
                    q
                })
                .collect();
            let make = |p: &Part| {
                GroupRankArgs {
                    group: GroupByArgs {
                        keys: p.vecs[0].clone(),
                        values: p.vecs[1].clone(),
                        limit,
                    },
                    queries: queries.clone(),
                }
                .encode()
            };
            let job = Job {
                opn: op::VEC_GROUP_RANK,
                inputs: &inputs,
                make: &make,
                out: None,
            };
            let parts = answers::<GroupRankResult>(&self.rt, sites, &[&keys, &vs], &job)?
                .unwrap_or_default();
            let mut next_round = Vec::new();
            for (qi, &g) in active.iter().enumerate() {
                let mut below = 0u64;
                let mut above = 0u64;
                let mut counts: Vec<u64> = Vec::new();
                for p in &parts {
                    let a = p.0.get(qi).ok_or_else(|| {
                        ContainerError::Agent("rank answer without every query".into())
                    })?;
                    below += a.below;
                    above += a.above;
                    if search[g].query.values {
                        counts.extend_from_slice(&a.counts);
                    } else {
                        counts.resize(counts.len().max(a.counts.len()), 0);
                        for (c, x) in counts.iter_mut().zip(&a.counts) {
                            *c += x;
                        }
                    }
                }
                let s = &mut search[g];
                let inside: u64 = if s.query.values {
                    counts.len() as u64
                } else {
                    counts.iter().sum()
                };
                let n = *s.n.get_or_insert(below + above + inside);
                let rank = *s.rank.get_or_insert(match n.checked_sub(1) {
                    Some(n1) => n1 / 2,
                    None => continue,
                });
                let Some(mut t) = rank.checked_sub(below).filter(|&t| t < inside) else {
                    return Err(ContainerError::Agent(
                        "median rank outside its range".into(),
                    ));
                };
                if s.query.values {
                    counts.sort_unstable();
                    let next = counts.get(t as usize + 1).copied();
                    if s.found(d, counts[t as usize], next) {
                        next_round.push(g);
                    }
                    continue;
                }
                let w = 1u128 << s.query.shift;
                let Some(b) = counts.iter().position(|&c| {
                    if t < c {
                        true
                    } else {
                        t -= c;
                        false
                    }
                }) else {
                    return Err(ContainerError::Agent("median bucket not found".into()));
                };
                let lo = u128::from(s.query.lo) + b as u128 * w;
                let hi = (lo + w - 1).min(u128::from(s.query.hi));
                s.query.lo = lo as u64;
                s.query.hi = hi as u64;
                s.query.shift = 0;
                if lo == hi {
                    let next = (t + 1 < counts[b]).then_some(lo as u64);
                    if s.found(d, lo as u64, next) {
                        next_round.push(g);
                    }
                    continue;
                }
                s.query.values = counts[b] <= RANK_FETCH;
                next_round.push(g);
            }
            active = next_round;
        }
        Ok(Some(GroupMedianResult {
            key_ty: groups.key_ty,
            groups: groups
                .groups
                .into_iter()
                .zip(search)
                .map(|((k, a), s)| (k, a, s.lower.zip(s.upper)))
                .collect(),
        }))
    }

    /// [`FarVec::derive`] spread: each output chunk is written where its input rows are (or
    /// here), entered in the backend's placement with its redundancy.
    pub(super) fn spread_derive(
        rt: &Runtime,
        sites: &dyn Sites,
        expr: &Expr,
        inputs: &[AgentInput<'_>],
        out: &OutSpec,
    ) -> Result<Option<u64>> {
        let refs: Vec<VecRef> = inputs.iter().map(|i| i.vec.clone()).collect();
        let sources: Vec<&dyn Source> = inputs.iter().map(|i| &*i.src).collect();
        let make = |p: &Part| {
            DeriveArgs {
                expr: expr.clone(),
                inputs: p.vecs.clone(),
                out: OutSpec {
                    chunk_elems: out.chunk_elems,
                    ids: p
                        .units
                        .iter()
                        .filter_map(|&u| out.ids.get(u).copied())
                        .collect(),
                },
            }
            .encode()
        };
        let job = Job {
            opn: op::VEC_DERIVE,
            inputs: &refs,
            make: &make,
            out: Some((out, size_of::<T>())),
        };
        Ok(answers::<u64>(rt, sites, &sources, &job)?.map(|v| v.into_iter().sum()))
    }
}
