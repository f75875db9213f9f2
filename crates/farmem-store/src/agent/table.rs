//! One server-side hash table: key-range segments, each a hash index over a record arena.
//!
//! A table is split by key (byte order) into [`Segment`]s of at most [`SEGMENT_ENTRIES`]
//! entries (or [`SEGMENT_BYTES`] of records), found by a binary search of their lowest keys
//! (a sorted array: a few thousand segments for tens of millions of entries). A lookup is that
//! search and one hash probe; an insert never rehashes more than one segment, so its cost
//! stays flat as the table grows. A full segment splits at its median key, which also gives
//! scans their order for free: a page sorts only the segments it reads (no ordered key set is
//! kept per entry).

use super::segment::{Segment, hash_key};

/// Most entries of a segment before it splits.
pub const SEGMENT_ENTRIES: usize = 16_384;
/// Most record bytes of a segment (with two entries or more) before it splits.
pub const SEGMENT_BYTES: usize = 4 << 20;

/// Entries of a scan page, as owned key and value bytes.
pub(super) type Page = Vec<(Vec<u8>, Vec<u8>)>;

/// A table.
#[derive(Debug)]
pub(super) struct Table {
    seed: u64,
    /// The lowest key of every segment, ascending; the first is empty (every key is `>=` it).
    bounds: Vec<Box<[u8]>>,
    /// The segments, in the order of `bounds`.
    segs: Vec<Segment>,
    len: usize,
    /// Sum of key and value bytes of all entries.
    payload: u64,
}

impl Table {
    pub(super) fn new(seed: u64) -> Self {
        Self {
            seed,
            bounds: vec![Box::default()],
            segs: vec![Segment::default()],
            len: 0,
            payload: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sum of key and value bytes of all entries.
    pub(super) fn payload(&self) -> u64 {
        self.payload
    }

    /// The index of the segment holding `k`.
    #[inline]
    fn segment(&self, k: &[u8]) -> usize {
        // `bounds[0]` is empty, so at least one bound is `<= k`.
        self.bounds
            .partition_point(|b| &b[..] <= k)
            .saturating_sub(1)
    }

    pub(super) fn get(&self, k: &[u8]) -> Option<&[u8]> {
        self.segs[self.segment(k)].get(hash_key(self.seed, k), k)
    }

    /// Inserts or replaces; returns the old value's length (and appends the old value to `old`
    /// when given).
    pub(super) fn insert(
        &mut self,
        k: &[u8],
        v: &[u8],
        old: Option<&mut Vec<u8>>,
    ) -> Option<usize> {
        let seed = self.seed;
        let h = hash_key(seed, k);
        let i = self.segment(k);
        let seg = &mut self.segs[i];
        let r = seg.insert(seed, h, k, v, old);
        let split = seg.len() > SEGMENT_ENTRIES || (seg.bytes() > SEGMENT_BYTES && seg.len() > 1);
        let upper = if split { seg.split(seed) } else { None };
        if let Some((bound, upper)) = upper {
            self.bounds.insert(i + 1, bound.into_boxed_slice());
            self.segs.insert(i + 1, upper);
        }
        match r {
            Some(o) => self.payload = self.payload - o as u64 + v.len() as u64,
            None => {
                self.len += 1;
                self.payload += (k.len() + v.len()) as u64;
            }
        }
        r
    }

    pub(super) fn remove(&mut self, k: &[u8]) -> Option<Vec<u8>> {
        let seed = self.seed;
        let i = self.segment(k);
        let seg = &mut self.segs[i];
        let v = seg.remove(seed, hash_key(seed, k), k)?;
        if seg.len() == 0 && i > 0 {
            // Its key range joins the segment before it.
            self.bounds.remove(i);
            self.segs.remove(i);
        }
        self.len -= 1;
        self.payload -= (k.len() + v.len()) as u64;
        Some(v)
    }

    /// Up to `max` entries with keys above `after`, ascending, and whether more follow.
    pub(super) fn scan(&self, after: Option<&[u8]>, max: usize) -> (Page, bool) {
        let mut out = Vec::new();
        // Start at the segment holding `after` (keys above it may follow in it).
        let start = after.map_or(0, |a| self.segment(a));
        let above = |k: &[u8]| after.is_none_or(|a| k > a);
        for (i, seg) in self.segs.iter().enumerate().skip(start) {
            let mut page: Vec<(&[u8], &[u8])> = seg.entries().filter(|(k, _)| above(k)).collect();
            let room = max - out.len();
            if page.len() > room {
                // Only the `room` smallest are returned: select them, then sort those.
                page.select_nth_unstable_by(room, |a, b| a.0.cmp(b.0));
                page.truncate(room);
                page.sort_unstable_by(|a, b| a.0.cmp(b.0));
                out.extend(page.iter().map(|(k, v)| (k.to_vec(), v.to_vec())));
                return (out, true);
            }
            page.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.extend(page.iter().map(|(k, v)| (k.to_vec(), v.to_vec())));
            if out.len() == max {
                // Later segments hold only larger keys.
                let more = self.segs[i + 1..].iter().any(|s| s.len() > 0);
                return (out, more);
            }
        }
        (out, false)
    }

    /// Every entry, in no order.
    pub(super) fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.segs.iter().flat_map(Segment::entries)
    }

    /// Bytes allocated by the segments.
    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        self.segs
            .iter()
            .zip(&self.bounds)
            .map(|(s, k)| s.heap_bytes() + k.len() + 16 + size_of::<Segment>())
            .sum()
    }

