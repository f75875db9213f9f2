//! The system calls the network swap device needs that std does not wrap: mounting a FUSE file
//! system on an open `/dev/fuse`, unmounting it, and locking the daemon's memory.
//!
//! This is the only module of `netswap` with `unsafe`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Mounts a FUSE file system served through `fuse` (an open `/dev/fuse`) on `mountpoint`.
///
/// # Errors
/// The `mount(2)` error (`EPERM` without root).
pub fn mount_fuse(fuse: BorrowedFd<'_>, mountpoint: &Path) -> io::Result<()> {
    let target = c_path(mountpoint)?;
    let options = CString::new(format!(
        "fd={},rootmode=40000,user_id=0,group_id=0,allow_other",
        fuse.as_raw_fd()
    ))
    .map_err(|_| io::Error::other("mount options contain a NUL byte"))?;
    let source = c"farmem-netswap";
    let fstype = c"fuse";
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call; `data` is
    // the option string the fuse file system parses (it only reads it).
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            options.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Detaches the mount at `mountpoint` (`umount2(MNT_DETACH)`).
///
/// # Errors
/// The `umount2(2)` error.
pub fn unmount_lazy(mountpoint: &Path) -> io::Result<()> {
    let target = c_path(mountpoint)?;
    // SAFETY: `target` is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Locks this process's memory as it is faulted in (`mlockall(MCL_CURRENT | MCL_FUTURE |
/// MCL_ONFAULT)`), so the swap daemon and the memory server it talks to are never swapped out to
/// the device they serve. Nothing is pre-faulted.
///
/// # Errors
/// The `mlockall(2)` error.
pub fn lock_memory() -> io::Result<()> {
    // SAFETY: mlockall takes only flags and changes no memory contents.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Undoes [`lock_memory`].
pub fn unlock_memory() {
    // SAFETY: munlockall takes no arguments and changes no memory contents.
    unsafe { libc::munlockall() };
}
