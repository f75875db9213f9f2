//! Forked children of a region's process ([`PagingConfig::serve_forks`](super::PagingConfig)).
//!
//! With `UFFD_FEATURE_EVENT_FORK` the kernel keeps the child's copy of the range registered, with
//! a new userfaultfd handed to the monitor (a pager thread of the parent) when the fork happens.
//! The child then has the pages that were mapped at the fork (copy-on-write, like any private
//! memory) and its faults on the others arrive on that userfaultfd. One thread of the parent
//! (`farmem-forks`) serves them from a *snapshot*: the backend's copies as of the fork.
//!
//! - **Snapshot.** Before the fork ([`Forks::prepare`], from an `atfork` handler) the region's
//!   stored bits are copied: which pages the backend held. A page the backend did not hold
//!   reads as zeros in the child. Until the fork is reported the reclaimer drops no page it
//!   wrote back, so a page resident then is still mapped when the kernel copies the memory (the
//!   child has it) and a page not resident then is as the backend held it.
//! - **Copy before overwrite.** From then on, until the last process of the snapshot is gone,
//!   every write-back of a page the snapshot may still need first fetches the backend's copy
//!   (the fork-time one) and keeps it in the snapshot ([`Forks::preserve`]); a child fault on
//!   that page is served from the kept copy. A child fault otherwise fetches the page from the
//!   backend and checks for a kept copy *after* the fetch, so a fetch that raced with a
//!   write-back never maps the parent's newer version.
//! - **Frees.** A page the parent frees while a snapshot needs it keeps its backend object
//!   ([`Forks::keep`]); the object is freed when the snapshot ends, unless the parent stored the
//!   page again meanwhile.
//! - **Child's writes** are private to it: its write-protect bits are cleared at the fork (the
//!   parent's clean-page protection is copied into the child), so its writes take ordinary
//!   copy-on-write faults; pages mapped into it are mapped writable.
//! - **Its own forks** arrive on its userfaultfd and join the same snapshot.
//! - **End.** A process that exits or calls `exec` drops its memory; the serving thread finds it
//!   gone (`ESRCH`) within a probe interval and, once no process of a snapshot is left, drops the
//!   snapshot. At the parent's exit, [`Forks::hand_over`] maps every page a living child may
//!   still read into it, since the child's range stops being served when the parent is gone,
//!   and tells the child so over its link.
//! - **Links** (the `fork_link` module). The parent sends each child (grandchildren included) a
//!   copy of its userfaultfd over a socket pair made for the fork, so the child's range stays
//!   registered when the parent dies without [`Forks::hand_over`] (SIGKILL, `_exit`, a crash):
//!   the child's faults then wait rather than map zeros, and the child, which watches the
//!   parent (a pidfd) and the link, makes the far pages it lacks inaccessible before it closes
//!   its userfaultfd. Those pages are lost to it (their fork-time copies lived in the parent or
//!   may since have been overwritten on the backend); touching one faults instead of reading
//!   zeros. A fork that could not be linked (no socket, or a fork not prepared with
//!   [`Forks::prepare`]) is served all the same, but reads such pages as zeros if the parent
//!   dies.
//!
//! A child's pages stay resident in it (no budget in the child: the parent cannot evict another
//! process's pages).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::backend::ObjectId;

use super::PagingError;
use super::core::Core;
use super::fork_link::{ForkLink, TAG_HANDED_OVER, TAG_LINK, TAG_UFFD};
use super::internal::InternalGuard;
use super::sys::link::{self, Received};
use super::sys::{self, Fault, Msg, PAGE, PageBuf, Uffd};
use super::writeback::{get_pages, retry};

/// Most pages mapped into a child by one fault (sequential faults double the run up to this).
const RUN: usize = 64;
/// How long the serving thread waits for a child's fault before it looks for new children.
const POLL_MS: i32 = 20;
/// How often the serving thread checks whether its children still exist.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// How long the parent's side of `fork` waits for the pager to take the child's userfaultfd.
const ATTACH_WAIT: Duration = Duration::from_secs(5);
/// Longest the reclaimer holds back its drops for a fork (a fault waiting for free slots may
/// keep the pager threads from reading the fork event meanwhile).
const FREEZE_MAX: Duration = Duration::from_secs(1);

