//! [`Backend`] for [`PoolBackend`]: each call routed to the replicated data path (`read.rs`,
//! `write.rs`) or the erasure-coded one.

use std::time::{Duration, Instant};

use farmem_proto::agent::op;
use parking_lot::Mutex;

use super::PoolBackend;
use super::fanout::fan_out;
use super::member::is_member_failure;
use super::read::replicas;
use super::table::{Entry, Ix};
use super::write::{PATCH, PUT, TABLE_WRITE};
use crate::backend::{Backend, BackendError, Edit, ObjectId, ProtocolError, StoreStats};

/// A `get_many` slower than this is logged (debug) with where its time went.
const SLOW_READ: Duration = Duration::from_millis(25);

impl Backend for PoolBackend {
    fn put(&self, id: ObjectId, data: &[u8]) -> Result<(), BackendError> {
        if let Some(c) = self.coded() {
            return self.mixed_put_many(c, &[(id, data)]);
        }
        self.inner
            .write(&[(id, data.len())], PUT, &|b, _| b.put(id, data))
    }

    fn get(&self, id: ObjectId) -> Result<Vec<u8>, BackendError> {
        if let Some(c) = self.coded()
            && !self.replicated_here(c, id)
        {
            return c.get(id);
        }
        self.inner.read_with(id, |b| b.get(id))
    }

    fn get_into(&self, id: ObjectId, buf: &mut [u8]) -> Result<(), BackendError> {
        if let Some(c) = self.coded()
            && !self.replicated_here(c, id)
        {
            return c.get_into(id, buf);
        }
        self.inner.read_with(id, |b| b.get_into(id, buf))
    }

    fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>, BackendError> {
        if let Some(c) = self.coded() {
            return self.mixed_get_many(c, ids);
        }
        self.replicated_get_many(ids)
    }

    fn put_many(&self, items: &[(ObjectId, &[u8])]) -> Result<(), BackendError> {
        if let Some(c) = self.coded() {
            return self.mixed_put_many(c, items);
        }
        self.replicated_put_many(items)
    }

