//! The data path of a pool: reads with failover, writes fanned out to every live replica.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use farmem_proto::agent::op;
use parking_lot::Mutex;

use super::member::{Member, choose, is_member_failure};
use super::table::{Entry, Ix};
use super::{Inner, PoolBackend};
use crate::backend::{Backend, BackendError, Edit, ObjectId, ProtocolError, StoreStats};

/// How a write treats the object's entry.
#[derive(Clone, Copy, Debug)]
struct WriteKind {
    /// An unknown id gets a new entry (whole-object puts, hash-table writes).
    create: bool,
    /// The write replaces the whole object, so a dead replica can be replaced by a fresh member
    /// right away.
    substitute: bool,
    /// The id names a server-side hash table.
    table: bool,
}

const PUT: WriteKind = WriteKind {
    create: true,
    substitute: true,
    table: false,
};
const PATCH: WriteKind = WriteKind {
    create: false,
    substitute: false,
    table: false,
};
const TABLE_WRITE: WriteKind = WriteKind {
    create: true,
    substitute: false,
    table: true,
};

/// Writes the items at the given indices to one member.
type SendFn<'a> = dyn Fn(&dyn Backend, &[usize]) -> Result<(), BackendError> + Sync + 'a;

/// Work below this many bytes in a single item goes to its members one after another: starting
/// a thread costs more than the call to an in-process member and about as much as one round
/// trip to a server.
const PARALLEL_BYTES: usize = 16 << 10;

