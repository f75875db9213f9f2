//! Batched and pipelined lookups: the misses of one or more batches travel in one request.

use std::collections::VecDeque;
use std::hash::Hash;
use std::ops::Range;
use std::sync::atomic::Ordering;

use bytemuck::Pod;
use farmem_proto::agent::{AgentDecodeError, Reader, Writer, op};

use super::FarHashMap;
use super::decode;
use crate::backend::PendingCompute;
use crate::containers::error::{ContainerError, Result};

/// A pipelined request closes after this many keys per wanted miss even with fewer misses, so
/// that batches with (almost) only hits are not held back for long.
const GROUP_KEYS_PER_MISS: usize = 8;

/// The encoded [`HtKeysArgs`](farmem_proto::agent::HtKeysArgs) of `keys` in `table`, written
/// straight from the keys.
fn encode_keys<K: Pod>(table: u64, keys: &[K]) -> Vec<u8> {
    let mut w = Writer::from_vec(Vec::with_capacity(12 + keys.len() * (4 + size_of::<K>())));
    w.u64(table).count(keys.len());
    for k in keys {
        w.byte_string(bytemuck::bytes_of(k));
    }
    w.buf
}

/// The values of an encoded [`HtValues`](farmem_proto::agent::HtValues) answer, borrowed from
/// it (`None`: absent).
fn parse_values(out: &[u8]) -> std::result::Result<Vec<Option<&[u8]>>, AgentDecodeError> {
    let mut r = Reader::new(out);
    let n = r.count(1)?;
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        values.push(match r.u8()? {
            0 | 2 => None,
            1 => Some(r.byte_string()?),
            tag => return Err(AgentDecodeError::BadTag { what: "found", tag }),
        });
    }
    r.finish()?;
    Ok(values)
}

/// Lookups of one or more batches whose misses travel in one request.
struct Group<K, V> {
    /// Each batch's values (misses still `None`) and its range in `missing`.
    batches: Vec<(Vec<Option<V>>, Range<usize>)>,
    /// The missed keys of all batches, in order.
    missing: Vec<K>,
    /// Their hashes.
    hashes: Vec<u64>,
    /// For each missed key, its position in its batch.
    slots: Vec<usize>,
    /// The request, once submitted.
    pending: Option<PendingCompute>,
}

/// The groups of a pipelined lookup still in flight; dropping it abandons them.
struct InFlight<'a, K: Pod + Hash + Eq + Send + Sync, V: Pod + Send + Sync> {
    map: &'a FarHashMap<K, V>,
    groups: VecDeque<Group<K, V>>,
}

impl<K: Pod + Hash + Eq + Send + Sync, V: Pod + Send + Sync> Drop for InFlight<'_, K, V> {
    fn drop(&mut self) {
        while let Some(g) = self.groups.pop_front() {
            self.map.abandon_group(g);
        }
    }
}

/// A [`FarHashMap::get_many_submit`] lookup whose misses are in flight.
#[must_use = "wait for the lookup to learn the values"]
pub struct PendingLookup<'a, K: Pod + Hash + Eq + Send + Sync, V: Pod + Send + Sync> {
    map: &'a FarHashMap<K, V>,
    group: Option<Group<K, V>>,
}

impl<K: Pod + Hash + Eq + Send + Sync, V: Pod + Send + Sync> std::fmt::Debug
    for PendingLookup<'_, K, V>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLookup")
            .field("in_flight", &self.group.is_some())
            .finish_non_exhaustive()
    }
}

impl<K: Pod + Hash + Eq + Send + Sync, V: Pod + Send + Sync> PendingLookup<'_, K, V> {
    /// Waits for the misses and returns every key's value, in the order of the keys.
    ///
    /// # Errors
    /// The backend's or the agent's error.
    pub fn wait(mut self) -> Result<Vec<Option<V>>> {
        let g = self
            .group
            .take()
            .ok_or_else(|| ContainerError::Agent("lookup already collected".into()))?;
        let mut out = None;
        self.map.finish_group(g, |_, v| out = Some(v))?;
        out.ok_or_else(|| ContainerError::Agent("lookup lost its batch".into()))
    }
}

