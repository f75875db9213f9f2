//! A coded pool's two paths: erasure-coded objects, and objects replicated beside them (small
//! ones under the size rule [`PoolConfig::code_from`](super::PoolConfig::code_from), and those
//! whose id asks for it, see [`Protection`]).
//!
//! Each object is on exactly one path. A coded object is in the engine's index, a replicated one
//! in the location table; a write picks the path from the id's [`Protection`] (and by size under
//! [`Protection::BySize`]) and then drops the object's version on the other path, if any, so a
//! read (which looks in the engine first) never sees an old one once the write returned. With
//! no size rule and no id asking for replication, every call goes to the coded path untouched.

use super::PoolBackend;
use super::coded::Engine;
use crate::backend::{BackendError, Edit, ObjectId, Protection};

impl PoolBackend {
    fn rule(&self) -> usize {
        self.inner.cfg.code_from
    }

    /// Whether any of `ids` may be on the replicated path (else all are coded).
    fn may_replicate(&self, ids: impl IntoIterator<Item = ObjectId>) -> bool {
        self.rule() > 0
            || ids
                .into_iter()
                .any(|id| Protection::of(id) == Protection::Replicated)
    }

    /// Whether a write of `len` bytes to `id` goes to the coded path.
    fn codes(&self, id: ObjectId, len: usize) -> bool {
        match Protection::of(id) {
            Protection::Coded => true,
            Protection::Replicated => false,
            Protection::BySize => self.rule() == 0 || len >= self.rule(),
        }
    }

    /// Whether object `id` of a coded pool is on the replicated path.
    pub(super) fn replicated_here(&self, c: &Engine, id: ObjectId) -> bool {
        self.may_replicate([id]) && !c.holds_one(id) && self.inner.table.get(id).is_some()
    }

    /// Which of `ids` are on the replicated path.
    fn replicated_of(&self, c: &Engine, ids: &[ObjectId]) -> Vec<bool> {
        c.holds(ids)
            .into_iter()
            .zip(ids)
            .map(|(coded, &id)| !coded && self.inner.table.get(id).is_some())
            .collect()
    }

    /// Writes objects, each on the path its id and size pick.
    pub(super) fn mixed_put_many(
        &self,
        c: &Engine,
        items: &[(ObjectId, &[u8])],
    ) -> Result<(), BackendError> {
        if !self.may_replicate(items.iter().map(|x| x.0)) {
            return c.put_many(items);
        }
        type Items<'a> = Vec<(ObjectId, &'a [u8])>;
        let (coded, small): (Items<'_>, Items<'_>) =
            items.iter().partition(|(id, d)| self.codes(*id, d.len()));
        if !coded.is_empty() {
            c.put_many(&coded)?;
            let stale: Vec<ObjectId> = coded
                .iter()
                .map(|x| x.0)
                .filter(|&id| self.inner.table.get(id).is_some())
                .collect();
            if !stale.is_empty() {
                self.replicated_free(&stale)?;
            }
        }
        if !small.is_empty() {
            self.replicated_put_many(&small)?;
            let ids: Vec<ObjectId> = small.iter().map(|x| x.0).collect();
            let stale: Vec<ObjectId> = c
                .holds(&ids)
                .into_iter()
                .zip(ids)
                .filter_map(|(held, id)| held.then_some(id))
                .collect();
            if !stale.is_empty() {
                c.free(&stale)?;
            }
        }
        Ok(())
    }

    /// Reads objects from both paths, in order.
    pub(super) fn mixed_get_many(
        &self,
        c: &Engine,
        ids: &[ObjectId],
    ) -> Result<Vec<Vec<u8>>, BackendError> {
        if !self.may_replicate(ids.iter().copied()) {
            return c.get_many(ids);
        }
        let repl = self.replicated_of(c, ids);
        let pick = |want: bool| -> Vec<ObjectId> {
            ids.iter()
                .zip(&repl)
                .filter_map(|(&id, &r)| (r == want).then_some(id))
                .collect()
        };
        let (small, coded) = (pick(true), pick(false));
        let mut small = self.replicated_get_many(&small)?.into_iter();
        let mut coded = c.get_many(&coded)?.into_iter();
        repl.iter()
            .map(|&r| {
                if r { small.next() } else { coded.next() }.ok_or(BackendError::Protocol(
                    crate::backend::ProtocolError::NoReplicaAnswered,
                ))
            })
            .collect()
    }

    /// Patches objects on their paths.
    pub(super) fn mixed_patch_many(
        &self,
        c: &Engine,
        items: &[(ObjectId, &[Edit<'_>])],
    ) -> Result<(), BackendError> {
        if !self.may_replicate(items.iter().map(|x| x.0)) {
            return c.patch_many(items);
        }
        let ids: Vec<ObjectId> = items.iter().map(|x| x.0).collect();
        let repl = self.replicated_of(c, &ids);
        let (small, coded): (Vec<_>, Vec<_>) = items.iter().zip(&repl).partition(|(_, r)| **r);
        let small: Vec<(ObjectId, &[Edit<'_>])> = small.into_iter().map(|(x, _)| *x).collect();
        let coded: Vec<(ObjectId, &[Edit<'_>])> = coded.into_iter().map(|(x, _)| *x).collect();
        if !small.is_empty() {
            self.replicated_patch_many(&small)?;
        }
        if !coded.is_empty() {
            c.patch_many(&coded)?;
        }
        Ok(())
    }

    /// Frees objects on their paths (an id on neither goes to the coded path, which ignores
    /// it).
    pub(super) fn mixed_free(&self, c: &Engine, ids: &[ObjectId]) -> Result<(), BackendError> {
        if !self.may_replicate(ids.iter().copied()) {
            return c.free(ids);
        }
        let repl = self.replicated_of(c, ids);
        let (small, coded): (Vec<ObjectId>, Vec<ObjectId>) = {
            let (s, k): (Vec<_>, Vec<_>) = ids.iter().zip(&repl).partition(|(_, r)| **r);
            (
                s.into_iter().map(|x| *x.0).collect(),
                k.into_iter().map(|x| *x.0).collect(),
            )
        };
        if !coded.is_empty() {
            c.free(&coded)?;
        }
        if !small.is_empty() {
            self.replicated_free(&small)?;
        }
        Ok(())
    }
}
