//! Paging mode: far memory for unmodified code, through userfaultfd.
//!
//! A [`PagedRegion`] is a large virtual range whose 4 KiB pages live in a [`Backend`](crate::backend::Backend) (one object
//! per page) and are brought in on demand, without kernel changes:
//!
//! - **Faults in parallel.** [`PagingConfig::pager_threads`] pager threads take turns waiting
//!   on the region's userfaultfd (one at a time, so a fault wakes one thread) and each serves one
//!   fault at a time. The bookkeeping lock is never held across a fetch, so
//!   faults on different pages are served concurrently (the TCP transport pipelines their
//!   requests) and no fault waits behind another one's round trip. A fault on a page already
//!   being fetched waits for that fetch.
//! - **Missing fault**: the page is fetched into a page-aligned buffer and mapped with
//!   `UFFDIO_COPY`, write-protected so it starts *clean*; a page never written back maps zeros,
//!   along with up to 63 following never-stored pages in the same `UFFDIO_COPY` (first touches
//!   come in sequences; all-zero pages are never sent at eviction).
//!   A write fault maps the page writable at once (already dirty).
//! - **Dirty tracking**: the first write to a clean page raises a write-protect fault; the pager
//!   saves a *clean twin* (the page as the backend has it), then un-protects it.
//! - **Reclaim in the background.** A reclaimer thread keeps between `low` and `high` free slots
//!   (watermarks derived from [`PagingConfig::evict_batch_pages`] and the prefetch window), as
//!   kswapd does. Clean victims are dropped (`MADV_DONTNEED`, one call per run of consecutive
//!   pages), never written; so are dirty victims whose contents equal the backend's copy (or
//!   are still all zeros). Dirty victims are write-protected, copied and written back in one
//!   batched request without holding the lock, then dropped; a writer of such a page waits until
//!   it is gone. Optionally it also *cleans* every few milliseconds: it writes back the dirty
//!   pages ahead of the CLOCK hand not written since its previous pass and keeps them resident,
//!   clean, so that evicting them later needs no write-back, and evicts clean victims first
//!   ([`PagingConfig::clean_interval_ms`]). With [`WriteBack::CacheLine`] only the 64-byte lines that differ from the twin
//!   are sent ([`Backend::patch_many`](crate::backend::Backend::patch_many)); [`WriteBack::WholePage`] sends whole pages like a swap
//!   device. A fault evicts nothing itself; it waits only when the reclaimer falls behind
//!   ([`PagingStats::reclaim_waits`]).
//! - **Replacement** is CLOCK over resident pages. Every fault on a page sets its reference bit.
//!   When the hand passes a referenced dirty page it write-protects it again, so a later write
//!   re-sets the bit with a cheap write-protect fault. Reads of a mapped page are invisible to user
//!   space on this kernel: `/proc/self/pagemap` has no accessed bit and the idle-page bitmap
//!   (`/sys/kernel/mm/page_idle`, `CONFIG_IDLE_PAGE_TRACKING`) is often not built in. Instead a
//!   ghost history remembers the last eighth of a budget's worth of evictions; a page that faults
//!   again while remembered was hot ([`PagingStats::refaults`]) and gets credits: it stays
//!   resident unobserved for that many windows of an eighth of a budget's worth of evictions (3
//!   at first, doubling each time it proves hot again, up to 96). Credits are spent by
//!   evictions, not by passes of the hand, so a resident set full of hot pages (which the hand
//!   passes quickly) does not run them out faster; a revolution that finds no victim at all
//!   charges every page one. When its last credit is spent on a clean page, the reclaimer
//!   *samples* it: it copies the page to a
//!   local buffer and unmaps it. If the program reads it again it takes a local fault (no
//!   network), the page is mapped back and its grant doubles ([`PagingStats::sample_hits`]); if
//!   not within a window of an eighth of a budget's worth of evictions, it is evicted. Pages that
//!   stay hot are thus sampled rarely, and pages that were hot once leave. While most recently
//!   sampled pages prove still in use (sampling then mostly costs local faults), a sample hit
//!   quadruples the grant instead, up to 240. The unmapped pages of a batch of victims and
//!   samples are dropped with one `process_madvise` call (one TLB flush on current kernels;
//!   one `madvise` per run where that call is unavailable).
//! - **Drop-behind.** Pages a prefetch stream brought in and has left behind are used once, and
//!   are the first victims, before anything the CLOCK hand would choose (and before dirty
//!   pages, which cost a write-back), as the kernel does with used-once pages and Leap with
//!   prefetched pages once used: a scan of an array larger than the budget recycles its own few
//!   frames instead of evicting the rest of the resident set (a dirty tail a program just wrote
//!   stays resident, unwritten, and is found there when the scan reaches it). Since reads of
//!   mapped pages are invisible, "consumed" is judged by the stream's progress: when the
//!   program enters a window (touches its staged marker, or takes a demand fault that continues
//!   the stream), the prefetched pages more than one window behind that position are consumed
//!   (never a page that proved hot, nor one demand-fetched). Any later fault on such a page
//!   (a write, a sample) makes it an ordinary page again. A page evicted behind a stream that
//!   is needed again while the ghost history remembers it (refaulted, or prefetched by a later
//!   pass) is a mistake ([`PagingStats::behind_refaults`]): while more than one in eight recent
//!   drop-behind victims came back that soon (a loop over an array that almost fits), consumed
//!   pages get no precedence, until a budget's worth of evictions has halved the mistakes.
//!   See [`PagingStats::dropped_behind`].
//! - **Pairs.** A page fetched shortly before a fault on the next page (an object straddling
//!   both) is remembered as a pair; its next demand fetch brings the neighbour along in the same
//!   request and maps both with one `UFFDIO_COPY` (off when prefetching is off).
//! - **Prefetching that follows the program.** Faults are grouped into streams by proximity
//!   (per region; several threads or interleaved arrays get separate streams). A stream's trend
//!   is the majority delta of its last faults (as in Leap): sequential, reverse or strided. The
//!   next two windows of pages along the trend are fetched, each in one batched request, after
//!   the faulting thread has been woken, and mapped with one `UFFDIO_COPY` per run of consecutive
//!   pages. The first page of each window is kept unmapped (staged locally): its first touch is
//!   a cheap fault without network that fetches one more window, so two stay ahead of the
//!   program; if the program reaches it while it is still in flight, the next window is asked
//!   for as soon as this one arrives. A window cut short for want of free slots resumes where it
//!   was cut. The window doubles while windows are used and halves when the stream breaks off, up to
//!   [`PagingConfig::readahead_max_pages`]. See [`PagingStats::prefetch_accuracy`] and
//!   [`PagingStats::prefetch_coverage`].
//!
//! - **Forks** ([`PagingConfig::serve_forks`]): a child created by `fork` reads every page as
//!   it was at the fork and writes privately. Its faults arrive on a userfaultfd of its own
//!   (`UFFD_FEATURE_EVENT_FORK`) and a thread of the parent serves them from a snapshot: the
//!   stored bits at the fork, plus the old copy of each page the parent overwrites or frees on
//!   the backend while the child may still read it. The child keeps a copy of its userfaultfd
//!   and watches the parent through a [`ForkLink`]: if the parent ends without
//!   [`PagedRegion::hand_over_forks`], the far pages the child lacks become inaccessible rather
//!   than zeros.
//!
//! Local memory: at most `budget_bytes` of resident pages (staged and in-flight pages included),
//! plus one 4 KiB clean twin per dirty resident page (so up to twice the budget when every
//! resident page is dirty), plus per pager thread one page and a run buffer of up to 64 pages, a write-back buffer of
//! `evict_batch_pages` pages, up to 64 staging pages (within the budget), up to 64 spare
//! sample buffers kept committed for reuse, two bits per page of
//! the region, and about 60 bytes per budget page of tables (resident set, ghost history,
//! queue of consumed stream pages).
//!
//! The transparent mode, [`PagingAlloc`], is a global allocator that places large allocations in a
//! paged region, so ordinary `Vec`/`HashMap` code runs on far memory.
//!
//! # Failure
//! Creating a region on a machine without usable userfaultfd (not root and no unprivileged
//! userfaultfd, old kernel, no write-protect support) returns [`PagingError::Unsupported`] with the
//! reason. Once running, a backend error during a fault is retried with back-off for about ten
//! seconds; after that the process is aborted with a message, like a failed swap device: a thread
//! blocked in a page fault cannot be handed an error, and carrying on would lose data.
//! A backend error that is not transient aborts at once, among them a server declared down: a
//! [`TcpBackend`](crate::backend::TcpBackend) with its default heartbeat declares a server down
//! after one second of silence, which a loaded machine can cause, so give a region's only server
//! [`TcpConfig::without_failover`](crate::backend::TcpConfig::without_failover) (a stall then
//! only delays faults); keep a heartbeat where a pool has replicas to fail over to.
//!
//! # Example
//! ```no_run
//! use std::sync::Arc;
//! use farmem::EmbeddedStore;
//! use farmem::paging::{PagedRegion, PagingConfig};
//!
//! let store = Arc::new(EmbeddedStore::new());
//! let region = PagedRegion::new(64 << 20, store, PagingConfig::new(16 << 20))?;
//! let p = region.as_ptr();
//! // SAFETY: the region is 64 MiB of plain memory, alive until `region` is dropped.
//! unsafe { p.add(40 << 20).write(7) };
//! // SAFETY: as above.
//! assert_eq!(unsafe { p.add(40 << 20).read() }, 7);
//! # Ok::<(), farmem::paging::PagingError>(())
//! ```

