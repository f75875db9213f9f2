use super::*;
use farmem::{Runtime, RuntimeConfig};

#[test]
fn csr_groups_sources_by_target_and_counts_out_degrees() {
    let g = Csr::from_edges(4, &[(0, 1), (2, 1), (1, 3), (3, 0), (0, 3)]).unwrap();
    assert_eq!(g.offsets, [0, 1, 3, 3, 5]);
    assert_eq!(g.sources, [3, 0, 2, 1, 0]);
    assert_eq!(g.out_degree, [2, 1, 1, 1]);
    assert!(Csr::from_edges(2, &[(0, 2)]).is_err());
}

#[test]
fn generated_degrees_follow_a_power_law() {
    let g = generate(1 << 14, 1 << 17, 1).unwrap();
    assert_eq!((g.vertices(), g.edges()), (1 << 14, 1 << 17));
    let mut deg = g.out_degree.clone();
    deg.sort_unstable_by(|a, b| b.cmp(a));
    // The top 1% of vertices hold a large share of the edges, far above 1%.
    let top: u64 = deg[..deg.len() / 100].iter().map(|&d| u64::from(d)).sum();
    assert!(top * 10 > g.edges() as u64, "top 1% hold {top} edges");
    assert_eq!(generate(1 << 14, 1 << 17, 1).unwrap().sources, g.sources);
}

#[test]
fn kernels_on_a_small_graph() {
    // 0 -> 1 -> 2, 3 isolated, 2 -> 0.
    let g = Csr::from_edges(4, &[(0, 1), (1, 2), (2, 0)]).unwrap();
    assert_eq!(local::bfs(&g, 0), [0, 1, 2, u32::MAX]);
    let r = local::pagerank(&g, 30);
    assert!((r.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    assert!((r[0] - r[1]).abs() < 1e-6 && r[3] < r[0]);
}

/// Far and local kernels give bit-identical answers, in a heap smaller than the data (with
/// blocks spanning several chunks of the edges, misses under cursors, and evictions).
#[test]
fn far_kernels_match_the_local_ones() {
    let g = generate(40_000, 400_000, 3).unwrap();
    let (want, _, _) = local::run(&g, 4);
    let rt = Runtime::new(RuntimeConfig::new(2 << 20).region_size(64 << 10)).unwrap();
    let fg = far::FarGraph::load(&rt, &g).unwrap();
    let (got, _, _) = far::run(&rt, &fg, 4, false).unwrap();
    assert_eq!(got, want);
    assert!(want.reached > 1 && want.levels > 2, "{want:?}");
    let st = rt.stats();
    assert!(st.misses + st.prefetched > 0, "the graph stayed local");
    // On the agent (the embedded store's): the same bits.
    let (got, _, _) = far::run(&rt, &fg, 4, true).unwrap();
    assert_eq!(got, want);
}

#[test]
fn edge_list_files_are_read() {
    let dir = std::env::temp_dir().join(format!("farmem-graph-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("g.txt");
    std::fs::write(&p, "# comment\n0 1\n1\t2\n\n2,0\n").unwrap();
    let g = read_edge_list(&p).unwrap();
    assert_eq!((g.vertices(), g.edges()), (3, 3));
    std::fs::write(&p, "0 x\n").unwrap();
    assert!(read_edge_list(&p).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
