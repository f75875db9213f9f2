//! Storage of a namespace's larger objects (over 1 KiB to [`HEAP_MAX`] bytes) in segments of its
//! own, which it compacts, so that the memory it holds stays close to the bytes it stores.
//!
//! A general-purpose allocator gives each such object a heap allocation of its own; under
//! churn, freed chunks end up between live ones, most of them smaller than a page, and the
//! process keeps them resident. Here objects are appended, in the order they arrive, to an open
//! segment of [`SEGMENT`] bytes; a freed object leaves dead bytes in its segment. A segment
//! whose objects are all dead is dropped at once (its memory goes back whole), and while the
//! dead bytes of all segments exceed [`SLACK`] of the live ones, the segment with the most dead
//! bytes is *evacuated*: its live objects are appended to the open segment, a few at a time,
//! and the emptied segment is dropped. Objects written together (a batch, a span of a coded
//! pool) sit together and tend to be freed together, so most segments empty on their own or
//! are evacuated cheaply.
//!
//! Objects are found by a *reference* (a `u32` that stays the same when the object moves)
//! through a table of locations. An entry: `ref: u32`, `len: u32`, payload, padding to a
//! multiple of 8.

use crate::segment::SegBuf;

/// Bytes of a segment.
pub(crate) const SEGMENT: usize = 256 << 10;
/// Largest entry (header, payload and padding) kept in a segment; larger objects are stored
/// elsewhere.
pub(crate) const HEAP_MAX: usize = SEGMENT / 4;
/// Bytes of an entry's header.
const ENTRY_HEADER: usize = 8;
/// Dead bytes allowed, as a share of the live bytes (1/SLACK), before segments are evacuated.
const SLACK: usize = 64;
/// Dead bytes always allowed (a small store is not compacted).
const SLACK_FLOOR: usize = 2 * SEGMENT;
/// A segment is evacuated only when at least this share (1/n) of it is dead: moving a mostly
/// live segment would cost much copying for little memory.
const VICTIM_DEAD: usize = 16;
/// Bytes moved per call of [`Heap::compact`] at most (a request never holds the lock long).
const STEP: usize = 64 << 10;
/// Open segment of new objects.
const NEW: usize = 0;
/// Open segment of moved objects.
const MOVED: usize = 1;
/// Table value of a free reference.
const NOWHERE: u64 = u64::MAX;

/// Dead bytes the heap keeps without compacting when `live` bytes are live.
fn dead_allowed(live: usize) -> usize {
    SLACK_FLOOR.max(live / SLACK)
}

/// Bytes held beyond `live` live bytes, at most, once compaction has caught up: the dead
/// bytes allowed, the unwritten rest of the open segment and the part of a segment being
/// evacuated that is already copied.
#[cfg(test)]
pub(crate) fn allowance(live: usize) -> usize {
    dead_allowed(live) + 2 * SEGMENT
}

/// Bytes an entry with `len` bytes of payload takes in a segment.
pub(crate) fn entry_size(len: usize) -> usize {
    (ENTRY_HEADER + len).div_ceil(8) * 8
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn loc(seg: u32, off: usize) -> u64 {
    (u64::from(seg) << 32) | off as u64
}

fn unloc(l: u64) -> (usize, usize) {
    ((l >> 32) as usize, (l & 0xffff_ffff) as usize)
}

/// One segment: entries from offset 0 to `data.len()` (its capacity is [`SEGMENT`]; bytes past
/// the length were never written, so they cost no resident memory).
struct Segment {
    data: SegBuf,
    /// Bytes of live entries.
    live: usize,
}

/// The larger objects of a namespace.
pub(crate) struct Heap {
    segments: Vec<Option<Segment>>,
    /// Numbers of dropped segments, for reuse.
    spare: Vec<u32>,
    /// Reference to location (`segment << 32 | offset`), or [`NOWHERE`].
    table: Vec<u64>,
    free_refs: Vec<u32>,
    /// How many free references there must be before the next attempt to shrink the table
    /// after one that found too short a free tail (so that attempts, each scanning the tail,
    /// come once per eighth of the table's removals at most).
    shrink_retry_at: usize,
    /// The segments objects are appended to: new objects ([`NEW`]) and objects moved out of
    /// an evacuated segment ([`MOVED`]). Kept apart, the objects written together stay
    /// together, and the survivors of evacuations (which die at scattered times) do not
    /// sprinkle holes among them.
    open: [Option<u32>; 2],
    /// The segment being evacuated and the offset reached.
    victim: Option<(u32, usize)>,
    /// Bytes of live entries.
    live: usize,
    /// Bytes written in all segments (live and dead).
    filled: usize,
    /// Bytes of entries moved by evacuations, ever.
    moved: u64,
}

impl std::fmt::Debug for Heap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heap")
            .field("live", &self.live)
            .field("filled", &self.filled)
            .field("moved", &self.moved)
            .finish()
    }
}

