//! Raw userfaultfd, mmap and madvise calls: the only `unsafe` of the paging mode lives here.
//!
//! The kernel ABI (`linux/userfaultfd.h`) is declared by hand: the structs are `#[repr(C)]` copies
//! and the ioctl numbers are computed with the `_IOWR`/`_IOR` encoding (checked against the
//! kernel's values in the unit tests).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::PagingError;

pub mod link;

/// Bytes per page (x86-64 and aarch64 4 KiB pages; checked against `sysconf` at region creation).
pub const PAGE: usize = 4096;

const UFFD_API: u64 = 0xAA;
/// `userfaultfd(2)` flag: report faults raised in user mode only (needs no privilege).
const UFFD_USER_MODE_ONLY: libc::c_int = 1;
const UFFDIO: u32 = 0xAA;
/// Report write-protect faults (`UFFD_FEATURE_PAGEFAULT_FLAG_WP`).
const UFFD_FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
/// Report `fork`s of the registered process with a new userfaultfd for the child's copy of the
/// range (`UFFD_FEATURE_EVENT_FORK`; needs `CAP_SYS_PTRACE`).
const UFFD_FEATURE_EVENT_FORK: u64 = 1 << 1;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1 << 0;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const UFFDIO_COPY_MODE_DONTWAKE: u64 = 1 << 0;
const UFFDIO_COPY_MODE_WP: u64 = 1 << 1;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;
/// `uffd_msg.event` of a page fault.
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
/// `uffd_msg.event` of a fork (the child's userfaultfd is in `arg.fork.ufd`).
const UFFD_EVENT_FORK: u8 = 0x13;
/// The fault was a write.
pub const UFFD_PAGEFAULT_FLAG_WRITE: u64 = 1 << 0;
/// The fault hit a write-protected page (rather than a missing one).
pub const UFFD_PAGEFAULT_FLAG_WP: u64 = 1 << 1;
/// Bit of `uffdio_api.ioctls` / `uffdio_register.ioctls` saying `UFFDIO_WRITEPROTECT` works.
const IOCTL_BIT_WRITEPROTECT: u64 = 1 << 0x06;

