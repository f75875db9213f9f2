//! Vector operations over chunks spread across several servers (a pool, or several servers
//! without replication): each server computes over the chunks it holds and the client merges.
//!
//! The rows of the inputs are cut into *segments* where no input changes chunk (inputs of
//! different element sizes have different chunk boundaries); an operation whose output is written
//! remotely groups segments into *units*, one per output chunk. Each unit goes to one live server
//! holding a copy of every chunk it reads (the least busy of them), so every chunk is computed
//! exactly once; the units of a server go in one request (`VEC_SLICED` when a segment starts
//! inside a chunk), the servers in parallel. A unit no single server holds entirely runs here,
//! over fetched chunks, with the same kernel. A server that fails mid-operation has its units
//! planned again over the remaining copies; the program sees no error.

#[allow(unused_imports)]
use super::*;

use std::collections::HashSet;

use farmem_proto::agent::SlicedArgs;

use crate::backend::{BackendError, Sites};

/// A site, the units it ran and its answer.
type SiteResult = (usize, Vec<usize>, Result<Vec<u8>, BackendError>);

/// Virtual chunk ids of sliced chunks (never ids the runtime hands out).
const VIRTUAL: u64 = 0xFFFF_0000_0000_0000;

/// Where a segment of rows lies in one input: `count` elements from element `off` of `id`.
#[derive(Clone, Copy, Debug)]
struct Piece {
    id: ObjectId,
    off: u32,
    count: u32,
}

/// Rows `start..start + len`, one piece per input, part of output unit `unit`.
#[derive(Clone, Debug)]
struct Segment {
    start: u64,
    pieces: Vec<Piece>,
    unit: usize,
}

/// The part of an operation one server (or this process) runs: the inputs restricted to its
/// segments, the first row of each chunk of the first input, and its output units.
#[derive(Debug)]
pub(super) struct Part {
    /// The inputs, restricted (chunks may be virtual ids of slices).
    pub(super) vecs: Vec<VecRef>,
    /// Global first row of each chunk of `vecs[0]`.
    pub(super) starts: Vec<u64>,
    /// Output units (output chunk numbers) in row order.
    pub(super) units: Vec<usize>,
    slices: Vec<(u64, u64, u64)>,
}

/// The sites of the runtime's backend when an offloaded operation must be spread over several.
pub(super) fn spread_sites(rt: &Runtime, mode: Offload) -> Option<&dyn Sites> {
    if mode != Offload::Remote {
        return None;
    }
    rt.backend().sites().filter(|s| s.serving() > 1)
}

/// `mode`, or [`Offload::Local`] when an offloaded operation would have to be spread (for the
/// fallback of operations that are not spread, or whose spread declined).
pub(super) fn spread_mode(rt: &Runtime, mode: Offload) -> Offload {
    spread_sites(rt, mode).map_or(mode, |_| Offload::Local)
}

/// Cuts the (equally long) inputs into segments; with `out_chunk`, also at multiples of it, the
/// unit of a segment being its output chunk. `None` when the inputs differ in length.
fn segments(inputs: &[VecRef], out_chunk: Option<u64>) -> Option<Vec<Segment>> {
    let len = inputs.first()?.len();
    if inputs.iter().any(|v| v.len() != len) {
        return None;
    }
    let mut pos: Vec<(usize, u32)> = vec![(0, 0); inputs.len()];
    let mut segs = Vec::new();
    let mut row = 0u64;
    while row < len {
        let mut step = u64::MAX;
        for (v, p) in inputs.iter().zip(&mut pos) {
            while v.chunks[p.0].1 == p.1 {
                *p = (p.0 + 1, 0);
            }
            step = step.min(u64::from(v.chunks[p.0].1 - p.1));
        }
        if let Some(c) = out_chunk {
            step = step.min(c - row % c);
        }
        let pieces = inputs
            .iter()
            .zip(&mut pos)
            .map(|(v, p)| {
                let piece = Piece {
                    id: v.chunks[p.0].0,
                    off: p.1,
                    count: step as u32,
                };
                p.1 += step as u32;
                piece
            })
            .collect();
        let unit = out_chunk.map_or(segs.len(), |c| (row / c) as usize);
        segs.push(Segment {
            start: row,
            pieces,
            unit,
        });
        row += step;
    }
    Some(segs)
}

