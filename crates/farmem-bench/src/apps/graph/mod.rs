//! Graph analytics on a CSR graph: PageRank (pull) and breadth-first search (bottom-up), the
//! LegoOS motivating workload (a small hot set, the rank vector, in a large footprint, the
//! edges). The graph is generated with power-law degrees or read from an edge-list file.
//!
//! The graph is stored by in-edges: `offsets[v]..offsets[v + 1]` index the sources of the edges
//! into `v`. The kernels are written once over plain slices ([`local`]) and once over far
//! vectors ([`far`]); both do the same floating-point operations in the same order, so their
//! results are bit-identical (checked by `Answers::digest`).

mod csr;
pub mod far;
pub mod local;
#[cfg(test)]
mod tests;

pub use csr::{Csr, generate, read_edge_list};

/// PageRank damping factor.
pub const DAMPING: f64 = 0.85;

/// Vertices per chunk of every per-vertex far vector (so chunk `c` of each covers the same
/// vertices) and per block of the kernels' outer loop.
pub const BLOCK: usize = 8192;

/// What the kernels compute, reduced to digests that must agree across modes.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Answers {
    /// Digest of the final PageRank vector (every bit of every rank).
    pub rank_digest: String,
    /// The largest rank and its vertex.
    pub top_vertex: u32,
    /// Digest of the BFS distances.
    pub bfs_digest: String,
    /// Vertices the BFS reached.
    pub reached: u64,
    /// BFS levels (the source's eccentricity + 1).
    pub levels: u32,
}

/// Folds values into a digest, in order.
#[derive(Clone, Copy, Debug)]
pub struct Digest(u64);

impl Default for Digest {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Digest {
    /// Adds one value.
    #[inline]
    pub fn add(&mut self, x: u64) {
        self.0 = (self.0 ^ x)
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(17);
    }

    /// The digest as hex.
    pub fn hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

/// The BFS source: the vertex with the most out-edges (the lowest such id).
pub fn bfs_source(out_degree: &[u32]) -> u32 {
    let mut best = 0usize;
    for (v, &d) in out_degree.iter().enumerate() {
        if d > out_degree[best] {
            best = v;
        }
    }
    best as u32
}

/// Bytes the kernels work on: the graph (offsets, sources, out-degrees) plus the PageRank
/// vectors (rank, contribution, next rank), the larger of the two kernels' working sets.
pub fn working_set_bytes(vertices: u64, edges: u64) -> u64 {
    8 * (vertices + 1) + 4 * edges + 4 * vertices + 3 * 8 * vertices
}

/// Reduces the kernels' outputs, visited in vertex order, to [`Answers`].
#[derive(Debug, Default)]
pub struct Summary {
    ranks: Digest,
    dists: Digest,
    next_rank: u32,
    top: (f64, u32),
    reached: u64,
    max_dist: u32,
}

impl Summary {
    /// The next vertex's rank.
    pub fn rank(&mut self, r: f64) {
        self.ranks.add(r.to_bits());
        if r > self.top.0 {
            self.top = (r, self.next_rank);
        }
        self.next_rank += 1;
    }

    /// The next vertex's BFS distance.
    pub fn dist(&mut self, d: u32) {
        self.dists.add(u64::from(d));
        if d != u32::MAX {
            self.reached += 1;
            self.max_dist = self.max_dist.max(d);
        }
    }

    /// The answers.
    pub fn answers(&self) -> Answers {
        Answers {
            rank_digest: self.ranks.hex(),
            top_vertex: self.top.1,
            bfs_digest: self.dists.hex(),
            reached: self.reached,
            levels: if self.reached == 0 {
                0
            } else {
                self.max_dist + 1
            },
        }
    }
}
