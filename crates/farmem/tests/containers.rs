//! Containers against their std counterparts, under tiny local budgets (constant eviction), with
//! the embedded backend; agent operations give identical results offloaded and local.

use std::collections::{HashMap, VecDeque};

use farmem::containers::{
    Cmp, FarHashMap, FarList, FarQueue, FarStack, FarVec, HashMapConfig, Offload, Predicate,
    Scalar, Sum,
};
use farmem::{Runtime, RuntimeConfig};
use proptest::prelude::*;

/// A runtime with a budget far below the data sizes used, so objects move constantly.
fn tiny_rt() -> Runtime {
    let cfg = RuntimeConfig::new(0).region_size(64 << 10);
    let min = cfg.minimum_budget();
    Runtime::new(RuntimeConfig::new(min).region_size(64 << 10)).unwrap()
}

/// Elements (of 8 bytes) that overflow the tiny budget about twice.
fn overflow_len(rt: &Runtime) -> usize {
    rt.budget() * 2 / 8
}

#[derive(Debug, Clone)]
enum VecOp {
    Push(u32),
    Pop,
    Set(usize, u32),
    Truncate(usize),
    Extend(Vec<u32>),
    Resize(usize, u32),
}

fn vec_op() -> impl Strategy<Value = VecOp> {
    prop_oneof![
        4 => any::<u32>().prop_map(VecOp::Push),
        1 => Just(VecOp::Pop),
        2 => (any::<usize>(), any::<u32>()).prop_map(|(i, v)| VecOp::Set(i, v)),
        1 => (0usize..3000).prop_map(VecOp::Truncate),
        1 => proptest::collection::vec(any::<u32>(), 0..3000).prop_map(VecOp::Extend),
        1 => (0usize..4000, any::<u32>()).prop_map(|(n, v)| VecOp::Resize(n, v)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn far_vec_matches_vec(ops in proptest::collection::vec(vec_op(), 1..60)) {
        let rt = tiny_rt();
        let mut far: FarVec<u64> = FarVec::with_chunk_bytes(&rt, 1024).unwrap();
        let mut std: Vec<u64> = (0..overflow_len(&rt) as u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40).collect();
        far.extend_from_slice(&std).unwrap();
        for op in ops {
            match op {
                VecOp::Push(v) => { far.push(v.into()).unwrap(); std.push(v.into()); }
                VecOp::Pop => prop_assert_eq!(far.pop().unwrap(), std.pop()),
                VecOp::Set(i, v) => {
                    if std.is_empty() {
                        prop_assert!(far.set(i, v.into()).is_err());
                    } else {
                        let i = i % std.len();
                        far.set(i, v.into()).unwrap();
                        std[i] = v.into();
                    }
                }
                VecOp::Truncate(n) => { far.truncate(n); std.truncate(n); }
                VecOp::Extend(xs) => {
                    let xs: Vec<u64> = xs.into_iter().map(u64::from).collect();
                    far.extend_from_slice(&xs).unwrap();
                    std.extend(xs);
                }
                VecOp::Resize(n, v) => { far.resize(n, v.into()).unwrap(); std.resize(n, v.into()); }
            }
            prop_assert_eq!(far.len(), std.len());
        }
        prop_assert_eq!(far.to_vec().unwrap(), std.clone());
        let iterated: Vec<u64> = far.iter().map(Result::unwrap).collect();
        prop_assert_eq!(&iterated, &std);
        for (i, x) in std.iter().enumerate().step_by(97) {
            prop_assert_eq!(far.get(i).unwrap(), *x);
        }
        far.sort().unwrap();
        let mut sorted = std.clone();
        sorted.sort();
        prop_assert_eq!(far.to_vec().unwrap(), sorted.clone());
        prop_assert!(rt.stats().objects_evicted > 0, "the budget forced eviction");
        if let Some(&x) = sorted.get(sorted.len() / 2) {
            let i = far.binary_search(&x).unwrap().unwrap();
            prop_assert_eq!(sorted[i], x);
        }
    }

    #[test]
    fn far_list_matches_vecdeque(ops in proptest::collection::vec((0u8..7, any::<u16>(), any::<usize>()), 1..400)) {
        let rt = tiny_rt();
        let mut far: FarList<u64> = FarList::with_node_len(&rt, 64);
        let mut std: VecDeque<u64> = VecDeque::new();
        for i in 0..overflow_len(&rt) as u64 {
            far.push_back(i).unwrap();
            std.push_back(i);
        }
        for (op, v, at) in ops {
            let v = u64::from(v);
            match op {
                0 | 1 => { far.push_back(v).unwrap(); std.push_back(v); }
                2 => { far.push_front(v).unwrap(); std.push_front(v); }
                3 => prop_assert_eq!(far.pop_back().unwrap(), std.pop_back()),
                4 => prop_assert_eq!(far.pop_front().unwrap(), std.pop_front()),
                5 => {
                    // Insert before position `at` via a cursor walk.
                    let at = at % 200.min(std.len() + 1);
                    let mut c = far.cursor_front();
                    for _ in 0..at { c.move_next().unwrap(); }
                    c.insert_before(v).unwrap();
                    if at < std.len() {
                        prop_assert_eq!(c.current().unwrap(), Some(std[at]));
                    }
                    std.insert(at, v);
                }
                _ => {
                    if !std.is_empty() {
                        let at = at % 200.min(std.len());
                        let mut c = far.cursor_front();
                        for _ in 0..at { c.move_next().unwrap(); }
                        prop_assert_eq!(c.remove_current().unwrap(), std.remove(at));
                        prop_assert_eq!(c.current().unwrap(), std.get(at).copied());
                    }
                }
            }
            prop_assert_eq!(far.len(), std.len());
        }
        prop_assert_eq!(far.to_vec().unwrap(), std.iter().copied().collect::<Vec<_>>());
        let mut rev = Vec::new();
        far.for_each_rev(|x| rev.push(*x)).unwrap();
        prop_assert_eq!(rev, std.iter().rev().copied().collect::<Vec<_>>());
        let mut c = far.cursor_back();
        let mut back = Vec::new();
        if let Some(x) = c.current().unwrap() {
            back.push(x);
            while c.move_prev().unwrap() {
                back.push(c.current().unwrap().unwrap());
            }
        }
        prop_assert_eq!(back, std.iter().rev().copied().collect::<Vec<_>>());
        prop_assert!(rt.stats().objects_evicted > 0, "the budget forced eviction");
    }

    #[test]
    fn far_hash_map_matches_hashmap(ops in proptest::collection::vec((0u8..6, 0u64..300, any::<u32>()), 1..600)) {
        let rt = tiny_rt();
        // Room for only a few dozen entries locally: most live on the server.
        let m: FarHashMap<u64, u32> = FarHashMap::new(&rt, HashMapConfig { shards: 4, ..HashMapConfig::new(4096) }).unwrap();
        let mut std: HashMap<u64, u32> = HashMap::new();
        for (op, k, v) in ops {
            match op {
                0 | 1 => { m.insert(k, v).unwrap(); std.insert(k, v); }
                2 => prop_assert_eq!(m.get(&k).unwrap(), std.get(&k).copied()),
                3 => prop_assert_eq!(m.remove(&k).unwrap(), std.remove(&k)),
                4 => {
                    let batch = [(k, v), ((k * 7) % 300, v ^ 1), (k, v.wrapping_add(1))];
                    m.insert_many(&batch).unwrap();
                    std.extend(batch);
                }
                _ => {
                    let r = m.update(&k, |x| {
                        let old = *x;
                        *x = if v % 3 == 0 { None } else { Some(x.unwrap_or(0).wrapping_add(v)) };
                        old
                    }).unwrap();
                    let old = std.get(&k).copied();
                    prop_assert_eq!(r, old);
                    if v % 3 == 0 { std.remove(&k); } else { std.insert(k, old.unwrap_or(0).wrapping_add(v)); }
                }
            }
        }
        prop_assert!(m.cached_len() <= 4096 / FarHashMap::<u64, u32>::bytes_per_entry());
        prop_assert_eq!(m.len().unwrap(), std.len());
        let keys: Vec<u64> = (0..300).collect();
        let got = m.get_many(&keys).unwrap();
        let want: Vec<Option<u32>> = keys.iter().map(|k| std.get(k).copied()).collect();
        prop_assert_eq!(&got, &want);
        // Pipelined: batches of 7 (misses of several batches per request), in order.
        let mut piped = Vec::new();
        let mut next = 0;
        m.get_many_pipelined(keys.chunks(7), |i, v| {
            assert_eq!(i, next);
            next += 1;
            piped.extend(v);
        }).unwrap();
        prop_assert_eq!(&piped, &want);
        let mut all = m.to_vec().unwrap();
        all.sort();
        let mut want: Vec<(u64, u32)> = std.into_iter().collect();
        want.sort();
        prop_assert_eq!(all, want);
    }
}

#[test]
fn queue_and_stack_match_std() {
    let rt = tiny_rt();
    let mut q = FarQueue::with_node_len(&rt, 64);
    let mut s = FarStack::with_node_len(&rt, 64);
    let mut sq = VecDeque::new();
    let mut ss = Vec::new();
    for i in 0..20_000u64 {
        q.push(i).unwrap();
        s.push(i).unwrap();
        sq.push_back(i);
        ss.push(i);
        if i % 3 == 0 {
            assert_eq!(q.pop().unwrap(), sq.pop_front());
            assert_eq!(s.pop().unwrap(), ss.pop());
        }
    }
    assert_eq!(q.peek().unwrap(), sq.front().copied());
    assert_eq!(s.peek().unwrap(), ss.last().copied());
    while let Some(x) = q.pop().unwrap() {
        assert_eq!(Some(x), sq.pop_front());
    }
    while let Some(x) = s.pop().unwrap() {
        assert_eq!(Some(x), ss.pop());
    }
    assert!(sq.is_empty() && ss.is_empty());
}

/// Every agent operation gives exactly the same result offloaded and local, for every element
/// type, including float sums (bit-identical) and large outputs.
#[test]
fn agent_ops_identical_offloaded_and_local() {
    let rt = tiny_rt();
    fn check<T>(rt: &Runtime, xs: Vec<T>, pred: Predicate)
    where
        T: farmem::containers::Primitive + Send + Sync + std::fmt::Debug,
    {
        let mut v: FarVec<T> = FarVec::with_chunk_bytes(rt, 512).unwrap();
        v.extend_from_slice(&xs).unwrap();
        // Dirty a chunk after creation: offloading must write it back first.
        v.set(3, xs[0]).unwrap();
        let keys: FarVec<u8> = FarVec::from_slice(
            rt,
            &(0..xs.len()).map(|i| (i % 7) as u8).collect::<Vec<_>>(),
        )
        .unwrap();
        let r = v.aggregate(Offload::Remote).unwrap();
        let l = v.aggregate(Offload::Local).unwrap();
        assert_eq!(format!("{r:?}"), format!("{l:?}"), "aggregate");
        assert_eq!(r.count, xs.len() as u64);
        let fr = v.filter(pred, Offload::Remote).unwrap().to_vec().unwrap();
        let fl = v.filter(pred, Offload::Local).unwrap().to_vec().unwrap();
        assert_eq!(fr, fl, "filter");
        let idx = v.filter(pred, Offload::Remote).unwrap();
        let gr = v.gather(&idx, Offload::Remote).unwrap().to_vec().unwrap();
        let gl = v.gather(&idx, Offload::Local).unwrap().to_vec().unwrap();
        assert_eq!(
            bytemuck::cast_slice::<T, u8>(&gr),
            bytemuck::cast_slice::<T, u8>(&gl)
        );
        assert_eq!(gr.len(), fr.len());
        let ur = v.unique(100_000, Offload::Remote).unwrap();
        let ul = v.unique(100_000, Offload::Local).unwrap();
        assert_eq!(
            bytemuck::cast_slice::<T, u8>(&ur),
            bytemuck::cast_slice::<T, u8>(&ul)
        );
        let gbr = keys.group_by(&v, 10, Offload::Remote).unwrap();
        let gbl = keys.group_by(&v, 10, Offload::Local).unwrap();
        assert_eq!(format!("{gbr:?}"), format!("{gbl:?}"), "group_by");
        assert_eq!(gbr.len(), 7);
        let ar = v.argsort(Offload::Remote).unwrap().to_vec().unwrap();
        let al = v.argsort(Offload::Local).unwrap().to_vec().unwrap();
        assert_eq!(ar, al, "argsort");
        assert_eq!(ar.len(), xs.len());
    }
    let n = 5000;
    check(
        &rt,
        (0..n).map(|i| (i * 31 % 251) as u8).collect(),
        Predicate::new(Cmp::Gt, Scalar::U(100)),
    );
    check(
        &rt,
        (0..n).map(|i| (i * 7919 % 60_000) as u16).collect(),
        Predicate::between(Scalar::U(100), Scalar::U(30_000)),
    );
    check(
        &rt,
        (0..n)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761))
            .collect(),
        Predicate::new(Cmp::Lt, Scalar::U(1 << 31)),
    );
    check(
        &rt,
        (0..n).map(|i| u64::MAX - i as u64 * 3).collect(),
        Predicate::new(Cmp::Ne, Scalar::U(u64::MAX)),
    );
    check(
        &rt,
        (0..n).map(|i| ((i % 200) - 100) as i8).collect(),
        Predicate::new(Cmp::Le, Scalar::I(-3)),
    );
    check(
        &rt,
        (0..n).map(|i| (i * 13 % 2000) as i16 - 1000).collect(),
        Predicate::new(Cmp::Eq, Scalar::I(0)),
    );
    check(
        &rt,
        (0..n).map(|i| i * 97 - 200_000).collect::<Vec<i32>>(),
        Predicate::new(Cmp::Ge, Scalar::I(0)),
    );
    check(
        &rt,
        (0..n)
            .map(|i| i64::MIN / 2 + i as i64 * 1_000_003)
            .collect(),
        Predicate::new(Cmp::Gt, Scalar::I(0)),
    );
    check(
        &rt,
        (0..n).map(|i| (i as f32).sin() * 1e6).collect(),
        Predicate::new(Cmp::Lt, Scalar::F(0.0)),
    );
    let floats: Vec<f64> = (0..n)
        .map(|i| (f64::from(i) * 0.37).tan() * 10f64.powi(i % 9))
        .collect();
    check(
        &rt,
        floats.clone(),
        Predicate::between(Scalar::F(-1.0), Scalar::F(1.0)),
    );

    // The float sum is the sequential one, whichever path.
    let v = FarVec::from_slice(&rt, &floats).unwrap();
    let mut seq = 0.0;
    for x in &floats {
        seq += x;
    }
    assert_eq!(v.sum(Offload::Remote).unwrap(), Sum::F(seq));
    assert_eq!(v.sum(Offload::Local).unwrap(), Sum::F(seq));
}

