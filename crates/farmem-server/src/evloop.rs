//! The I/O threads: each owns a share of the connections and serves them from one epoll set
//! (`mio`), so thousands of connections cost a few threads.
//!
//! A readable connection is read into the thread's scratch buffer and every complete request
//! in it is answered at once, on this thread (a depth-1 round trip costs one `epoll_wait`, one
//! `read` and one `write`, no thread hop); only the bytes of an unfinished frame stay with the
//! connection, so an idle connection holds no buffer. Requests that may take long (agent work,
//! shrinks) go to the worker pool; their connection reads nothing more until the answer is
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use farmem_proto::{ErrorCode, HEADER_LEN, Header, Op, decode_frame, encode_error};
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;

use crate::conn::{Close, ConnGuard, Handled, frame_id, handle, hello_timeout};
use crate::server::Shared;
use crate::transport::Transport;
use crate::workers::Pool;

/// The scratch buffer requests are read into (per I/O thread).
const SCRATCH: usize = 64 << 10;
/// A connection's buffers larger than this are given back when emptied (smaller ones are kept
/// for its next large frame).
const SHRINK_ABOVE: usize = 4 << 20;
/// How long connections get to take their last words at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// How long a refused connection gets to take its last words when no write timeout is set.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
const WAKE: Token = Token(usize::MAX);

/// An accepted connection on its way to an I/O thread.
pub(crate) struct NewConn {
    pub(crate) stream: std::net::TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) guard: ConnGuard,
    pub(crate) accepted: Instant,
}

/// What other threads hand an I/O thread: new connections and answers from the worker pool.
pub(crate) struct Mailbox {
    waker: Waker,
    incoming: Mutex<Vec<NewConn>>,
    answers: Mutex<Vec<(Token, Option<Answer>)>>,
}

/// An offloaded request's answer, and whether its connection must end after it.
type Answer = (Vec<u8>, Result<(), Close>);

impl Mailbox {
    /// Gives a new connection to this thread.
    pub(crate) fn hand_over(&self, c: NewConn) {
        self.incoming.lock().push(c);
        self.wake();
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
    answer: Option<Answer>,
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.mailbox
            .answers
            .lock()
            .push((self.token, self.answer.take()));
        self.mailbox.wake();
    }
}

/// Starts I/O thread number `index`.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    pool: Arc<Pool>,
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

/// One connection's state on its I/O thread.
struct Conn {
    io: Transport,
    peer: SocketAddr,
    guard: ConnGuard,
    /// Unanswered input: `rbuf[start..end]` (the head of a frame, or frames held back while
    /// the client does not read or a job runs).
    rbuf: Vec<u8>,
    start: usize,
    end: usize,
    /// Answers not yet written: `wbuf[woff..]`.
    wbuf: Vec<u8>,
    woff: usize,
    greeted: bool,
    hello_deadline: Instant,
    /// Last read, write progress or offloaded answer (idle and write timeouts count from it).
    active: Instant,
    /// The socket may have unread bytes (a readiness event came and was not read dry).
    may_read: bool,
    /// A job of this connection runs on the worker pool.
    busy: bool,
    /// Set when the client of the running job hangs up (the job then stops early).
    job_gone: Option<Arc<AtomicBool>>,
    /// The connection ends once its write buffer is out.
    closing: Option<Close>,
    /// Its last words (refusal, `ShuttingDown`) are in the write buffer.
    said_last_words: bool,
    /// Its live timer entry.
    armed: Option<Instant>,
}

impl Conn {
    fn out_pending(&self) -> bool {
        self.woff < self.wbuf.len() || self.io.wants_write()
    }

