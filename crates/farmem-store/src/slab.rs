//! Compact object storage for one shard: objects live in per-size-class slabs, found through a
//! table of 4-byte handles, so an object costs its payload plus a 12-byte header, rounding to
//! 8 bytes and ~6-9 bytes of index (~20-30 bytes in all), instead of a map entry plus a heap
//! allocation each (~50 bytes).
//!
//! Slot layout: `id: u64`, `len: u32`, payload, padding to a multiple of 8. Slots of size up to
//! [`SLAB_MAX`] live in slab pages of their class (sizes 16, 24, ..., 4096); larger objects get
//! an allocation each (class [`LARGE`]). A handle is `class << 23 | slot`.

use hashbrown::HashTable;

/// Bytes of slot header (id and length).
pub(crate) const HEADER: usize = 12;
/// Largest slot kept in a slab.
const SLAB_MAX: usize = 4096;
/// Class of objects stored in their own allocation.
const LARGE: u32 = 511;
const SLOT_BITS: u32 = 23;
/// Slots per class per shard.
const MAX_SLOTS: u32 = 1 << SLOT_BITS;
/// Slots in a class's first page; pages double up to about [`PAGE_BYTES`].
const FIRST_PAGE: usize = 8;
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
struct Class {
    slot: usize,
    /// log2 of the slots in the largest page, relative to FIRST_PAGE.
    max_shift: u32,
    pages: Vec<Box<[u8]>>,
    used: u32,
    free: Vec<u32>,
}

impl Class {
    fn new(class: u32) -> Self {
        let slot = (class as usize + 2) * 8;
        let mut max_shift = 0;
        while (FIRST_PAGE << (max_shift + 1)) * slot <= PAGE_BYTES {
            max_shift += 1;
        }
        Self {
            slot,
            max_shift,
            pages: Vec::new(),
            used: 0,
            free: Vec::new(),
        }
    }

    /// (page, slot within page) of slot number `s`.
    fn locate(&self, s: u32) -> (usize, usize) {
        let s = s as usize;
        let growing = FIRST_PAGE * ((1 << (self.max_shift + 1)) - 1);
        if s < growing {
            let k = (s / FIRST_PAGE + 1).ilog2() as usize;
            (k, s - FIRST_PAGE * ((1 << k) - 1))
        } else {
            let big = FIRST_PAGE << self.max_shift;
            let r = s - growing;
            (self.max_shift as usize + 1 + r / big, r % big)
        }
    }

    fn page_slots(&self, k: usize) -> usize {
        FIRST_PAGE << k.min(self.max_shift as usize)
    }

