//! The C allocation functions the shim exports in place of the C library's.

use std::ffi::{c_int, c_void};
use std::sync::atomic::Ordering;

use farmem::paging::PAGE_SIZE;

use crate::{FORKED, far_for, far_owner, real};

/// Alignments the far heap serves (its blocks are page-aligned).
const FAR_ALIGN: usize = PAGE_SIZE;

fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

/// A block of `size` bytes aligned to `align` (at most 16 for the plain `malloc` path).
fn alloc(size: usize, align: usize) -> *mut c_void {
    if align <= FAR_ALIGN
        && let Some(p) = far_for(size).and_then(|h| h.alloc(size))
    {
        return p as *mut c_void;
    }
    let p = if align <= 16 {
        real::malloc(size)
    } else {
        real::memalign(align, size)
    };
    if p.is_null() {
        set_errno(libc::ENOMEM);
    }
    p
}

/// Bytes usable in the live block `p` (not null).
///
/// # Safety
/// `p` is a live block of this allocator.
unsafe fn usable(p: *mut c_void) -> usize {
    if let Some(h) = far_owner(p as usize) {
        return h.usable_size(p as usize);
    }
    if real::in_arena(p) {
        // SAFETY: `p` is an arena block.
        return unsafe { real::arena_size(p) };
    }
    // SAFETY: not far, not arena: a block of the real allocator.
    unsafe { real::usable_size(p) }
}

/// `malloc(3)`.
///
/// # Safety
/// As `malloc(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    alloc(size, 16)
}

/// `calloc(3)`: far blocks are zero already (fresh, or discarded when freed).
///
/// # Safety
/// As `calloc(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    let Some(bytes) = n.checked_mul(size) else {
        set_errno(libc::ENOMEM);
        return std::ptr::null_mut();
    };
    if let Some(p) = far_for(bytes).and_then(|h| h.alloc(bytes)) {
        return p as *mut c_void;
    }
    let p = real::calloc(n, size);
    if p.is_null() {
        set_errno(libc::ENOMEM);
    }
    p
}

/// `free(3)`. In the child of a `fork`, far blocks belong to the parent: freeing one does
/// nothing.
///
/// # Safety
/// As `free(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    if let Some(h) = far_owner(p as usize) {
        if !FORKED.load(Ordering::Relaxed) && !h.free(p as usize) {
            crate::warn(format_args!(
                "free({p:p}): not the start of a far block; ignored"
            ));
        }
        return;
    }
    // SAFETY: not far: null, an arena block or a block of the real allocator.
    unsafe { real::free(p) }
}

/// Moves the live block `p` of `old` usable bytes to a new block of `size` bytes.
///
/// # Safety
/// `p` is a live block of this allocator with at least `old` readable bytes.
unsafe fn move_block(p: *mut c_void, old: usize, size: usize) -> *mut c_void {
    let q = alloc(size, 16);
    if !q.is_null() {
        // SAFETY: both blocks are live and distinct; `min(old, size)` bytes fit in each.
        unsafe {
            std::ptr::copy_nonoverlapping(p.cast::<u8>(), q.cast::<u8>(), old.min(size));
            free(p);
        }
    }
    q
}

/// `realloc(3)`: far blocks shrink in place, grow in place when the pages after them are free,
/// and move to the real allocator when they shrink under the threshold; real blocks move to
/// far memory when they grow past it.
///
/// # Safety
/// As `realloc(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        return alloc(size, 16);
    }
    if size == 0 {
        // SAFETY: `p` is a live block (caller's guarantee).
        unsafe { free(p) };
        return std::ptr::null_mut();
    }
    if let Some(h) = far_owner(p as usize) {
        let old = h.usable_size(p as usize);
        let forked = FORKED.load(Ordering::Relaxed);
        if !forked && size >= h.threshold && h.resize_in_place(p as usize, size) {
            return p;
        }
        // SAFETY: `p` is a live far block of `old` bytes.
        return unsafe { move_block(p, old, size) };
    }
    if real::in_arena(p) {
        // SAFETY: `p` is an arena block of `arena_size` bytes.
        return unsafe { move_block(p, real::arena_size(p), size) };
    }
    if far_for(size).is_some() {
        // SAFETY: `p` is a live block of the real allocator.
        let old = unsafe { real::usable_size(p) };
        // SAFETY: as above; `old` bytes of it are readable.
        return unsafe { move_block(p, old, size) };
    }
    // SAFETY: a live block of the real allocator.
    let q = unsafe { real::realloc(p, size) };
    if q.is_null() {
        set_errno(libc::ENOMEM);
    }
    q
}

/// `posix_memalign(3)`.
///
/// # Safety
/// As `posix_memalign(3)`: `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || !align.is_multiple_of(size_of::<*mut c_void>()) {
        return libc::EINVAL;
    }
    let p = alloc(size, align);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller passes a writable pointer slot.
    unsafe { out.write(p) };
    0
}

