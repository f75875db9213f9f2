//! A graph workload on a paged region: a CSR graph built under a loose budget (its counting
//! sort scatters every edge to a random page), the budget tightened, then PageRank-style passes
//! (offsets, sources and the output scanned in order, the contribution vector read at random).
//! The passes must finish with a bounded number of fetches: the contribution vector fits the
//! budget and must stay resident. Skips where userfaultfd paging is unavailable (fails instead
//! when `FARMEM_REQUIRE_PRIVILEGED` is set).

mod support;

use std::sync::Arc;

use farmem::EmbeddedStore;
use farmem::paging::{PAGE_SIZE, PagedRegion, PagingConfig};

const VERTICES: usize = 1 << 15;
const EDGES: usize = 1 << 20;
const ITERS: usize = 3;

/// Carves typed, zeroed arrays out of a paged region, each starting on a page.
struct Carver<'a> {
    region: &'a PagedRegion,
    at: usize,
}

impl Carver<'_> {
    fn take<T: Copy>(&mut self, n: usize) -> &'static mut [T] {
        let bytes = (n * size_of::<T>()).next_multiple_of(PAGE_SIZE);
        assert!(self.at + bytes <= self.region.len());
        // SAFETY: the range lies inside the region, is page-aligned (so aligned for `T`), reads
        // as zeros (a valid `u32`/`u64`/`f64`), and no other array overlaps it. The region
        // outlives every use below (the test drops it last).
        let s = unsafe {
            std::slice::from_raw_parts_mut(self.region.as_ptr().add(self.at).cast::<T>(), n)
        };
        self.at += bytes;
        s
    }
}

/// A vertex with a skewed popularity (rank `n * u^3`), scattered over the ids.
fn vertex(x: &mut u64) -> u32 {
    *x = x
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let u = (*x >> 11) as f64 / (1u64 << 53) as f64;
    let rank = ((VERTICES as f64) * u * u * u) as usize;
    ((rank.min(VERTICES - 1) * 7919) % VERTICES) as u32
}

/// PageRank-style passes over the graph; returns the digest of the final vector.
fn passes(offsets: &[u64], sources: &[u32], contrib: &mut [f64], next: &mut [f64]) -> u64 {
    for (v, c) in contrib.iter_mut().enumerate() {
        *c = 1.0 / (1 + v % 7) as f64;
    }
    for _ in 0..ITERS {
        for (v, out) in next.iter_mut().enumerate() {
            let edges = &sources[offsets[v] as usize..offsets[v + 1] as usize];
            *out = 0.15 + 0.85 * edges.iter().map(|&u| contrib[u as usize]).sum::<f64>();
        }
        for (c, &n) in contrib.iter_mut().zip(next.iter()) {
            *c = n / 8.0;
        }
    }
    contrib
        .iter()
        .fold(0u64, |h, c| (h ^ c.to_bits()).wrapping_mul(0x100_0000_01b3))
}

/// Builds the CSR by in-edges with a counting sort (edges scattered by target).
fn build(edges: &[(u32, u32)], offsets: &mut [u64], fill: &mut [u64], sources: &mut [u32]) {
    for &(_, t) in edges {
        offsets[t as usize + 1] += 1;
    }
    for v in 0..VERTICES {
        offsets[v + 1] += offsets[v];
    }
    fill.copy_from_slice(&offsets[..VERTICES]);
    for &(s, t) in edges {
        let at = &mut fill[t as usize];
        sources[*at as usize] = s;
        *at += 1;
    }
}

#[test]
fn pagerank_passes_under_a_tight_budget_keep_the_hot_vector_resident() {
    if !support::paging_usable() {
        return;
    }
    let mut x = 42u64;
    let edges: Vec<(u32, u32)> = (0..EDGES)
        .map(|_| (vertex(&mut x), vertex(&mut x)))
        .collect();

    // All in local memory: the expected answer.
    let mut offsets = vec![0u64; VERTICES + 1];
    let mut fill = vec![0u64; VERTICES];
    let mut sources = vec![0u32; EDGES];
    build(&edges, &mut offsets, &mut fill, &mut sources);
    let mut contrib = vec![0f64; VERTICES];
    let mut next = vec![0f64; VERTICES];
    let want = passes(&offsets, &sources, &mut contrib, &mut next);

    // Working set of the passes: offsets, sources, contrib, next (1.25k pages; contrib is 64 of
    // them). Budget: a quarter of it.
    let ws = 8 * (VERTICES + 1) + 4 * EDGES + 2 * 8 * VERTICES;
    let budget = ws / 4;
    let region = PagedRegion::new(
        8 << 20,
        Arc::new(EmbeddedStore::new()),
        PagingConfig::new(8 << 20),
    )
    .unwrap();
    let mut carve = Carver {
        region: &region,
        at: 0,
    };
    let offsets = carve.take::<u64>(VERTICES + 1);
    let sources = carve.take::<u32>(EDGES);
    let contrib = carve.take::<f64>(VERTICES);
    let next = carve.take::<f64>(VERTICES);
    let fill = carve.take::<u64>(VERTICES);
    // The build under the loose budget: its random scatter fetches nothing.
    build(&edges, offsets, fill, sources);
    assert_eq!(region.stats().fetch_faults, 0, "{:?}", region.stats());
    region
        .discard(carve.at - fill.len() * 8, fill.len() * 8)
        .unwrap();

    region.set_budget(budget).unwrap();
    let before = region.stats();
    let budget_pages = (budget / PAGE_SIZE) as u64;
    assert!(
        before.resident_pages <= budget_pages,
        "{} resident over a budget of {budget_pages} pages",
        before.resident_pages
    );
    let got = passes(offsets, sources, contrib, next);
    let after = region.stats();
    assert_eq!(got, want, "the paged passes computed something else");
    assert!(after.resident_pages <= budget_pages, "{after:?}");
    // Pages the passes stream per iteration (all but contrib, twice for next: written, then
    // read): about 1.25k. If the contribution vector (read at random: a source page reads from
    // nearly every one of its 64 pages)
    // were evicted between uses, nearly every source page would refault several of its pages:
    // tens of thousands of fetches per iteration.
    let streamed = ((ws - 8 * VERTICES) / PAGE_SIZE + (8 * VERTICES) / PAGE_SIZE) as u64;
    let fetched = after.fetch_faults - before.fetch_faults;
    let bound = 2 * streamed * ITERS as u64;
    assert!(
        fetched <= bound,
        "{fetched} fetch faults for {ITERS} passes over {streamed} streamed pages (bound {bound}): {after:?}"
    );
}
