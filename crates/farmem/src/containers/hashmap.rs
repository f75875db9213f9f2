//! [`FarHashMap`]: hot entries cached locally, cold entries in a server-side table.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use bytemuck::Pod;
use farmem_proto::agent::{
    AgentMessage, HtKeysArgs, HtPutArgs, HtScanArgs, HtScanResult, HtValue, HtValues, op,
};
use parking_lot::Mutex;

use super::agent_ops::{agent_ids, call};
use super::error::{ContainerError, Result};
use crate::Runtime;
use crate::backend::PendingCompute;

/// A pipelined request closes after this many keys per wanted miss even with fewer misses, so
/// that batches with (almost) only hits are not held back for long.
const GROUP_KEYS_PER_MISS: usize = 8;

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

/// A fast multiplicative hasher, seeded per map (shard selection and the shard-local maps): an
/// adversary cannot aim many keys at one shard or one bucket chain without knowing the seed.
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        // A full finalizer: every input bit reaches the low bits the tables index by (a plain
        // fold would leave keys that differ only in high bits in one bucket, whatever the seed).
        let h = (self.0 ^ (self.0 >> 32)).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        h ^ (h >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7C_C1_B7_27_22_0A_95);
    }
}

/// Builds [`FastHasher`]s with one random seed.
#[derive(Clone, Copy)]
struct FastState(u64);

impl FastState {
    fn random() -> Self {
        Self(RandomState::new().hash_one(0x6661_726d_656d_u64))
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.0)
    }
}

/// Ways per set of a shard's cache.
const WAYS: usize = 8;
/// Most dirty evicted entries a shard holds before it writes them back in one request.
const WRITE_BACK_BATCH: usize = 256;
/// Metadata bits of a cache way: in use, changed since fetched, and a 2-bit hit frequency.
const VALID: u8 = 0x80;
const DIRTY: u8 = 0x40;
const FREQ: u8 = 0x03;

/// One shard's cache: a set-associative array of keys, values and one metadata byte per way,
/// so an entry costs `size_of::<K>() + size_of::<V>() + 1` bytes and no pointers or
/// allocations. A key can live only in its set's [`WAYS`] ways, kept in the order they were
/// cached (newest first). New entries start at frequency 0, every hit adds one (up to 3), and
/// the victim is always the oldest of a set's frequency-0 ways; when a set has none of those,
/// or more of its ways were hit than its protected share, all its ways age by one. So entries
/// never hit are evicted first, oldest first, and a scan of cold keys never pushes hot keys
/// out. The arrays grow by doubling up to their budget.
///
/// Dirty victims wait in `evicted` (answered from there) until [`WRITE_BACK_BATCH`] of them
/// (or the shard's share) go back in one request.
struct Shard<K, V> {
    hasher: FastState,
    keys: Vec<K>,
    values: Vec<V>,
    meta: Vec<u8>,
    /// Sets now; grows by doubling up to `max_sets`.
    sets: usize,
    max_sets: usize,
    /// Ways in use.
    len: usize,
    /// Ways of a set that may have been hit before new entries force aging.
    protected_ways: usize,
    /// Dirty entries evicted from the ways, not yet written back (newer than the server's).
    evicted: Vec<(K, V)>,
    /// Lookups of this shard's keys on their way to the server.
    inflight: usize,
    /// Keys whose server copy changed while lookups were in flight: such a lookup's answer may
    /// be stale and is returned but not cached. Cleared when no lookup is in flight.
    changed: std::collections::HashSet<K>,
}

impl<K: Pod + Hash + Eq, V: Pod> Shard<K, V> {
    fn new(hasher: FastState, max_sets: usize, protected_ways: usize) -> Self {
        // Start small and double: `max_sets >> k` doubled k times is `max_sets` rounded down
        // to a multiple of 2^k (at most 1/16 of it lost).
        let mut sets = max_sets.max(1);
        let mut k = 0;
        while sets > 16 && k < 4 {
            sets /= 2;
            k += 1;
        }
        let mut sh = Self {
            hasher,
            keys: Vec::new(),
            values: Vec::new(),
            meta: Vec::new(),
            sets,
            max_sets: sets << k,
            len: 0,
            protected_ways,
            evicted: Vec::new(),
            inflight: 0,
            changed: std::collections::HashSet::new(),
        };
        sh.resize(sets);
        sh
    }

