//! The forked child's side of fork serving ([`ForkLink`]).
//!
//! A child's copy of the range stays registered with its userfaultfd only while some process
//! holds that userfaultfd open; were the serving process its only holder, its death (a signal,
//! `_exit`) would unregister the range and the child would read the far pages it has not
//! touched as zeros. So the serving process sends each child its own copy of its userfaultfd
//! over a socket pair set up for the fork, and the child keeps it open: when the serving process
//! is gone, the child's faults wait instead of reading zeros. The child then learns from the
//! link how serving ended:
//! - *handed over* (`H`): the serving process mapped into the child every page stored at the
//!   fork, so the child may close its userfaultfd (pages never stored read as zeros, as served);
//! - *unserved* (the serving process ended, or closed the link, without handing over): the
//!   pages stored at the fork that the child does not have are made inaccessible
//!   ([`ForkLink::protect_unserved`]) before the child closes its userfaultfd, so touching one
//!   faults (SIGSEGV) instead of reading zeros, while the pages it has keep working.
//!
//! Messages on a link: `U` with the child's userfaultfd (serving process to child), `H` (handed
//! over), and `L` with one end of a new link (child to serving process, before the child forks:
//! its own child is then linked the same way).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use super::sys::PAGE;
use super::sys::link::{self, Received};

/// Tag of the message carrying the child's userfaultfd.
pub(crate) const TAG_UFFD: u8 = b'U';
/// Tag of the message saying every page was handed over.
pub(crate) const TAG_HANDED_OVER: u8 = b'H';
/// Tag of the message carrying a link for a fork of the child.
pub(crate) const TAG_LINK: u8 = b'L';
/// Longest a child waits for its userfaultfd (the serving process sends it as soon as the
/// kernel reports the fork, before the child runs; its own wait for that gives up after 5 s).
const RECEIVE_WAIT: Duration = Duration::from_secs(30);

/// How serving a forked child ended ([`ForkLink::wait`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEnd {
    /// Every page the child may read is mapped in it.
    HandedOver,
    /// The serving process is gone (or stopped serving) without handing the pages over.
    Unserved,
}

/// A forked child's link to the process serving its far pages: its own userfaultfd (keeping its
/// range registered), the serving process (a pidfd) and the snapshot's stored bits. From
/// [`PagedRegion::fork_child`](super::PagedRegion::fork_child) in a child of the serving process
/// or [`ForkLink::for_child`] in a child of a child.
///
/// Dropping it closes its descriptors ([`ForkLink::close_all`]).
#[derive(Debug)]
pub struct ForkLink {
    /// This process's end of the socket pair (-1 once closed).
    sock: AtomicI32,
    /// This process's userfaultfd, once received (-1 before and once closed).
    uffd: AtomicI32,
    /// A pidfd of the serving process (-1 if none could be opened).
    server: AtomicI32,
    /// Bit per page: the backend held the page at the fork (the snapshot's stored bits).
    stored: Arc<Vec<u64>>,
    base: usize,
    pages: usize,
}

impl ForkLink {
    /// A link from this process's end `sock`, served by process `server`.
    pub(crate) fn new(
        sock: OwnedFd,
        server: Option<OwnedFd>,
        stored: Arc<Vec<u64>>,
        base: usize,
        pages: usize,
    ) -> Self {
        Self {
            sock: AtomicI32::new(into_raw(sock)),
            uffd: AtomicI32::new(-1),
            server: AtomicI32::new(server.map_or(-1, into_raw)),
            stored,
            base,
            pages,
        }
    }

