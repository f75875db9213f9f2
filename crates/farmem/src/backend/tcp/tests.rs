//! Unit tests of the TCP backend's batching.

use super::cut;

#[test]
fn cutting_batches() {
    let g: Vec<usize> = (0..10).collect();
    assert_eq!(cut(&g, 4, usize::MAX, |_| 0), vec![0..4, 4..8, 8..10]);
    assert_eq!(
        cut(&g, 100, 25, |_| 10),
        vec![0..2, 2..4, 4..6, 6..8, 8..10]
    );
    assert_eq!(cut(&g[..1], 100, 5, |_| 10), vec![0..1]);
    assert!(cut(&[], 1, 1, |_| 0).is_empty());
}