    fn resize(&mut self, sets: usize) {
        let old_keys = std::mem::replace(&mut self.keys, vec![K::zeroed(); sets * WAYS]);
        let old_values = std::mem::replace(&mut self.values, vec![V::zeroed(); sets * WAYS]);
        let old_meta = std::mem::replace(&mut self.meta, vec![0; sets * WAYS]);
        self.sets = sets;
        self.len = 0;
        for ((k, v), m) in old_keys.into_iter().zip(old_values).zip(old_meta) {
            if m & VALID != 0 {
                // Doubling splits set i into 2i and 2i+1, so a free way always exists.
                let base = self.base(&k);
                if let Some(w) = (base..base + WAYS).find(|&w| self.meta[w] & VALID == 0) {
                    self.keys[w] = k;
                    self.values[w] = v;
                    self.meta[w] = m;
                    self.len += 1;
                }
            }
        }
    }

    /// First way of `k`'s set.
    fn base(&self, k: &K) -> usize {
        let h = self.hasher.hash_one(k) as u32;
        ((u64::from(h) * self.sets as u64) >> 32) as usize * WAYS
    }

    /// The way holding `k`.
    #[inline]
    fn find(&self, k: &K) -> Option<usize> {
        let base = self.base(k);
        (base..base + WAYS).find(|&w| self.meta[w] & VALID != 0 && self.keys[w] == *k)
    }

    /// Reads the first key and the metadata of every listed key's set (so that the loads
    /// overlap) and returns a value that depends on them.
    fn load_sets<'k>(&self, keys: impl Iterator<Item = &'k K>) -> u8
    where
        K: 'k,
    {
        keys.fold(0, |acc, k| {
            let base = self.base(k);
            acc ^ self.meta[base]
                ^ bytemuck::bytes_of(&self.keys[base])
                    .first()
                    .copied()
                    .unwrap_or(0)
        })
    }

    fn find_evicted(&self, k: &K) -> Option<usize> {
        if self.evicted.is_empty() {
            return None;
        }
        self.evicted.iter().position(|(ek, _)| ek == k)
    }

    /// `k`'s value, if cached (in a way or waiting for write-back); records nothing.
    fn peek(&self, k: &K) -> Option<V> {
        match self.find(k) {
            Some(w) => Some(self.values[w]),
            None => self.find_evicted(k).map(|i| self.evicted[i].1),
        }
    }

    fn contains(&self, k: &K) -> bool {
        self.peek(k).is_some()
    }

    /// Looks `k` up and records the hit.
    #[inline]
    fn hit(&mut self, k: &K) -> Option<V> {
        match self.find(k) {
            Some(w) => {
                if self.meta[w] & FREQ != FREQ {
                    self.meta[w] += 1;
                }
                Some(self.values[w])
            }
            None => self.find_evicted(k).map(|i| self.evicted[i].1),
        }
    }

    /// Whether the write-back buffer is full (must be emptied before the next `put`).
    fn must_write_back(&self, batch: usize) -> bool {
        self.evicted.len() >= batch
    }

    /// Inserts or replaces `k` (a replacement counts as a hit; `dirty` marks it changed).
    /// Returns whether an entry was evicted to make room.
    fn put(&mut self, k: K, v: V, dirty: bool) -> bool {
        if let Some(i) = self.find_evicted(&k) {
            self.evicted.swap_remove(i);
        }
        let dirty_bit = if dirty { DIRTY } else { 0 };
        if let Some(w) = self.find(&k) {
            self.values[w] = v;
            self.meta[w] |= dirty_bit;
            if self.meta[w] & FREQ != FREQ {
                self.meta[w] += 1;
            }
            return false;
        }
        if self.sets < self.max_sets && self.len * 4 >= self.sets * WAYS * 3 {
            self.resize(self.sets * 2);
        }
        let base = self.base(&k);
        let (w, evicted) = match (base..base + WAYS).find(|&w| self.meta[w] & VALID == 0) {
            Some(w) => {
                self.len += 1;
                (w, false)
            }
            None => {
                let w = self.victim(base);
                if self.meta[w] & DIRTY != 0 {
                    self.evicted.push((self.keys[w], self.values[w]));
                }
                (w, true)
            }
        };
        // Ways are kept newest first: the newer ones move back over the freed way.
        self.keys.copy_within(base..w, base + 1);
        self.values.copy_within(base..w, base + 1);
        self.meta.copy_within(base..w, base + 1);
        self.keys[base] = k;
        self.values[base] = v;
        self.meta[base] = VALID | dirty_bit;
        evicted
    }

    /// A way of the full set at `base` to evict (see the type's documentation).
    fn victim(&mut self, base: usize) -> usize {
        loop {
            let cold = (base..base + WAYS)
                .filter(|&w| self.meta[w] & FREQ == 0)
                .count();
            if cold > 0 && WAYS - cold <= self.protected_ways {
                // The oldest such way.
                if let Some(w) = (base..base + WAYS)
                    .rev()
                    .find(|&w| self.meta[w] & FREQ == 0)
                {
                    return w;
                }
            }
            for m in &mut self.meta[base..base + WAYS] {
                if *m & FREQ != 0 {
                    *m -= 1;
                }
            }
        }
    }

    /// Removes `k` from the cache; returns its value and whether it was dirty.
    fn forget(&mut self, k: &K) -> Option<(V, bool)> {
        if let Some(w) = self.find(k) {
            let dirty = self.meta[w] & DIRTY != 0;
            self.meta[w] = 0;
            self.len -= 1;
            return Some((self.values[w], dirty));
        }
        let i = self.find_evicted(k)?;
        Some((self.evicted.swap_remove(i).1, true))
    }

    /// Notes that the server copy of `k` is changing.
    fn changed_remotely(&mut self, k: K) {
        if self.inflight > 0 {
            self.changed.insert(k);
        }
    }

    /// Entries cached here (ways and write-back buffer).
    fn cached(&self) -> usize {
        self.len + self.evicted.len()
    }
}

