//! The shared state of a paged region, used by its pager threads, its reclaimer and the
//! region's own methods (flush, discard, stats).
//!
//! # Locking
//! One mutex guards the bookkeeping ([`State`]); it is never held across a fetch, so faults on
//! different pages are served concurrently. A page being fetched is *in flight*: it owns a
//! reserved slot, nobody else maps it, discard waits for it. A page being written back by the
//! reclaimer is *evicting*: still mapped and write-protected; a writer waits until it has been
//! dropped. Write-backs (reclaimer batches, flush) are serialised by a second mutex taken
//! before the state mutex. Every thread that takes either lock is marked with
//! [`InternalGuard`](super::InternalGuard), so nothing done under them allocates paged memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use parking_lot::{Condvar, Mutex};

use crate::backend::{Backend, ObjectId};

use super::clock::{Clock, SAMPLE_TAG, Twin};
use super::forks::Forks;
use super::ghost::Ghosts;
use super::prefetch::Streams;
use super::sys::{self, PAGE, PageBuf, Uffd};
use super::writeback::{self, retry};
use super::{PagingConfig, PagingError, PagingStats, WriteBack};

/// Objects freed per backend call when a range is discarded.
const FREE_CHUNK: usize = 4096;
/// Demand fetches remembered to learn which pages are followed by their neighbour.
const RECENT: usize = 8;
/// Staging buffers (marker pages of prefetch windows) per region.
const STAGING: usize = 64;

/// Released buffers (see [`Pool::put_released`]) kept committed for reuse instead: at most
/// this many pages of memory beyond the budget.
const WARM: usize = 64;

/// Fixed-size page buffers handed out by index.
pub struct Pool {
    buf: PageBuf,
    /// Buffers given back.
    free: Vec<u32>,
    /// Buffers given back to be released but kept committed (at most [`WARM`]); handed out
    /// first, so that a pool that turns over (samples taken and resolved) neither returns
    /// memory to the kernel (an `madvise`, a TLB shootdown on every core) nor faults it back in
    /// (a zeroed page) for each buffer.
    warm: Vec<u32>,
    /// Buffers never handed out: `fresh..n`.
    fresh: u32,
    n: u32,
}

impl Pool {
    /// `n` buffers of one page (their memory is only committed when first written, and the
    /// free list grows as they are given back).
    pub fn new(n: usize) -> Result<Self, PagingError> {
        Ok(Self {
            buf: PageBuf::new(n)?,
            free: Vec::new(),
            warm: Vec::new(),
            fresh: 0,
            n: n as u32,
        })
    }

    /// A free buffer, if any.
    pub fn take(&mut self) -> Option<u32> {
        self.warm.pop().or_else(|| self.free.pop()).or_else(|| {
            (self.fresh < self.n).then(|| {
                self.fresh += 1;
                self.fresh - 1
            })
        })
    }

    /// Gives a buffer back.
    pub fn put(&mut self, i: u32) {
        self.free.push(i);
    }

    /// Gives a buffer back and returns its memory to the kernel, unless fewer than [`WARM`]
    /// buffers are kept committed for reuse: then it is kept as one of them.
    pub fn put_released(&mut self, i: u32) {
        if self.warm.len() < WARM {
            self.warm.push(i);
            return;
        }
        let addr = self.buf.as_ptr() as usize + i as usize * PAGE;
        if let Err(e) = sys::drop_pages(addr, PAGE) {
            tracing::warn!("paging: releasing a sample buffer failed: {e}");
        }
        self.free.push(i);
    }

    /// Returns the memory of every buffer not handed out to the kernel.
    pub fn release_free(&mut self) {
        self.free.append(&mut self.warm);
        for &i in &self.free {
            let addr = self.buf.as_ptr() as usize + i as usize * PAGE;
            if let Err(e) = sys::drop_pages(addr, PAGE) {
                tracing::warn!("paging: releasing a buffer failed: {e}");
            }
        }
    }

    /// Buffers not handed out.
    pub fn free_count(&self) -> usize {
        self.free.len() + self.warm.len() + (self.n - self.fresh) as usize
    }

    /// Buffer `i`.
    pub fn page(&self, i: u32) -> &[u8] {
        &self.buf[i as usize * PAGE..][..PAGE]
    }

    /// Buffer `i`, writable.
    pub fn page_mut(&mut self, i: u32) -> &mut [u8] {
        &mut self.buf[i as usize * PAGE..][..PAGE]
    }
}

