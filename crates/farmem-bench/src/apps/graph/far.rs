//! The kernels over far vectors (farmem object mode), written the way the API makes fast:
//! per-vertex vectors zipped chunk by chunk as plain slices, the edges of a block of vertices
//! read with one `scan_range` each (non-temporal: the edges stream through without pushing the
//! ranks out), and the random reads of the previous iteration's values through a vector pinned
//! whole when it fits the budget (`FarVec::pin_all`), else through a cursor (PageRank gathers a
//! block's worth at once, then sums plain slices). With the remote agent, PageRank runs on the
//! memory server: each iteration is a gather and a sum (the dangling mass), a derived vector
//! (the contributions) and a segmented gather-sum over the edges (the next ranks), and only
//! requests and answers cross the network.

use std::sync::{Condvar, Mutex, PoisonError};

use farmem::containers::expr::Expr;
use farmem::containers::{Cmp, FarVec, Offload, PinnedVec, Predicate, Reader, Scalar, Sum};
use farmem::{Pod, Runtime};

use super::{BLOCK, Csr, DAMPING, Summary};

/// The graph in far vectors.
pub struct FarGraph {
    offsets: FarVec<u64>,
    sources: FarVec<u32>,
    out_degree: FarVec<u32>,
}

/// A far vector of `n` copies of `fill` whose chunks hold [`BLOCK`] values each.
///
/// # Errors
/// Runtime errors.
pub fn vertex_vec<T: Pod + Send + Sync>(
    rt: &Runtime,
    n: usize,
    fill: T,
) -> anyhow::Result<FarVec<T>> {
    let mut v = FarVec::with_chunk_bytes(rt, BLOCK * size_of::<T>())?;
    v.resize(n, fill)?;
    Ok(v)
}

impl FarGraph {
    /// Copies `g` into far vectors of `rt`.
    ///
    /// # Errors
    /// Runtime errors.
    pub fn load(rt: &Runtime, g: &Csr) -> anyhow::Result<Self> {
        let mut out_degree = FarVec::with_chunk_bytes(rt, BLOCK * 4)?;
        out_degree.extend_from_slice(&g.out_degree)?;
        Ok(Self {
            offsets: FarVec::from_slice(rt, &g.offsets)?,
            sources: FarVec::from_slice(rt, &g.sources)?,
            out_degree,
        })
    }

    /// Number of vertices.
    pub fn vertices(&self) -> usize {
        self.out_degree.len()
    }

    /// The offsets of block `b`'s vertices (one more than the block's size) into `offs`, and
    /// the sources of their in-edges into `srcs`.
    fn block_edges(
        &self,
        b: usize,
        len: usize,
        offs: &mut Vec<u64>,
        srcs: &mut Vec<u32>,
    ) -> anyhow::Result<()> {
        let lo = b * BLOCK;
        offs.clear();
        self.offsets
            .scan_range(lo..lo + len + 1, |x| offs.extend_from_slice(x))?;
        srcs.clear();
        self.sources
            .scan_range(offs[0] as usize..offs[len] as usize, |x| {
                srcs.extend_from_slice(x);
            })?;
        Ok(())
    }
}

/// Blocks the edge read-ahead may run ahead of the reader.
const READ_AHEAD: usize = 2;

/// Runs `body` while a helper thread fetches the offsets and in-edges of the blocks just ahead
/// of the one `body` reports reading (through the function it is given), so that the transfer
/// of the next blocks overlaps the sums of this one. The read-ahead is a hint: its failures
/// only mean that `body`'s own reads fetch.
fn with_edge_read_ahead<R>(
    g: &FarGraph,
    blocks: usize,
    body: impl FnOnce(&dyn Fn(usize)) -> R,
) -> R {
    // The block being read, and whether the reader is done.
    let progress = Mutex::new((0usize, false));
    let moved = Condvar::new();
    let n = g.vertices();
    std::thread::scope(|ts| {
        ts.spawn(|| {
            for b in 1..blocks {
                {
                    let mut p = progress.lock().unwrap_or_else(PoisonError::into_inner);
                    while !p.1 && p.0 + READ_AHEAD < b {
                        p = moved.wait(p).unwrap_or_else(PoisonError::into_inner);
                    }
                    if p.1 {
                        return;
                    }
                }
                let (lo, hi) = (b * BLOCK, ((b + 1) * BLOCK).min(n));
                let (Ok(first), Ok(end)) = (g.offsets.get(lo), g.offsets.get(hi)) else {
                    return;
                };
                if g.sources
                    .prefetch_range_nt(first as usize..end as usize)
                    .is_err()
                {
                    return;
                }
            }
        });
        let set = |b: usize, done: bool| {
            *progress.lock().unwrap_or_else(PoisonError::into_inner) = (b, done);
            moved.notify_all();
        };
        let r = body(&|b| set(b, false));
        set(blocks, true);
        r
    })
}

