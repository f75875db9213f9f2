//! The I/O threads: each owns a share of the connections and serves them from one epoll set
//! (`mio`), so thousands of connections cost a few threads.
//!
//! A readable connection is read into the thread's scratch buffer and every complete request
//! in it is answered at once, on this thread (a depth-1 round trip costs one `epoll_wait`, one
//! `read` and one `write`, no thread hop); only the bytes of an unfinished frame stay with the
//! connection, so an idle connection holds no buffer. Requests that may take long (agent work
//! but short hash-table lookups whose tables are free, shrinks) go to the worker pool; their connection reads nothing more until the answer is
//! back, which keeps answers in request order. A connection whose client does not read its
//! answers stops being read (its write buffer stays within `max_write_buffer` plus one answer).
//!
//! Timers (hello deadline, idle timeout, write timeout) sit in one heap per thread: each
//! connection has one live entry for its earliest deadline; entries a connection outgrew are
//! skipped when they come up.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use farmem_proto::{ErrorCode, Op, encode_error};
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;

use farmem_store::LogError;

use crate::commit::Committer;
use crate::conn::{Close, ConnGuard, Offloaded, hello_timeout};
use crate::server::Shared;
use crate::transport::Transport;
use crate::workers::Pool;
use serve::{Conn, Ctx, seal, step};

mod serve;

/// The scratch buffer requests are read into (per I/O thread).
const SCRATCH: usize = 64 << 10;
/// How long connections get to take their last words at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
const WAKE: Token = Token(usize::MAX);

/// An accepted connection on its way to an I/O thread.
pub(crate) struct NewConn {
    pub(crate) stream: std::net::TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) guard: ConnGuard,
    pub(crate) accepted: Instant,
}

/// What other threads hand an I/O thread: new connections, answers from the worker pool and
/// commits from the committer.
pub(crate) struct Mailbox {
    waker: Waker,
    incoming: Mutex<Vec<NewConn>>,
    answers: Mutex<Vec<(Token, Mail)>>,
}

/// A result for a connection.
enum Mail {
    /// An offloaded request's answer; `None` if its job died.
    Offloaded(Option<Offloaded>),
    /// The commit of the connection's held-back answers.
    Committed(Result<(), LogError>),
}

impl Mailbox {
    /// Gives a new connection to this thread.
    pub(crate) fn hand_over(&self, c: NewConn) {
        self.incoming.lock().push(c);
        self.wake();
    }

    /// Hands connection `token` the result of its commit (the caller then wakes the thread).
    pub(crate) fn committed(&self, token: Token, r: Result<(), LogError>) {
        self.answers.lock().push((token, Mail::Committed(r)));
    }

    /// Wakes the thread (to see new connections, answers, or shutdown).
    pub(crate) fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            tracing::error!(error = %e, "cannot wake an I/O thread");
        }
    }
}

/// Delivers an offloaded answer to its connection when dropped: `None` if the job died.
struct Delivery {
    mailbox: Arc<Mailbox>,
    token: Token,
    answer: Option<Offloaded>,
}

impl Drop for Delivery {
    fn drop(&mut self) {
        let mail = Mail::Offloaded(self.answer.take());
        self.mailbox.answers.lock().push((self.token, mail));
        self.mailbox.wake();
    }
}

/// Starts I/O thread number `index`.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    committer: Option<Arc<Committer>>,
    index: usize,
) -> io::Result<(Arc<Mailbox>, JoinHandle<()>)> {
    let poll = Poll::new()?;
    let mailbox = Arc::new(Mailbox {
        waker: Waker::new(poll.registry(), WAKE)?,
        incoming: Mutex::new(Vec::new()),
        answers: Mutex::new(Vec::new()),
    });
    let mut io = IoThread {
        shared,
        pool,
        committer,
        poll,
        mailbox: mailbox.clone(),
        slots: Vec::new(),
        free: Vec::new(),
        timers: BinaryHeap::new(),
        scratch: vec![0; SCRATCH],
        live: 0,
    };
    let handle = std::thread::Builder::new()
        .name(format!("farmem-io-{index}"))
        .spawn(move || io.run())?;
    Ok((mailbox, handle))
}

struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

struct IoThread {
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    /// On a durable server, where held-back answers are committed.
    committer: Option<Arc<Committer>>,
    poll: Poll,
    mailbox: Arc<Mailbox>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    scratch: Vec<u8>,
    /// Connections open on this thread.
    live: usize,
}

fn token_of(index: usize, generation: u32) -> Token {
    Token((generation as usize) << 32 | index)
}

