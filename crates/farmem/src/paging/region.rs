//! [`PagedRegion`]: a virtual range backed by far memory through userfaultfd.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::backend::{Backend, ObjectId};

use super::internal::InternalGuard;
use super::pager::Pager;
use super::sys::{self, PAGE, Uffd};
use super::{PagingConfig, PagingError, PagingStats};

/// Smallest budget accepted, in pages.
const MIN_BUDGET_PAGES: usize = 16;
/// How often the pager thread checks for shutdown while idle.
const POLL_MS: i32 = 50;
/// The top bits of the default object ids of paged regions (the object runtime's ids stay
/// below 2^62).
const PAGING_IDS: u64 = 0xFA6E_0000_0000_0000;

/// Checks that paging regions can be created here (userfaultfd with write-protect works).
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
    if sys::page_size() != PAGE {
        return Err(PagingError::Unsupported(format!(
            "page size is {} bytes; the paging mode needs {PAGE}",
            sys::page_size()
        )));
    }
    let uffd = Uffd::open()?;
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
    pager: Arc<Mutex<Pager>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
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
        let uffd = Arc::new(Uffd::open()?);
        let base = sys::map_anonymous(len)?;
        // By default page `i` is named after its virtual page number: unique among the live
        // regions of this process with no shared counter, and a region frees its objects before
        // its address range can be mapped again.
        let id_base = config
            .id_base
            .unwrap_or(PAGING_IDS | (base as u64 / PAGE as u64));
        if let Err(e) = uffd.register(base, len) {
            // SAFETY: the mapping was made just above and nothing refers to it yet.
            unsafe { sys::unmap(base, len) };
            return Err(e);
        }
        let pager = match Pager::new(base, pages, id_base, backend, uffd.clone(), &config) {
            Ok(p) => Arc::new(Mutex::new(p)),
            Err(e) => {
                // SAFETY: the mapping was made just above and nothing refers to it yet.
                unsafe { sys::unmap(base, len) };
                return Err(e);
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let spin = Duration::from_micros(config.pager_spin_us);
        let thread = {
            let (pager, stop) = (pager.clone(), stop.clone());
            std::thread::Builder::new()
                .name("farmem-pager".into())
                .spawn(move || serve(&uffd, &pager, &stop, spin))
        };
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                // SAFETY: as above; the pager thread never started.
                unsafe { sys::unmap(base, len) };
                return Err(PagingError::Sys(e));
            }
        };
        tracing::debug!(
            "paged region of {len} bytes at {base:#x}, budget {} bytes",
            config.budget_bytes
        );
        Ok(Self {
            base,
            len,
            id_base,
            pager,
            stop,
            thread: Some(thread),
        })
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
        self.pager.lock().stats()
    }

    /// Writes back every dirty page now (pages stay resident and clean).
    ///
    /// # Errors
    /// A backend error that persisted through the retries, or a failed system call.
    pub fn flush(&self) -> Result<(), PagingError> {
        let _internal = InternalGuard::new();
        self.pager.lock().flush()
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
        self.pager.lock().discard(first, last - first)
    }
}

/// The pager thread: reads faults and serves them until `stop`.
///
/// After serving a fault it keeps polling the fd without sleeping for `spin`: a program that
/// faults again right away (random access) is then served without a thread wake-up on the pager
/// side.
fn serve(uffd: &Uffd, pager: &Mutex<Pager>, stop: &AtomicBool, spin: Duration) {
    let _internal = InternalGuard::new();
    let mut faults = Vec::with_capacity(16);
    let mut last_served: Option<Instant> = None;
    while !stop.load(Ordering::Acquire) {
        if let Err(e) = uffd.read_faults(&mut faults) {
            tracing::error!("paging: reading userfaultfd failed: {e}; pager stops");
            return;
        }
        if faults.is_empty() {
            if last_served.is_some_and(|t| t.elapsed() < spin) {
                std::hint::spin_loop();
            } else {
                last_served = None;
                uffd.poll(POLL_MS);
            }
            continue;
        }
        for &f in &faults {
            if let Err(e) = pager.lock().handle(f) {
                // A thread is blocked in this fault and cannot be given an error; going on would
                // lose its data. Fail loudly, like a dead swap device.
                tracing::error!("paging: cannot serve fault at {:#x}: {e}", f.address);
                eprintln!("farmem paging: cannot serve a page fault: {e}; aborting");
                std::process::abort();
            }
        }
        last_served = Some(Instant::now());
    }
}

impl Drop for PagedRegion {
    fn drop(&mut self) {
        let _internal = InternalGuard::new();
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("paging: pager thread panicked");
        }
        let pages = self.len / PAGE;
        if let Err(e) = self.pager.lock().discard(0, pages) {
            tracing::warn!("paging: freeing the region's backend objects failed: {e}");
        }
        // SAFETY: the mapping is ours; the pager thread has stopped and `&mut self` means no
        // accessor borrows the region any more (raw pointers must not outlive it, as documented).
        unsafe { sys::unmap(self.base, self.len) };
    }
}
