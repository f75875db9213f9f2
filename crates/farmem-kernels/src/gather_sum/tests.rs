use std::collections::HashMap;
use std::sync::Mutex;

use proptest::prelude::*;

use super::*;
use farmem_proto::agent::OutSpec;

/// Objects in a map, shareable between the threads of a parallel kernel.
#[derive(Default)]
struct Mem(Mutex<HashMap<u64, Vec<u8>>>);

impl ChunkIo for Mem {
    fn read(&self, id: u64, f: &mut dyn FnMut(&[u8])) -> Result<(), KernelError> {
        let map = self.0.lock().unwrap();
        f(map.get(&id).ok_or(KernelError::NotFound(id))?);
        Ok(())
    }
    fn write(&self, id: u64, data: &[u8]) -> Result<(), KernelError> {
        self.0.lock().unwrap().insert(id, data.to_vec());
        Ok(())
    }
}

impl Mem {
    /// Stores `bytes` as chunks of the given element counts, from object `base` on.
    fn vec(&self, ty: ElemType, bytes: &[u8], counts: &[usize], base: u64) -> VecRef {
        let size = ty.size();
        let mut at = 0;
        let mut chunks = Vec::new();
        for (i, &c) in counts.iter().enumerate() {
            let id = base + i as u64;
            self.write(id, &bytes[at..at + c * size]).unwrap();
            chunks.push((id, c as u32));
            at += c * size;
        }
        assert_eq!(at, bytes.len());
        VecRef { ty, chunks }
    }

    /// The `len` f64s stored under `out`.
    fn read_f64s(&self, out: &OutSpec, len: usize) -> Vec<f64> {
        let map = self.0.lock().unwrap();
        let bytes: Vec<u8> = out
            .ids
            .iter()
            .take(len.div_ceil(out.chunk_elems as usize))
            .flat_map(|id| map[id].clone())
            .collect();
        assert_eq!(bytes.len(), len * 8);
        bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
}

/// Element counts of chunks that cover `len` elements, each at most `max`.
fn cut(len: usize, max: usize, seed: u64) -> Vec<usize> {
    let mut counts = Vec::new();
    let (mut left, mut x) = (len, seed | 1);
    while left > 0 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let c = (1 + (x as usize) % max).min(left);
        counts.push(c);
        left -= c;
    }
    counts
}

/// A CSR as the kernel's arguments over `mem`, with `idx` cut into random chunks.
fn args_for(
    mem: &Mem,
    values: &[f64],
    idx: &[u32],
    offsets: &[u64],
    per: u32,
    seed: u64,
) -> GatherSumArgs {
    let v = mem.vec(
        ElemType::F64,
        &values
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<_>>(),
        &cut(values.len(), 7, seed),
        1 << 20,
    );
    let i = mem.vec(
        ElemType::U32,
        &idx.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
        &cut(idx.len(), 13, seed + 1),
        2 << 20,
    );
    let o = mem.vec(
        ElemType::U64,
        &offsets
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<_>>(),
        &cut(offsets.len(), 5, seed + 2),
        3 << 20,
    );
    let segments = offsets.len().saturating_sub(1);
    GatherSumArgs {
        values: v,
        idx: i,
        offsets: o,
        scale: 0.85,
        shift: 0.01,
        out: OutSpec {
            chunk_elems: per,
            ids: (4 << 20..(4 << 20) + segments.div_ceil(per as usize) as u64).collect(),
        },
    }
}

fn model(values: &[f64], idx: &[u32], offsets: &[u64]) -> Vec<f64> {
    offsets
        .windows(2)
        .map(|w| {
            let s = idx[w[0] as usize..w[1] as usize]
                .iter()
                .fold(0.0, |s, &u| s + values[u as usize]);
            0.01 + 0.85 * s
        })
        .collect()
}