#[test]
fn agent_ops_report_bad_input() {
    let rt = tiny_rt();
    let v = FarVec::from_slice(&rt, &[1u32, 2, 3]).unwrap();
    for mode in [Offload::Remote, Offload::Local] {
        // Operand of the wrong domain.
        assert!(
            v.filter(Predicate::new(Cmp::Eq, Scalar::F(1.0)), mode)
                .is_err()
        );
        // Out-of-bounds gather index.
        let idx = FarVec::from_slice(&rt, &[0u64, 3]).unwrap();
        assert!(v.gather(&idx, mode).is_err());
        // Too many distinct values / groups.
        assert!(v.unique(2, mode).is_err());
        assert!(v.group_by(&v, 2, mode).is_err());
        // Length mismatch.
        let short = FarVec::from_slice(&rt, &[1u8]).unwrap();
        assert!(v.group_by(&short, 10, mode).is_err());
    }
    let empty: FarVec<f64> = FarVec::new(&rt);
    assert_eq!(empty.mean(Offload::Remote).unwrap(), None);
    assert_eq!(empty.argsort(Offload::Local).unwrap().len(), 0);
}

/// A sequential scan of a mostly-remote vector fetches each chunk once: the bytes fetched by one
/// pass stay close to the vector's size (read-ahead must not evict what it fetched before use).
#[test]
fn scan_fetches_each_chunk_once() {
    let rt = Runtime::new(RuntimeConfig::new(8 << 20)).unwrap();
    let len = (64usize << 20) / 8;
    let mut v: FarVec<u64> = FarVec::new(&rt);
    v.extend(0..len as u64).unwrap();
    let bytes = (len * 8) as u64;
    let want: u64 = (0..len as u64).sum();
    for nt in [false, true, false] {
        let before = rt.stats().bytes_fetched;
        let streamed_before = rt.stats().bytes_streamed;
        let mut sum = 0u64;
        let add = |c: &[u64]| sum += c.iter().sum::<u64>();
        if nt { v.scan_nt(add) } else { v.scan(add) }.unwrap();
        assert_eq!(sum, want);
        let fetched = rt.stats().bytes_fetched - before;
        assert!(
            fetched * 10 <= bytes * 11,
            "scan (nt: {nt}) of {bytes} B fetched {fetched} B"
        );
        // The streaming scan bypasses the local heap: what was not local was streamed.
        let streamed = rt.stats().bytes_streamed - streamed_before;
        if nt {
            assert!(fetched * 10 <= bytes, "scan_nt cached {fetched} B");
        }
        assert!(
            (fetched + streamed) * 10 >= bytes * 8,
            "scan (nt: {nt}) fetched only {fetched} + {streamed} B"
        );
    }
}

