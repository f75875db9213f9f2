//! Serving one connection on its I/O thread: reading and answering its requests, holding its
//! answers back until they may go out, writing them, and its deadlines.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use farmem_proto::{HEADER_LEN, Header};
use mio::Token;

use super::{Delivery, Mailbox};
use crate::commit::Committer;
use crate::conn::{Close, ConnGuard};
use crate::server::Shared;
use crate::transport::Transport;
use crate::wire::{self, Next};
use crate::workers::Pool;

/// A connection's buffers larger than this are given back when emptied (smaller ones are kept
/// for its next large frame).
const SHRINK_ABOVE: usize = 4 << 20;
/// How long a refused connection gets to take its last words when no write timeout is set.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// One connection's state on its I/O thread.
pub(super) struct Conn {
    pub(super) io: Transport,
    pub(super) peer: SocketAddr,
    pub(super) guard: ConnGuard,
    /// Unanswered input: `rbuf[start..end]` (the head of a frame, or frames held back while
    /// the client does not read or a job runs).
    pub(super) rbuf: Vec<u8>,
    pub(super) start: usize,
    pub(super) end: usize,
    /// Answers not yet written: `wbuf[woff..]`, of which `wbuf[..wlim]` may go out now (the
    /// rest waits for its commit on a durable server).
    pub(super) wbuf: Vec<u8>,
    pub(super) woff: usize,
    pub(super) wlim: usize,
    /// A commit of the session is under way; `wbuf[..commit_mark]` may go out once it is done.
    pub(super) committing: bool,
    pub(super) commit_mark: usize,
    pub(super) greeted: bool,
    pub(super) hello_deadline: Instant,
    /// Last read, write progress or offloaded answer (idle and write timeouts count from it).
    pub(super) active: Instant,
    /// The socket may have unread bytes (a readiness event came and was not read dry).
    pub(super) may_read: bool,
    /// A job of this connection runs on the worker pool.
    pub(super) busy: bool,
    /// Set when the client of the running job hangs up (the job then stops early).
    pub(super) job_gone: Option<Arc<AtomicBool>>,
    /// The connection ends once its write buffer is out.
    pub(super) closing: Option<Close>,
    /// Its last words (refusal, `ShuttingDown`) are in the write buffer.
    pub(super) said_last_words: bool,
    /// Its live timer entry.
    pub(super) armed: Option<Instant>,
}

impl Conn {
    pub(super) fn out_pending(&self) -> bool {
        self.woff < self.wbuf.len() || self.io.wants_write()
    }

    /// Writes what the socket takes now (of the answers that may go out).
    pub(super) fn flush(&mut self, now: Instant) -> Result<(), Close> {
        loop {
            if self.woff < self.wlim {
                match self.io.write(&self.wbuf[self.woff..self.wlim]) {
                    Ok(0) if self.io.wants_write() => break, // TLS buffer full: wait
                    Ok(0) => return Err(Close::Io(io::ErrorKind::WriteZero.into())),
                    Ok(n) => {
                        self.woff += n;
                        self.active = now;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Close::Io(e)),
                }
            } else {
                match self.io.flush() {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Close::Io(e)),
                }
            }
        }
        // Kept while a commit is under way: its mark is a position in this buffer.
        if self.woff == self.wbuf.len() && !self.committing {
            self.wbuf.clear();
            self.woff = 0;
            self.wlim = 0;
            if self.wbuf.capacity() > SHRINK_ABOVE {
                self.wbuf = Vec::new();
            }
        }
        Ok(())
    }

    /// The connection's earliest deadline, if any.
    pub(super) fn deadline(&self, shared: &Shared) -> Option<Instant> {
        let limits = &shared.config.limits;
        let after = |d: Duration| (!d.is_zero()).then(|| self.active + d);
        if self.closing.is_some() {
            return Some(after(limits.write_timeout).unwrap_or(self.active + CLOSE_GRACE));
        }
        if self.busy || self.committing {
            return None; // long work: the old timers start again with its answer
        }
        let timeout = if self.out_pending() {
            after(limits.write_timeout)
        } else if self.greeted {
            after(limits.idle_timeout)
        } else {
            None
        };
        if self.greeted {
            timeout
        } else {
            Some(timeout.map_or(self.hello_deadline, |t| t.min(self.hello_deadline)))
        }
    }

    /// The length of the frame whose bytes start the input, once its header is there.
    fn head_frame_len(&self, max_frame: u32) -> Option<usize> {
        let b = &self.rbuf[self.start..self.end];
        if b.len() < HEADER_LEN {
            return None;
        }
        Header::parse(b, max_frame)
            .ok()
            .map(|h| HEADER_LEN + h.body_len as usize)
    }

    /// The largest frame the connection may send now (smaller before its hello).
    fn max_frame(&self, shared: &Shared) -> u32 {
        let limits = &shared.config.limits;
        if self.guard.session.is_some() {
            limits.max_frame
        } else {
            limits.max_hello_frame
        }
    }
}