const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOC(dir, type, nr, size)` from `asm-generic/ioctl.h`.
const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (ty << 8) | nr
}

const fn iowr(nr: u32, size: usize) -> u32 {
    ioc(IOC_READ | IOC_WRITE, UFFDIO, nr, size)
}

const fn ior(nr: u32, size: usize) -> u32 {
    ioc(IOC_READ, UFFDIO, nr, size)
}

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

/// `struct uffd_msg` restricted to the page-fault member of its union (32 bytes).
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct UffdMsg {
    event: u8,
    reserved1: u8,
    reserved2: u16,
    reserved3: u32,
    flags: u64,
    address: u64,
    ptid: u32,
    pad: u32,
}

const UFFDIO_API: u32 = iowr(0x3F, size_of::<UffdioApi>());
const UFFDIO_REGISTER: u32 = iowr(0x00, size_of::<UffdioRegister>());
const UFFDIO_WAKE: u32 = ior(0x02, size_of::<UffdioRange>());
const UFFDIO_COPY: u32 = iowr(0x03, size_of::<UffdioCopy>());
const UFFDIO_WRITEPROTECT: u32 = iowr(0x06, size_of::<UffdioWriteprotect>());

/// A page fault reported by the kernel.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    /// Faulting address (page-aligned by the kernel unless `EXACT_ADDRESS` is requested).
    pub address: usize,
    /// `UFFD_PAGEFAULT_FLAG_*` bits.
    pub flags: u64,
}

impl Fault {
    /// The fault is a write to a write-protected page.
    pub fn is_wp(&self) -> bool {
        self.flags & UFFD_PAGEFAULT_FLAG_WP != 0
    }

    /// The faulting access was a write.
    pub fn is_write(&self) -> bool {
        self.flags & UFFD_PAGEFAULT_FLAG_WRITE != 0
    }
}

/// An open userfaultfd with missing and write-protect fault reporting.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
    /// `fork`s are reported ([`Msg::Fork`]).
    fork_events: bool,
}

/// A message read from a userfaultfd.
#[derive(Debug)]
pub enum Msg {
    /// A page fault.
    Fault(Fault),
    /// The registered process forked: the userfaultfd of the child's copy of the range (with
    /// the same registration and features).
    Fork(Uffd),
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

impl Uffd {
    /// Opens a userfaultfd (non-blocking, close-on-exec) and negotiates write-protect support.
    /// With `user_mode_fallback`, a refusal for lack of privilege is retried with
    /// `UFFD_USER_MODE_ONLY` (faults raised by the kernel itself are then not reported). With
    /// `fork_events`, `fork`s are reported too when the kernel allows it (it needs
    /// `CAP_SYS_PTRACE`); [`Uffd::fork_events`] says whether it did.
    ///
    /// # Errors
    /// A [`PagingError::Unsupported`] naming the reason: no permission (not root and
    /// `vm.unprivileged_userfaultfd = 0`), no userfaultfd in this kernel, or no write-protect
    /// support for anonymous memory (kernels before 5.7).
    pub fn open(user_mode_fallback: bool, fork_events: bool) -> Result<Self, PagingError> {
        let (fd, user_mode_only) = Self::open_fd(user_mode_fallback)?;
        if fork_events && !user_mode_only {
            if let Ok(u) = Self::negotiate(fd, true) {
                return Ok(u);
            }
            tracing::info!(
                "paging: the kernel refused fork events; forked children are not served"
            );
            // A refused UFFDIO_API may leave the fd unusable: start again with a new one.
            let (fd, _) = Self::open_fd(user_mode_fallback)?;
            return Self::negotiate(fd, false);
        }
        Self::negotiate(fd, false)
    }

    fn open_fd(user_mode_fallback: bool) -> Result<(OwnedFd, bool), PagingError> {
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
        // SAFETY: userfaultfd takes one int flag argument and returns a new fd or -1.
        let mut fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
        let mut user_mode_only = false;
        if fd < 0 && errno() == libc::EPERM && user_mode_fallback {
            // SAFETY: as above, with the extra UFFD_USER_MODE_ONLY flag bit.
            fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags | UFFD_USER_MODE_ONLY) };
            user_mode_only = fd >= 0;
        }
        if fd < 0 {
            let reason = match errno() {
                libc::EPERM if user_mode_fallback => "permission denied, also for user-mode-only \
                    faults (Linux >= 5.11): run as root (CAP_SYS_PTRACE) or set \
                    vm.unprivileged_userfaultfd=1"
                    .to_string(),
                libc::EPERM => "permission denied: run as root (CAP_SYS_PTRACE) or set \
                                vm.unprivileged_userfaultfd=1"
                    .to_string(),
                libc::ENOSYS => "this kernel has no userfaultfd (CONFIG_USERFAULTFD)".to_string(),
                e => format!("userfaultfd(2) failed: {}", io::Error::from_raw_os_error(e)),
            };
            return Err(PagingError::Unsupported(reason));
        }
        if user_mode_only {
            tracing::info!("paging: userfaultfd limited to user-mode faults (UFFD_USER_MODE_ONLY)");
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        Ok((unsafe { OwnedFd::from_raw_fd(fd as i32) }, user_mode_only))
    }

    fn negotiate(fd: OwnedFd, fork_events: bool) -> Result<Self, PagingError> {
        let mut api = UffdioApi {
            api: UFFD_API,
            features: UFFD_FEATURE_PAGEFAULT_FLAG_WP
                | if fork_events {
                    UFFD_FEATURE_EVENT_FORK
                } else {
                    0
                },
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes exactly one `uffdio_api`, which `api` is.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API as _, &mut api) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            return Err(PagingError::Unsupported(format!(
                "UFFDIO_API with write-protect faults refused ({err}): the kernel lacks \
                 userfaultfd write-protect for anonymous memory (needs Linux >= 5.7)"
            )));
        }
        if api.features & UFFD_FEATURE_PAGEFAULT_FLAG_WP == 0 {
            return Err(PagingError::Unsupported(
                "kernel does not report write-protect faults (needs Linux >= 5.7)".into(),
            ));
        }
        Ok(Self { fd, fork_events })
    }

    /// Whether `fork`s are reported ([`Msg::Fork`]).
    pub fn fork_events(&self) -> bool {
        self.fork_events
    }

    /// The file descriptor (for polling several at once).
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Registers `[start, start+len)` for missing and write-protect faults.
    ///
    /// # Errors
    /// [`PagingError::Unsupported`] when the kernel refuses write-protect registration.
    pub fn register(&self, start: usize, len: usize) -> Result<(), PagingError> {
        let mut reg = UffdioRegister {
            range: UffdioRange {
                start: start as u64,
                len: len as u64,
            },
            mode: UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes exactly one `uffdio_register`.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_REGISTER as _, &mut reg) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            return Err(PagingError::Unsupported(format!(
                "UFFDIO_REGISTER (missing + write-protect) failed: {err}"
            )));
        }
        if reg.ioctls & IOCTL_BIT_WRITEPROTECT == 0 {
            return Err(PagingError::Unsupported(
                "kernel offers no UFFDIO_WRITEPROTECT on anonymous memory".into(),
            ));
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` for the fd to become readable. Returns `true` if readable.
    pub fn poll(&self, timeout_ms: i32) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd and nfds is 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        rc > 0
    }

    /// Reads at most one pending message. Non-blocking: `Ok(None)` when none is pending.
    ///
    /// One message at a time, so that a pager thread never holds faults it cannot serve while it
    /// waits for the backend: the other pager threads pick them up.
    pub fn read_msg(&self) -> io::Result<Option<Msg>> {
        let mut msg = UffdMsg::default();
        // SAFETY: the buffer is `msg`, valid for writes of its whole size; the kernel writes
        // whole `uffd_msg` records only.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&raw mut msg).cast(),
                size_of::<UffdMsg>(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
                _ => Err(err),
            };
        }
        if n as usize != size_of::<UffdMsg>() {
            return Ok(None);
        }
        match msg.event {
            UFFD_EVENT_PAGEFAULT => Ok(Some(Msg::Fault(Fault {
                address: msg.address as usize,
                flags: msg.flags,
            }))),
            UFFD_EVENT_FORK => {
                // `arg.fork.ufd` is the first 4 bytes of the union, where `flags` sits.
                let b = msg.flags.to_ne_bytes();
                let ufd = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
                // SAFETY: the kernel installed `ufd` in this process for this message; nobody
                // else owns it.
                let fd = unsafe { OwnedFd::from_raw_fd(ufd) };
                Ok(Some(Msg::Fork(Self {
                    fd,
                    fork_events: self.fork_events,
                })))
            }
            _ => Ok(None),
        }
    }

    /// Maps a copy of `src` (whole pages, one run) at `dst` with one `UFFDIO_COPY`. With `wp`
    /// the new pages are write-protected; with `wake` the threads waiting on the run are woken.
    ///
    /// Returns `Ok(false)` if part of the destination was already mapped (`EEXIST`; the other
    /// pages of the run are still mapped), which is harmless. A copy interrupted part-way
    /// (`EAGAIN`) is resumed where it stopped. `src.len()` must be a multiple of the page size and
    /// `dst` must lie in a range registered with this fd; the kernel checks both and returns an
    /// error otherwise.
    pub fn copy(&self, dst: usize, src: &[u8], wp: bool, wake: bool) -> io::Result<bool> {
        let mode = if wp { UFFDIO_COPY_MODE_WP } else { 0 }
            | if wake { 0 } else { UFFDIO_COPY_MODE_DONTWAKE };
        let mut done = 0usize;
        let mut all = true;
        while done < src.len() {
            let mut c = UffdioCopy {
                dst: (dst + done) as u64,
                src: src[done..].as_ptr() as u64,
                len: (src.len() - done) as u64,
                mode,
                copy: 0,
            };
            // SAFETY: UFFDIO_COPY reads `len` bytes from `src[done..]` (a live slice) and writes
            // only into the registered range at `dst`, which the kernel validates; `c` is one
            // `uffdio_copy`.
            let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_COPY as _, &mut c) };
            if rc == 0 {
                return Ok(all);
            }
            let e = errno();
            let copied = if c.copy > 0 { c.copy as usize } else { 0 };
            match e {
                libc::EAGAIN => done += copied,
                libc::EEXIST => {
                    // Skip the mapped page and carry on with the rest of the run.
                    all = false;
                    done += copied + PAGE;
                }
                _ => return Err(io::Error::from_raw_os_error(e)),
            }
        }
        if wake && !all {
            self.wake(dst, src.len())?;
        }
        Ok(all)
    }

    /// Write-protects (`protect`) or un-protects pages in `[start, start+len)`, retrying while
    /// the kernel answers `EAGAIN` (events of this userfaultfd not yet read, which another
    /// thread reads). Un-protecting wakes the threads waiting on the range.
    pub fn write_protect(&self, start: usize, len: usize, protect: bool) -> io::Result<()> {
        loop {
            match self.write_protect_once(start, len, protect) {
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
                r => return r,
            }
        }
    }

    /// [`Uffd::write_protect`] once: `EAGAIN` (events of this userfaultfd, such as a fork,
    /// not yet read) is returned rather than retried, for a caller that is itself the reader
    /// of those events.
    pub fn write_protect_once(&self, start: usize, len: usize, protect: bool) -> io::Result<()> {
        let mut wp = UffdioWriteprotect {
            range: UffdioRange {
                start: start as u64,
                len: len as u64,
            },
            // The kernel rejects WP together with DONTWAKE; protecting never wakes anyway.
            mode: if protect {
                UFFDIO_WRITEPROTECT_MODE_WP
            } else {
                0
            },
        };
        // SAFETY: UFFDIO_WRITEPROTECT reads one `uffdio_writeprotect`; the kernel validates
        // that the range is registered.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_WRITEPROTECT as _, &mut wp) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Wakes threads waiting on faults in `[start, start+len)` so they retry their access.
    pub fn wake(&self, start: usize, len: usize) -> io::Result<()> {
        let mut r = UffdioRange {
            start: start as u64,
            len: len as u64,
        };
        // SAFETY: UFFDIO_WAKE reads one `uffdio_range`.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_WAKE as _, &mut r) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Waits up to `timeout_ms` (-1: without limit) for an event on any of `fds` (asking for
/// `POLLIN`); returns each one's `revents`.
pub fn poll_events(fds: &[i32], timeout_ms: i32) -> io::Result<Vec<i16>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `pfds` is a live array of `pfds.len()` pollfds.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pfds.iter().map(|p| p.revents).collect())
}

