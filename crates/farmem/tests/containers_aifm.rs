//! Ports of AIFM's container behaviours: a vector sum far beyond the budget, streaming scans that
//! leave the hot set alone, hash-map hot keys surviving cold scans, and sequences 8x the budget.

use farmem::containers::{
    FarHashMap, FarList, FarQueue, FarStack, FarVec, HashMapConfig, Offload, Sum,
};
use farmem::{Runtime, RuntimeConfig};

/// C = A + B over three far vectors of 16 M u64 each (384 MiB) with a 128 MiB local budget.
#[test]
fn c_equals_a_plus_b_beyond_the_budget() {
    const N: u64 = 16 << 20;
    let rt = Runtime::new(RuntimeConfig::new(128 << 20)).unwrap();
    let mut a: FarVec<u64> = FarVec::new(&rt);
    let mut b: FarVec<u64> = FarVec::new(&rt);
    a.extend(0..N).unwrap();
    b.extend((0..N).map(|i| i.wrapping_mul(3) ^ 0x5555))
        .unwrap();
    let mut c: FarVec<u64> = FarVec::new(&rt);
    let mut row = Vec::with_capacity(c.chunk_len());
    let mut ib = b.iter();
    a.scan_nt(|chunk| {
        row.clear();
        for &x in chunk {
            let y = ib.next().expect("same length").expect("fetch");
            row.push(x.wrapping_add(y));
        }
        c.extend_from_slice(&row).expect("append");
    })
    .unwrap();
    assert_eq!(c.len() as u64, N);
    let st = rt.stats();
    assert!(st.local_bytes <= (128 << 20) + rt.slack_bytes() as u64);
    assert!(st.objects_evicted > 0, "384 MiB cannot fit in 128 MiB");
    // Check every element against the formula, chunk by chunk.
    let mut i = 0u64;
    c.scan_nt(|chunk| {
        for &x in chunk {
            assert_eq!(x, i.wrapping_add(i.wrapping_mul(3) ^ 0x5555));
            i += 1;
        }
    })
    .unwrap();
    let (sa, sb, sc) = (
        a.sum(Offload::Remote).unwrap(),
        b.sum(Offload::Remote).unwrap(),
        c.sum(Offload::Remote).unwrap(),
    );
    let (Sum::U(sa), Sum::U(sb), Sum::U(sc)) = (sa, sb, sc) else {
        panic!("unsigned sums")
    };
    assert_eq!(sa + sb, sc);
}

/// A streaming (non-temporal) scan of two large vectors causes no misses on a hot third one.
#[test]
fn streaming_scans_do_not_evict_the_hot_set() {
    let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    let hot = FarVec::from_slice(&rt, &vec![7u64; (2 << 20) / 8]).unwrap();
    let a: FarVec<u64> = FarVec::from_slice(&rt, &vec![1u64; (32 << 20) / 8]).unwrap();
    let b: FarVec<u64> = FarVec::from_slice(&rt, &vec![2u64; (32 << 20) / 8]).unwrap();
    // Make the hot vector local and hot.
    for _ in 0..3 {
        let mut s = 0u64;
        hot.scan(|c| s += c.iter().sum::<u64>()).unwrap();
        assert_eq!(s, 7 * hot.len() as u64);
    }
    let before = rt.stats();
    let streamed_before = before.bytes_streamed;
    let mut total = 0u64;
    for _ in 0..2 {
        a.scan_nt(|c| total += c.iter().sum::<u64>()).unwrap();
        b.scan_nt(|c| total += c.iter().sum::<u64>()).unwrap();
        // Touch the hot set between passes as a real program would.
        let mut s = 0u64;
        hot.scan(|c| s += c.iter().sum::<u64>()).unwrap();
    }
    assert_eq!(total, 2 * 3 * a.len() as u64);
    let mid = rt.stats();
    // The vectors do not fit: most of each pass came from far memory (streamed past the local
    // heap, or fetched into it).
    let far_bytes =
        (mid.bytes_fetched - before.bytes_fetched) + (mid.bytes_streamed - streamed_before);
    assert!(
        far_bytes >= 2 * (48 << 20),
        "the scans fetched {far_bytes} B"
    );
    let mut s = 0u64;
    let m0 = rt.stats();
    hot.scan(|c| s += c.iter().sum::<u64>()).unwrap();
    let m1 = rt.stats();
    assert_eq!(
        (m1.misses - m0.misses, m1.prefetched - m0.prefetched),
        (0, 0),
        "the hot vector stayed local"
    );
}

