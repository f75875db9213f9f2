//! The read path of a pool: one replica, failing over to the others; ids the table does not
//! know are looked for everywhere and adopted.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Inner;
use super::member::{Member, is_member_failure};
use super::table::{Entry, Ix};
use crate::backend::{Backend, BackendError, ObjectId};

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

pub(super) fn names(members: &[Arc<Member>], e: &Entry) -> String {
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
                let r = m.app_call(|| f(&*m.backend));
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
                    Err(err) if is_member_failure(&err) => self.mark_down(&members, ix, &err),
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
                if !m.answers_unknown() {
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
                    Err(err) if is_member_failure(&err) => self.mark_down(members, i as Ix, &err),
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
}
