//! Compaction: reclaims the dead space of sealed stripes by writing their live objects again
//! (as new versions, only where still current) so that the old stripe dies and is freed.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use super::Engine;
use super::layout::{Key, Phase, SlotState, StripeId};
use crate::backend::ObjectId;

/// Stripes compacted per maintenance pass at most (the rest wait for the next pass, so the
/// application's requests interleave).
const STRIPES_PER_PASS: usize = 64;

impl Engine {
    /// Compacts while dead bytes exceed the slack, stripes with the most dead bytes first (at
    /// most [`STRIPES_PER_PASS`] unless `all`).
    ///
    /// A pass tries each stripe once: a stripe that cannot be compacted now (an object in it
    /// unreadable, a member full) waits for the next pass instead of being picked forever.
    pub(crate) fn compact(&self, all: bool) {
        let mut tried: HashSet<StripeId> = HashSet::new();
        while all || tried.len() < STRIPES_PER_PASS {
            let Some((sid, _)) = self.pick_victim(1.0, &tried) else {
                return;
            };
            self.compact_stripe(sid);
            tried.insert(sid);
        }
    }

    /// Compaction that keeps pace with the application: called after a write or free batch
    /// that left `created` new dead bytes in sealed stripes. While dead space is over the
    /// slack, the caller compacts stripes (most dead bytes first) until it has reclaimed at
    /// least as much as it created, so dead space never grows past the slack by more than one
    /// batch, whatever the write rate; the maintenance thread takes it back under the slack.
    pub(crate) fn compact_behind(&self, created: u64) {
        if !self.opts.compact_inline {
            if created > 0 {
                self.wake();
            }
            return;
        }
        let mut reclaimed = 0u64;
        let mut tried: HashSet<StripeId> = HashSet::new();
        while reclaimed < created.max(1) {
            let Some((sid, dead)) = self.pick_victim(1.0, &tried) else {
                return;
            };
            self.compact_stripe(sid);
            tried.insert(sid);
            reclaimed += dead.max(1);
        }
    }

    /// The sealed stripe with the most dead bytes (outside `tried`) and its dead bytes, when
    /// dead space is over `times` the slack.
    fn pick_victim(&self, times: f64, tried: &HashSet<StripeId>) -> Option<(StripeId, u64)> {
        let l = self.layout.read();
        let slack = (l.live_bytes as f64 * self.opts.compact_slack * times) as u64;
        if l.dead_bytes <= slack {
            return None;
        }
        l.stripes
            .iter()
            .filter(|(sid, st)| {
                st.phase == Phase::Sealed && !st.busy && st.dead_bytes > 0 && !tried.contains(*sid)
            })
            .max_by_key(|(_, st)| st.dead_bytes)
            .map(|(&sid, st)| (sid, st.dead_bytes))
    }

    /// Writes the live objects of stripe `sid` again; the stripe is freed when its last live
    /// object has a newer version.
    pub(crate) fn compact_stripe(&self, sid: StripeId) {
        let live: Vec<(ObjectId, Key)> = {
            let mut l = self.layout.write();
            let Some(st) = l.stripes.get_mut(&sid) else {
                return;
            };
            if st.busy || st.phase != Phase::Sealed {
                return;
            }
            st.busy = true;
            st.spans
                .iter()
                .flat_map(|sp| sp.slots.iter())
                .filter(|s| s.state == SlotState::Live)
                .map(|s| (s.id, s.key))
                .collect()
        };
        for chunk in live.chunks(256) {
            let ids: Vec<ObjectId> = chunk.iter().map(|c| c.0).collect();
            let keys: Vec<Key> = chunk.iter().map(|c| c.1).collect();
            // Objects freed meanwhile are simply not found: skip them one by one.
            let vals: Vec<Option<Vec<u8>>> = match self.get_many(&ids) {
                Ok(v) => v.into_iter().map(Some).collect(),
                Err(_) => ids.iter().map(|&id| self.get(id).ok()).collect(),
            };
            let mut items = Vec::with_capacity(ids.len());
            let mut conds = Vec::with_capacity(ids.len());
            for ((&id, &key), v) in ids.iter().zip(&keys).zip(&vals) {
                if let Some(v) = v {
                    items.push((id, v.as_slice()));
                    conds.push(key);
                }
            }
            if let Err(e) = self.write(&items, Some(&conds)) {
                tracing::warn!(error = %e, "coded pool: compaction write failed");
                break;
            }
        }
        let freed = {
            let mut l = self.layout.write();
            if let Some(st) = l.stripes.get_mut(&sid) {
                st.busy = false;
            }
            l.reap(sid)
        };
        if !freed.is_empty() {
            self.counters.compacted.fetch_add(1, Ordering::Relaxed);
        }
        self.free_keys(freed);
    }
}
