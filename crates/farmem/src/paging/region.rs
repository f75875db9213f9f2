//! [`PagedRegion`]: a virtual range backed by far memory through userfaultfd.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::backend::{Backend, ObjectId, Protection};

use super::core::Core;
use super::fault::{self, Worker};
use super::internal::InternalGuard;
use super::reclaim;
use super::sys::{self, PAGE, PageBuf, Uffd};
use super::{ForkLink, PagingConfig, PagingError, PagingStats, forks};

/// Longest run of prefetched pages mapped with one `UFFDIO_COPY` (each pager thread keeps a
/// buffer of this many pages).
const RUN_PAGES: usize = 64;
/// Smallest budget accepted, in pages.
const MIN_BUDGET_PAGES: usize = 16;
/// The top bits of the default object ids of paged regions (the object runtime's ids stay
/// below 2^62).
const PAGING_IDS: u64 = 0xFA6E_0000_0000_0000;

/// Checks that paging regions can be created here (userfaultfd with write-protect works).
/// See [`available_user_mode`] for regions with [`PagingConfig::allow_user_mode_only`].
///
/// ```
/// match farmem::paging::available() {
///     Ok(()) => println!("paging mode available"),
///     Err(e) => println!("skipping: {e}"),
/// }
/// ```
///
/// # Errors
/// [`PagingError::Unsupported`] with the reason otherwise.
pub fn available() -> Result<(), PagingError> {
    probe(false)
}

/// Like [`available`], for regions created with [`PagingConfig::allow_user_mode_only`]: also
/// succeeds where only user-mode faults may be handled (no privilege, Linux >= 5.11).
///
/// # Errors
/// [`PagingError::Unsupported`] with the reason otherwise.
pub fn available_user_mode() -> Result<(), PagingError> {
    probe(true)
}

/// Like [`available`], and forked children can be served ([`PagingConfig::serve_forks`]): the
/// kernel reports forks to userfaultfd (it needs `CAP_SYS_PTRACE`).
///
/// # Errors
/// [`PagingError::Unsupported`] with the reason otherwise.
pub fn available_fork_serving() -> Result<(), PagingError> {
    probe(false)?;
    if Uffd::open(false, true)?.fork_events() {
        Ok(())
    } else {
        Err(PagingError::Unsupported(
            "the kernel refuses userfaultfd fork events (they need CAP_SYS_PTRACE)".into(),
        ))
    }
}

fn probe(user_mode_fallback: bool) -> Result<(), PagingError> {
    if sys::page_size() != PAGE {
        return Err(PagingError::Unsupported(format!(
            "page size is {} bytes; the paging mode needs {PAGE}",
            sys::page_size()
        )));
    }
    let uffd = Uffd::open(user_mode_fallback, false)?;
    let len = 4 * PAGE;
    let base = sys::map_anonymous(len)?;
    let r = uffd.register(base, len);
    // SAFETY: the probe mapping was made just above and nothing refers to it.
    unsafe { sys::unmap(base, len) };
    r
}

/// A large virtual range whose pages live in a [`Backend`] and are paged in on demand.
///
/// Reads and writes are ordinary memory accesses through [`PagedRegion::as_ptr`]; at most
/// `budget_bytes` of it is resident at a time. See the [module docs](super) for the mechanics.
///
/// Dropping the region unmaps the range and frees its backend objects; nothing may access the
/// range afterwards.
pub struct PagedRegion {
    base: usize,
    len: usize,
    id_base: ObjectId,
    core: Arc<Core>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for PagedRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagedRegion")
            .field("base", &(self.base as *const u8))
            .field("len", &self.len)
            .finish()
    }
}