/// Waits up to `timeout_ms` for any of `fds` to become readable; returns which are (all `false`
/// on timeout or error).
pub fn poll_many(fds: &[i32], timeout_ms: i32) -> Vec<bool> {
    match poll_events(fds, timeout_ms) {
        Ok(ev) => ev.iter().map(|&e| e & libc::POLLIN != 0).collect(),
        Err(_) => vec![false; fds.len()],
    }
}

/// Reserves `len` bytes of anonymous, private, not-yet-backed address space.
///
/// # Errors
/// [`PagingError::Mmap`] if the kernel refuses the mapping.
pub fn map_anonymous(len: usize) -> Result<usize, PagingError> {
    let p = crate::sys::map(len)
        .map_err(PagingError::Mmap)?
        .as_ptr()
        .cast::<libc::c_void>();
    // Pages are managed one 4 KiB page at a time: keep transparent huge pages away (best effort).
    // SAFETY: advice on our own fresh mapping; MADV_NOHUGEPAGE does not change contents.
    let _ = unsafe { libc::madvise(p, len, libc::MADV_NOHUGEPAGE) };
    Ok(p as usize)
}

/// Unmaps a mapping made by [`map_anonymous`].
///
/// # Safety
/// `[start, start+len)` must be a mapping made by [`map_anonymous`] that no live reference points
/// into.
pub unsafe fn unmap(start: usize, len: usize) {
    // SAFETY: the caller guarantees the range is ours and unused.
    let rc = unsafe { libc::munmap(start as *mut libc::c_void, len) };
    if rc != 0 {
        tracing::warn!("munmap failed: {}", io::Error::last_os_error());
    }
}

