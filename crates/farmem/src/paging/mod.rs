//! Paging mode: far memory for unmodified code, through userfaultfd.
//!
//! A [`PagedRegion`] is a large virtual range whose 4 KiB pages live in a [`Backend`] (one object
//! per page) and are brought in on demand, without kernel changes:
//!
//! - **Missing fault**: a pager thread fetches the page from the backend and maps it
//!   (`UFFDIO_COPY`), write-protected so the page starts *clean*; the first touch of a page that was
//!   never written back maps zeros. A write fault maps the page writable at once (already dirty).
//! - **Dirty tracking**: the first write to a clean page raises a write-protect fault; the pager
//!   saves a *clean twin* (a copy of the page as the backend has it), then un-protects it.
//! - **Eviction** keeps at most `budget_bytes` resident. It runs in batches right after a fault
//!   has been served (the faulting thread already runs again), so the next fault usually finds a
//!   free slot. Clean pages are simply dropped (`MADV_DONTNEED`), never written. A dirty page is write-protected *first* (so writes by other
//!   threads block in a fault), copied, written back, then dropped. With
//!   [`WriteBack::CacheLine`] only the 64-byte lines that differ from the twin are sent
//!   ([`Backend::patch_many`]); [`WriteBack::WholePage`] sends the whole page like a swap device.
//! - **Replacement** is CLOCK over resident pages. The reference bit is set by every fault on the
//!   page (missing or write-protect). When the hand passes a referenced page it clears the bit and,
//!   for a dirty page, write-protects it again, so a later write re-sets the bit with a cheap
//!   write-protect fault (~2-5 us, no data moved). Reads of an already-mapped page cannot be
//!   observed from user space without page-table access bits (`page_idle` is not available
//!   everywhere), so read-only pages get one round of second chance after their fault. Cost: one
//!   `UFFDIO_WRITEPROTECT` per referenced dirty page per hand revolution.
//! - **Readahead**: faults on consecutive pages double a window (up to
//!   [`PagingConfig::readahead_max_pages`]) of following pages fetched in one batched request.
//!
//! Local memory: at most `budget_bytes` of resident pages, plus one 4 KiB clean twin per dirty
//! resident page (so up to twice the budget when every resident page is dirty), plus one bit per
//! page of the region.
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
mod extents;
mod internal;
mod pager;
mod region;
mod sys;

use crate::backend::{BackendError, ObjectId};

pub use alloc::{AllocConfig, PagingAlloc};
pub use internal::InternalGuard;
pub use region::{PagedRegion, available};

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
    /// Largest readahead window in pages on sequential faults; 0 disables readahead.
    pub readahead_max_pages: usize,
    /// Pages evicted together when the budget is full (their write-backs share a round trip).
    pub evict_batch_pages: usize,
    /// After serving a fault the pager thread polls for the next one this many microseconds
    /// before it sleeps (saves a wake-up per fault under random access; 0 never spins).
    pub pager_spin_us: u64,
    /// First backend object id; page `i` is object `id_base + i`. `None` names each page after
    /// its virtual page number (ids `0xFA6E_xxxx_...`), unique among this process's regions.
    pub id_base: Option<ObjectId>,
}

impl PagingConfig {
    /// Defaults for a local budget of `budget_bytes`: cache-line write-back, readahead up to 16
    /// pages, eviction in batches of 16 pages, 50 us pager spin.
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget_bytes,
            write_back: WriteBack::CacheLine,
            readahead_max_pages: 16,
            evict_batch_pages: 16,
            pager_spin_us: 50,
            id_base: None,
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
    /// Pages fetched by readahead.
    pub prefetched: u64,
    /// Clean pages evicted by dropping them, without any write-back.
    pub evicted_clean: u64,
    /// Dirty pages written back (at eviction or flush).
    pub written_back: u64,
    /// Payload bytes sent to the backend by write-back.
    pub bytes_sent: u64,
    /// Bytes that differed from the clean twin in written-back pages (what the program changed).
    pub bytes_changed: u64,
    /// What whole-page write-back would have sent for the same pages (`written_back * 4096`).
    pub whole_page_bytes: u64,
    /// Total time spent serving fetch faults in the pager, in nanoseconds: from reading the fault
    /// to the page being mapped, including any eviction it needed (not readahead, not the
    /// wake-up of the faulting thread).
    pub fetch_fault_ns: u64,
    /// Of `fetch_fault_ns`: time spent waiting for the backend to return the page.
    pub fetch_backend_ns: u64,
    /// Total time spent evicting (choosing victims, write-back, dropping), in nanoseconds.
    pub evict_ns: u64,
    /// Pages resident now.
    pub resident_pages: u64,
}

impl PagingStats {
    /// Mean service time of a fetch fault in microseconds (0 when there was none).
    pub fn mean_fetch_fault_us(&self) -> f64 {
        if self.fetch_faults == 0 {
            0.0
        } else {
            self.fetch_fault_ns as f64 / self.fetch_faults as f64 / 1000.0
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