impl IoThread {
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let mut stop_by: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let mut timeout = self
                .timers
                .peek()
                .map(|t| t.0.0.saturating_duration_since(now));
            if let Some(s) = stop_by {
                let left = s.saturating_duration_since(now);
                timeout = Some(timeout.map_or(left, |t| t.min(left)));
            }
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!(error = %e, "epoll failed; this I/O thread stops");
                return;
            }
            let now = Instant::now();
            for ev in &events {
                if ev.token() == WAKE {
                    continue;
                }
                let Some(i) = self.lookup(ev.token()) else {
                    continue;
                };
                if (ev.is_readable() || ev.is_read_closed() || ev.is_error())
                    && let Some(c) = self.slots[i].conn.as_mut()
                {
                    c.may_read = true;
                    if (ev.is_read_closed() || ev.is_error())
                        && let Some(g) = &c.job_gone
                    {
                        g.store(true, Ordering::Relaxed); // its job need not finish
                    }
                }
                self.drive(i, now);
            }
            self.take_mail(now);
            self.expire(now);
            if stop_by.is_none() && self.shared.is_shutting_down() {
                stop_by = Some(now + SHUTDOWN_GRACE);
                for i in 0..self.slots.len() {
                    if self.slots[i].conn.is_some() {
                        self.close(i, Close::Shutdown, now);
                    }
                }
            }
            if let Some(s) = stop_by
                && (self.live == 0 || now >= s)
            {
                break;
            }
        }
        for i in 0..self.slots.len() {
            if let Some(c) = self.slots[i].conn.take() {
                Close::Shutdown.log(c.peer, &self.shared.config.limits);
            }
        }
    }

    fn lookup(&self, t: Token) -> Option<usize> {
        let i = t.0 & 0xFFFF_FFFF;
        let s = self.slots.get(i)?;
        (s.conn.is_some() && token_of(i, s.generation) == t).then_some(i)
    }

    /// Registers new connections; hands offloaded answers to theirs.
    fn take_mail(&mut self, now: Instant) {
        let incoming = std::mem::take(&mut *self.mailbox.incoming.lock());
        for nc in incoming {
            self.admit(nc, now);
        }
        let answers = std::mem::take(&mut *self.mailbox.answers.lock());
        for (t, mail) in answers {
            let Some(c) = self.lookup(t).and_then(|i| self.slots[i].conn.as_mut()) else {
                if let Mail::Offloaded(Some(Offloaded {
                    opened: Some(s), ..
                })) = mail
                {
                    // Its connection is gone: the session it opened loses that connection.
                    let shared = self.shared.clone();
                    self.pool.submit(s.key, Box::new(move || shared.leave(s)));
                }
                continue;
            };
            let i = t.0 & 0xFFFF_FFFF;
            let end = match mail {
                Mail::Committed(r) => {
                    c.committing = false;
                    c.commit_mark = c.commit_mark.min(c.wbuf.len());
                    c.wlim = c.wlim.max(c.commit_mark);
                    r.map_err(Close::NotDurable)
                }
                Mail::Offloaded(a) => {
                    c.busy = false;
                    c.job_gone = None;
                    c.active = now;
                    match a {
                        Some(a) => {
                            if c.guard.session.is_none() && a.opened.is_some() {
                                c.guard.session = a.opened;
                                c.greeted = true; // an offloaded hello
                            }
                            if c.closing.is_none() {
                                c.wbuf.extend_from_slice(&a.out);
                            }
                            if !matches!(a.end, Err(Close::NotDurable(_))) {
                                c.wlim = c.wbuf.len(); // the job committed the session
                            }
                            a.end
                        }
                        None => Err(Close::Panicked),
                    }
                }
            };
            match end {
                Ok(()) => self.drive(i, now),
                Err(close) => self.close(i, close, now),
            }
        }
    }

    fn admit(&mut self, nc: NewConn, now: Instant) {
        let NewConn {
            stream,
            peer,
            guard,
            accepted,
        } = nc;
        let i = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot {
                generation: 0,
                conn: None,
            });
            self.slots.len() - 1
        });
        let token = token_of(i, self.slots[i].generation);
        let tls = self.shared.config.tls.as_ref().map(|t| &t.config);
        let io = Transport::new(mio::net::TcpStream::from_std(stream), tls).and_then(|mut io| {
            self.poll.registry().register(
                io.socket(),
                token,
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(io)
        });
        let io = match io {
            Ok(io) => io,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot serve a new connection");
                self.free.push(i);
                return; // the guard releases its slot
            }
        };
        tracing::debug!(%peer, "client connected");
        self.slots[i].conn = Some(Conn {
            io,
            peer,
            guard,
            rbuf: Vec::new(),
            start: 0,
            end: 0,
            wbuf: Vec::new(),
            woff: 0,
            wlim: 0,
            committing: false,
            commit_mark: 0,
            greeted: false,
            hello_deadline: accepted + self.shared.config.limits.hello_timeout,
            active: now,
            may_read: false,
            busy: false,
            job_gone: None,
            closing: None,
            said_last_words: false,
            armed: None,
        });
        self.live += 1;
        if self.shared.is_shutting_down() {
            self.close(i, Close::Shutdown, now);
        } else {
            self.rearm(i);
        }
    }

    /// Serves connection `i` as far as it goes; a panic ends this connection only.
    fn drive(&mut self, i: usize, now: Instant) {
        let token = token_of(i, self.slots[i].generation);
        let Some(c) = self.slots[i].conn.as_mut() else {
            return;
        };
        let cx = Ctx {
            shared: &self.shared,
            pool: &self.pool,
            committer: self.committer.as_deref(),
            mailbox: &self.mailbox,
            token,
            now,
        };
        let scratch = &mut self.scratch;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(&cx, c, scratch)));
        match r {
            Ok(Ok(())) => self.rearm(i),
            Ok(Err(close)) => self.close(i, close, now),
            Err(_) => self.remove(i, &Close::Panicked),
        }
    }

    /// Ends connection `i`: at once, or after its last words are written.
    fn close(&mut self, i: usize, close: Close, now: Instant) {
        let token = token_of(i, self.slots[i].generation);
        let Some(c) = self.slots[i].conn.as_mut() else {
            return;
        };
        if !close.has_last_words() || c.said_last_words {
            self.remove(i, &close);
            return;
        }
        c.said_last_words = true;
        if let Close::Shutdown = close {
            let msg = "the server is shutting down";
            encode_error(
                &mut c.wbuf,
                Op::Hello,
                0,
                ErrorCode::ShuttingDown,
                [0; 3],
                msg,
            );
        }
        c.active = now;
        if let Some(g) = c.job_gone.take() {
            g.store(true, Ordering::Relaxed); // its answer would be dropped: stop the job
        }
        c.busy = false; // an offloaded answer that comes later is dropped
        c.closing = Some(close);
        let cx = Ctx {
            shared: &self.shared,
            pool: &self.pool,
            committer: self.committer.as_deref(),
            mailbox: &self.mailbox,
            token,
            now,
        };
        let r = seal(&cx, c).and_then(|()| c.flush(now));
        if let Err(e) = r {
            self.remove(i, &e);
        } else if !c.out_pending() {
            let close = c.closing.take().unwrap_or(Close::Eof);
            self.remove(i, &close);
        } else {
            self.rearm(i);
        }
    }

    fn remove(&mut self, i: usize, why: &Close) {
        let Some(mut c) = self.slots[i].conn.take() else {
            return;
        };
        why.log(c.peer, &self.shared.config.limits);
        if let Some(g) = &c.job_gone {
            g.store(true, Ordering::Relaxed);
        }
        // A clean TLS end when the socket takes it now (best effort).
        c.io.close_notify();
        let _ = c.io.flush();
        let _ = self.poll.registry().deregister(c.io.socket());
        let _ = c.io.socket().shutdown(std::net::Shutdown::Both);
        let Conn { guard, .. } = c;
        let shared = &self.shared;
        if guard.session.is_some() && shared.is_durable() && shared.config.session_lease.is_zero() {
            // Its session ends with it, and that end is synced to the log: not here.
            let owner = guard.session.as_ref().map_or(0, |s| s.key);
            self.pool.submit(owner, Box::new(move || drop(guard)));
        } else {
            drop(guard); // releases the session and the slot
        }
        self.slots[i].generation = self.slots[i].generation.wrapping_add(1);
        self.free.push(i);
        self.live -= 1;
    }

    /// Makes sure connection `i` has a timer entry no later than its deadline.
    fn rearm(&mut self, i: usize) {
        let Some(c) = self.slots[i].conn.as_mut() else {
            return;
        };
        let Some(d) = c.deadline(&self.shared) else {
            return;
        };
        if c.armed.is_none_or(|a| d < a) {
            c.armed = Some(d);
            self.timers.push(Reverse((d, i)));
        }
    }

    /// Handles the deadlines that passed.
    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((t, i))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(c) = self.slots[i].conn.as_mut() else {
                continue;
            };
            if c.armed != Some(t) {
                continue; // a newer entry is live
            }
            c.armed = None;
            match c.deadline(&self.shared) {
                Some(d) if d <= now => {}
                _ => {
                    self.rearm(i);
                    continue;
                }
            }
            let limits = &self.shared.config.limits;
            let why = if c.closing.is_some() {
                Close::NotReading
            } else if !c.greeted && now >= c.hello_deadline {
                c.rbuf = Vec::new();
                c.start = 0;
                c.end = 0;
                hello_timeout(&mut c.wbuf, limits)
            } else if c.out_pending() {
                Close::NotReading
            } else {
                Close::Idle
            };
            if why.has_last_words() {
                self.close(i, why, now);
            } else {
                self.remove(i, &why);
            }
        }
    }
}