impl Default for Heap {
    fn default() -> Self {
        Self::new()
    }
}

impl Heap {
    pub(crate) fn new() -> Self {
        Self {
            segments: Vec::new(),
            spare: Vec::new(),
            table: Vec::new(),
            free_refs: Vec::new(),
            shrink_retry_at: 0,
            open: [None; 2],
            victim: None,
            live: 0,
            filled: 0,
            moved: 0,
        }
    }

    /// Payload of object `r`.
    ///
    /// # Panics
    /// When `r` is not a live reference.
    pub(crate) fn get(&self, r: u32) -> &[u8] {
        let (s, off) = unloc(self.table[r as usize]);
        let data = &self.segment(s).data;
        let len = read_u32(data, off + 4) as usize;
        &data[off + ENTRY_HEADER..off + ENTRY_HEADER + len]
    }

    /// Mutable payload of object `r`.
    ///
    /// # Panics
    /// When `r` is not a live reference.
    pub(crate) fn get_mut(&mut self, r: u32) -> &mut [u8] {
        let (s, off) = unloc(self.table[r as usize]);
        let data = &mut self.segment_mut(s).data;
        let len = read_u32(data, off + 4) as usize;
        &mut data[off + ENTRY_HEADER..off + ENTRY_HEADER + len]
    }

    fn segment(&self, s: usize) -> &Segment {
        self.segments[s]
            .as_ref()
            .expect("a live reference points into a held segment")
    }

    fn segment_mut(&mut self, s: usize) -> &mut Segment {
        self.segments[s]
            .as_mut()
            .expect("a live reference points into a held segment")
    }

    /// Stores `data` (at most [`HEAP_MAX`] bytes of entry) and returns its reference, or
    /// `None` when no reference is left.
    pub(crate) fn insert(&mut self, data: &[u8]) -> Option<u32> {
        debug_assert!(entry_size(data.len()) <= HEAP_MAX);
        let r = match self.free_refs.pop() {
            Some(r) => r,
            None if self.table.len() < u32::MAX as usize => {
                self.table.push(NOWHERE);
                (self.table.len() - 1) as u32
            }
            None => return None,
        };
        self.table[r as usize] = self.append(NEW, r, data);
        self.live += entry_size(data.len());
        Some(r)
    }

    /// Overwrites object `r` with `data` in place when it takes the same space; returns whether
    /// it did.
    pub(crate) fn overwrite(&mut self, r: u32, data: &[u8]) -> bool {
        let (s, off) = unloc(self.table[r as usize]);
        let seg = self.segment_mut(s);
        let old = read_u32(&seg.data, off + 4) as usize;
        if entry_size(old) != entry_size(data.len()) {
            return false;
        }
        seg.data[off + 4..off + 8].copy_from_slice(&(data.len() as u32).to_le_bytes());
        seg.data[off + ENTRY_HEADER..off + ENTRY_HEADER + data.len()].copy_from_slice(data);
        true
    }

    /// Writes an entry for `r` at the end of open segment `which` (opening one when it is
    /// full) and returns its location.
    fn append(&mut self, which: usize, r: u32, data: &[u8]) -> u64 {
        let size = entry_size(data.len());
        let s = match self.open[which] {
            Some(s) if self.segment(s as usize).data.len() + size <= SEGMENT => s,
            _ => self.open_segment(which),
        };
        let seg = self.segments[s as usize]
            .as_mut()
            .expect("the open segment is held");
        let off = seg.data.len();
        seg.data.extend_from_slice(&r.to_le_bytes());
        seg.data
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        seg.data.extend_from_slice(data);
        seg.data.pad_to(off + size);
        seg.live += size;
        self.filled += size;
        loc(s, off)
    }

