//! The allocator the shim stands in front of (the next `malloc` in symbol lookup order, found
//! with `dlsym(RTLD_NEXT)`), and a static bootstrap arena for the calls that arrive before it is
//! known (`dlsym` itself may call `calloc`).
//!
//! Arena blocks carry a 16-byte header with their size; freeing one does nothing (the arena is
//! small and only used during start-up).

use std::ffi::{CStr, c_void};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

type MallocFn = unsafe extern "C" fn(usize) -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void);
type CallocFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type ReallocFn = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
type MemalignFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type UsableFn = unsafe extern "C" fn(*mut c_void) -> usize;
type MmapFn = unsafe extern "C" fn(*mut c_void, usize, i32, i32, i32, i64) -> *mut c_void;
type MunmapFn = unsafe extern "C" fn(*mut c_void, usize) -> i32;
type MremapFn = unsafe extern "C" fn(*mut c_void, usize, usize, i32, *mut c_void) -> *mut c_void;

/// Resolution state: not started, in progress (on some thread), done.
const UNRESOLVED: u8 = 0;
const RESOLVING: u8 = 1;
const RESOLVED: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNRESOLVED);

/// The real functions, as addresses (0 until resolved).
static MALLOC: AtomicUsize = AtomicUsize::new(0);
static FREE: AtomicUsize = AtomicUsize::new(0);
static CALLOC: AtomicUsize = AtomicUsize::new(0);
static REALLOC: AtomicUsize = AtomicUsize::new(0);
static MEMALIGN: AtomicUsize = AtomicUsize::new(0);
static USABLE: AtomicUsize = AtomicUsize::new(0);
static MMAP: AtomicUsize = AtomicUsize::new(0);
static MUNMAP: AtomicUsize = AtomicUsize::new(0);
static MREMAP: AtomicUsize = AtomicUsize::new(0);

const ARENA_BYTES: usize = 1 << 20;
const HEADER: usize = 16;

/// The bootstrap arena, 16-byte aligned.
#[repr(C, align(4096))]
struct Arena(std::cell::UnsafeCell<[u8; ARENA_BYTES]>);
// SAFETY: disjoint blocks are handed out once each by an atomic bump pointer.
unsafe impl Sync for Arena {}
static ARENA: Arena = Arena(std::cell::UnsafeCell::new([0; ARENA_BYTES]));
static ARENA_USED: AtomicUsize = AtomicUsize::new(0);

fn arena_base() -> usize {
    ARENA.0.get() as usize
}

/// Whether `p` was handed out by the bootstrap arena.
pub fn in_arena(p: *mut c_void) -> bool {
    (arena_base()..arena_base() + ARENA_BYTES).contains(&(p as usize))
}

/// Size of an arena block.
///
/// # Safety
/// `p` must be a block of the arena ([`in_arena`]).
pub unsafe fn arena_size(p: *mut c_void) -> usize {
    // SAFETY: every arena block is preceded by its header, written before it was handed out.
    unsafe { (p as *const usize).sub(HEADER / size_of::<usize>()).read() }
}

/// A zeroed block of `size` bytes aligned to `align` (a power of two, at most 4096) from the
/// bootstrap arena, or null when it is exhausted.
pub fn arena_alloc(size: usize, align: usize) -> *mut c_void {
    let align = align.max(HEADER);
    let mut used = ARENA_USED.load(Ordering::Relaxed);
    loop {
        let start = (arena_base() + used + HEADER).next_multiple_of(align) - arena_base();
        let Some(end) = start.checked_add(size).filter(|&e| e <= ARENA_BYTES) else {
            return std::ptr::null_mut();
        };
        match ARENA_USED.compare_exchange_weak(used, end, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => {
                let p = (arena_base() + start) as *mut usize;
                // SAFETY: `[start - HEADER, end)` lies in the arena and was reserved above by
                // this thread alone; the header slot is 8-byte aligned (start is 16-aligned).
                unsafe { p.sub(HEADER / size_of::<usize>()).write(size) };
                // The arena starts zeroed and blocks are never reused.
                return p.cast();
            }
            Err(u) => used = u,
        }
    }
}

fn lookup(name: &CStr) -> usize {
    /// `RTLD_NEXT` of glibc and musl.
    const RTLD_NEXT: *mut c_void = -1isize as *mut c_void;
    // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name only reads the loaded objects'
    // symbol tables.
    unsafe { libc::dlsym(RTLD_NEXT, name.as_ptr()) as usize }
}

