//! Compact object storage for one shard: objects live in per-size-class slabs, found through a
//! table of 4-byte handles, so an object costs its payload plus a 12-byte header, rounding to
//! 8 bytes and ~6-9 bytes of index (~20-30 bytes in all), instead of a map entry plus a heap
//! allocation each (~50 bytes).
//!
//! Slot layout: `id: u64`, `len: u32`, payload, padding to a multiple of 8. Slots of size up to
//! [`SLAB_MAX`] live in slab pages of their class (sizes 16, 24, ..., 1024); larger objects
//! (class [`LARGE`]) go to the namespace's [`Heap`], shared by its shards, up to
//! [`HEAP_MAX`] bytes, and get an allocation each above. A handle is `class << 23 | slot`. The
//! index is keyed by [`mix`]`(id)`: callers pass that hash.
//!
//! Freed memory does not stay with its size class: a class's empty tail pages are dropped, a
//! class that has become mostly holes is compacted as objects are freed (see [`Class`]), an
//! empty class is dropped whole, and the index shrinks when most of its entries are gone. So a
//! client that frees objects of one size and stores objects of another does not make the
//! server hold both.

use std::sync::Arc;

use hashbrown::HashTable;
use parking_lot::RwLock;

use crate::heap::{HEAP_MAX, Heap, entry_size};
use crate::namespace::mix;

/// Bytes of slot header (id and length).
pub(crate) const HEADER: usize = 12;
/// Largest slot kept in a slab.
///
/// Slots over 1 KiB go to the heap: a class of them starts with a page of one slot (see
/// [`FIRST_PAGE_BYTES`]), so while sizes are spread (a class per size and shard, a few objects
/// each) every such object is an allocation of its own, and under churn the freed ones leave
/// holes in the allocator's heap that stay resident; the heap's segments compact instead.
const SLAB_MAX: usize = 1024;
/// Class of objects over [`SLAB_MAX`]: in the heap, or in an allocation of their own.
const LARGE: u32 = 511;
const SLOT_BITS: u32 = 23;
/// Slots per class per shard.
const MAX_SLOTS: u32 = 1 << SLOT_BITS;
/// Slots in a class's first page (fewer for slots over [`FIRST_PAGE_BYTES`] / 8 bytes, down to
/// one); pages double up to about [`PAGE_BYTES`].
const FIRST_PAGE: usize = 8;
/// Most bytes of a class's first page: a server holds a class per size and shard, most of them
/// with a few objects each when sizes are spread, so the first page bounds the fixed cost (2 KiB:
/// a class of slots over 1 KiB starts with one slot, not two of which one stays empty).
const FIRST_PAGE_BYTES: usize = 2 << 10;
const PAGE_BYTES: usize = 64 << 10;

fn slot_size(len: usize) -> usize {
    (HEADER + len).div_ceil(8) * 8
}

fn class_of(len: usize) -> u32 {
    let s = slot_size(len);
    if s > SLAB_MAX {
        LARGE
    } else {
        (s / 8 - 2) as u32
    }
}

/// One size class: slots of `slot` bytes in geometrically growing pages.
///
/// Slots are handed out lowest number first, so live objects gather at the low end; the pages
/// past the highest live slot are given back (a class grown to full-size pages keeps one spare
/// page against put/free churn at the boundary), and a class that has become mostly empty is compacted a few objects at a time
/// by [`Slabs`], which moves its highest objects into its lowest holes. Freed memory therefore
/// returns to the allocator, where any other class (or a large object) can reuse it.
struct Class {
    slot: usize,
    /// log2 of the slots in the first page.
    first_shift: u32,
    /// log2 of the slots in the largest page, relative to the first.
    max_shift: u32,
    pages: Vec<Box<[u8]>>,
    /// Slot numbers in use are below `used`; the slot `used - 1` is live (or `used == 0`).
    used: u32,
    /// One bit per slot number below `used`: set when the slot holds an object.
    live: Vec<u64>,
    live_count: u32,
    /// No word of `live` below this one has a clear bit (below `used`).
    hint: usize,
}

