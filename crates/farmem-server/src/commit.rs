//! The committer of a durable server under `--sync always`: the thread that waits for the disk
//! so the I/O threads never do. (Under `--sync none` a commit is a write to the page cache and
//! the I/O threads make it themselves.)
//!
//! An answer that acknowledges a change may leave only once the change's log record is durable
//! ([`Session::commit`], which under `--sync always` waits for an `fdatasync`). An I/O thread
//! that answered requests of a durable session holds those answers back, stops reading that
//! connection and queues a commit here; the committer takes every queued commit at once, and
//! the first `commit` of the batch writes and syncs the records of all of them (one write and
//! one sync for the batch: group commit); the others then find their records durable. Each
//! result goes back to its connection's I/O thread, which lets the answers out (or, when the
//! log failed, drops them and closes the connection).
//!
//! Requests that run on the worker pool commit there, before their answer is delivered.

use std::sync::Arc;
use std::thread::JoinHandle;

use farmem_store::Session;
use mio::Token;
use parking_lot::{Condvar, Mutex};

use crate::evloop::Mailbox;

/// A commit waiting to be made: the session's, for the connection `token` of `mailbox`.
struct Pending {
    session: Arc<Session>,
    mailbox: Arc<Mailbox>,
    token: Token,
}

struct Queue {
    pending: Vec<Pending>,
    stop: bool,
}

/// The commit queue and its thread.
pub(crate) struct Committer {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Committer {
    /// Starts the committer thread.
    pub(crate) fn start() -> std::io::Result<(Arc<Self>, JoinHandle<()>)> {
        let c = Arc::new(Self {
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                stop: false,
            }),
            ready: Condvar::new(),
        });
        let me = c.clone();
        let h = std::thread::Builder::new()
            .name("farmem-commit".into())
            .spawn(move || me.run())?;
        Ok((c, h))
    }

    /// Queues a commit of `session` for connection `token`; its result arrives in `mailbox`.
    pub(crate) fn submit(&self, session: Arc<Session>, mailbox: Arc<Mailbox>, token: Token) {
        let mut q = self.queue.lock();
        q.pending.push(Pending {
            session,
            mailbox,
            token,
        });
        drop(q);
        self.ready.notify_one();
    }

    /// Lets the thread exit once the queue is empty.
    pub(crate) fn stop(&self) {
        self.queue.lock().stop = true;
        self.ready.notify_all();
    }

    fn run(&self) {
        let mut batch = Vec::new();
        let mut woken: Vec<Arc<Mailbox>> = Vec::new();
        loop {
            {
                let mut q = self.queue.lock();
                while q.pending.is_empty() {
                    if q.stop {
                        return;
                    }
                    self.ready.wait(&mut q);
                }
                std::mem::swap(&mut batch, &mut q.pending);
            }
            for p in batch.drain(..) {
                let r = p.session.commit();
                p.mailbox.committed(p.token, r);
                if !woken.iter().any(|m| Arc::ptr_eq(m, &p.mailbox)) {
                    woken.push(p.mailbox);
                }
            }
            for m in woken.drain(..) {
                m.wake();
            }
        }
    }
}
