//! The location table: which members hold each object.
//!
//! One compact [`Entry`] (8 bytes) per object in a sharded hash map keyed by object id, so a pool
//! of a million objects spends about 20-30 bytes per object on it (see
//! [`LocationTable::approx_bytes`]). Members are named by their index in the pool (a `u8`).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use parking_lot::{Mutex, MutexGuard};

use super::scheme::MAX_REPLICAS;
use crate::backend::ObjectId;

/// Index of a member in the pool's member list.
pub(crate) type Ix = u8;

const KIND_TABLE: u8 = 0x80;
const MOVING: u8 = 0x40;
const FREED: u8 = 0x20;
const FENCED: u8 = 0x10;
const LEN_MASK: u8 = 0x07;

/// Where one object lives, plus the state the migration protocol needs.
///
/// `ver` changes when a write starts and when it ends; `busy` counts writes in flight. A mover
/// snapshots an idle entry, copies, and switches the entry only if it is still idle at the same
/// version (no write started or ended meanwhile), so a racing write is never lost. While a mover
/// works on an entry it is marked *moving*: no other mover touches it, writers do not put
/// substitutes into it, and a free leaves it marked *freed* for the mover to remove, so the
/// mover can always drop a copy it made that did not get into the entry.
///
/// An entry written without pause would never be idle at the same version from the mover's copy
/// to its commit. After a few such failures the mover also *fences* the entry: new writes wait
/// until the move ends, the mover waits (a bounded time) for the writes in flight to end, and
/// its copy then commits. Writers pay at most one copy's time, once per move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    members: [Ix; MAX_REPLICAS as usize],
    /// Low bits: number of members; flags: server-side hash table, moving, freed.
    len: u8,
    pub(crate) busy: u8,
    pub(crate) ver: u16,
}

impl Entry {
    /// An entry on `members` (at most [`MAX_REPLICAS`] are kept).
    pub(crate) fn new(members: &[Ix], table: bool) -> Self {
        let mut e = Self {
            members: [0; MAX_REPLICAS as usize],
            len: if table { KIND_TABLE } else { 0 },
            busy: 0,
            ver: 0,
        };
        for &m in members {
            e.push(m);
        }
        e
    }

    pub(crate) fn members(&self) -> &[Ix] {
        &self.members[..usize::from(self.len & LEN_MASK)]
    }

    /// Whether the id names a server-side hash table rather than a byte object.
    pub(crate) fn is_table(&self) -> bool {
        self.len & KIND_TABLE != 0
    }

    /// Whether a mover works on the entry.
    pub(crate) fn is_moving(&self) -> bool {
        self.len & MOVING != 0
    }

    /// Marks the entry as claimed by a mover, or ends the claim (and any fence with it).
    pub(crate) fn set_moving(&mut self, on: bool) {
        if on {
            self.len |= MOVING;
        } else {
            self.len &= !(MOVING | FENCED);
        }
    }

    /// Whether new writes must wait for the mover (see [`Entry`]).
    pub(crate) fn is_fenced(&self) -> bool {
        self.len & FENCED != 0
    }

    /// Fences a claimed entry: new writes wait until the claim ends.
    pub(crate) fn set_fenced(&mut self) {
        self.len |= FENCED;
    }

    /// Whether the object was freed while a mover worked on it (it no longer exists).
    pub(crate) fn is_freed(&self) -> bool {
        self.len & FREED != 0
    }

    pub(crate) fn set_freed(&mut self) {
        self.len |= FREED;
    }

    pub(crate) fn contains(&self, m: Ix) -> bool {
        self.members().contains(&m)
    }

    /// Adds `m` (ignored when present or full).
    pub(crate) fn push(&mut self, m: Ix) {
        let n = usize::from(self.len & LEN_MASK);
        if n < self.members.len() && !self.contains(m) {
            self.members[n] = m;
            self.len += 1;
        }
    }

    /// Removes `m` if present.
    pub(crate) fn remove(&mut self, m: Ix) {
        let n = usize::from(self.len & LEN_MASK);
        if let Some(p) = self.members[..n].iter().position(|&x| x == m) {
            self.members.copy_within(p + 1..n, p);
            self.len -= 1;
        }
    }

    /// Replaces `old` by `new` (appends `new` when `old` is absent).
    pub(crate) fn replace(&mut self, old: Ix, new: Ix) {
        if self.contains(new) {
            self.remove(old);
            return;
        }
        match self.members().iter().position(|&x| x == old) {
            Some(p) => self.members[p] = new,
            None => self.push(new),
        }
    }

