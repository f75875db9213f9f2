//! Raw calls of the link between a forked child and the process serving its far pages: a
//! socket pair passing descriptors (`SCM_RIGHTS`), pidfds, `mincore` and `mprotect`.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// One message received on a link.
#[derive(Debug)]
pub enum Received {
    /// A one-byte tag, with the descriptor sent along with it (close-on-exec here).
    Message(u8, Option<OwnedFd>),
    /// Every copy of the other end is closed.
    Closed,
    /// Nothing arrived in time.
    Nothing,
}

/// A connected pair of close-on-exec `SOCK_SEQPACKET` sockets.
pub fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1i32; 2];
    // SAFETY: socketpair writes two descriptors into `fds`, a live array of two ints.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created for us and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Room for one `cmsghdr` carrying one descriptor, aligned for it.
#[repr(C, align(8))]
struct Control([u8; 32]);

/// An `iovec` over the one byte `b`.
fn one_byte(b: &mut u8) -> libc::iovec {
    libc::iovec {
        iov_base: std::ptr::from_mut(b).cast(),
        iov_len: 1,
    }
}

/// A `msghdr` with the one buffer `iov`, no name and no control buffer yet.
fn header(iov: &mut libc::iovec) -> libc::msghdr {
    // SAFETY: an all-zero msghdr is valid (no name, no buffers); the buffer is set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg
}

/// Sends the one-byte message `tag` on `sock`, with a copy of `fd` attached when given. Never
/// blocks: a full queue is an error (`EAGAIN`).
pub fn send(sock: RawFd, tag: u8, fd: Option<RawFd>) -> io::Result<()> {
    let mut byte = tag;
    let mut iov = one_byte(&mut byte);
    let mut control = Control([0; 32]);
    let mut msg = header(&mut iov);
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: `msg_control` points at `control`, which is at least `space` bytes and
        // aligned for a cmsghdr, so CMSG_FIRSTHDR returns a header inside it and CMSG_DATA a
        // place for one descriptor inside it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
        }
    }
    // SAFETY: `msg` points at live buffers (`byte`, `control`) for the whole call.
    let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n == 1 {
        Ok(())
    } else if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Err(io::Error::other("short send on a fork link"))
    }
}

/// Receives one message from `sock`, waiting up to `timeout_ms` for it (0: only what is
/// queued; -1: without limit).
pub fn recv(sock: RawFd, timeout_ms: i32) -> io::Result<Received> {
    if timeout_ms != 0 && !wait_readable(&[sock], timeout_ms)?[0] {
        return Ok(Received::Nothing);
    }
    let mut byte = 0u8;
    let mut iov = one_byte(&mut byte);
    let mut control = Control([0; 32]);
    let mut msg = header(&mut iov);
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len();
    // SAFETY: `msg` points at live buffers (`byte`, `control`) of the sizes it gives.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(Received::Nothing),
            _ => Err(e),
        };
    }
    if n == 0 {
        return Ok(Received::Closed);
    }
    let mut fd = None;
    // SAFETY: the kernel filled `msg_control` (within `control`) with `msg_controllen` bytes of
    // well-formed headers; CMSG_FIRSTHDR/NXTHDR stay within them.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>());
                // The first descriptor is kept; the sender never sends more than one.
                let owned = OwnedFd::from_raw_fd(raw);
                if fd.is_none() {
                    fd = Some(owned);
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(Received::Message(byte, fd))
}

/// Waits up to `timeout_ms` (-1: without limit) for any of `fds` to be readable (or closed by
/// the peer, or for a pidfd: its process ended); returns which are. An interrupted wait returns
/// all `false`.
pub fn wait_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    match super::poll_events(fds, timeout_ms) {
        Ok(ev) => Ok(ev
            .iter()
            .map(|&e| e & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
            .collect()),
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(vec![false; fds.len()]),
        Err(e) => Err(e),
    }
}

/// A pidfd of process `pid` (close-on-exec): readable once the process has ended.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened for us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Closes `fd`, a descriptor the caller owns and forgets (for descriptors a forked process
/// inherited without their owner).
pub fn close(fd: RawFd) {
    // SAFETY: closing a descriptor the caller owns; nothing uses the number afterwards.
    unsafe { libc::close(fd) };
}

