//! [`FarHashMap`]: hot entries cached locally, cold entries in a server-side table.
//!
//! - [`cache`]: each shard's set-associative local cache of hot entries;
//! - [`batch`]: batched and pipelined lookups (`get_many`, `get_many_submit`,
//!   `get_many_pipelined`);
//! - [`outbox`]: each shard's entries on their way to the server;
//! - [`writeback`]: batched, pipelined write-backs and bulk inserts (`extend`, `insert_many`);
//! - [`remote`]: the server-side table (admission of fetched entries, scans).

mod batch;
mod cache;
mod hint;
mod outbox;
mod remote;
mod writeback;

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};

use bytemuck::Pod;
use farmem_proto::agent::{AgentMessage, HtKeysArgs, HtValue, HtValues, op};
use parking_lot::Mutex;

pub use batch::PendingLookup;
use cache::{FastState, Shard, WAYS};
use hint::SetHint;
use outbox::Out;

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
    /// Whether `local_bytes` come out of the runtime's local budget (the runtime's objects keep
    /// to the rest while the map lives) rather than in addition to it. See
    /// [`HashMapConfig::within_runtime`].
    pub from_runtime_budget: bool,
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
            from_runtime_budget: false,
        }
    }

    /// As [`HashMapConfig::new`], with the cache's `local_bytes` taken out of the runtime's
    /// local budget: one budget covers the runtime's objects and the map's cached entries, and
    /// the runtime's objects keep to the rest ([`Runtime::heap_budget`]) until the map is
    /// dropped.
    ///
    /// ```
    /// use farmem::{Runtime, RuntimeConfig};
    /// use farmem::containers::{FarHashMap, HashMapConfig};
    /// let rt = Runtime::new(RuntimeConfig::new(64 << 20)).unwrap();
    /// let m: FarHashMap<u64, u64> =
    ///     FarHashMap::new(&rt, HashMapConfig::within_runtime(16 << 20)).unwrap();
    /// assert_eq!(rt.heap_budget(), 48 << 20);
    /// drop(m);
    /// assert_eq!(rt.heap_budget(), 64 << 20);
    /// ```
    pub fn within_runtime(local_bytes: usize) -> Self {
        Self {
            from_runtime_budget: true,
            ..Self::new(local_bytes)
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
/// [`get_many`](Self::get_many) fetches all its misses in one round trip. Inserts never fetch:
/// evicted entries that changed are written back in large batches, several requests in flight,
/// and answer lookups locally until the server has them (read-your-writes);
/// [`extend`](Self::extend) streams new entries to the server the same way without caching them.
/// All methods take `&self` and may be called from many threads.
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
    /// Each shard's [`SetHint`], read without its lock.
    hints: Box<[std::sync::Arc<SetHint>]>,
    hasher: FastState,
    per_shard: usize,
    /// Entries per write-back request (and unsent entries a shard holds before sending them).
    write_back_batch: usize,
    pipeline_misses: usize,
    pipeline_depth: usize,
    writebacks: AtomicU64,
    round_trips: AtomicU64,
    /// The cache's bytes, when they come out of the runtime's budget.
    _loan: Option<crate::runtime::LocalLoan>,
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
    /// An empty map caching up to `cfg.local_bytes` of entries locally (out of the runtime's
    /// budget with [`HashMapConfig::within_runtime`]).
    ///
    /// # Errors
    /// [`ContainerError::Invalid`] for zero shards, a zero pipeline depth or a protected fraction
    /// outside `0..=1`; [`ContainerError::Runtime`] with [`Error::Config`](crate::Error::Config)
    /// when the cache would leave the runtime's objects less than an eighth of its budget (or
    /// eight regions).
    pub fn new(rt: &Runtime, cfg: HashMapConfig) -> Result<Self> {
        if cfg.shards == 0
            || cfg.pipeline_depth == 0
            || !(0.0..=1.0).contains(&cfg.protected_fraction)
        {
            return Err(ContainerError::Invalid(format!(
                "bad hash map config {cfg:?}"
            )));
        }
        let loan = if cfg.from_runtime_budget {
            Some(rt.lend_local(cfg.local_bytes)?)
        } else {
            None
        };
        let entry = Self::bytes_per_entry();
        // Each shard's share holds its ways and, in an eighth of it, its outbox: up to a batch
        // of unsent entries and `WRITE_BACK_DEPTH` batches in flight (a hash-map slot each, at
        // least 7/16 full, plus the key in its request's list).
        let shard_bytes = cfg.local_bytes / cfg.shards;
        let out_entry = 2 * (size_of::<(K, Out<V>)>() + 1) + size_of::<K>();
        let slots = writeback::WRITE_BACK_DEPTH + 1;
        let write_back_batch =
            (shard_bytes / 8 / (slots * out_entry)).clamp(1, writeback::MAX_WRITE_BACK_BATCH);
        let reserved = slots * write_back_batch * out_entry;
        let per_shard = (shard_bytes.saturating_sub(reserved) / entry).max(WAYS);
        let max_sets = (per_shard / WAYS).max(1);
        let protected_ways = (WAYS as f64 * cfg.protected_fraction) as usize;
        let hasher = FastState::random();
        let shards: Box<[Mutex<Shard<K, V>>]> = (0..cfg.shards)
            .map(|_| Mutex::new(Shard::new(hasher, max_sets, protected_ways)))
            .collect();
        let hints = shards.iter().map(|s| s.lock().hint.clone()).collect();
        Ok(Self {
            rt: rt.clone(),
            table: agent_ids(rt, 1)?,
            shards,
            hints,
            hasher,
            per_shard,
            write_back_batch,
            pipeline_misses: cfg.pipeline_misses.max(1),
            pipeline_depth: cfg.pipeline_depth.max(1),
            writebacks: AtomicU64::new(0),
            round_trips: AtomicU64::new(0),
            _loan: loan,
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> HashMapStats {
        let (hits, misses, evictions) = self.shards.iter().fold((0, 0, 0), |(h, m, e), s| {
            let s = s.lock();
            (h + s.hits, m + s.misses, e + s.evictions)
        });
        HashMapStats {
            hits,
            misses,
            evictions,
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

    /// The hash of `k`: its shard and its set within the shard both come from it.
    #[inline]
    fn hash(&self, k: &K) -> u64 {
        self.hasher.hash_one(k)
    }

    /// The shard of a key hashing to `h`.
    #[inline]
    fn shard_of(&self, h: u64) -> usize {
        // A second mix, so that a shard's keys do not share bits its sets are indexed by.
        let h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        ((h * self.shards.len() as u64) >> 32) as usize
    }

    fn shard_index(&self, k: &K) -> usize {
        self.shard_of(self.hash(k))
    }

    fn shard(&self, k: &K) -> &Mutex<Shard<K, V>> {
        &self.shards[self.shard_index(k)]
    }

    /// Groups the positions of `keys` by shard (a counting sort): returns every key's hash,
    /// the positions shard by shard, and where each shard's positions start (`shards + 1`
    /// bounds). Prefetches every key's cache set on the way, before any shard is locked.
    fn group_by_shard(&self, keys: impl ExactSizeIterator<Item = K>) -> Grouped {
        let n = keys.len();
        let mut hashes = Vec::with_capacity(n);
        let mut shard_of = Vec::with_capacity(n);
        let mut starts = vec![0u32; self.shards.len() + 1];
        for k in keys {
            let h = self.hash(&k);
            let s = self.shard_of(h);
            self.hints[s].prefetch::<K, V>(h);
            hashes.push(h);
            shard_of.push(s as u32);
            starts[s + 1] += 1;
        }
        for s in 1..starts.len() {
            starts[s] += starts[s - 1];
        }
        let mut next = starts.clone();
        let mut order = vec![0u32; n];
        for (i, &s) in shard_of.iter().enumerate() {
            order[next[s as usize] as usize] = i as u32;
            next[s as usize] += 1;
        }
        Grouped {
            hashes,
            order,
            starts,
        }
    }
}

/// Keys grouped by shard ([`FarHashMap::group_by_shard`]).
struct Grouped {
    hashes: Vec<u64>,
    order: Vec<u32>,
    starts: Vec<u32>,
}

impl Grouped {
    /// The non-empty shards and their keys' positions.
    fn shards(&self) -> impl Iterator<Item = (usize, &[u32])> {
        self.starts
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w[1] > w[0])
            .map(|(s, w)| (s, &self.order[w[0] as usize..w[1] as usize]))
    }
}

impl<K: Pod + Hash + Eq + Send + Sync, V: Pod + Send + Sync> FarHashMap<K, V> {
    /// Looks `k` up: locally, or with one round trip.
    ///
    /// # Errors
    /// The backend's or the agent's error.
    pub fn get(&self, k: &K) -> Result<Option<V>> {
        let h = self.hash(k);
        {
            let mut sh = self.shards[self.shard_of(h)].lock();
            if let Some(v) = sh.hit(k, h) {
                sh.hits += 1;
                return Ok(Some(v));
            }
        }
        Ok(self.get_many(std::slice::from_ref(k))?.pop().flatten())
    }

    /// Inserts or replaces `k` (locally, never fetching; written back when evicted, in large
    /// batches with several requests in flight).
    ///
    /// # Errors
    /// The backend's error from an earlier write-back of this shard that failed (nothing
    /// changed then; the entries of that write-back are kept and sent again later).
    pub fn insert(&self, k: K, v: V) -> Result<()> {
        let mut sh = self.shard(&k).lock();
        self.make_room(&mut sh)?;
        self.put_local(&mut sh, k, v, true);
        Ok(())
    }

    /// Removes `k`, returning its value (one round trip).
    ///
    /// # Errors
    /// The backend's or the agent's error.
    pub fn remove(&self, k: &K) -> Result<Option<V>> {
        let mut sh = self.shard(k).lock();
        self.settle_key(&mut sh, k)?;
        let cached = sh.forget(k);
        let queued = sh.out.supersede(k).map(|(v, _)| v);
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
                // Back where it was (the outbox may exceed its batch by one meanwhile).
                if let Some((v, dirty)) = cached {
                    self.put_local(&mut sh, *k, v, dirty);
                } else if let Some(v) = queued {
                    sh.out.push(*k, v);
                }
                return Err(e);
            }
        };
        if let Some(v) = cached.map(|(v, _)| v).or(queued) {
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
                sh.hits += 1;
                Some(v)
            }
            None => {
                // Fetch under the shard lock so the update is atomic for this key.
                sh.misses += 1;
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
                self.settle_key(&mut sh, k)?;
                let cached = sh.forget(k);
                let queued = sh.out.supersede(k).map(|(v, _)| v);
                sh.changed_remotely(*k);
                let r: Result<HtValues> = self.agent(
                    op::HT_REMOVE,
                    &HtKeysArgs {
                        table: self.table,
                        keys: vec![bytemuck::bytes_of(k).to_vec()],
                    },
                );
                if let Err(e) = r {
                    if let Some((v, dirty)) = cached {
                        self.put_local(&mut sh, *k, v, dirty);
                    } else if let Some(v) = queued {
                        sh.out.push(*k, v);
                    }
                    return Err(e);
                }
            }
            None => {}
        }
        Ok(r)
    }
}

impl<K, V> Drop for FarHashMap<K, V> {
    fn drop(&mut self) {
        // Write-backs still in flight land first (so none recreates the table after the drop).
        for sh in self.shards.iter() {
            let mut sh = sh.lock();
            while let Some(f) = sh.out.flights.pop_front() {
                let _ = f.pending.wait();
            }
        }
        let args = self.table.encode();
        if let Err(e) = call(&self.rt, self.table, op::HT_DROP, &args) {
            tracing::warn!("dropping server-side table {:#x} failed: {e}", self.table);
        }
    }
}