/// Resolves the real allocator if nobody has. Returns whether it is usable now (`false` on the
/// thread that is resolving it, whose nested calls must use the arena).
pub fn ensure() -> bool {
    match STATE.load(Ordering::Acquire) {
        RESOLVED => return true,
        RESOLVING => return wait_resolved(),
        _ => {}
    }
    if STATE
        .compare_exchange(UNRESOLVED, RESOLVING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return wait_resolved();
    }
    RESOLVER.with(|r| r.set(true));
    MALLOC.store(lookup(c"malloc"), Ordering::Relaxed);
    FREE.store(lookup(c"free"), Ordering::Relaxed);
    CALLOC.store(lookup(c"calloc"), Ordering::Relaxed);
    REALLOC.store(lookup(c"realloc"), Ordering::Relaxed);
    MEMALIGN.store(lookup(c"memalign"), Ordering::Relaxed);
    USABLE.store(lookup(c"malloc_usable_size"), Ordering::Relaxed);
    MMAP.store(lookup(c"mmap"), Ordering::Relaxed);
    MUNMAP.store(lookup(c"munmap"), Ordering::Relaxed);
    MREMAP.store(lookup(c"mremap"), Ordering::Relaxed);
    RESOLVER.with(|r| r.set(false));
    if [
        &MALLOC, &FREE, &CALLOC, &REALLOC, &MEMALIGN, &MMAP, &MUNMAP, &MREMAP,
    ]
    .iter()
    .any(|f| f.load(Ordering::Relaxed) == 0)
    {
        let msg = b"farmem-preload: no underlying malloc found (dlsym RTLD_NEXT)\n";
        // SAFETY: writing a static buffer to stderr, then exiting without running handlers.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(127);
        }
    }
    STATE.store(RESOLVED, Ordering::Release);
    true
}

thread_local! {
    /// Set on the thread running `dlsym` for the shim.
    static RESOLVER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn wait_resolved() -> bool {
    if RESOLVER.try_with(|r| r.get()).unwrap_or(true) {
        return false;
    }
    while STATE.load(Ordering::Acquire) != RESOLVED {
        std::hint::spin_loop();
    }
    true
}

/// Loads a resolved function pointer; to be expanded inside an `unsafe` block whose caller made
/// sure the pointer is resolved (`ensure()`): it is then the address dlsym returned for the
/// symbol whose C signature `$ty` spells (checked non-zero at resolution).
macro_rules! real_fn {
    ($slot:expr, $ty:ty) => {{ std::mem::transmute::<usize, $ty>($slot.load(Ordering::Relaxed)) }};
}

/// `malloc` of the real allocator (arena before resolution).
pub fn malloc(size: usize) -> *mut c_void {
    if !ensure() {
        return arena_alloc(size, HEADER);
    }
    // SAFETY: forwarding to the real malloc, which accepts any size.
    unsafe { real_fn!(MALLOC, MallocFn)(size) }
}

/// `calloc` of the real allocator (arena before resolution).
pub fn calloc(n: usize, size: usize) -> *mut c_void {
    if !ensure() {
        return n
            .checked_mul(size)
            .map_or(std::ptr::null_mut(), |b| arena_alloc(b, HEADER));
    }
    // SAFETY: forwarding to the real calloc, which checks the multiplication itself.
    unsafe { real_fn!(CALLOC, CallocFn)(n, size) }
}

/// `memalign` of the real allocator (arena before resolution, for alignments up to 4096).
pub fn memalign(align: usize, size: usize) -> *mut c_void {
    if !ensure() {
        if align > 4096 {
            return std::ptr::null_mut();
        }
        return arena_alloc(size, align);
    }
    // SAFETY: forwarding to the real memalign, which validates `align`.
    unsafe { real_fn!(MEMALIGN, MemalignFn)(align, size) }
}

/// `free` of the real allocator; arena blocks are ignored.
///
/// # Safety
/// `p` is null, an arena block, or a live block of the real allocator.
pub unsafe fn free(p: *mut c_void) {
    if p.is_null() || in_arena(p) {
        return;
    }
    ensure();
    // SAFETY: `p` came from the real allocator (a block is only handed out by it or by the
    // arena, and the arena could only serve before resolution, which is over now).
    unsafe { real_fn!(FREE, FreeFn)(p) }
}

/// `realloc` of the real allocator for a block that is not an arena block.
///
/// # Safety
/// `p` is null or a live block of the real allocator.
pub unsafe fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if !ensure() {
        return std::ptr::null_mut();
    }
    // SAFETY: forwarded with the caller's guarantee.
    unsafe { real_fn!(REALLOC, ReallocFn)(p, size) }
}