/// The far pages as of one fork, for the process forked then and its own forks.
pub struct Snapshot {
    /// Bit per page: the backend held the page at the fork.
    stored: Arc<Vec<u64>>,
    inner: Mutex<SnapInner>,
}

#[derive(Default)]
struct SnapInner {
    /// Fork-time contents of pages the parent has overwritten on the backend since.
    saved: HashMap<usize, Arc<[u8]>>,
    /// Pages the parent freed whose backend objects are kept for this snapshot.
    orphans: Vec<usize>,
    /// The userfaultfds of the processes served from this snapshot.
    children: Vec<Arc<Uffd>>,
    /// The links to those processes (by the raw descriptor of their userfaultfd here).
    links: HashMap<RawFd, OwnedFd>,
}

impl SnapInner {
    /// Forgets the links of processes no longer in `children`.
    fn prune_links(&mut self) {
        let alive: Vec<RawFd> = self.children.iter().map(|c| c.raw_fd()).collect();
        self.links.retain(|fd, _| alive.contains(fd));
    }
}

impl Snapshot {
    fn new(stored: Vec<u64>) -> Self {
        Self {
            stored: Arc::new(stored),
            inner: Mutex::new(SnapInner::default()),
        }
    }

    fn was_stored(&self, page: usize) -> bool {
        self.stored
            .get(page / 64)
            .is_some_and(|w| w & (1 << (page % 64)) != 0)
    }

    /// Whether the backend's copy of `page` is still the one this snapshot serves.
    fn needs(&self, inner: &SnapInner, page: usize) -> bool {
        self.was_stored(page) && !inner.saved.contains_key(&page)
    }
}

#[derive(Default)]
struct Registry {
    /// Taken before a fork, waiting for the child's userfaultfd.
    pending: Option<Arc<Snapshot>>,
    /// Until the child's userfaultfd arrives (at most until then), the reclaimer drops no page
    /// it wrote back: every page resident when the snapshot was taken is then still mapped when
    /// the kernel copies the parent's memory, and every other page is as the snapshot has it.
    frozen_until: Option<Instant>,
    /// Snapshots with processes.
    live: Vec<Arc<Snapshot>>,
    /// Children whose inherited write protection is not cleared yet: their userfaultfd had an
    /// event (their own fork) waiting, which the serving thread reads before it clears them.
    unprotect: Vec<Arc<Uffd>>,
}

/// The link made for a fork about to happen (see the `fork_link` module).
struct LinkPair {
    /// The serving end, taken when the fork is reported.
    ours: Option<OwnedFd>,
    /// The child's end (the parent's copy is closed after the fork).
    theirs: OwnedFd,
    stored: Arc<Vec<u64>>,
    /// This process, which serves the child.
    server: u32,
}

/// The forks of a region. Lock order: the region's write-back lock, its state lock, then this.
#[derive(Default)]
pub struct Forks {
    reg: Mutex<Registry>,
    changed: Condvar,
    /// Only the forking thread (before and after the fork, and in the child) and the thread
    /// reading the fork event (after the kernel copied the memory) take it, so the child never
    /// finds it held.
    link: Mutex<Option<LinkPair>>,
}

impl Forks {
    /// In a forked child: closes its copies of the other children's userfaultfds and links.
    /// A copy held here would keep a sibling's range registered after the parent is gone, with
    /// nobody serving it (its faults, and its forks, would wait forever). The registry's
    /// entries are forgotten, never dropped, in the child (the threads of the parent holding
    /// other references do not exist here). Skipped if the fork caught a lock held.
    fn close_inherited(&self) {
        let Some(mut reg) = self.reg.try_lock() else {
            return;
        };
        let live = std::mem::take(&mut reg.live);
        std::mem::forget(std::mem::take(&mut reg.unprotect));
        for s in &live {
            if let Some(inner) = s.inner.try_lock() {
                let fds = inner.children.iter().map(|c| c.raw_fd());
                for fd in fds.chain(inner.links.values().map(|l| l.as_raw_fd())) {
                    link::close(fd);
                }
            }
        }
        std::mem::forget(live);
    }

