//! One segment of a server-side hash table: a byte arena of records found through a hash index
//! of 4-byte offsets.
//!
//! Record layout: `key_len` and `value_len` as LEB128 varints (one byte each below 128), then
//! the key and the value. A 16-byte entry (8-byte key, 8-byte value) takes 18 bytes of arena
//! and one index bucket (4 bytes plus a control byte, at most 7/8 full), with no allocation of
//! its own. Replacing a value of the same length rewrites it in place; otherwise the old record
//! turns dead and the arena is compacted once half of it is dead.

use hashbrown::HashTable;

/// Appends `n` as a LEB128 varint.
fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a LEB128 varint at `*at` (records are written by this module, so always complete).
fn get_varint(d: &[u8], at: &mut usize) -> usize {
    let mut n = 0usize;
    let mut shift = 0;
    while let Some(&b) = d.get(*at) {
        *at += 1;
        n |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    n
}

/// The key and value of the record at `off`, and the end of the record.
#[inline]
fn record(d: &[u8], off: u32) -> (&[u8], &[u8], usize) {
    let mut at = off as usize;
    let kl = get_varint(d, &mut at);
    let vl = get_varint(d, &mut at);
    let k = &d[at..at + kl];
    let v = &d[at + kl..at + kl + vl];
    (k, v, at + kl + vl)
}

/// The seeded hash of a key: a multiply-rotate fold of its 8-byte words and its length, then a
/// full finalizer (the index uses both the top and the bottom bits).
pub(super) fn hash_key(seed: u64, k: &[u8]) -> u64 {
    const M: u64 = 0x51_7C_C1_B7_27_22_0A_95;
    let mut h = seed ^ (k.len() as u64).wrapping_mul(M);
    let mut words = k.chunks_exact(8);
    for w in &mut words {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(a)).wrapping_mul(M);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut a = [0u8; 8];
        a[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(a)).wrapping_mul(M);
    }
    h ^= h >> 32;
    h = h.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    h ^ (h >> 32)
}

/// A segment: the entries of one key range of a table.
#[derive(Default)]
pub(super) struct Segment {
    index: HashTable<u32>,
    data: Vec<u8>,
    /// Bytes of dead records in `data`.
    dead: usize,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("entries", &self.index.len())
            .field("bytes", &self.data.len())
            .field("dead", &self.dead)
            .finish()
    }
}

