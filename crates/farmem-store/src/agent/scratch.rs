//! The working memory of an agent operation, bounded before it runs.
//!
//! A vector operation allocates in proportion to what its request names: an argsort holds
//! every value and the permutation, a gather its indices and its output before they become
//! objects, a group-by one entry per group and thread, a group median every value (or a counter
//! per value of its range) per thread, rank counts one bucket per value range. A request can
//! name the same large object many times, so these follow the *declared* lengths, not the data
//! held. [`bound`] gives an upper bound of an operation's working memory from its arguments
//! (lengths, group limits, key types, threads); the agent charges it to the session's capacity
//! while the operation runs (see [`super::execute`]), so that a server never holds more than
//! its capacity, whatever a client sends: an operation whose bound does not fit is refused
//! with an out-of-capacity error before it allocates anything.
//!
//! The bounds are generous (a hash-table entry is counted at its worst load factor), and an
//! operation that keeps little (aggregate, count, derive, which stream in blocks) is charged a
//! small fixed amount.

use farmem_proto::agent::{
    AgentMessage, ArgsortArgs, CountArgs, DeriveArgs, ElemType, FilterArgs, FilterRowsArgs,
    GatherArgs, GatherSumArgs, GroupByArgs, GroupRankArgs, GroupWhereArgs, SlicedArgs, UniqueArgs,
    VecRef, op,
};

/// Rows read per block by the streaming kernels (at least `farmem_kernels`' block).
const BLOCK: u64 = 8192;
/// Bytes per group per thread: its hash entry, its aggregates, its copy in the merge and in
/// the result.
const PER_GROUP: u64 = 256;
/// Bytes per distinct value of a unique: its set entry, its value and its result scalar.
const PER_DISTINCT: u64 = 96;
/// A widened value (u64, i64 or f64).
const WIDE: u64 = 8;
/// Direct-table keys per thread of a group-by (`farmem_kernels`' dense keys, 4 bytes each).
const DENSE: u64 = 256 * 4;
/// Most values one rank query may collect (`farmem_kernels::RANK_VALUES_MAX`).
const RANK_VALUES: u64 = 1 << 20;

/// How many distinct keys a vector of `ty` can hold at most.
fn key_domain(ty: ElemType) -> u64 {
    match ty {
        ElemType::U8 | ElemType::I8 => 256,
        ElemType::U16 | ElemType::I16 => 65_536,
        _ => u64::MAX,
    }
}

/// Most groups a group-by over `keys` with `limit` can make.
fn groups(keys: &VecRef, limit: u32) -> u64 {
    (u64::from(limit) + 1)
        .min(keys.len())
        .min(key_domain(keys.ty))
}

fn group_table(g: &GroupByArgs, threads: u64) -> u64 {
    let t = threads + 1; // one table per thread, and the merge
    groups(&g.keys, g.limit)
        .saturating_mul(PER_GROUP)
        .saturating_mul(t)
        .saturating_add(DENSE.saturating_mul(t))
        .saturating_add(BLOCK * 2 * WIDE * threads)
}