/// What the request-answering code needs besides the connection.
pub(super) struct Ctx<'a> {
    pub(super) shared: &'a Arc<Shared>,
    pub(super) pool: &'a Pool,
    pub(super) committer: Option<&'a Committer>,
    pub(super) mailbox: &'a Arc<Mailbox>,
    pub(super) token: Token,
    pub(super) now: Instant,
}

/// Lets the answers in `c`'s write buffer out: at once without a data directory (or before
/// the hello); on a durable server once their changes are durable. Under `--sync always` that
/// waits for an `fdatasync`, so the committer makes the commit (grouping those of all
/// connections) and the connection writes and reads nothing more until it is done; under
/// `--sync none` a commit is a write to the page cache, made here.
///
/// # Errors
/// [`Close::NotDurable`] when the log failed: the answers must not go out.
pub(super) fn seal(cx: &Ctx<'_>, c: &mut Conn) -> Result<(), Close> {
    if c.wlim == c.wbuf.len() {
        return Ok(());
    }
    match (cx.committer, &c.guard.session) {
        (Some(committer), Some(s)) => {
            if !c.committing {
                c.committing = true;
                c.commit_mark = c.wbuf.len();
                committer.submit(s.clone(), cx.mailbox.clone(), cx.token);
            }
        }
        (None, Some(s)) if cx.shared.is_durable() => {
            s.commit().map_err(Close::NotDurable)?;
            c.wlim = c.wbuf.len();
        }
        _ => c.wlim = c.wbuf.len(),
    }
    Ok(())
}

/// Answers the complete frames at the start of `data`; returns how many bytes it used. Stops
/// early when a frame went to the worker pool, when the client does not take its answers, or
/// when the connection must end (the error).
fn answer(cx: &Ctx<'_>, c: &mut Conn, data: &[u8]) -> (usize, Result<(), Close>) {
    let limits = &cx.shared.config.limits;
    let mut used = 0;
    while !c.busy {
        if c.wbuf.len() - c.woff >= limits.max_write_buffer {
            if let Err(e) = seal(cx, c).and_then(|()| c.flush(cx.now)) {
                return (used, Err(e));
            }
            if c.wbuf.len() - c.woff >= limits.max_write_buffer {
                break; // the client does not read: read no more from it for now
            }
        }
        let n = match wire::next(cx.shared, &mut c.guard.session, &data[used..], &mut c.wbuf) {
            Next::More => break,
            Next::Answered(n) => n,
            Next::Offload { len, copy } => {
                offload(cx, c, &data[used..used + len], copy);
                len
            }
            Next::End { used: n, close } => return (used + n, Err(close)),
        };
        used += n;
        if !c.greeted && c.guard.session.is_some() {
            c.greeted = true;
            c.active = cx.now;
        }
    }
    (used, Ok(()))
}

/// Runs `frame` on the worker pool (the copy pool for a server-to-server copy); its answer
/// comes back through the mailbox.
fn offload(cx: &Ctx<'_>, c: &mut Conn, frame: &[u8], copy: bool) {
    c.busy = true;
    let gone = Arc::new(AtomicBool::new(false));
    c.job_gone = Some(gone.clone());
    let frame = frame.to_vec();
    let shared = cx.shared.clone();
    let session = c.guard.session.clone();
    // Before its hello a connection has no session: its job is the server's own.
    let owner = session.as_ref().map_or(0, |s| s.key);
    // On a durable server the job commits the session: so are the answers before it.
    let delivery = Delivery {
        mailbox: cx.mailbox.clone(),
        token: cx.token,
        answer: None,
    };
    let job: crate::workers::Job = Box::new(move || {
        // Moved whole: dropping it (also when the job panics) delivers the answer.
        let mut delivery = delivery;
        let gone = || gone.load(Ordering::Relaxed);
        delivery.answer = Some(crate::conn::run_offloaded(&shared, session, &frame, &gone));
    });
    if copy {
        cx.pool.submit_copy(owner, job);
    } else {
        cx.pool.submit(owner, job);
    }
}

