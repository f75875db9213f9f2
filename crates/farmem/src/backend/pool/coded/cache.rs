//! Ranges of spans decoded by degraded reads, kept for the reads that follow.
//!
//! A degraded read decodes its object's byte range of its span (see `read.rs`); the next reads
//! of that range (a hot object on a dead member) are served from here. Sealed
//! stripes never change (a write is a new version in another stripe, and stripe ids are never
//! reused), so an entry is never stale: it is only evicted, oldest first.

use std::collections::VecDeque;

use super::layout::StripeId;

/// Windows kept at most.
const ENTRIES: usize = 64;

/// Decoded windows: `(stripe, span, start offset in the span, bytes)`.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    windows: VecDeque<(StripeId, u8, u32, Vec<u8>)>,
}

impl Decoded {
    /// Bytes `[a, b)` of span `span` of stripe `sid`, if a window holds them.
    pub(crate) fn get(&self, sid: StripeId, span: u8, a: u32, b: u32) -> Option<Vec<u8>> {
        self.windows.iter().find_map(|(s, j, start, w)| {
            if *s != sid || *j != span || a < *start {
                return None;
            }
            let (lo, hi) = ((a - start) as usize, (b - start) as usize);
            w.get(lo..hi).map(<[u8]>::to_vec)
        })
    }

    /// Keeps window `bytes` starting at offset `start` of span `span` of stripe `sid`.
    pub(crate) fn put(&mut self, sid: StripeId, span: u8, start: u32, bytes: Vec<u8>) {
        if self.windows.len() >= ENTRIES {
            self.windows.pop_front();
        }
        self.windows.push_back((sid, span, start, bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_ranges_inside_a_window_and_forgets_the_oldest() {
        let mut d = Decoded::default();
        d.put(1, 2, 100, (0..50).collect());
        assert_eq!(d.get(1, 2, 110, 113), Some(vec![10, 11, 12]));
        assert_eq!(d.get(1, 2, 100, 150).map(|v| v.len()), Some(50));
        assert_eq!(d.get(1, 2, 99, 110), None, "starts before the window");
        assert_eq!(d.get(1, 2, 140, 151), None, "ends after it");
        assert_eq!(d.get(1, 3, 110, 113), None, "another span");
        assert_eq!(d.get(2, 2, 110, 113), None, "another stripe");
        for s in 0..ENTRIES as u64 {
            d.put(10 + s, 0, 0, vec![1]);
        }
        assert_eq!(d.get(1, 2, 110, 113), None, "evicted");
        assert_eq!(d.get(10 + ENTRIES as u64 - 1, 0, 0, 1), Some(vec![1]));
    }
}
