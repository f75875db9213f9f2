//! The write path of a pool: writes fanned out to every live replica, acknowledged when each
//! holds them; entries created, substituted and forgotten.

use std::sync::Arc;

use super::Inner;
use super::fanout::fan_out;
use super::member::{Member, choose, is_member_failure};
use super::read::names;
use super::table::{Entry, Ix};
use crate::backend::{Backend, BackendError, ObjectId};

/// How a write treats the object's entry.
#[derive(Clone, Copy, Debug)]
pub(super) struct WriteKind {
    /// An unknown id gets a new entry (whole-object puts, hash-table writes).
    create: bool,
    /// The write replaces the whole object, so a dead replica can be replaced by a fresh member
    /// right away.
    substitute: bool,
    /// The id names a server-side hash table.
    table: bool,
}

pub(super) const PUT: WriteKind = WriteKind {
    create: true,
    substitute: true,
    table: false,
};
pub(super) const PATCH: WriteKind = WriteKind {
    create: false,
    substitute: false,
    table: false,
};
pub(super) const TABLE_WRITE: WriteKind = WriteKind {
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

impl Inner {
    /// Writes items (`(id, bytes)`) to every live replica: `send(member, indices)` writes the
    /// items at `indices` to one member. Acknowledged when every live replica holds each item.
    pub(super) fn write(
        &self,
        items: &[(ObjectId, usize)],
        kind: WriteKind,
        send: &SendFn<'_>,
    ) -> Result<(), BackendError> {
        let mut pending: Vec<usize> = (0..items.len()).collect();
        let mut attempts = 0;
        while !pending.is_empty() {
            attempts += 1;
            let mut targets: Vec<(usize, Vec<Ix>, bool, Vec<Ix>)> =
                Vec::with_capacity(pending.len());
            for &i in &pending {
                let (id, bytes) = items[i];
                match self.begin_write(id, bytes, kind) {
                    Ok((t, created, named)) => targets.push((i, t, created, named)),
                    Err(e) => {
                        // Writes already started are ended (not sent) before failing.
                        for (i, _, created, _) in targets {
                            self.end_write(items[i].0, created, &[]);
                        }
                        return Err(e);
                    }
                }
            }
            // Taken after the entries: it knows every member they name.
            let members = self.members();
            let mut groups: Vec<Vec<usize>> = vec![Vec::new(); members.len()];
            for (i, t, _, _) in &targets {
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
                        self.mark_down(&members, *ix, e);
                        failed[usize::from(*ix)] = true;
                    } else {
                        outcome[usize::from(*ix)] = Some(e);
                    }
                }
            }
            let mut retry = Vec::new();
            let mut first_err: Option<BackendError> = None;
            let mut stale: Vec<(Ix, ObjectId)> = Vec::new();
            for (i, t, created, named) in targets {
                let id = items[i].0;
                let acked = |m: Ix| {
                    t.contains(&m) && !failed[usize::from(m)] && outcome[usize::from(m)].is_none()
                };
                let ok = t.iter().filter(|&&m| acked(m)).count();
                if ok > 0 {
                    let mut shard = self.table.shard(id);
                    if let Some(e) = shard.get_mut(&id) {
                        e.end();
                        if !e.is_freed() {
                            for &m in &named {
                                if acked(m) {
                                    continue;
                                }
                                // A replica that refused (full, ...) no longer holds the
                                // current value: its copy is dropped. One that failed, or did
                                // not serve, is written off with its member: the entry must not
                                // name it should its server come back with its data.
                                e.remove(m);
                                if outcome[usize::from(m)].is_some() {
                                    stale.push((m, id));
                                }
                            }
                        }
                    }
                } else {
                    self.end_write(id, created, &failed);
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

    /// Marks a write of `id` as started and returns the members to send it to, whether the
    /// entry was created by this write, and the members the entry names now (the write ends by
    /// dropping those that do not acknowledge it).
    fn begin_write(
        &self,
        id: ObjectId,
        bytes: usize,
        kind: WriteKind,
    ) -> Result<(Vec<Ix>, bool, Vec<Ix>), BackendError> {
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
            return Ok((t, created, e.members().to_vec()));
        }
    }

    /// Ends a write that no replica took: an entry it created goes again. Members that failed
    /// it (`failed`, by index) may or may not have applied it: the entry forgets them while it
    /// names another member, which holds the value from before the write.
    fn end_write(&self, id: ObjectId, created: bool, failed: &[bool]) {
        let mut shard = self.table.shard(id);
        if let Some(e) = shard.get_mut(&id) {
            e.end();
            if created && e.busy == 0 && !e.is_moving() {
                shard.remove(&id);
                return;
            }
            if e.is_freed() {
                return;
            }
            let lost: Vec<Ix> = e
                .members()
                .iter()
                .copied()
                .filter(|&m| failed.get(usize::from(m)).copied().unwrap_or(false))
                .collect();
            if !lost.is_empty() && lost.len() < e.members().len() {
                for m in lost {
                    e.remove(m);
                }
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
