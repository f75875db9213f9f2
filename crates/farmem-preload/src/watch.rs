//! A forked child's watch over the process serving its far pages.
//!
//! A child served by its parent keeps its own copy of its userfaultfd (see
//! [`ForkLink`]), so the parent's death does not leave its range unregistered (far pages it
//! had not touched would read as zeros). A thread of the child (`farmem-fork-watch`) waits on
//! the link: once the parent has handed every page over, the child closes its userfaultfd; if
//! the parent ends without that (killed, `_exit`), the far pages the child does not have are
//! made inaccessible and touching one prints the cause and kills the child with SIGBUS, while
//! the pages it has keep working. A child's own children are linked the same way (the fork
//! handlers below, and the `L` message of the link). After `exec` nothing of this remains (the
//! descriptors are close-on-exec and the thread is gone).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use farmem::paging::{ForkLink, InternalGuard, LinkEnd};
use parking_lot::Mutex;

use crate::fork::{Fault, install_segv_handler};

/// This process's link while it is served (a forked child's). Held across a fork of this
/// process (from [`prepare`] to [`parent`] / [`child`]), so the watch thread never closes the
/// link while a fork sends on it, and the new child finds it consistent.
static LINK: Mutex<Option<Arc<ForkLink>>> = Mutex::new(None);
/// The link end made for a fork of this process, until the fork is done (only the forking
/// thread touches it).
static NEXT: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// In a child of the serving process, from the fork's child handler: takes its userfaultfd
/// from the link and starts watching the parent.
pub fn start(link: ForkLink, range: (usize, usize)) {
    if !link.receive() {
        // The parent ended before it could send it (or gave up on the fork): the range may
        // already be unregistered, but the program has not run since the fork.
        orphaned(&link, range);
        link.close_all();
        return;
    }
    let link = Arc::new(link);
    *LINK.lock() = Some(link.clone());
    let watched = link.clone();
    let spawned = std::thread::Builder::new()
        .name("farmem-fork-watch".into())
        .spawn(move || watch(watched, range));
    if let Err(e) = spawned {
        crate::warn(format_args!(
            "cannot watch the parent of a forked child ({e}): if the parent is killed, the \
             child's far pages it has not touched cannot be read (it waits for them)"
        ));
        LINK.lock().take();
    }
}

/// The watch thread: waits until serving ends.
fn watch(link: Arc<ForkLink>, range: (usize, usize)) {
    let _internal = InternalGuard::new();
    if link.wait() == LinkEnd::Unserved {
        orphaned(&link, range);
    }
    // Handed over, or the unserved pages are fenced off: the range may go.
    link.release();
    let mut slot = LINK.lock();
    if slot.as_ref().is_some_and(|l| Arc::ptr_eq(l, &link)) {
        slot.take();
    }
    drop(slot);
    link.close_all();
}

/// The parent ended without handing the pages over: fences off those the child does not have.
fn orphaned(link: &ForkLink, range: (usize, usize)) {
    install_segv_handler(range, Fault::Unserved);
    if let Err(e) = link.protect_unserved() {
        crate::warn(format_args!(
            "a forked child's parent ended without handing its far pages over, and the pages it \
             does not have cannot be fenced off ({e}); the child is stopped"
        ));
        // SAFETY: raising a signal whose default action ends the process; nothing is shared.
        unsafe {
            libc::signal(libc::SIGBUS, libc::SIG_DFL);
            libc::raise(libc::SIGBUS);
        }
    }
}

/// Before a fork of a forked child: links the coming child to the serving process.
pub fn prepare() {
    let guard = LINK.lock();
    if let Some(l) = guard.as_ref() {
        match l.prepare_fork() {
            Ok(end) => *NEXT.lock() = Some(end),
            Err(e) => crate::warn(format_args!(
                "no link for a fork of a forked child ({e}): the new child cannot read the far \
                 pages it does not have"
            )),
        }
    }
    // Released by `parent` and `child`.
    std::mem::forget(guard);
}

/// After a fork of a forked child, in it.
pub fn parent() {
    drop(NEXT.lock().take());
    // SAFETY: `prepare` locked LINK on this thread and forgot the guard.
    unsafe { LINK.force_unlock() };
}

/// After a fork of a forked child, in the new child: its own link, taken over from the one it
/// inherited (whose userfaultfd and end belong to its parent).
pub fn child(range: (usize, usize)) {
    // SAFETY: `prepare` locked LINK in the parent before the fork; this single thread is its
    // holder's copy.
    unsafe { LINK.force_unlock() };
    let inherited = LINK.lock().take();
    let next = NEXT.lock().take();
    match (inherited, next) {
        (Some(l), Some(end)) => start(l.for_child(end), range),
        (Some(l), None) => {
            // Not linked (mostly: the serving process was already gone when this fork was
            // prepared): nothing would tell this child when it stops being served.
            orphaned(&l, range);
            l.close_all();
        }
        (None, _) => {}
    }
}