#[test]
fn a_panicking_scan_callback_stops_the_read_ahead() {
    let rt = Runtime::new(RuntimeConfig::new(8 << 20)).unwrap();
    let mut v: FarVec<u64> = FarVec::new(&rt);
    v.extend(0..(32usize << 20) as u64 / 8).unwrap();
    let v = std::sync::Arc::new(v);
    let (tx, rx) = std::sync::mpsc::channel();
    for nt in [false, true] {
        let (v, tx) = (v.clone(), tx.clone());
        std::thread::spawn(move || {
            let mut seen = 0;
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let f = |_: &[u64]| {
                    seen += 1;
                    assert!(seen < 3, "callback fails on its third chunk");
                };
                if nt { v.scan_nt(f) } else { v.scan(f) }
            }));
            let _ = tx.send((nt, r.is_err()));
        });
        // A hang here (the read-ahead threads never stopped) fails the test instead.
        let (which, panicked) = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("scan did not return after its callback panicked");
        assert!(which == nt && panicked);
    }
}

#[test]
fn a_map_within_the_runtime_budget_shrinks_the_heap_while_it_lives() {
    let rt = Runtime::new(RuntimeConfig::new(16 << 20).region_size(64 << 10)).unwrap();
    let boxes: Vec<farmem::FarBox<[u8; 4096]>> = (0..3072u32)
        .map(|i| farmem::FarBox::new(&rt, [i as u8; 4096]).unwrap())
        .collect();
    assert!(rt.local_bytes() > 10 << 20, "{}", rt.local_bytes());
    let m: FarHashMap<u64, u64> =
        FarHashMap::new(&rt, HashMapConfig::within_runtime(8 << 20)).unwrap();
    assert_eq!(rt.heap_budget(), 8 << 20);
    // The evacuator brings the heap down to the rest of the budget.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while rt.local_bytes() > rt.heap_budget() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(rt.local_bytes() <= 8 << 20, "{}", rt.local_bytes());
    // More than an eighth of the budget must stay with the heap.
    let e = FarHashMap::<u64, u64>::new(&rt, HashMapConfig::within_runtime(7 << 20)).unwrap_err();
    assert_eq!(e.kind(), farmem::ErrorKind::Config, "{e}");
    assert_eq!(rt.heap_budget(), 8 << 20);
    for k in 0..100_000u64 {
        m.insert(k, k * 3).unwrap();
    }
    for k in (0..100_000u64).step_by(997) {
        assert_eq!(m.get(&k).unwrap(), Some(k * 3));
    }
    for (i, b) in boxes.iter().enumerate() {
        assert_eq!(b.get().unwrap()[4095], i as u8);
        assert!(rt.local_bytes() <= rt.heap_budget() + rt.slack_bytes());
    }
    drop(m);
    assert_eq!(rt.heap_budget(), 16 << 20);
}
