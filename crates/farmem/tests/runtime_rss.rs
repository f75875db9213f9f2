//! Process RSS stays within the local budget plus slack while far more data passes through.
//! (Its own test binary, so other tests do not add to the RSS.)

use std::collections::HashMap;
use std::sync::Arc;

use farmem::{Backend, BackendError, FarBox, ObjectId, Runtime, RuntimeConfig, StoreStats};
use parking_lot::Mutex;

/// A backend that keeps only an 8-byte seed per object: objects are a pattern derived from the
/// seed, checked on put and regenerated on get. It lets RSS measure the local heap alone.
#[derive(Default)]
struct SeedStore(Mutex<HashMap<ObjectId, (u64, usize)>>);

fn fill(seed: u64, out: &mut [u8]) {
    for (j, c) in out.chunks_mut(8).enumerate() {
        let w = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ j as u64;
        c.copy_from_slice(&w.to_le_bytes()[..c.len()]);
    }
}

impl Backend for SeedStore {
    fn put(&self, id: ObjectId, data: &[u8]) -> Result<(), BackendError> {
        // The first word is seed * K: recover the seed, then check the whole pattern.
        let first = data
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| BackendError::Custom(format!("object {id} is too short").into()))?;
        let seed = first.wrapping_mul(inverse(0x9E37_79B9_7F4A_7C15));
        let mut expect = vec![0u8; data.len()];
        fill(seed, &mut expect);
        if expect != data {
            return Err(BackendError::Custom(
                format!("object {id} is not a seed pattern").into(),
            ));
        }
        self.0.lock().insert(id, (seed, data.len()));
        Ok(())
    }
    fn get(&self, id: ObjectId) -> Result<Vec<u8>, BackendError> {
        let (seed, len) = *self.0.lock().get(&id).ok_or(BackendError::NotFound(id))?;
        let mut v = vec![0u8; len];
        fill(seed, &mut v);
        Ok(v)
    }
    fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>, BackendError> {
        ids.iter().map(|&i| self.get(i)).collect()
    }
    fn put_many(&self, items: &[(ObjectId, &[u8])]) -> Result<(), BackendError> {
        items.iter().try_for_each(|&(i, d)| self.put(i, d))
    }
    fn free(&self, ids: &[ObjectId]) -> Result<(), BackendError> {
        let mut m = self.0.lock();
        ids.iter().for_each(|i| {
            m.remove(i);
        });
        Ok(())
    }
    fn stats(&self) -> Result<StoreStats, BackendError> {
        Ok(StoreStats::default())
    }
    fn compute(&self, _: ObjectId, op: u16, _: &[u8]) -> Result<Vec<u8>, BackendError> {
        Err(BackendError::Custom(
            format!("unknown operation {op}").into(),
        ))
    }
    fn describe(&self) -> String {
        "seed-store".into()
    }
}

/// Multiplicative inverse of an odd number modulo 2^64 (Newton's method).
fn inverse(a: u64) -> u64 {
    let mut x = a;
    for _ in 0..6 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
    }
    x
}

fn status_kib(field: &str) -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn rss_stays_within_budget_and_slack() {
    let budget = 64 << 20;
    let baseline = status_kib("VmRSS:") * 1024;
    let rt =
        Runtime::new(RuntimeConfig::new(budget).custom_backend(Arc::new(SeedStore::default())))
            .unwrap();
    let n = (512 << 20) / 4096; // 512 MiB through a 64 MiB budget
    let mut boxes = Vec::with_capacity(n);
    let mut peak = 0;
    for i in 0..n {
        let mut b = FarBox::<[u8; 4096]>::new_zeroed(&rt).unwrap();
        {
            let s = rt.scope();
            fill(i as u64, b.write(&s).unwrap());
        }
        boxes.push(b);
        if i % 4096 == 0 {
            peak = peak.max(status_kib("VmRSS:") * 1024);
        }
    }
    for (i, b) in boxes.iter().enumerate().step_by(7) {
        let s = rt.scope();
        let mut expect = [0u8; 4096];
        fill(i as u64, &mut expect);
        assert_eq!(b.read(&s).unwrap(), &expect, "object {i}");
        if i % 4096 == 0 {
            peak = peak.max(status_kib("VmRSS:") * 1024);
        }
    }
    peak = peak.max(status_kib("VmRSS:") * 1024);
    // Metadata beyond the heap: handle slots (40 B/object), the Vec of boxes (16 B/object), the
    // seed map (~48 B/object) and allocator slop.
    let metadata = n * (40 + 16 + 64) + (8 << 20);
    let limit = budget + rt.slack_bytes() + metadata;
    let grown = peak.saturating_sub(baseline);
    eprintln!(
        "RSS grew by {} MiB (limit {} MiB = budget {} + slack {} + metadata {})",
        grown >> 20,
        limit >> 20,
        budget >> 20,
        rt.slack_bytes() >> 20,
        metadata >> 20
    );
    assert!(grown <= limit, "RSS grew by {grown} bytes, limit {limit}");
    assert!(rt.stats().objects_evicted as usize > n / 2);
}
