//! A coded pool with a size rule ([`PoolConfig::code_from`](super::PoolConfig::code_from)):
//! large objects on the erasure-coded path, small ones replicated beside them.
//!
//! Each object is on exactly one path. A coded object is in the engine's index, a replicated one
//! in the location table; a write picks the path by size and then drops the object's version on
//! the other path, if any, so a read (which looks in the engine first) never sees an old one
//! once the write returned. Without a rule (`code_from == 0`) every call goes to the coded path
//! untouched.

use super::PoolBackend;
use super::coded::Engine;
use crate::backend::{BackendError, Edit, ObjectId};

impl PoolBackend {
    fn rule(&self) -> usize {
        self.inner.cfg.code_from
    }

    /// Whether object `id` of a coded pool is on the replicated path.
    pub(super) fn replicated_here(&self, c: &Engine, id: ObjectId) -> bool {
        self.rule() > 0 && !c.holds_one(id) && self.inner.table.get(id).is_some()
    }

    /// Which of `ids` are on the replicated path.
    fn replicated_of(&self, c: &Engine, ids: &[ObjectId]) -> Vec<bool> {
        c.holds(ids)
            .into_iter()
            .zip(ids)
            .map(|(coded, &id)| !coded && self.inner.table.get(id).is_some())
            .collect()
    }

    /// Writes objects, each on the path its size picks.
    pub(super) fn mixed_put_many(
        &self,
        c: &Engine,
        items: &[(ObjectId, &[u8])],
    ) -> Result<(), BackendError> {
        let rule = self.rule();
        if rule == 0 {
            return c.put_many(items);
        }
        type Items<'a> = Vec<(ObjectId, &'a [u8])>;
        let (coded, small): (Items<'_>, Items<'_>) =
            items.iter().partition(|(_, d)| d.len() >= rule);
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
        if self.rule() == 0 {
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
        if self.rule() == 0 {
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
        if self.rule() == 0 {
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