mod alloc;
mod clock;
mod core;
mod extents;
mod fault;
mod fork_link;
mod forks;
mod ghost;
mod internal;
mod prefetch;
mod reclaim;
mod region;
mod sys;
mod writeback;

use crate::backend::{BackendError, ObjectId};

pub use alloc::{AllocConfig, PagingAlloc};
pub use extents::Extents;
pub use fork_link::{ForkLink, LinkEnd};
pub use internal::InternalGuard;
pub use region::{PagedRegion, available, available_fork_serving, available_user_mode};

/// Bytes per page of a paged region.
pub const PAGE_SIZE: usize = sys::PAGE;
/// Bytes per cache line: the unit of [`WriteBack::CacheLine`] write-back.
pub const LINE_SIZE: usize = 64;

/// How dirty pages are written back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WriteBack {
    /// Send only the 64-byte lines that changed since the page was fetched (Kona-style).
    #[default]
    CacheLine,
    /// Send whole 4 KiB pages, like kernel swap (the baseline).
    WholePage,
}

/// Settings of a paged region.
#[derive(Clone, Debug)]
pub struct PagingConfig {
    /// Most bytes of the region resident at once (rounded down to pages; at least 16 pages).
    /// Dirty pages additionally keep a 4 KiB clean twin in [`WriteBack::CacheLine`] mode.
    pub budget_bytes: usize,
    /// Cache-line or whole-page write-back.
    pub write_back: WriteBack,
    /// Largest prefetch window in pages (sequential, reverse and strided streams; at most a
    /// quarter of the budget); 0 disables prefetching.
    pub readahead_max_pages: usize,
    /// Pages the background reclaimer evicts per batch (their write-backs share a round trip);
    /// also sets its watermarks.
    pub evict_batch_pages: usize,
    /// After serving a fault a pager thread that waits for the next one polls this many
    /// microseconds before it sleeps (saves the pager's wake-up per fault, but on a machine
    /// with few, busy cores the spinning thread takes the CPU the program and the memory server
    /// need: on two loaded vCPUs 50 us of spin made faults 15-20 us slower as the program sees
    /// them). 0, the default, never spins.
    pub pager_spin_us: u64,
    /// Pager threads serving faults concurrently (at least 1).
    pub pager_threads: usize,
    /// Background cleaning: every this many milliseconds the reclaimer writes back the dirty
    /// pages the program has not written since its previous pass (they stay resident, clean),
    /// so that evicting them later is a drop rather than a write-back on the way of a fault.
    /// A page written again after cleaning costs a write-protect fault and a twin copy.
    /// 0, the default, disables cleaning (dirty pages are written back only when evicted or
    /// flushed): on the taxi analysis, cleaning every 10 ms took the faults' waits for free
    /// slots from about 40 ms to 0-3 ms but wrote back 30-70% more (temporaries cleaned before
    /// they were freed), with no gain in time. With cleaning on, eviction prefers clean victims.
    pub clean_interval_ms: u64,
    /// First backend object id; page `i` is object `id_base + i`. `None` names each page after
    /// its virtual page number (ids `0xFA6E_xxxx_...`), unique among this process's regions.
    pub id_base: Option<ObjectId>,
    /// When the process may not open a full userfaultfd (not root and
    /// `vm.unprivileged_userfaultfd = 0`), open one that reports user-mode faults only
    /// (`UFFD_USER_MODE_ONLY`, Linux >= 5.11) instead of failing. The price: a system call that
    /// reads or writes a page of the region that is not resident (`read(2)` into a paged buffer)
    /// fails with `EFAULT` instead of waiting for the page. Default `false`.
    pub allow_user_mode_only: bool,
    /// How a coded pool keeps the region's pages (see [`Protection`](crate::backend::Protection);
    /// carried in the pages' ids, also under an [`id_base`](PagingConfig::id_base) of the
    /// caller's). Default [`Protection::BySize`](crate::backend::Protection::BySize): the
    /// pool's size rule, which replicates 4 KiB pages unless it codes every object.
    pub protection: crate::backend::Protection,
    /// Serve the region to forked children: a child created by `fork` reads every page as it
    /// was at the fork and writes privately, while the parent goes on paging. Needs fork events
    /// from userfaultfd (`CAP_SYS_PTRACE`, so not with a user-mode-only userfaultfd); without
    /// them [`PagedRegion::serves_forks`] is `false` and a child's copy of the range holds only
    /// the pages that were mapped at the fork. A process that forks with this on must call
    /// [`PagedRegion::fork_prepare`] before and [`PagedRegion::fork_parent`] after each fork
    /// (from `pthread_atfork` handlers), and the child [`PagedRegion::fork_child`] (then watch
    /// its [`ForkLink`]; a child that does not take its link waits forever for far pages it
    /// had not touched if the parent ends without [`PagedRegion::hand_over_forks`]). Default
    /// `false`.
    pub serve_forks: bool,
}