    /// Takes the snapshot for a fork about to happen: `stored` are the region's stored bits,
    /// copied under the state lock, which the caller still holds (so that the reclaimer, which
    /// checks [`Forks::frozen`] under it before dropping written-back pages, either dropped
    /// them before the copy or waits).
    pub fn prepare(&self, stored: Vec<u64>) {
        let snap = Arc::new(Snapshot::new(stored));
        *self.link.lock() = match link::socket_pair() {
            Ok((ours, theirs)) => Some(LinkPair {
                ours: Some(ours),
                theirs,
                stored: snap.stored.clone(),
                server: std::process::id(),
            }),
            Err(e) => {
                tracing::warn!(
                    "paging: no link for a forked child ({e}): it reads zeros for far pages it has not touched if this process is killed"
                );
                None
            }
        };
        let mut reg = self.reg.lock();
        reg.pending = Some(snap);
        reg.frozen_until = Some(Instant::now() + FREEZE_MAX);
    }

    /// In the child of a fork prepared with [`Forks::prepare`]: its link to this process's
    /// serving thread (`None` if the link could not be made).
    pub fn child(&self, base: usize, pages: usize) -> Option<ForkLink> {
        self.close_inherited();
        let pair = self.link.lock().take()?;
        // The serving end stays with the parent only.
        drop(pair.ours);
        let server = link::pidfd_open(pair.server).ok();
        Some(ForkLink::new(pair.theirs, server, pair.stored, base, pages))
    }

    /// Whether a fork is under way (see `Registry::frozen_until`).
    pub fn frozen(&self) -> bool {
        self.reg
            .lock()
            .frozen_until
            .is_some_and(|t| Instant::now() < t)
    }

    /// Waits while a fork is under way (see `Registry::frozen_until`); the reclaimer calls it
    /// before it drops pages it wrote back.
    pub fn wait_thaw(&self) {
        let mut reg = self.reg.lock();
        while let Some(t) = reg.frozen_until {
            if Instant::now() >= t {
                reg.frozen_until = None;
                break;
            }
            self.changed.wait_until(&mut reg, t);
        }
    }

    /// After a fork in the parent: waits until a pager thread took the child's userfaultfd (the
    /// kernel reports the fork before `fork` returns, but the pager takes it just after), or
    /// drops the snapshot if `forked` is `false` (the fork failed).
    pub fn parent(&self, forked: bool) {
        let mut reg = self.reg.lock();
        if forked {
            let deadline = Instant::now() + ATTACH_WAIT;
            while reg.pending.is_some() && Instant::now() < deadline {
                self.changed.wait_until(&mut reg, deadline);
            }
            if reg.pending.is_some() {
                tracing::warn!("paging: no fork event arrived for a fork; its snapshot is dropped");
            }
        }
        reg.pending = None;
        reg.frozen_until = None;
        drop(reg);
        self.changed.notify_all();
        // The child's end belongs to the child (and the serving end to the serving thread).
        *self.link.lock() = None;
    }

    /// Every snapshot that may still need backend copies (the pending one included).
    fn snapshots(&self) -> Vec<Arc<Snapshot>> {
        let reg = self.reg.lock();
        reg.live
            .iter()
            .chain(reg.pending.as_ref())
            .cloned()
            .collect()
    }

    /// Whether any snapshot exists (cheap check for the write-back path).
    pub fn any(&self) -> bool {
        let reg = self.reg.lock();
        !reg.live.is_empty() || reg.pending.is_some()
    }

