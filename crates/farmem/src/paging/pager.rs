//! The fault-handling state machine of a paged region: fetch, zero-fill, dirty tracking with
//! clean twins, CLOCK eviction, cache-line write-back and readahead.
//!
//! All methods run with the pager lock held and the [`InternalGuard`](super::InternalGuard) mark
//! set, so nothing here allocates paged memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{Backend, BackendError, Edit, ObjectId};

use super::clock::{Clock, Slot, Twin};
use super::sys::{self, Fault, PAGE, PageBuf, Uffd};
use super::{LINE_SIZE, PagingConfig, PagingError, PagingStats, WriteBack};

/// Objects freed per backend call when a range is discarded.
const FREE_CHUNK: usize = 4096;

/// Retries a backend call on transient errors (unreachable, disconnected, timeout) with doubling
/// back-off, about ten seconds in all.
fn retry<T>(what: &str, mut f: impl FnMut() -> Result<T, BackendError>) -> Result<T, BackendError> {
    let mut delay = Duration::from_millis(1);
    let mut attempt = 0;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(
                e @ (BackendError::Unreachable { .. }
                | BackendError::Disconnected { .. }
                | BackendError::Timeout { .. }),
            ) if attempt < 14 => {
                tracing::warn!("paging: {what} failed ({e}); retrying in {delay:?}");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(2));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Compares `page` with its clean `twin` line by line. Appends the dirty runs (adjacent dirty
/// lines merged) as `(offset, len)` to `runs` and returns how many bytes differ.
pub fn diff_lines(page: &[u8], twin: Option<&[u8]>, runs: &mut Vec<(u32, u32)>) -> u64 {
    let mut changed = 0u64;
    let zeros = [0u8; LINE_SIZE];
    for (i, line) in page.chunks(LINE_SIZE).enumerate() {
        let old = twin.map_or(&zeros[..line.len()], |t| &t[i * LINE_SIZE..][..line.len()]);
        if line == old {
            continue;
        }
        changed += line.iter().zip(old).filter(|(a, b)| a != b).count() as u64;
        let off = (i * LINE_SIZE) as u32;
        match runs.last_mut() {
            Some((o, l)) if *o + *l == off => *l += line.len() as u32,
            _ => runs.push((off, line.len() as u32)),
        }
    }
    changed
}

/// State of one paged region.
pub struct Pager {
    base: usize,
    pages: usize,
    id_base: ObjectId,
    backend: Arc<dyn Backend>,
    uffd: Arc<Uffd>,
    mode: WriteBack,
    readahead_max: usize,
    evict_batch: usize,
    budget_pages: usize,
    /// Bit per page: the backend holds a copy.
    stored: Vec<u64>,
    clock: Clock,
    twins: PageBuf,
    free_twins: Vec<u32>,
    fetch_buf: PageBuf,
    zeros: PageBuf,
    wb_buf: PageBuf,
    ra_buf: PageBuf,
    /// The page after the last sequential fault or readahead: a fault there continues a stream.
    seq_next: usize,
    ra_window: usize,
    stats: PagingStats,
}

impl Pager {
    /// A pager for `pages` pages at `base`, all absent.
    pub fn new(
        base: usize,
        pages: usize,
        id_base: ObjectId,
        backend: Arc<dyn Backend>,
        uffd: Arc<Uffd>,
        cfg: &PagingConfig,
    ) -> Result<Self, PagingError> {
        // More budget than pages is pointless (and would size the tables for nothing).
        let budget_pages = (cfg.budget_bytes / PAGE).min(pages).max(1);
        let evict_batch = cfg.evict_batch_pages.clamp(1, (budget_pages / 4).max(1));
        let readahead_max = cfg.readahead_max_pages.min(budget_pages / 4);
        Ok(Self {
            base,
            pages,
            id_base,
            backend,
            uffd,
            mode: cfg.write_back,
            readahead_max,
            evict_batch,
            budget_pages,
            stored: vec![0; pages.div_ceil(64)],
            clock: Clock::new(budget_pages),
            twins: PageBuf::new(budget_pages)?,
            free_twins: (0..budget_pages as u32).rev().collect(),
            fetch_buf: PageBuf::new(1)?,
            zeros: PageBuf::new(1)?,
            wb_buf: PageBuf::new(evict_batch)?,
            ra_buf: PageBuf::new(readahead_max)?,
            seq_next: usize::MAX,
            ra_window: 0,
            stats: PagingStats::default(),
        })
    }

    fn addr(&self, page: usize) -> usize {
        self.base + page * PAGE
    }

    fn id(&self, page: usize) -> ObjectId {
        self.id_base + page as u64
    }

    fn is_stored(&self, page: usize) -> bool {
        self.stored[page / 64] & (1 << (page % 64)) != 0
    }

    fn set_stored(&mut self, page: usize, on: bool) {
        if on {
            self.stored[page / 64] |= 1 << (page % 64);
        } else {
            self.stored[page / 64] &= !(1 << (page % 64));
        }
    }

    /// Counters, with the current resident count.
    pub fn stats(&self) -> PagingStats {
        PagingStats {
            resident_pages: self.clock.len() as u64,
            ..self.stats
        }
    }

    /// Serves one fault and wakes the faulting thread.
    ///
    /// # Errors
    /// A backend error that persisted through the retries, or a failed userfaultfd call.
    pub fn handle(&mut self, f: Fault) -> Result<(), PagingError> {
        let addr = f.address & !(PAGE - 1);
        if addr < self.base || addr >= self.base + self.pages * PAGE {
            return self.uffd.wake(addr, PAGE).map_err(PagingError::Sys);
        }
        let page = (addr - self.base) / PAGE;
        if self.clock.contains(page) {
            return self.on_resident(page, f);
        }
        if f.is_wp() {
            // Stale: the page was evicted after this write-protect fault was raised. The thread
            // retries its access and takes a missing fault.
            return self.uffd.wake(addr, PAGE).map_err(PagingError::Sys);
        }
        let t0 = Instant::now();
        self.make_room(1)?;
        let write = f.is_write();
        let stored = self.is_stored(page);
        let twin = if stored {
            let id = self.id(page);
            let (backend, buf) = (&self.backend, &mut self.fetch_buf);
            let tb = Instant::now();
            retry("fetch", || backend.get_into(id, &mut buf[..]))?;
            self.stats.fetch_backend_ns += tb.elapsed().as_nanos() as u64;
            if write {
                let t = self.take_twin()?;
                self.twins[t as usize * PAGE..][..PAGE].copy_from_slice(&self.fetch_buf);
                Twin::Buf(t)
            } else {
                Twin::None
            }
        } else if write {
            Twin::Zero
        } else {
            Twin::None
        };
        let src = if stored { &self.fetch_buf } else { &self.zeros };
        // Map without waking, so that the service time below ends when the page is in place and
        // does not include the faulting thread running (on a busy machine the woken thread may
        // preempt the pager right away).
        if !self
            .uffd
            .copy(addr, src, !write, false)
            .map_err(PagingError::Sys)?
        {
            // Cannot happen while every mapping goes through this pager.
            tracing::warn!("paging: page {page} was unexpectedly mapped already");
        }
        if stored {
            self.stats.fetch_fault_ns += t0.elapsed().as_nanos() as u64;
        }
        self.uffd.wake(addr, PAGE).map_err(PagingError::Sys)?;
        self.clock.insert(Slot {
            page,
            referenced: true,
            dirty: write,
            protected: !write,
            twin,
        });
        if stored {
            self.stats.fetch_faults += 1;
            self.readahead(page)?;
        } else {
            self.stats.zero_faults += 1;
            self.seq_next = usize::MAX;
        }
        // Refill the free slots now, while the woken thread runs, so that the next fault does not
        // wait for an eviction (and its write-back round trip).
        if self.clock.free_slots() == 0 {
            self.make_room(self.evict_batch)?;
        }
        Ok(())
    }

    /// A fault on a resident page: a write to a protected page, or a duplicate report.
    fn on_resident(&mut self, page: usize, f: Fault) -> Result<(), PagingError> {
        let addr = self.addr(page);
        let stored = self.is_stored(page);
        let Some(slot) = self.clock.get_mut(page) else {
            return Ok(());
        };
        slot.referenced = true;
        if !(f.is_wp() && slot.protected) {
            return self.uffd.wake(addr, PAGE).map_err(PagingError::Sys);
        }
        let needs_twin = !slot.dirty;
        if needs_twin {
            let twin = if stored {
                let t = self.take_twin()?;
                // SAFETY: the page is resident (it is in the clock) and write-protected, so it is
                // mapped and its contents cannot change during the copy.
                unsafe { sys::read_page(addr, self.twin_buf(t)) };
                Twin::Buf(t)
            } else {
                Twin::Zero
            };
            if let Some(slot) = self.clock.get_mut(page) {
                slot.twin = twin;
                slot.dirty = true;
            }
        }
        if let Some(slot) = self.clock.get_mut(page) {
            slot.protected = false;
        }
        self.stats.wp_faults += 1;
        self.uffd
            .write_protect(addr, PAGE, false)
            .map_err(PagingError::Sys)
    }

    fn take_twin(&mut self) -> Result<u32, PagingError> {
        self.free_twins
            .pop()
            .ok_or_else(|| PagingError::Config("internal: out of twin buffers".into()))
    }

    fn twin_buf(&mut self, t: u32) -> &mut [u8] {
        &mut self.twins[t as usize * PAGE..][..PAGE]
    }

    fn release_twin(&mut self, twin: Twin) {
        if let Twin::Buf(t) = twin {
            self.free_twins.push(t);
        }
    }

    /// Fetches the pages after `page` if the faults form a sequential stream.
    fn readahead(&mut self, page: usize) -> Result<(), PagingError> {
        if self.readahead_max == 0 {
            return Ok(());
        }
        if page != self.seq_next {
            self.ra_window = 0;
            self.seq_next = page + 1;
            return Ok(());
        }
        self.ra_window = (self.ra_window * 2).clamp(2, self.readahead_max);
        let end = (page + 1 + self.ra_window).min(self.pages);
        self.seq_next = end;
        let cands: Vec<usize> = (page + 1..end)
            .filter(|&p| self.is_stored(p) && !self.clock.contains(p))
            .collect();
        if cands.is_empty() {
            return Ok(());
        }
        self.make_room(cands.len())?;
        let ids: Vec<ObjectId> = cands.iter().map(|&p| self.id(p)).collect();
        let backend = &self.backend;
        let data = retry("readahead", || backend.get_many(&ids))?;
        for (&p, bytes) in cands.iter().zip(&data) {
            if bytes.len() != PAGE {
                return Err(BackendError::SizeMismatch {
                    id: self.id(p),
                    expected: PAGE as u64,
                    actual: bytes.len() as u64,
                }
                .into());
            }
            self.ra_buf[..PAGE].copy_from_slice(bytes);
            self.uffd
                .copy(self.addr(p), &self.ra_buf[..PAGE], true, true)
                .map_err(PagingError::Sys)?;
            self.clock.insert(Slot {
                page: p,
                referenced: false,
                dirty: false,
                protected: true,
                twin: Twin::None,
            });
            self.stats.prefetched += 1;
        }
        Ok(())
    }

    /// Evicts until `n` slots are free.
    fn make_room(&mut self, n: usize) -> Result<(), PagingError> {
        let n = n.min(self.budget_pages);
        if self.clock.free_slots() >= n {
            return Ok(());
        }
        let t0 = Instant::now();
        let r = self.evict_until_free(n);
        self.stats.evict_ns += t0.elapsed().as_nanos() as u64;
        r
    }

    fn evict_until_free(&mut self, n: usize) -> Result<(), PagingError> {
        while self.clock.free_slots() < n {
            let want = self.evict_batch.max(n - self.clock.free_slots());
            let uffd = &self.uffd;
            let base = self.base;
            let victims = self
                .clock
                .select_victims(want.min(self.evict_batch), |slot| {
                    // Re-protect referenced dirty pages so that a later write re-sets the bit.
                    if slot.dirty && !slot.protected {
                        match uffd.write_protect(base + slot.page * PAGE, PAGE, true) {
                            Ok(()) => slot.protected = true,
                            Err(e) => tracing::warn!("paging: re-protect failed: {e}"),
                        }
                    }
                });
            if victims.is_empty() {
                return Err(PagingError::Config("internal: no eviction victim".into()));
            }
            let dirty = victims
                .iter()
                .filter(|&&p| self.clock.get_mut(p).is_some_and(|s| s.dirty))
                .count();
            self.write_back_resident(&victims)?;
            self.stats.evicted_clean += (victims.len() - dirty) as u64;
            for page in victims {
                sys::drop_pages(self.addr(page), PAGE).map_err(PagingError::Sys)?;
                if let Some(slot) = self.clock.remove(page) {
                    self.release_twin(slot.twin);
                }
            }
        }
        Ok(())
    }

    /// Writes back the dirty pages among `pages` (all resident) and marks them clean and
    /// write-protected. Batches of [`PagingConfig::evict_batch_pages`] share one round trip.
    fn write_back_resident(&mut self, pages: &[usize]) -> Result<(), PagingError> {
        let dirty: Vec<usize> = pages
            .iter()
            .copied()
            .filter(|&p| self.clock.get_mut(p).is_some_and(|s| s.dirty))
            .collect();
        for chunk in dirty.chunks(self.evict_batch) {
            for (k, &page) in chunk.iter().enumerate() {
                let addr = self.addr(page);
                if let Some(slot) = self.clock.get_mut(page)
                    && !slot.protected
                {
                    // Write-protect first: from here on writers block in a fault, so the copy
                    // below is the final content.
                    self.uffd
                        .write_protect(addr, PAGE, true)
                        .map_err(PagingError::Sys)?;
                    slot.protected = true;
                }
                // SAFETY: the page is resident (in the clock) and write-protected.
                unsafe { sys::read_page(addr, &mut self.wb_buf[k * PAGE..][..PAGE]) };
            }
            self.send(chunk)?;
            for &page in chunk {
                if let Some(slot) = self.clock.get_mut(page) {
                    let twin = slot.twin;
                    slot.dirty = false;
                    slot.twin = Twin::None;
                    self.release_twin(twin);
                }
            }
        }
        Ok(())
    }

    /// Sends the contents in `wb_buf` of the dirty pages `chunk` to the backend.
    fn send(&mut self, chunk: &[usize]) -> Result<(), PagingError> {
        let mut runs: Vec<Vec<(u32, u32)>> = Vec::with_capacity(chunk.len());
        let mut whole: Vec<bool> = Vec::with_capacity(chunk.len());
        for (k, &page) in chunk.iter().enumerate() {
            let twin = self.clock.get_mut(page).map_or(Twin::Zero, |s| s.twin);
            let content = &self.wb_buf[k * PAGE..][..PAGE];
            let twin_bytes = match twin {
                Twin::Buf(t) => Some(&self.twins[t as usize * PAGE..][..PAGE]),
                Twin::Zero | Twin::None => None,
            };
            let mut r = Vec::new();
            let changed = diff_lines(content, twin_bytes, &mut r);
            self.stats.bytes_changed += changed;
            self.stats.whole_page_bytes += PAGE as u64;
            self.stats.written_back += 1;
            let stored = self.is_stored(page);
            // A never-stored page needs a full first copy, unless it is still all zeros.
            let full = (!stored && changed > 0) || (stored && self.mode == WriteBack::WholePage);
            if full {
                r.clear();
            }
            whole.push(full);
            runs.push(r);
        }
        let mut puts: Vec<(ObjectId, &[u8])> = Vec::new();
        let mut edit_lists: Vec<(ObjectId, Vec<Edit<'_>>)> = Vec::new();
        let mut sent = 0u64;
        for (k, &page) in chunk.iter().enumerate() {
            let content = &self.wb_buf[k * PAGE..][..PAGE];
            let id = self.id_base + page as u64;
            if whole[k] {
                puts.push((id, content));
                sent += PAGE as u64;
            } else if !runs[k].is_empty() {
                let edits: Vec<Edit<'_>> = runs[k]
                    .iter()
                    .map(|&(o, l)| (o, &content[o as usize..(o + l) as usize]))
                    .collect();
                sent += runs[k].iter().map(|&(_, l)| l as u64).sum::<u64>();
                edit_lists.push((id, edits));
            }
        }
        let backend = &self.backend;
        if !puts.is_empty() {
            retry("write-back", || backend.put_many(&puts))?;
        }
        if !edit_lists.is_empty() {
            let items: Vec<(ObjectId, &[Edit<'_>])> =
                edit_lists.iter().map(|(id, e)| (*id, &e[..])).collect();
            retry("write-back", || backend.patch_many(&items))?;
        }
        self.stats.bytes_sent += sent;
        for (k, &page) in chunk.iter().enumerate() {
            if whole[k] {
                self.set_stored(page, true);
            }
        }
        Ok(())
    }

    /// Writes back every dirty page; they stay resident, clean.
    ///
    /// # Errors
    /// A persistent backend error or a failed userfaultfd call.
    pub fn flush(&mut self) -> Result<(), PagingError> {
        let dirty: Vec<usize> = self
            .clock
            .iter_mut()
            .filter(|s| s.dirty)
            .map(|s| s.page)
            .collect();
        self.write_back_resident(&dirty)
    }

    /// Forgets pages `[first, first+n)`: drops them locally and frees their backend copies.
    /// Their next access reads zeros.
    ///
    /// # Errors
    /// A persistent backend error or a failed madvise.
    pub fn discard(&mut self, first: usize, n: usize) -> Result<(), PagingError> {
        let end = (first + n).min(self.pages);
        if first >= end {
            return Ok(());
        }
        let resident: Vec<usize> = if end - first <= 4 * self.clock.len() {
            (first..end).filter(|&p| self.clock.contains(p)).collect()
        } else {
            self.clock
                .iter_mut()
                .map(|s| s.page)
                .filter(|p| (first..end).contains(p))
                .collect()
        };
        for page in resident {
            if let Some(slot) = self.clock.remove(page) {
                self.release_twin(slot.twin);
            }
        }
        sys::drop_pages(self.addr(first), (end - first) * PAGE).map_err(PagingError::Sys)?;
        let mut ids = Vec::new();
        for page in first..end {
            if self.is_stored(page) {
                self.set_stored(page, false);
                ids.push(self.id(page));
            }
        }
        let backend = &self.backend;
        for chunk in ids.chunks(FREE_CHUNK) {
            retry("free", || backend.free(chunk))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_merges_adjacent_dirty_lines_and_counts_bytes() {
        let twin = vec![0u8; PAGE];
        let mut page = twin.clone();
        page[3] = 1; // line 0
        page[64] = 1; // line 1 (adjacent: merged)
        page[65] = 2;
        page[4095] = 9; // last line
        let mut runs = vec![];
        assert_eq!(diff_lines(&page, Some(&twin), &mut runs), 4);
        assert_eq!(runs, vec![(0, 128), (4032, 64)]);
        runs.clear();
        assert_eq!(diff_lines(&page, None, &mut runs), 4, "zero twin");
        runs.clear();
        assert_eq!(diff_lines(&twin, Some(&twin), &mut runs), 0);
        assert!(runs.is_empty());
    }
}