/// A page being fetched.
#[derive(Clone, Copy, Debug, Default)]
pub struct InFlight {
    /// A thread faulted on it while it was in flight (a late prefetch, or a demand fetch).
    pub demanded: bool,
    /// Fetched by prefetching.
    pub prefetch: bool,
}

/// The figures derived from a local budget: the resident limit, the reclaimer's batch and
/// watermarks, and the largest prefetch window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most pages resident (and staged, and in flight) at once.
    pub pages: usize,
    /// Pages written back per reclaimer batch.
    pub batch: usize,
    /// The reclaimer starts when fewer slots than this are available...
    pub low: usize,
    /// ...and stops when this many are.
    pub high: usize,
    /// Largest prefetch window in pages.
    pub prefetch_max: usize,
}

impl Limits {
    /// The limits of a budget of `budget_pages` (at least 1) under `cfg`.
    pub fn new(budget_pages: usize, cfg: &PagingConfig) -> Self {
        let budget_pages = budget_pages.max(1);
        let batch = cfg.evict_batch_pages.clamp(1, (budget_pages / 4).max(1));
        let prefetch_max = cfg.readahead_max_pages.min(budget_pages / 4);
        // Room for the windows a sequential stream keeps in flight, so that reserving the next
        // one rarely finds the free slots short (a cut window costs a demand fault).
        let ahead = super::prefetch::DEPTH * prefetch_max;
        let low = batch.max(ahead).clamp(1, (budget_pages / 4).max(1));
        let high = (low + batch).min((budget_pages / 3).max(low + 1));
        Self {
            pages: budget_pages,
            batch,
            low,
            high,
            prefetch_max,
        }
    }
}

/// The bookkeeping of a region, under [`Core::state`].
pub struct State {
    /// The current budget's limits (at most the budget the region was created with).
    pub limits: Limits,
    /// Resident (and staged) pages.
    pub clock: Clock,
    /// Slots promised to pages in flight.
    pub reserved: usize,
    /// Pages being fetched.
    pub inflight: HashMap<usize, InFlight>,
    /// Slots being written back by the reclaimer.
    pub evicting: usize,
    /// Prefetch fetches outstanding.
    pub prefetching: usize,
    /// Bit per page: the backend holds a copy.
    stored: Vec<u64>,
    /// Bit per page: the last fetch of this page was soon followed by a fault on the next one
    /// (an object spanning both), so the two are fetched together.
    pairs: Vec<u64>,
    /// The latest demand-fetched pages (a ring), to learn [`State::pairs`].
    recent: [usize; RECENT],
    /// Next position in `recent`.
    recent_at: usize,
    /// Clean twins of dirty pages.
    pub twins: Pool,
    /// Marker pages of prefetch windows.
    pub staging: Pool,
    /// Copies of hot pages unmapped to sample whether they are still read.
    pub samples: Pool,
    /// Recently evicted pages.
    pub ghosts: Ghosts,
    /// Prefetch streams.
    pub streams: Streams,
    /// Counters.
    pub stats: PagingStats,
}

impl State {
    /// Whether the backend holds page `page`.
    pub fn is_stored(&self, page: usize) -> bool {
        self.stored[page / 64] & (1 << (page % 64)) != 0
    }

    /// The bits saying which pages the backend holds (a copy).
    pub fn stored_bits(&self) -> Vec<u64> {
        self.stored.clone()
    }

    /// Records whether the backend holds page `page`.
    pub fn set_stored(&mut self, page: usize, on: bool) {
        if on {
            self.stored[page / 64] |= 1 << (page % 64);
        } else {
            self.stored[page / 64] &= !(1 << (page % 64));
        }
    }

    /// Notes a demand fetch of `page`; returns whether its next page should come with it.
    /// A fetch of `page` shortly after one of `page - 1` (within the last [`RECENT`] fetches)
    /// teaches that `page - 1` pairs with its neighbour, as the two pages of an object larger
    /// than a page that straddles them do. Pages stay paired.
    pub fn learn_pair(&mut self, page: usize) -> bool {
        if page > 0 && self.recent.contains(&(page - 1)) {
            self.pairs[(page - 1) / 64] |= 1 << ((page - 1) % 64);
        }
        self.recent[self.recent_at] = page;
        self.recent_at = (self.recent_at + 1) % RECENT;
        self.pairs[page / 64] & (1 << (page % 64)) != 0
    }

