//! Each shard's local cache: a set-associative array of hot entries.

use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;

use bytemuck::Pod;

use super::hint::SetHint;
use super::outbox::Outbox;

/// A fast multiplicative hasher, seeded per map (shard selection and the shard-local maps): an
/// adversary cannot aim many keys at one shard or one bucket chain without knowing the seed.
pub(super) struct FastHasher(u64);

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
pub(super) struct FastState(u64);

impl FastState {
    pub(super) fn random() -> Self {
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
pub(super) const WAYS: usize = 8;
/// Metadata bits of a cache way: in use, changed since fetched, and a 2-bit hit frequency.
pub(super) const VALID: u8 = 0x80;
pub(super) const DIRTY: u8 = 0x40;
pub(super) const FREQ: u8 = 0x03;

/// First way of the set of a key hashing to `h` in a cache of `sets` sets.
#[inline(always)]
pub(super) fn set_base(h: u64, sets: usize) -> usize {
    ((u64::from(h as u32) * sets as u64) >> 32) as usize * WAYS
}

/// One shard's cache: a set-associative array of keys, values and one metadata byte per way,
/// so an entry costs `size_of::<K>() + size_of::<V>() + 1` bytes and no pointers or
/// allocations. A key can live only in its set's [`WAYS`] ways, kept in the order they were
/// cached (newest first). New entries start at frequency 0, every hit adds one (up to 3), and
/// the victim is always the oldest of a set's frequency-0 ways; when a set has none of those,
/// or more of its ways were hit than its protected share, all its ways age by one. So entries
/// never hit are evicted first, oldest first, and a scan of cold keys never pushes hot keys
/// out. The arrays grow by doubling up to their budget.
///
/// Dirty victims wait in the [`Outbox`] (answered from there) until they are written back and
/// acknowledged.
pub(super) struct Shard<K, V> {
    pub(super) hasher: FastState,
    pub(super) keys: Vec<K>,
    pub(super) values: Vec<V>,
    pub(super) meta: Vec<u8>,
    /// Sets now; grows by doubling up to `max_sets`.
    pub(super) sets: usize,
    pub(super) max_sets: usize,
    /// Ways in use.
    pub(super) len: usize,
    /// Ways of a set that may have been hit before new entries force aging.
    pub(super) protected_ways: usize,
    /// Dirty entries evicted from the ways, not yet acknowledged by the server.
    pub(super) out: Outbox<K, V>,
    /// Lookups of this shard's keys on their way to the server.
    pub(super) inflight: usize,
    /// Keys whose server copy changed while lookups were in flight: such a lookup's answer may
    /// be stale and is returned but not cached. Cleared when no lookup is in flight.
    pub(super) changed: std::collections::HashSet<K>,
    /// Lookups answered here, lookups that missed, entries evicted (counted under the lock, so
    /// the hit path touches no shared counter).
    pub(super) hits: u64,
    pub(super) misses: u64,
    pub(super) evictions: u64,
    /// Where the arrays are, for lock-free prefetching (republished whenever they move).
    pub(super) hint: Arc<SetHint>,
}

impl<K: Pod + Hash + Eq, V: Pod> Shard<K, V> {
    pub(super) fn new(hasher: FastState, max_sets: usize, protected_ways: usize) -> Self {
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
            out: Outbox::new(hasher),
            inflight: 0,
            changed: std::collections::HashSet::new(),
            hits: 0,
            misses: 0,
            evictions: 0,
            hint: Arc::default(),
        };
        sh.resize(sets);
        sh
    }

    pub(super) fn resize(&mut self, sets: usize) {
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
        self.hint.publish(
            self.meta.as_ptr(),
            self.keys.as_ptr() as usize,
            self.values.as_ptr() as usize,
            self.sets,
        );
    }

    /// First way of `k`'s set.
    pub(super) fn base(&self, k: &K) -> usize {
        self.base_of(self.hasher.hash_one(k))
    }

    /// First way of the set of a key hashing to `h` (the map's hash of the key).
    #[inline]
    pub(super) fn base_of(&self, h: u64) -> usize {
        set_base(h, self.sets)
    }

    /// The way holding `k`.
    #[inline]
    pub(super) fn find(&self, k: &K) -> Option<usize> {
        self.find_at(k, self.base(k))
    }

    /// The way holding `k`, whose set starts at `base`.
    #[inline]
    fn find_at(&self, k: &K, base: usize) -> Option<usize> {
        let keys = &self.keys[base..base + WAYS];
        let meta = &self.meta[base..base + WAYS];
        (0..WAYS)
            .find(|&w| keys[w] == *k && meta[w] & VALID != 0)
            .map(|w| base + w)
    }

    /// `k`'s value, if cached (in a way or waiting for write-back); records nothing.
    pub(super) fn peek(&self, k: &K) -> Option<V> {
        self.peek_at(k, self.hasher.hash_one(k))
    }

    /// [`Shard::peek`] of a key hashing to `h`.
    pub(super) fn peek_at(&self, k: &K, h: u64) -> Option<V> {
        match self.find_at(k, self.base_of(h)) {
            Some(w) => Some(self.values[w]),
            None => self.out.get(k),
        }
    }

    pub(super) fn contains(&self, k: &K) -> bool {
        self.peek(k).is_some()
    }

    /// Looks `k` (hashing to `h`) up and records the hit.
    #[inline]
    pub(super) fn hit(&mut self, k: &K, h: u64) -> Option<V> {
        match self.find_at(k, self.base_of(h)) {
            Some(w) => {
                let m = &mut self.meta[w];
                if *m & FREQ != FREQ {
                    *m += 1;
                }
                Some(self.values[w])
            }
            None => self.out.get(k),
        }
    }

    /// Inserts or replaces `k` (a replacement counts as a hit; `dirty` marks it changed).
    /// Returns whether an entry was evicted to make room.
    pub(super) fn put(&mut self, k: K, v: V, dirty: bool) -> bool {
        self.put_at(k, self.hasher.hash_one(k), v, dirty)
    }

    /// [`Shard::put`] of a key hashing to `h`.
    pub(super) fn put_at(&mut self, k: K, h: u64, v: V, dirty: bool) -> bool {
        self.out.supersede(&k);
        let dirty_bit = if dirty { DIRTY } else { 0 };
        if let Some(w) = self.find_at(&k, self.base_of(h)) {
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
        let base = self.base_of(h);
        let (w, evicted) = match (base..base + WAYS).find(|&w| self.meta[w] & VALID == 0) {
            Some(w) => {
                self.len += 1;
                (w, false)
            }
            None => {
                let w = self.victim(base);
                if self.meta[w] & DIRTY != 0 {
                    self.out.push(self.keys[w], self.values[w]);
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
    pub(super) fn victim(&mut self, base: usize) -> usize {
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

    /// Removes `k` from the ways; returns its value and whether it was dirty. (Its outbox
    /// entry, if any, is the caller's to handle.)
    pub(super) fn forget(&mut self, k: &K) -> Option<(V, bool)> {
        let w = self.find(k)?;
        let dirty = self.meta[w] & DIRTY != 0;
        self.meta[w] = 0;
        self.len -= 1;
        Some((self.values[w], dirty))
    }

    /// Notes that the server copy of `k` is changing.
    pub(super) fn changed_remotely(&mut self, k: K) {
        if self.inflight > 0 {
            self.changed.insert(k);
        }
    }

    /// Entries cached here (ways and outbox).
    pub(super) fn cached(&self) -> usize {
        self.len + self.out.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn shard_cache_grows_keeps_entries_and_buffers_dirty_victims() {
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
        assert!(sh.out.len() > 0);
        let (&k, o) = sh.out.entries.iter().next().unwrap();
        let v = o.value;
        assert_eq!(sh.hit(&k, sh.hasher.hash_one(k)), Some(v));
        assert_eq!(sh.forget(&k), None, "not in the ways");
        // A replacement of a buffered key supersedes the buffered value.
        sh.put(k, 7, true);
        assert_eq!(sh.peek(&k), Some(7));
        assert!(sh.out.get(&k).is_none());
    }

    #[test]
    pub(super) fn shard_cache_keeps_hit_entries_through_a_cold_scan() {
        let mut sh: Shard<u64, u64> = Shard::new(FastState::random(), 32, 6);
        // Fewer hot keys than a set's protected ways on average (here on at most 32 sets).
        let hot: Vec<u64> = (0..8).map(|i| i * 1_000_003).collect();
        for &k in &hot {
            sh.put(k, k, false);
            let h = sh.hasher.hash_one(k);
            assert_eq!(sh.hit(&k, h), Some(k));
            assert_eq!(sh.hit(&k, h), Some(k));
        }
        for k in 1..100_000u64 {
            if sh.peek(&k).is_none() {
                sh.put(k, k, false);
            }
        }
        let lost = hot.iter().filter(|k| !sh.contains(k)).count();
        assert_eq!(lost, 0, "hot entries evicted by a scan");
        assert_eq!(sh.out.len(), 0, "clean victims are dropped, not buffered");
    }
}