/// A CSR from per-segment degrees: the offsets (starting at `start`) and random indices below
/// `n`, with `tail` indices past the last segment.
fn csr(degrees: &[usize], n: u32, start: u64, tail: usize, seed: u64) -> (Vec<u32>, Vec<u64>) {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % u64::from(n.max(1))) as u32
    };
    let mut idx: Vec<u32> = (0..start).map(|_| next()).collect();
    let mut offsets = vec![start];
    for &d in degrees {
        idx.extend((0..d).map(|_| next()));
        offsets.push(idx.len() as u64);
    }
    idx.extend((0..tail).map(|_| next()));
    (idx, offsets)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any chunking, any split into threads: the same bits as a plain left-to-right model.
    #[test]
    fn parallel_sums_match_the_model(
        degrees in prop::collection::vec(prop_oneof![Just(0usize), 1..6usize, 20..90usize], 0..120),
        n in 1..40u32,
        start in 0..5u64,
        tail in 0..5usize,
        per in 1..9u32,
        threads in 1..5usize,
        min_edges in 1..64u64,
        seed in any::<u64>(),
    ) {
        let values: Vec<f64> = (0..n).map(|i| f64::from(i) * 0.37 - 3.1).collect();
        let (idx, offsets) = csr(&degrees, n, start, tail, seed);
        let want = model(&values, &idx, &offsets);
        let mem = Mem::default();
        let args = args_for(&mem, &values, &idx, &offsets, per, seed);
        let len = split_sums(&mem, &args, threads, min_edges).unwrap();
        prop_assert_eq!(len as usize, want.len());
        let got = mem.read_f64s(&args.out, want.len());
        prop_assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()));
        let one = Mem::default();
        let args = args_for(&one, &values, &idx, &offsets, per, seed);
        prop_assert_eq!(gather_sum(&one, &args).unwrap() as usize, want.len());
        prop_assert_eq!(one.read_f64s(&args.out, want.len()), got);
    }
}

#[test]
fn runs_start_on_chunk_boundaries_and_balance_edges() {
    // 100 segments of two edges: halves cut at the chunk start below segment 50.
    let even: Vec<u64> = (0..=100).map(|i| i * 2).collect();
    assert_eq!(split_segments(&even, 2, 4), vec![0..48, 48..100]);
    // Segment 0 holds half the edges, the rest one each: a run cannot start inside the first
    // chunk, so two parts become one.
    let mut heavy = vec![0u64, 100];
    heavy.extend((1..=100).map(|i| 100 + i));
    assert_eq!(split_segments(&heavy, 2, 8), vec![0..101]);
    for offsets in [&even, &heavy] {
        for parts in 1..6 {
            let runs = split_segments(offsets, parts, 4);
            assert_eq!(runs.first().unwrap().start, 0);
            assert_eq!(runs.last().unwrap().end, offsets.len() - 1);
            assert!(runs.windows(2).all(|w| w[0].end == w[1].start));
            assert!(runs.iter().all(|r| r.start % 4 == 0 && !r.is_empty()));
        }
    }
    // No edges at all: one run.
    assert_eq!(split_segments(&[0, 0, 0], 4, 1), vec![0..2]);
}

#[test]
fn an_index_past_the_values_writes_nothing_on_any_thread() {
    let values = [1.0f64, 2.0, 3.0];
    let (mut idx, offsets) = csr(&[40; 10], 3, 0, 0, 7);
    idx[395] = 3;
    let mem = Mem::default();
    let args = args_for(&mem, &values, &idx, &offsets, 2, 9);
    let before = mem.0.lock().unwrap().len();
    let err = split_sums(&mem, &args, 4, 1).unwrap_err();
    assert!(
        matches!(err, KernelError::IndexOutOfBounds { index: 3, len: 3 }),
        "{err:?}"
    );
    assert_eq!(mem.0.lock().unwrap().len(), before, "nothing written");
}

#[test]
fn too_few_output_ids_is_invalid() {
    let values = [1.0f64, 2.0];
    let (idx, offsets) = csr(&[3; 8], 2, 0, 0, 3);
    let mem = Mem::default();
    let mut args = args_for(&mem, &values, &idx, &offsets, 2, 5);
    args.out.ids.pop();
    for threads in [1, 3] {
        let err = split_sums(&mem, &args, threads, 1).unwrap_err();
        assert!(matches!(err, KernelError::Invalid(_)), "{err:?}");
    }
}
