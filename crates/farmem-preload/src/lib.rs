//! `libfarmem_preload.so`: the allocator shim `farmem-run` injects into an unmodified program
//! with `LD_PRELOAD`, so that its large allocations live in far memory.
//!
//! This library is an *entry point*, like a binary: it reads its configuration from environment
//! variables set by `farmem-run` (see the `env` module: `FARMEM_RUN_SERVERS`,
//! `FARMEM_RUN_LOCAL_MEM`, ...) and keeps process-wide state (the far heap, the resolved real
//! allocator), which a library may not.
//!
//! # What it does
//! - It exports `malloc`, `calloc`, `realloc`, `free`, `posix_memalign`, `aligned_alloc`,
//!   `memalign`, `valloc`, `pvalloc` and `malloc_usable_size`. Requests of at least the threshold
//!   (64 KiB by default) with alignment up to 4 KiB get whole pages of one large
//!   [`PagedRegion`](farmem::paging::PagedRegion) whose pages live on the memory servers and are
//!   paged in by userfaultfd; at most the local budget of it is resident. Everything else goes
//!   to the allocator found next in symbol order (`dlsym(RTLD_NEXT)`, normally glibc's).
//!   `free`/`realloc`/`malloc_usable_size` tell the two apart by address.
//! - It also exports `mmap`, `munmap` and `mremap`: large *plain* anonymous mappings (private,
//!   read-write, no address hint, no flags: the 1 MiB object arenas of Python's allocator, where
//!   its small objects live) come from the far heap too, unless `FARMEM_RUN_MMAP=0`. Reservations
//!   (`PROT_NONE`, `MAP_NORESERVE`), shared and file mappings go to the kernel. `munmap` of part
//!   of a far mapping gives its pages back; `mprotect` and `madvise` on far memory are not
//!   intercepted (a program that drops far pages with `MADV_DONTNEED` itself loses them).
//! - Calls that arrive before `dlsym` has answered (including `dlsym`'s own) are served from a
//!   static bootstrap arena.
//! - The runtime's own allocations never come here: the shim's Rust global allocator calls the
//!   real allocator directly, and C-level allocations made on the pager threads (marked with
//!   [`InternalGuard`] for their whole life) or inside the
//!   runtime's critical sections go to the real allocator whatever their size.
//! - Freed blocks are discarded: dropped locally with `madvise` and freed on the servers.
//!
//! # Processes
//! - **`fork`**: where the kernel reports forks to userfaultfd (root), the child reads every
//!   far page as it was at the fork and its writes stay private: its faults are served by a
//!   thread of the parent from a snapshot taken at the fork (see the `fork` module). The child
//!   never talks to the servers or touches the parent's pager state, so it cannot corrupt the
//!   parent's pages: it allocates from the real allocator only, and its `free` of a far block
//!   does nothing (the block stays in the parent). At the parent's exit, children still running
//!   are given the far pages they may still read. If the parent ends without its exit handlers
//!   (SIGKILL, `_exit`), a child keeps the pages it has, and the first far page it had not
//!   touched stops it with SIGBUS and a message naming the cause (see the `watch` module).
//!   Without fork events (or with
//!   `FARMEM_RUN_FORKS=0`) the child gets a private copy of what was resident at the fork, and
//!   pages of live far blocks that were not resident are made inaccessible, so a child that
//!   reads them dies with a message naming the cause (SIGSEGV) instead of reading zeros.
//!   `fork` + `exec` (Python's `subprocess`) works either way.
//! - **`exec`**: `LD_PRELOAD` is inherited, so programs the program starts get far memory too
//!   (each process its own heap, budget and server session), unless `FARMEM_RUN_INHERIT=0`
//!   (`farmem-run --no-inherit`), in which case the shim removes itself from the environment at
//!   start-up.
//!
//! # Failure
//! When far memory cannot be set up (no usable userfaultfd, servers unreachable), the process
//! exits with status 1 and a message, or with `FARMEM_RUN_FALLBACK_LOCAL=1` runs on local
//! memory only after a warning.

// The unit-test harness leaves the C exports out (it must not replace its own malloc), which
// leaves their helpers unused there.
#![cfg_attr(test, allow(dead_code))]

mod env;
#[cfg(not(test))]
mod exports;
mod fork;
mod heap;
mod real;
mod setup;
mod watch;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use farmem::paging::InternalGuard;

use heap::Heap;

#[global_allocator]
static ALLOC: real::RealAlloc = real::RealAlloc;

/// The far heap, once set up.
static HEAP: OnceLock<Heap> = OnceLock::new();
/// Requests of at least this many bytes are far candidates (`usize::MAX`: none).
static THRESHOLD: AtomicUsize = AtomicUsize::new(usize::MAX);
/// Large plain anonymous `mmap`s come from the far heap too.
static MMAP_FAR: AtomicBool = AtomicBool::new(false);
/// Set in the child of a `fork`: the far heap belongs to the parent.
static FORKED: AtomicBool = AtomicBool::new(false);

/// Prints a warning of the shim to stderr.
fn warn(msg: std::fmt::Arguments<'_>) {
    let _g = InternalGuard::new();
    eprintln!("farmem-run: {msg}");
}

/// The far heap when a request of `size` bytes should go there from this thread.
fn far_for(size: usize) -> Option<&'static Heap> {
    if size < THRESHOLD.load(Ordering::Relaxed) || InternalGuard::is_set() {
        return None;
    }
    HEAP.get()
}

/// The far heap if `p` points into it.
fn far_owner(p: usize) -> Option<&'static Heap> {
    HEAP.get().filter(|h| h.contains(p))
}

/// Runs when the library is loaded, before the program's `main`.
extern "C" fn on_load() {
    real::ensure();
    setup::init();
}

/// Runs at exit: hands far pages over to forked children still running, and prints the
/// counters when asked to.
extern "C" fn on_exit() {
    setup::hand_over();
    setup::report();
}

#[used]
#[unsafe(link_section = ".init_array")]
static ON_LOAD: extern "C" fn() = on_load;

#[used]
#[unsafe(link_section = ".fini_array")]
static ON_EXIT: extern "C" fn() = on_exit;