/// Drops the pages of `[start, start+len)`: the next access faults as missing.
///
/// The contents are lost; callers write dirty data back first. The range must be inside a
/// mapping made by [`map_anonymous`] (checked by the kernel: errors are returned, not UB).
pub fn drop_pages(start: usize, len: usize) -> io::Result<()> {
    // SAFETY: MADV_DONTNEED on a private anonymous mapping only discards page contents; the
    // mapping stays valid, so no Rust reference is invalidated (later reads fault and are served
    // by the pager with the written-back contents).
    let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Ranges per `process_madvise` call (the kernel takes at most `IOV_MAX`, 1024).
const DROP_VECTOR: usize = 512;

/// Drops many page ranges of this process at once: one `process_madvise(MADV_DONTNEED)` call
/// for up to [`DROP_VECTOR`] ranges (kernels since 6.16 flush the TLB once per call rather than
/// once per range: one shootdown instead of one per victim), or one `madvise` per range where
/// that call is unavailable (older kernels, seccomp filters).
#[derive(Debug)]
pub struct Dropper {
    /// A pidfd of this process, when `pidfd_open` works.
    pidfd: Option<OwnedFd>,
    /// Cleared once a vectored call failed where single ones succeeded.
    vectored: std::sync::atomic::AtomicBool,
}

impl Dropper {
    /// A dropper for this process.
    pub fn new() -> Self {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
        let pidfd = (fd >= 0).then(|| {
            // SAFETY: `fd` is a descriptor just opened for us and owned by nothing else.
            unsafe { OwnedFd::from_raw_fd(fd as i32) }
        });
        Self {
            vectored: std::sync::atomic::AtomicBool::new(pidfd.is_some()),
            pidfd,
        }
    }

    /// Drops the pages of every `(start, len)` range (see [`drop_pages`]).
    ///
    /// # Errors
    /// The first range the kernel refuses.
    pub fn drop_ranges(&self, ranges: &[(usize, usize)]) -> io::Result<()> {
        use std::sync::atomic::Ordering;
        let single = |rs: &[(usize, usize)]| rs.iter().try_for_each(|&(a, n)| drop_pages(a, n));
        let Some(pidfd) = &self.pidfd else {
            return single(ranges);
        };
        if ranges.len() < 2 || !self.vectored.load(Ordering::Relaxed) {
            return single(ranges);
        }
        for chunk in ranges.chunks(DROP_VECTOR) {
            let iov: Vec<libc::iovec> = chunk
                .iter()
                .map(|&(a, n)| libc::iovec {
                    iov_base: a as *mut libc::c_void,
                    iov_len: n,
                })
                .collect();
            // SAFETY: `iov` is a live array of `iov.len()` iovecs naming ranges of this process;
            // MADV_DONTNEED only discards the contents of private anonymous pages there (as
            // `drop_pages` does), invalidating no Rust reference.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_process_madvise,
                    pidfd.as_raw_fd(),
                    iov.as_ptr(),
                    iov.len(),
                    libc::MADV_DONTNEED,
                    0,
                )
            };
            let total: usize = chunk.iter().map(|&(_, n)| n).sum();
            if rc >= 0 && rc as usize == total {
                continue;
            }
            // Refused or cut short: the ranges one by one (dropping a range twice is harmless).
            single(chunk)?;
            if rc < 0 {
                self.vectored.store(false, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// Copies the resident page at `addr` into `out`.
///
/// # Safety
/// The page at `addr` must be mapped (resident) for the whole copy, otherwise the copy faults into
/// the pager and the calling pager thread deadlocks on itself.
pub unsafe fn read_page(addr: usize, out: &mut [u8]) {
    // SAFETY: the caller guarantees `addr..addr+out.len()` is mapped and readable; `out` is a
    // distinct local buffer, so the ranges do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, out.as_mut_ptr(), out.len()) }
}

/// A page-aligned buffer of whole pages, mapped directly from the kernel (never from the global
/// allocator, so it is never paged memory). `UFFDIO_COPY` needs a page-aligned source.
pub struct PageBuf {
    ptr: usize,
    len: usize,
}

impl PageBuf {
    /// A zeroed buffer of `pages` pages (at least one).
    ///
    /// # Errors
    /// [`PagingError::Mmap`] if the kernel refuses the mapping.
    pub fn new(pages: usize) -> Result<Self, PagingError> {
        let len = pages.max(1) * PAGE;
        let ptr = map_anonymous(len)?;
        Ok(Self { ptr, len })
    }
}

impl std::ops::Deref for PageBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is a live private mapping owned by `self`, readable and writable.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl std::ops::DerefMut for PageBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut u8, self.len) }
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        // SAFETY: the mapping is owned by `self` and no borrow of it outlives `self`.
        unsafe { unmap(self.ptr, self.len) }
    }
}

