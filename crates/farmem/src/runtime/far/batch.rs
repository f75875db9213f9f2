//! Operations of a [`Runtime`] over many far objects at once: batched prefetch and write-back.

use super::{Far, RawFar, sealed};
use crate::error::Result;
use crate::runtime::Runtime;
use crate::runtime::slot::Slot;

impl Runtime {
    /// Fetches every listed object that is not local in one backend round trip (`get_many`),
    /// as far as the local budget allows: it waits for room for the first object only, and
    /// stops at the first later one there is no room for (a prefetch never holds memory it has
    /// found while it waits for more). Objects of other runtimes are skipped. Returns how many
    /// objects were fetched.
    ///
    /// # Errors
    /// The backend's error, or [`Error::LocalHeapExhausted`](crate::Error::LocalHeapExhausted); objects not fetched stay far.
    pub fn prefetch<'a, O: Far + 'a>(
        &self,
        objs: impl IntoIterator<Item = &'a O>,
    ) -> Result<usize> {
        self.inner.prefetch(&self.own_idxs(objs), false)
    }

    /// Like [`Runtime::prefetch`], but non-temporal: the objects land in the regions the
    /// evacuator empties first and are not marked hot (for streaming scans). A later hot
    /// dereference ([`FarBox::read`](super::FarBox::read)) still marks them hot.
    ///
    /// # Errors
    /// As [`Runtime::prefetch`].
    pub fn prefetch_nt<'a, O: Far + 'a>(
        &self,
        objs: impl IntoIterator<Item = &'a O>,
    ) -> Result<usize> {
        self.inner.prefetch(&self.own_idxs(objs), true)
    }

    /// Writes every listed object whose local copy is dirty back to the backend in batched
    /// `put_many` calls (one round trip per `writeback_batch` bytes, not per object); the
    /// copies stay local and become clean, so the far copies are current (as after
    /// [`FarBox::flush`](super::FarBox::flush) on each). Objects of other runtimes are skipped. Returns how many
    /// objects were written.
    ///
    /// ```
    /// use farmem::{FarSlice, Runtime, RuntimeConfig};
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    /// let chunks: Vec<_> = (0..4u8).map(|i| FarSlice::from_slice(&rt, &[i; 8]).unwrap()).collect();
    /// assert_eq!(rt.flush_many(&chunks).unwrap(), 4);
    /// assert_eq!(rt.flush_many(&chunks).unwrap(), 0); // all clean now
    /// assert_eq!(rt.backend().get(chunks[3].far_id()).unwrap(), vec![3u8; 8]);
    /// ```
    ///
    /// # Errors
    /// The backend's error; objects of the failed batch stay dirty (earlier batches are written).
    pub fn flush_many<'a, O: Far + 'a>(
        &self,
        objs: impl IntoIterator<Item = &'a O>,
    ) -> Result<usize> {
        let slots: Vec<&Slot> = objs
            .into_iter()
            .map(sealed::Sealed::raw)
            .filter(|r| r.is_of(&self.inner))
            .map(RawFar::slot)
            .collect();
        self.inner.flush_many(&slots)
    }

    fn own_idxs<'a, O: Far + 'a>(&self, objs: impl IntoIterator<Item = &'a O>) -> Vec<u32> {
        objs.into_iter()
            .map(sealed::Sealed::raw)
            .filter(|r| r.is_of(&self.inner))
            .map(RawFar::idx)
            .collect()
    }
}
