//! The pool as [`Sites`] for agent operations over chunks spread across its members: one live
//! replica per object, operations run on a chosen member, and objects the agent wrote there
//! entered in the location table and copied to the scheme's other replicas at once. On an
//! erasure-coded pool a coded object's holder is the member with its current version, named
//! there by its key, and agent outputs are read back and written through the coded path.

use super::PoolBackend;
use super::member::{choose, is_member_failure};
use super::read::replicas;
use super::table::{Entry, Ix};
use crate::backend::{BackendError, ObjectId, Sites};

impl Sites for PoolBackend {
    fn site_count(&self) -> usize {
        self.inner.members().len()
    }

    fn serving(&self) -> usize {
        self.inner.members().iter().filter(|m| m.serves()).count()
    }

    fn holders(&self, ids: &[ObjectId]) -> Vec<Vec<usize>> {
        let members = self.inner.members();
        let coded = self.coded().map(|c| c.places(ids));
        ids.iter()
            .enumerate()
            .map(|(i, &id)| {
                if let Some(Some((ix, _))) = coded.as_ref().map(|p| p[i]) {
                    let m = usize::from(ix);
                    return match members.get(m) {
                        Some(mb) if mb.serves() => vec![m],
                        _ => Vec::new(),
                    };
                }
                match self.inner.table.get(id) {
                    Some(e) if !e.is_freed() => replicas(&members, &e)
                        .into_iter()
                        .map(usize::from)
                        .collect(),
                    _ => Vec::new(),
                }
            })
            .collect()
    }

    fn names_at(&self, site: usize, ids: &[ObjectId]) -> Vec<ObjectId> {
        let Some(c) = self.coded() else {
            return ids.to_vec();
        };
        c.places(ids)
            .into_iter()
            .zip(ids)
            .map(|(place, &id)| match place {
                // A coded object elsewhere now: its own id names nothing there, and the
                // operation's not-found answer sends its work elsewhere.
                Some((ix, key)) if usize::from(ix) == site => key,
                _ => id,
            })
            .collect()
    }

    fn compute_at(&self, site: usize, op: u16, args: &[u8]) -> Result<Vec<u8>, BackendError> {
        let members = self.inner.members();
        let m = members.get(site).ok_or_else(|| {
            BackendError::Config(format!("no pool member {site} to run an agent operation"))
        })?;
        // The route only picks a server within a multi-server member: 0 is as good as any.
        m.app_call(|| m.backend.compute(0, op, args))
    }

    fn site_failed(&self, site: usize, err: &BackendError) -> bool {
        if is_member_failure(err) {
            // The sites are the members of now: no older snapshot to check against.
            self.inner.mark_down(&self.inner.members(), site as Ix, err);
            return true;
        }
        // A coded object rewritten or compacted under the operation (its old key freed):
        // the work goes to the object's new place or to the client.
        self.coded().is_some() && matches!(err, BackendError::NotFound(_))
    }

    fn adopt(&self, site: usize, objects: &[(ObjectId, usize)]) -> Result<(), BackendError> {
        if objects.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        let members = inner.members();
        let ix = site as Ix;
        let src = members.get(site).ok_or_else(|| {
            BackendError::Config(format!("no pool member {site} holding agent outputs"))
        })?;
        if self.coded().is_some() {
            return self.adopt_coded(src, objects);
        }
        let bytes: usize = objects.iter().map(|&(_, b)| b).sum();
        src.charge(bytes);
        for &(id, _) in objects {
            inner
                .table
                .shard(id)
                .entry(id)
                .or_insert_with(|| Entry::new(&[ix], false));
        }
        let extra = inner.cfg.redundancy.copies().saturating_sub(1);
        if extra == 0 {
            return Ok(());
        }
        let ids: Vec<ObjectId> = objects.iter().map(|&(id, _)| id).collect();
        let data = match src.backend.get_many(&ids) {
            Ok(d) => d,
            Err(e) => {
                // Lost with their member: the caller computes them again.
                for &id in &ids {
                    inner.forget(id);
                }
                return Err(e);
            }
        };
        let targets = choose(&members, &[ix], extra, bytes, &inner.dice);
        let items: Vec<(ObjectId, &[u8])> =
            ids.iter().zip(&data).map(|(&id, d)| (id, &d[..])).collect();
        for t in targets {
            match members[usize::from(t)].backend.put_many(&items) {
                Ok(()) => {
                    for &id in &ids {
                        if let Some(e) = inner.table.shard(id).get_mut(&id) {
                            e.push(t);
                        }
                    }
                }
                Err(e) => {
                    if is_member_failure(&e) {
                        inner.mark_down(&members, t, &e);
                    }
                    // Short of a copy: repair brings it back.
                    tracing::warn!(error = %e, "copying agent outputs to a replica failed");
                    inner.repair.wake();
                }
            }
        }
        Ok(())
    }
}

impl PoolBackend {
    /// Brings agent outputs written on member `src` onto the coded path: reads them, frees them
    /// there (before writing, so a replicated small object written under the same id on the same
    /// member is never the one freed) and writes them as any object of the pool.
    fn adopt_coded(
        &self,
        src: &super::member::Member,
        objects: &[(ObjectId, usize)],
    ) -> Result<(), BackendError> {
        use crate::backend::Backend;
        let ids: Vec<ObjectId> = objects.iter().map(|&(id, _)| id).collect();
        let data = src.backend.get_many(&ids)?;
        if let Err(e) = src.backend.free(&ids) {
            // Only space wasted on the member; the outputs are in hand.
            tracing::debug!(member = %src.name, error = %e, "freeing adopted agent outputs failed");
        }
        let items: Vec<(ObjectId, &[u8])> =
            ids.iter().zip(&data).map(|(&id, d)| (id, &d[..])).collect();
        Backend::put_many(self, &items)
    }
}