/// Lookups of one or more batches whose misses travel in one request.
struct Group<K, V> {
    /// Each batch's values (misses still `None`) and its range in `missing`.
    batches: Vec<(Vec<Option<V>>, Range<usize>)>,
    /// The missed keys of all batches, in order.
    missing: Vec<K>,
    /// For each missed key, its position in its batch.
    slots: Vec<usize>,
    /// The request, once submitted.
    pending: Option<PendingCompute>,
}

/// The groups of a pipelined lookup still in flight; dropping it abandons them.
struct InFlight<'a, K: Pod + Hash + Eq + Send + Sync, V: Pod + Send + Sync> {
    map: &'a FarHashMap<K, V>,
    groups: VecDeque<Group<K, V>>,
}

impl<K: Pod + Hash + Eq + Send + Sync, V: Pod + Send + Sync> Drop for InFlight<'_, K, V> {
    fn drop(&mut self) {
        while let Some(g) = self.groups.pop_front() {
            self.map.abandon_group(g);
        }
    }
}

/// A [`FarHashMap::get_many_submit`] lookup whose misses are in flight.
#[must_use = "wait for the lookup to learn the values"]
pub struct PendingLookup<'a, K: Pod + Hash + Eq + Send + Sync, V: Pod + Send + Sync> {
    map: &'a FarHashMap<K, V>,
    group: Option<Group<K, V>>,
}

impl<K: Pod + Hash + Eq + Send + Sync, V: Pod + Send + Sync> PendingLookup<'_, K, V> {
    /// Waits for the misses and returns every key's value, in the order of the keys.
    ///
    /// # Errors
    /// The backend's or the agent's error.
    pub fn wait(mut self) -> Result<Vec<Option<V>>> {
        let g = self
            .group
            .take()
            .ok_or_else(|| ContainerError::Agent("lookup already collected".into()))?;
        let mut out = None;
        self.map.finish_group(g, |_, v| out = Some(v))?;
        out.ok_or_else(|| ContainerError::Agent("lookup lost its batch".into()))
    }
}

impl<K: Pod + Hash + Eq + Send + Sync, V: Pod + Send + Sync> Drop for PendingLookup<'_, K, V> {
    fn drop(&mut self) {
        if let Some(g) = self.group.take() {
            self.map.abandon_group(g);
        }
    }
}

impl<K, V> Default for Group<K, V> {
    fn default() -> Self {
        Self {
            batches: Vec::new(),
            missing: Vec::new(),
            slots: Vec::new(),
            pending: None,
        }
    }
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
            table: agent_ids(1),
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