/// Whether each page of `[addr, addr + out.len() pages)` is mapped in this process (bit 0 of
/// each byte of `out`, as `mincore` reports it).
pub fn mincore(addr: usize, out: &mut [u8]) -> io::Result<()> {
    // SAFETY: mincore writes one byte per page into `out`, a live buffer of that many bytes; it
    // only inspects the page tables of the range.
    let rc = unsafe {
        libc::mincore(
            addr as *mut libc::c_void,
            out.len() * super::PAGE,
            out.as_mut_ptr(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes `[addr, addr+len)` inaccessible (`PROT_NONE`): an access faults (SIGSEGV) instead of
/// reaching the page.
pub fn protect_none(addr: usize, len: usize) -> io::Result<()> {
    // SAFETY: removing access to pages of a paged region in this process; no Rust reference
    // into them is live in the library (the caller's program gets a fault instead of data).
    let rc = unsafe { libc::mprotect(addr as *mut libc::c_void, len, libc::PROT_NONE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::sync::Arc;

    use super::super::{PAGE, PageBuf, map_anonymous, read_page, unmap};
    use super::*;
    use crate::paging::ForkLink;

    /// A descriptor sent with a tag arrives as a working copy; a closed peer reads as closed.
    #[test]
    fn a_link_passes_descriptors_and_reports_its_end() {
        let (a, b) = socket_pair().unwrap();
        assert!(matches!(recv(b.as_raw_fd(), 0).unwrap(), Received::Nothing));
        let (mut r, w) = std::io::pipe().unwrap();
        send(a.as_raw_fd(), b'U', Some(w.as_raw_fd())).unwrap();
        drop(w);
        let Received::Message(tag, Some(fd)) = recv(b.as_raw_fd(), 1000).unwrap() else {
            panic!("no message");
        };
        assert_eq!(tag, b'U');
        std::fs::File::from(fd).write_all(b"x").unwrap();
        let mut got = [0u8; 1];
        r.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"x");
        send(a.as_raw_fd(), b'H', None).unwrap();
        assert!(matches!(
            recv(b.as_raw_fd(), 1000).unwrap(),
            Received::Message(b'H', None)
        ));
        drop(a);
        assert!(matches!(
            recv(b.as_raw_fd(), 1000).unwrap(),
            Received::Closed
        ));
    }

    /// A pidfd is readable once its process has ended, not before.
    #[test]
    fn a_pidfd_says_when_its_process_ended() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let fd = pidfd_open(child.id()).unwrap();
        assert_eq!(wait_readable(&[fd.as_raw_fd()], 0).unwrap(), vec![false]);
        assert_eq!(
            wait_readable(&[fd.as_raw_fd()], 10_000).unwrap(),
            vec![true]
        );
        child.wait().unwrap();
    }

    /// Only the pages stored at the fork that are not mapped here are fenced off.
    #[test]
    fn protect_unserved_fences_off_exactly_the_stored_pages_not_mapped() {
        let base = map_anonymous(8 * PAGE).unwrap();
        for p in [0, 2, 6] {
            // SAFETY: page `p` of the 8-page mapping just made, which nothing else uses.
            unsafe { ((base + p * PAGE) as *mut u8).write(7) };
        }
        // Pages 0 to 5 were stored at the fork; 6 and 7 were not.
        let stored = Arc::new(vec![0b11_1111u64]);
        let (ours, _theirs) = socket_pair().unwrap();
        let l = ForkLink::new(ours, None, stored, base, 8);
        assert_eq!(l.protect_unserved().unwrap(), 4, "pages 1, 3, 4 and 5");
        let mut buf = PageBuf::new(1).unwrap();
        for p in [0, 2, 6] {
            // SAFETY: pages 0, 2 and 6 are mapped and readable (not fenced off).
            unsafe { read_page(base + p * PAGE, &mut buf[..PAGE]) };
            assert_eq!(buf[0], 7);
        }
        // SAFETY: the mapping is this test's.
        unsafe { unmap(base, 8 * PAGE) };
    }
}