    fn patch(&self, id: ObjectId, edits: &[Edit<'_>]) -> Result<(), BackendError> {
        if let Some(c) = self.coded()
            && !self.replicated_here(c, id)
        {
            return c.patch_many(&[(id, edits)]);
        }
        let bytes = edits.iter().map(|(_, b)| b.len()).sum();
        self.inner
            .write(&[(id, bytes)], PATCH, &|b, _| b.patch(id, edits))
    }

    fn patch_many(&self, items: &[(ObjectId, &[Edit<'_>])]) -> Result<(), BackendError> {
        if let Some(c) = self.coded() {
            return self.mixed_patch_many(c, items);
        }
        self.replicated_patch_many(items)
    }

    fn free(&self, ids: &[ObjectId]) -> Result<(), BackendError> {
        if let Some(c) = self.coded() {
            return self.mixed_free(c, ids);
        }
        self.replicated_free(ids)
    }

    fn stats(&self) -> Result<StoreStats, BackendError> {
        let members = self.inner.members();
        let mut total = StoreStats::default();
        for (i, m) in members.iter().enumerate() {
            if !m.serves() {
                continue;
            }
            match m.backend.stats() {
                Ok(s) => {
                    total.used_bytes += s.used_bytes;
                    total.capacity_bytes = total.capacity_bytes.saturating_add(s.capacity_bytes);
                    total.objects += s.objects;
                    total.per_object_overhead = s.per_object_overhead;
                    total.bytes_written += s.bytes_written;
                }
                Err(e) if is_member_failure(&e) => self.inner.mark_down(&members, i as Ix, &e),
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    fn compute(&self, route: ObjectId, opn: u16, args: &[u8]) -> Result<Vec<u8>, BackendError> {
        // Server-side hash tables are replicated under every scheme; operations over coded
        // objects are refused.
        if let Some(c) = self.coded()
            && !matches!(
                opn,
                op::HT_GET | op::HT_PUT | op::HT_REMOVE | op::HT_LEN | op::HT_SCAN | op::HT_DROP
            )
        {
            return Err(c.compute_refused());
        }
        let inner = &self.inner;
        match opn {
            op::HT_PUT | op::HT_REMOVE | op::HT_DROP => {
                if opn == op::HT_DROP && inner.table.get(route).is_none() {
                    // Dropping a table this pool never saw: wherever it may be.
                    return inner.read_with(route, |b| b.compute(route, opn, args));
                }
                let answer = Mutex::new(None);
                inner.write(&[(route, args.len())], TABLE_WRITE, &|b, _| {
                    let r = b.compute(route, opn, args)?;
                    answer.lock().get_or_insert(r);
                    Ok(())
                })?;
                if opn == op::HT_DROP {
                    inner.forget(route);
                }
                answer
                    .into_inner()
                    .ok_or(BackendError::Protocol(ProtocolError::NoReplicaAnswered))
            }
            op::HT_GET | op::HT_LEN | op::HT_SCAN if inner.table.get(route).is_none() => {
                // A table nobody wrote yet: any serving member answers "empty".
                let members = inner.members();
                loop {
                    let mut silent = false;
                    for (i, m) in members.iter().enumerate() {
                        if !m.answers_unknown() {
                            continue;
                        }
                        let r = m.backend.compute(route, opn, args);
                        m.note_read(&r);
                        match r {
                            Err(e) if is_member_failure(&e) => {
                                inner.mark_down(&members, i as Ix, &e)
                            }
                            Err(BackendError::Silent { .. }) => silent = true,
                            r => return r,
                        }
                    }
                    if !silent {
                        return Err(BackendError::Unavailable {
                            id: route,
                            servers: String::new(),
                        });
                    }
                }
            }
            _ => inner.read_with(route, |b| b.compute(route, opn, args)),
        }
    }

    fn sites(&self) -> Option<&dyn crate::backend::Sites> {
        Some(self)
    }

    fn describe(&self) -> String {
        let members = self.inner.members();
        let names: Vec<&str> = members
            .iter()
            .filter(|m| m.serves())
            .map(|m| m.name.as_str())
            .collect();
        let scheme = match self.inner.cfg.redundancy {
            super::Redundancy::Coded { k, m } => format!("{k}+{m} coded"),
            r => format!("{} copies", r.copies()),
        };
        format!("pool({scheme}: {})", names.join(", "))
    }
}

impl PoolBackend {
    /// Reads objects of the replicated data path: one request per member.
    pub(super) fn replicated_get_many(
        &self,
        ids: &[ObjectId],
    ) -> Result<Vec<Vec<u8>>, BackendError> {
        let inner = &self.inner;
        let mut out: Vec<Option<Vec<u8>>> = vec![None; ids.len()];
        let mut pending: Vec<usize> = (0..ids.len()).collect();
        let mut singles = Vec::new();
        for _ in 0..3 {
            if pending.is_empty() {
                break;
            }
            let entries: Vec<Option<Entry>> =
                pending.iter().map(|&i| inner.table.get(ids[i])).collect();
            let members = inner.members();
            let mut groups: Vec<Vec<usize>> = vec![Vec::new(); members.len()];
            for (&i, e) in pending.iter().zip(entries) {
                match e.and_then(|e| replicas(&members, &e).first().copied()) {
                    Some(m) => groups[usize::from(m)].push(i),
                    None => singles.push(i),
                }
            }
            let work: Vec<(Ix, Vec<usize>)> = groups
                .into_iter()
                .enumerate()
                .filter(|(_, g)| !g.is_empty())
                .map(|(m, g)| (m as Ix, g))
                .collect();
            let t0 = Instant::now();
            let results = fan_out(&members, work, true, &|m, idx: Vec<usize>| {
                let want: Vec<ObjectId> = idx.iter().map(|&i| ids[i]).collect();
                let t = Instant::now();
                let r = m.backend.get_many(&want);
                (r, idx, t.saturating_duration_since(t0), t.elapsed())
            });
            let took = t0.elapsed();
            if took >= SLOW_READ {
                // Where a slow read spent its time: starting each member's call, then the call.
                let calls: Vec<String> = results
                    .iter()
                    .map(|(ix, (_, idx, start, call))| {
                        format!(
                            "{}: {} ids, started +{:.1} ms, took {:.1} ms",
                            members[usize::from(*ix)].name,
                            idx.len(),
                            start.as_secs_f64() * 1e3,
                            call.as_secs_f64() * 1e3
                        )
                    })
                    .collect();
                tracing::debug!(ms = took.as_secs_f64() * 1e3, ?calls, "slow pool get_many");
            }
            pending.clear();
            for (ix, (r, idx, _, _)) in results {
                match r {
                    Ok(vals) if vals.len() == idx.len() => {
                        for (i, v) in idx.into_iter().zip(vals) {
                            out[i] = Some(v);
                        }
                    }
                    Err(e) if is_member_failure(&e) => {
                        inner.mark_down(&members, ix, &e);
                        pending.extend(idx);
                    }
                    // A silent server: the next round asks other replicas first.
                    Err(e @ BackendError::Silent { .. }) => {
                        members[usize::from(ix)].note_read::<()>(&Err(e));
                        pending.extend(idx);
                    }
                    // Missing or moved objects: one by one, with failover.
                    _ => singles.extend(idx),
                }
            }
        }
        singles.extend(pending);
        for i in singles {
            out[i] = Some(self.get(ids[i])?);
        }
        out.into_iter()
            .zip(ids)
            .map(|(o, &id)| o.ok_or(BackendError::NotFound(id)))
            .collect()
    }

    /// Writes objects on the replicated data path.
    pub(super) fn replicated_put_many(
        &self,
        items: &[(ObjectId, &[u8])],
    ) -> Result<(), BackendError> {
        let sizes: Vec<(ObjectId, usize)> = items.iter().map(|&(id, d)| (id, d.len())).collect();
        self.inner.write(&sizes, PUT, &|b, idx| {
            if let [i] = idx {
                return b.put(items[*i].0, items[*i].1);
            }
            let batch: Vec<(ObjectId, &[u8])> = idx.iter().map(|&i| items[i]).collect();
            b.put_many(&batch)
        })
    }

    /// Patches objects on the replicated data path.
    pub(super) fn replicated_patch_many(
        &self,
        items: &[(ObjectId, &[Edit<'_>])],
    ) -> Result<(), BackendError> {
        let sizes: Vec<(ObjectId, usize)> = items
            .iter()
            .map(|&(id, e)| (id, e.iter().map(|(_, b)| b.len()).sum()))
            .collect();
        self.inner.write(&sizes, PATCH, &|b, idx| {
            let batch: Vec<(ObjectId, &[Edit<'_>])> = idx.iter().map(|&i| items[i]).collect();
            b.patch_many(&batch)
        })
    }

    /// Frees objects of the replicated data path.
    pub(super) fn replicated_free(&self, ids: &[ObjectId]) -> Result<(), BackendError> {
        let inner = &self.inner;
        let forgotten: Vec<(ObjectId, Option<Entry>)> =
            ids.iter().map(|&id| (id, inner.forget(id))).collect();
        let members = inner.members();
        let mut groups: Vec<Vec<ObjectId>> = vec![Vec::new(); members.len()];
        for (id, e) in forgotten {
            match e {
                Some(e) => {
                    for &m in e.members() {
                        groups[usize::from(m)].push(id);
                    }
                }
                // Never placed by this pool: wherever it may be.
                None => groups.iter_mut().for_each(|g| g.push(id)),
            }
        }
        let work: Vec<(Ix, Vec<ObjectId>)> = groups
            .into_iter()
            .enumerate()
            .filter(|(m, g)| !g.is_empty() && members[*m].serves())
            .map(|(m, g)| (m as Ix, g))
            .collect();
        let mut first_err = None;
        for (ix, r) in fan_out(&members, work, ids.len() > 1, &|m, g: Vec<ObjectId>| {
            m.backend.free(&g)
        }) {
            match r {
                Err(e) if is_member_failure(&e) => inner.mark_down(&members, ix, &e),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
                Ok(()) => {}
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}
