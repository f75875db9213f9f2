//! One server-side hash table: key-range segments, each a hash index over a record arena.
//!
//! A table is split by key (byte order) into [`Segment`]s of at most [`SEGMENT_ENTRIES`]
//! entries (or [`SEGMENT_BYTES`] of records), found by a binary search of their lowest keys
//! (a sorted array: a few thousand segments for tens of millions of entries). A lookup is that
//! search and one hash probe; an insert never rehashes more than one segment, so its cost
//! stays flat as the table grows. A full segment splits at its median key, which also gives
//! scans their order for free: a page sorts only the segments it reads (no ordered key set is
//! kept per entry).
//!
//! Two shapes of use that copies of whole tables produce cost no more per entry than a
//! segment's own work:
//! - *Ascending loads.* A key above every key of a full last segment starts a new segment
//!   instead of splitting the full one (no sort, no rebuild): a table loaded in key order, as
//!   a copy from a scan is, is built in full segments with one hash insert per entry.
//! - *Paged scans.* The key order of the segment a scan page ended in is kept (one offset per
//!   entry, for one segment of the table) until that segment changes, so the next page
//!   resumes with a binary search instead of filtering and selecting the whole segment again.

use super::segment::{Segment, hash_key};

/// Most entries of a segment before it splits.
pub const SEGMENT_ENTRIES: usize = 16_384;
/// Most record bytes of a segment (with two entries or more) before it splits.
pub const SEGMENT_BYTES: usize = 4 << 20;

/// Entries of a scan page, borrowed from the table.
pub(super) type Page<'a> = Vec<(&'a [u8], &'a [u8])>;

/// One segment's records in key order, kept from one scan page to the next.
#[derive(Debug)]
struct Order {
    /// The segment's index.
    seg: usize,
    /// Its records' offsets, ascending by key.
    offs: Vec<u32>,
}

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
    /// The key order of the segment the last scan page ended in, while it is unchanged.
    order: Option<Order>,
}