    /// Closes open segment `which` (dropping it when all its objects died meanwhile) and opens
    /// a new one.
    fn open_segment(&mut self, which: usize) -> u32 {
        if let Some(s) = self.open[which].take()
            && self.segment(s as usize).live == 0
        {
            self.drop_segment(s);
        }
        let seg = Segment {
            data: SegBuf::with_capacity(SEGMENT),
            live: 0,
        };
        let s = match self.spare.pop() {
            Some(s) => {
                self.segments[s as usize] = Some(seg);
                s
            }
            None => {
                self.segments.push(Some(seg));
                (self.segments.len() - 1) as u32
            }
        };
        self.open[which] = Some(s);
        s
    }

    fn drop_segment(&mut self, s: u32) {
        if let Some(seg) = self.segments[s as usize].take() {
            self.filled -= seg.data.len();
            self.spare.push(s);
        }
        if self.victim.is_some_and(|(v, _)| v == s) {
            self.victim = None;
        }
    }

    /// Frees object `r`; returns its payload length. Then compacts a step when the dead bytes
    /// are over the slack.
    pub(crate) fn remove(&mut self, r: u32) -> usize {
        let (s, off) = unloc(self.table[r as usize]);
        self.table[r as usize] = NOWHERE;
        self.free_refs.push(r);
        let seg = self.segment_mut(s);
        let len = read_u32(&seg.data, off + 4) as usize;
        let size = entry_size(len);
        seg.live -= size;
        let empty = seg.live == 0;
        self.live -= size;
        if empty {
            for o in &mut self.open {
                if *o == Some(s as u32) {
                    *o = None;
                }
            }
            self.drop_segment(s as u32);
        }
        self.compact(STEP);
        if self.live == 0
            || self.table.len() > 1024
                && self.free_refs.len() * 2 > self.table.len()
                && self.free_refs.len() >= self.shrink_retry_at
        {
            self.shrink_table();
        }
        len
    }

    /// Drops free references at the end of the table (all of it when no object is left).
    fn shrink_table(&mut self) {
        if self.live == 0 {
            *self = Self::new();
            return;
        }
        // Only when a quarter of the table or more can go: the scan of the free references
        // below costs their number, and doing it on every removal while the last references
        // stay live would make removals quadratic.
        let tail = self
            .table
            .iter()
            .rev()
            .take_while(|&&e| e == NOWHERE)
            .count();
        if tail * 4 < self.table.len() {
            self.shrink_retry_at = self.free_refs.len() + self.table.len() / 8;
            return;
        }
        self.shrink_retry_at = 0;
        self.table.truncate(self.table.len() - tail);
        let n = self.table.len() as u32;
        self.free_refs.retain(|&r| r < n);
        self.table.shrink_to(n as usize * 2);
        self.free_refs.shrink_to(self.free_refs.len() * 2);
    }

    /// Dead bytes held (written, no longer live).
    fn dead(&self) -> usize {
        self.filled - self.live
    }

    fn over_slack(&self) -> bool {
        self.dead() > dead_allowed(self.live)
    }

    /// The segment with the most dead bytes, if evacuating it is worth it.
    fn pick_victim(&self) -> Option<u32> {
        self.segments
            .iter()
            .enumerate()
            .filter(|&(s, _)| !self.open.contains(&Some(s as u32)))
            .filter_map(|(s, seg)| seg.as_ref().map(|seg| (s, seg.data.len() - seg.live)))
            .filter(|&(_, dead)| dead * VICTIM_DEAD >= SEGMENT)
            .max_by_key(|&(_, dead)| dead)
            .map(|(s, _)| s as u32)
    }