impl PagedRegion {
    /// Reserves `len` bytes (rounded up to pages) backed by `backend`, all zero initially.
    ///
    /// # Errors
    /// [`PagingError::Unsupported`] without usable userfaultfd, [`PagingError::Config`] for a zero
    /// length or a budget under 16 pages, [`PagingError::Mmap`] if the range cannot be reserved.
    pub fn new(
        len: usize,
        backend: Arc<dyn Backend>,
        config: PagingConfig,
    ) -> Result<Self, PagingError> {
        let _internal = InternalGuard::new();
        if len == 0 {
            return Err(PagingError::Config("region length is zero".into()));
        }
        if config.budget_bytes / PAGE < MIN_BUDGET_PAGES {
            return Err(PagingError::Config(format!(
                "local budget of {} bytes is under the minimum of {MIN_BUDGET_PAGES} pages",
                config.budget_bytes
            )));
        }
        if sys::page_size() != PAGE {
            return Err(PagingError::Unsupported(format!(
                "page size is {} bytes; the paging mode needs {PAGE}",
                sys::page_size()
            )));
        }
        let len = len
            .checked_next_multiple_of(PAGE)
            .ok_or_else(|| PagingError::Config(format!("region length {len} too large")))?;
        let pages = len / PAGE;
        let uffd = Uffd::open(config.allow_user_mode_only, config.serve_forks)?;
        let base = sys::map_anonymous(len)?;
        // By default page `i` is named after its virtual page number: unique among the live
        // regions of this process with no shared counter, and a region frees its objects before
        // its address range can be mapped again.
        let id_base = config
            .id_base
            .unwrap_or(PAGING_IDS | (base as u64 / PAGE as u64));
        // A protection takes bits 42-43 of the page ids: they must be free in the whole range.
        let id_base = match config.protection {
            Protection::BySize => id_base,
            p if Protection::tag(Protection::BySize, id_base) == id_base
                && Protection::of(id_base.saturating_add(pages as u64)) == Protection::BySize =>
            {
                p.tag(id_base)
            }
            _ => {
                // SAFETY: the mapping was made just above and nothing refers to it yet.
                unsafe { sys::unmap(base, len) };
                return Err(PagingError::Config(format!(
                    "page ids from {id_base:#x} use bits 42-43, which carry a protection"
                )));
            }
        };
        if let Err(e) = uffd.register(base, len) {
            // SAFETY: the mapping was made just above and nothing refers to it yet.
            unsafe { sys::unmap(base, len) };
            return Err(e);
        }
        let core = match Core::new(base, pages, id_base, backend, uffd, &config) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                // SAFETY: the mapping was made just above and nothing refers to it yet.
                unsafe { sys::unmap(base, len) };
                return Err(e);
            }
        };
        let mut region = Self {
            base,
            len,
            id_base,
            core,
            threads: Vec::new(),
        };
        // On error, dropping `region` stops the threads started so far and unmaps the range.
        region.start(&config)?;
        tracing::debug!(
            "paged region of {len} bytes at {base:#x}, budget {} bytes",
            config.budget_bytes
        );
        Ok(region)
    }

    /// Starts the pager threads and the reclaimer. On error the threads started so far are
    /// stopped when `self` is dropped.
    fn start(&mut self, config: &PagingConfig) -> Result<(), PagingError> {
        let spin = Duration::from_micros(config.pager_spin_us);
        // At least two pages: a demand fetch may bring its pair along (see `State::learn_pair`).
        let run_pages = self.core.initial.prefetch_max.clamp(2, RUN_PAGES);
        let reclaim_buf = PageBuf::new(self.core.initial.batch)?;
        let clean =
            (config.clean_interval_ms > 0).then(|| Duration::from_millis(config.clean_interval_ms));
        let core = self.core.clone();
        let t = std::thread::Builder::new()
            .name("farmem-reclaim".into())
            .spawn(move || reclaim::run(&core, reclaim_buf, clean))
            .map_err(PagingError::Sys)?;
        self.threads.push(t);
        for i in 0..config.pager_threads.max(1) {
            let worker = Worker::new(run_pages)?;
            let core = self.core.clone();
            let t = std::thread::Builder::new()
                .name(format!("farmem-pager-{i}"))
                .spawn(move || fault::serve(&core, worker, spin))
                .map_err(PagingError::Sys)?;
            self.threads.push(t);
        }
        if self.core.uffd.fork_events() {
            let core = self.core.clone();
            let t = std::thread::Builder::new()
                .name("farmem-forks".into())
                .spawn(move || forks::serve(&core))
                .map_err(PagingError::Sys)?;
            self.threads.push(t);
        }
        Ok(())
    }

    /// Whether forked children are served ([`PagingConfig::serve_forks`] and the kernel reports
    /// forks): a child reads every page as it was at the fork. Otherwise a child's copy of the
    /// range holds only the pages mapped at the fork and reads the others as zeros.
    pub fn serves_forks(&self) -> bool {
        self.core.uffd.fork_events()
    }

    /// To be called just before `fork` (a `pthread_atfork` prepare handler): takes the snapshot
    /// the child will be served from. Does nothing unless [`PagedRegion::serves_forks`].
    pub fn fork_prepare(&self) {
        if !self.serves_forks() {
            return;
        }
        let _internal = InternalGuard::new();
        let st = self.core.state.lock();
        self.core.forks.prepare(st.stored_bits());
        drop(st);
    }

    /// To be called in the parent just after `fork` (a `pthread_atfork` parent handler), with
    /// whether the fork succeeded: waits (a few microseconds) until the child is being served.
    pub fn fork_parent(&self, forked: bool) {
        if !self.serves_forks() {
            return;
        }
        let _internal = InternalGuard::new();
        self.core.forks.parent(forked);
    }

    /// To be called in the child just after `fork` (a `pthread_atfork` child handler, before the
    /// program goes on) when [`PagedRegion::serves_forks`]: the child's link to this region's
    /// serving thread in the parent. The caller must [`receive`](ForkLink::receive) its
    /// userfaultfd at once and then watch the link ([`ForkLink::wait`]) on a thread of its own:
    /// see [`ForkLink`]. `None` when the parent could not make the link (the child is then
    /// served as long as the parent runs, and reads the far pages it has not touched as zeros
    /// if the parent ends without [`PagedRegion::hand_over_forks`]).
    ///
    /// The child must not otherwise use the region (its pager threads stayed in the parent).
    pub fn fork_child(&self) -> Option<ForkLink> {
        if !self.serves_forks() {
            return None;
        }
        self.core.forks.child(self.base, self.len / PAGE)
    }

    /// At the parent's exit, with forked children still running: maps into each of them every
    /// far page it may still read (they are not served once the parent is gone). Does nothing
    /// when no child is served.
    pub fn hand_over_forks(&self) {
        if !self.serves_forks() || !self.core.forks.any() {
            return;
        }
        let _internal = InternalGuard::new();
        self.core.forks.hand_over(&self.core);
    }

    /// Start of the range. Valid for reads and writes of [`PagedRegion::len`] bytes until the
    /// region is dropped; accesses to non-resident pages block while the page is fetched.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base as *mut u8
    }

    /// Length in bytes (a multiple of the page size).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: regions are never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `ptr` points into the region.
    pub fn contains(&self, ptr: *const u8) -> bool {
        (self.base..self.base + self.len).contains(&(ptr as usize))
    }

    /// The backend object that holds the page at byte `offset` once it has been written back.
    pub fn object_id(&self, offset: usize) -> ObjectId {
        self.id_base + (offset / PAGE) as u64
    }

    /// Counters since creation.
    pub fn stats(&self) -> PagingStats {
        let _internal = InternalGuard::new();
        self.core.stats()
    }

    /// Changes the local budget to `budget_bytes` (rounded down to pages) and returns once the
    /// resident pages fit in it. The budget can be lowered and raised again, but never above the
    /// one the region was created with (a larger value means that one). Lowering it after a
    /// setup phase is what a memory cgroup limit tightened after setup does for kernel swap.
    ///
    /// # Errors
    /// [`PagingError::Config`] for a budget under 16 pages.
    pub fn set_budget(&self, budget_bytes: usize) -> Result<(), PagingError> {
        if budget_bytes / PAGE < MIN_BUDGET_PAGES {
            return Err(PagingError::Config(format!(
                "local budget of {budget_bytes} bytes is under the minimum of {MIN_BUDGET_PAGES} pages"
            )));
        }
        let _internal = InternalGuard::new();
        self.core.set_budget(budget_bytes / PAGE);
        Ok(())
    }

    /// Writes back every dirty page now (pages stay resident and clean).
    ///
    /// # Errors
    /// A backend error that persisted through the retries, or a failed system call.
    pub fn flush(&self) -> Result<(), PagingError> {
        let _internal = InternalGuard::new();
        self.core.flush()
    }

    /// Maps the pages of `[offset, offset+len)` (whole pages inside it) that were never written
    /// as zeros now, as far as free local memory allows, so that first touches of a fresh
    /// allocation take no fault. Returns how many pages it mapped (0 when the range is outside
    /// the region, or no slot is to spare).
    ///
    /// # Errors
    /// A failed system call.
    pub fn populate(&self, offset: usize, len: usize) -> Result<usize, PagingError> {
        let Some(end) = offset.checked_add(len).filter(|&e| e <= self.len) else {
            return Ok(0);
        };
        let first = offset.div_ceil(PAGE);
        let last = end / PAGE;
        if last <= first {
            return Ok(0);
        }
        let _internal = InternalGuard::new();
        self.core.populate(first, last - first)
    }

    /// Gives back the pages of `[offset, offset+len)` (whole pages inside it only): drops them
    /// locally and frees their backend copies. They read as zeros afterwards.
    ///
    /// # Errors
    /// [`PagingError::Config`] if the range is outside the region; backend or system-call errors.
    pub fn discard(&self, offset: usize, len: usize) -> Result<(), PagingError> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                PagingError::Config(format!(
                    "discard of {len} bytes at {offset} outside a region of {} bytes",
                    self.len
                ))
            })?;
        let first = offset.div_ceil(PAGE);
        let last = end / PAGE;
        if last <= first {
            return Ok(());
        }
        let _internal = InternalGuard::new();
        self.core.discard(first, last - first)
    }
}

impl Drop for PagedRegion {
    fn drop(&mut self) {
        let _internal = InternalGuard::new();
        self.core.stop.store(true, Ordering::Release);
        self.core.reclaim.notify_all();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("paging: a pager thread panicked");
            }
        }
        let pages = self.len / PAGE;
        if let Err(e) = self.core.discard(0, pages) {
            tracing::warn!("paging: freeing the region's backend objects failed: {e}");
        }
        // SAFETY: the mapping is ours; the pager threads have stopped and `&mut self` means no
        // accessor borrows the region any more (raw pointers must not outlive it, as documented).
        unsafe { sys::unmap(self.base, self.len) };
    }
}
