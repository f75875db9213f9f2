//! One client's objects.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::durable::Journal;
use crate::durable::record::{self, Record};
use crate::heap::Heap;
use crate::slab::Slabs;
use crate::{Budget, StoreError};

/// Bytes charged per object beyond its payload. The engine's real cost is below this (slot
/// header 12 bytes, rounding to 8, ~6-9 bytes of index; see `farmem-bench transport`).
pub const OBJECT_OVERHEAD: u64 = 32;

const SHARDS: usize = 64;

/// A fixed 64-bit mix (splitmix64 finaliser).
pub(crate) fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

type Shard = Slabs;

/// The objects of one session, charged against a shared [`Budget`].
///
/// Thread-safe: operations on different objects mostly proceed in parallel (sharded locks).
/// Dropping the namespace frees all its objects and gives their space back to the budget.
pub struct Namespace {
    shards: Box<[Mutex<Shard>]>,
    budget: Arc<Budget>,
    max_object: u64,
    used: AtomicU64,
    objects: AtomicU64,
    /// Logs every change (durable servers only).
    journal: Option<Journal>,
    /// Per-session quota on `used` (`u64::MAX`: none).
    quota_bytes: u64,
    /// Per-session quota on `objects` (`u64::MAX`: none).
    quota_objects: u64,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("objects", &self.len())
            .field("used", &self.used_bytes())
            .finish()
    }
}

fn cost(len: usize) -> u64 {
    len as u64 + OBJECT_OVERHEAD
}

impl Namespace {
    /// An empty namespace charging `budget`, refusing objects above `max_object` bytes.
    pub fn new(budget: Arc<Budget>, max_object: u64) -> Self {
        Self {
            shards: {
                let heap = Arc::new(RwLock::new(Heap::new()));
                (0..SHARDS)
                    .map(|_| Mutex::new(Shard::new(heap.clone())))
                    .collect()
            },
            budget,
            max_object,
            used: AtomicU64::new(0),
            objects: AtomicU64::new(0),
            journal: None,
            quota_bytes: u64::MAX,
            quota_objects: u64::MAX,
        }
    }

    /// Limits what this namespace may hold (`None`: no limit): a charge above either limit
    /// fails with [`StoreError::QuotaExceeded`] and changes nothing.
    pub fn with_quota(mut self, bytes: Option<u64>, objects: Option<u64>) -> Self {
        self.quota_bytes = bytes.unwrap_or(u64::MAX);
        self.quota_objects = objects.unwrap_or(u64::MAX);
        self
    }

