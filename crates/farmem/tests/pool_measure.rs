//! Figures of a pool over embedded members (run with `--ignored --nocapture`; they print, and
//! check the values they read): put/get throughput by replica count, the longest read stall
//! across a member failure, repair bandwidth against a plain bulk copy, location-table bytes
//! per object.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use farmem::backend::pool::Fault;
use farmem::backend::{FaultyBackend, PoolBackend, PoolConfig, Redundancy};
use farmem::{Backend, EmbeddedStore};

fn pool(n: usize, replicas: usize, rate: Option<u64>) -> (PoolBackend, Vec<Arc<FaultyBackend>>) {
    let ms: Vec<Arc<FaultyBackend>> = (0..n)
        .map(|i| {
            Arc::new(FaultyBackend::new(
                Arc::new(EmbeddedStore::new()),
                format!("m{i}"),
            ))
        })
        .collect();
    let p = PoolBackend::new(
        ms.iter().map(|m| m.clone() as Arc<dyn Backend>).collect(),
        PoolConfig::new(Redundancy::replicas(replicas))
            .repair_rate(rate)
            .maintenance_interval(Duration::from_millis(50)),
    )
    .unwrap();
    (p, ms)
}

fn wait_repaired(p: &PoolBackend) {
    while p.pool_stats().under_replicated > 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
#[ignore = "measurement: run with --ignored --nocapture"]
fn throughput_by_replicas() {
    let n = 100_000u64;
    let val = [5u8; 256];
    let base = EmbeddedStore::new();
    let t0 = Instant::now();
    for id in 0..n {
        base.put(id, &val).unwrap();
    }
    let put = n as f64 / t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    for id in 0..n {
        assert_eq!(base.get(id).unwrap().len(), 256);
    }
    let get = n as f64 / t0.elapsed().as_secs_f64();
    println!("embedded store alone: put {put:.0}/s get {get:.0}/s (256 B)");
    for replicas in 1..=3 {
        let (p, _ms) = pool(3, replicas, None);
        let t0 = Instant::now();
        for id in 0..n {
            p.put(id, &val).unwrap();
        }
        let put = n as f64 / t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        for id in 0..n {
            assert_eq!(p.get(id).unwrap().len(), 256);
        }
        let get = n as f64 / t0.elapsed().as_secs_f64();
        let batch: Vec<(u64, &[u8])> = (n..n + 64).map(|id| (id, &val[..])).collect();
        let t0 = Instant::now();
        for _ in 0..1000 {
            p.put_many(&batch).unwrap();
        }
        let put_many = 64_000.0 / t0.elapsed().as_secs_f64();
        println!(
            "3 members, {replicas} replica(s): put {put:.0}/s get {get:.0}/s put_many(64) {put_many:.0} objects/s"
        );
    }
}

#[test]
#[ignore = "measurement: run with --ignored --nocapture"]
fn longest_read_stall_across_a_failure() {
    for (fault, label) in [
        (Fault::None, "stays up (reference)"),
        (Fault::Down, "dies (fails fast)"),
        (
            Fault::Hang(Duration::from_millis(200)),
            "hangs (200 ms timeout)",
        ),
    ] {
        let (p, ms) = pool(3, 2, None);
        let p = Arc::new(p);
        for id in 0..20_000u64 {
            p.put(id, &id.to_le_bytes()).unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|t| {
                let (p, stop) = (p.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut worst = Duration::ZERO;
                    let mut id = t;
                    let mut reads = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        assert_eq!(p.get(id).unwrap(), id.to_le_bytes());
                        worst = worst.max(t0.elapsed());
                        id = (id + 7919) % 20_000;
                        reads += 1;
                    }
                    (worst, reads)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        ms[1].set(fault);
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let res: Vec<(Duration, u64)> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        let worst = res.iter().map(|r| r.0).max().unwrap_or_default();
        let reads: u64 = res.iter().map(|r| r.1).sum();
        println!("member {label}: longest read {worst:?} over {reads} reads, no error");
    }
}

#[test]
#[ignore = "measurement: run with --ignored --nocapture"]
fn repair_bandwidth_against_bulk_copy() {
    let objects = 20_000u64;
    let val = vec![9u8; 4096];
    // A plain bulk copy of the same volume between two stores, in batches.
    let (a, b) = (EmbeddedStore::new(), EmbeddedStore::new());
    for id in 0..objects {
        a.put(id, &val).unwrap();
    }
    let t0 = Instant::now();
    let ids: Vec<u64> = (0..objects).collect();
    for chunk in ids.chunks(256) {
        let got = a.get_many(chunk).unwrap();
        let items: Vec<(u64, &[u8])> = chunk.iter().zip(&got).map(|(&i, v)| (i, &v[..])).collect();
        b.put_many(&items).unwrap();
    }
    let bulk = (objects * 4096) as f64 / t0.elapsed().as_secs_f64();
    println!("plain bulk copy: {:.0} MB/s", bulk / 1e6);
    for rate in [None, Some(50_000_000u64)] {
        let (p, ms) = pool(4, 2, rate);
        for id in 0..objects {
            p.put(id, &val).unwrap();
        }
        let before = p.pool_stats().repair.bytes_copied;
        let t0 = Instant::now();
        ms[2].set(Fault::Down);
        p.stats().unwrap();
        wait_repaired(&p);
        let el = t0.elapsed().as_secs_f64();
        let copied = p.pool_stats().repair.bytes_copied - before;
        for id in (0..objects).step_by(97) {
            assert_eq!(p.get(id).unwrap(), val);
        }
        println!(
            "repair (limit {:?}): {} MB in {el:.2} s = {:.0} MB/s = {:.0}% of the bulk copy",
            rate,
            copied / 1_000_000,
            copied as f64 / el / 1e6,
            100.0 * copied as f64 / el / bulk
        );
    }
}

#[test]
#[ignore = "measurement: run with --ignored --nocapture"]
fn location_table_bytes_per_object() {
    let (p, _ms) = pool(3, 2, None);
    let n = 1_000_000u64;
    let val = [1u8; 8];
    let ids: Vec<u64> = (0..n).collect();
    for chunk in ids.chunks(4096) {
        let items: Vec<(u64, &[u8])> = chunk.iter().map(|&id| (id, &val[..])).collect();
        p.put_many(&items).unwrap();
    }
    let st = p.pool_stats();
    assert_eq!(st.objects, n as usize);
    println!(
        "location table: {} objects, {} bytes = {:.1} bytes/object",
        st.objects,
        st.table_bytes,
        st.table_bytes as f64 / n as f64
    );
}
