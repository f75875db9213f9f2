//! The kernels over plain slices: what all-local, paging and kernel swap run.

use super::{Csr, DAMPING, Summary};

/// `iters` PageRank iterations (pull, dangling mass spread evenly) from the uniform vector.
pub fn pagerank(g: &Csr, iters: u32) -> Vec<f64> {
    let n = g.vertices();
    let mut rank = vec![1.0 / n as f64; n];
    let mut contrib = vec![0.0f64; n];
    let mut next = vec![0.0f64; n];
    for _ in 0..iters {
        let mut dangling = 0.0;
        for ((c, &r), &d) in contrib.iter_mut().zip(&rank).zip(&g.out_degree) {
            if d == 0 {
                dangling += r;
                *c = 0.0;
            } else {
                *c = r / f64::from(d);
            }
        }
        let base = (1.0 - DAMPING) / n as f64 + DAMPING * dangling / n as f64;
        for (v, out) in next.iter_mut().enumerate() {
            let edges = &g.sources[g.offsets[v] as usize..g.offsets[v + 1] as usize];
            let mut s = 0.0;
            for &u in edges {
                s += contrib[u as usize];
            }
            *out = base + DAMPING * s;
        }
        std::mem::swap(&mut rank, &mut next);
    }
    rank
}

/// Breadth-first search from `source` along the edges (bottom-up: each level, every unvisited
/// vertex looks for an in-neighbour on the frontier). Distances, `u32::MAX` for unreached.
pub fn bfs(g: &Csr, source: u32) -> Vec<u32> {
    let n = g.vertices();
    let mut dist = vec![u32::MAX; n];
    if n == 0 {
        return dist;
    }
    dist[source as usize] = 0;
    let mut next = dist.clone();
    let mut level = 0;
    loop {
        let mut changed = false;
        for (v, out) in next.iter_mut().enumerate() {
            *out = dist[v];
            if dist[v] == u32::MAX {
                let edges = &g.sources[g.offsets[v] as usize..g.offsets[v + 1] as usize];
                if edges.iter().any(|&u| dist[u as usize] == level) {
                    *out = level + 1;
                    changed = true;
                }
            }
        }
        std::mem::swap(&mut dist, &mut next);
        if !changed {
            return dist;
        }
        level += 1;
    }
}

/// Both kernels and their answers.
pub fn run(g: &Csr, iters: u32) -> (super::Answers, f64, f64) {
    let t = std::time::Instant::now();
    let rank = pagerank(g, iters);
    let pr_secs = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let dist = bfs(g, super::bfs_source(&g.out_degree));
    let bfs_secs = t.elapsed().as_secs_f64();
    let mut sum = Summary::default();
    rank.iter().for_each(|&r| sum.rank(r));
    dist.iter().for_each(|&d| sum.dist(d));
    (sum.answers(), pr_secs, bfs_secs)
}
