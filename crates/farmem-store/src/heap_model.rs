//! Models of how objects die, run against the heap: the bytes it holds beyond the live ones and
//! the bytes its evacuations copy.

use super::*;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = crate::namespace::mix(self.0.wrapping_add(0x9e37_79b9_7f4a_7c15));
        self.0 % n
    }
}

#[derive(Debug, Default)]
struct Outcome {
    written: u64,
    moved: u64,
    /// Mean over samples of (filled - live) / live.
    over_mean: f64,
    over_max: f64,
}

fn sample(heap: &Heap, o: &mut Outcome, n: &mut u32) {
    let over = (heap.filled - heap.live) as f64 / heap.live.max(1) as f64;
    o.over_mean += over;
    o.over_max = o.over_max.max(over);
    *n += 1;
}

/// Groups of objects (lengths from `group`) written one after the other, each freed whole: a
/// random one of the `window` oldest.
fn groups(
    seed: u64,
    live_target: usize,
    rounds: usize,
    window: usize,
    mut group: impl FnMut(&mut Rng) -> Vec<usize>,
) -> Outcome {
    let mut rng = Rng(seed);
    let mut heap = Heap::new();
    let mut groups: std::collections::VecDeque<Vec<u32>> = Default::default();
    let mut live = 0usize;
    let (mut o, mut n) = (Outcome::default(), 0);
    let data = vec![7u8; 16 << 10];
    for round in 0..rounds {
        let mut g = Vec::new();
        for len in group(&mut rng) {
            g.push(heap.insert(&data[..len]).unwrap());
            live += len;
            o.written += len as u64;
        }
        groups.push_back(g);
        while live > live_target {
            let at = rng.below(groups.len().min(window) as u64) as usize;
            for r in groups.remove(at).unwrap() {
                live -= heap.remove(r);
            }
        }
        if round > rounds / 4 {
            sample(&heap, &mut o, &mut n);
        }
    }
    o.moved = heap.moved;
    o.over_mean /= f64::from(n.max(1));
    o
}

/// A coded pool's member: spans of 1-16 KiB objects (about `span` bytes each) and now and then
/// a parity span of 8 KiB pages arrive one after the other; each dies whole, roughly oldest
/// first (compaction picks the stripes with the most dead bytes: a random one of the oldest
/// few).
fn spans(span: usize, live_target: usize, rounds: usize) -> Outcome {
    groups(5, live_target, rounds, 8, |rng| {
        let parity = rng.below(3) == 0;
        let mut lens = Vec::new();
        while lens.iter().sum::<usize>() < span {
            lens.push(if parity {
                8 << 10
            } else {
                1024 + rng.below(15 << 10) as usize
            });
        }
        lens
    })
}

/// Runs of 1-64 objects of 1-16 KiB written one after the other, each freed whole at a random
/// time (any run, not the oldest).
fn runs(live_target: usize, rounds: usize) -> Outcome {
    groups(9, live_target, rounds, usize::MAX, |rng| {
        (0..1 + rng.below(64))
            .map(|_| 1024 + rng.below(15 << 10) as usize)
            .collect()
    })
}

/// Objects of 1-16 KiB freed one at a time at random.
fn random(live_target: usize, rounds: usize) -> Outcome {
    let mut rng = Rng(13);
    let mut heap = Heap::new();
    let mut refs: Vec<(u32, usize)> = Vec::new();
    let mut live = 0usize;
    let (mut o, mut n) = (Outcome::default(), 0);
    let data = vec![7u8; 16 << 10];
    for round in 0..rounds {
        for _ in 0..64 {
            let len = 1024 + rng.below(15 << 10) as usize;
            refs.push((heap.insert(&data[..len]).unwrap(), len));
            live += len;
            o.written += len as u64;
        }
        while live > live_target {
            let at = rng.below(refs.len() as u64) as usize;
            let (r, len) = refs.swap_remove(at);
            heap.remove(r);
            live -= len;
        }
        if round > rounds / 4 {
            sample(&heap, &mut o, &mut n);
        }
    }
    o.moved = heap.moved;
    o.over_mean /= f64::from(n.max(1));
    o
}

/// The heap's bound on what it holds beyond the live bytes: dead bytes up to a sixty-fourth of
/// the live ones, two open segments (`SLACK_FLOOR`) and segments waiting to reach a sixteenth
/// dead before they are evacuated, under every pattern of frees; and evacuations that copy
/// little when objects die in groups.
#[test]
fn held_bytes_stay_near_the_live_ones() {
    let live = 24 << 20;
    let bound = 1.0 / SLACK as f64 + SLACK_FLOOR as f64 / live as f64;
    for (name, o, over, moved) in [
        ("spans", spans(128 << 10, live, 1_500), bound + 0.01, 1.0),
        ("runs", runs(live, 1_500), bound + 0.01, 6.0),
        // Objects freed one by one leave every segment partly dead; evacuating one needs a
        // sixteenth of it dead.
        ("random", random(live, 800), 1.0 / VICTIM_DEAD as f64, 16.0),
    ] {
        let per = o.moved as f64 / o.written as f64;
        eprintln!(
            "{name}: written {} MB, moved {} MB ({per:.2} per byte written), held beyond live: mean {:.4}, max {:.4}",
            o.written / 1_000_000,
            o.moved / 1_000_000,
            o.over_mean,
            o.over_max
        );
        assert!(
            o.over_max <= over,
            "{name}: held {:.4} beyond live, bound {over:.4}",
            o.over_max
        );
        assert!(per <= moved, "{name}: moved {per:.2} per byte written");
    }
}
