//! The read path: one request to the object's member; the client's copy of an unsealed stripe;
//! or a degraded read that decodes the object's byte range from `k` other spans.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::layout::{Key, PARITY_PAGE, Phase, SlotState, Target, parity_pages};
use super::{Demand, Engine};
use crate::backend::PendingGets;
use crate::backend::pool::fanout::fan_out;
use crate::backend::pool::member::is_member_failure;
use crate::backend::pool::table::Ix;
use crate::backend::{BackendError, ObjectId};

/// Rounds of lookup and read before giving up (objects move under compaction and repair).
const ROUNDS: usize = 6;
/// How long a read keeps trying past [`ROUNDS`] while every attempt ends in a retry (members
/// silent but not yet declared down: a degraded read that asks a silent member plans again),
/// so that a read waits out the detection of silent members instead of failing.
const RETRY_FOR: Duration = Duration::from_secs(5);

/// What a degraded read fetches from one member.
#[derive(Debug)]
enum Fetch {
    /// Slots of a data span overlapping the range: (key, offset in span, length).
    Data(Vec<(Key, u32, u32)>),
    /// Pages `pages` of a parity span whose first page has key `first`.
    Parity {
        first: Key,
        pages: std::ops::Range<usize>,
    },
}

/// Nanoseconds of `d`, saturated.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// How one attempt at a read ended when it did not return the object.
enum Miss {
    /// Something moved or failed: look the object up again.
    Again,
    /// For good.
    Fail(BackendError),
}

/// The bytes `[off, off + len)` of a span from the objects `vals` fetched for `f` (zero where
/// nothing lies: padding).
fn cut_range(f: &Fetch, vals: Vec<Vec<u8>>, off: u32, len: usize) -> Vec<u8> {
    let (a, b) = (off as usize, off as usize + len);
    let mut v = vec![0u8; len];
    match f {
        Fetch::Parity { pages, .. } => {
            // The pages laid end to end from page `pages.start` on.
            let mut at = pages.start * PARITY_PAGE;
            for p in &vals {
                let (lo, hi) = (at.max(a), (at + p.len()).min(b));
                if lo < hi {
                    v[lo - a..hi - a].copy_from_slice(&p[lo - at..hi - at]);
                }
                at += p.len();
            }
        }
        Fetch::Data(slots) => {
            for ((_, so, _), val) in slots.iter().zip(vals) {
                // Overlap of [so, so + val.len()) with [a, b).
                let (so, sl) = (*so as usize, val.len());
                let (lo, hi) = (so.max(a), (so + sl).min(b));
                if lo < hi {
                    v[lo - a..hi - a].copy_from_slice(&val[lo - so..hi - so]);
                }
            }
        }
    }
    v
}