impl PagingConfig {
    /// Defaults for a local budget of `budget_bytes`: cache-line write-back, prefetch windows up
    /// to 256 pages, reclaim in batches of 64 pages, 4 pager threads, no pager spin, no
    /// background cleaning.
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget_bytes,
            write_back: WriteBack::CacheLine,
            readahead_max_pages: 256,
            evict_batch_pages: 64,
            pager_spin_us: 0,
            pager_threads: 4,
            clean_interval_ms: 0,
            id_base: None,
            allow_user_mode_only: false,
            protection: crate::backend::Protection::BySize,
            serve_forks: false,
        }
    }
}

/// Counters of a paged region (since creation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagingStats {
    /// Missing-page faults served by fetching a page from the backend.
    pub fetch_faults: u64,
    /// Missing-page faults served with zeros (first touch).
    pub zero_faults: u64,
    /// Write-protect faults (first write to a clean page, or a write after a CLOCK re-protect).
    pub wp_faults: u64,
    /// Pages fetched by prefetching.
    pub prefetched: u64,
    /// Faults on a staged marker page of a prefetch window (served locally, no network).
    pub prefetch_hits: u64,
    /// Faults on a page whose prefetch was still in flight.
    pub prefetch_late: u64,
    /// Prefetched pages in windows the program entered (see [`PagingStats::prefetch_accuracy`]).
    pub prefetch_used: u64,
    /// Prefetched pages in windows the program never reached.
    pub prefetch_wasted: u64,
    /// Staged marker pages evicted before the program touched them.
    pub prefetch_unused: u64,
    /// Faults that found no free slot and waited for the reclaimer.
    pub reclaim_waits: u64,
    /// Total time those faults waited for a free slot, in nanoseconds.
    pub reclaim_wait_ns: u64,
    /// Fetch faults on pages evicted recently (within one budget's worth of evictions).
    pub refaults: u64,
    /// Hot clean pages unmapped (with a local copy) to see whether the program still reads them.
    pub sampled: u64,
    /// Of those, pages the program touched while sampled (kept, served without network).
    pub sample_hits: u64,
    /// Clean pages evicted by dropping them, without any write-back.
    pub evicted_clean: u64,
    /// Victims that were pages a prefetch stream had left behind (drop-behind: they go first).
    pub dropped_behind: u64,
    /// Pages evicted behind a stream and needed again soon after (refaulted or prefetched
    /// while in the ghost history): drop-behind mistakes.
    pub behind_refaults: u64,
    /// Dirty pages written back (at eviction, by the background cleaner, or by flush).
    pub written_back: u64,
    /// Of those, pages written back by the background cleaner (they stayed resident).
    pub cleaned: u64,
    /// Payload bytes sent to the backend by write-back.
    pub bytes_sent: u64,
    /// Bytes that differed from the clean twin in written-back pages (what the program changed).
    pub bytes_changed: u64,
    /// What whole-page write-back would have sent for the same pages (`written_back * 4096`).
    pub whole_page_bytes: u64,
    /// Pages freed from the backend because the program discarded them (freed memory): a
    /// write-back of such a page before its free was wasted.
    pub freed_stored: u64,
    /// Total time spent serving fetch faults in the pager, in nanoseconds: from reading the fault
    /// to the page being mapped, including any wait for the reclaimer (not prefetching, not the
    /// wake-up of the faulting thread).
    pub fetch_fault_ns: u64,
    /// Of `fetch_fault_ns`: time spent waiting for the backend to return the page.
    pub fetch_backend_ns: u64,
    /// Total time the reclaimer spent evicting (choosing victims, write-back, dropping), in
    /// nanoseconds; off the fault path.
    pub evict_ns: u64,
    /// Pages resident now.
    pub resident_pages: u64,
}