impl Class {
    fn new(class: u32) -> Self {
        let slot = (class as usize + 2) * 8;
        let mut first_shift = FIRST_PAGE.ilog2();
        while first_shift > 0 && (1 << first_shift) * slot > FIRST_PAGE_BYTES {
            first_shift -= 1;
        }
        let mut max_shift = 0;
        while (1 << (first_shift + max_shift + 1)) * slot <= PAGE_BYTES {
            max_shift += 1;
        }
        Self {
            slot,
            first_shift,
            max_shift,
            pages: Vec::new(),
            used: 0,
            live: Vec::new(),
            live_count: 0,
            hint: 0,
        }
    }

    /// (page, slot within page) of slot number `s`.
    fn locate(&self, s: u32) -> (usize, usize) {
        let s = s as usize;
        let first = 1 << self.first_shift;
        let growing = first * ((1 << (self.max_shift + 1)) - 1);
        if s < growing {
            let k = ((s >> self.first_shift) + 1).ilog2() as usize;
            (k, s - first * ((1 << k) - 1))
        } else {
            let big = first << self.max_shift;
            let r = s - growing;
            (self.max_shift as usize + 1 + r / big, r % big)
        }
    }

    fn page_slots(&self, k: usize) -> usize {
        (1 << self.first_shift) << k.min(self.max_shift as usize)
    }

    fn is_live(&self, s: u32) -> bool {
        self.live[s as usize / 64] & (1 << (s % 64)) != 0
    }

    /// The lowest free slot number below `used`, if any.
    fn lowest_free(&mut self) -> Option<u32> {
        let words = (self.used as usize).div_ceil(64);
        while self.hint < words {
            let w = self.live[self.hint];
            if w != u64::MAX {
                let s = (self.hint * 64) as u32 + (!w).trailing_zeros();
                return (s < self.used).then_some(s);
            }
            self.hint += 1;
        }
        None
    }

    fn alloc(&mut self) -> Option<u32> {
        let s = match self.lowest_free() {
            Some(s) => s,
            None if self.used >= MAX_SLOTS => return None,
            None => {
                let s = self.used;
                self.used += 1;
                if self.live.len() < (self.used as usize).div_ceil(64) {
                    self.live.push(0);
                }
                let (page, _) = self.locate(s);
                if page == self.pages.len() {
                    let n = self.page_slots(page) * self.slot;
                    self.pages.push(vec![0u8; n].into_boxed_slice());
                }
                s
            }
        };
        self.live[s as usize / 64] |= 1 << (s % 64);
        self.live_count += 1;
        Some(s)
    }

    fn free(&mut self, s: u32) {
        self.live[s as usize / 64] &= !(1 << (s % 64));
        self.live_count -= 1;
        self.hint = self.hint.min(s as usize / 64);
        while self.used > 0 && !self.is_live(self.used - 1) {
            self.used -= 1;
        }
        self.live.truncate((self.used as usize).div_ceil(64));
        // Keep the page of the highest live slot, and one spare page past it once the class
        // has grown to full-size pages: a server holds a class per size and shard, most with a
        // few objects when sizes are spread, where a spare page would cost more than the
        // objects (and a small page is cheap to allocate again).
        let keep = match self.used {
            0 => 0,
            u => {
                let top = self.locate(u - 1).0;
                top + 1 + usize::from(top >= self.max_shift as usize)
            }
        };
        if self.pages.len() > keep {
            self.pages.truncate(keep);
        }
    }

    /// Whether most of the slots in use are holes worth compacting away.
    fn sparse(&self) -> bool {
        let big = 1 << (self.first_shift + self.max_shift);
        self.used as usize > 2 * big && (self.live_count as usize) * 2 < self.used as usize
    }

    /// Bytes of slab pages held.
    #[cfg(test)]
    fn page_bytes(&self) -> usize {
        self.pages.iter().map(|p| p.len()).sum()
    }

    fn bytes(&self, s: u32) -> &[u8] {
        let (p, o) = self.locate(s);
        &self.pages[p][o * self.slot..(o + 1) * self.slot]
    }

    fn bytes_mut(&mut self, s: u32) -> &mut [u8] {
        let (p, o) = self.locate(s);
        let slot = self.slot;
        &mut self.pages[p][o * slot..(o + 1) * slot]
    }
}

/// Objects moved per release while a class is being compacted: enough to outpace the frees
/// that made it sparse, few enough that one request never holds the shard lock for long.
const COMPACT_STEP: usize = 32;

/// An object of class [`LARGE`].
enum Big {
    /// In an allocation of its own: a slot (header and payload).
    Own(Box<[u8]>),
    /// In the heap, under reference `r`.
    Heap { id: u64, r: u32 },
}