impl Engine {
    /// Reads object `id`.
    pub(crate) fn get(&self, id: ObjectId) -> Result<Vec<u8>, BackendError> {
        let mut last = None;
        let mut started = Instant::now();
        for round in 0.. {
            if round >= ROUNDS {
                if started.elapsed() >= RETRY_FOR {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let Some(t) = self.layout.read().target(id) else {
                return Err(BackendError::NotFound(id));
            };
            let members = self.pool.members();
            let m = &members[usize::from(t.member)];
            let mut silent = false;
            if m.serves() {
                m.inflight.fetch_add(1, Ordering::Relaxed);
                let r = m.backend.get(t.key);
                m.inflight.fetch_sub(1, Ordering::Relaxed);
                m.note_read(&r);
                match r {
                    Ok(v) => return Ok(v),
                    Err(e) if is_member_failure(&e) => {
                        self.pool.mark_down(&members, t.member, &e);
                        self.wake();
                    }
                    // Not yet there (a write in flight) or just moved: the copy, or look again.
                    Err(BackendError::NotFound(_)) => {}
                    // Silent past the read patience (busy, or dying): decode from the others,
                    // as a replicated pool asks another replica; the next round asks again.
                    Err(BackendError::Silent { .. }) => silent = true,
                    Err(e) => return Err(e),
                }
            }
            if let Some(v) = self.read_copy(&t) {
                return Ok(v);
            }
            match self.degraded(id, &t) {
                Ok(v) => return Ok(v),
                Err(Miss::Again) => {}
                // Too few other spans to decode from, but the object's own member is only slow
                // (a busy server past the read patience), not declared down: ask it again, for
                // as long as it is not declared down (its transport's silence detection ends
                // that), as a replicated pool does when every replica is silent.
                Err(Miss::Fail(BackendError::Unavailable { .. })) if silent => {
                    started = Instant::now();
                }
                Err(Miss::Fail(e)) => last = Some(e),
            }
            if last.is_some() && self.layout.read().key_of(id) == Some(t.key) {
                break;
            }
        }
        Err(last.unwrap_or(BackendError::Unavailable {
            id,
            servers: "its stripe keeps changing".into(),
        }))
    }

    /// Reads object `id` into `buf`, which must be exactly its length: straight into `buf`
    /// when its member serves (no copy), else as [`Engine::get`] does.
    pub(crate) fn get_into(&self, id: ObjectId, buf: &mut [u8]) -> Result<(), BackendError> {
        if let Some(t) = self.layout.read().target(id)
            && t.len == buf.len()
        {
            let members = self.pool.members();
            let m = &members[usize::from(t.member)];
            if m.serves() {
                m.inflight.fetch_add(1, Ordering::Relaxed);
                let r = m.backend.get_into(t.key, buf);
                m.inflight.fetch_sub(1, Ordering::Relaxed);
                m.note_read(&r);
                if r.is_ok() {
                    return Ok(());
                }
                // Anything else (a failure, a version moved meanwhile): the full read path,
                // which notes and handles it.
            }
        }
        let v = self.get(id)?;
        if v.len() != buf.len() {
            return Err(BackendError::SizeMismatch {
                id,
                expected: buf.len() as u64,
                actual: v.len() as u64,
            });
        }
        buf.copy_from_slice(&v);
        Ok(())
    }

    /// Reads many objects: one request per member for those whose member serves.
    pub(crate) fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>, BackendError> {
        let targets: Vec<Option<Target>> = {
            let l = self.layout.read();
            ids.iter().map(|&id| l.target(id)).collect()
        };
        let members = self.pool.members();
        let mut groups: Vec<(Ix, Vec<usize>)> = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            if let Some(t) = t
                && members[usize::from(t.member)].serves()
            {
                match groups.iter_mut().find(|g| g.0 == t.member) {
                    Some(g) => g.1.push(i),
                    None => groups.push((t.member, vec![i])),
                }
            }
        }
        let mut out: Vec<Option<Vec<u8>>> = vec![None; ids.len()];
        let parallel = groups.len() > 1;
        let results = fan_out(&members, groups, parallel, &|m, idx: Vec<usize>| {
            let keys: Vec<Key> = idx
                .iter()
                .filter_map(|&i| targets[i].map(|t| t.key))
                .collect();
            (m.backend.get_many(&keys), idx)
        });
        for (ix, (r, idx)) in results {
            match r {
                Ok(vals) if vals.len() == idx.len() => {
                    for (i, v) in idx.into_iter().zip(vals) {
                        out[i] = Some(v);
                    }
                }
                Err(e) if is_member_failure(&e) => {
                    self.pool.mark_down(&members, ix, &e);
                    self.wake();
                }
                _ => {}
            }
        }
        out.into_iter()
            .zip(ids)
            .map(|(o, &id)| match o {
                Some(v) => Ok(v),
                None => self.get(id),
            })
            .collect()
    }

    /// The object from the client's copy of its unsealed stripe, if it is there.
    fn read_copy(&self, t: &Target) -> Option<Vec<u8>> {
        let l = self.layout.read();
        let (_, sp, sl) = l.slot(t.loc)?;
        if sl.key != t.key {
            return None;
        }
        let buf = sp.buf.as_ref()?;
        buf.get(sl.off as usize..(sl.off + sl.len) as usize)
            .map(<[u8]>::to_vec)
    }

    /// Decodes the object at `t` from the same byte range of `k` other spans of its stripe.
    fn degraded(&self, id: ObjectId, t: &Target) -> Result<Vec<u8>, Miss> {
        if t.len == 0 {
            return Ok(Vec::new());
        }
        let members = self.pool.members();
        let serving = |ix: Ix| members.get(usize::from(ix)).is_some_and(|m| m.serves());
        // Plan under the lock: which spans to fetch, and what of each.
        let (k, total, lost, work, off, end) = {
            let l = self.layout.read();
            let Some((st, _, sl)) = l.slot(t.loc) else {
                return Err(Miss::Again);
            };
            if sl.key != t.key || st.phase != Phase::Sealed {
                return Err(Miss::Again);
            }
            // Only the object's own byte range, of every span.
            let (a, b) = (sl.off, sl.off + sl.len);
            if let Some(v) = self.decoded.lock().get(t.loc.stripe, t.loc.span, a, b) {
                return Ok(v);
            }
            let k = st.spans.len();
            let total = k + st.parity.len();
            let mut work: Vec<(Ix, (usize, Fetch))> = Vec::new();
            let mut lost = 0;
            for (j, sp) in st.spans.iter().enumerate() {
                if j == usize::from(t.loc.span) || !serving(sp.member) {
                    lost += 1;
                    continue;
                }
                let slots = sp
                    .slots
                    .iter()
                    .filter(|s| s.state != SlotState::Gone && s.off < b && s.off + s.len > a)
                    .map(|s| (s.key, s.off, s.len))
                    .collect();
                work.push((sp.member, (j, Fetch::Data(slots))));
            }
            let mut need = lost;
            for (p, &(ix, key)) in st.parity.iter().enumerate() {
                if need > 0 && serving(ix) {
                    let pages = (a as usize / PARITY_PAGE)
                        ..(b as usize)
                            .div_ceil(PARITY_PAGE)
                            .min(parity_pages(st.shard_len));
                    work.push((ix, (k + p, Fetch::Parity { first: key, pages })));
                    need -= 1;
                }
            }
            if need > 0 {
                let names: Vec<&str> = st
                    .members()
                    .iter()
                    .filter(|&&ix| !serving(ix))
                    .map(|&ix| members[usize::from(ix)].name.as_str())
                    .collect();
                return Err(Miss::Fail(BackendError::Unavailable {
                    id,
                    servers: names.join(", "),
                }));
            }
            (k, total, lost, work, a, b)
        };
        let len = (end - off) as usize;
        let began = Instant::now();
        let _demand = Demand::enter(self);
        if self.rebuilding.load(Ordering::Relaxed) > 0 {
            self.counters.during_rebuild.fetch_add(1, Ordering::Relaxed);
        }
        // Every request in flight at once (one round trip), then each answer cut to the range.
        let pending: Vec<(Ix, usize, Fetch, PendingGets)> = work
            .into_iter()
            .map(|(ix, (j, f))| {
                let m = &members[usize::from(ix)];
                let p = match &f {
                    Fetch::Parity { first, pages } => {
                        let keys: Vec<Key> = pages.clone().map(|i| first + i as Key).collect();
                        m.backend.submit_get_many(&keys)
                    }
                    // Nothing of this span overlaps the range: padding, zeros.
                    Fetch::Data(slots) if slots.is_empty() => PendingGets::ready(Ok(Vec::new())),
                    Fetch::Data(slots) => {
                        let keys: Vec<Key> = slots.iter().map(|s| s.0).collect();
                        m.backend.submit_get_many(&keys)
                    }
                };
                (ix, j, f, p)
            })
            .collect();
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; total];
        // An early return drops the requests still in flight (their answers are discarded).
        for (ix, j, f, p) in pending {
            match p.wait().map(|vals| cut_range(&f, vals, off, len)) {
                Ok(v) => shards[j] = Some(v),
                Err(e) if is_member_failure(&e) => {
                    self.pool.mark_down(&members, ix, &e);
                    self.wake();
                    return Err(Miss::Again);
                }
                // A slot freed by compaction or a moved span, or a silent member: plan again.
                Err(BackendError::NotFound(_) | BackendError::Silent { .. }) => {
                    return Err(Miss::Again);
                }
                Err(e) => return Err(Miss::Fail(e)),
            }
        }
        debug_assert!(lost >= 1);
        let fetched = Instant::now();
        self.codec
            .reconstruct_data(k, &mut shards)
            .map_err(|e| Miss::Fail(e.into()))?;
        let decoded = Instant::now();
        // The stripe may have changed meanwhile (its object overwritten: then the caller looks
        // again); the bytes decoded are those of version `t.key`, which is immutable.
        let v = shards[usize::from(t.loc.span)]
            .take()
            .filter(|v| v.len() == t.len)
            .ok_or(Miss::Again)?;
        self.decoded
            .lock()
            .put(t.loc.stripe, t.loc.span, off, v.clone());
        let c = &self.counters;
        c.degraded_reads.fetch_add(1, Ordering::Relaxed);
        c.fetch_ns
            .fetch_add(nanos(fetched - began), Ordering::Relaxed);
        c.decode_ns
            .fetch_add(nanos(decoded - fetched), Ordering::Relaxed);
        c.read_ns
            .fetch_add(nanos(began.elapsed()), Ordering::Relaxed);
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::backend::pool::{CodingOptions, Fault, FaultyBackend, PoolBackend, PoolConfig};
    use crate::backend::{Backend, EmbeddedStore, Redundancy};

    fn value(id: u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (id as usize * 131 + i * 7 + (i >> 8)) as u8)
            .collect()
    }

