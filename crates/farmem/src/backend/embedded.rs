use std::collections::HashMap;

use parking_lot::Mutex;

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Backend, BackendError, Edit, ObjectId, StoreStats, check_edits};

type Shard = HashMap<ObjectId, Box<[u8]>>;

const SHARDS: usize = 64;
/// Bytes charged per object beyond its payload (map slot + allocation header).
const OVERHEAD: u64 = 32;

/// An in-process store: far memory without a server.
///
/// The default backend, for first-time users and tests. Objects are kept in this process's heap,
/// so it saves no local memory; it exists so that every program also runs with no set-up.
///
/// ```
/// use farmem::{Backend, EmbeddedStore};
/// let store = EmbeddedStore::new();
/// store.put(7, b"hello").unwrap();
/// assert_eq!(store.get(7).unwrap(), b"hello");
/// ```
pub struct EmbeddedStore {
    shards: Box<[Mutex<Shard>]>,
    used: Mutex<u64>,
    capacity: u64,
    bytes_written: AtomicU64,
}

impl Default for EmbeddedStore {
    fn default() -> Self {
        Self::new()
    }
}

impl EmbeddedStore {
    /// An unbounded store.
    pub fn new() -> Self {
        Self::with_capacity(u64::MAX)
    }

    /// A store that refuses puts beyond `capacity` bytes (payload plus per-object overhead).
    pub fn with_capacity(capacity: u64) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            used: Mutex::new(0),
            capacity,
            bytes_written: AtomicU64::new(0),
        }
    }

    fn shard(&self, id: ObjectId) -> &Mutex<Shard> {
        let h = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58;
        &self.shards[h as usize % SHARDS]
    }

    fn charge(&self, add: u64, release: u64) -> Result<(), BackendError> {
        let mut used = self.used.lock();
        let after = (*used - release).saturating_add(add);
        if add > release && after > self.capacity {
            return Err(BackendError::OutOfCapacity {
                needed: add,
                available: self.capacity.saturating_sub(*used - release),
            });
        }
        *used = after;
        Ok(())
    }
}

impl Backend for EmbeddedStore {
    fn put(&self, id: ObjectId, data: &[u8]) -> Result<(), BackendError> {
        let mut shard = self.shard(id).lock();
        let old = shard.get(&id).map_or(0, |o| o.len() as u64 + OVERHEAD);
        self.charge(data.len() as u64 + OVERHEAD, old)?;
        shard.insert(id, data.into());
        self.bytes_written
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn patch(&self, id: ObjectId, edits: &[Edit<'_>]) -> Result<(), BackendError> {
        let mut shard = self.shard(id).lock();
        let obj = shard.get_mut(&id).ok_or(BackendError::NotFound(id))?;
        check_edits(id, obj.len(), edits)?;
        let mut written = 0;
        for &(off, bytes) in edits {
            obj[off as usize..off as usize + bytes.len()].copy_from_slice(bytes);
            written += bytes.len() as u64;
        }
        self.bytes_written.fetch_add(written, Ordering::Relaxed);
        Ok(())
    }

    fn get(&self, id: ObjectId) -> Result<Vec<u8>, BackendError> {
        self.shard(id)
            .lock()
            .get(&id)
            .map(|o| o.to_vec())
            .ok_or(BackendError::NotFound(id))
    }

    fn get_into(&self, id: ObjectId, buf: &mut [u8]) -> Result<(), BackendError> {
        let shard = self.shard(id).lock();
        let obj = shard.get(&id).ok_or(BackendError::NotFound(id))?;
        if obj.len() != buf.len() {
            return Err(BackendError::SizeMismatch {
                id,
                expected: buf.len() as u64,
                actual: obj.len() as u64,
            });
        }
        buf.copy_from_slice(obj);
        Ok(())
    }

    fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>, BackendError> {
        ids.iter().map(|&id| self.get(id)).collect()
    }

    fn put_many(&self, items: &[(ObjectId, &[u8])]) -> Result<(), BackendError> {
        items.iter().try_for_each(|&(id, data)| self.put(id, data))
    }

    fn free(&self, ids: &[ObjectId]) -> Result<(), BackendError> {
        for &id in ids {
            if let Some(old) = self.shard(id).lock().remove(&id) {
                *self.used.lock() -= old.len() as u64 + OVERHEAD;
            }
        }
        Ok(())
    }

    fn stats(&self) -> Result<StoreStats, BackendError> {
        let objects = self.shards.iter().map(|s| s.lock().len() as u64).sum();
        Ok(StoreStats {
            used_bytes: *self.used.lock(),
            capacity_bytes: self.capacity,
            objects,
            per_object_overhead: OVERHEAD,
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
        })
    }

    fn compute(&self, _route: ObjectId, op: u16, _args: &[u8]) -> Result<Vec<u8>, BackendError> {
        Err(BackendError::Compute(format!("unknown operation {op}")))
    }

    fn describe(&self) -> String {
        "embedded".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_enforced_and_freed_space_returns() {
        let s = EmbeddedStore::with_capacity(2 * (100 + OVERHEAD));
        s.put(1, &[1; 100]).unwrap();
        s.put(2, &[2; 100]).unwrap();
        assert!(matches!(
            s.put(3, &[3; 100]),
            Err(BackendError::OutOfCapacity { .. })
        ));
        assert_eq!(s.get(2).unwrap(), vec![2; 100]);
        s.free(&[1]).unwrap();
        s.put(3, &[3; 100]).unwrap();
        assert_eq!(s.stats().unwrap().objects, 2);
        assert!(matches!(s.get(1), Err(BackendError::NotFound(1))));
    }

    #[test]
    fn overwrite_recharges() {
        let s = EmbeddedStore::with_capacity(100 + OVERHEAD);
        s.put(1, &[1; 100]).unwrap();
        s.put(1, &[9; 50]).unwrap();
        assert_eq!(s.stats().unwrap().used_bytes, 50 + OVERHEAD);
        let mut buf = [0u8; 50];
        s.get_into(1, &mut buf).unwrap();
        assert_eq!(buf, [9; 50]);
    }

    #[test]
    fn patch_edits_in_place_and_rejects_overruns() {
        let s = EmbeddedStore::new();
        s.put(1, &[0; 128]).unwrap();
        s.patch(1, &[(64, &[7; 8]), (0, &[1])]).unwrap();
        let got = s.get(1).unwrap();
        assert_eq!(&got[64..72], &[7; 8]);
        assert_eq!(got[0], 1);
        assert_eq!(s.stats().unwrap().bytes_written, 128 + 9);
        assert!(matches!(
            s.patch(1, &[(127, &[1, 2])]),
            Err(BackendError::SizeMismatch { .. })
        ));
        assert!(matches!(
            s.patch(2, &[(0, &[1])]),
            Err(BackendError::NotFound(2))
        ));
    }
}