/// Whether an object of `len` bytes goes to the heap.
fn in_heap(len: usize) -> bool {
    class_of(len) == LARGE && entry_size(len) <= HEAP_MAX
}

/// The objects of one shard.
#[derive(Default)]
pub(crate) struct Slabs {
    index: HashTable<u32>,
    classes: Vec<Option<Box<Class>>>,
    large: Vec<Option<Big>>,
    large_free: Vec<u32>,
    /// Shared by the shards of a namespace (locked after the shard).
    heap: Arc<RwLock<Heap>>,
}

fn id_of(slot: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&slot[..8]);
    u64::from_le_bytes(b)
}

fn len_of(slot: &[u8]) -> usize {
    let mut b = [0u8; 4];
    b.copy_from_slice(&slot[8..12]);
    u32::from_le_bytes(b) as usize
}

/// Payload of a slot.
fn payload(slot: &[u8]) -> &[u8] {
    &slot[HEADER..HEADER + len_of(slot)]
}

impl Slabs {
    /// An empty shard storing its larger objects in `heap`.
    pub(crate) fn new(heap: Arc<RwLock<Heap>>) -> Self {
        Self {
            heap,
            ..Self::default()
        }
    }

    fn view(&self) -> View<'_> {
        View {
            classes: &self.classes,
            large: &self.large,
        }
    }

    fn find(&self, hash: u64, id: u64) -> Option<u32> {
        let view = self.view();
        self.index.find(hash, |&h| view.id(h) == Some(id)).copied()
    }

    /// Calls `f` with the payload of object `id`.
    pub(crate) fn get_with<R>(&self, hash: u64, id: u64, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let h = self.find(hash, id)?;
        match self.view().at(h) {
            At::Slot(slot) => Some(f(payload(slot))),
            At::Heap(r) => Some(f(self.heap.read().get(r))),
        }
    }

    /// Length of object `id`.
    pub(crate) fn len_of(&self, hash: u64, id: u64) -> Option<usize> {
        self.get_with(hash, id, <[u8]>::len)
    }

    /// Calls `f` with the payload of object `id`, mutably.
    pub(crate) fn with_mut<R>(
        &mut self,
        hash: u64,
        id: u64,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Option<R> {
        let h = self.find(hash, id)?;
        if let At::Heap(r) = self.view().at(h) {
            return Some(f(self.heap.write().get_mut(r)));
        }
        let slot = self.slot_mut(h);
        let len = len_of(slot);
        Some(f(&mut slot[HEADER..HEADER + len]))
    }

    /// The slot of handle `h` (empty for an object in the heap).
    fn slot_mut(&mut self, h: u32) -> &mut [u8] {
        let (c, s) = (h >> SLOT_BITS, h & (MAX_SLOTS - 1));
        if c == LARGE {
            match &mut self.large[s as usize] {
                Some(Big::Own(b)) => b,
                _ => &mut [],
            }
        } else {
            match &mut self.classes[c as usize] {
                Some(class) => class.bytes_mut(s),
                None => &mut [],
            }
        }
    }

    /// Number of objects.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Payload of object `id`, copied.
    #[cfg(test)]
    pub(crate) fn get(&self, hash: u64, id: u64) -> Option<Vec<u8>> {
        self.get_with(hash, id, <[u8]>::to_vec)
    }

    /// A free slot number for a large object (its entry still `None`).
    fn large_slot(&mut self) -> Option<u32> {
        match self.large_free.pop() {
            Some(s) => Some(s),
            None if self.large.len() < MAX_SLOTS as usize => {
                self.large.push(None);
                Some((self.large.len() - 1) as u32)
            }
            None => None,
        }
    }

    fn alloc(&mut self, len: usize) -> Option<u32> {
        let c = class_of(len);
        debug_assert_ne!(c, LARGE);
        if self.classes.len() <= c as usize {
            self.classes.resize_with(c as usize + 1, || None);
        }
        let class = self.classes[c as usize].get_or_insert_with(|| Box::new(Class::new(c)));
        class.alloc().map(|s| (c << SLOT_BITS) | s)
    }

    fn release(&mut self, h: u32) {
        let (c, s) = (h >> SLOT_BITS, h & (MAX_SLOTS - 1));
        if c == LARGE {
            if let Some(Big::Heap { r, .. }) = self.large[s as usize].take() {
                self.heap.write().remove(r);
            }
            self.large_free.push(s);
            return;
        }
        let Some(class) = &mut self.classes[c as usize] else {
            return;
        };
        class.free(s);
        if class.live_count == 0 {
            self.classes[c as usize] = None;
        } else if class.sparse() {
            self.compact(c, COMPACT_STEP);
        }
    }

    /// Moves up to `budget` objects of class `c` from its highest slots into its lowest holes,
    /// repointing their index entries, so the pages past them can be given back.
    fn compact(&mut self, c: u32, budget: usize) {
        let Self { index, classes, .. } = self;
        let Some(class) = classes[c as usize].as_deref_mut() else {
            return;
        };
        let mut buf = [0u8; SLAB_MAX];
        for _ in 0..budget {
            let Some(hole) = class.lowest_free() else {
                break;
            };
            let top = class.used - 1;
            if hole >= top {
                break;
            }
            let n = class.slot;
            buf[..n].copy_from_slice(class.bytes(top));
            class.bytes_mut(hole).copy_from_slice(&buf[..n]);
            let (from, to) = ((c << SLOT_BITS) | top, (c << SLOT_BITS) | hole);
            let id = id_of(&buf[..n]);
            if let Some(e) = index.find_mut(mix(id), |&x| x == from) {
                *e = to;
            }
            class.live[hole as usize / 64] |= 1 << (hole % 64);
            class.live_count += 1;
            class.free(top);
        }
    }

    /// Bytes of memory held for objects: slab pages, large objects and the index (not the
    /// heap, which the namespace's shards share).
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        let slabs: usize = self.classes.iter().flatten().map(|c| c.page_bytes()).sum();
        let large: usize = self
            .large
            .iter()
            .flatten()
            .map(|b| match b {
                Big::Own(b) => b.len(),
                Big::Heap { .. } => std::mem::size_of::<Big>(),
            })
            .sum();
        slabs + large + self.index.capacity() * 5
    }

    /// Stores `data` as object `id`, replacing any previous one. Returns the previous length,
    /// or `Err(())` when the shard has no slot left for this size.
    #[allow(clippy::result_unit_err)]
    pub(crate) fn put(&mut self, hash: u64, id: u64, data: &[u8]) -> Result<Option<usize>, ()> {
        if let Some(h) = self.find(hash, id) {
            let old = match self.view().at(h) {
                At::Heap(r) => {
                    let mut heap = self.heap.write();
                    let old = heap.get(r).len();
                    if in_heap(data.len()) && heap.overwrite(r, data) {
                        return Ok(Some(old));
                    }
                    old
                }
                At::Slot(_) => {
                    let slot = self.slot_mut(h);
                    let old = len_of(slot);
                    if slot_size(old) == slot_size(data.len()) && class_of(old) != LARGE
                        || (class_of(old) == LARGE && old == data.len())
                    {
                        slot[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
                        slot[HEADER..HEADER + data.len()].copy_from_slice(data);
                        return Ok(Some(old));
                    }
                    old
                }
            };
            let new = self.alloc_filled(id, data).ok_or(())?;
            // Repoint the index before releasing: the release may compact, moving another
            // object into the freed slot.
            if let Some(e) = self.index.find_mut(hash, |&x| x == h) {
                *e = new;
            }
            self.release(h);
            return Ok(Some(old));
        }
        let new = self.alloc_filled(id, data).ok_or(())?;
        let (index, view) = self.index_and_view();
        index.insert_unique(hash, new, |&h| mix(view.id(h).unwrap_or(0)));
        Ok(None)
    }

    /// The index, mutably, beside read access to the slots (to rehash entries).
    fn index_and_view(&mut self) -> (&mut HashTable<u32>, View<'_>) {
        let Self {
            index,
            classes,
            large,
            ..
        } = self;
        (index, View { classes, large })
    }

    /// A slot holding object `id` with payload `data`. A large object's allocation is built
    /// from its bytes (not zeroed first, then overwritten: a copy received for a move or repair
    /// is written once).
    fn alloc_filled(&mut self, id: u64, data: &[u8]) -> Option<u32> {
        if class_of(data.len()) != LARGE {
            let h = self.alloc(data.len())?;
            self.fill(h, id, data);
            return Some(h);
        }
        let s = self.large_slot()?;
        let big = if in_heap(data.len()) {
            match self.heap.write().insert(data) {
                Some(r) => Big::Heap { id, r },
                None => {
                    self.large_free.push(s);
                    return None;
                }
            }
        } else {
            let mut b = Vec::with_capacity(HEADER + data.len());
            b.extend_from_slice(&id.to_le_bytes());
            b.extend_from_slice(&(data.len() as u32).to_le_bytes());
            b.extend_from_slice(data);
            Big::Own(b.into_boxed_slice())
        };
        self.large[s as usize] = Some(big);
        Some((LARGE << SLOT_BITS) | s)
    }

    fn fill(&mut self, h: u32, id: u64, data: &[u8]) {
        let slot = self.slot_mut(h);
        slot[..8].copy_from_slice(&id.to_le_bytes());
        slot[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        slot[HEADER..HEADER + data.len()].copy_from_slice(data);
    }

    /// Calls `f` with every object's id and payload.
    pub(crate) fn for_each(&self, mut f: impl FnMut(u64, &[u8])) {
        let heap = self.heap.read();
        let view = self.view();
        for &h in self.index.iter() {
            match view.at(h) {
                At::Slot(s) => f(id_of(s), payload(s)),
                At::Heap(r) => f(view.id(h).unwrap_or(0), heap.get(r)),
            }
        }
    }

    /// Removes object `id`; returns its length.
    pub(crate) fn remove(&mut self, hash: u64, id: u64) -> Option<usize> {
        let h = self.find(hash, id)?;
        let len = match self.view().at(h) {
            At::Slot(s) => len_of(s),
            At::Heap(r) => self.heap.read().get(r).len(),
        };
        if let Ok(e) = self.index.find_entry(hash, |&x| x == h) {
            e.remove();
        }
        self.release(h);
        if self.index.capacity() > 1024 && self.index.len() * 4 < self.index.capacity() {
            let (index, view) = self.index_and_view();
            index.shrink_to(index.len() * 2, |&h| mix(view.id(h).unwrap_or(0)));
        }
        Some(len)
    }
}

/// Where a handle's object is.
enum At<'a> {
    /// A slot (header and payload).
    Slot(&'a [u8]),
    /// The heap, under this reference.
    Heap(u32),
}

/// Read-only access to slots while the index is borrowed mutably (for rehashing).
struct View<'a> {
    classes: &'a [Option<Box<Class>>],
    large: &'a [Option<Big>],
}