    /// Slots neither used nor promised.
    pub fn available(&self) -> usize {
        self.limits
            .pages
            .saturating_sub(self.clock.len() + self.reserved)
    }

    /// Makes the pages the prefetch streams left behind since the last call the first victims
    /// (see [`Clock::consumed`]).
    pub fn note_consumed(&mut self) {
        let mut pages = std::mem::take(&mut self.streams.consumed);
        for &p in &pages {
            self.clock.consumed(p);
        }
        pages.clear();
        self.streams.consumed = pages;
    }

    /// Gives back the resources of a slot leaving the resident set.
    pub fn release(&mut self, twin: Twin, staged: Option<(u32, u32)>) {
        if let Twin::Buf(t) = twin {
            self.twins.put(t);
        }
        match staged {
            Some((b, SAMPLE_TAG)) => self.samples.put_released(b),
            Some((b, _)) => self.staging.put(b),
            None => {}
        }
    }
}

/// What the threads of one region share.
pub struct Core {
    /// Start of the range.
    pub base: usize,
    /// Pages in the range.
    pub pages: usize,
    /// Object id of page 0.
    pub id_base: ObjectId,
    /// Where the pages live.
    pub backend: Arc<dyn Backend>,
    /// The region's userfaultfd.
    pub uffd: Uffd,
    /// Write-back mode.
    pub mode: WriteBack,
    /// The limits of the budget the region was created with (its largest): sizes buffers and
    /// tables. The current ones are [`State::limits`].
    pub initial: Limits,
    /// Settings the limits are derived from.
    cfg: PagingConfig,
    /// Most prefetches outstanding at once (so that pager threads stay free for faults).
    pub max_prefetching: usize,
    /// Zeros for a run of first-touched pages ([`fault::ZERO_RUN`](super::fault::ZERO_RUN)
    /// pages).
    pub zeros: PageBuf,
    /// The bookkeeping.
    pub state: Mutex<State>,
    /// Signalled when slots are freed, a write-back completes or a fetch lands.
    pub changed: Condvar,
    /// Wakes the reclaimer.
    pub reclaim: Condvar,
    /// Serialises write-backs (taken before `state`).
    pub wb_lock: Mutex<()>,
    /// Held by the one pager thread that waits for the next fault. A `std` mutex: threads
    /// queued for it sleep at once instead of spinning with `sched_yield` first (which, with
    /// several idle pager threads on few cores, cost more system calls than the faults).
    pub poll_token: std::sync::Mutex<()>,
    /// Drops evicted and sampled pages in batches.
    pub dropper: sys::Dropper,
    /// Set when the region is dropped.
    pub stop: AtomicBool,
    /// Snapshots for forked children.
    pub forks: Forks,
}

impl Core {
    /// The shared state for `pages` pages at `base`, all absent.
    pub fn new(
        base: usize,
        pages: usize,
        id_base: ObjectId,
        backend: Arc<dyn Backend>,
        uffd: Uffd,
        cfg: &PagingConfig,
    ) -> Result<Self, PagingError> {
        // More budget than pages is pointless (and would size the tables for nothing).
        let budget_pages = (cfg.budget_bytes / PAGE).min(pages).max(1);
        let initial = Limits::new(budget_pages, cfg);
        let threads = cfg.pager_threads.max(1);
        Ok(Self {
            base,
            pages,
            id_base,
            backend,
            uffd,
            mode: cfg.write_back,
            initial,
            cfg: cfg.clone(),
            max_prefetching: threads.saturating_sub(1).max(1),
            zeros: PageBuf::new(super::fault::ZERO_RUN)?,
            state: Mutex::new(State {
                limits: initial,
                clock: Clock::new(budget_pages),
                reserved: 0,
                inflight: HashMap::new(),
                evicting: 0,
                prefetching: 0,
                stored: vec![0; pages.div_ceil(64)],
                pairs: vec![0; pages.div_ceil(64)],
                recent: [usize::MAX; RECENT],
                recent_at: 0,
                twins: Pool::new(budget_pages)?,
                staging: Pool::new(STAGING.min(budget_pages / 4))?,
                samples: Pool::new(budget_pages / 4)?,
                ghosts: Ghosts::new((budget_pages / 8).max(16)),
                streams: Streams::new(initial.prefetch_max),
                stats: PagingStats::default(),
            }),
            changed: Condvar::new(),
            reclaim: Condvar::new(),
            wb_lock: Mutex::new(()),
            poll_token: std::sync::Mutex::new(()),
            dropper: sys::Dropper::new(),
            stop: AtomicBool::new(false),
            forks: Forks::default(),
        })
    }

