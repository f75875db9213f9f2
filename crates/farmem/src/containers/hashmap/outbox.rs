//! Each shard's outbox: entries newer than the server's copy that are not cached in the ways,
//! waiting to be written back or on their way.
//!
//! Entries are written back in batches, several requests in flight per shard, and stay here
//! (answering lookups: read-your-writes) until the server has acknowledged them. A key is never
//! in two requests at once: the requests of different threads may run in any order on the
//! server, so a newer value of a key in flight waits here until the older one is acknowledged.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use crate::backend::PendingCompute;

use super::cache::FastState;

/// One entry of an outbox.
#[derive(Clone, Copy, Debug)]
pub(super) struct Out<V> {
    /// The newest value not cached in the ways.
    pub(super) value: V,
    /// The request carrying an older (or this) value, 0 if none.
    pub(super) flight: u32,
    /// Whether `value` still has to be sent.
    pub(super) unsent: bool,
}

/// A write-back request in flight.
pub(super) struct Flight<K> {
    pub(super) seq: u32,
    pub(super) keys: Vec<K>,
    pub(super) pending: PendingCompute,
}

/// A shard's outbox.
pub(super) struct Outbox<K, V> {
    pub(super) entries: HashMap<K, Out<V>, FastState>,
    /// Entries with `unsent` set.
    pub(super) unsent: usize,
    /// Requests in flight, oldest first.
    pub(super) flights: VecDeque<Flight<K>>,
    next_seq: u32,
}

impl<K: Hash + Eq + Copy, V: Copy> Outbox<K, V> {
    pub(super) fn new(hasher: FastState) -> Self {
        Self {
            entries: HashMap::with_hasher(hasher),
            unsent: 0,
            flights: VecDeque::new(),
            next_seq: 0,
        }
    }

    /// `k`'s newest value here.
    #[inline]
    pub(super) fn get(&self, k: &K) -> Option<V> {
        if self.entries.is_empty() {
            return None;
        }
        self.entries.get(k).map(|o| o.value)
    }

    /// Queues `v` as `k`'s newest value to write back.
    pub(super) fn push(&mut self, k: K, v: V) {
        match self.entries.get_mut(&k) {
            Some(o) => {
                o.value = v;
                if !o.unsent {
                    o.unsent = true;
                    self.unsent += 1;
                }
            }
            None => {
                self.entries.insert(
                    k,
                    Out {
                        value: v,
                        flight: 0,
                        unsent: true,
                    },
                );
                self.unsent += 1;
            }
        }
    }

    /// `k` is cached (dirty) in the ways again, or no longer exists: its unsent value is
    /// superseded. Returns the value it had here and whether an older one is still in flight.
    pub(super) fn supersede(&mut self, k: &K) -> Option<(V, bool)> {
        if self.entries.is_empty() {
            return None;
        }
        let o = self.entries.get_mut(k)?;
        let v = o.value;
        if o.unsent {
            o.unsent = false;
            self.unsent -= 1;
        }
        if o.flight == 0 {
            self.entries.remove(k);
            return Some((v, false));
        }
        Some((v, true))
    }

    /// Takes up to `max` unsent entries whose keys are not in flight, marking them as in
    /// flight under a new sequence number.
    pub(super) fn take_batch(&mut self, max: usize) -> (u32, Vec<(K, V)>) {
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        let seq = self.next_seq;
        let mut batch = Vec::with_capacity(self.unsent.min(max));
        for (k, o) in &mut self.entries {
            if batch.len() == max {
                break;
            }
            if o.unsent && o.flight == 0 {
                o.unsent = false;
                o.flight = seq;
                batch.push((*k, o.value));
            }
        }
        self.unsent -= batch.len();
        (seq, batch)
    }

    /// The server acknowledged (`ok`) or failed request `seq` of `keys`: acknowledged values
    /// leave (unless a newer one waits), failed ones are sent again later.
    pub(super) fn landed(&mut self, seq: u32, keys: &[K], ok: bool) {
        for k in keys {
            let Some(o) = self.entries.get_mut(k) else {
                continue;
            };
            if o.flight != seq {
                continue;
            }
            o.flight = 0;
            if ok {
                if !o.unsent {
                    self.entries.remove(k);
                }
            } else if !o.unsent {
                o.unsent = true;
                self.unsent += 1;
            }
        }
    }

    /// Entries here.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbox_keeps_values_until_acknowledged_and_never_sends_a_key_twice_at_once() {
        let mut o: Outbox<u64, u64> = Outbox::new(FastState::random());
        o.push(1, 10);
        o.push(2, 20);
        let (s1, b1) = o.take_batch(10);
        assert_eq!(b1.len(), 2);
        assert_eq!(o.unsent, 0);
        // A newer value of a key in flight waits; lookups see it.
        o.push(1, 11);
        assert_eq!(o.get(&1), Some(11));
        let (_, b2) = o.take_batch(10);
        assert!(b2.is_empty());
        // The first request fails: both values go again (the newest of key 1).
        o.landed(s1, &[1, 2], false);
        assert_eq!(o.unsent, 2);
        let (s3, mut b3) = o.take_batch(10);
        b3.sort_unstable();
        assert_eq!(b3, vec![(1, 11), (2, 20)]);
        // Re-cached dirty while in flight: superseded but kept until acknowledged.
        assert_eq!(o.supersede(&2), Some((20, true)));
        assert_eq!(o.get(&2), Some(20));
        o.landed(s3, &[1, 2], true);
        assert_eq!(o.len(), 0);
        assert_eq!(o.get(&1), None);
        // An unsent entry superseded leaves at once.
        o.push(3, 30);
        assert_eq!(o.supersede(&3), Some((30, false)));
        assert_eq!((o.len(), o.unsent), (0, 0));
    }
}
