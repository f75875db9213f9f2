//! Write-backs: each shard sends its outbox in large batches with up to [`WRITE_BACK_DEPTH`]
//! requests in flight, and bulk inserts stream new entries through the same path.

use std::hash::Hash;
use std::sync::atomic::Ordering;

use bytemuck::Pod;
use farmem_proto::agent::{HtValues, Writer, op};

use super::FarHashMap;
use super::cache::{DIRTY, Shard, VALID};
use super::outbox::Flight;
use crate::containers::error::Result;

/// Write-back requests in flight per shard.
pub(super) const WRITE_BACK_DEPTH: usize = 2;
/// Most entries per write-back request.
pub(super) const MAX_WRITE_BACK_BATCH: usize = 2048;
/// Entries a bulk insert groups by shard at a time.
const BULK_CHUNK: usize = 8192;

/// The encoded [`farmem_proto::agent::HtPutArgs`] of `entries` (no replaced values returned).
fn encode_put<'a, K: Pod, V: Pod>(
    table: u64,
    n: usize,
    entries: impl Iterator<Item = (&'a K, &'a V)>,
) -> Vec<u8> {
    let mut w = Writer::from_vec(Vec::with_capacity(
        13 + n * (8 + size_of::<K>() + size_of::<V>()),
    ));
    w.u64(table).u8(0).count(n);
    for (k, v) in entries {
        w.byte_string(bytemuck::bytes_of(k))
            .byte_string(bytemuck::bytes_of(v));
    }
    w.buf
}

impl<K: Pod + Hash + Eq + Send + Sync, V: Pod + Send + Sync> FarHashMap<K, V> {
    /// Sends a batch of a locked shard's outbox once it holds a batch of unsent entries.
    ///
    /// # Errors
    /// The error of the shard's oldest write-back, when it had to be waited for and failed.
    pub(super) fn make_room(&self, sh: &mut Shard<K, V>) -> Result<()> {
        if sh.out.unsent < self.write_back_batch {
            return Ok(());
        }
        self.send(sh)
    }

    /// Sends up to a batch of a locked shard's unsent entries (after waiting for its oldest
    /// request when [`WRITE_BACK_DEPTH`] are in flight).
    fn send(&self, sh: &mut Shard<K, V>) -> Result<()> {
        while sh.out.flights.len() >= WRITE_BACK_DEPTH {
            self.land_oldest(sh)?;
        }
        let (seq, batch) = sh.out.take_batch(self.write_back_batch);
        if batch.is_empty() {
            // Every unsent key has an older value in flight: send after those land.
            if sh.out.unsent > 0 && !sh.out.flights.is_empty() {
                self.settle(sh)?;
                return self.send(sh);
            }
            return Ok(());
        }
        for (k, _) in &batch {
            sh.changed_remotely(*k);
        }
        let args = encode_put(self.table, batch.len(), batch.iter().map(|(k, v)| (k, v)));
        self.writebacks
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        self.rt.count_agent_traffic(args.len(), 0);
        let pending = self
            .rt
            .backend()
            .submit_compute(self.table, op::HT_PUT, &args);
        sh.out.flights.push_back(Flight {
            seq,
            keys: batch.into_iter().map(|(k, _)| k).collect(),
            pending,
        });
        Ok(())
    }

    /// Waits for a locked shard's oldest write-back.
    fn land_oldest(&self, sh: &mut Shard<K, V>) -> Result<()> {
        let Some(f) = sh.out.flights.pop_front() else {
            return Ok(());
        };
        let r = f.pending.wait();
        sh.out.landed(f.seq, &f.keys, r.is_ok());
        let out = r?;
        self.rt.count_agent_traffic(0, out.len());
        Ok(())
    }

    /// Waits for every write-back of a locked shard.
    ///
    /// # Errors
    /// The first failure (the others are waited for all the same).
    pub(super) fn settle(&self, sh: &mut Shard<K, V>) -> Result<()> {
        let mut first = Ok(());
        while !sh.out.flights.is_empty() {
            if let Err(e) = self.land_oldest(sh) {
                first = first.and(Err(e));
            }
        }
        first
    }

    /// Waits for the write-backs of a locked shard if `k` is in one (before its server copy is
    /// removed or read directly).
    pub(super) fn settle_key(&self, sh: &mut Shard<K, V>, k: &K) -> Result<()> {
        match sh.out.entries.get(k) {
            Some(o) if o.flight != 0 => self.settle(sh),
            _ => Ok(()),
        }
    }