    /// Takes `add - release` bytes (and a new object if `new_object`) from the quota, or
    /// fails changing nothing. Undone by [`Namespace::unreserve`].
    fn reserve(&self, add: u64, release: u64, new_object: bool) -> Result<(), StoreError> {
        let limit = self.quota_bytes;
        let r = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                let next = u.saturating_sub(release).saturating_add(add);
                (add <= release || next <= limit).then_some(next)
            });
        if let Err(u) = r {
            return Err(StoreError::QuotaExceeded {
                kind: farmem_proto::QuotaKind::Bytes,
                limit,
                wanted: u.saturating_sub(release).saturating_add(add),
            });
        }
        if new_object {
            let limit = self.quota_objects;
            let r = self
                .objects
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < limit).then_some(n + 1)
                });
            if let Err(n) = r {
                self.charged(release, add);
                return Err(StoreError::QuotaExceeded {
                    kind: farmem_proto::QuotaKind::Objects,
                    limit,
                    wanted: n.saturating_add(1),
                });
            }
        }
        Ok(())
    }

    /// Gives back what [`Namespace::reserve`] took.
    fn unreserve(&self, add: u64, release: u64, new_object: bool) {
        self.charged(release, add);
        if new_object {
            self.objects.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Logs every later change of this namespace to `journal` (a durable server's session).
    pub fn set_journal(&mut self, journal: Journal) {
        self.journal = Some(journal);
    }

    /// The journal changes are logged to, if any.
    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    fn shard(&self, id: u64) -> (&Mutex<Shard>, u64) {
        let h = mix(id);
        (&self.shards[(h >> 58) as usize % SHARDS], h)
    }

    /// The budget this namespace charges.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// Number of objects.
    pub fn len(&self) -> u64 {
        self.objects.load(Ordering::Relaxed)
    }

    /// Whether the namespace holds no objects.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes charged by this namespace (objects and agent state).
    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn charged(&self, add: u64, release: u64) {
        self.used.fetch_add(add, Ordering::Relaxed);
        self.used.fetch_sub(release, Ordering::Relaxed);
    }

    /// Stores `data` as object `id`, replacing any previous object.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`] or [`StoreError::OutOfCapacity`], or [`StoreError::Log`] when a
    /// journal cannot take the change; nothing changes then.
    pub fn put(&self, id: u64, data: &[u8]) -> Result<(), StoreError> {
        if data.len() as u64 > self.max_object {
            return Err(StoreError::TooLarge {
                size: data.len() as u64,
                limit: self.max_object,
            });
        }
        let (shard, h) = self.shard(id);
        let mut shard = shard.lock();
        let rec = self.journal.as_ref().map(|j| Record::Put {
            session: j.session(),
            id,
            data,
        });
        let entry = match (&self.journal, &rec) {
            (Some(j), Some(r)) => Some(j.reserve(r.len())?),
            _ => None,
        };
        let old = shard.len_of(h, id).map(cost);
        let (add, release, new) = (cost(data.len()), old.unwrap_or(0), old.is_none());
        self.reserve(add, release, new)?;
        if let Err(e) = self.budget.exchange(add, release) {
            self.unreserve(add, release, new);
            return Err(e);
        }
        if shard.put(h, id, data).is_err() {
            // This shard has no slot left for this size class: undo the charge.
            let _ = self.budget.exchange(release, add);
            self.unreserve(add, release, new);
            return Err(StoreError::OutOfCapacity {
                needed: add,
                available: 0,
            });
        }
        if let (Some(e), Some(r)) = (entry, &rec) {
            e.write(r);
        }
        drop(shard);
        if new {
            self.budget.objects.fetch_add(1, Ordering::Relaxed);
        }
        self.budget
            .bytes_written
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Calls `f` with the bytes of object `id` (under the shard lock: keep `f` short).
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub fn get_with<R>(&self, id: u64, f: impl FnOnce(&[u8]) -> R) -> Result<R, StoreError> {
        let (shard, h) = self.shard(id);
        let shard = shard.lock();
        shard.get_with(h, id, f).ok_or(StoreError::NotFound(id))
    }

    /// Size of object `id`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub fn size_of(&self, id: u64) -> Result<usize, StoreError> {
        self.get_with(id, <[u8]>::len)
    }

    /// Writes each `(offset, bytes)` edit into object `id`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or [`StoreError::SizeMismatch`] when an edit reaches past the
    /// end, or [`StoreError::Log`] when a journal cannot take the change; all edits are checked
    /// before any is applied, so nothing changes on error.
    pub fn patch<'e, I>(&self, id: u64, edits: I) -> Result<(), StoreError>
    where
        I: Iterator<Item = (u32, &'e [u8])> + Clone,
    {
        let (shard, h) = self.shard(id);
        let mut shard = shard.lock();
        let written = shard
            .with_mut(h, id, |obj| {
                for (off, bytes) in edits.clone() {
                    let end = u64::from(off) + bytes.len() as u64;
                    if end > obj.len() as u64 {
                        return Err(StoreError::SizeMismatch {
                            id,
                            expected: end,
                            actual: obj.len() as u64,
                        });
                    }
                }
                let logged = match &self.journal {
                    Some(j) => {
                        let mut enc = Vec::with_capacity(record::patch_len(edits.clone()));
                        record::encode_patch(&mut enc, edits.clone());
                        let rec = Record::Patch {
                            session: j.session(),
                            id,
                            edits: &enc,
                        };
                        Some((j.reserve(rec.len())?, enc))
                    }
                    None => None,
                };
                let mut written = 0;
                for (off, bytes) in edits {
                    obj[off as usize..off as usize + bytes.len()].copy_from_slice(bytes);
                    written += bytes.len() as u64;
                }
                if let (Some((e, enc)), Some(j)) = (logged, &self.journal) {
                    e.write(&Record::Patch {
                        session: j.session(),
                        id,
                        edits: &enc,
                    });
                }
                Ok(written)
            })
            .ok_or(StoreError::NotFound(id))??;
        drop(shard);
        self.budget
            .bytes_written
            .fetch_add(written, Ordering::Relaxed);
        Ok(())
    }

    /// Frees object `id`; returns whether it existed. With a journal, a free that cannot be
    /// logged is not made and reported as `false` (see [`Namespace::try_free`]).
    pub fn free(&self, id: u64) -> bool {
        self.try_free(id).unwrap_or(false)
    }

    /// Frees object `id`; returns whether it existed.
    ///
    /// # Errors
    /// [`StoreError::Log`] when a journal cannot take the change; nothing changes then.
    pub fn try_free(&self, id: u64) -> Result<bool, StoreError> {
        let (shard, h) = self.shard(id);
        let mut shard = shard.lock();
        let old = match &self.journal {
            None => shard.remove(h, id),
            Some(j) => {
                let rec = Record::Free {
                    session: j.session(),
                    id,
                };
                let e = j.reserve(rec.len())?;
                let old = shard.remove(h, id);
                if old.is_some() {
                    e.write(&rec);
                }
                old
            }
        };
        drop(shard);
        Ok(match old {
            Some(len) => {
                let c = cost(len);
                self.charged(0, c);
                self.budget.release(c);
                self.objects.fetch_sub(1, Ordering::Relaxed);
                self.budget.objects.fetch_sub(1, Ordering::Relaxed);
                true
            }
            None => false,
        })
    }

    /// Calls `out` with the encoded [`Record::Put`]s of all objects, one shard at a time (each
    /// shard is locked only while it is copied).
    pub(crate) fn dump(
        &self,
        session: u64,
        out: &mut dyn FnMut(&[u8], u64) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for shard in &self.shards {
            buf.clear();
            let mut n = 0;
            shard.lock().for_each(|id, data| {
                Record::Put { session, id, data }.encode(&mut buf);
                n += 1;
            });
            out(&buf, n)?;
        }
        Ok(())
    }

    /// Charges (`delta > 0`) or releases (`delta < 0`) bytes of non-object state (agent tables)
    /// to this namespace; released again when the namespace is dropped.
    ///
    /// # Errors
    /// [`StoreError::OutOfCapacity`] when a charge does not fit, [`StoreError::QuotaExceeded`]
    /// when it would pass the namespace's quota; nothing is charged then.
    pub fn charge(&self, delta: i64) -> Result<(), StoreError> {
        if delta >= 0 {
            self.reserve(delta as u64, 0, false)?;
            if let Err(e) = self.budget.exchange(delta as u64, 0) {
                self.unreserve(delta as u64, 0, false);
                return Err(e);
            }
        } else {
            let r = delta.unsigned_abs().min(self.used_bytes());
            self.budget.release(r);
            self.charged(0, r);
        }
        Ok(())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        self.budget.release(self.used_bytes());
        self.budget.objects.fetch_sub(self.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_replacement_and_drop() {
        let b = Arc::new(Budget::new(2 * cost(100)));
        let ns = Namespace::new(b.clone(), 1000);
        ns.put(1, &[1; 100]).unwrap();
        ns.put(2, &[2; 100]).unwrap();
        assert!(matches!(
            ns.put(3, &[3; 100]),
            Err(StoreError::OutOfCapacity { .. })
        ));
        // Replacing at full capacity works: the old object's space is credited.
        ns.put(2, &[4; 100]).unwrap();
        assert_eq!(ns.get_with(2, |d| d[0]).unwrap(), 4);
        assert!(ns.free(1));
        assert!(!ns.free(1));
        ns.put(3, &[3; 100]).unwrap();
        assert_eq!(b.used(), 2 * cost(100));
        assert_eq!(b.objects(), 2);
        assert!(matches!(
            ns.put(9, &[0; 1001]),
            Err(StoreError::TooLarge { .. })
        ));
        drop(ns);
        assert_eq!((b.used(), b.objects()), (0, 0));
    }

    #[test]
    fn quotas_refuse_without_changing_anything() {
        let b = Arc::new(Budget::new(u64::MAX));
        let ns = Namespace::new(b.clone(), 1000).with_quota(Some(3 * cost(100)), Some(2));
        ns.put(1, &[1; 100]).unwrap();
        ns.put(2, &[2; 100]).unwrap();
        assert!(matches!(
            ns.put(3, &[3; 10]),
            Err(StoreError::QuotaExceeded {
                kind: farmem_proto::QuotaKind::Objects,
                limit: 2,
                wanted: 3
            })
        ));
        // Replacing within the byte quota works; growing past it does not.
        ns.put(2, &[4; 200]).unwrap();
        assert!(matches!(
            ns.put(2, &[4; 300]),
            Err(StoreError::QuotaExceeded {
                kind: farmem_proto::QuotaKind::Bytes,
                ..
            })
        ));
        assert!(ns.charge(100).is_err());
        assert_eq!((ns.len(), ns.used_bytes()), (2, 2 * cost(100) + 100));
        assert_eq!((b.objects(), b.used()), (2, ns.used_bytes()));
        assert!(ns.free(1));
        ns.put(3, &[3; 100]).unwrap();
        ns.charge(30).unwrap();
        drop(ns);
        assert_eq!((b.used(), b.objects()), (0, 0));
    }

    #[test]
    fn a_failed_capacity_charge_gives_the_quota_back() {
        let b = Arc::new(Budget::new(cost(100)));
        let ns = Namespace::new(b.clone(), 1000).with_quota(Some(10_000), Some(10));
        ns.put(1, &[1; 100]).unwrap();
        assert!(matches!(
            ns.put(2, &[1; 100]),
            Err(StoreError::OutOfCapacity { .. })
        ));
        assert_eq!((ns.len(), ns.used_bytes()), (1, cost(100)));
    }

    #[test]
    fn patch_checks_all_edits_first() {
        let ns = Namespace::new(Arc::new(Budget::new(u64::MAX)), 1000);
        ns.put(1, &[0; 16]).unwrap();
        let bad = [(0u32, &[1u8][..]), (15, &[1, 2][..])];
        assert!(matches!(
            ns.patch(1, bad.iter().copied()),
            Err(StoreError::SizeMismatch { .. })
        ));
        assert_eq!(ns.get_with(1, |d| d[0]).unwrap(), 0);
        ns.patch(1, [(8u32, &[7u8; 8][..])].iter().copied())
            .unwrap();
        assert_eq!(ns.get_with(1, |d| d[8..].to_vec()).unwrap(), vec![7; 8]);
        assert_eq!(ns.budget().bytes_written(), 24);
    }
}
