//! `fork` handling.
//!
//! The pager threads stay with the parent. Where the kernel reports forks to userfaultfd (root,
//! `CAP_SYS_PTRACE`) the region serves forked children
//! ([`PagedRegion::serves_forks`](farmem::paging::PagedRegion::serves_forks)): a thread of
//! the parent maps every far page a child touches as it was at the fork, and the child's writes
//! stay private to it. So:
//! - before the fork the block table is locked, so the child finds it consistent, and the
//!   region takes the snapshot the child will be served from; after it, the parent waits until
//!   the pager has taken the child's userfaultfd;
//! - the child marks itself forked: from then on it allocates from the real allocator only,
//!   its `free` of a far block does nothing, and it never calls into the pager or the backend
//!   (whose locks may have been held by threads that do not exist in the child, and whose
//!   sockets are shared with the parent);
//! - the child keeps its own userfaultfd and watches its parent (the `watch` module): if the
//!   parent ends without handing its pages over, the far pages the child does not have are made
//!   inaccessible, and touching one prints the cause and ends the child with SIGBUS;
//! - without fork serving, the child's copy of the region holds only the pages that were
//!   resident at the fork: pages of live far blocks that were not resident (they would read as
//!   zeros) are made inaccessible, and a SIGSEGV handler names the cause if the child touches
//!   one, then lets the signal kill it. Faults elsewhere go to the handler the program had.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use farmem::paging::PAGE_SIZE;

use crate::heap::Heap;
use crate::{FORKED, HEAP, THRESHOLD, watch};

unsafe extern "C" {
    fn pthread_atfork(
        prepare: Option<unsafe extern "C" fn()>,
        parent: Option<unsafe extern "C" fn()>,
        child: Option<unsafe extern "C" fn()>,
    ) -> libc::c_int;
}

/// Registers the fork handlers (once, after the heap exists).
pub fn install() {
    // SAFETY: registering three handlers that only touch the shim's statics.
    let rc = unsafe { pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    if rc != 0 {
        crate::warn(format_args!("pthread_atfork failed ({rc}); fork is unsafe"));
    }
}

fn heap() -> Option<&'static Heap> {
    if FORKED.load(Ordering::Relaxed) {
        return None;
    }
    HEAP.get()
}

/// The program's `errno` before the fork, restored after it in the parent.
static SAVED_ERRNO: AtomicI32 = AtomicI32::new(0);

/// This thread's `errno`.
fn errno() -> libc::c_int {
    // SAFETY: `__errno_location` returns this thread's errno, valid while the thread runs.
    unsafe { *libc::__errno_location() }
}

/// Sets this thread's `errno`.
fn set_errno(v: libc::c_int) {
    // SAFETY: as in `errno`; nothing else holds a reference to it.
    unsafe { *libc::__errno_location() = v };
}

unsafe extern "C" fn prepare() {
    if FORKED.load(Ordering::Relaxed) && HEAP.get().is_some() {
        let e = errno();
        watch::prepare();
        set_errno(e);
        return;
    }
    if let Some(h) = heap() {
        // Held across the fork; released in both processes below.
        std::mem::forget(h.table().lock());
        h.region().fork_prepare();
        // This handler runs last before the fork (handlers registered first prepare last) and
        // `parent` first after it: a non-zero errno there is the fork's failure.
        SAVED_ERRNO.store(errno(), Ordering::Relaxed);
        set_errno(0);
    }
}

unsafe extern "C" fn parent() {
    if FORKED.load(Ordering::Relaxed) && HEAP.get().is_some() {
        let e = errno();
        watch::parent();
        set_errno(e);
        return;
    }
    if let Some(h) = heap() {
        let failed = errno() != 0;
        h.region().fork_parent(!failed);
        if !failed {
            set_errno(SAVED_ERRNO.load(Ordering::Relaxed));
        }
        // SAFETY: `prepare` locked the table on this thread and forgot the guard.
        unsafe { h.table().force_unlock() };
    }
}

unsafe extern "C" fn child() {
    if FORKED.load(Ordering::Relaxed) {
        // A child of a forked child: served by the same process, linked through its parent.
        if let Some(h) = HEAP.get() {
            let e = errno();
            watch::child(h.range());
            set_errno(e);
        }
        return;
    }
    let Some(h) = heap() else {
        return;
    };
    FORKED.store(true, Ordering::Relaxed);
    THRESHOLD.store(usize::MAX, Ordering::Relaxed);
    // SAFETY: `prepare` locked the table in the parent before the fork; this single thread is
    // its holder's copy.
    unsafe { h.table().force_unlock() };
    if h.region().serves_forks() {
        if let Some(link) = h.region().fork_child() {
            watch::start(link, h.range());
        }
        // The program's errno from before the fork (`prepare` cleared it).
        set_errno(SAVED_ERRNO.load(Ordering::Relaxed));
        return;
    }
    let blocks = Heap::blocks(&h.table().lock(), h.range().0);
    let mut protected = 0usize;
    for (addr, len) in blocks {
        protected += protect_absent(addr, len);
    }
    if protected > 0 {
        install_segv_handler(h.range(), Fault::NotResident);
    }
}