// SAFETY: `PageBuf` owns its mapping exclusively, like a `Box<[u8]>`.
unsafe impl Send for PageBuf {}
// SAFETY: shared access only hands out `&[u8]`.
unsafe impl Sync for PageBuf {}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { PAGE }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ioctl numbers computed from the `_IOWR`/`_IOR` encoding equal the kernel's values
    /// (as printed by a C program including `linux/userfaultfd.h` on x86-64).
    #[test]
    fn ioctl_numbers_match_the_kernel() {
        assert_eq!(UFFDIO_API, 0xc018_aa3f);
        assert_eq!(UFFDIO_REGISTER, 0xc020_aa00);
        assert_eq!(UFFDIO_WAKE, 0x8010_aa02);
        assert_eq!(UFFDIO_COPY, 0xc028_aa03);
        assert_eq!(UFFDIO_WRITEPROTECT, 0xc018_aa06);
        assert_eq!(size_of::<UffdMsg>(), 32);
    }

    #[test]
    fn page_size_is_4k() {
        assert_eq!(page_size(), PAGE);
    }

    /// Dropping several ranges at once zeroes exactly those pages, vectored or not.
    #[test]
    fn dropper_drops_exactly_the_ranges() {
        for vectored in [true, false] {
            let mut buf = PageBuf::new(6).unwrap();
            buf.fill(7);
            let d = Dropper::new();
            if !vectored {
                d.vectored
                    .store(false, std::sync::atomic::Ordering::Relaxed);
            }
            let base = buf.as_ptr() as usize;
            d.drop_ranges(&[(base, PAGE), (base + 2 * PAGE, 2 * PAGE)])
                .unwrap();
            let zero: Vec<usize> = (0..6)
                .filter(|&p| buf[p * PAGE..][..PAGE].iter().all(|&b| b == 0))
                .collect();
            assert_eq!(zero, vec![0, 2, 3], "vectored {vectored}");
            assert!(buf[PAGE..2 * PAGE].iter().all(|&b| b == 7));
            assert!(buf[4 * PAGE..].iter().all(|&b| b == 7));
        }
    }
}
