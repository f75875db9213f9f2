//! Far copies waiting to be freed: queued by dropped objects, sent to the backend in batches.

use parking_lot::Mutex;

use crate::backend::{Backend, ObjectId};
use crate::error::Result;

/// Frees queued before a batch `free` call is sent.
const FREE_BATCH: usize = 512;

/// Ids whose far copies are to be freed.
#[derive(Debug, Default)]
pub(crate) struct FreeQueue {
    ids: Mutex<Vec<ObjectId>>,
}

impl FreeQueue {
    /// Queues the far copy of `id`; sends the batch when it is full.
    pub(crate) fn queue(&self, id: ObjectId, backend: &dyn Backend) {
        let full = {
            let mut q = self.ids.lock();
            q.push(id);
            q.len() >= FREE_BATCH
        };
        if full && let Err(e) = self.flush(backend) {
            tracing::warn!("freeing far copies failed (will retry): {e}");
        }
    }

    /// Queues many ids without sending.
    pub(crate) fn extend(&self, ids: impl IntoIterator<Item = ObjectId>) {
        self.ids.lock().extend(ids);
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.ids.lock().is_empty()
    }

    /// Sends every queued free now.
    ///
    /// # Errors
    /// The backend's error; the ids stay queued.
    pub(crate) fn flush(&self, backend: &dyn Backend) -> Result<()> {
        let ids = std::mem::take(&mut *self.ids.lock());
        if ids.is_empty() {
            return Ok(());
        }
        if let Err(e) = backend.free(&ids) {
            self.ids.lock().extend(ids);
            return Err(e.into());
        }
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::EmbeddedStore;

    #[test]
    fn frees_are_batched_and_flushed() {
        let store = EmbeddedStore::new();
        let q = FreeQueue::default();
        for id in 1..=(FREE_BATCH as u64 + 1) {
            store.put(id, &[1]).unwrap();
        }
        for id in 1..FREE_BATCH as u64 {
            q.queue(id, &store);
        }
        assert_eq!(
            store.stats().unwrap().objects,
            FREE_BATCH as u64 + 1,
            "not sent yet"
        );
        q.queue(FREE_BATCH as u64, &store);
        assert!(q.is_empty());
        assert_eq!(store.stats().unwrap().objects, 1);
        q.extend([FREE_BATCH as u64 + 1]);
        q.flush(&store).unwrap();
        assert_eq!(store.stats().unwrap().objects, 0);
    }
}