    #[test]
    fn cut_range_keeps_exactly_the_bytes_under_the_range() {
        // Slots at 0..10 and 10..25 of a data span; the range 5..20.
        let f = Fetch::Data(vec![(1, 0, 10), (2, 10, 15)]);
        let vals = vec![(0..10).collect::<Vec<u8>>(), (10..25).collect()];
        assert_eq!(cut_range(&f, vals, 5, 15), (5..20).collect::<Vec<u8>>());
        // Past the last slot: padding, zeros.
        let f = Fetch::Data(vec![(1, 0, 4)]);
        assert_eq!(cut_range(&f, vec![vec![9; 4]], 2, 4), vec![9, 9, 0, 0]);
        // Parity pages 1 and 2 of a span; the range straddles them.
        let f = Fetch::Parity {
            first: 7,
            pages: 1..3,
        };
        let pages = vec![vec![1u8; PARITY_PAGE], vec![2u8; PARITY_PAGE]];
        let got = cut_range(&f, pages, (2 * PARITY_PAGE - 3) as u32, 6);
        assert_eq!(got, vec![1, 1, 1, 2, 2, 2]);
    }

    #[test]
    fn a_degraded_read_decodes_exactly_its_objects_bytes() {
        let stores: Vec<Arc<FaultyBackend>> = (0..6)
            .map(|i| {
                Arc::new(FaultyBackend::new(
                    Arc::new(EmbeddedStore::new()),
                    format!("s{i}"),
                ))
            })
            .collect();
        let members = stores
            .iter()
            .map(|s| s.clone() as Arc<dyn Backend>)
            .collect();
        let cfg = PoolConfig::new(Redundancy::coded(4, 2)).coding(
            CodingOptions::default()
                .span_bytes(64 << 10)
                .seal_after(Duration::from_millis(20)),
        );
        let pool = PoolBackend::new(members, cfg).unwrap();
        // Sizes that leave the slots of the spans unaligned with each other and with the
        // parity pages, some larger than a page.
        let objs: Vec<(u64, Vec<u8>)> = (0..300)
            .map(|id| (id, value(id, 1 + (id as usize * 977) % 20_000)))
            .collect();
        for chunk in objs.chunks(30) {
            let items: Vec<(u64, &[u8])> = chunk.iter().map(|(i, v)| (*i, v.as_slice())).collect();
            pool.put_many(&items).unwrap();
        }
        for _ in 0..20 {
            if pool.repair_now() == 0 {
                break;
            }
        }
        let engine = pool.coded().unwrap();
        stores[2].set(Fault::Down);
        let mut decoded = 0;
        for (id, want) in &objs {
            let t = engine.layout.read().target(*id).unwrap();
            // Whichever member holds it (the victim, or a substitute after a rebuild), the
            // decode from the others gives the same bytes.
            match engine.degraded(*id, &t) {
                Ok(got) => {
                    assert_eq!(got.len(), want.len(), "object {id}");
                    for (i, (g, w)) in got.iter().zip(want).enumerate() {
                        assert_eq!(g, w, "object {id}, byte {i}");
                    }
                    decoded += 1;
                }
                Err(Miss::Again) => {}
                Err(Miss::Fail(e)) => panic!("object {id}: {e}"),
            }
            assert_eq!(
                &pool.get(*id).unwrap(),
                want,
                "object {id} through the pool"
            );
        }
        assert!(decoded > objs.len() / 2, "{decoded} decoded");
    }
}
