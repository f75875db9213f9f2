//! Raw memory from the operating system: the only place that calls `mmap`, `munmap`, `madvise`.
//!
//! Under `cfg(miri)` the global allocator stands in for `mmap`, so the rest of the runtime can be
//! checked by miri.

use std::io;
use std::ptr::NonNull;

/// Page size assumed for rounding dedicated allocations.
pub(crate) const PAGE: usize = 4096;

/// Rounds `n` up to a whole number of pages.
pub(crate) fn page_round(n: usize) -> usize {
    n.div_ceil(PAGE).max(1) * PAGE
}

/// Maps `len` bytes (a multiple of [`PAGE`]) of zeroed, private, anonymous memory.
///
/// # Errors
/// The OS error when the mapping fails.
pub(crate) fn map(len: usize) -> io::Result<NonNull<u8>> {
    #[cfg(not(miri))]
    {
        // SAFETY: an anonymous private mapping with a null hint touches no existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
    }
    #[cfg(miri)]
    {
        let layout = std::alloc::Layout::from_size_align(len, PAGE).map_err(io::Error::other)?;
        // SAFETY: `len` is non-zero (a page multiple) so the layout is valid for alloc_zeroed.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        NonNull::new(p).ok_or_else(|| io::Error::other("allocation failed"))
    }
}

/// Unmaps memory returned by [`map`].
///
/// # Safety
/// `ptr` and `len` must be exactly a live mapping returned by [`map`], and no reference into it
/// may be used afterwards.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, len: usize) {
    #[cfg(not(miri))]
    {
        // SAFETY: the caller guarantees this is a whole live mapping nobody uses any more.
        let rc = unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
        if rc != 0 {
            tracing::error!(len, "munmap failed: {}", io::Error::last_os_error());
        }
    }
    #[cfg(miri)]
    {
        let layout = std::alloc::Layout::from_size_align(len, PAGE).expect("valid at map time");
        // SAFETY: the caller guarantees this block came from `map` with the same length.
        unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
    }
}

/// Gives the pages of `[ptr, ptr + len)` back to the OS; they read as zero afterwards.
///
/// # Safety
/// The range must lie within a live mapping from [`map`] and hold no data anyone still uses.
pub(crate) unsafe fn discard(ptr: NonNull<u8>, len: usize) {
    #[cfg(not(miri))]
    {
        // SAFETY: the caller guarantees the range is mapped and unused; DONTNEED only drops pages.
        let rc = unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_DONTNEED) };
        if rc != 0 {
            tracing::warn!(len, "madvise failed: {}", io::Error::last_os_error());
        }
    }
    #[cfg(miri)]
    {
        let _ = (ptr, len);
    }
}
