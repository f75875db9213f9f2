//! [`FarHashMap`]: hot entries cached locally, cold entries in a server-side table.
//!
//! - [`cache`]: each shard's set-associative local cache of hot entries;
//! - [`batch`]: batched and pipelined lookups (`get_many`, `get_many_submit`,
//!   `get_many_pipelined`);
//! - [`remote`]: the server-side table (write-backs, admission of fetched entries, scans).

mod batch;
mod cache;
mod remote;

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};

use bytemuck::Pod;
use farmem_proto::agent::{AgentMessage, HtKeysArgs, HtValue, HtValues, op};
use parking_lot::Mutex;

pub use batch::PendingLookup;
use cache::{FastState, Shard, WAYS, WRITE_BACK_BATCH};

use super::agent_ops::{agent_ids, call};
use super::error::{ContainerError, Result};
use crate::Runtime;

/// Configuration of a [`FarHashMap`].
#[derive(Clone, Copy, Debug)]
pub struct HashMapConfig {
    /// Bytes of local memory for cached entries (key + value + one byte each, see
    /// [`FarHashMap::bytes_per_entry`]).
    pub local_bytes: usize,
    /// Number of independently locked shards.
    pub shards: usize,
    /// Fraction of each cache set's ways that entries hit since they were cached may hold
    /// before new entries make them age (the protected segment; the rest is probation).
    pub protected_fraction: f64,
    /// [`FarHashMap::get_many_pipelined`]: the misses of consecutive batches are fetched
    /// together until a request holds at least this many keys.
    pub pipeline_misses: usize,
    /// [`FarHashMap::get_many_pipelined`]: requests in flight per calling thread.
    pub pipeline_depth: usize,
}

impl HashMapConfig {
    /// A cache of `local_bytes` with 64 shards, 80% protected; pipelined lookups send requests
    /// of at least 64 misses, two in flight.
    pub fn new(local_bytes: usize) -> Self {
        Self {
            local_bytes,
            shards: 64,
            protected_fraction: 0.8,
            pipeline_misses: 64,
            pipeline_depth: 2,
        }
    }
}

/// Counters of a [`FarHashMap`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashMapStats {
    /// Lookups answered from the local cache.
    pub hits: u64,
    /// Lookups that went to the server.
    pub misses: u64,
    /// Cached entries evicted.
    pub evictions: u64,
    /// Entries written back to the server.
    pub writebacks: u64,
    /// Round trips to the server.
    pub round_trips: u64,
}

/// A concurrent hash map of `Pod` keys and values in far memory.
///
/// Hot entries are cached locally within [`HashMapConfig::local_bytes`]; every other entry lives
/// in a server-side table of the remote agent, so a miss costs one round trip by key and
/// [`get_many`](Self::get_many) fetches all its misses in one round trip. Evicted entries that
/// changed are written back in one batch per eviction round. All methods take `&self` and may be
/// called from many threads.
///
/// ```
/// use farmem::{Runtime, RuntimeConfig};
/// use farmem::containers::{FarHashMap, HashMapConfig};
/// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
/// let m: FarHashMap<u64, [u8; 16]> = FarHashMap::new(&rt, HashMapConfig::new(4096)).unwrap();
/// for k in 0..1000u64 {
///     m.insert(k, [k as u8; 16]).unwrap();
/// }
/// assert_eq!(m.get(&7).unwrap(), Some([7; 16]));
/// assert_eq!(m.get_many(&[3, 5000]).unwrap(), vec![Some([3; 16]), None]);
/// m.update(&7, |v| *v = None).unwrap();
/// assert_eq!(m.len().unwrap(), 999);
/// ```
pub struct FarHashMap<K, V> {
    rt: Runtime,
    table: u64,
    shards: Box<[Mutex<Shard<K, V>>]>,
    hasher: FastState,
    per_shard: usize,
    write_back_batch: usize,
    pipeline_misses: usize,
    pipeline_depth: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    writebacks: AtomicU64,
    round_trips: AtomicU64,
}

impl<K, V> std::fmt::Debug for FarHashMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FarHashMap")
            .field("table", &self.table)
            .field("per_shard", &self.per_shard)
            .finish()
    }
}

