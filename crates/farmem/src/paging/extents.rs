//! First-fit allocator of page ranges within a paged region, with coalescing free list.

use std::collections::BTreeMap;

/// Free page ranges: start page -> length in pages.
#[derive(Debug)]
pub struct Extents {
    free: BTreeMap<usize, usize>,
}

impl Extents {
    /// All `pages` pages free.
    pub fn new(pages: usize) -> Self {
        let mut free = BTreeMap::new();
        if pages > 0 {
            free.insert(0, pages);
        }
        Self { free }
    }

    /// Takes `n` pages (first fit). `None` when no free range is long enough.
    pub fn alloc(&mut self, n: usize) -> Option<usize> {
        let (&start, &len) = self.free.iter().find(|&(_, &len)| len >= n)?;
        self.free.remove(&start);
        if len > n {
            self.free.insert(start + n, len - n);
        }
        Some(start)
    }

    /// Extends the allocation `[start, start+old)` to `new` pages in place if the pages after it
    /// are free. Returns whether it did.
    pub fn grow(&mut self, start: usize, old: usize, new: usize) -> bool {
        let next = start + old;
        let need = new - old;
        match self.free.get(&next) {
            Some(&len) if len >= need => {
                self.free.remove(&next);
                if len > need {
                    self.free.insert(next + need, len - need);
                }
                true
            }
            _ => false,
        }
    }

    /// Returns `[start, start+n)` to the free list, merging with free neighbours.
    pub fn free(&mut self, start: usize, n: usize) {
        if n == 0 {
            return;
        }
        let (mut start, mut n) = (start, n);
        if let Some((&ps, &pl)) = self.free.range(..start).next_back()
            && ps + pl == start
        {
            self.free.remove(&ps);
            start = ps;
            n += pl;
        }
        if let Some(nl) = self.free.remove(&(start + n)) {
            n += nl;
        }
        self.free.insert(start, n);
    }

    /// Number of free pages.
    #[cfg(test)]
    pub fn free_pages(&self) -> usize {
        self.free.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn alloc_free_coalesce_grow() {
        let mut e = Extents::new(10);
        let a = e.alloc(3).unwrap();
        let b = e.alloc(3).unwrap();
        assert_eq!((a, b), (0, 3));
        assert!(!e.grow(a, 3, 4), "b follows a");
        assert!(e.grow(b, 3, 7));
        assert_eq!(e.alloc(1), None);
        e.free(a, 3);
        e.free(b, 7);
        assert_eq!(e.free_pages(), 10);
        assert_eq!(e.alloc(10), Some(0), "coalesced");
    }

    proptest! {
        /// Random alloc/free sequences never hand out overlapping ranges and conserve pages.
        #[test]
        fn never_overlaps(ops in proptest::collection::vec((1usize..8, any::<bool>()), 1..200)) {
            let total = 64;
            let mut e = Extents::new(total);
            let mut live: Vec<(usize, usize)> = vec![];
            for (n, free) in ops {
                if free && !live.is_empty() {
                    let (s, l) = live.swap_remove(n % live.len());
                    e.free(s, l);
                } else if let Some(s) = e.alloc(n) {
                    for &(t, l) in &live {
                        prop_assert!(s + n <= t || t + l <= s);
                    }
                    prop_assert!(s + n <= total);
                    live.push((s, n));
                }
                let used: usize = live.iter().map(|&(_, l)| l).sum();
                prop_assert_eq!(e.free_pages() + used, total);
            }
        }
    }
}