/// Makes the non-resident pages of `[addr, addr+len)` inaccessible; returns how many.
fn protect_absent(addr: usize, len: usize) -> usize {
    let pages = len / PAGE_SIZE;
    let mut vec = vec![0u8; pages];
    // SAFETY: the range is a part of the region's live mapping; `vec` has a byte per page.
    let rc = unsafe { libc::mincore(addr as *mut libc::c_void, len, vec.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    let mut n = 0;
    let mut i = 0;
    while i < pages {
        if vec[i] & 1 != 0 {
            i += 1;
            continue;
        }
        let start = i;
        while i < pages && vec[i] & 1 == 0 {
            i += 1;
        }
        // SAFETY: removing access to pages of the region in this (child) process only; nothing
        // in the shim touches them, and a program access now faults instead of reading zeros.
        unsafe {
            libc::mprotect(
                (addr + start * PAGE_SIZE) as *mut libc::c_void,
                (i - start) * PAGE_SIZE,
                libc::PROT_NONE,
            )
        };
        n += i - start;
    }
    n
}

/// The program's SIGSEGV action, restored for faults outside the region.
struct OldAction(UnsafeCell<MaybeUninit<libc::sigaction>>);
// SAFETY: written once in the single-threaded fork child before the handler is installed, then
// only read.
unsafe impl Sync for OldAction {}
static OLD: OldAction = OldAction(UnsafeCell::new(MaybeUninit::zeroed()));
static REGION_BASE: AtomicUsize = AtomicUsize::new(0);
static REGION_LEN: AtomicUsize = AtomicUsize::new(0);
/// The handler is installed (a forked child inherits it with the rest of its parent).
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The inaccessible pages are those the serving parent did not hand over ([`Fault::Unserved`]).
static UNSERVED: AtomicBool = AtomicBool::new(false);

/// Why the far pages a forked child touches are inaccessible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Not served: they were not resident at the fork.
    NotResident,
    /// The parent serving them ended without handing them over.
    Unserved,
}

/// Names the cause when the child touches an inaccessible page of the region `(base, len)`,
/// and ends it (SIGSEGV for [`Fault::NotResident`], SIGBUS for [`Fault::Unserved`]).
pub fn install_segv_handler((base, len): (usize, usize), cause: Fault) {
    REGION_BASE.store(base, Ordering::Relaxed);
    REGION_LEN.store(len, Ordering::Relaxed);
    UNSERVED.store(cause == Fault::Unserved, Ordering::Relaxed);
    if INSTALLED.swap(true, Ordering::Relaxed) {
        return;
    }
    // SAFETY: a zeroed sigaction is valid; we fill in the handler, flags and an empty mask, and
    // save the old action in OLD (only this thread exists in the child).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_segv as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGSEGV, &sa, (*OLD.0.get()).as_mut_ptr());
    }
}

extern "C" fn on_segv(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for a SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let base = REGION_BASE.load(Ordering::Relaxed);
    if addr.wrapping_sub(base) < REGION_LEN.load(Ordering::Relaxed) {
        if UNSERVED.load(Ordering::Relaxed) {
            let msg =
                b"farmem-run: a forked child touched far memory its parent no longer serves: \
the parent ended without handing its far pages over (killed by a signal, or _exit); the child \
is stopped with SIGBUS rather than read wrong data\n";
            // SAFETY: write(2), signal(2) and raise(3) are async-signal-safe; SIGBUS is not
            // blocked in this handler and its default action ends the process.
            unsafe {
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::signal(libc::SIGBUS, libc::SIG_DFL);
                libc::raise(libc::SIGBUS);
                // SIGBUS blocked by the program: the retried access then ends it with SIGSEGV.
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            }
            return;
        }
        let msg = b"farmem-run: a forked child touched far memory that was not resident at the \
fork; the child only has a copy of the resident pages (fork+exec is fine)\n";
        // SAFETY: write(2) and sigaction(2) are async-signal-safe; the default action makes the
        // faulting access, retried on return, kill the child with SIGSEGV.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        }
        return;
    }
    // SAFETY: OLD was filled by sigaction before this handler was installed; restoring it makes
    // the retried access reach the program's own handler (or the default action).
    unsafe { libc::sigaction(libc::SIGSEGV, (*OLD.0.get()).as_ptr(), std::ptr::null_mut()) };
}