impl PagingStats {
    /// The counters gained since `earlier` (a snapshot of the same region), field by field;
    /// `resident_pages` is the current value.
    pub fn since(&self, earlier: &Self) -> Self {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        Self {
            fetch_faults: d(self.fetch_faults, earlier.fetch_faults),
            zero_faults: d(self.zero_faults, earlier.zero_faults),
            wp_faults: d(self.wp_faults, earlier.wp_faults),
            prefetched: d(self.prefetched, earlier.prefetched),
            prefetch_hits: d(self.prefetch_hits, earlier.prefetch_hits),
            prefetch_late: d(self.prefetch_late, earlier.prefetch_late),
            prefetch_used: d(self.prefetch_used, earlier.prefetch_used),
            prefetch_wasted: d(self.prefetch_wasted, earlier.prefetch_wasted),
            prefetch_unused: d(self.prefetch_unused, earlier.prefetch_unused),
            reclaim_waits: d(self.reclaim_waits, earlier.reclaim_waits),
            reclaim_wait_ns: d(self.reclaim_wait_ns, earlier.reclaim_wait_ns),
            refaults: d(self.refaults, earlier.refaults),
            sampled: d(self.sampled, earlier.sampled),
            sample_hits: d(self.sample_hits, earlier.sample_hits),
            evicted_clean: d(self.evicted_clean, earlier.evicted_clean),
            dropped_behind: d(self.dropped_behind, earlier.dropped_behind),
            behind_refaults: d(self.behind_refaults, earlier.behind_refaults),
            written_back: d(self.written_back, earlier.written_back),
            cleaned: d(self.cleaned, earlier.cleaned),
            bytes_sent: d(self.bytes_sent, earlier.bytes_sent),
            bytes_changed: d(self.bytes_changed, earlier.bytes_changed),
            whole_page_bytes: d(self.whole_page_bytes, earlier.whole_page_bytes),
            freed_stored: d(self.freed_stored, earlier.freed_stored),
            fetch_fault_ns: d(self.fetch_fault_ns, earlier.fetch_fault_ns),
            fetch_backend_ns: d(self.fetch_backend_ns, earlier.fetch_backend_ns),
            evict_ns: d(self.evict_ns, earlier.evict_ns),
            resident_pages: self.resident_pages,
        }
    }