impl<'a> View<'a> {
    fn at(&self, h: u32) -> At<'a> {
        let (c, s) = (h >> SLOT_BITS, h & (MAX_SLOTS - 1));
        if c == LARGE {
            match &self.large[s as usize] {
                Some(Big::Own(b)) => At::Slot(b),
                Some(Big::Heap { r, .. }) => At::Heap(*r),
                None => At::Slot(&[]),
            }
        } else {
            match &self.classes[c as usize] {
                Some(class) => At::Slot(class.bytes(s)),
                None => At::Slot(&[]),
            }
        }
    }

    /// The id of the object of handle `h`.
    fn id(&self, h: u32) -> Option<u64> {
        let (c, s) = (h >> SLOT_BITS, h & (MAX_SLOTS - 1));
        if c == LARGE
            && let Some(Big::Heap { id, .. }) = &self.large[s as usize]
        {
            return Some(*id);
        }
        match self.at(h) {
            At::Slot(s) if s.len() >= HEADER => Some(id_of(s)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn h(id: u64) -> u64 {
        crate::namespace::mix(id)
    }

    /// Bytes held by the shard and its heap.
    fn held(s: &Slabs) -> usize {
        s.held_bytes() + s.heap.read().held_bytes()
    }

    #[test]
    fn pages_cover_every_slot_once() {
        for c in [0u32, 7, 100, 510] {
            let class = Class::new(c);
            let mut seen = std::collections::HashSet::new();
            for s in 0..100_000u32 {
                let (p, o) = class.locate(s);
                assert!(o < class.page_slots(p), "class {c} slot {s}");
                assert!(seen.insert((p, o)));
            }
        }
    }

    /// A long random history over a few size classes (large objects included), checked
    /// against a map, with the memory held compared to the live bytes along the way.
    #[test]
    fn compaction_keeps_contents_and_gives_memory_back() {
        let mut state = 7u64;
        let mut next = |n: u64| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix(state) % n
        };
        let mut s = Slabs::default();
        let mut m: HashMap<u64, Vec<u8>> = HashMap::new();
        let sizes = [20usize, 500, 4000, 9000];
        for round in 0..6 {
            // Fill with one mix of sizes, then free most of it at random.
            for _ in 0..4000 {
                let id = next(20_000);
                let len = sizes[(round + next(2) as usize) % sizes.len()];
                let data: Vec<u8> = (0..len).map(|i| (id as usize + i) as u8).collect();
                let old = s.put(h(id), id, &data).unwrap();
                assert_eq!(old, m.insert(id, data).map(|d| d.len()));
            }
            let ids: Vec<u64> = m.keys().copied().collect();
            for id in ids {
                if next(10) < 8 {
                    assert_eq!(s.remove(h(id), id), m.remove(&id).map(|d| d.len()));
                }
            }
            for (id, d) in &m {
                assert_eq!(
                    s.get(h(*id), *id).as_deref(),
                    Some(d.as_slice()),
                    "round {round} id {id}"
                );
            }
            let live: usize = m.values().map(|d| slot_size(d.len())).sum();
            // Each class keeps at most one spare page and the holes compaction has not reached
            // yet (under half its slots); the index is a few bytes per entry; the heap holds
            // its open segment and the dead bytes it allows.
            let spare = sizes.len() * PAGE_BYTES + crate::heap::allowance(live);
            assert!(
                held(&s) <= 2 * live + spare + 64 * 1024,
                "round {round}: {} bytes held for {live} live",
                held(&s)
            );
        }
        for id in m.keys().copied().collect::<Vec<_>>() {
            s.remove(h(id), id);
        }
        assert_eq!(s.len(), 0);
        assert!(held(&s) <= 16 * 1024, "{} bytes held when empty", held(&s));
    }

    /// A class with a few objects holds their slots and no more: its first page (at most 2 KiB)
    /// and no spare page past them; an object of over 1 KiB goes to the heap's segments.
    #[test]
    fn a_few_objects_hold_only_their_slots() {
        let mut s = Slabs::default();
        let index = |s: &Slabs| s.index.capacity() * 5;
        let slot = slot_size(1000);
        s.put(h(1), 1, &[1; 1000]).unwrap();
        assert_eq!(s.held_bytes() - index(&s), 2 * slot);
        assert!(2 * slot <= FIRST_PAGE_BYTES);
        let mut s = Slabs::default();
        for id in 0..3 {
            s.put(h(id), id, &[7; 1000]).unwrap();
        }
        assert_eq!(
            s.held_bytes() - index(&s),
            6 * slot,
            "a first page and a second"
        );
        s.remove(h(2), 2);
        s.remove(h(1), 1);
        assert_eq!(s.held_bytes() - index(&s), 2 * slot);
        assert_eq!(s.get(h(0), 0).as_deref(), Some(&[7u8; 1000][..]));
        s.put(h(9), 9, &[9; 1100]).unwrap();
        assert_eq!(
            s.held_bytes() - index(&s),
            2 * slot + std::mem::size_of::<Big>(),
            "the slab pages stay as they were"
        );
        assert_eq!(s.heap.read().filled_bytes(), entry_size(1100));
        assert_eq!(s.get(h(9), 9).as_deref(), Some(&[9u8; 1100][..]));
    }

    proptest::proptest! {
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec(
            (0u64..40, proptest::option::of(0usize..5000), proptest::num::u8::ANY), 1..200)) {
            let mut s = Slabs::default();
            let mut m: HashMap<u64, Vec<u8>> = HashMap::new();
            for (id, put, fill) in ops {
                match put {
                    Some(len) => {
                        let data = vec![fill; len];
                        let old = s.put(h(id), id, &data).unwrap();
                        proptest::prop_assert_eq!(old, m.insert(id, data).map(|d| d.len()));
                    }
                    None => {
                        proptest::prop_assert_eq!(s.remove(h(id), id), m.remove(&id).map(|d| d.len()));
                    }
                }
                proptest::prop_assert_eq!(s.len(), m.len());
            }
            for (id, d) in &m {
                proptest::prop_assert_eq!(s.get(h(*id), *id), Some(d.clone()));
            }
        }
    }
}