    /// A fork was reported: serves `child` from the pending snapshot (or, for a fork that ran
    /// no `atfork` handler, from one taken now).
    pub fn attach(&self, core: &Core, child: Uffd) {
        let child = Arc::new(child);
        let mut reg = self.reg.lock();
        let snap = match reg.pending.take() {
            Some(s) => s,
            None => {
                drop(reg);
                tracing::warn!("paging: a fork without prepare; its snapshot is taken late");
                let bits = core.state.lock().stored_bits();
                reg = self.reg.lock();
                Arc::new(Snapshot::new(bits))
            }
        };
        // The child keeps its range registered itself: it is sent its userfaultfd.
        let ours = self.link.lock().as_mut().and_then(|p| p.ours.take());
        let ours = ours.and_then(|l| send_uffd(&l, &child).then_some(l));
        // Served from now on: the parent's side of the fork returns when the pending snapshot
        // is gone, and finds it live with its child.
        {
            let mut inner = snap.inner.lock();
            inner.children.push(child.clone());
            if let Some(l) = ours {
                inner.links.insert(child.raw_fd(), l);
            }
        }
        reg.live.push(snap);
        reg.frozen_until = None;
        if !unprotect_all(core, &child) {
            reg.unprotect.push(child);
        }
        drop(reg);
        self.changed.notify_all();
    }

    /// Before the backend copies of `pages` are overwritten: keeps the fork-time contents of
    /// those a snapshot still needs.
    ///
    /// # Errors
    /// A backend error that persisted through the retries.
    pub fn preserve(&self, core: &Core, pages: &[usize]) -> Result<(), PagingError> {
        let snaps = self.current(core);
        if snaps.is_empty() {
            return Ok(());
        }
        let mut need: Vec<usize> = pages
            .iter()
            .copied()
            .filter(|&p| {
                snaps.iter().any(|s| {
                    let inner = s.inner.lock();
                    s.needs(&inner, p)
                })
            })
            .collect();
        need.sort_unstable();
        need.dedup();
        if need.is_empty() {
            return Ok(());
        }
        let ids: Vec<ObjectId> = need.iter().map(|&p| core.id(p)).collect();
        let data = fetch(core, &ids)?;
        for s in &snaps {
            let mut inner = s.inner.lock();
            for (&p, d) in need.iter().zip(&data) {
                if s.needs(&inner, p) {
                    inner.saved.insert(p, d.clone());
                }
            }
        }
        Ok(())
    }

    /// The parent frees `page`, which the backend holds: returns `true` if a snapshot still
    /// needs its copy (the object is then kept until the snapshot ends).
    pub fn keep(snaps: &[Arc<Snapshot>], page: usize) -> bool {
        for s in snaps {
            let mut inner = s.inner.lock();
            if s.needs(&inner, page) {
                inner.orphans.push(page);
                return true;
            }
        }
        false
    }

    /// The snapshots that still serve a process (the pending one included), after dropping the
    /// processes that are gone: a parent that frees its memory right after `waitpid` finds its
    /// child gone here and frees the backend copies at once.
    pub fn current(&self, core: &Core) -> Vec<Arc<Snapshot>> {
        let (live, pending) = {
            let reg = self.reg.lock();
            (reg.live.clone(), reg.pending.clone())
        };
        let mut v: Vec<Arc<Snapshot>> = live
            .into_iter()
            .filter(|s| {
                let mut inner = s.inner.lock();
                inner.children.retain(|c| !gone(core, c));
                inner.prune_links();
                !inner.children.is_empty()
            })
            .collect();
        v.extend(pending);
        v
    }