impl Segment {
    /// A segment holding `entries` (distinct keys), sized to fit them.
    pub(super) fn from_entries<'a>(
        seed: u64,
        entries: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])> + Clone,
    ) -> Self {
        let bytes: usize = entries.clone().map(|(k, v)| k.len() + v.len() + 4).sum();
        let mut s = Self {
            index: HashTable::with_capacity(entries.len()),
            data: Vec::with_capacity(bytes),
            dead: 0,
        };
        for (k, v) in entries {
            let off = s.append(k, v);
            let data = &s.data;
            s.index.insert_unique(hash_key(seed, k), off, |&o| {
                hash_key(seed, record(data, o).0)
            });
        }
        s
    }

    /// Number of entries.
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// Bytes of the arena (live and dead records).
    pub(super) fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Bytes allocated: the arena's capacity and the index's buckets (offset and control byte).
    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        self.data.capacity() + self.index.capacity().next_power_of_two() * 8 / 7 * 5
    }

    fn append(&mut self, k: &[u8], v: &[u8]) -> u32 {
        let off = self.data.len() as u32;
        let need = k.len() + v.len() + 10;
        if self.data.capacity() - self.data.len() < need {
            // Grow by a quarter: the arena is copied more often than when doubling, but holds
            // at most a quarter of slack (segments are bounded, so the copies are small).
            self.data
                .reserve_exact(need.max(self.data.len() / 4).max(256));
        }
        put_varint(&mut self.data, k.len());
        put_varint(&mut self.data, v.len());
        self.data.extend_from_slice(k);
        self.data.extend_from_slice(v);
        off
    }

    /// The value of `k` (hashed to `h`).
    #[inline]
    pub(super) fn get(&self, h: u64, k: &[u8]) -> Option<&[u8]> {
        let data = &self.data;
        self.index
            .find(h, |&o| record(data, o).0 == k)
            .map(|&o| record(data, o).1)
    }

    /// Inserts or replaces `k`; returns the old value's length if it existed, and appends the
    /// old value to `old` when given.
    pub(super) fn insert(
        &mut self,
        seed: u64,
        h: u64,
        k: &[u8],
        v: &[u8],
        old: Option<&mut Vec<u8>>,
    ) -> Option<usize> {
        let data = &self.data;
        if let Some(slot) = self.index.find(h, |&o| record(data, o).0 == k) {
            let o = *slot;
            let (_, ov, end) = record(&self.data, o);
            let old_len = ov.len();
            if let Some(out) = old {
                out.extend_from_slice(ov);
            }
            if old_len == v.len() {
                let at = end - old_len;
                self.data[at..end].copy_from_slice(v);
            } else {
                self.dead += end - o as usize;
                let new = self.append(k, v);
                let data = &self.data;
                if let Some(slot) = self.index.find_mut(h, |&o| record(data, o).0 == k) {
                    *slot = new;
                }
                self.maybe_compact(seed);
            }
            return Some(old_len);
        }
        let off = self.append(k, v);
        let data = &self.data;
        self.index
            .insert_unique(h, off, |&o| hash_key(seed, record(data, o).0));
        None
    }

    /// Removes `k`; returns its value.
    pub(super) fn remove(&mut self, seed: u64, h: u64, k: &[u8]) -> Option<Vec<u8>> {
        let data = &self.data;
        let entry = self.index.find_entry(h, |&o| record(data, o).0 == k).ok()?;
        let (o, _) = entry.remove();
        let (_, v, end) = record(&self.data, o);
        let v = v.to_vec();
        self.dead += end - o as usize;
        self.maybe_compact(seed);
        Some(v)
    }

    /// Rewrites the arena without its dead records once they are half of it.
    fn maybe_compact(&mut self, seed: u64) {
        if self.dead * 2 <= self.data.len() || self.data.len() < 4096 {
            return;
        }
        let offs: Vec<u32> = self.index.iter().copied().collect();
        let data = std::mem::take(&mut self.data);
        *self = Self::from_entries(
            seed,
            offs.iter().map(|&o| {
                let (k, v, _) = record(&data, o);
                (k, v)
            }),
        );
    }

    /// Every entry, in no order.
    pub(super) fn entries(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + Clone {
        self.index.iter().map(|&o| {
            let (k, v, _) = record(&self.data, o);
            (k, v)
        })
    }

    /// The offsets of every record, ascending by key. Sorted by the keys' first eight bytes
    /// (a big-endian number) first: most comparisons then read no record.
    pub(super) fn sorted(&self) -> Vec<u32> {
        let data = &self.data;
        let mut keyed: Vec<(u64, u32)> = self
            .index
            .iter()
            .map(|&o| {
                let k = record(data, o).0;
                let mut a = [0u8; 8];
                let n = k.len().min(8);
                a[..n].copy_from_slice(&k[..n]);
                (u64::from_be_bytes(a), o)
            })
            .collect();
        keyed.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| record(data, a.1).0.cmp(record(data, b.1).0))
        });
        keyed.into_iter().map(|(_, o)| o).collect()
    }

    /// The key and value of the record at `off` (an offset [`Segment::sorted`] gave, with the
    /// segment unchanged since).
    #[inline]
    pub(super) fn at(&self, off: u32) -> (&[u8], &[u8]) {
        let (k, v, _) = record(&self.data, off);
        (k, v)
    }

    /// The largest key, `None` when empty.
    pub(super) fn max_key(&self) -> Option<&[u8]> {
        self.entries().map(|(k, _)| k).max()
    }

    /// Splits off the upper half of the keys: returns the smallest key of that half and a
    /// segment holding it; `self` keeps the lower half. `None` with fewer than two entries.
    pub(super) fn split(&mut self, seed: u64) -> Option<(Vec<u8>, Segment)> {
        if self.len() < 2 {
            return None;
        }
        let offs = self.sorted();
        let data = std::mem::take(&mut self.data);
        let (lo, hi) = offs.split_at(offs.len() / 2);
        let kv = |&o: &u32| {
            let (k, v, _) = record(&data, o);
            (k, v)
        };
        let bound = record(&data, hi[0]).0.to_vec();
        let upper = Self::from_entries(seed, hi.iter().map(kv));
        *self = Self::from_entries(seed, lo.iter().map(kv));
        Some((bound, upper))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for n in [0usize, 1, 127, 128, 300, 1 << 20, usize::MAX >> 1] {
            let mut b = Vec::new();
            put_varint(&mut b, n);
            let mut at = 0;
            assert_eq!(get_varint(&b, &mut at), n);
            assert_eq!(at, b.len());
        }
    }

    #[test]
    fn a_segment_inserts_replaces_removes_compacts_and_splits() {
        let seed = 7;
        let mut s = Segment::default();
        let h = |k: &[u8]| hash_key(seed, k);
        for i in 0..1000u64 {
            let k = i.to_le_bytes();
            assert_eq!(s.insert(seed, h(&k), &k, &[1; 8], None), None);
        }
        assert_eq!(s.len(), 1000);
        // 16-byte entries: 18 bytes of arena each (and at most a quarter of slack).
        assert_eq!(s.bytes(), 18_000);
        // Same length: in place; another length: appended, old record dead.
        let k = 5u64.to_le_bytes();
        let mut old = Vec::new();
        assert_eq!(s.insert(seed, h(&k), &k, &[2; 8], Some(&mut old)), Some(8));
        assert_eq!(old, [1; 8]);
        assert_eq!(s.bytes(), 18_000);
        assert_eq!(s.insert(seed, h(&k), &k, &[3; 30], None), Some(8));
        assert_eq!(s.get(h(&k), &k), Some(&[3u8; 30][..]));
        assert_eq!(s.dead, 18);
        // Removing most entries compacts the arena.
        for i in 0..900u64 {
            let k = i.to_le_bytes();
            assert!(s.remove(seed, h(&k), &k).is_some());
            assert!(s.remove(seed, h(&k), &k).is_none());
        }
        assert_eq!(s.len(), 100);
        assert!(s.bytes() < 9000 && s.dead * 2 <= s.bytes(), "{s:?}");
        for i in 900..1000u64 {
            let k = i.to_le_bytes();
            assert_eq!(s.get(h(&k), &k), Some(&[1u8; 8][..]));
        }
        // A split halves the keys by byte order.
        let (bound, upper) = s.split(seed).unwrap();
        assert_eq!((s.len(), upper.len()), (50, 50));
        assert!(s.entries().all(|(k, _)| k < &bound[..]));
        assert!(upper.entries().all(|(k, _)| k >= &bound[..]));
    }
}