/// The part made of segments `segs` (in row order), each chunk named by `name`.
fn part(inputs: &[VecRef], segs: &[&Segment], name: &dyn Fn(ObjectId) -> ObjectId) -> Part {
    let mut vecs: Vec<VecRef> = inputs
        .iter()
        .map(|v| VecRef {
            ty: v.ty,
            chunks: Vec::new(),
        })
        .collect();
    let mut last: Vec<Option<Piece>> = vec![None; inputs.len()];
    let (mut starts, mut units, mut slices) = (Vec::new(), Vec::new(), Vec::new());
    for s in segs {
        if units.last() != Some(&s.unit) {
            units.push(s.unit);
        }
        for (i, p) in s.pieces.iter().enumerate() {
            let vec = &mut vecs[i];
            // A piece continuing the previous one (same chunk, next element) extends it.
            if let Some(l) = &mut last[i]
                && l.id == p.id
                && l.off + l.count == p.off
                && let Some(c) = vec.chunks.last_mut()
            {
                l.count += p.count;
                c.1 += p.count;
                continue;
            }
            let chunk = if p.off == 0 {
                name(p.id)
            } else {
                let v = VIRTUAL | slices.len() as u64;
                slices.push((v, name(p.id), u64::from(p.off) * inputs[i].ty.size() as u64));
                v
            };
            vec.chunks.push((chunk, p.count));
            last[i] = Some(*p);
            if i == 0 {
                starts.push(s.start);
            }
        }
    }
    Part {
        vecs,
        starts,
        units,
        slices,
    }
}

/// The request of `opn` on `args` over `part`'s chunks.
fn request(part: &Part, opn: u16, args: Vec<u8>) -> (u16, Vec<u8>) {
    if part.slices.is_empty() {
        return (opn, args);
    }
    let sliced = SlicedArgs {
        slices: part.slices.clone(),
        op: opn,
        args,
    };
    (op::VEC_SLICED, sliced.encode())
}

/// An operation to spread: its number, the encoding of its arguments for a part, and its
/// output (chunk elements, element size and the output spec) when it writes one.
pub(super) struct Job<'a> {
    pub(super) opn: u16,
    pub(super) inputs: &'a [VecRef],
    pub(super) make: &'a (dyn Fn(&Part) -> Vec<u8> + Sync),
    pub(super) out: Option<(&'a OutSpec, usize)>,
}