    /// At the parent's exit: maps into each living child every page of its snapshot that the
    /// backend held at the fork (pages it has keep theirs), so that it can go on without the
    /// parent, and tells each child that got all of them. Errors are logged; a child that is
    /// gone, or that could not be given every page, is skipped (it finds its unserved pages
    /// inaccessible once the parent is gone: see the `fork_link` module).
    pub fn hand_over(&self, core: &Core) {
        let Ok(mut buf) = PageBuf::new(RUN) else {
            return;
        };
        for s in self.snapshots() {
            let children = s.inner.lock().children.clone();
            let mut alive: Vec<Arc<Uffd>> = children;
            let mut page = 0;
            while page < core.pages && !alive.is_empty() {
                if !s.was_stored(page) {
                    page += 1;
                    continue;
                }
                let mut n = 1;
                while n < RUN && page + n < core.pages && s.was_stored(page + n) {
                    n += 1;
                }
                if let Err(e) = fill(core, &s, page, n, &mut buf) {
                    tracing::error!("paging: handing pages over to a child failed: {e}");
                    return;
                }
                alive.retain(|c| map_all(core, c, page, n, &buf).is_ok());
                page += n;
            }
            let inner = s.inner.lock();
            for c in &alive {
                if let Some(l) = inner.links.get(&c.raw_fd())
                    && let Err(e) = link::send(l.as_raw_fd(), TAG_HANDED_OVER, None)
                {
                    tracing::warn!("paging: telling a forked child it has its pages failed: {e}");
                }
            }
        }
    }
}

/// Whether the process of `child` is gone (exited or replaced by `exec`): any call that needs
/// its memory says so. Clearing the write protection of the range's first page is harmless in
/// a child (it has none left).
fn gone(core: &Core, child: &Uffd) -> bool {
    // Once: this thread reads the child's events, so it must not wait for them (EAGAIN means
    // the child is alive and forking).
    matches!(child.write_protect_once(core.base, PAGE, false),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH))
}

/// Sends `child` its userfaultfd over its link; `false` (logged) if that failed.
fn send_uffd(l: &OwnedFd, child: &Uffd) -> bool {
    match link::send(l.as_raw_fd(), TAG_UFFD, Some(child.raw_fd())) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("paging: sending a forked child its userfaultfd failed: {e}");
            false
        }
    }
}

/// The newest link end a child sent for its own fork (older ones are from forks that failed).
fn link_for_fork(parent_link: Option<&OwnedFd>) -> Option<OwnedFd> {
    let l = parent_link?;
    let mut newest = None;
    loop {
        match link::recv(l.as_raw_fd(), 0) {
            Ok(Received::Message(TAG_LINK, Some(fd))) => newest = Some(fd),
            Ok(Received::Message(..)) => {}
            _ => return newest,
        }
    }
}

/// Fetches `ids` (whole pages) in one request.
fn fetch(core: &Core, ids: &[ObjectId]) -> Result<Vec<Arc<[u8]>>, PagingError> {
    let data = retry("fork snapshot fetch", || get_pages(&*core.backend, ids))?;
    Ok(data.into_iter().map(Arc::from).collect())
}

/// Clears the write-protect bits the child inherited (its writes then take ordinary
/// copy-on-write faults, not userfaultfd ones; threads waiting on a write-protect fault wake).
/// `false` when it must wait until the child's pending events (its own fork) are read: the
/// serving thread reads them and tries again, so nothing here waits on itself.
fn unprotect_all(core: &Core, child: &Uffd) -> bool {
    match child.write_protect_once(core.base, core.pages * PAGE, false) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => false,
        Err(e) => {
            tracing::warn!("paging: clearing a child's write protection failed: {e}");
            true
        }
    }
}

/// Puts the fork-time contents of pages `[first, first+n)` into `buf`.
fn fill(
    core: &Core,
    snap: &Snapshot,
    first: usize,
    n: usize,
    buf: &mut PageBuf,
) -> Result<(), PagingError> {
    let mut want = Vec::new();
    {
        let inner = snap.inner.lock();
        for k in 0..n {
            let p = first + k;
            let out = &mut buf[k * PAGE..][..PAGE];
            if let Some(d) = inner.saved.get(&p) {
                out.copy_from_slice(d);
            } else if snap.was_stored(p) {
                want.push(k);
            } else {
                out.fill(0);
            }
        }
    }
    if want.is_empty() {
        return Ok(());
    }
    let ids: Vec<ObjectId> = want.iter().map(|&k| core.id(first + k)).collect();
    let fetched = fetch(core, &ids);
    // Kept copies are checked after the fetch: a write-back keeps the old copy before it sends
    // the new one, so a fetch that returned the new one finds the old one kept here.
    let inner = snap.inner.lock();
    for (j, &k) in want.iter().enumerate() {
        let out = &mut buf[k * PAGE..][..PAGE];
        match (inner.saved.get(&(first + k)), &fetched) {
            (Some(d), _) => out.copy_from_slice(d),
            (None, Ok(data)) => out.copy_from_slice(&data[j]),
            // The fetch failed and the page is not kept: a real failure.
            (None, Err(_)) => return fetched.map(|_| ()),
        }
    }
    Ok(())
}