/// An upper bound, in bytes, of what operation `op` with encoded `args` allocates while it
/// runs on `threads` threads (results it stores as objects are charged as objects; this covers
/// everything before). 0 for arguments that do not decode (the operation then fails at once)
/// and for hash-table operations (tables are charged as they grow).
pub(crate) fn bound(op: u16, args: &[u8], threads: usize) -> u64 {
    let threads = threads.max(1) as u64;
    let b = match op {
        op::VEC_AGGREGATE => Some(0),
        op::VEC_COUNT => CountArgs::decode(args).ok().map(|_| 0),
        op::VEC_FILTER => FilterArgs::decode(args)
            .ok()
            .map(|a| a.vec.len().saturating_mul(a.vec.ty.size() as u64)),
        op::VEC_GATHER => GatherArgs::decode(args).ok().map(|a| {
            let per_index = WIDE + 16 + a.src.ty.size() as u64;
            a.idx
                .len()
                .saturating_mul(per_index)
                .saturating_add(a.src.chunks.len() as u64 * 32)
        }),
        op::VEC_GATHER_SUM => GatherSumArgs::decode(args).ok().map(|a| {
            // The values and offsets read whole, and the sums.
            a.values
                .len()
                .saturating_add(a.offsets.len().saturating_mul(2))
                .saturating_mul(8)
        }),
        op::VEC_UNIQUE => UniqueArgs::decode(args).ok().map(|a| {
            let distinct = (u64::from(a.limit) + 1)
                .min(a.vec.len())
                .min(key_domain(a.vec.ty));
            distinct.saturating_mul(PER_DISTINCT)
        }),
        op::VEC_ARGSORT => ArgsortArgs::decode(args)
            .ok()
            .map(|a| a.vec.len().saturating_mul(3 * WIDE)),
        op::VEC_DERIVE => DeriveArgs::decode(args).ok().map(|a| {
            let lanes = a.inputs.len() as u64 + 1;
            lanes
                .saturating_mul(BLOCK * 2 * WIDE)
                .saturating_mul(threads)
        }),
        op::VEC_GROUP_BY => GroupByArgs::decode(args)
            .ok()
            .map(|a| group_table(&a, threads)),
        op::VEC_GROUP_BY_WHERE => GroupWhereArgs::decode(args)
            .ok()
            .map(|a| group_table(&a.group, threads).saturating_add(BLOCK * WIDE * threads)),
        op::VEC_GROUP_MEDIAN => GroupByArgs::decode(args).ok().map(|a| {
            // Per thread, each row's value, or a group's counters (at most 4 per row, 4 bytes
            // each); and the merged values.
            let per_row = 16 * threads + WIDE;
            group_table(&a, threads).saturating_add(a.values.len().saturating_mul(per_row))
        }),
        op::VEC_FILTER_ROWS => FilterRowsArgs::decode(args)
            .ok()
            .map(|a| a.vec.len().saturating_mul(WIDE)),
        op::VEC_GROUP_RANK => GroupRankArgs::decode(args).ok().map(|a| {
            let answers = a.queries.iter().fold(0u64, |sum, q| {
                let buckets = if q.values {
                    RANK_VALUES
                } else if q.hi < q.lo {
                    0
                } else {
                    ((q.hi - q.lo).checked_shr(u32::from(q.shift)).unwrap_or(0) + 1).min(65_537)
                };
                sum.saturating_add(buckets.saturating_mul(WIDE).saturating_add(64))
            });
            group_table(&a.group, 1).saturating_add(answers.saturating_mul(2))
        }),
        op::VEC_SLICED => SlicedArgs::decode(args).ok().map(|a| {
            let inner = if a.op == op::VEC_SLICED {
                0 // nested slicing is refused
            } else {
                bound(a.op, &a.args, threads as usize)
            };
            inner.saturating_add(a.slices.len() as u64 * 64)
        }),
        _ => None,
    };
    b.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use farmem_proto::agent::{OutSpec, op};

    use super::*;

    fn vec_of(ty: ElemType, chunks: usize, count: u32) -> VecRef {
        VecRef {
            ty,
            chunks: vec![(1, count); chunks],
        }
    }

    #[test]
    fn bounds_follow_the_declared_lengths() {
        let huge = vec_of(ElemType::U8, 1000, 1 << 24);
        let sort = ArgsortArgs {
            vec: huge.clone(),
            out: OutSpec {
                chunk_elems: 1024,
                ids: vec![],
            },
        }
        .encode();
        // 16 Gi elements, 24 bytes each.
        assert_eq!(bound(op::VEC_ARGSORT, &sort, 2), 1000 * (1 << 24) * 24);
        // A group-by over u8 keys never has more than 256 groups, whatever its length.
        let g = GroupByArgs {
            keys: huge.clone(),
            values: huge,
            limit: u32::MAX,
        }
        .encode();
        assert!(bound(op::VEC_GROUP_BY, &g, 2) < 1 << 20);
        // Streaming operations cost a small fixed amount; undecodable arguments nothing.
        assert_eq!(bound(op::VEC_AGGREGATE, &[], 4), 0);
        assert_eq!(bound(op::VEC_ARGSORT, b"junk", 4), 0);
    }
}