/// The answers of the parts of `job` (each part over different rows), after writing dirty
/// chunks back. `None` when the inputs are empty or differ in length (the caller runs the operation
/// here, which reports the kernel's error).
pub(super) fn spread(
    rt: &Runtime,
    sites: &dyn Sites,
    sources: &[&dyn Source],
    job: &Job<'_>,
) -> Result<Option<Vec<Vec<u8>>>> {
    let out_chunk = job.out.map(|(o, _)| u64::from(o.chunk_elems.max(1)));
    let Some(segs) = segments(job.inputs, out_chunk).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    for s in sources {
        s.flush()?;
    }
    let mut units: Vec<Vec<&Segment>> = Vec::new();
    for s in &segs {
        if units.len() <= s.unit {
            units.resize_with(s.unit + 1, Vec::new);
        }
        units[s.unit].push(s);
    }
    let mut ids: Vec<ObjectId> = segs
        .iter()
        .flat_map(|s| s.pieces.iter().map(|p| p.id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut answers = Vec::new();
    let mut todo: Vec<usize> = (0..units.len()).filter(|&u| !units[u].is_empty()).collect();
    let mut dead: HashSet<usize> = HashSet::new();
    let units = &units;
    for _ in 0..sites.site_count() + 2 {
        if todo.is_empty() {
            break;
        }
        let holders: HashMap<ObjectId, Vec<usize>> =
            ids.iter().copied().zip(sites.holders(&ids)).collect();
        let (by_site, local) = assign(units, &todo, &holders, &dead, sites.site_count());
        todo.clear();
        let local_part = (!local.is_empty()).then(|| part_of(job, units, &local, &|id| id));
        let work: Vec<(usize, Vec<usize>, Part)> = by_site
            .into_iter()
            .enumerate()
            .filter(|(_, u)| !u.is_empty())
            .map(|(site, u)| {
                let p = part_of(job, units, &u, &site_names(sites, site, units, &u));
                (site, u, p)
            })
            .collect();
        let results: Vec<SiteResult> = std::thread::scope(|sc| {
            let handles: Vec<_> = work
                .into_iter()
                .map(|(site, u, p)| {
                    sc.spawn(move || {
                        let (o, args) = request(&p, job.opn, (job.make)(&p));
                        rt.count_agent_traffic(args.len(), 0);
                        let r = sites.compute_at(site, o, &args).and_then(|a| {
                            rt.count_agent_traffic(0, a.len());
                            let outs = outputs(job, units, &u);
                            sites.adopt(site, &outs).map(|()| a)
                        });
                        (site, u, r)
                    })
                })
                .collect();
            if let Some(p) = &local_part {
                answers.push(run_here(rt, sources, job, p));
            }
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        for (site, u, r) in results {
            match r {
                Ok(a) => answers.push(Ok(a)),
                Err(e) if sites.site_failed(site, &e) => {
                    tracing::warn!(site, error = %e, "agent operation failed over: recomputing");
                    dead.insert(site);
                    todo.extend(u);
                }
                Err(e) => answers.push(Err(e.into())),
            }
        }
    }
    if !todo.is_empty() {
        // Every site failed in turn: what is left runs here.
        let p = part_of(job, units, &todo, &|id| id);
        answers.push(run_here(rt, sources, job, &p));
    }
    answers.into_iter().collect::<Result<Vec<_>>>().map(Some)
}

/// The part over units `us`, each chunk named by `name`.
fn part_of(
    job: &Job<'_>,
    units: &[Vec<&Segment>],
    us: &[usize],
    name: &dyn Fn(ObjectId) -> ObjectId,
) -> Part {
    let mut sorted = us.to_vec();
    sorted.sort_unstable();
    let segs: Vec<&Segment> = sorted
        .iter()
        .flat_map(|&u| units[u].iter().copied())
        .collect();
    part(job.inputs, &segs, name)
}

/// The names on `site` of the chunks units `us` read, as a lookup.
fn site_names(
    sites: &dyn Sites,
    site: usize,
    units: &[Vec<&Segment>],
    us: &[usize],
) -> impl Fn(ObjectId) -> ObjectId {
    let mut ids: Vec<ObjectId> = us
        .iter()
        .flat_map(|&u| units[u].iter().flat_map(|s| s.pieces.iter().map(|p| p.id)))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let names: HashMap<ObjectId, ObjectId> = ids
        .iter()
        .copied()
        .zip(sites.names_at(site, &ids))
        .collect();
    move |id| names.get(&id).copied().unwrap_or(id)
}

/// The output objects `(id, bytes)` of units `us`.
fn outputs(job: &Job<'_>, units: &[Vec<&Segment>], us: &[usize]) -> Vec<(ObjectId, usize)> {
    let Some((out, size)) = job.out else {
        return Vec::new();
    };
    us.iter()
        .filter_map(|&u| {
            let rows: u64 = units[u].iter().map(|s| u64::from(s.pieces[0].count)).sum();
            out.ids.get(u).map(|&id| (id, rows as usize * size))
        })
        .collect()
}

/// Units by the site that runs them (least loaded holder of all their chunks, none of `dead`),
/// and the units no site holds entirely.
fn assign(
    units: &[Vec<&Segment>],
    todo: &[usize],
    holders: &HashMap<ObjectId, Vec<usize>>,
    dead: &HashSet<usize>,
    n_sites: usize,
) -> (Vec<Vec<usize>>, Vec<usize>) {
    let mut by_site = vec![Vec::new(); n_sites];
    let mut load = vec![0u64; n_sites];
    let mut local = Vec::new();
    for &u in todo {
        let mut cands: Option<Vec<usize>> = None;
        for s in &units[u] {
            for p in &s.pieces {
                let h = holders.get(&p.id).map_or(&[][..], Vec::as_slice);
                cands = Some(match cands {
                    None => h.iter().copied().filter(|x| !dead.contains(x)).collect(),
                    Some(c) => c.into_iter().filter(|x| h.contains(x)).collect(),
                });
            }
        }
        let rows: u64 = units[u].iter().map(|s| u64::from(s.pieces[0].count)).sum();
        match cands
            .unwrap_or_default()
            .into_iter()
            .filter(|&c| c < n_sites)
            .min_by_key(|&c| load[c])
        {
            Some(c) => {
                load[c] += rows;
                by_site[c].push(u);
            }
            None => local.push(u),
        }
    }
    (by_site, local)
}

/// Runs a part in this process over fetched chunks; outputs it writes are stored through the
/// runtime's backend (placed and replicated as any object).
fn run_here(rt: &Runtime, sources: &[&dyn Source], job: &Job<'_>, p: &Part) -> Result<Vec<u8>> {
    let io = LocalIo::new(sources.to_vec());
    let (o, args) = request(p, job.opn, (job.make)(p));
    let answer = local_op(&io, o, &args).map_err(|e| match e {
        ContainerError::Kernel(k) => io.fail(k),
        e => e,
    })?;
    let written = io.written.take();
    if !written.is_empty() {
        let items: Vec<(ObjectId, &[u8])> = written.iter().map(|(&id, d)| (id, &d[..])).collect();
        rt.backend().put_many(&items)?;
    }
    Ok(answer)
}

/// The client-side run of a vector operation from its encoded arguments (sliced ones included).
pub(super) fn local_op(io: &dyn kernels::ChunkIo, opn: u16, args: &[u8]) -> Result<Vec<u8>> {
    if opn == op::VEC_SLICED {
        let a = SlicedArgs::decode(args)?;
        let sliced = kernels::SlicedIo::new(io, &a)?;
        return local_op_flat(&sliced, a.op, &a.args);
    }
    local_op_flat(io, opn, args)
}

fn local_op_flat(io: &dyn kernels::ChunkIo, opn: u16, args: &[u8]) -> Result<Vec<u8>> {
    use farmem_proto::agent::{FilterRowsArgs, GroupRankArgs};
    Ok(match opn {
        op::VEC_AGGREGATE => kernels::aggregate(io, &VecRef::decode(args)?)?.encode(),
        op::VEC_COUNT => kernels::count(io, &CountArgs::decode(args)?)?.encode(),
        op::VEC_UNIQUE => kernels::unique(io, &UniqueArgs::decode(args)?)?.encode(),
        op::VEC_GROUP_BY => kernels::group_by(io, &GroupByArgs::decode(args)?)?.encode(),
        op::VEC_GROUP_BY_WHERE => {
            kernels::group_by_where(io, &GroupWhereArgs::decode(args)?)?.encode()
        }
        op::VEC_DERIVE => derive::derive(io, &DeriveArgs::decode(args)?)?.encode(),
        op::VEC_FILTER_ROWS => kernels::filter_rows(io, &FilterRowsArgs::decode(args)?)?.encode(),
        op::VEC_GROUP_RANK => kernels::group_rank(io, &GroupRankArgs::decode(args)?)?.encode(),
        other => {
            return Err(ContainerError::Invalid(format!(
                "agent operation {other} cannot be spread"
            )));
        }
    })
}