fn decode<T: Pod>(bytes: &[u8]) -> Result<T> {
    bytemuck::try_pod_read_unaligned(bytes)
        .map_err(|_| ContainerError::Agent(format!("stored value of {} bytes", bytes.len())))
}

impl<K: Pod + Hash + Eq + Send + Sync, V: Pod + Send + Sync> FarHashMap<K, V> {
    /// An empty map caching up to `cfg.local_bytes` of entries locally.
    ///
    /// # Errors
    /// [`ContainerError::Invalid`] for zero shards, a zero pipeline depth or a protected fraction
    /// outside `0..=1`.
    pub fn new(rt: &Runtime, cfg: HashMapConfig) -> Result<Self> {
        if cfg.shards == 0
            || cfg.pipeline_depth == 0
            || !(0.0..=1.0).contains(&cfg.protected_fraction)
        {
            return Err(ContainerError::Invalid(format!(
                "bad hash map config {cfg:?}"
            )));
        }
        let entry = Self::bytes_per_entry();
        // Each shard's share holds its ways and its write-back buffer (key + value per entry).
        let per_shard = (cfg.local_bytes / entry / cfg.shards).max(WAYS);
        let write_back_batch = (per_shard / 8).clamp(1, WRITE_BACK_BATCH);
        let buffer = (write_back_batch * (size_of::<K>() + size_of::<V>())).div_ceil(entry);
        let max_sets = (per_shard.saturating_sub(buffer) / WAYS).max(1);
        let protected_ways = (WAYS as f64 * cfg.protected_fraction) as usize;
        let hasher = FastState::random();
        Ok(Self {
            rt: rt.clone(),
            table: agent_ids(rt, 1)?,
            shards: (0..cfg.shards)
                .map(|_| Mutex::new(Shard::new(hasher, max_sets, protected_ways)))
                .collect(),
            hasher,
            per_shard,
            write_back_batch,
            pipeline_misses: cfg.pipeline_misses.max(1),
            pipeline_depth: cfg.pipeline_depth.max(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            writebacks: AtomicU64::new(0),
            round_trips: AtomicU64::new(0),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> HashMapStats {
        HashMapStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            writebacks: self.writebacks.load(Ordering::Relaxed),
            round_trips: self.round_trips.load(Ordering::Relaxed),
        }
    }

    /// Bytes of local memory one cached entry costs: its key, its value and one byte of
    /// metadata (the cache is a set-associative array, no pointers).
    pub fn bytes_per_entry() -> usize {
        size_of::<K>() + size_of::<V>() + 1
    }

    /// Number of entries cached locally.
    pub fn cached_len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().cached()).sum()
    }

    /// Whether `k` is cached locally right now.
    pub fn is_cached(&self, k: &K) -> bool {
        self.shard(k).lock().contains(k)
    }

    fn shard_index(&self, k: &K) -> usize {
        // A second mix, so that a shard's keys do not share bits its map indexes by.
        let h = self.hasher.hash_one(k).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        ((h * self.shards.len() as u64) >> 32) as usize
    }

    fn shard(&self, k: &K) -> &Mutex<Shard<K, V>> {
        &self.shards[self.shard_index(k)]
    }
}

impl<K: Pod + Hash + Eq + Send + Sync, V: Pod + Send + Sync> FarHashMap<K, V> {
    /// Looks `k` up: locally, or with one round trip.
    ///
    /// # Errors
    /// The backend's or the agent's error.
    pub fn get(&self, k: &K) -> Result<Option<V>> {
        Ok(self.get_many(std::slice::from_ref(k))?.pop().flatten())
    }

    /// Inserts or replaces `k` (locally; written back when evicted).
    ///
    /// # Errors
    /// The backend's error if making room needed a write-back that failed (nothing changed).
    pub fn insert(&self, k: K, v: V) -> Result<()> {
        let mut sh = self.shard(&k).lock();
        self.make_room(&mut sh)?;
        self.put_local(&mut sh, k, v, true);
        Ok(())
    }

