//! Local memory lent out of a runtime's budget to a cache that lives outside its heap (a
//! [`FarHashMap`](crate::containers::FarHashMap)'s entries), so one budget covers both.

use std::sync::Arc;

use super::{Inner, Runtime};
use crate::error::{Error, Result};

/// Bytes of a runtime's local budget lent out; given back when dropped.
pub(crate) struct LocalLoan {
    rt: Arc<Inner>,
    bytes: usize,
}

impl std::fmt::Debug for LocalLoan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLoan")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Runtime {
    /// Lends `bytes` of the local budget to a cache outside the heap: the heap's objects keep to
    /// what is left (the evacuator makes room at once), until the loan is dropped.
    ///
    /// # Errors
    /// [`Error::Config`] when the heap would keep less than an eighth of the budget, or less than
    /// the smallest budget a runtime accepts (eight regions).
    pub(crate) fn lend_local(&self, bytes: usize) -> Result<LocalLoan> {
        let heap = &self.inner.heap;
        let keep = (heap.budget / 8).max(8 * heap.region_size());
        if !heap.lend(bytes, keep) {
            return Err(Error::Config(format!(
                "cannot lend {bytes} bytes of a {}-byte local budget: the heap keeps at least \
                 {keep} (and what is lent already)",
                heap.budget
            )));
        }
        if self.inner.needs_evacuation() {
            self.inner.wake_evacuator();
        }
        Ok(LocalLoan {
            rt: self.inner.clone(),
            bytes,
        })
    }

    /// Bytes of the local budget the heap's objects may use: [`Runtime::budget`] less what
    /// caches charged to the runtime hold (see
    /// [`HashMapConfig::within_runtime`](crate::containers::HashMapConfig::within_runtime)).
    pub fn heap_budget(&self) -> usize {
        self.inner.heap.limit()
    }
}

impl Drop for LocalLoan {
    fn drop(&mut self) {
        self.rt.heap.take_back(self.bytes);
    }
}