    /// Number of segments.
    #[cfg(test)]
    pub(super) fn segments(&self) -> usize {
        self.segs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sixteen_byte_entry_costs_little_memory() {
        let rss = || {
            std::fs::read_to_string("/proc/self/statm")
                .ok()
                .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
                .unwrap_or(0)
                * 4096
        };
        let r0 = rss();
        let mut t = Table::new(11);
        let n = 2_000_000u64;
        for i in 0..n {
            let k = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes();
            t.insert(&k, &i.to_le_bytes(), None);
        }
        let per = t.heap_bytes() as f64 / n as f64;
        eprintln!(
            "{per:.1} bytes per entry, {} segments, rss {:.1}",
            t.segments(),
            (rss() - r0) as f64 / n as f64
        );
        assert!(per <= 48.0, "{per:.1} bytes per 16-byte entry");
    }

    #[test]
    fn a_table_splits_into_ordered_segments_and_scans_across_them() {
        let mut t = Table::new(3);
        let n = 3 * SEGMENT_ENTRIES as u64;
        for i in 0..n {
            let k = (i * 7919 % n).to_be_bytes();
            assert_eq!(t.insert(&k, &i.to_le_bytes(), None), None);
        }
        assert_eq!(t.len(), n as usize);
        assert!(t.segments() >= 3, "{}", t.segments());
        assert_eq!(t.payload(), 16 * n);
        for i in (0..n).step_by(101) {
            let k = (i * 7919 % n).to_be_bytes();
            assert_eq!(t.get(&k), Some(&i.to_le_bytes()[..]));
        }
        // Pages of any size return every key once, ascending.
        for page in [1000, 4096, 50_000] {
            let mut after: Option<Vec<u8>> = None;
            let mut seen = 0u64;
            loop {
                let (entries, more) = t.scan(after.as_deref(), page);
                for (k, _) in &entries {
                    assert_eq!(k.as_slice(), seen.to_be_bytes());
                    seen += 1;
                }
                after = entries.last().map(|(k, _)| k.clone());
                if !more {
                    break;
                }
            }
            assert_eq!(seen, n);
        }
        // Emptying segments drops them (their ranges join the one before).
        for i in 0..n - 1 {
            assert!(t.remove(&i.to_be_bytes()).is_some());
        }
        assert_eq!(t.len(), 1);
        assert!(t.segments() <= 2, "{}", t.segments());
        assert_eq!(t.scan(None, 10).0.len(), 1);
        assert_eq!(t.get(&(n - 1).to_be_bytes()).map(<[u8]>::len), Some(8));
    }
}
