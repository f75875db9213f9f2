//! [`PagingAlloc`]: a global allocator that puts large allocations in a paged region, so that
//! unmodified `Vec`/`HashMap` code runs on far memory.
//!
//! # Deadlock rules
//! Only the pager thread can serve a fault on the region, so nothing the pager depends on may live
//! in (or wait for) paged memory:
//! 1. The pager thread is marked with [`InternalGuard`] for its whole life; marked threads always
//!    allocate from the system allocator, whatever the size. So backend I/O buffers, fetched pages
//!    and pager tables made by the pager are never paged.
//! 2. Every other path that takes the pager lock (discard on free, stats, flush, region creation)
//!    sets the mark for that scope, so an allocation made while holding the lock (e.g. by the
//!    backend when freeing objects) cannot fault on a page the pager would need the lock to serve.
//! 3. The backend handed to [`PagingAlloc::enable`] must be used by nothing else (create a
//!    dedicated instance): a thread that holds one of its connection locks while touching paged
//!    memory would block the pager. Backends that run their own I/O threads must not move data
//!    through buffers of at least `threshold_bytes` allocated by unmarked threads.
//! 4. Allocations with alignment above 4 KiB, and every allocation before `enable` or after the
//!    region is full, go to the system allocator; `dealloc` routes by address, so mixing is safe.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::backend::Backend;

use super::extents::Extents;
use super::internal::InternalGuard;
use super::region::PagedRegion;
use super::sys::PAGE;
use super::{PagingConfig, PagingError, PagingStats};

/// Settings of the transparent mode.
#[derive(Clone, Debug)]
pub struct AllocConfig {
    /// Budget, write-back mode, readahead of the paged region.
    pub paging: PagingConfig,
    /// Allocations of at least this many bytes are paged; smaller ones stay local.
    pub threshold_bytes: usize,
    /// Virtual address space reserved for paged allocations (costs no memory until touched; the
    /// pager keeps one bit per page of it).
    pub reserve_bytes: usize,
}

impl AllocConfig {
    /// Pages allocations of 1 MiB and more within a 64 GiB reservation, with a local budget of
    /// `budget_bytes`.
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            paging: PagingConfig::new(budget_bytes),
            threshold_bytes: 1 << 20,
            reserve_bytes: 64 << 30,
        }
    }
}

/// A block that had to move to grow gets this many times its new size of address space, so that
/// it can grow again in place (as `mremap` lets the system allocator do): a move copies the
/// block, faulting its old pages in and dirtying as many new ones, all to be written back.
const GROW_ROOM: usize = 4;

/// Page ranges handed out, and the room reserved behind blocks that grew.
struct Blocks {
    extents: Extents,
    /// Start page -> pages reserved, for blocks reserved larger than they are (the pages past
    /// a block's end are zero: never touched, or discarded when it shrank).
    room: HashMap<usize, usize>,
}

struct Active {
    region: PagedRegion,
    blocks: Mutex<Blocks>,
    threshold: usize,
    live_bytes: AtomicU64,
}

/// The paging region behind the process's allocator. Process-wide by necessity: a
/// `#[global_allocator]` is a `static` whose `alloc` takes no context, so the state it allocates
/// from can only be reached through another `static`.
static ACTIVE: OnceLock<Active> = OnceLock::new();

/// The transparent paging allocator. Declare it in the binary, then enable it at run time:
///
/// ```no_run
/// use std::sync::Arc;
/// use farmem::EmbeddedStore;
/// use farmem::paging::{AllocConfig, PagingAlloc};
///
/// #[global_allocator]
/// static ALLOC: PagingAlloc = PagingAlloc::new();
///
/// fn main() -> Result<(), farmem::paging::PagingError> {
///     PagingAlloc::enable(Arc::new(EmbeddedStore::new()), AllocConfig::new(64 << 20))?;
///     let v = vec![1u64; 50_000_000]; // 400 MB, at most 64 MiB of it resident
///     assert_eq!(v.iter().sum::<u64>(), 50_000_000);
///     Ok(())
/// }
/// ```
///
/// Until [`PagingAlloc::enable`] succeeds (or when it fails) every allocation goes to the system
/// allocator, so one binary runs with and without paging. See the module source for the deadlock
/// rules.
#[derive(Debug, Default)]
pub struct PagingAlloc {
    _private: (),
}