    /// Inserts or replaces every entry straight in the server-side table (bulk load): one round
    /// trip per shard touched (per 4096 entries), nothing is cached locally, and cached copies
    /// of these keys are dropped. Later entries win over earlier ones with the same key.
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
    /// The backend's or the agent's error; the shards written before the failure keep their
    /// entries.
    pub fn insert_many(&self, entries: &[(K, V)]) -> Result<()> {
        let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); self.shards.len()];
        for (i, (k, _)) in entries.iter().enumerate() {
            by_shard[self.shard_index(k)].push(i);
        }
        for (shard, idx) in self.shards.iter().zip(by_shard) {
            if idx.is_empty() {
                continue;
            }
            // Written while holding the shard's lock, so no lookup of these keys caches the
            // server's older copy meanwhile.
            let mut sh = shard.lock();
            for &i in &idx {
                sh.changed_remotely(entries[i].0);
            }
            for part in idx.chunks(4096) {
                self.put_remote(
                    part.iter()
                        .map(|&i| {
                            let (k, v) = &entries[i];
                            (
                                bytemuck::bytes_of(k).to_vec(),
                                bytemuck::bytes_of(v).to_vec(),
                            )
                        })
                        .collect(),
                )?;
                // Only now is the server's copy the newest: a failed part leaves its keys'
                // cached (possibly dirty) values in place.
                for &i in part {
                    sh.forget(&entries[i].0);
                }
            }
        }
        Ok(())
    }

    /// Removes `k`, returning its value (one round trip).
    ///
    /// # Errors
    /// The backend's or the agent's error.
    pub fn remove(&self, k: &K) -> Result<Option<V>> {
        let mut sh = self.shard(k).lock();
        let cached = sh.forget(k);
        sh.changed_remotely(*k);
        let r: Result<HtValues> = self.agent(
            op::HT_REMOVE,
            &HtKeysArgs {
                table: self.table,
                keys: vec![bytemuck::bytes_of(k).to_vec()],
            },
        );
        let remote = match r {
            Ok(r) => r,
            Err(e) => {
                if let Some((v, dirty)) = cached {
                    // Back where it was (the buffer may exceed its batch by one meanwhile).
                    self.put_local(&mut sh, *k, v, dirty);
                }
                return Err(e);
            }
        };
        if let Some((v, _)) = cached {
            return Ok(Some(v));
        }
        match remote.values.into_iter().next() {
            Some(HtValue::Value(b)) => Ok(Some(decode(&b)?)),
            _ => Ok(None),
        }
    }

    /// Entry-style update: calls `f` with the current value (`None` if absent) and stores what it
    /// leaves (`None` removes the entry). Returns `f`'s result. Atomic with respect to other calls
    /// on the same key.
    ///
    /// # Errors
    /// The backend's or the agent's error (nothing changed then).
    pub fn update<R>(&self, k: &K, f: impl FnOnce(&mut Option<V>) -> R) -> Result<R> {
        let mut sh = self.shard(k).lock();
        let mut cur = match sh.peek(k) {
            Some(v) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(v)
            }
            None => {
                // Fetch under the shard lock so the update is atomic for this key.
                self.misses.fetch_add(1, Ordering::Relaxed);
                let got: HtValues = self.agent(
                    op::HT_GET,
                    &HtKeysArgs {
                        table: self.table,
                        keys: vec![bytemuck::bytes_of(k).to_vec()],
                    },
                )?;
                match got.values.into_iter().next() {
                    Some(HtValue::Value(b)) => Some(decode(&b)?),
                    _ => None,
                }
            }
        };
        let existed = cur.is_some();
        let r = f(&mut cur);
        match cur {
            Some(v) => {
                self.make_room(&mut sh)?;
                self.put_local(&mut sh, *k, v, true);
            }
            None if existed => {
                sh.forget(k);
                sh.changed_remotely(*k);
                let _: HtValues = self.agent(
                    op::HT_REMOVE,
                    &HtKeysArgs {
                        table: self.table,
                        keys: vec![bytemuck::bytes_of(k).to_vec()],
                    },
                )?;
            }
            None => {}
        }
        Ok(r)
    }
}

impl<K, V> Drop for FarHashMap<K, V> {
    fn drop(&mut self) {
        let args = self.table.encode();
        if let Err(e) = call(&self.rt, self.table, op::HT_DROP, &args) {
            tracing::warn!("dropping server-side table {:#x} failed: {e}", self.table);
        }
    }
}