/// Maps `buf`'s first `n` pages at page `first` of the child, writable; pages it has are left
/// alone. Falls back to the first page alone where the run crosses an unmapped part.
fn map_run(
    core: &Core,
    child: &Uffd,
    first: usize,
    n: usize,
    buf: &PageBuf,
) -> std::io::Result<usize> {
    let addr = core.addr(first);
    match child.copy(addr, &buf[..n * PAGE], false, true) {
        Ok(_) => Ok(n),
        Err(e) if n > 1 && e.raw_os_error() == Some(libc::ENOENT) => {
            child.copy(addr, &buf[..PAGE], false, true).map(|_| 1)
        }
        Err(e) => Err(e),
    }
}

/// Maps `buf`'s first `n` pages at page `first` of the child, writable; pages it has are left
/// alone, and so are parts of the run it unmapped.
fn map_all(
    core: &Core,
    child: &Uffd,
    first: usize,
    n: usize,
    buf: &PageBuf,
) -> std::io::Result<()> {
    let enoent = |e: &std::io::Error| e.raw_os_error() == Some(libc::ENOENT);
    match child.copy(core.addr(first), &buf[..n * PAGE], false, true) {
        Ok(_) => Ok(()),
        Err(e) if enoent(&e) => {
            for k in 0..n {
                match child.copy(core.addr(first + k), &buf[k * PAGE..][..PAGE], false, true) {
                    Err(e) if !enoent(&e) => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The thread serving forked children: runs until the region stops.
pub fn serve(core: &Core) {
    let _internal = InternalGuard::new();
    let mut buf = match PageBuf::new(RUN) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("paging: no buffer to serve forked children: {e}");
            return;
        }
    };
    // Per child (by fd): the page after its last run and that run's length.
    let mut runs: HashMap<i32, (usize, usize)> = HashMap::new();
    let mut last_probe = Instant::now();
    while !core.stop.load(Ordering::Acquire) {
        let snaps = {
            let mut reg = core.forks.reg.lock();
            if reg.live.is_empty() {
                core.forks
                    .changed
                    .wait_for(&mut reg, Duration::from_millis(100));
            }
            reg.live.clone()
        };
        if snaps.is_empty() {
            runs.clear();
            continue;
        }
        let mut fds = Vec::new();
        let mut who = Vec::new();
        for s in &snaps {
            for c in &s.inner.lock().children {
                fds.push(c.raw_fd());
                who.push((s.clone(), c.clone()));
            }
        }
        let ready = sys::poll_many(&fds, POLL_MS);
        for (k, _) in ready.iter().enumerate().filter(|(_, r)| **r) {
            let (snap, child) = &who[k];
            for _ in 0..16 {
                match child.read_msg() {
                    Ok(Some(Msg::Fault(f))) => {
                        let run = runs.entry(child.raw_fd()).or_insert((usize::MAX, 0));
                        if let Err(e) = serve_fault(core, snap, child, f, run, &mut buf) {
                            let gone = matches!(&e, PagingError::Sys(io)
                                if io.raw_os_error() == Some(libc::ESRCH));
                            if !gone {
                                // The child stays blocked in this fault rather than read
                                // anything but its data.
                                tracing::error!(
                                    "paging: cannot serve a forked child's fault at {:#x}: {e}",
                                    f.address
                                );
                                eprintln!(
                                    "farmem paging: cannot serve a forked child's page fault: {e}"
                                );
                            }
                            break;
                        }
                    }
                    Ok(Some(Msg::Fork(grandchild))) => {
                        let grandchild = Arc::new(grandchild);
                        let mut inner = snap.inner.lock();
                        let l = link_for_fork(inner.links.get(&child.raw_fd()))
                            .filter(|l| send_uffd(l, &grandchild));
                        if let Some(l) = l {
                            inner.links.insert(grandchild.raw_fd(), l);
                        }
                        inner.children.push(grandchild.clone());
                        drop(inner);
                        if !unprotect_all(core, &grandchild) {
                            core.forks.reg.lock().unprotect.push(grandchild);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("paging: reading a child's userfaultfd failed: {e}");
                        break;
                    }
                }
            }
        }
        // Children whose events were just read can be unprotected now.
        let waiting = std::mem::take(&mut core.forks.reg.lock().unprotect);
        let still: Vec<Arc<Uffd>> = waiting
            .into_iter()
            .filter(|c| !unprotect_all(core, c))
            .collect();
        core.forks.reg.lock().unprotect.extend(still);
        if last_probe.elapsed() >= PROBE_EVERY {
            last_probe = Instant::now();
            reap(core, &snaps, &mut runs);
        }
    }
}

/// Serves one fault of a child: a run of pages from the faulting one, longer while its faults
/// are sequential.
fn serve_fault(
    core: &Core,
    snap: &Snapshot,
    child: &Arc<Uffd>,
    f: Fault,
    run: &mut (usize, usize),
    buf: &mut PageBuf,
) -> Result<(), PagingError> {
    let addr = f.address & !(PAGE - 1);
    if addr < core.base || addr >= core.addr(core.pages) {
        return child.wake(addr, PAGE).map_err(PagingError::Sys);
    }
    if f.is_wp() {
        // A write before the fork's clearing (or one that raced with it): the child's writes
        // need no tracking. While the clearing waits for the child's events, the writer waits
        // for it (it wakes every thread waiting on the range).
        return match child.write_protect_once(addr, PAGE, false) {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                core.forks.reg.lock().unprotect.push(child.clone());
                Ok(())
            }
            r => r.map_err(PagingError::Sys),
        };
    }
    let page = (addr - core.base) / PAGE;
    let want = if page == run.0 {
        (run.1 * 2).clamp(1, RUN)
    } else {
        1
    };
    let n = want.min(core.pages - page);
    fill(core, snap, page, n, buf)?;
    let mapped = map_run(core, child, page, n, buf).map_err(PagingError::Sys)?;
    *run = (page + mapped, mapped);
    Ok(())
}

/// Drops the children that are gone, and the snapshots left without any.
fn reap(core: &Core, snaps: &[Arc<Snapshot>], runs: &mut HashMap<i32, (usize, usize)>) {
    for s in snaps {
        let ended = {
            let mut inner = s.inner.lock();
            inner.children.retain(|c| {
                let gone = gone(core, c);
                if gone {
                    runs.remove(&c.raw_fd());
                }
                !gone
            });
            inner.prune_links();
            inner.children.is_empty()
        };
        if ended {
            core.forks.reg.lock().live.retain(|x| !Arc::ptr_eq(x, s));
            release(core, s);
        }
    }
}

/// Frees the backend objects a snapshot kept for itself, unless another snapshot needs them
/// (they pass to it) or the parent stored the page again.
fn release(core: &Core, snap: &Snapshot) {
    let orphans = std::mem::take(&mut snap.inner.lock().orphans);
    if orphans.is_empty() {
        return;
    }
    let _wb = core.wb_lock.lock();
    let mut st = core.state.lock();
    let others = core.forks.snapshots();
    let mut ids = Vec::new();
    for p in orphans {
        if !Forks::keep(&others, p) && !st.is_stored(p) {
            ids.push(core.id(p));
        }
    }
    st.stats.freed_stored += ids.len() as u64;
    drop(st);
    if let Err(e) = retry("free", || core.backend.free(&ids)) {
        tracing::warn!("paging: freeing pages kept for a forked child failed: {e}");
    }
}