/// Serves `c` as far as it can go without waiting: writes, answers buffered input, reads.
pub(super) fn step(cx: &Ctx<'_>, c: &mut Conn, scratch: &mut [u8]) -> Result<(), Close> {
    loop {
        seal(cx, c)?;
        if c.out_pending() {
            c.flush(cx.now)?;
            if c.out_pending() {
                return Ok(()); // wait until the client reads (or the commit is done)
            }
        }
        if let Some(close) = c.closing.take() {
            return Err(close);
        }
        if c.busy {
            return Ok(());
        }
        // Frames left from an earlier read.
        if c.start < c.end {
            let mut rbuf = std::mem::take(&mut c.rbuf);
            let (used, r) = answer(cx, c, &rbuf[c.start..c.end]);
            c.start += used;
            if c.start == c.end {
                c.start = 0;
                c.end = 0;
                if rbuf.len() > SHRINK_ABOVE {
                    rbuf = Vec::new();
                }
            }
            c.rbuf = rbuf;
            r?;
            if used > 0 {
                continue;
            }
        }
        if !c.may_read {
            return Ok(());
        }
        read(cx, c, scratch)?;
    }
}

/// One read: into the scratch buffer (behind what is left of an unfinished frame) and answered
/// from there, or, for a frame larger than the scratch buffer, into the connection's buffer.
fn read(cx: &Ctx<'_>, c: &mut Conn, scratch: &mut [u8]) -> Result<(), Close> {
    let need = c.head_frame_len(c.max_frame(cx.shared)).unwrap_or(0);
    let have = c.end - c.start;
    let got = if need > scratch.len() {
        // A large frame: read it where it will stay.
        if c.start > 0 {
            c.rbuf.copy_within(c.start..c.end, 0);
            c.end = have;
            c.start = 0;
        }
        if c.rbuf.len() < need {
            c.rbuf.resize(need, 0);
        }
        let n = read_some(c, None)?;
        c.end += n;
        n
    } else {
        scratch[..have].copy_from_slice(&c.rbuf[c.start..c.end]);
        c.start = 0;
        c.end = 0;
        let n = match read_some(c, Some(&mut scratch[have..])) {
            Ok(n) => n,
            Err(e) => {
                keep(c, &scratch[..have]);
                return Err(e);
            }
        };
        let (used, r) = answer(cx, c, &scratch[..have + n]);
        keep(c, &scratch[used..have + n]);
        r?;
        n
    };
    if got > 0 {
        c.active = cx.now;
    }
    Ok(())
}

/// Keeps `rest` (unanswered input) with the connection.
fn keep(c: &mut Conn, rest: &[u8]) {
    if rest.is_empty() {
        if c.rbuf.len() > SHRINK_ABOVE {
            c.rbuf = Vec::new();
        }
        return;
    }
    if c.rbuf.len() < rest.len() {
        c.rbuf.resize(rest.len(), 0);
    }
    c.rbuf[..rest.len()].copy_from_slice(rest);
    c.start = 0;
    c.end = rest.len();
}

/// Reads into `buf` (or the free end of the connection's own buffer); 0 bytes: nothing now.
fn read_some(c: &mut Conn, buf: Option<&mut [u8]>) -> Result<usize, Close> {
    let buf = match buf {
        Some(b) => b,
        None => &mut c.rbuf[c.end..],
    };
    let asked = buf.len();
    loop {
        match c.io.read(buf) {
            Ok(0) => return Err(Close::Eof),
            Ok(n) => {
                if c.io.drained(n, asked) {
                    c.may_read = false;
                }
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.may_read = false;
                return Ok(0);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Close::Io(e)),
        }
    }
}