    /// Address of page `page`.
    pub fn addr(&self, page: usize) -> usize {
        self.base + page * PAGE
    }

    /// Object of page `page`.
    pub fn id(&self, page: usize) -> ObjectId {
        self.id_base + page as u64
    }

    /// Writes `items` (contents in `buf`) back, after keeping the backend copies that a forked
    /// child's snapshot still needs (see [`Forks::preserve`]). Returns the payload bytes sent.
    ///
    /// # Errors
    /// A backend error that persisted through the retries.
    pub fn send(&self, items: &[writeback::Item], buf: &[u8]) -> Result<u64, PagingError> {
        if self.forks.any() {
            let pages: Vec<usize> = items
                .iter()
                .filter(|it| it.whole || !it.runs.is_empty())
                .map(|it| it.page)
                .collect();
            self.forks.preserve(self, &pages)?;
        }
        Ok(writeback::send(&*self.backend, items, buf)?)
    }

    /// Counters, with the current resident count and the prefetcher's.
    pub fn stats(&self) -> PagingStats {
        let st = self.state.lock();
        PagingStats {
            resident_pages: st.clock.len() as u64,
            prefetch_used: st.streams.counters.used,
            prefetch_wasted: st.streams.counters.wasted,
            dropped_behind: st.clock.behind_counts.0,
            behind_refaults: st.clock.behind_counts.1,
            ..st.stats
        }
    }

    /// Changes the budget to `budget_pages` (at most the one the region was created with) and
    /// waits until the reclaimer has evicted down to it. The watermarks, prefetch windows and
    /// histories follow the new budget; twin buffers no longer in use are returned to the kernel.
    pub fn set_budget(&self, budget_pages: usize) {
        let limits = Limits::new(budget_pages.min(self.initial.pages), &self.cfg);
        let mut st = self.state.lock();
        st.limits = limits;
        st.clock.set_sample_window(limits.pages);
        st.ghosts.set_capacity((limits.pages / 8).max(16));
        st.streams.set_max_window(limits.prefetch_max);
        while st.clock.len() + st.reserved > limits.pages.saturating_sub(limits.low)
            && !self.stop.load(std::sync::atomic::Ordering::Acquire)
        {
            self.reclaim.notify_one();
            self.changed
                .wait_for(&mut st, std::time::Duration::from_millis(10));
        }
        st.twins.release_free();
    }

    /// Writes back every dirty page; they stay resident, clean. Holds the state lock throughout
    /// (faults wait), which is fine for an explicit, rare call.
    ///
    /// # Errors
    /// A persistent backend error or a failed userfaultfd call.
    pub fn flush(&self) -> Result<(), PagingError> {
        let _wb = self.wb_lock.lock();
        let mut st = self.state.lock();
        let dirty: Vec<usize> = st
            .clock
            .iter_mut()
            .filter(|s| s.dirty && !s.evicting)
            .map(|s| s.page)
            .collect();
        let batch = st.limits.batch;
        let mut buf = PageBuf::new(batch)?;
        for chunk in dirty.chunks(batch) {
            let mut items = Vec::with_capacity(chunk.len());
            for (k, &page) in chunk.iter().enumerate() {
                let addr = self.addr(page);
                let Some(slot) = st.clock.get_mut(page) else {
                    continue;
                };
                if !slot.protected {
                    // Writers block in a fault from here on: the copy is the final content.
                    self.uffd
                        .write_protect(addr, PAGE, true)
                        .map_err(PagingError::Sys)?;
                    slot.protected = true;
                }
                let twin = slot.twin;
                let out = &mut buf[k * PAGE..][..PAGE];
                // SAFETY: the page is resident (in the clock, not staged: staged pages are never
                // dirty) and write-protected.
                unsafe { sys::read_page(addr, out) };
                let stored = st.is_stored(page);
                let twin_bytes = match twin {
                    Twin::Buf(t) => Some(st.twins.page(t)),
                    _ => None,
                };
                let (it, changed) = writeback::plan(
                    page,
                    self.id(page),
                    k,
                    &buf[k * PAGE..][..PAGE],
                    twin_bytes,
                    stored,
                    self.mode,
                );
                st.stats.bytes_changed += changed;
                items.push(it);
            }
            let sent = self.send(&items, &buf)?;
            st.stats.bytes_sent += sent;
            for it in &items {
                st.stats.written_back += 1;
                st.stats.whole_page_bytes += PAGE as u64;
                if it.whole {
                    st.set_stored(it.page, true);
                }
                if let Some(slot) = st.clock.get_mut(it.page) {
                    let twin = std::mem::replace(&mut slot.twin, Twin::None);
                    slot.dirty = false;
                    st.release(twin, None);
                }
            }
        }
        Ok(())
    }