    /// While the dead bytes are over the slack, moves up to `budget` bytes of live objects out
    /// of the segment with the most dead bytes.
    pub(crate) fn compact(&mut self, budget: usize) {
        let mut moved = 0;
        while moved < budget && self.over_slack() {
            let (v, mut at) = match self.victim {
                Some(x) => x,
                None => match self.pick_victim() {
                    Some(v) => (v, 0),
                    None => return,
                },
            };
            // Take the victim's data out while its live entries are copied elsewhere.
            let data = std::mem::take(&mut self.segment_mut(v as usize).data);
            while at < data.len() && moved < budget {
                let r = read_u32(&data, at);
                let len = read_u32(&data, at + 4) as usize;
                let size = entry_size(len);
                if self.table.get(r as usize) == Some(&loc(v, at)) {
                    let l =
                        self.append(MOVED, r, &data[at + ENTRY_HEADER..at + ENTRY_HEADER + len]);
                    self.table[r as usize] = l;
                    self.segment_mut(v as usize).live -= size;
                    moved += size;
                    self.moved += size as u64;
                }
                at += size;
            }
            let done = at >= data.len();
            self.segment_mut(v as usize).data = data;
            if done {
                debug_assert_eq!(self.segment(v as usize).live, 0);
                self.drop_segment(v);
            } else {
                self.victim = Some((v, at));
            }
        }
    }

    /// Bytes of memory held (segments' capacity and the table).
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        let segs: usize = self
            .segments
            .iter()
            .flatten()
            .map(|s| s.data.capacity())
            .sum();
        segs + self.table.capacity() * 8
    }

    /// Bytes written in segments (what is resident of them).
    #[cfg(test)]
    pub(crate) fn filled_bytes(&self) -> usize {
        self.filled
    }
}

