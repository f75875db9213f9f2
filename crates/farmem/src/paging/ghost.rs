//! The ghost history of recently evicted pages: a page that faults again while it is still in
//! the history was evicted too early (it is hot), so it earns credits against the next eviction.
//!
//! This is the user-space stand-in for the page-table access bits the kernel's reclaim uses
//! (refault distance, as in the kernel's workingset detection): reads of a mapped page are
//! invisible here, refaults are not.

use std::collections::{HashMap, VecDeque};

/// The last `capacity` evicted pages, oldest first.
#[derive(Debug)]
pub struct Ghosts {
    order: VecDeque<(usize, u64)>,
    /// Sequence number of each remembered page's latest eviction, its credit grant then, and
    /// whether it was evicted as a consumed stream page (drop-behind).
    seq_of: HashMap<usize, (u64, u8, bool)>,
    next_seq: u64,
    capacity: usize,
}

impl Ghosts {
    /// Remembers up to `capacity` evictions (about one budget's worth: a page that comes back
    /// within one turnover of the resident set).
    pub fn new(capacity: usize) -> Self {
        Self {
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
            seq_of: HashMap::with_capacity(capacity.min(1 << 16)),
            next_seq: 0,
            capacity: capacity.max(1),
        }
    }

    /// Records the eviction of `page` (last granted `grant` credits; `behind`: a consumed stream
    /// page), forgetting the oldest one beyond the capacity.
    pub fn record(&mut self, page: usize, grant: u8, behind: bool) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.seq_of.insert(page, (seq, grant, behind));
        self.order.push_back((page, seq));
        self.set_capacity(self.capacity);
    }

    /// Remembers up to `capacity` evictions from now on (forgets the oldest beyond it).
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        while self.order.len() > self.capacity {
            if let Some((old, s)) = self.order.pop_front()
                && self.seq_of.get(&old).is_some_and(|e| e.0 == s)
            {
                self.seq_of.remove(&old);
            }
        }
    }

    /// If `page` was evicted recently, its credit grant then and whether it was evicted as a
    /// consumed stream page; forgets it (a refault counts once).
    pub fn take(&mut self, page: usize) -> Option<(u8, bool)> {
        self.seq_of.remove(&page).map(|e| (e.1, e.2))
    }

    /// Whether `page` was evicted recently as a consumed stream page; forgets it if so (a
    /// prefetch of it counts once, and gives no credits).
    pub fn take_behind(&mut self, page: usize) -> bool {
        let behind = self.seq_of.get(&page).is_some_and(|e| e.2);
        if behind {
            self.seq_of.remove(&page);
        }
        behind
    }

    /// Forgets everything about pages in `[first, end)` (they were discarded).
    pub fn forget_range(&mut self, first: usize, end: usize) {
        self.seq_of.retain(|p, _| !(first..end).contains(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_only_the_last_evictions() {
        let mut g = Ghosts::new(2);
        g.record(1, 0, false);
        g.record(2, 0, false);
        g.record(3, 6, false);
        assert_eq!(g.take(1), None, "pushed out by 2 and 3");
        assert_eq!(g.take(3), Some((6, false)));
        assert_eq!(g.take(3), None, "counted once");
        g.record(2, 3, false); // again: the older entry must not evict the newer one
        g.record(4, 0, true);
        assert_eq!(g.take(2), Some((3, false)));
        assert!(!g.take_behind(2));
        assert!(g.take_behind(4), "evicted behind a stream");
        assert!(!g.take_behind(4), "counted once");
        g.record(4, 0, false);
        g.forget_range(0, 10);
        assert_eq!(g.take(4), None);
    }
}