impl PagingAlloc {
    /// The allocator, for `#[global_allocator]`.
    pub const fn new() -> Self {
        Self { _private: () }
    }

    /// Turns paging on for this process: later allocations of at least `threshold_bytes` go to a
    /// paged region backed by `backend`. Has an effect only if a `PagingAlloc` is the global
    /// allocator.
    ///
    /// # Errors
    /// [`PagingError::Unsupported`] without usable userfaultfd; [`PagingError::Config`] if already
    /// enabled or the configuration is invalid.
    pub fn enable(backend: Arc<dyn Backend>, config: AllocConfig) -> Result<(), PagingError> {
        let _internal = InternalGuard::new();
        if ACTIVE.get().is_some() {
            return Err(PagingError::Config(
                "paging allocator already enabled".into(),
            ));
        }
        if config.threshold_bytes < PAGE {
            return Err(PagingError::Config(format!(
                "threshold of {} bytes is under one page",
                config.threshold_bytes
            )));
        }
        let region = PagedRegion::new(config.reserve_bytes, backend, config.paging)?;
        let pages = region.len() / PAGE;
        ACTIVE
            .set(Active {
                region,
                blocks: Mutex::new(Blocks {
                    extents: Extents::new(pages),
                    room: HashMap::new(),
                }),
                threshold: config.threshold_bytes,
                live_bytes: AtomicU64::new(0),
            })
            .map_err(|_| PagingError::Config("paging allocator already enabled".into()))
    }

    /// Whether paging is on.
    pub fn is_enabled() -> bool {
        ACTIVE.get().is_some()
    }

    /// Counters of the paged region (`None` before [`PagingAlloc::enable`]).
    pub fn stats() -> Option<PagingStats> {
        ACTIVE.get().map(|a| a.region.stats())
    }

    /// Changes the local budget of the paged region (see [`PagedRegion::set_budget`]): a program
    /// can set up its data with a loose budget and then tighten it.
    ///
    /// # Errors
    /// [`PagingError::Config`] when the allocator is not enabled or the budget is under 16 pages.
    pub fn set_budget(budget_bytes: usize) -> Result<(), PagingError> {
        let active = ACTIVE
            .get()
            .ok_or_else(|| PagingError::Config("paging allocator not enabled".into()))?;
        active.region.set_budget(budget_bytes)
    }

    /// Bytes currently allocated in paged memory (rounded up to pages).
    pub fn paged_bytes() -> u64 {
        ACTIVE
            .get()
            .map_or(0, |a| a.live_bytes.load(Ordering::Relaxed))
    }
}

impl Active {
    fn page_of(&self, ptr: *mut u8) -> usize {
        (ptr as usize - self.region.as_ptr() as usize) / PAGE
    }

    fn blocks(&self) -> std::sync::MutexGuard<'_, Blocks> {
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn alloc(&self, size: usize) -> Option<*mut u8> {
        let _internal = InternalGuard::new();
        let pages = size.div_ceil(PAGE);
        let start = self.blocks().extents.alloc(pages)?;
        self.live_bytes
            .fetch_add((pages * PAGE) as u64, Ordering::Relaxed);
        Some(self.region.as_ptr().wrapping_add(start * PAGE))
    }

    /// A block of `pages` pages with room to grow to [`GROW_ROOM`] times that in place (or
    /// without room when the address space is short).
    fn alloc_roomy(&self, pages: usize) -> Option<*mut u8> {
        let _internal = InternalGuard::new();
        let mut b = self.blocks();
        let roomy = pages.saturating_mul(GROW_ROOM);
        let start = match b.extents.alloc(roomy) {
            Some(start) => {
                b.room.insert(start, roomy);
                start
            }
            None => b.extents.alloc(pages)?,
        };
        drop(b);
        self.live_bytes
            .fetch_add((pages * PAGE) as u64, Ordering::Relaxed);
        Some(self.region.as_ptr().wrapping_add(start * PAGE))
    }

    /// Frees the block of `n` pages at `start` (and its room): discards its pages, then returns
    /// them to the free list.
    fn release(&self, start: usize, n: usize) {
        let _internal = InternalGuard::new();
        let reserved = self.blocks().room.remove(&start).unwrap_or(n).max(n);
        if let Err(e) = self.region.discard(start * PAGE, reserved * PAGE) {
            tracing::warn!("paging allocator: discarding freed pages failed: {e}");
        }
        self.blocks().extents.free(start, reserved);
        self.live_bytes
            .fetch_sub((n * PAGE) as u64, Ordering::Relaxed);
    }