    /// Writes a locked shard's whole outbox back and waits for it.
    pub(super) fn write_back(&self, sh: &mut Shard<K, V>) -> Result<()> {
        self.settle(sh)?;
        // Nothing is in flight now, so every send takes a full batch (or the rest).
        let rounds = sh.out.unsent.div_ceil(self.write_back_batch);
        for _ in 0..rounds {
            self.send(sh)?;
        }
        self.settle(sh)
    }

    /// Writes every dirty entry back (outboxes and dirty cached entries) and waits for the
    /// server to have them all.
    ///
    /// # Errors
    /// The backend's error; entries not written stay dirty.
    pub fn flush(&self) -> Result<()> {
        for sh in self.shards.iter() {
            let mut sh = sh.lock();
            self.write_back(&mut sh)?;
            let dirty: Vec<usize> = (0..sh.meta.len())
                .filter(|&w| sh.meta[w] & (VALID | DIRTY) == VALID | DIRTY)
                .collect();
            if dirty.is_empty() {
                continue;
            }
            for &w in &dirty {
                let k = sh.keys[w];
                sh.changed_remotely(k);
            }
            let args = encode_put(
                self.table,
                dirty.len(),
                dirty.iter().map(|&w| (&sh.keys[w], &sh.values[w])),
            );
            self.writebacks
                .fetch_add(dirty.len() as u64, Ordering::Relaxed);
            let _: HtValues = self.agent_raw(op::HT_PUT, &args)?;
            for &w in &dirty {
                sh.meta[w] &= !DIRTY;
            }
        }
        Ok(())
    }

    /// Inserts or replaces every entry of `entries` (a bulk load): they are streamed to the
    /// server-side table in large batches, several requests in flight, without being cached
    /// locally (cached copies of these keys are dropped), and the call returns once the server
    /// has them all. Lookups meanwhile see them (read-your-writes). Later entries win over
    /// earlier ones with the same key.
    ///
    /// ```
    /// use farmem::{Runtime, RuntimeConfig};
    /// use farmem::containers::{FarHashMap, HashMapConfig};
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    /// let m: FarHashMap<u64, u64> = FarHashMap::new(&rt, HashMapConfig::new(1 << 16)).unwrap();
    /// m.extend((0..100_000u64).map(|k| (k, k * 3))).unwrap();
    /// assert_eq!(m.cached_len(), 0);
    /// assert_eq!(m.get(&99_999).unwrap(), Some(299_997));
    /// assert_eq!(m.len().unwrap(), 100_000);
    /// ```
    ///
    /// # Errors
    /// The backend's or the agent's error. Entries taken from `entries` before the failure
    /// stay in the map (those not yet acknowledged by the server are kept locally and written
    /// back later); the rest of `entries` is not consumed.
    pub fn extend(&self, entries: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let mut it = entries.into_iter();
        let mut chunk: Vec<(K, V)> = Vec::with_capacity(BULK_CHUNK);
        loop {
            chunk.clear();
            chunk.extend(it.by_ref().take(BULK_CHUNK));
            if chunk.is_empty() {
                break;
            }
            let g = self.group_by_shard(chunk.iter().map(|(k, _)| *k));
            for (s, idx) in g.shards() {
                let mut sh = self.shards[s].lock();
                for &i in idx {
                    let (k, v) = chunk[i as usize];
                    // The new value supersedes a cached copy, dirty or not.
                    sh.forget(&k);
                    sh.out.push(k, v);
                    self.make_room(&mut sh)?;
                }
            }
        }
        let mut first = Ok(());
        for sh in self.shards.iter() {
            let mut sh = sh.lock();
            if sh.out.unsent > 0 || !sh.out.flights.is_empty() {
                first = first.and(self.write_back(&mut sh));
            }
        }
        first
    }

    /// [`extend`](Self::extend) from a slice.
    ///
    /// ```
    /// use farmem::{Runtime, RuntimeConfig};
    /// use farmem::containers::{FarHashMap, HashMapConfig};
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    /// let m: FarHashMap<u32, u32> = FarHashMap::new(&rt, HashMapConfig::new(4096)).unwrap();
    /// let entries: Vec<(u32, u32)> = (0..10_000).map(|k| (k, k + 1)).collect();
    /// m.insert_many(&entries).unwrap();
    /// assert_eq!(m.cached_len(), 0);
    /// assert_eq!(m.get(&9_999).unwrap(), Some(10_000));
    /// assert_eq!(m.len().unwrap(), 10_000);
    /// ```
    ///
    /// # Errors
    /// As [`extend`](Self::extend).
    pub fn insert_many(&self, entries: &[(K, V)]) -> Result<()> {
        self.extend(entries.iter().copied())
    }
}