    fn alloc(&mut self) -> Option<u32> {
        if let Some(s) = self.free.pop() {
            return Some(s);
        }
        if self.used >= MAX_SLOTS {
            return None;
        }
        let s = self.used;
        let (page, _) = self.locate(s);
        if page == self.pages.len() {
            let n = self.page_slots(page) * self.slot;
            self.pages.push(vec![0u8; n].into_boxed_slice());
        }
        self.used += 1;
        Some(s)
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

/// The objects of one shard.
#[derive(Default)]
pub(crate) struct Slabs {
    index: HashTable<u32>,
    classes: Vec<Option<Box<Class>>>,
    large: Vec<Option<Box<[u8]>>>,
    large_free: Vec<u32>,
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
    fn slot(&self, h: u32) -> &[u8] {
        View {
            classes: &self.classes,
            large: &self.large,
        }
        .slot(h)
    }

    fn slot_mut(&mut self, h: u32) -> &mut [u8] {
        let (c, s) = (h >> SLOT_BITS, h & (MAX_SLOTS - 1));
        if c == LARGE {
            self.large[s as usize].as_deref_mut().unwrap_or(&mut [])
        } else {
            match &mut self.classes[c as usize] {
                Some(class) => class.bytes_mut(s),
                None => &mut [],
            }
        }
    }

    fn find(&self, hash: u64, id: u64) -> Option<u32> {
        self.index
            .find(hash, |&h| {
                let s = self.slot(h);
                s.len() >= HEADER && id_of(s) == id
            })
            .copied()
    }

    /// Payload of object `id`.
    pub(crate) fn get(&self, hash: u64, id: u64) -> Option<&[u8]> {
        self.find(hash, id).map(|h| payload(self.slot(h)))
    }

    /// Mutable payload of object `id`.
    pub(crate) fn get_mut(&mut self, hash: u64, id: u64) -> Option<&mut [u8]> {
        let h = self.find(hash, id)?;
        let slot = self.slot_mut(h);
        let len = len_of(slot);
        Some(&mut slot[HEADER..HEADER + len])
    }

    /// Number of objects.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    fn alloc(&mut self, len: usize) -> Option<u32> {
        let c = class_of(len);
        if c == LARGE {
            let s = match self.large_free.pop() {
                Some(s) => s,
                None if self.large.len() < MAX_SLOTS as usize => {
                    self.large.push(None);
                    (self.large.len() - 1) as u32
                }
                None => return None,
            };
            self.large[s as usize] = Some(vec![0u8; HEADER + len].into_boxed_slice());
            return Some((LARGE << SLOT_BITS) | s);
        }
        if self.classes.len() <= c as usize {
            self.classes.resize_with(c as usize + 1, || None);
        }
        let class = self.classes[c as usize].get_or_insert_with(|| Box::new(Class::new(c)));
        class.alloc().map(|s| (c << SLOT_BITS) | s)
    }

    fn release(&mut self, h: u32) {
        let (c, s) = (h >> SLOT_BITS, h & (MAX_SLOTS - 1));
        if c == LARGE {
            self.large[s as usize] = None;
            self.large_free.push(s);
        } else if let Some(class) = &mut self.classes[c as usize] {
            class.free.push(s);
        }
    }

    /// Stores `data` as object `id`, replacing any previous one. Returns the previous length,
    /// or `Err(())` when the shard has no slot left for this size.
    #[allow(clippy::result_unit_err)]
    pub(crate) fn put(
        &mut self,
        hash: u64,
        id: u64,
        data: &[u8],
        rehash: impl Fn(u64) -> u64,
    ) -> Result<Option<usize>, ()> {
        if let Some(h) = self.find(hash, id) {
            let slot = self.slot_mut(h);
            let old = len_of(slot);
            if slot_size(old) == slot_size(data.len()) && class_of(old) != LARGE
                || (class_of(old) == LARGE && old == data.len())
            {
                slot[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
                slot[HEADER..HEADER + data.len()].copy_from_slice(data);
                return Ok(Some(old));
            }
            let new = self.alloc(data.len()).ok_or(())?;
            self.fill(new, id, data);
            self.release(h);
            if let Some(e) = self.index.find_mut(hash, |&x| x == h) {
                *e = new;
            }
            return Ok(Some(old));
        }
        let new = self.alloc(data.len()).ok_or(())?;
        self.fill(new, id, data);
        let Self {
            index,
            classes,
            large,
            ..
        } = self;
        let view = View { classes, large };
        index.insert_unique(hash, new, |&h| rehash(id_of(view.slot(h))));
        Ok(None)
    }

    fn fill(&mut self, h: u32, id: u64, data: &[u8]) {
        let slot = self.slot_mut(h);
        slot[..8].copy_from_slice(&id.to_le_bytes());
        slot[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        slot[HEADER..HEADER + data.len()].copy_from_slice(data);
    }

    /// Calls `f` with every object's id and payload.
    pub(crate) fn for_each(&self, mut f: impl FnMut(u64, &[u8])) {
        for &h in self.index.iter() {
            let s = self.slot(h);
            f(id_of(s), payload(s));
        }
    }

    /// Removes object `id`; returns its length.
    pub(crate) fn remove(&mut self, hash: u64, id: u64) -> Option<usize> {
        let h = self.find(hash, id)?;
        let len = len_of(self.slot(h));
        if let Ok(e) = self.index.find_entry(hash, |&x| x == h) {
            e.remove();
        }
        self.release(h);
        Some(len)
    }
}

/// Read-only access to slots while the index is borrowed mutably (for rehashing).
struct View<'a> {
    classes: &'a [Option<Box<Class>>],
    large: &'a [Option<Box<[u8]>>],
}

impl<'a> View<'a> {
    fn slot(&self, h: u32) -> &'a [u8] {
        let (c, s) = (h >> SLOT_BITS, h & (MAX_SLOTS - 1));
        if c == LARGE {
            self.large[s as usize].as_deref().unwrap_or(&[])
        } else {
            match &self.classes[c as usize] {
                Some(class) => class.bytes(s),
                None => &[],
            }
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
                        let old = s.put(h(id), id, &data, h).unwrap();
                        proptest::prop_assert_eq!(old, m.insert(id, data).map(|d| d.len()));
                    }
                    None => {
                        proptest::prop_assert_eq!(s.remove(h(id), id), m.remove(&id).map(|d| d.len()));
                    }
                }
                proptest::prop_assert_eq!(s.len(), m.len());
            }
            for (id, d) in &m {
                proptest::prop_assert_eq!(s.get(h(*id), *id), Some(d.as_slice()));
            }
        }
    }
}