/// `malloc_usable_size` of the real allocator (0 when it has none).
///
/// # Safety
/// `p` is a live block of the real allocator.
pub unsafe fn usable_size(p: *mut c_void) -> usize {
    ensure();
    if USABLE.load(Ordering::Relaxed) == 0 {
        return 0;
    }
    // SAFETY: forwarded with the caller's guarantee.
    unsafe { real_fn!(USABLE, UsableFn)(p) }
}

/// `mmap` of the C library.
///
/// # Safety
/// As `mmap(2)`.
pub unsafe fn mmap(
    addr: *mut c_void,
    len: usize,
    prot: i32,
    flags: i32,
    fd: i32,
    off: i64,
) -> *mut c_void {
    if !ensure() {
        // Nobody maps memory from inside dlsym; fail rather than recurse.
        return libc::MAP_FAILED;
    }
    // SAFETY: resolved above; forwarded with the caller's guarantees.
    unsafe { real_fn!(MMAP, MmapFn)(addr, len, prot, flags, fd, off) }
}

/// `munmap` of the C library.
///
/// # Safety
/// As `munmap(2)`.
pub unsafe fn munmap(addr: *mut c_void, len: usize) -> i32 {
    if !ensure() {
        return -1;
    }
    // SAFETY: resolved above; forwarded with the caller's guarantees.
    unsafe { real_fn!(MUNMAP, MunmapFn)(addr, len) }
}

/// `mremap` of the C library (the new address is passed whatever the flags; the kernel reads it
/// only with `MREMAP_FIXED`).
///
/// # Safety
/// As `mremap(2)`.
pub unsafe fn mremap(
    old: *mut c_void,
    old_len: usize,
    new_len: usize,
    flags: i32,
    new_addr: *mut c_void,
) -> *mut c_void {
    if !ensure() {
        return libc::MAP_FAILED;
    }
    // SAFETY: resolved above; forwarded with the caller's guarantees.
    unsafe { real_fn!(MREMAP, MremapFn)(old, old_len, new_len, flags, new_addr) }
}

/// The Rust allocator of the shim itself: always the real allocator, never far memory, never the
/// shim's exported `malloc` (so the runtime's own allocations cannot recurse into the shim or
/// land in paged memory).
#[derive(Debug)]
pub struct RealAlloc;

// SAFETY: blocks come from the real allocator (or the never-reused arena) with at least the
// requested size and alignment, and are returned to the allocator that made them.
unsafe impl std::alloc::GlobalAlloc for RealAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.align() <= HEADER {
            malloc(layout.size()).cast()
        } else {
            memalign(layout.align(), layout.size()).cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.align() <= HEADER {
            calloc(1, layout.size()).cast()
        } else {
            let p = memalign(layout.align(), layout.size());
            if !p.is_null() {
                // SAFETY: `p` is a fresh block of `layout.size()` bytes.
                unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0, layout.size()) };
            }
            p.cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from `alloc` above, i.e. from the arena or the real allocator.
        unsafe { free(ptr.cast()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= HEADER && !in_arena(ptr.cast()) {
            // SAFETY: `ptr` is a live block of the real allocator.
            return unsafe { realloc(ptr.cast(), new_size) }.cast();
        }
        // SAFETY: a valid layout with the caller's new size.
        let new_layout =
            unsafe { std::alloc::Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as for `alloc`.
        let q = unsafe { self.alloc(new_layout) };
        if !q.is_null() {
            // SAFETY: both blocks are live and distinct, and hold the copied length.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_blocks_are_aligned_disjoint_and_sized() {
        let a = arena_alloc(100, 16);
        let b = arena_alloc(10, 4096);
        assert!(in_arena(a) && in_arena(b));
        assert_eq!(b as usize % 4096, 0);
        assert!(b as usize >= a as usize + 100);
        // SAFETY: both are arena blocks.
        assert_eq!(unsafe { (arena_size(a), arena_size(b)) }, (100, 10));
        assert!(arena_alloc(ARENA_BYTES, 16).is_null());
    }
}