    /// Shrinks the block at `start` from `old` to `new` pages (`new < old`): the tail is
    /// discarded, and returned to the free list unless it is room the block keeps.
    fn shrink(&self, start: usize, old: usize, new: usize) {
        let _internal = InternalGuard::new();
        if let Err(e) = self
            .region
            .discard((start + new) * PAGE, (old - new) * PAGE)
        {
            tracing::warn!("paging allocator: discarding freed pages failed: {e}");
        }
        let mut b = self.blocks();
        if !b.room.contains_key(&start) {
            b.extents.free(start + new, old - new);
        }
        drop(b);
        self.live_bytes
            .fetch_sub(((old - new) * PAGE) as u64, Ordering::Relaxed);
    }

    /// Grows the block at `start` from `old` to `new` pages in place, within its room or into
    /// free pages right after it. Returns whether it did.
    fn grow(&self, start: usize, old: usize, new: usize) -> bool {
        let _internal = InternalGuard::new();
        let mut b = self.blocks();
        let grown = match b.room.get(&start).copied() {
            Some(r) if new <= r => true,
            Some(r) => {
                let ok = b.extents.grow(start, r, new);
                if ok {
                    b.room.insert(start, new);
                }
                ok
            }
            None => b.extents.grow(start, old, new),
        };
        drop(b);
        if grown {
            self.live_bytes
                .fetch_add(((new - old) * PAGE) as u64, Ordering::Relaxed);
        }
        grown
    }
}

/// The active paging state if an allocation of `layout` should be paged.
fn paged_for(layout: Layout) -> Option<&'static Active> {
    let a = ACTIVE.get()?;
    (layout.size() >= a.threshold && layout.align() <= PAGE && !InternalGuard::is_set())
        .then_some(a)
}

/// The active paging state if `ptr` is paged memory.
fn owner(ptr: *mut u8) -> Option<&'static Active> {
    ACTIVE.get().filter(|a| a.region.contains(ptr))
}

// SAFETY: paged blocks are disjoint page ranges of a mapping that lives for the rest of the
// process (the region is in a static), handed out once each by the extent allocator and aligned to
// 4 KiB (we only page layouts with align <= 4 KiB); everything else is delegated to `System`, and
// `dealloc`/`realloc` route by address, so each block is returned to the allocator that made it.
unsafe impl GlobalAlloc for PagingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(p) = paged_for(layout).and_then(|a| a.alloc(layout.size())) {
            return p;
        }
        // SAFETY: forwarded with the caller's guarantees (non-zero size layout).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // Paged pages handed out are always zero: fresh, or discarded when freed.
        if let Some(p) = paged_for(layout).and_then(|a| a.alloc(layout.size())) {
            return p;
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(a) = owner(ptr) {
            a.release(a.page_of(ptr), layout.size().div_ceil(PAGE));
            return;
        }
        // SAFETY: `ptr` is not paged, so it came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if let Some(a) = owner(ptr) {
            let start = a.page_of(ptr);
            let (old, new) = (layout.size().div_ceil(PAGE), new_size.div_ceil(PAGE));
            if new <= old {
                if new < old {
                    a.shrink(start, old, new);
                }
                return ptr;
            }
            if a.grow(start, old, new) {
                return ptr;
            }
            // Move to a block with room to grow again in place.
            let new_ptr = a.alloc_roomy(new).unwrap_or(std::ptr::null_mut());
            if !new_ptr.is_null() {
                // SAFETY: both blocks are live, distinct, and at least `layout.size()` bytes
                // long (`new_size` is larger).
                unsafe {
                    std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size());
                    self.dealloc(ptr, layout);
                }
                return new_ptr;
            }
        } else if Layout::from_size_align(new_size, layout.align())
            .ok()
            .and_then(paged_for)
            .is_none()
        {
            // SAFETY: `ptr` came from `System` with `layout`; the caller guarantees `new_size`.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Move: allocate (paged or not, as the new size says), copy, free the old block.
        // SAFETY: the caller guarantees `new_size` is non-zero and fits the layout rules.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `new_layout` is valid (see above).
        let new_ptr = unsafe { self.alloc(new_layout) };
        if !new_ptr.is_null() {
            // SAFETY: both blocks are live, distinct, and at least `min(old, new)` bytes long.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new_ptr
    }
}