/// `aligned_alloc(3)`.
///
/// # Safety
/// As `aligned_alloc(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return std::ptr::null_mut();
    }
    alloc(size, align)
}

/// `memalign(3)`.
///
/// # Safety
/// As `memalign(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return std::ptr::null_mut();
    }
    alloc(size, align)
}

/// `valloc(3)`.
///
/// # Safety
/// As `valloc(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    alloc(size, PAGE_SIZE)
}

/// `pvalloc(3)`.
///
/// # Safety
/// As `pvalloc(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    match size.max(1).checked_next_multiple_of(PAGE_SIZE) {
        Some(s) => alloc(s, PAGE_SIZE),
        None => {
            set_errno(libc::ENOMEM);
            std::ptr::null_mut()
        }
    }
}

/// `malloc_usable_size(3)`.
///
/// # Safety
/// As `malloc_usable_size(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    // SAFETY: a live block (caller's guarantee).
    unsafe { usable(p) }
}

/// Whether an `mmap` request is plain anonymous memory the far heap can stand in for: private,
/// readable and writable, no address hint, no special flags (Python's object arenas are such
/// mappings; reservations with `MAP_NORESERVE` or `PROT_NONE` are left alone).
fn plain_anonymous(addr: *mut c_void, prot: c_int, flags: c_int, fd: c_int) -> bool {
    addr.is_null()
        && fd == -1
        && prot == libc::PROT_READ | libc::PROT_WRITE
        && flags == libc::MAP_PRIVATE | libc::MAP_ANONYMOUS
}

/// `mmap(2)`: large plain anonymous mappings come from the far heap (when `FARMEM_RUN_MMAP`
/// is not `0`).
///
/// # Safety
/// As `mmap(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: i64,
) -> *mut c_void {
    if crate::MMAP_FAR.load(Ordering::Relaxed)
        && plain_anonymous(addr, prot, flags, fd)
        && let Some(p) = far_for(len).and_then(|h| h.alloc(len))
    {
        return p as *mut c_void;
    }
    // SAFETY: forwarded with the caller's guarantees.
    unsafe { real::mmap(addr, len, prot, flags, fd, off) }
}

/// `mmap64(2)`: the same as [`mmap`] on 64-bit systems.
///
/// # Safety
/// As `mmap(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: i64,
) -> *mut c_void {
    // SAFETY: forwarded with the caller's guarantees.
    unsafe { mmap(addr, len, prot, flags, fd, off) }
}

/// `munmap(2)`: ranges of the far heap are given back to it (in the child of a `fork` they
/// belong to the parent and stay).
///
/// # Safety
/// As `munmap(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: usize) -> c_int {
    if let Some(h) = far_owner(addr as usize) {
        if !(addr as usize).is_multiple_of(PAGE_SIZE) {
            set_errno(libc::EINVAL);
            return -1;
        }
        if !FORKED.load(Ordering::Relaxed) {
            h.unmap(addr as usize, len);
        }
        return 0;
    }
    // SAFETY: forwarded with the caller's guarantees.
    unsafe { real::munmap(addr, len) }
}

/// `mremap(2)` (declared with its optional fifth argument, which the caller passes when it sets
/// `MREMAP_FIXED`; the x86-64 and aarch64 calling conventions pass it the same way): far blocks
/// shrink or grow in place, or move within the far heap with `MREMAP_MAYMOVE`.
///
/// # Safety
/// As `mremap(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mremap(
    old: *mut c_void,
    old_len: usize,
    new_len: usize,
    flags: c_int,
    new_addr: *mut c_void,
) -> *mut c_void {
    let Some(h) = far_owner(old as usize) else {
        // SAFETY: forwarded with the caller's guarantees.
        return unsafe { real::mremap(old, old_len, new_len, flags, new_addr) };
    };
    if FORKED.load(Ordering::Relaxed) || flags & libc::MREMAP_FIXED != 0 || new_len == 0 {
        set_errno(libc::EINVAL);
        return libc::MAP_FAILED;
    }
    if h.resize_in_place(old as usize, new_len) {
        return old;
    }
    if flags & libc::MREMAP_MAYMOVE == 0 {
        set_errno(libc::ENOMEM);
        return libc::MAP_FAILED;
    }
    let Some(q) = h.alloc(new_len) else {
        set_errno(libc::ENOMEM);
        return libc::MAP_FAILED;
    };
    // SAFETY: both are live far blocks, distinct, each holding `min(old_len, new_len)` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(old.cast::<u8>(), q as *mut u8, old_len.min(new_len));
    }
    h.unmap(old as usize, old_len);
    q as *mut c_void
}