    /// Maps zeros, writable, on the pages of `[first, first+n)` that were never stored and are
    /// neither resident nor in flight, while the free slots stay above the reclaimer's high
    /// watermark: a fresh allocation is then used without a first-touch fault per run of pages.
    /// Returns the pages mapped. Pages left untouched cost nothing to evict (they are dropped
    /// unsent).
    ///
    /// # Errors
    /// A failed `UFFDIO_COPY`.
    pub fn populate(&self, first: usize, n: usize) -> Result<usize, PagingError> {
        let end = first.saturating_add(n).min(self.pages);
        let zrun = super::fault::ZERO_RUN;
        let mut st = self.state.lock();
        let mut mapped = 0;
        let mut page = first;
        while page < end {
            let free = |st: &State, p: usize| {
                !st.is_stored(p) && !st.clock.contains(p) && !st.inflight.contains_key(&p)
            };
            if !free(&st, page) {
                page += 1;
                continue;
            }
            let room = st.available().saturating_sub(st.limits.high);
            let mut k = 0;
            while k < zrun.min(room) && page + k < end && free(&st, page + k) {
                k += 1;
            }
            if k == 0 {
                break;
            }
            self.uffd
                .copy(self.addr(page), &self.zeros[..k * PAGE], false, false)
                .map_err(PagingError::Sys)?;
            for p in page..page + k {
                st.clock
                    .insert(super::clock::Slot::new(p, true, true, Twin::Zero));
            }
            st.stats.zero_faults += 1;
            mapped += k;
            page += k;
        }
        Ok(mapped)
    }

    /// Forgets pages `[first, first+n)`: drops them locally and frees their backend copies.
    /// Their next access reads zeros. Waits for fetches and write-backs of these pages first;
    /// holds the state lock through the free, so that no later write-back of a page of the range
    /// can overtake it.
    ///
    /// # Errors
    /// A persistent backend error or a failed madvise.
    pub fn discard(&self, first: usize, n: usize) -> Result<(), PagingError> {
        let end = first.saturating_add(n).min(self.pages);
        if first >= end {
            return Ok(());
        }
        let mut st = self.state.lock();
        loop {
            let in_range = |p: &usize| (first..end).contains(p);
            let busy = st.inflight.keys().any(in_range)
                || (st.evicting > 0
                    && st.clock.iter_mut().any(|s| s.evicting && in_range(&s.page)));
            if !busy {
                break;
            }
            self.changed.wait(&mut st);
        }
        let resident: Vec<usize> = if end - first <= 4 * st.clock.len() {
            (first..end).filter(|&p| st.clock.contains(p)).collect()
        } else {
            st.clock
                .iter_mut()
                .map(|s| s.page)
                .filter(|p| (first..end).contains(p))
                .collect()
        };
        for page in resident {
            if let Some(slot) = st.clock.remove(page) {
                st.release(slot.twin, slot.staged);
            }
        }
        st.ghosts.forget_range(first, end);
        sys::drop_pages(self.addr(first), (end - first) * PAGE).map_err(PagingError::Sys)?;
        let mut ids = Vec::new();
        // Copies a forked child's snapshot still needs stay on the backend until it ends.
        let snaps = self.forks.current(self);
        for page in first..end {
            if st.is_stored(page) {
                st.set_stored(page, false);
                if snaps.is_empty() || !Forks::keep(&snaps, page) {
                    ids.push(self.id(page));
                }
            }
        }
        st.stats.freed_stored += ids.len() as u64;
        for chunk in ids.chunks(FREE_CHUNK) {
            retry("free", || self.backend.free(chunk))?;
        }
        self.changed.notify_all();
        Ok(())
    }
}
