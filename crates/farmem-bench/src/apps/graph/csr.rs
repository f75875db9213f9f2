//! The graph: generated with power-law degrees, or read from an edge-list file; stored as CSR
//! by in-edges.

use std::io::BufRead;
use std::path::Path;

use anyhow::Context;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// A graph in compressed sparse rows by in-edges, plus out-degrees.
#[derive(Clone, Debug, Default)]
pub struct Csr {
    /// `offsets[v]..offsets[v + 1]` index `sources` for the edges into `v` (`vertices + 1`).
    pub offsets: Vec<u64>,
    /// Source vertex of every edge, grouped by target.
    pub sources: Vec<u32>,
    /// Out-degree of every vertex.
    pub out_degree: Vec<u32>,
}

impl Csr {
    /// Number of vertices.
    pub fn vertices(&self) -> usize {
        self.out_degree.len()
    }

    /// Number of edges.
    pub fn edges(&self) -> usize {
        self.sources.len()
    }

    /// Builds the CSR of `n` vertices from `(source, target)` pairs (counting sort by target;
    /// the sources of each target keep the order of `edges`).
    ///
    /// # Errors
    /// A vertex id out of range.
    pub fn from_edges(n: usize, edges: &[(u32, u32)]) -> anyhow::Result<Self> {
        let mut in_deg = vec![0u64; n + 1];
        let mut out_degree = vec![0u32; n];
        for &(s, t) in edges {
            anyhow::ensure!(
                (s as usize) < n && (t as usize) < n,
                "edge {s} -> {t} outside {n} vertices"
            );
            in_deg[t as usize + 1] += 1;
            out_degree[s as usize] += 1;
        }
        for v in 0..n {
            in_deg[v + 1] += in_deg[v];
        }
        let offsets = in_deg;
        let mut fill = offsets.clone();
        let mut sources = vec![0u32; edges.len()];
        for &(s, t) in edges {
            let at = &mut fill[t as usize];
            sources[*at as usize] = s;
            *at += 1;
        }
        Ok(Self {
            offsets,
            sources,
            out_degree,
        })
    }
}

/// A vertex drawn with a power-law popularity: rank `floor(n * u^3)` (density falling as
/// `rank^(-2/3)`), scattered over the ids by a fixed permutation so popular vertices are not
/// neighbours.
fn power_law_vertex(rng: &mut SmallRng, n: u64, mult: u64) -> u32 {
    let u: f64 = rng.random();
    let rank = ((n as f64) * u * u * u) as u64;
    ((rank.min(n - 1) * mult) % n) as u32
}

/// A multiplier coprime with `n` near `start % n` (scatters ranks over ids as a permutation).
fn coprime_multiplier(n: u64, start: u64) -> u64 {
    if n <= 2 {
        return 1;
    }
    let mut m = start % n;
    while m == 0 || gcd(m, n) != 1 {
        m = (m + 1) % n;
    }
    m
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A deterministic graph of `n` vertices and `m` edges whose in- and out-degrees follow power
/// laws (both endpoints drawn by [`power_law_vertex`], with different permutations).
///
/// # Errors
/// `n` of 0 or above `u32::MAX`.
pub fn generate(n: u64, m: u64, seed: u64) -> anyhow::Result<Csr> {
    anyhow::ensure!(
        n > 0 && n <= u64::from(u32::MAX),
        "vertex count {n} out of range"
    );
    let mut rng = SmallRng::seed_from_u64(seed);
    let ms = coprime_multiplier(n, 0x9E37_79B9_7F4A_7C15);
    let mt = coprime_multiplier(n, 0xC2B2_AE3D_27D4_EB4F);
    let edges: Vec<(u32, u32)> = (0..m)
        .map(|_| {
            (
                power_law_vertex(&mut rng, n, ms),
                power_law_vertex(&mut rng, n, mt),
            )
        })
        .collect();
    Csr::from_edges(n as usize, &edges)
}

/// Reads an edge list: one `source target` pair of non-negative integers per line, separated
/// by white space (or a comma); lines starting with `#` or `%` are comments. The vertex count
/// is the largest id + 1.
///
/// # Errors
/// I/O errors, a malformed line, an id above `u32::MAX - 1`.
pub fn read_edge_list(path: &Path) -> anyhow::Result<Csr> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut edges = Vec::new();
    let mut n = 0u64;
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with('%') {
            continue;
        }
        let mut it = t
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty());
        let mut id = || -> anyhow::Result<u32> {
            let s = it.next().context("missing vertex id")?;
            let v: u32 = s.parse().with_context(|| format!("bad vertex id {s:?}"))?;
            anyhow::ensure!(v < u32::MAX, "vertex id {v} too large");
            Ok(v)
        };
        let (s, d) = (id(), id());
        let (s, d) = (
            s.with_context(|| format!("line {}", i + 1))?,
            d.with_context(|| format!("line {}", i + 1))?,
        );
        n = n.max(u64::from(s.max(d)) + 1);
        edges.push((s, d));
    }
    Csr::from_edges(n as usize, &edges)
}