    /// Waits until the serving process has sent this process its userfaultfd; `false` if it
    /// did not (the serving process ended or gave up on the fork): the far pages this process
    /// does not have are then no longer served, and the caller must
    /// [`protect`](ForkLink::protect_unserved) them before the program goes on.
    pub fn receive(&self) -> bool {
        let deadline = Instant::now() + RECEIVE_WAIT;
        let sock = self.sock.load(Ordering::Relaxed);
        let server = self.server.load(Ordering::Relaxed);
        loop {
            match link::recv(sock, 0) {
                Ok(Received::Message(TAG_UFFD, Some(fd))) => {
                    self.uffd.store(into_raw(fd), Ordering::Relaxed);
                    return true;
                }
                Ok(Received::Message(..)) => continue,
                Ok(Received::Closed) | Err(_) => return false,
                Ok(Received::Nothing) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let fds: Vec<RawFd> = [sock, server].into_iter().filter(|&f| f >= 0).collect();
            let ms = left.as_millis().min(1000) as i32;
            match link::wait_readable(&fds, ms) {
                // The server ended: what it sent before is queued; one more look.
                Ok(r) if r.get(1) == Some(&true) && !r[0] => {
                    if let Ok(Received::Message(TAG_UFFD, Some(fd))) = link::recv(sock, 0) {
                        self.uffd.store(into_raw(fd), Ordering::Relaxed);
                        return true;
                    }
                    return false;
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }

    /// Blocks until serving this process ends, and says how: handed over (`H` arrived) or
    /// unserved (the serving process ended, or closed the link, without it).
    pub fn wait(&self) -> LinkEnd {
        let sock = self.sock.load(Ordering::Relaxed);
        let server = self.server.load(Ordering::Relaxed);
        let fds: Vec<RawFd> = [sock, server].into_iter().filter(|&f| f >= 0).collect();
        loop {
            match link::recv(sock, 0) {
                Ok(Received::Message(TAG_HANDED_OVER, _)) => return LinkEnd::HandedOver,
                Ok(Received::Message(..)) => continue,
                Ok(Received::Closed) | Err(_) => return LinkEnd::Unserved,
                Ok(Received::Nothing) => {}
            }
            match link::wait_readable(&fds, -1) {
                Ok(r) if r.get(1) == Some(&true) && !r[0] => {
                    // The server ended; an `H` it sent before is queued.
                    return match link::recv(sock, 0) {
                        Ok(Received::Message(TAG_HANDED_OVER, _)) => LinkEnd::HandedOver,
                        _ => LinkEnd::Unserved,
                    };
                }
                Ok(_) => {}
                Err(_) => return LinkEnd::Unserved,
            }
        }
    }

    /// Makes inaccessible (`PROT_NONE`) every page this process does not have that the
    /// backend held at the fork: pages only the serving process could give it. Call it while
    /// this process's userfaultfd is still open (so no such page is mapped as zeros meanwhile)
    /// and before [`ForkLink::release`]. Returns how many pages it protected.
    ///
    /// # Errors
    /// `mincore` or `mprotect` refused a part of the range that is still mapped.
    pub fn protect_unserved(&self) -> io::Result<usize> {
        let mut protected = 0;
        let mut vec = Vec::new();
        let mut page = 0;
        while page < self.pages {
            if page % 64 == 0 && self.stored.get(page / 64) == Some(&0) {
                page += 64;
                continue;
            }
            if !self.was_stored(page) {
                page += 1;
                continue;
            }
            let mut n = 1;
            while page + n < self.pages && n < 4096 && self.was_stored(page + n) {
                n += 1;
            }
            vec.clear();
            vec.resize(n, 0);
            let addr = self.base + page * PAGE;
            if link::mincore(addr, &mut vec).is_err() {
                // A part of the run is unmapped: page by page, skipping the unmapped ones.
                for k in 0..n {
                    let a = addr + k * PAGE;
                    if link::mincore(a, &mut vec[k..k + 1]).is_err() {
                        vec[k] = 1;
                    }
                }
            }
            let mut k = 0;
            while k < n {
                if vec[k] & 1 != 0 {
                    k += 1;
                    continue;
                }
                let start = k;
                while k < n && vec[k] & 1 == 0 {
                    k += 1;
                }
                link::protect_none(addr + start * PAGE, (k - start) * PAGE)?;
                protected += k - start;
            }
            page += n;
        }
        Ok(protected)
    }

    /// Closes this process's userfaultfd: once the serving process has closed its copy too,
    /// the range is no longer registered (pages not mapped read as zeros), so call it after
    /// [`ForkLink::wait`] said the pages were handed over, or after
    /// [`ForkLink::protect_unserved`].
    pub fn release(&self) {
        let raw = self.uffd.swap(-1, Ordering::Relaxed);
        if raw >= 0 {
            link::close(raw);
        }
    }

    /// Before this process forks: makes a link for the child, sends one end to the serving
    /// process (it sends the child's userfaultfd over it when the kernel reports the fork) and
    /// returns the other, for [`ForkLink::for_child`] in the child.
    ///
    /// # Errors
    /// The socket pair could not be made or sent (the link is closed, for one).
    pub fn prepare_fork(&self) -> io::Result<OwnedFd> {
        let sock = self.sock.load(Ordering::Relaxed);
        if sock < 0 {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        let (ours, theirs) = link::socket_pair()?;
        link::send(sock, TAG_LINK, Some(theirs.as_raw_fd()))?;
        Ok(ours)
    }

    /// In the child of a fork prepared with [`ForkLink::prepare_fork`], on the link it inherited
    /// from its parent: the child's own link from `sock` (the end that call returned). Takes over
    /// the pidfd of the serving process and closes the inherited userfaultfd and link end (they
    /// belong to the parent).
    pub fn for_child(&self, sock: OwnedFd) -> ForkLink {
        let server = self.server.swap(-1, Ordering::Relaxed);
        self.close_all();
        Self {
            sock: AtomicI32::new(into_raw(sock)),
            uffd: AtomicI32::new(-1),
            server: AtomicI32::new(server),
            stored: self.stored.clone(),
            base: self.base,
            pages: self.pages,
        }
    }

    /// Closes every descriptor of the link: in a forked process that inherited it (the fork was
    /// not prepared with [`ForkLink::prepare_fork`]), or once it is no longer needed.
    pub fn close_all(&self) {
        for fd in [&self.uffd, &self.sock, &self.server] {
            let raw = fd.swap(-1, Ordering::Relaxed);
            if raw >= 0 {
                link::close(raw);
            }
        }
    }

    fn was_stored(&self, page: usize) -> bool {
        self.stored
            .get(page / 64)
            .is_some_and(|w| w & (1 << (page % 64)) != 0)
    }
}

impl Drop for ForkLink {
    fn drop(&mut self) {
        self.close_all();
    }
}

fn into_raw(fd: OwnedFd) -> RawFd {
    std::os::fd::IntoRawFd::into_raw_fd(fd)
}