    fn agent<R: AgentMessage>(&self, opn: u16, args: &impl AgentMessage) -> Result<R> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let out = call(&self.rt, self.table, opn, &args.encode())?;
        Ok(R::decode(&out)?)
    }

    /// Writes `entries` back to the server (one round trip).
    fn put_remote(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.writebacks
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        let _: HtValues = self.agent(
            op::HT_PUT,
            &HtPutArgs {
                table: self.table,
                return_old: false,
                entries,
            },
        )?;
        Ok(())
    }

    /// Writes a locked shard's evicted dirty entries back once its buffer is full, while still
    /// holding the lock (so no lookup can see the server's older copy in between). On error the
    /// entries stay buffered, so nothing is lost.
    fn make_room(&self, shard: &mut Shard<K, V>) -> Result<()> {
        if !shard.must_write_back(self.write_back_batch) {
            return Ok(());
        }
        self.write_back(shard)
    }

    /// Writes every buffered dirty victim of a locked shard back.
    fn write_back(&self, shard: &mut Shard<K, V>) -> Result<()> {
        if shard.evicted.is_empty() {
            return Ok(());
        }
        let keys: Vec<K> = shard.evicted.iter().map(|(k, _)| *k).collect();
        for k in keys {
            shard.changed_remotely(k);
        }
        let entries = shard
            .evicted
            .iter()
            .map(|(k, v)| {
                (
                    bytemuck::bytes_of(k).to_vec(),
                    bytemuck::bytes_of(v).to_vec(),
                )
            })
            .collect();
        self.put_remote(entries)?;
        shard.evicted.clear();
        Ok(())
    }

    /// Caches `k` in a locked shard whose buffer has room.
    fn put_local(&self, shard: &mut Shard<K, V>, k: K, v: V, dirty: bool) {
        if shard.put(k, v, dirty) {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Ends an in-flight lookup of `k`; caches `v` (fetched from the server) unless the key's
    /// server copy changed meanwhile or it is cached already.
    fn admit_clean(&self, k: K, v: Option<V>) -> Result<()> {
        let mut sh = self.shard(&k).lock();
        let stale = !sh.changed.is_empty() && sh.changed.contains(&k);
        sh.inflight -= 1;
        if sh.inflight == 0 {
            sh.changed.clear();
        }
        let Some(v) = v else { return Ok(()) };
        if stale || sh.contains(&k) {
            return Ok(());
        }
        self.make_room(&mut sh)?;
        self.put_local(&mut sh, k, v, false);
        Ok(())
    }

    /// Looks `k` up: locally, or with one round trip.
    ///
    /// # Errors
    /// The backend's or the agent's error.
    pub fn get(&self, k: &K) -> Result<Option<V>> {
        Ok(self.get_many(std::slice::from_ref(k))?.pop().flatten())
    }

    /// Looks every key up; all misses are fetched in one round trip.
    ///
    /// # Errors
    /// The backend's or the agent's error.
    pub fn get_many(&self, keys: &[K]) -> Result<Vec<Option<V>>> {
        self.get_many_submit(keys).wait()
    }

    /// Starts [`get_many`](Self::get_many) without waiting: the hits are looked up now and
    /// the misses' request is sent; [`PendingLookup::wait`] collects the values. The calling
    /// thread can meanwhile do other work, e.g. fetch other far data, so the round trips
    /// overlap. Dropping the lookup abandons it.
    ///
    /// ```
    /// use farmem::{Runtime, RuntimeConfig};
    /// use farmem::containers::{FarHashMap, HashMapConfig};
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    /// let m: FarHashMap<u32, u32> = FarHashMap::new(&rt, HashMapConfig::new(1024)).unwrap();
    /// m.insert_many(&[(1, 10), (2, 20)]).unwrap();
    /// let pending = m.get_many_submit(&[2, 3, 1]);
    /// // ... other work while the request is in flight ...
    /// assert_eq!(pending.wait().unwrap(), vec![Some(20), None, Some(10)]);
    /// ```
    pub fn get_many_submit(&self, keys: &[K]) -> PendingLookup<'_, K, V> {
        let mut g = Group::default();
        self.add_batch(&mut g, keys);
        self.submit(&mut g);
        PendingLookup {
            map: self,
            group: Some(g),
        }
    }

    /// Looks up a stream of batches with several requests in flight, calling `f(i, values)` for
    /// batch `i` in order (`values[j]` is the value of `batch[j]`), as `get_many` on each batch
    /// would.
    ///
    /// Hits are answered locally; the misses of consecutive batches are fetched together, one
    /// request per [`HashMapConfig::pipeline_misses`] misses (or per eight times as many keys),
    /// and up to
    /// [`HashMapConfig::pipeline_depth`] requests are in flight while the next batches' hits
    /// are looked up, so the caller's thread never waits for a round trip it could overlap.
    ///
    /// ```
    /// use farmem::{Runtime, RuntimeConfig};
    /// use farmem::containers::{FarHashMap, HashMapConfig};
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    /// let m: FarHashMap<u32, u32> = FarHashMap::new(&rt, HashMapConfig::new(1024)).unwrap();
    /// for k in 0..500 {
    ///     m.insert(k, k * 2).unwrap();
    /// }
    /// let keys: Vec<u32> = (0..600).collect();
    /// let mut found = 0;
    /// m.get_many_pipelined(keys.chunks(64), |i, values| {
    ///     assert_eq!(values[0], (i < 8).then_some(i as u32 * 128));
    ///     found += values.iter().flatten().count();
    /// })
    /// .unwrap();
    /// assert_eq!(found, 500);
    /// ```
    ///
    /// # Errors
    /// The backend's or the agent's error; `f` has seen the batches before the failed one.
    ///
    /// `f` must not change the map: the hits of later batches are looked up, and their misses
    /// requested, before `f` sees earlier batches, so such a change may not show in them.
    ///
    /// # Panics
    /// Only if `f` panics; the panic propagates after the lookups still in flight are
    /// abandoned, so the map stays usable.
    pub fn get_many_pipelined<'k>(
        &self,
        batches: impl IntoIterator<Item = &'k [K]>,
        mut f: impl FnMut(usize, Vec<Option<V>>),
    ) -> Result<()>
    where
        K: 'k,
    {
        let mut batches = batches.into_iter().peekable();
        // Groups still in flight are abandoned however this function ends, a panic in `f`
        // included, so no shard is left with lookups counted as in flight.
        let mut inflight = InFlight {
            map: self,
            groups: VecDeque::new(),
        };
        let inflight = &mut inflight.groups;
        let mut next = 0;
        loop {
            let mut g = Group::default();
            let mut keys = 0;
            while g.missing.len() < self.pipeline_misses
                && keys < GROUP_KEYS_PER_MISS * self.pipeline_misses
                && let Some(b) = batches.next()
            {
                self.add_batch(&mut g, b);
                keys += b.len();
                // Hits-only groups are delivered as they come (nothing to overlap with).
                if g.missing.is_empty() && inflight.is_empty() {
                    break;
                }
            }
            let more = batches.peek().is_some();
            if !g.batches.is_empty() {
                self.submit(&mut g);
                inflight.push_back(g);
            }
            if inflight.len() >= self.pipeline_depth || (!more && !inflight.is_empty()) {
                let Some(done) = inflight.pop_front() else {
                    continue;
                };
                if let Err(e) = self.finish_group(done, |_, v| {
                    f(next, v);
                    next += 1;
                }) {
                    break Err(e);
                }
            } else if !more {
                break Ok(());
            }
        }
    }

    /// Looks `keys` up locally into a new batch of `g`; misses are added to `g`'s request.
    fn add_batch(&self, g: &mut Group<K, V>, keys: &[K]) {
        let mut out = vec![None; keys.len()];
        let before = g.missing.len();
        // Shard by shard: one lock each, and the sets of all its keys are loaded before any is
        // searched, so their cache misses overlap instead of queueing.
        let mut order: Vec<(usize, usize)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (self.shard_index(k), i))
            .collect();
        order.sort_unstable();
        for group in order.chunk_by(|a, b| a.0 == b.0) {
            let mut sh = self.shards[group[0].0].lock();
            if group.len() > 1 {
                std::hint::black_box(sh.load_sets(group.iter().map(|&(_, i)| &keys[i])));
            }
            for &(_, i) in group {
                let k = &keys[i];
                if let Some(v) = sh.hit(k) {
                    out[i] = Some(v);
                } else {
                    sh.inflight += 1;
                    g.missing.push(*k);
                    g.slots.push(i);
                }
            }
        }
        let missed = g.missing.len() - before;
        // Counted once per batch: the counters are shared by all threads.
        self.hits
            .fetch_add((keys.len() - missed) as u64, Ordering::Relaxed);
        self.misses.fetch_add(missed as u64, Ordering::Relaxed);
        g.batches.push((out, before..g.missing.len()));
    }

    /// Sends `g`'s request (if it has misses).
    fn submit(&self, g: &mut Group<K, V>) {
        if g.missing.is_empty() {
            return;
        }
        let args = HtKeysArgs {
            table: self.table,
            keys: g
                .missing
                .iter()
                .map(|k| bytemuck::bytes_of(k).to_vec())
                .collect(),
        };
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        g.pending = Some(
            self.rt
                .backend()
                .submit_compute(self.table, op::HT_GET, &args.encode()),
        );
    }

    /// Waits for `g`'s answer, caches what it brought and hands every batch to `f` in order.
    fn finish_group(
        &self,
        mut g: Group<K, V>,
        mut f: impl FnMut(usize, Vec<Option<V>>),
    ) -> Result<()> {
        if g.missing.is_empty() {
            for (i, (out, _)) in g.batches.into_iter().enumerate() {
                f(i, out);
            }
            return Ok(());
        }
        let pending = match g.pending.take() {
            Some(p) => p,
            None => {
                self.submit(&mut g);
                g.pending
                    .take()
                    .ok_or_else(|| ContainerError::Agent("not submitted".into()))?
            }
        };
        let got = pending
            .wait()
            .map_err(ContainerError::from)
            .and_then(|out| Ok(HtValues::decode(&out)?))
            .and_then(|got| match got.values.len() == g.missing.len() {
                true => Ok(got.values),
                false => Err(ContainerError::Agent("wrong number of values".into())),
            });
        let values = match got {
            Ok(v) => v,
            Err(e) => {
                self.abandon_group(g);
                return Err(e);
            }
        };
        // Every missed key of the group is admitted (ending its in-flight count) before `f`
        // sees any batch, so a panic in `f` leaves no shard waiting for these lookups.
        let mut first_err: Option<(usize, ContainerError)> = None;
        let mut values = values.into_iter();
        let mut slots = g.slots.iter();
        let mut outs = Vec::with_capacity(g.batches.len());
        for (b, (mut out, range)) in g.batches.into_iter().enumerate() {
            for k in &g.missing[range] {
                let v = match values.next() {
                    Some(HtValue::Value(bytes)) => match decode::<V>(&bytes) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            first_err.get_or_insert((b, e));
                            None
                        }
                    },
                    _ => None,
                };
                if let Some(&i) = slots.next() {
                    out[i] = v;
                }
                if let Err(e) = self.admit_clean(*k, v) {
                    first_err.get_or_insert((b, e));
                }
            }
            outs.push(out);
        }
        let deliver = first_err.as_ref().map_or(outs.len(), |(b, _)| *b);
        for (b, out) in outs.into_iter().take(deliver).enumerate() {
            f(b, out);
        }
        match first_err {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// Ends the in-flight lookups of a group whose answer will not be used.
    fn abandon_group(&self, g: Group<K, V>) {
        for k in &g.missing {
            // Caches nothing, so it cannot fail.
            let _ = self.admit_clean(*k, None);
        }
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

    /// Writes every dirty cached entry back (one round trip per shard with dirty entries).
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
            let entries = dirty
                .iter()
                .map(|&w| {
                    (
                        bytemuck::bytes_of(&sh.keys[w]).to_vec(),
                        bytemuck::bytes_of(&sh.values[w]).to_vec(),
                    )
                })
                .collect();
            for &w in &dirty {
                let k = sh.keys[w];
                sh.changed_remotely(k);
            }
            self.put_remote(entries)?;
            for &w in &dirty {
                sh.meta[w] &= !DIRTY;
            }
        }
        Ok(())
    }

    /// Number of entries (writes dirty entries back, then asks the server).
    ///
    /// # Errors
    /// The backend's or the agent's error.
    pub fn len(&self) -> Result<usize> {
        self.flush()?;
        let n: u64 = self.agent(op::HT_LEN, &self.table)?;
        Ok(n as usize)
    }

    /// Whether the map is empty.
    ///
    /// # Errors
    /// As [`FarHashMap::len`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Calls `f` with every entry, in unspecified order, paging through the server's table
    /// (`page` entries per round trip). Entries changed concurrently may or may not be seen.
    ///
    /// # Errors
    /// The backend's or the agent's error.
    pub fn for_each(&self, page: u32, mut f: impl FnMut(K, V)) -> Result<()> {
        self.flush()?;
        let mut after = None;
        loop {
            let r: HtScanResult = self.agent(
                op::HT_SCAN,
                &HtScanArgs {
                    table: self.table,
                    max: page.max(1),
                    after: after.take(),
                },
            )?;
            for (k, v) in &r.entries {
                f(decode(k)?, decode(v)?);
            }
            match r.entries.last() {
                Some((k, _)) if r.more => after = Some(k.clone()),
                _ => return Ok(()),
            }
        }
    }

    /// All entries as a local `Vec` (see [`FarHashMap::for_each`]).
    ///
    /// # Errors
    /// As [`FarHashMap::for_each`].
    pub fn to_vec(&self) -> Result<Vec<(K, V)>> {
        let mut v = Vec::new();
        self.for_each(4096, |k, x| v.push((k, x)))?;
        Ok(v)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RuntimeConfig;

    fn in_flight(m: &FarHashMap<u64, u64>) -> usize {
        m.shards.iter().map(|s| s.lock().inflight).sum()
    }

    #[test]
    fn shard_cache_grows_keeps_entries_and_buffers_dirty_victims() {
        let mut sh: Shard<u64, u64> = Shard::new(FastState::random(), 64, 6);
        assert!(sh.sets < 64 && sh.max_sets == 64);
        // Half full: the sets doubled up to their budget; every entry not evicted (a full set
        // evicts even before the whole cache is full) is still there.
        let n = (64 * WAYS / 2) as u64;
        let evicted = (0..n).filter(|&k| sh.put(k, k * 10, false)).count();
        assert_eq!(sh.sets, 64);
        assert_eq!(sh.cached() + evicted, n as usize);
        let kept = (0..n).filter(|k| sh.peek(k) == Some(k * 10)).count();
        assert_eq!(kept, sh.cached());
        // Many more keys: never more entries than ways; dirty victims wait in the buffer and
        // are still answered from there.
        for k in 1000..20_000u64 {
            sh.put(k, k, true);
            assert!(sh.len <= 64 * WAYS);
        }
        assert!(!sh.evicted.is_empty());
        let (k, v) = sh.evicted[0];
        assert_eq!(sh.hit(&k), Some(v));
        assert_eq!(sh.forget(&k), Some((v, true)));
        assert!(!sh.contains(&k));
        // A replacement of a buffered key supersedes the buffered value.
        let (k, _) = sh.evicted[0];
        sh.put(k, 7, true);
        assert_eq!(sh.peek(&k), Some(7));
        assert!(sh.evicted.iter().all(|(e, _)| *e != k));
    }

    #[test]
    fn shard_cache_keeps_hit_entries_through_a_cold_scan() {
        let mut sh: Shard<u64, u64> = Shard::new(FastState::random(), 32, 6);
        // Fewer hot keys than a set's protected ways on average (here on at most 32 sets).
        let hot: Vec<u64> = (0..8).map(|i| i * 1_000_003).collect();
        for &k in &hot {
            sh.put(k, k, false);
            assert_eq!(sh.hit(&k), Some(k));
            assert_eq!(sh.hit(&k), Some(k));
        }
        for k in 1..100_000u64 {
            if sh.peek(&k).is_none() {
                sh.put(k, k, false);
            }
        }
        let lost = hot.iter().filter(|k| !sh.contains(k)).count();
        assert_eq!(lost, 0, "hot entries evicted by a scan");
        assert!(
            sh.evicted.is_empty(),
            "clean victims are dropped, not buffered"
        );
    }

    #[test]
    fn a_panicking_callback_leaves_no_lookup_in_flight() {
        let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
        let m: FarHashMap<u64, u64> = FarHashMap::new(&rt, HashMapConfig::new(4 << 10)).unwrap();
        m.insert_many(&(0..4096u64).map(|k| (k, k + 1)).collect::<Vec<_>>())
            .unwrap();
        let keys: Vec<u64> = (0..4096).collect();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            m.get_many_pipelined(keys.chunks(64), |i, _| {
                assert!(i < 3, "callback fails on batch {i}");
            })
        }));
        assert!(r.is_err(), "the callback should have panicked");
        assert_eq!(in_flight(&m), 0);
        // The map still answers, and caches again.
        let mut seen = 0;
        m.get_many_pipelined(keys.chunks(64), |_, v| {
            seen += v.iter().flatten().count();
        })
        .unwrap();
        assert_eq!(seen, 4096);
        assert_eq!(in_flight(&m), 0);
    }
}