/// Hot keys of a hash map are never evicted by a scan of (many more) cold keys.
#[test]
fn hash_map_hot_keys_survive_cold_scans() {
    let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    // Few shards: the protected share is per shard, and with 64 shards of ~11 entries the random
    // shard choice would now and then put more hot keys in one shard than its share holds.
    let mut cfg = HashMapConfig::new(64 << 10);
    cfg.shards = 4;
    let m: FarHashMap<u64, [u64; 4]> = FarHashMap::new(&rt, cfg).unwrap();
    let entries = (64 << 10) / (8 + 32 + 48);
    for k in 0..20 * entries as u64 {
        m.insert(k, [k; 4]).unwrap();
    }
    // Hot keys, read twice so they become protected. The cache is set-associative (8 ways, 6
    // protected) under a random hash: a set that draws more than 6 hot keys cannot keep them
    // all. About 0.5 hot keys per set (172 sets) makes that a chance of about 1 in 4,000 per run
    // (1 in 50 with twice as many).
    let hot: Vec<u64> = (0..entries as u64 / 8).map(|i| i * 7 + 1).collect();
    for _ in 0..2 {
        for (k, v) in hot.iter().zip(m.get_many(&hot).unwrap()) {
            assert_eq!(v, Some([*k; 4]));
        }
    }
    assert!(hot.iter().all(|k| m.is_cached(k)));
    // A scan over cold keys, ten times the cache.
    let cold: Vec<u64> = (0..20 * entries as u64).filter(|k| k % 7 != 1).collect();
    for batch in cold.chunks(256) {
        for (k, v) in batch.iter().zip(m.get_many(batch).unwrap()) {
            assert_eq!(v, Some([*k; 4]));
        }
    }
    let missing: Vec<_> = hot.iter().filter(|k| !m.is_cached(k)).collect();
    assert!(missing.is_empty(), "hot keys evicted: {}", missing.len());
    assert!(m.stats().evictions > cold.len() as u64 / 2);
}

/// Lists, queues and stacks whose working set is 8x the local budget.
#[test]
fn sequences_eight_times_the_budget() {
    let rt = Runtime::new(RuntimeConfig::new(8 << 20)).unwrap();
    let n = 8 * (8 << 20) / 8u64;
    let mut q = FarQueue::new(&rt);
    for i in 0..n {
        q.push(i).unwrap();
    }
    for i in 0..n {
        assert_eq!(q.pop().unwrap(), Some(i));
    }
    assert!(q.is_empty());
    let mut s = FarStack::new(&rt);
    for i in 0..n {
        s.push(i).unwrap();
    }
    for i in (0..n).rev() {
        assert_eq!(s.pop().unwrap(), Some(i));
    }
    let mut l = FarList::new(&rt);
    for i in 0..n {
        l.push_back(i).unwrap();
    }
    let mut expect = 0;
    l.for_each(|&x| {
        assert_eq!(x, expect);
        expect += 1;
    })
    .unwrap();
    assert_eq!(expect, n);
    let st = rt.stats();
    assert!(st.objects_evicted > 0 && st.bytes_fetched > 0);
    // Walking back to front prefetches backwards: far fewer round trips than nodes.
    let before = rt.stats();
    let mut c = l.cursor_back();
    let mut steps = 1;
    while c.move_prev().unwrap() {
        steps += 1;
    }
    assert_eq!(steps, n);
    let after = rt.stats();
    assert!(after.prefetched > before.prefetched);
}