impl Table {
    pub(super) fn new(seed: u64) -> Self {
        Self {
            seed,
            bounds: vec![Box::default()],
            segs: vec![Segment::default()],
            len: 0,
            payload: 0,
            order: None,
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
        self.forget(i);
        let last = i + 1 == self.segs.len();
        let seg = &mut self.segs[i];
        let full = seg.len() >= SEGMENT_ENTRIES
            || (seg.len() > 0 && seg.bytes() + k.len() + v.len() > SEGMENT_BYTES);
        if full && last && seg.max_key().is_some_and(|m| k > m) {
            // An ascending load: `k` starts a segment of its own above the full one.
            let mut upper = Segment::default();
            upper.insert(seed, h, k, v, None);
            self.bounds.push(k.into());
            self.segs.push(upper);
            self.len += 1;
            self.payload += (k.len() + v.len()) as u64;
            return None;
        }
        let r = seg.insert(seed, h, k, v, old);
        let split = seg.len() > SEGMENT_ENTRIES || (seg.bytes() > SEGMENT_BYTES && seg.len() > 1);
        let upper = if split { seg.split(seed) } else { None };
        if let Some((bound, upper)) = upper {
            self.bounds.insert(i + 1, bound.into_boxed_slice());
            self.segs.insert(i + 1, upper);
            self.order = None;
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
        self.forget(i);
        if self.segs[i].len() == 0 && i > 0 {
            // Its key range joins the segment before it.
            self.bounds.remove(i);
            self.segs.remove(i);
            self.order = None;
        }
        self.len -= 1;
        self.payload -= (k.len() + v.len()) as u64;
        Some(v)
    }

    /// Drops the kept key order of segment `i` (about to change).
    fn forget(&mut self, i: usize) {
        if self.order.as_ref().is_some_and(|o| o.seg == i) {
            self.order = None;
        }
    }

    /// Up to `max` entries with keys above `after`, ascending, and whether more follow.
    pub(super) fn scan(&mut self, after: Option<&[u8]>, max: usize) -> (Page<'_>, bool) {
        let mut out = Vec::new();
        // Start at the segment holding `after` (keys above it may follow in it).
        let start = after.map_or(0, |a| self.segment(a));
        let segs = &self.segs;
        for (i, seg) in segs.iter().enumerate().skip(start) {
            if self.order.as_ref().is_none_or(|o| o.seg != i) {
                self.order = Some(Order {
                    seg: i,
                    offs: seg.sorted(),
                });
            }
            let offs = self.order.as_ref().map_or(&[][..], |o| &o.offs[..]);
            let from = after.map_or(0, |a| offs.partition_point(|&o| seg.at(o).0 <= a));
            let take = (offs.len() - from).min(max - out.len());
            out.extend(offs[from..from + take].iter().map(|&o| seg.at(o)));
            if out.len() == max {
                // Later segments hold only larger keys.
                let more = from + take < offs.len() || segs[i + 1..].iter().any(|s| s.len() > 0);
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
                    assert_eq!(*k, &seen.to_be_bytes()[..]);
                    seen += 1;
                }
                after = entries.last().map(|(k, _)| k.to_vec());
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

    #[test]
    fn an_ascending_load_fills_whole_segments_without_splitting() {
        let mut t = Table::new(5);
        let n = 4 * SEGMENT_ENTRIES as u64 + 10;
        for i in 0..n {
            assert_eq!(t.insert(&i.to_be_bytes(), &[7; 8], None), None);
        }
        assert_eq!(t.segments(), 5);
        assert!(t.segs[..4].iter().all(|s| s.len() == SEGMENT_ENTRIES));
        assert_eq!((t.len(), t.payload()), (n as usize, 16 * n));
        for i in (0..n).step_by(97) {
            assert_eq!(t.get(&i.to_be_bytes()), Some(&[7u8; 8][..]));
        }
        // A key inside a full segment still splits it; replacing keeps the count.
        let mid = (SEGMENT_ENTRIES as u64 / 2).to_be_bytes();
        assert_eq!(t.insert(&mid, &[1; 3], None), Some(8));
        let k = [0u8, 0, 0, 0, 0, 0, 0x10, 0, 1];
        assert_eq!(t.insert(&k, &[1; 8], None), None);
        assert_eq!(t.segments(), 6);
        let (all, more) = t.scan(None, usize::MAX >> 1);
        assert!(!more);
        assert_eq!(all.len(), n as usize + 1);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn scan_pages_follow_writes_made_between_them() {
        use std::collections::BTreeMap;
        use std::ops::Bound;
        let mut t = Table::new(9);
        let mut model = BTreeMap::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 200_000
        };
        for _ in 0..3 * SEGMENT_ENTRIES {
            let k = next().to_be_bytes();
            t.insert(&k, &k, None);
            model.insert(k.to_vec(), k.to_vec());
        }
        let mut after: Option<Vec<u8>> = None;
        let mut pages = 0;
        loop {
            let (page, more) = t.scan(after.as_deref(), 700);
            let lower = after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
            let want: Vec<_> = model
                .range::<Vec<u8>, _>((lower, Bound::Unbounded))
                .take(701)
                .collect();
            assert_eq!(page.len(), want.len().min(700));
            for ((k, v), (wk, wv)) in page.iter().zip(&want) {
                assert_eq!((k, v), (&wk.as_slice(), &wv.as_slice()));
            }
            assert_eq!(more, want.len() > 700);
            after = page.last().map(|(k, _)| k.to_vec());
            if !more {
                break;
            }
            pages += 1;
            // Writes between pages, some of them in the segment the next page reads.
            for i in 0..40u64 {
                let k = next().to_be_bytes();
                if i % 2 == 0 {
                    t.insert(&k, &[1; 5], None);
                    model.insert(k.to_vec(), vec![1; 5]);
                } else {
                    assert_eq!(t.remove(&k), model.remove(k.as_slice()));
                }
            }
            if let Some(a) = &after {
                let k = [a.as_slice(), &[0]].concat();
                t.insert(&k, b"next", None);
                model.insert(k, b"next".to_vec());
            }
        }
        assert!(pages > 60, "{pages}");
    }
}