impl<K: Pod + Hash + Eq + Send + Sync, V: Pod + Send + Sync> Drop for PendingLookup<'_, K, V> {
    fn drop(&mut self) {
        if let Some(g) = self.group.take() {
            self.map.abandon_group(g);
        }
    }
}

impl<K, V> Default for Group<K, V> {
    fn default() -> Self {
        Self {
            batches: Vec::new(),
            missing: Vec::new(),
            hashes: Vec::new(),
            slots: Vec::new(),
            pending: None,
        }
    }
}

impl<K: Pod + Hash + Eq + Send + Sync, V: Pod + Send + Sync> FarHashMap<K, V> {
    /// Looks every key up; all misses are fetched in one round trip.
    ///
    /// # Errors
    /// The backend's or the agent's error.
    pub fn get_many(&self, keys: &[K]) -> Result<Vec<Option<V>>> {
        self.get_many_submit(keys).wait()
    }

    /// Starts [`get_many`](Self::get_many) without waiting: the hits are looked up now and
    /// the misses' request is sent; [`PendingLookup::wait`] collects the values. The calling
    /// thread can meanwhile do other work, e.g. fetch other far data, so the round trips
    /// overlap. Dropping the lookup abandons it.
    ///
    /// ```
    /// use farmem::{Runtime, RuntimeConfig};
    /// use farmem::containers::{FarHashMap, HashMapConfig};
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    /// let m: FarHashMap<u32, u32> = FarHashMap::new(&rt, HashMapConfig::new(1024)).unwrap();
    /// m.insert_many(&[(1, 10), (2, 20)]).unwrap();
    /// let pending = m.get_many_submit(&[2, 3, 1]);
    /// // ... other work while the request is in flight ...
    /// assert_eq!(pending.wait().unwrap(), vec![Some(20), None, Some(10)]);
    /// ```
    pub fn get_many_submit(&self, keys: &[K]) -> PendingLookup<'_, K, V> {
        let mut g = Group::default();
        self.add_batch(&mut g, keys);
        self.submit(&mut g);
        PendingLookup {
            map: self,
            group: Some(g),
        }
    }

    /// Looks up a stream of batches with several requests in flight, calling `f(i, values)` for
    /// batch `i` in order (`values[j]` is the value of `batch[j]`), as `get_many` on each batch
    /// would.
    ///
    /// Hits are answered locally; the misses of consecutive batches are fetched together, one
    /// request per [`HashMapConfig::pipeline_misses`](super::HashMapConfig::pipeline_misses) misses (or per eight times as many keys),
    /// and up to
    /// [`HashMapConfig::pipeline_depth`](super::HashMapConfig::pipeline_depth) requests are in flight while the next batches' hits
    /// are looked up, so the caller's thread never waits for a round trip it could overlap.
    ///
    /// ```
    /// use farmem::{Runtime, RuntimeConfig};
    /// use farmem::containers::{FarHashMap, HashMapConfig};
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    /// let m: FarHashMap<u32, u32> = FarHashMap::new(&rt, HashMapConfig::new(1024)).unwrap();
    /// for k in 0..500 {
    ///     m.insert(k, k * 2).unwrap();
    /// }
    /// let keys: Vec<u32> = (0..600).collect();
    /// let mut found = 0;
    /// m.get_many_pipelined(keys.chunks(64), |i, values| {
    ///     assert_eq!(values[0], (i < 8).then_some(i as u32 * 128));
    ///     found += values.iter().flatten().count();
    /// })
    /// .unwrap();
    /// assert_eq!(found, 500);
    /// ```
    ///
    /// # Errors
    /// The backend's or the agent's error; `f` has seen the batches before the failed one.
    ///
    /// `f` must not change the map: the hits of later batches are looked up, and their misses
    /// requested, before `f` sees earlier batches, so such a change may not show in them.
    ///
    /// # Panics
    /// Only if `f` panics; the panic propagates after the lookups still in flight are
    /// abandoned, so the map stays usable.
    pub fn get_many_pipelined<'k>(
        &self,
        batches: impl IntoIterator<Item = &'k [K]>,
        mut f: impl FnMut(usize, Vec<Option<V>>),
    ) -> Result<()>
    where
        K: 'k,
    {
        let mut batches = batches.into_iter().peekable();
        // Groups still in flight are abandoned however this function ends, a panic in `f`
        // included, so no shard is left with lookups counted as in flight.
        let mut inflight = InFlight {
            map: self,
            groups: VecDeque::new(),
        };
        let inflight = &mut inflight.groups;
        let mut next = 0;
        loop {
            let mut g = Group::default();
            let mut keys = 0;
            while g.missing.len() < self.pipeline_misses
                && keys < GROUP_KEYS_PER_MISS * self.pipeline_misses
                && let Some(b) = batches.next()
            {
                self.add_batch(&mut g, b);
                keys += b.len();
                // Hits-only groups are delivered as they come (nothing to overlap with).
                if g.missing.is_empty() && inflight.is_empty() {
                    break;
                }
            }
            let more = batches.peek().is_some();
            if !g.batches.is_empty() {
                self.submit(&mut g);
                inflight.push_back(g);
            }
            if inflight.len() >= self.pipeline_depth || (!more && !inflight.is_empty()) {
                let Some(done) = inflight.pop_front() else {
                    continue;
                };
                if let Err(e) = self.finish_group(done, |_, v| {
                    f(next, v);
                    next += 1;
                }) {
                    break Err(e);
                }
            } else if !more {
                break Ok(());
            }
        }
    }

    /// Looks `keys` up locally into a new batch of `g`; misses are added to `g`'s request.
    fn add_batch(&self, g: &mut Group<K, V>, keys: &[K]) {
        let mut out = vec![None; keys.len()];
        let before = g.missing.len();
        if let [k] = keys {
            // One key: no grouping.
            let h = self.hash(k);
            let mut sh = self.shards[self.shard_of(h)].lock();
            match sh.hit(k, h) {
                Some(v) => {
                    sh.hits += 1;
                    out[0] = Some(v);
                }
                None => {
                    sh.misses += 1;
                    sh.inflight += 1;
                    g.missing.push(*k);
                    g.hashes.push(h);
                    g.slots.push(0);
                }
            }
            drop(sh);
            g.batches.push((out, before..g.missing.len()));
            return;
        }
        // Shard by shard, one lock each; the sets of all keys were prefetched while grouping,
        // so their cache misses overlap instead of queueing.
        let grouped = self.group_by_shard(keys.iter().copied());
        for (s, idx) in grouped.shards() {
            let mut sh = self.shards[s].lock();
            let mut missed = 0;
            for &i in idx {
                let i = i as usize;
                let k = &keys[i];
                if let Some(v) = sh.hit(k, grouped.hashes[i]) {
                    out[i] = Some(v);
                } else {
                    missed += 1;
                    g.missing.push(*k);
                    g.hashes.push(grouped.hashes[i]);
                    g.slots.push(i);
                }
            }
            sh.inflight += missed;
            sh.hits += (idx.len() - missed) as u64;
            sh.misses += missed as u64;
        }
        g.batches.push((out, before..g.missing.len()));
    }

    /// Sends `g`'s request (if it has misses).
    fn submit(&self, g: &mut Group<K, V>) {
        if g.missing.is_empty() {
            return;
        }
        let args = encode_keys(self.table, &g.missing);
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        g.pending = Some(
            self.rt
                .backend()
                .submit_compute(self.table, op::HT_GET, &args),
        );
    }

    /// Waits for `g`'s answer, caches what it brought and hands every batch to `f` in order.
    fn finish_group(
        &self,
        mut g: Group<K, V>,
        mut f: impl FnMut(usize, Vec<Option<V>>),
    ) -> Result<()> {
        if g.missing.is_empty() {
            for (i, (out, _)) in g.batches.into_iter().enumerate() {
                f(i, out);
            }
            return Ok(());
        }
        let pending = match g.pending.take() {
            Some(p) => p,
            None => {
                self.submit(&mut g);
                g.pending
                    .take()
                    .ok_or_else(|| ContainerError::Agent("not submitted".into()))?
            }
        };
        let out = match pending.wait() {
            Ok(out) => out,
            Err(e) => {
                self.abandon_group(g);
                return Err(e.into());
            }
        };
        let got = parse_values(&out)
            .map_err(ContainerError::from)
            .and_then(|values| match values.len() == g.missing.len() {
                true => Ok(values),
                false => Err(ContainerError::Agent("wrong number of values".into())),
            });
        let values = match got {
            Ok(v) => v,
            Err(e) => {
                self.abandon_group(g);
                return Err(e);
            }
        };
        // Every missed key of the group is admitted (ending its in-flight count) before `f`
        // sees any batch, so a panic in `f` leaves no shard waiting for these lookups.
        let mut first_err: Option<(usize, ContainerError)> = None;
        let mut values = values.into_iter();
        let mut slots = g.slots.iter();
        let mut outs = Vec::with_capacity(g.batches.len());
        for (b, (mut out, range)) in g.batches.into_iter().enumerate() {
            for (k, &h) in g.missing[range.clone()].iter().zip(&g.hashes[range]) {
                let v = match values.next().flatten() {
                    Some(bytes) => match decode::<V>(bytes) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            first_err.get_or_insert((b, e));
                            None
                        }
                    },
                    _ => None,
                };
                if let Some(&i) = slots.next() {
                    out[i] = v;
                }
                if let Err(e) = self.admit_clean(*k, h, v) {
                    first_err.get_or_insert((b, e));
                }
            }
            outs.push(out);
        }
        let deliver = first_err.as_ref().map_or(outs.len(), |(b, _)| *b);
        for (b, out) in outs.into_iter().take(deliver).enumerate() {
            f(b, out);
        }
        match first_err {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// Ends the in-flight lookups of a group whose answer will not be used.
    fn abandon_group(&self, g: Group<K, V>) {
        for (k, &h) in g.missing.iter().zip(&g.hashes) {
            // Caches nothing, so it cannot fail.
            let _ = self.admit_clean(*k, h, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::HashMapConfig;
    use crate::{Runtime, RuntimeConfig};

    fn in_flight(m: &FarHashMap<u64, u64>) -> usize {
        m.shards.iter().map(|s| s.lock().inflight).sum()
    }

    #[test]
    fn a_panicking_callback_leaves_no_lookup_in_flight() {
        let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
        let m: FarHashMap<u64, u64> = FarHashMap::new(&rt, HashMapConfig::new(4 << 10)).unwrap();
        m.insert_many(&(0..4096u64).map(|k| (k, k + 1)).collect::<Vec<_>>())
            .unwrap();
        let keys: Vec<u64> = (0..4096).collect();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            m.get_many_pipelined(keys.chunks(64), |i, _| {
                assert!(i < 3, "callback fails on batch {i}");
            })
        }));
        assert!(r.is_err(), "the callback should have panicked");
        assert_eq!(in_flight(&m), 0);
        // The map still answers, and caches again.
        let mut seen = 0;
        m.get_many_pipelined(keys.chunks(64), |_, v| {
            seen += v.iter().flatten().count();
        })
        .unwrap();
        assert_eq!(seen, 4096);
        assert_eq!(in_flight(&m), 0);
    }
}
