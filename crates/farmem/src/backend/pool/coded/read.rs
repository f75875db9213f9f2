//! The read path: one request to the object's member; the client's copy of an unsealed stripe;
//! or a degraded read that decodes the object's byte range from `k` other spans.

use std::sync::atomic::Ordering;

use super::Engine;
use super::layout::{Key, Phase, SlotState, Target};
use crate::backend::pool::fanout::fan_out;
use crate::backend::pool::member::is_member_failure;
use crate::backend::pool::table::Ix;
use crate::backend::{BackendError, ObjectId};

/// Bytes a degraded read fetches from all members together, above which it fetches in parallel.
const PARALLEL_BYTES: usize = 64 << 10;

/// Rounds of lookup and read before giving up (objects move under compaction and repair).
const ROUNDS: usize = 6;

/// What a degraded read fetches from one member.
#[derive(Debug)]
enum Fetch {
    /// Slots of a data span overlapping the range: (key, offset in span, length).
    Data(Vec<(Key, u32, u32)>),
    /// A parity span.
    Parity(Key),
}

/// How one attempt at a read ended when it did not return the object.
enum Miss {
    /// Something moved or failed: look the object up again.
    Again,
    /// For good.
    Fail(BackendError),
}

impl Engine {
    /// Reads object `id`.
    pub(crate) fn get(&self, id: ObjectId) -> Result<Vec<u8>, BackendError> {
        let mut last = None;
        for _ in 0..ROUNDS {
            let Some(t) = self.layout.lock().target(id) else {
                return Err(BackendError::NotFound(id));
            };
            let members = self.pool.members();
            let m = &members[usize::from(t.member)];
            if m.serves() {
                m.inflight.fetch_add(1, Ordering::Relaxed);
                let r = m.backend.get(t.key);
                m.inflight.fetch_sub(1, Ordering::Relaxed);
                match r {
                    Ok(v) => return Ok(v),
                    Err(e) if is_member_failure(&e) => {
                        self.pool.mark_down(t.member, &e);
                        self.wake();
                    }
                    // Not yet there (a write in flight) or just moved: the copy, or look again.
                    Err(BackendError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            if let Some(v) = self.read_copy(&t) {
                return Ok(v);
            }
            match self.degraded(id, &t) {
                Ok(v) => return Ok(v),
                Err(Miss::Again) => {}
                Err(Miss::Fail(e)) => last = Some(e),
            }
            if last.is_some() && self.layout.lock().key_of(id) == Some(t.key) {
                break;
            }
        }
        Err(last.unwrap_or(BackendError::Unavailable {
            id,
            servers: "its stripe keeps changing".into(),
        }))
    }

    /// Reads object `id` into `buf`, which must be exactly its length.
    pub(crate) fn get_into(&self, id: ObjectId, buf: &mut [u8]) -> Result<(), BackendError> {
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
            let l = self.layout.lock();
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
                    self.pool.mark_down(ix, &e);
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
        let l = self.layout.lock();
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
        let (k, total, lost, work, off) = {
            let l = self.layout.lock();
            let Some((st, _, sl)) = l.slot(t.loc) else {
                return Err(Miss::Again);
            };
            if sl.key != t.key || st.phase != Phase::Sealed {
                return Err(Miss::Again);
            }
            let (a, b) = (sl.off, sl.off + sl.len);
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
                    work.push((ix, (k + p, Fetch::Parity(key))));
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
            (k, total, lost, work, a)
        };
        let len = t.len;
        // Small ranges one member after another: starting threads costs more than a round
        // trip each (as for the pool's other fan-outs).
        let parallel = work.len() > 1 && len * work.len() >= PARALLEL_BYTES;
        let results = fan_out(&members, work, parallel, &|m, (j, f): (usize, Fetch)| {
            let r = match f {
                Fetch::Parity(key) => m.backend.get(key).map(|p| {
                    let mut v = vec![0u8; len];
                    let end = (off as usize + len).min(p.len());
                    if let Some(src) = p.get(off as usize..end) {
                        v[..src.len()].copy_from_slice(src);
                    }
                    v
                }),
                Fetch::Data(slots) => {
                    let keys: Vec<Key> = slots.iter().map(|s| s.0).collect();
                    m.backend.get_many(&keys).map(|vals| {
                        let mut v = vec![0u8; len];
                        for ((_, so, _), val) in slots.iter().zip(vals) {
                            // Overlap of [so, so + val.len()) with [off, off + len).
                            let (so, sl) = (*so as usize, val.len());
                            let (a, b) = (off as usize, off as usize + len);
                            let (lo, hi) = (so.max(a), (so + sl).min(b));
                            if lo < hi {
                                v[lo - a..hi - a].copy_from_slice(&val[lo - so..hi - so]);
                            }
                        }
                        v
                    })
                }
            };
            (j, r)
        });
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; total];
        for (ix, (j, r)) in results {
            match r {
                Ok(v) => shards[j] = Some(v),
                Err(e) if is_member_failure(&e) => {
                    self.pool.mark_down(ix, &e);
                    self.wake();
                    return Err(Miss::Again);
                }
                // A slot freed by compaction or a moved span: plan again.
                Err(BackendError::NotFound(_)) => return Err(Miss::Again),
                Err(e) => return Err(Miss::Fail(e)),
            }
        }
        debug_assert!(lost >= 1);
        self.codec
            .reconstruct(k, &mut shards)
            .map_err(|e| Miss::Fail(e.into()))?;
        self.counters.degraded_reads.fetch_add(1, Ordering::Relaxed);
        // The stripe may have changed meanwhile (its object overwritten: then the caller looks
        // again); the bytes decoded are those of version `t.key`, which is immutable.
        shards[usize::from(t.loc.span)].take().ok_or(Miss::Again)
    }
}