#[cfg(test)]
#[path = "heap_model.rs"]
mod model;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7)) as u8)
            .collect()
    }

    /// Checks every live object against the model and the memory held against the live bytes.
    fn check(heap: &Heap, model: &HashMap<u32, Vec<u8>>) {
        for (&r, d) in model {
            assert_eq!(heap.get(r), &d[..], "object {r}");
        }
        let live: usize = model.values().map(|d| entry_size(d.len())).sum();
        assert_eq!(heap.live, live);
        // Dead bytes within the slack, or spread so thin that no segment is worth evacuating;
        // and the segment being evacuated.
        let segments = heap.segments.iter().flatten().count();
        let dead = dead_allowed(live).max(segments * SEGMENT / VICTIM_DEAD);
        assert!(
            heap.filled_bytes() <= live + dead + 2 * SEGMENT,
            "{} bytes written for {live} live",
            heap.filled_bytes()
        );
    }

    proptest::proptest! {
        /// Random inserts, overwrites and removes of 1 byte to 64 KiB, checked against a map.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec(
            (0usize..64, 0u8..4, 1usize..HEAP_MAX - ENTRY_HEADER, proptest::num::u64::ANY),
            1..400)) {
            let mut heap = Heap::new();
            let mut model: HashMap<u32, Vec<u8>> = HashMap::new();
            let mut refs: Vec<u32> = Vec::new();
            for (pick, op, len, seed) in ops {
                let data = bytes(seed, len);
                match op {
                    0 | 1 => {
                        let r = heap.insert(&data).unwrap();
                        proptest::prop_assert!(model.insert(r, data).is_none());
                        refs.push(r);
                    }
                    2 if !refs.is_empty() => {
                        let r = refs[pick % refs.len()];
                        if heap.overwrite(r, &data) {
                            model.insert(r, data);
                        }
                    }
                    _ if !refs.is_empty() => {
                        let r = refs.swap_remove(pick % refs.len());
                        let len = model.remove(&r).unwrap().len();
                        proptest::prop_assert_eq!(heap.remove(r), len);
                    }
                    _ => {}
                }
                check(&heap, &model);
            }
            for r in refs {
                heap.remove(r);
            }
            proptest::prop_assert_eq!(heap.held_bytes(), 0);
        }
    }

    /// Objects freed at random (not in the groups they were written in) leave segments partly
    /// dead: compaction moves their survivors and gives the segments back, keeping what is
    /// held near the live bytes throughout.
    #[test]
    fn random_frees_are_compacted_away() {
        let mut state = 3u64;
        let mut next = |n: u64| {
            state = crate::namespace::mix(state.wrapping_add(0x9e37_79b9_7f4a_7c15));
            state % n
        };
        let mut heap = Heap::new();
        let mut model: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut refs: Vec<u32> = Vec::new();
        let mut moved_before = 0;
        for round in 0..40 {
            for _ in 0..400 {
                let data = bytes(next(1 << 40), 1024 + next(15 << 10) as usize);
                let r = heap.insert(&data).unwrap();
                model.insert(r, data);
                refs.push(r);
            }
            // Free half of everything, anywhere.
            for _ in 0..refs.len() / 2 {
                let r = refs.swap_remove(next(refs.len() as u64) as usize);
                assert_eq!(heap.remove(r), model.remove(&r).unwrap().len());
            }
            check(&heap, &model);
            let live: usize = model.values().map(|d| entry_size(d.len())).sum();
            assert!(
                heap.held_bytes() <= live + allowance(live) + refs.len() * 16 + (64 << 10),
                "round {round}: {} held for {live} live",
                heap.held_bytes()
            );
            moved_before = moved_before.max(heap.filled_bytes());
        }
        for r in refs {
            heap.remove(r);
        }
        assert_eq!(heap.held_bytes(), 0);
        assert!(moved_before > 0);
    }

    /// Objects written together and freed together (as the spans of a coded pool) empty their
    /// segments, which go back without any object being moved.
    #[test]
    fn groups_freed_together_free_whole_segments() {
        let mut heap = Heap::new();
        let mut groups: Vec<Vec<u32>> = Vec::new();
        for g in 0..200u64 {
            let refs = (0..16)
                .map(|i| heap.insert(&bytes(g * 16 + i, 8 << 10)).unwrap())
                .collect();
            groups.push(refs);
            if g % 2 == 1 {
                // Free an older group.
                let victim = groups.remove((g as usize * 7) % groups.len());
                for r in victim {
                    heap.remove(r);
                }
            }
        }
        let live = heap.live;
        assert_eq!(live, groups.len() * 16 * entry_size(8 << 10));
        assert!(
            heap.filled_bytes() <= live + dead_allowed(live) + SEGMENT,
            "{} written for {live} live",
            heap.filled_bytes()
        );
        for (g, refs) in groups.iter().enumerate() {
            for &r in refs {
                assert_eq!(heap.get(r).len(), 8 << 10, "group {g}");
            }
        }
    }

    /// The reference table shrinks only once its free tail is a quarter of it, and then within
    /// an eighth of its length of removals; every object and reference stays usable.
    #[test]
    fn the_table_shrinks_by_its_free_tail() {
        let mut heap = Heap::new();
        let refs: Vec<u32> = (0..4096u64)
            .map(|i| heap.insert(&bytes(i, 64)).unwrap())
            .collect();
        // Free the middle: most references are free, but the last one is live.
        for &r in &refs[601..3072] {
            heap.remove(r);
        }
        assert_eq!(heap.table.len(), 4096, "nothing at the end to drop");
        // Free the last quarter but its first object: a free tail just short of a quarter.
        for &r in refs[3073..].iter().rev() {
            heap.remove(r);
        }
        assert_eq!(heap.table.len(), 4096, "a tail under a quarter stays");
        // Now the tail runs from 601 to the end.
        heap.remove(refs[3072]);
        let mut shrunk_after = (heap.table.len() < 4096).then_some(0);
        for (n, &r) in refs[1..=600].iter().rev().enumerate() {
            heap.remove(r);
            if shrunk_after.is_none() && heap.table.len() < 4096 {
                shrunk_after = Some(n + 1);
            }
        }
        let shrunk_after = shrunk_after.expect("the table shrank");
        assert!(shrunk_after <= 4096 / 8, "{shrunk_after} removals late");
        assert!(heap.table.len() <= 601, "{}", heap.table.len());
        let len = heap.table.len() as u32;
        assert!(heap.free_refs.iter().all(|&r| r < len));
        assert_eq!(heap.get(refs[0]), &bytes(0, 64)[..]);
        // References are handed out again, growing the table as needed.
        let again: Vec<u32> = (0..1000u64)
            .map(|i| heap.insert(&bytes(i + 7, 64)).unwrap())
            .collect();
        for (i, &r) in again.iter().enumerate() {
            assert_eq!(heap.get(r), &bytes(i as u64 + 7, 64)[..]);
        }
        assert_eq!(heap.get(refs[0]), &bytes(0, 64)[..]);
    }
}