    /// Mean service time of a fetch fault in microseconds (0 when there was none).
    pub fn mean_fetch_fault_us(&self) -> f64 {
        if self.fetch_faults == 0 {
            0.0
        } else {
            self.fetch_fault_ns as f64 / self.fetch_faults as f64 / 1000.0
        }
    }

    /// Share of prefetched pages that fell in windows the program went on to use (0 when none
    /// was judged yet). A window counts as used once the program touched its marker page or
    /// faulted right past it; its pages are not checked one by one (reads of mapped pages are
    /// invisible).
    pub fn prefetch_accuracy(&self) -> f64 {
        let judged = self.prefetch_used + self.prefetch_wasted;
        if judged == 0 {
            0.0
        } else {
            self.prefetch_used as f64 / judged as f64
        }
    }

    /// Share of the pages the program needed from far memory that prefetching supplied:
    /// `prefetch_used / (prefetch_used + fetch_faults)` (0 when there was neither).
    pub fn prefetch_coverage(&self) -> f64 {
        let needed = self.prefetch_used + self.fetch_faults;
        if needed == 0 {
            0.0
        } else {
            self.prefetch_used as f64 / needed as f64
        }
    }

    /// Write amplification: bytes sent per byte changed (0 when nothing changed).
    pub fn write_amplification(&self) -> f64 {
        if self.bytes_changed == 0 {
            0.0
        } else {
            self.bytes_sent as f64 / self.bytes_changed as f64
        }
    }
}

/// Why a paged region could not be created or operated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PagingError {
    /// userfaultfd paging is not possible here; the string says why.
    #[error("paging mode unavailable: {0}")]
    Unsupported(String),
    /// Reserving the address range failed.
    #[error("could not reserve the paged address range: {0}")]
    Mmap(std::io::Error),
    /// A userfaultfd or madvise call failed unexpectedly.
    #[error("paging system call failed: {0}")]
    Sys(std::io::Error),
    /// Invalid configuration or arguments.
    #[error("invalid paging configuration: {0}")]
    Config(String),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}