    /// Writes what the socket takes now.
    fn flush(&mut self, now: Instant) -> Result<(), Close> {
        loop {
            if self.woff < self.wbuf.len() {
                match self.io.write(&self.wbuf[self.woff..]) {
                    Ok(0) if self.io.wants_write() => break, // TLS buffer full: wait
                    Ok(0) => return Err(Close::Io(io::ErrorKind::WriteZero.into())),
                    Ok(n) => {
                        self.woff += n;
                        self.active = now;
                        // metrics hook: `n` answer bytes out
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
        if self.woff == self.wbuf.len() {
            self.wbuf.clear();
            self.woff = 0;
            if self.wbuf.capacity() > SHRINK_ABOVE {
                self.wbuf = Vec::new();
            }
        }
        Ok(())
    }

    /// The connection's earliest deadline, if any.
    fn deadline(&self, shared: &Shared) -> Option<Instant> {
        let limits = &shared.config.limits;
        let after = |d: Duration| (!d.is_zero()).then(|| self.active + d);
        if self.closing.is_some() {
            return Some(after(limits.write_timeout).unwrap_or(self.active + CLOSE_GRACE));
        }
        if self.busy {
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
struct Ctx<'a> {
    shared: &'a Arc<Shared>,
    pool: &'a Pool,
    mailbox: &'a Arc<Mailbox>,
    token: Token,
    now: Instant,
}

/// Answers the complete frames at the start of `data`; returns how many bytes it used. Stops
/// early when a frame went to the worker pool, when the client does not take its answers, or
/// when the connection must end (the error).
fn answer(cx: &Ctx<'_>, c: &mut Conn, data: &[u8]) -> (usize, Result<(), Close>) {
    let limits = &cx.shared.config.limits;
    let mut used = 0;
    while !c.busy {
        if c.wbuf.len() - c.woff >= limits.max_write_buffer {
            if let Err(e) = c.flush(cx.now) {
                return (used, Err(e));
            }
            if c.wbuf.len() - c.woff >= limits.max_write_buffer {
                break; // the client does not read: read no more from it for now
            }
        }
        let max_frame = c.max_frame(cx.shared);
        let (frame, n) = match decode_frame(&data[used..], max_frame) {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                let id = frame_id(&data[used..]);
                let msg = format!("malformed frame: {e}");
                encode_error(
                    &mut c.wbuf,
                    Op::Hello,
                    id,
                    ErrorCode::Malformed,
                    [0; 3],
                    &msg,
                );
                return (used, Err(Close::Refused(msg)));
            }
        };
        let r = handle(
            cx.shared,
            &mut c.guard.session,
            frame.header,
            frame.body,
            &mut c.wbuf,
        );
        // metrics hook: one request of op `frame.header.op`, `n` bytes in, answered (or failed)
        match r {
            Ok(Handled::Answered) => {}
            Ok(Handled::Offload) => offload(cx, c, &data[used..used + n]),
            Err(close) => return (used + n, Err(close)),
        }
        used += n;
        if !c.greeted && c.guard.session.is_some() {
            c.greeted = true;
            c.active = cx.now;
        }
    }
    (used, Ok(()))
}

/// Runs `frame` on the worker pool; its answer comes back through the mailbox.
fn offload(cx: &Ctx<'_>, c: &mut Conn, frame: &[u8]) {
    c.busy = true;
    let gone = Arc::new(AtomicBool::new(false));
    c.job_gone = Some(gone.clone());
    let frame = frame.to_vec();
    let shared = cx.shared.clone();
    let session = c.guard.session.clone();
    let delivery = Delivery {
        mailbox: cx.mailbox.clone(),
        token: cx.token,
        answer: None,
    };
    cx.pool.submit(Box::new(move || {
        // Moved whole: dropping it (also when the job panics) delivers the answer.
        let mut delivery = delivery;
        let gone = || gone.load(Ordering::Relaxed);
        delivery.answer = Some(crate::conn::run_offloaded(
            &shared,
            session.as_deref(),
            &frame,
            &gone,
        ));
    }));
}

/// Serves `c` as far as it can go without waiting: writes, answers buffered input, reads.
fn step(cx: &Ctx<'_>, c: &mut Conn, scratch: &mut [u8]) -> Result<(), Close> {
    loop {
        if c.out_pending() {
            c.flush(cx.now)?;
            if c.out_pending() {
                return Ok(()); // wait until the client reads
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
                // metrics hook: `n` request bytes in
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

struct IoThread {
    shared: Arc<Shared>,
    pool: Arc<Pool>,
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
        for (t, a) in answers {
            let Some(i) = self.lookup(t) else { continue };
            let Some(c) = self.slots[i].conn.as_mut() else {
                continue;
            };
            c.busy = false;
            c.job_gone = None;
            c.active = now;
            match a {
                Some((out, r)) => {
                    if c.closing.is_none() {
                        c.wbuf.extend_from_slice(&out);
                    }
                    if let Err(close) = r {
                        self.close(i, close, now);
                        continue;
                    }
                }
                None => {
                    self.close(i, Close::Panicked, now);
                    continue;
                }
            }
            self.drive(i, now);
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
        // metrics hook: connection opened
        self.slots[i].conn = Some(Conn {
            io,
            peer,
            guard,
            rbuf: Vec::new(),
            start: 0,
            end: 0,
            wbuf: Vec::new(),
            woff: 0,
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
        let r = c.flush(now);
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
        // metrics hook: connection closed (`why`)
        drop(c); // its guard releases the session and the slot
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