/// How PageRank reads the previous iteration's contributions.
enum Contrib<'a> {
    /// The whole vector pinned local.
    Pinned(PinnedVec<'a, f64>),
    /// A cursor that gathers a block's worth into a buffer.
    Gathered(Reader<'a, f64>),
}

/// `iters` PageRank iterations, as [`super::local::pagerank`] (same operations, same order).
///
/// # Errors
/// Runtime errors.
pub fn pagerank(rt: &Runtime, g: &FarGraph, iters: u32) -> anyhow::Result<FarVec<f64>> {
    let n = g.vertices();
    let mut rank = vertex_vec(rt, n, 1.0 / n as f64)?;
    let mut contrib = vertex_vec(rt, n, 0.0f64)?;
    let nblocks = n.div_ceil(BLOCK);
    let (mut offs, mut srcs, mut out) = (Vec::new(), Vec::new(), Vec::with_capacity(BLOCK));
    let mut vals = Vec::new();
    for _ in 0..iters {
        let mut dangling = 0.0;
        let blocks = rank.chunks().zip(g.out_degree.chunks());
        for ((r, d), c) in blocks.zip(contrib.chunks_mut()) {
            let (r, d, mut c) = (r?, d?, c?);
            for ((c, &r), &d) in c.iter_mut().zip(r.iter()).zip(d.iter()) {
                if d == 0 {
                    dangling += r;
                    *c = 0.0;
                } else {
                    *c = r / f64::from(d);
                }
            }
        }
        let base = (1.0 - DAMPING) / n as f64 + DAMPING * dangling / n as f64;
        // The contributions are read at random, about ten times each: pinned whole when they
        // fit (a read is then a table load and an element load), else through a cursor that
        // gathers a block's worth at once (then the sums run over plain slices).
        let mut contrib_at = match contrib.pin_all() {
            Ok(p) => Contrib::Pinned(p),
            Err(_) => Contrib::Gathered(contrib.reader()),
        };
        // Every value of the next ranks is written: a fresh vector takes them block by block,
        // where writing the old one in place would fetch each of its blocks first.
        let mut next = FarVec::with_chunk_bytes(rt, BLOCK * size_of::<f64>())?;
        with_edge_read_ahead(g, nblocks, |reading| -> anyhow::Result<()> {
            for b in 0..nblocks {
                reading(b);
                let len = (n - b * BLOCK).min(BLOCK);
                g.block_edges(b, len, &mut offs, &mut srcs)?;
                if let Contrib::Gathered(r) = &mut contrib_at {
                    vals.clear();
                    r.gather(srcs.iter().map(|&u| u as usize), &mut vals)?;
                }
                out.clear();
                for v in 0..len {
                    let edges = (offs[v] - offs[0]) as usize..(offs[v + 1] - offs[0]) as usize;
                    let s = match &contrib_at {
                        Contrib::Pinned(p) => {
                            srcs[edges].iter().fold(0.0, |s, &u| s + p[u as usize])
                        }
                        Contrib::Gathered(_) => vals[edges].iter().fold(0.0, |s, &x| s + x),
                    };
                    out.push(base + DAMPING * s);
                }
                next.extend_from_slice(&out)?;
            }
            Ok(())
        })?;
        drop(contrib_at);
        rank = next;
    }
    Ok(rank)
}

/// `iters` PageRank iterations on the memory server's agent, with the same operations in the
/// same order as [`super::local::pagerank`] (so the same bits): the contributions are
/// `rank / max(degree, 1) * live` (`live` is 1 for vertices with out-edges, else 0, so a
/// dangling vertex contributes `0.0`), the dangling mass the sum of the ranks gathered at the
/// dangling vertices in vertex order, and the next ranks the gather-sum over the in-edges.
///
/// # Errors
/// Runtime and agent errors.
pub fn pagerank_agent(rt: &Runtime, g: &FarGraph, iters: u32) -> anyhow::Result<FarVec<f64>> {
    let n = g.vertices();
    let mut rank = vertex_vec(rt, n, 1.0 / n as f64)?;
    let mut degree = FarVec::with_chunk_bytes(rt, BLOCK * size_of::<f64>())?;
    let mut live = FarVec::with_chunk_bytes(rt, BLOCK * size_of::<f64>())?;
    let (mut d, mut l) = (Vec::with_capacity(BLOCK), Vec::with_capacity(BLOCK));
    for c in g.out_degree.chunks() {
        let c = c?;
        d.clear();
        l.clear();
        d.extend(c.iter().map(|&x| f64::from(x.max(1))));
        l.extend(c.iter().map(|&x| if x == 0 { 0.0 } else { 1.0 }));
        degree.extend_from_slice(&d)?;
        live.extend_from_slice(&l)?;
    }
    let dangling = g
        .out_degree
        .filter(Predicate::new(Cmp::Eq, Scalar::U(0)), Offload::Remote)?;
    let contrib_of = Expr::col(0).div(Expr::col(1)).mul(Expr::col(2));
    // Seconds in each step: the dangling mass, the contributions, the gather-sum.
    let mut steps = [0.0f64; 3];
    for _ in 0..iters {
        let t = std::time::Instant::now();
        let mass = match rank
            .gather(&dangling, Offload::Remote)?
            .sum(Offload::Remote)?
        {
            Sum::F(s) => s,
            other => anyhow::bail!("the sum of f64 ranks came back as {other:?}"),
        };
        let base = (1.0 - DAMPING) / n as f64 + DAMPING * mass / n as f64;
        steps[0] += t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let inputs = [rank.agent_input(), degree.agent_input(), live.agent_input()];
        let contrib = FarVec::<f64>::derive(rt, &contrib_of, &inputs, Offload::Remote)?;
        drop(inputs);
        steps[1] += t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        rank = contrib.gather_sum(&g.sources, &g.offsets, DAMPING, base, Offload::Remote)?;
        steps[2] += t.elapsed().as_secs_f64();
    }
    let per = |s: f64| s * 1e3 / f64::from(iters.max(1));
    eprintln!(
        "agent PageRank, ms per iteration: dangling mass {:.1}, contributions {:.1}, gather-sum {:.1}",
        per(steps[0]),
        per(steps[1]),
        per(steps[2])
    );
    Ok(rank)
}

/// Breadth-first search from `source`, as [`super::local::bfs`].
///
/// # Errors
/// Runtime errors.
pub fn bfs(rt: &Runtime, g: &FarGraph, source: u32) -> anyhow::Result<FarVec<u32>> {
    let n = g.vertices();
    let mut dist = vertex_vec(rt, n, u32::MAX)?;
    if n == 0 {
        return Ok(dist);
    }
    dist.set(source as usize, 0)?;
    let nblocks = n.div_ceil(BLOCK);
    let (mut offs, mut srcs, mut out) = (Vec::new(), Vec::new(), Vec::with_capacity(BLOCK));
    let mut level = 0;
    loop {
        let mut changed = false;
        let mut dist_at = dist.reader();
        // Every distance of the next level is written: a fresh vector (see `pagerank`).
        let mut next = FarVec::with_chunk_bytes(rt, BLOCK * size_of::<u32>())?;
        for b in 0..nblocks {
            let len = (n - b * BLOCK).min(BLOCK);
            g.block_edges(b, len, &mut offs, &mut srcs)?;
            dist_at.read_range(b * BLOCK..b * BLOCK + len, &mut out)?;
            for (v, d) in out.iter_mut().enumerate() {
                if *d == u32::MAX {
                    let edges =
                        &srcs[(offs[v] - offs[0]) as usize..(offs[v + 1] - offs[0]) as usize];
                    for &u in edges {
                        if dist_at.get(u as usize)? == level {
                            *d = level + 1;
                            changed = true;
                            break;
                        }
                    }
                }
            }
            next.extend_from_slice(&out)?;
        }
        drop(dist_at);
        dist = next;
        if !changed {
            return Ok(dist);
        }
        level += 1;
    }
}

/// Both kernels and their answers: `(answers, PageRank seconds, BFS seconds)`.
///
/// # Errors
/// Runtime errors.
pub fn run(
    rt: &Runtime,
    g: &FarGraph,
    iters: u32,
    agent: bool,
) -> anyhow::Result<(super::Answers, f64, f64)> {
    let t = std::time::Instant::now();
    let rank = if agent {
        pagerank_agent(rt, g, iters)?
    } else {
        pagerank(rt, g, iters)?
    };
    let pr_secs = t.elapsed().as_secs_f64();
    let mut source = 0u32;
    let mut best = 0u32;
    for (k, c) in g.out_degree.chunks().enumerate() {
        for (i, &d) in c?.iter().enumerate() {
            if d > best {
                (best, source) = (d, (k * BLOCK + i) as u32);
            }
        }
    }
    let t = std::time::Instant::now();
    let dist = bfs(rt, g, source)?;
    let bfs_secs = t.elapsed().as_secs_f64();
    let mut sum = Summary::default();
    for c in rank.chunks() {
        c?.iter().for_each(|&r| sum.rank(r));
    }
    for c in dist.chunks() {
        c?.iter().for_each(|&d| sum.dist(d));
    }
    Ok((sum.answers(), pr_secs, bfs_secs))
}