/// Runs `f` for each `(member, work)` group and returns the results in group order: in parallel
/// when `parallel` (the first group in the calling thread), else one after another.
pub(crate) fn fan_out<T: Send, R: Send>(
    members: &[Arc<Member>],
    groups: Vec<(Ix, T)>,
    parallel: bool,
    f: &(dyn Fn(&Member, T) -> R + Sync),
) -> Vec<(Ix, R)> {
    let run = |ix: Ix, work: T| {
        let m = &members[usize::from(ix)];
        m.inflight.fetch_add(1, Ordering::Relaxed);
        let r = f(m, work);
        m.inflight.fetch_sub(1, Ordering::Relaxed);
        (ix, r)
    };
    if groups.len() <= 1 || !parallel {
        return groups.into_iter().map(|(ix, w)| run(ix, w)).collect();
    }
    std::thread::scope(|s| {
        let mut it = groups.into_iter();
        let first = it.next();
        let handles: Vec<_> = it.map(|(ix, w)| s.spawn(move || run(ix, w))).collect();
        let mut out = Vec::with_capacity(handles.len() + 1);
        if let Some((ix, w)) = first {
            out.push(run(ix, w));
        }
        for h in handles {
            match h.join() {
                Ok(r) => out.push(r),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        out
    })
}

/// The serving members of `e`, least loaded first.
pub(super) fn replicas(members: &[Arc<Member>], e: &Entry) -> Vec<Ix> {
    let mut r: Vec<Ix> = e
        .members()
        .iter()
        .copied()
        .filter(|&m| members[usize::from(m)].serves())
        .collect();
    if r.len() > 1 {
        r.sort_by_key(|&m| {
            let m = &members[usize::from(m)];
            // Answering before silent, live before draining, then by requests in flight.
            (
                m.is_suspect(),
                !m.takes_new(),
                m.inflight.load(Ordering::Relaxed),
            )
        });
    }
    r
}

fn names(members: &[Arc<Member>], e: &Entry) -> String {
    e.members()
        .iter()
        .map(|&m| members[usize::from(m)].name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Inner {
    /// Reads object `id` from one replica with `f`, failing over to the others.
    ///
    /// An id the table does not know is looked for on every serving member (objects the remote
    /// agent created) and adopted where found.
    pub(crate) fn read_with<R>(
        &self,
        id: ObjectId,
        mut f: impl FnMut(&dyn Backend) -> Result<R, BackendError>,
    ) -> Result<R, BackendError> {
        let mut last_entry = None;
        let mut rounds = 0;
        while rounds < 4 {
            let Some(e) = self.table.get(id) else {
                if self.table.has_entry(id) {
                    // Freed while being moved.
                    return Err(BackendError::NotFound(id));
                }
                return self.adopt(id, &self.members(), &mut f);
            };
            // Taken after the entry: it knows every member the entry can name.
            let members = self.members();
            if last_entry.is_some_and(|l: Entry| l.members() == e.members()) {
                break;
            }
            let mut not_found = None;
            let mut moved = false;
            let mut silent = false;
            for ix in replicas(&members, &e) {
                if moved {
                    break;
                }
                let m = &members[usize::from(ix)];
                m.inflight.fetch_add(1, Ordering::Relaxed);
                let r = f(&*m.backend);
                m.inflight.fetch_sub(1, Ordering::Relaxed);
                m.note_read(&r);
                match r {
                    // A server-side table answers "no such key" from a copy a mover dropped
                    // after switching the entry: trust the answer only if the member still
                    // holds the table by the entry (it is dropped after the switch).
                    Ok(v)
                        if e.is_table() && self.table.get(id).is_some_and(|n| !n.contains(ix)) =>
                    {
                        drop(v);
                        tracing::debug!(id, member = %m.name, "table moved under a read: again");
                        moved = true;
                    }
                    Ok(v) => return Ok(v),
                    Err(err) if is_member_failure(&err) => self.mark_down(ix, &err),
                    // A copy moved or freed under us, or a stale replica: try the others.
                    Err(err @ BackendError::NotFound(_)) => not_found = Some(err),
                    // A server silent past the read patience (dying, or stalled): the others.
                    Err(BackendError::Silent { .. }) => silent = true,
                    Err(err) => return Err(err),
                }
            }
            if silent && not_found.is_none() && !moved {
                // Every replica asked was silent: ask again (a dead one is declared down by
                // its transport soon, a stalled one answers), without using up a round.
                continue;
            }
            rounds += 1;
            if let Some(err) = not_found
                && self
                    .table
                    .get(id)
                    .is_none_or(|now| now.members() == e.members())
            {
                return Err(err);
            }
            if !e
                .members()
                .iter()
                .any(|&m| members[usize::from(m)].serves())
                && self
                    .table
                    .get(id)
                    .is_some_and(|now| now.members() == e.members())
            {
                return Err(BackendError::Unavailable {
                    id,
                    servers: names(&members, &e),
                });
            }
            last_entry = Some(e);
        }
        let entry = self.table.get(id);
        let members = self.members();
        match entry {
            Some(e) => Err(BackendError::Unavailable {
                id,
                servers: names(&members, &e),
            }),
            None => Err(BackendError::NotFound(id)),
        }
    }

    /// Looks for an unknown id on every serving member and records where it was found.
    fn adopt<R>(
        &self,
        id: ObjectId,
        members: &[Arc<Member>],
        f: &mut impl FnMut(&dyn Backend) -> Result<R, BackendError>,
    ) -> Result<R, BackendError> {
        loop {
            let mut silent = false;
            for (i, m) in members.iter().enumerate() {
                if !m.serves() {
                    continue;
                }
                let r = f(&*m.backend);
                m.note_read(&r);
                match r {
                    Ok(v) => {
                        self.table
                            .shard(id)
                            .entry(id)
                            .or_insert_with(|| Entry::new(&[i as Ix], false));
                        self.repair.wake();
                        return Ok(v);
                    }
                    Err(err) if is_member_failure(&err) => self.mark_down(i as Ix, &err),
                    Err(BackendError::NotFound(_)) => {}
                    // Ask it again once the others were asked.
                    Err(BackendError::Silent { .. }) => silent = true,
                    Err(err) => return Err(err),
                }
            }
            if !silent {
                return Err(BackendError::NotFound(id));
            }
        }
    }

    /// Writes items (`(id, bytes)`) to every live replica: `send(member, indices)` writes the
    /// items at `indices` to one member. Acknowledged when every live replica holds each item.
    fn write(
        &self,
        items: &[(ObjectId, usize)],
        kind: WriteKind,
        send: &SendFn<'_>,
    ) -> Result<(), BackendError> {
        let mut pending: Vec<usize> = (0..items.len()).collect();
        let mut attempts = 0;
        while !pending.is_empty() {
            attempts += 1;
            let mut targets: Vec<(usize, Vec<Ix>, bool)> = Vec::with_capacity(pending.len());
            for &i in &pending {
                let (id, bytes) = items[i];
                match self.begin_write(id, bytes, kind) {
                    Ok((t, created)) => targets.push((i, t, created)),
                    Err(e) => {
                        // Writes already started are ended (not sent) before failing.
                        for (i, _, created) in targets {
                            self.end_write(items[i].0, created);
                        }
                        return Err(e);
                    }
                }
            }
            // Taken after the entries: it knows every member they name.
            let members = self.members();
            let mut groups: Vec<Vec<usize>> = vec![Vec::new(); members.len()];
            for (i, t, _) in &targets {
                for &m in t {
                    groups[usize::from(m)].push(*i);
                }
            }
            let work: Vec<(Ix, Vec<usize>)> = groups
                .into_iter()
                .enumerate()
                .filter(|(_, g)| !g.is_empty())
                .map(|(m, g)| (m as Ix, g))
                .collect();
            let parallel = targets.len() > 1 || items[targets[0].0].1 >= PARALLEL_BYTES;
            let results = fan_out(&members, work, parallel, &|m, idx: Vec<usize>| {
                send(&*m.backend, &idx)
            });
            let mut outcome: Vec<Option<&BackendError>> = vec![None; members.len()];
            let mut failed = vec![false; members.len()];
            for (ix, r) in &results {
                if let Err(e) = r {
                    if is_member_failure(e) {
                        self.mark_down(*ix, e);
                        failed[usize::from(*ix)] = true;
                    } else {
                        outcome[usize::from(*ix)] = Some(e);
                    }
                }
            }
            let mut retry = Vec::new();
            let mut first_err: Option<BackendError> = None;
            let mut stale: Vec<(Ix, ObjectId)> = Vec::new();
            for (i, t, created) in targets {
                let id = items[i].0;
                let ok = t
                    .iter()
                    .filter(|&&m| !failed[usize::from(m)] && outcome[usize::from(m)].is_none())
                    .count();
                if ok > 0 {
                    let mut shard = self.table.shard(id);
                    if let Some(e) = shard.get_mut(&id) {
                        e.end();
                        // A replica that refused (full, ...) no longer holds the current value.
                        for &m in &t {
                            if outcome[usize::from(m)].is_some() && !e.is_freed() {
                                e.remove(m);
                                stale.push((m, id));
                            }
                        }
                    }
                } else {
                    self.end_write(id, created);
                }
                if ok > 0 {
                    continue;
                }
                if let Some(e) = t.iter().find_map(|&m| outcome[usize::from(m)]) {
                    first_err.get_or_insert_with(|| copy_error(e));
                } else if attempts <= members.len() + 1 {
                    retry.push(i);
                } else {
                    first_err.get_or_insert_with(|| BackendError::Unavailable {
                        id,
                        servers: t
                            .iter()
                            .map(|&m| members[usize::from(m)].name.clone())
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
            for (m, id) in stale {
                let _ = members[usize::from(m)].backend.free(&[id]);
            }
            if let Some(e) = first_err {
                return Err(e);
            }
            pending = retry;
        }
        Ok(())
    }

    /// Marks a write of `id` as started and returns the members to send it to (and whether the
    /// entry was created by this write).
    fn begin_write(
        &self,
        id: ObjectId,
        bytes: usize,
        kind: WriteKind,
    ) -> Result<(Vec<Ix>, bool), BackendError> {
        let want = self.cfg.redundancy.copies();
        let mut waits = 0u32;
        loop {
            let mut shard = self.table.shard(id);
            // Taken under the shard lock: placement sees member states a drain has set.
            let members = self.members();
            let wait = match shard.get(&id) {
                // A mover holds a freed entry: it is about to go.
                Some(e) if e.is_freed() => true,
                // A mover that kept losing to writes is finishing its copy.
                Some(e) if e.is_fenced() => true,
                // No serving copy to write to, and no substitute while a mover holds it: let
                // the mover finish (it is about to find the object lost).
                Some(e) if e.is_moving() && kind.substitute => !e
                    .members()
                    .iter()
                    .any(|&m| members[usize::from(m)].serves()),
                _ => false,
            };
            if wait {
                drop(shard);
                waits += 1;
                let pause = if waits < 10 { 20 } else { 500 };
                std::thread::sleep(std::time::Duration::from_micros(pause));
                continue;
            }
            let mut created = false;
            let e = match shard.get_mut(&id) {
                Some(e) => e,
                None if kind.create => {
                    let placed = choose(&members, &[], want, bytes, &self.dice);
                    if placed.is_empty() {
                        return Err(no_room(&members, bytes));
                    }
                    created = true;
                    shard
                        .entry(id)
                        .or_insert_with(|| Entry::new(&placed, kind.table))
                }
                None => {
                    drop(shard);
                    // Not placed by this pool: find it (agent outputs), then write to it.
                    self.read_with(id, |b| b.get(id).map(drop))?;
                    if self.table.get(id).is_none() {
                        return Err(BackendError::NotFound(id));
                    }
                    continue;
                }
            };
            // A moving entry gets no substitutes: they could race the mover's own copy on
            // the same member. The write goes to the serving members, and the mover's commit
            // fails and copies again.
            if kind.substitute && !e.is_moving() {
                for &m in &e.members().to_vec() {
                    if !members[usize::from(m)].serves() {
                        match choose(&members, e.members(), 1, bytes, &self.dice).first() {
                            Some(&s) => e.replace(m, s),
                            None => break,
                        }
                    }
                }
            }
            let t: Vec<Ix> = e
                .members()
                .iter()
                .copied()
                .filter(|&m| members[usize::from(m)].serves())
                .collect();
            if t.is_empty() {
                return Err(BackendError::Unavailable {
                    id,
                    servers: names(&members, e),
                });
            }
            e.begin();
            return Ok((t, created));
        }
    }

    /// Ends a write that no replica took: an entry it created goes again.
    fn end_write(&self, id: ObjectId, created: bool) {
        let mut shard = self.table.shard(id);
        if let Some(e) = shard.get_mut(&id) {
            e.end();
            if created && e.busy == 0 && !e.is_moving() {
                shard.remove(&id);
            }
        }
    }

    /// Removes the entry of `id` (a freed object) and returns it. An entry a mover holds stays,
    /// marked freed, for the mover to remove.
    pub(crate) fn forget(&self, id: ObjectId) -> Option<Entry> {
        let mut shard = self.table.shard(id);
        let e = shard.get_mut(&id)?;
        if e.is_freed() {
            return None;
        }
        if e.is_moving() {
            e.set_freed();
            return Some(*e);
        }
        shard.remove(&id)
    }
}

fn no_room(members: &[Arc<Member>], bytes: usize) -> BackendError {
    let available = members
        .iter()
        .filter(|m| m.takes_new())
        .map(|m| m.free().max(0) as u64)
        .max()
        .unwrap_or(0);
    BackendError::OutOfCapacity {
        needed: bytes as u64,
        available,
    }
}

/// A copy of a member's refusal for the caller (errors are not `Clone`).
fn copy_error(e: &BackendError) -> BackendError {
    match e {
        BackendError::NotFound(id) => BackendError::NotFound(*id),
        BackendError::OutOfCapacity { needed, available } => BackendError::OutOfCapacity {
            needed: *needed,
            available: *available,
        },
        BackendError::SizeMismatch {
            id,
            expected,
            actual,
        } => BackendError::SizeMismatch {
            id: *id,
            expected: *expected,
            actual: *actual,
        },
        BackendError::TooLarge { size, limit } => BackendError::TooLarge {
            size: *size,
            limit: *limit,
        },
        BackendError::RemoteAgent {
            addr,
            code,
            message,
        } => BackendError::RemoteAgent {
            addr: addr.clone(),
            code: *code,
            message: message.clone(),
        },
        BackendError::Config(m) => BackendError::Config(m.clone()),
        other => {
            let mut message = other.to_string();
            let mut cause = std::error::Error::source(other);
            while let Some(c) = cause {
                message.push_str(": ");
                message.push_str(&c.to_string());
                cause = c.source();
            }
            BackendError::Copied {
                kind: other.kind(),
                message,
            }
        }
    }
}

impl Backend for PoolBackend {
    fn put(&self, id: ObjectId, data: &[u8]) -> Result<(), BackendError> {
        if let Some(c) = self.coded() {
            return c.put_many(&[(id, data)]);
        }
        self.inner
            .write(&[(id, data.len())], PUT, &|b, _| b.put(id, data))
    }

    fn get(&self, id: ObjectId) -> Result<Vec<u8>, BackendError> {
        if let Some(c) = self.coded() {
            return c.get(id);
        }
        self.inner.read_with(id, |b| b.get(id))
    }

    fn get_into(&self, id: ObjectId, buf: &mut [u8]) -> Result<(), BackendError> {
        if let Some(c) = self.coded() {
            return c.get_into(id, buf);
        }
        self.inner.read_with(id, |b| b.get_into(id, buf))
    }

    fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>, BackendError> {
        if let Some(c) = self.coded() {
            return c.get_many(ids);
        }
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
            let results = fan_out(&members, work, true, &|m, idx: Vec<usize>| {
                let want: Vec<ObjectId> = idx.iter().map(|&i| ids[i]).collect();
                (m.backend.get_many(&want), idx)
            });
            pending.clear();
            for (ix, (r, idx)) in results {
                match r {
                    Ok(vals) if vals.len() == idx.len() => {
                        for (i, v) in idx.into_iter().zip(vals) {
                            out[i] = Some(v);
                        }
                    }
                    Err(e) if is_member_failure(&e) => {
                        inner.mark_down(ix, &e);
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

    fn put_many(&self, items: &[(ObjectId, &[u8])]) -> Result<(), BackendError> {
        if let Some(c) = self.coded() {
            return c.put_many(items);
        }
        let sizes: Vec<(ObjectId, usize)> = items.iter().map(|&(id, d)| (id, d.len())).collect();
        self.inner.write(&sizes, PUT, &|b, idx| {
            if let [i] = idx {
                return b.put(items[*i].0, items[*i].1);
            }
            let batch: Vec<(ObjectId, &[u8])> = idx.iter().map(|&i| items[i]).collect();
            b.put_many(&batch)
        })
    }

    fn patch(&self, id: ObjectId, edits: &[Edit<'_>]) -> Result<(), BackendError> {
        if let Some(c) = self.coded() {
            return c.patch_many(&[(id, edits)]);
        }
        let bytes = edits.iter().map(|(_, b)| b.len()).sum();
        self.inner
            .write(&[(id, bytes)], PATCH, &|b, _| b.patch(id, edits))
    }

    fn patch_many(&self, items: &[(ObjectId, &[Edit<'_>])]) -> Result<(), BackendError> {
        if let Some(c) = self.coded() {
            return c.patch_many(items);
        }
        let sizes: Vec<(ObjectId, usize)> = items
            .iter()
            .map(|&(id, e)| (id, e.iter().map(|(_, b)| b.len()).sum()))
            .collect();
        self.inner.write(&sizes, PATCH, &|b, idx| {
            let batch: Vec<(ObjectId, &[Edit<'_>])> = idx.iter().map(|&i| items[i]).collect();
            b.patch_many(&batch)
        })
    }

    fn free(&self, ids: &[ObjectId]) -> Result<(), BackendError> {
        if let Some(c) = self.coded() {
            return c.free(ids);
        }
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
                Err(e) if is_member_failure(&e) => inner.mark_down(ix, &e),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
                Ok(()) => {}
            }
        }
        first_err.map_or(Ok(()), Err)
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
                Err(e) if is_member_failure(&e) => self.inner.mark_down(i as Ix, &e),
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
                        if !m.serves() {
                            continue;
                        }
                        let r = m.backend.compute(route, opn, args);
                        m.note_read(&r);
                        match r {
                            Err(e) if is_member_failure(&e) => inner.mark_down(i as Ix, &e),
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
        if self.coded().is_some() {
            return None;
        }
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