    /// Marks a write as started.
    pub(crate) fn begin(&mut self) {
        self.busy = self.busy.saturating_add(1);
        self.ver = self.ver.wrapping_add(1);
    }

    /// Marks a write as ended.
    pub(crate) fn end(&mut self) {
        self.busy = self.busy.saturating_sub(1);
        self.ver = self.ver.wrapping_add(1);
    }
}

/// A cheap hasher for object ids (a 64-bit mix; ids are often sequential).
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix(self.0 ^ u64::from(b));
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = mix(i);
    }
}

/// A 64-bit finalizer (good low and high bits from sequential input).
pub(crate) fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

pub(crate) type Shard = HashMap<ObjectId, Entry, BuildHasherDefault<IdHasher>>;

const SHARD_BITS: u32 = 8;

/// Object id -> [`Entry`], in 256 independently locked shards.
pub(crate) struct LocationTable {
    shards: Box<[Mutex<Shard>]>,
}

impl std::fmt::Debug for LocationTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocationTable")
            .field("objects", &self.len())
            .finish()
    }
}

impl LocationTable {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..1 << SHARD_BITS)
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
        }
    }

    /// Locks the shard of `id` (keep it short: never across a network call).
    pub(crate) fn shard(&self, id: ObjectId) -> MutexGuard<'_, Shard> {
        // Bits 24..32 of the mix pick the shard: the map uses the low bits for its bucket and the
        // top seven for its control bytes.
        let s = (mix(id).rotate_left(32) >> (64 - SHARD_BITS)) as usize;
        self.shards[s].lock()
    }

    /// The entry of a live object (`None` for unknown or freed ids).
    pub(crate) fn get(&self, id: ObjectId) -> Option<Entry> {
        self.shard(id).get(&id).copied().filter(|e| !e.is_freed())
    }

    /// Whether `id` has an entry, freed or not.
    pub(crate) fn has_entry(&self, id: ObjectId) -> bool {
        self.shard(id).contains_key(&id)
    }

    /// Number of objects.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Ids whose entry satisfies `pred`, shard by shard (each shard locked briefly).
    pub(crate) fn select(&self, mut pred: impl FnMut(&Entry) -> bool) -> Vec<ObjectId> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            out.extend(
                s.lock()
                    .iter()
                    .filter(|(_, e)| !e.is_freed() && pred(e))
                    .map(|(&id, _)| id),
            );
        }
        out
    }

    /// Heap bytes held by the table: buckets (key, entry and one control byte each) of every
    /// shard plus the shard array.
    pub(crate) fn approx_bytes(&self) -> usize {
        let slot = size_of::<(ObjectId, Entry)>() + 1;
        self.shards
            .iter()
            .map(|s| {
                let cap = s.lock().capacity();
                // hashbrown keeps capacity at 7/8 of its power-of-two bucket count.
                let buckets = if cap == 0 {
                    0
                } else {
                    (cap * 8 / 7).next_power_of_two()
                };
                buckets * slot + size_of::<Mutex<Shard>>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_edits() {
        let mut e = Entry::new(&[3, 1], false);
        assert_eq!(e.members(), &[3, 1]);
        assert!(!e.is_table());
        e.replace(3, 7);
        assert_eq!(e.members(), &[7, 1]);
        e.replace(9, 2);
        assert_eq!(e.members(), &[7, 1, 2]);
        e.replace(7, 1);
        assert_eq!(e.members(), &[1, 2]);
        e.remove(1);
        assert_eq!(e.members(), &[2]);
        e.push(2);
        assert_eq!(e.members(), &[2]);
        e.set_moving(true);
        e.push(5);
        assert_eq!(e.members(), &[2, 5]);
        assert!(e.is_moving() && !e.is_freed());
        e.set_freed();
        e.set_moving(false);
        assert!(!e.is_moving() && e.is_freed());
        assert_eq!(e.members(), &[2, 5]);
        let t = Entry::new(&[0, 1, 2, 3, 4], true);
        assert_eq!(t.members(), &[0, 1, 2, 3]);
        assert!(t.is_table());
        assert_eq!(size_of::<Entry>(), 8);
    }

    #[test]
    fn table_counts_and_selects() {
        let t = LocationTable::new();
        for id in 0..1000u64 {
            t.shard(id).insert(id, Entry::new(&[(id % 3) as u8], false));
        }
        assert_eq!(t.len(), 1000);
        assert_eq!(t.select(|e| e.contains(0)).len(), 334);
        let per_object = t.approx_bytes() as f64 / 1000.0;
        assert!(per_object > 16.0, "{per_object}");
    }
}
