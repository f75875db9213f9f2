//! One pipelined connection to a memory server.
//!
//! Many threads may have requests in flight on one connection; answers come back in any order
//! and are matched by request id. There is no reader thread: a thread waiting for an answer
//! reads the socket itself when nobody else is ("leader reads and dispatches"), hands answers for
//! other requests to their waiting threads, and passes the leadership on when its own answer has
//! arrived. A lone thread therefore costs one `write` and one `read` per round trip.
//!
//! A request's frame is copied into its slot when it is written, and stays there until it is
//! answered. When the connection breaks, the
//! thread that notices reconnects (with back-off, within the link's deadline), resumes the
//! session and resends every unanswered frame in submission order; the server answers a resent
//! write from its de-duplication window, so callers see only latency. When the server cannot be
//! reached again, it is declared down and every request fails with `ServerDown`.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use farmem_proto::{
    HEADER_LEN, Header, HelloInfo, MAX_FRAME_BODY, Op, begin_frame, decode_frame, finish_frame,
};
use parking_lot::Mutex;

use super::link::{HandshakeError, Link};
pub(crate) use super::reply::Reply;
use super::reply::decode_reply;
use super::stream::Stream;

use crate::backend::BackendError;

const READ_BUFFER: usize = 256 << 10;
const SHRINK_ABOVE: usize = 4 << 20;
/// Buffered request bytes that force a write even without an explicit flush.
const FLUSH_AT: usize = 64 << 10;

enum SlotState {
    Free,
    Pending(Option<Thread>),
    Ready(Result<Reply, BackendError>),
    Abandoned,
}

struct Slot {
    epoch: u32,
    state: SlotState,
    /// Session-wide request number: resends go out in this order.
    order: u64,
    /// The request frame, kept until answered for a resend (empty until written).
    frame: Vec<u8>,
}

struct State {
    slots: Vec<Slot>,
    free: Vec<u32>,
    leader: bool,
    followers: Vec<u32>,
    /// Set when the server is down: nothing more will be answered.
    dead: Option<String>,
}

struct Reader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The stream read, and its generation (the buffer belongs to it).
    stream: Arc<Stream>,
    generation: u64,
}

struct Writer {
    buf: Vec<u8>,
    queued: u64,
    stream: Arc<Stream>,
}

/// A request written (or queued) on a connection whose answer has not been collected yet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending {
    slot: u32,
    epoch: u32,
    seq: u64,
    /// When it was queued, for one request in `LATENCY_SAMPLE` (see `Counters`).
    at: Option<Instant>,
}

/// A connection to one memory server (re-established under the hood when it breaks).
pub(crate) struct Connection {
    link: Arc<Link>,
    /// The current stream and its generation (bumped by every reconnect).
    current: Mutex<(Arc<Stream>, u64)>,
    generation: AtomicU64,
    /// Held while reconnecting.
    recovering: Mutex<()>,
    state: Mutex<State>,
    reader: Mutex<Reader>,
    writer: Mutex<Writer>,
    flushed: AtomicU64,
    /// Largest request body the server accepts (from its hello).
    pub(crate) max_frame: u32,
}

fn req_id(slot: u32, epoch: u32) -> u64 {
    (u64::from(epoch) << 32) | u64::from(slot)
}

/// Slot frames above this are not kept for reuse once answered.
const KEEP_FRAME: usize = 1 << 20;

enum Led {
    /// Our answer arrived, or the server is down (the slot says which).
    Settled,
    /// Our deadline passed first.
    TimedOut,
    /// A patient read's server stayed silent past its patience.
    Silent(Duration),
    /// The stream of this generation broke: reconnect.
    Broken(u64),
}

/// The patience of a read (see [`Connection::wait_read`]).
#[derive(Clone, Copy, Debug)]
struct Patience {
    since: Instant,
    limit: Duration,
}

impl Patience {
    fn new(since: Instant, limit: Duration) -> Self {
        Self { since, limit }
    }

    /// How long the server has been silent, once the read has waited its patience and the
    /// server has sent nothing for as long.
    fn exhausted(&self, link: &Link) -> Option<Duration> {
        if self.since.elapsed() < self.limit {
            return None;
        }
        let quiet = link.quiet_for();
        (quiet >= self.limit).then_some(quiet)
    }

    /// When a parked waiter should look again.
    fn next_look(&self, now: Instant) -> Instant {
        let first = self.since + self.limit;
        if now < first {
            first
        } else {
            now + (self.limit / 4).max(Duration::from_micros(500))
        }
    }
}

/// The read timeout of a data connection whose reads have `patience`: its leader looks at the
/// clock this often while waiting.
pub(crate) fn read_quantum(patience: Duration) -> Duration {
    (patience / 4).max(Duration::from_millis(1))
}

impl Connection {
    /// Connects to the link's server and says hello (creating the link's session, or joining
    /// it when it exists).
    pub(crate) fn open(link: &Arc<Link>) -> Result<Arc<Connection>, BackendError> {
        let (stream, hello) = link
            .handshake(link.config.timeout)
            .map_err(HandshakeError::into_inner)?;
        Ok(Self::with_stream(link, stream, &hello))
    }

    fn with_stream(link: &Arc<Link>, stream: Stream, hello: &HelloInfo) -> Arc<Connection> {
        let stream = Arc::new(stream);
        let conn = Arc::new(Connection {
            link: link.clone(),
            current: Mutex::new((stream.clone(), 0)),
            generation: AtomicU64::new(0),
            recovering: Mutex::new(()),
            state: Mutex::new(State {
                slots: Vec::new(),
                free: Vec::new(),
                leader: false,
                followers: Vec::new(),
                dead: None,
            }),
            reader: Mutex::new(Reader {
                buf: vec![0; READ_BUFFER],
                start: 0,
                end: 0,
                stream: stream.clone(),
                generation: 0,
            }),
            writer: Mutex::new(Writer {
                buf: Vec::with_capacity(FLUSH_AT),
                queued: 0,
                stream,
            }),
            flushed: AtomicU64::new(0),
            max_frame: hello.max_frame.min(MAX_FRAME_BODY),
        });
        link.register(&conn);
        conn
    }

    /// Server address.
    pub(crate) fn addr(&self) -> &str {
        &self.link.addr
    }

    /// Sets the read timeout of the current stream (the heartbeat connection reads with a
    /// short one so it notices its deadline).
    pub(crate) fn set_read_timeout(&self, t: Duration) {
        let _ = self.current.lock().0.set_read_timeout(Some(t));
    }

    /// Sends a ping and waits for its answer until `deadline`.
    ///
    /// # Errors
    /// [`BackendError::Timeout`] when the server is silent, [`BackendError::ServerDown`].
    pub(crate) fn ping(&self, deadline: Instant) -> Result<(), BackendError> {
        let p = self.submit(Op::Ping, true, |_| {})?;
        self.wait(p, deadline).map(drop)
    }

    /// Cuts the current stream (tests: a connection reset).
    pub(crate) fn cut(&self) {
        let _ = self.current.lock().0.shutdown(std::net::Shutdown::Both);
    }

    /// Queues a request whose body `body` appends; writes it now if `flush`.
    ///
    /// # Errors
    /// [`BackendError::ServerDown`] when the server is down.
    pub(crate) fn submit(
        &self,
        op: Op,
        flush: bool,
        body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Pending, BackendError> {
        if self.link.is_down() {
            return Err(self.link.down_error());
        }
        let (slot, epoch) = {
            let mut st = self.state.lock();
            if st.dead.is_some() {
                return Err(self.link.down_error());
            }
            let slot = match st.free.pop() {
                Some(s) => s,
                None => {
                    st.slots.push(Slot {
                        epoch: 0,
                        state: SlotState::Free,
                        order: 0,
                        frame: Vec::new(),
                    });
                    (st.slots.len() - 1) as u32
                }
            };
            let order = self.link.next_id();
            let s = &mut st.slots[slot as usize];
            // Request id 0 is reserved (the server refuses it): an epoch that wraps to 0 skips it.
            s.epoch = (order as u32).max(1);
            s.order = order;
            s.frame.clear();
            s.state = SlotState::Pending(None);
            (slot, s.epoch)
        };
        let mut w = self.writer.lock();
        let start = begin_frame(&mut w.buf, op as u16, 0, req_id(slot, epoch));
        body(&mut w.buf);
        finish_frame(&mut w.buf, start);
        self.link.counters.sent(w.buf.len() - start);
        w.queued += 1;
        let seq = w.queued;
        if flush || w.buf.len() >= FLUSH_AT {
            self.flush_locked(&mut w);
        }
        let timed = seq.is_multiple_of(super::counters::LATENCY_SAMPLE);
        Ok(Pending {
            slot,
            epoch,
            seq,
            at: timed.then(Instant::now),
        })
    }

    fn flush_locked(&self, w: &mut Writer) {
        if w.buf.is_empty() {
            return;
        }
        self.keep_frames(&w.buf);
        let r = w.stream.write_all(&w.buf);
        w.buf.clear();
        if w.buf.capacity() > SHRINK_ABOVE {
            w.buf.shrink_to(FLUSH_AT);
        }
        self.flushed.store(w.queued, Ordering::Release);
        if let Err(e) = r {
            // The frames are kept in their slots: the next reader reconnects and resends them.
            tracing::debug!(addr = %self.addr(), error = %e, "write failed");
            let _ = w.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Copies the frames about to be written into their slots, for a resend after a reconnect
    /// (one lock per write, not per request).
    fn keep_frames(&self, buf: &[u8]) {
        let mut st = self.state.lock();
        let mut at = 0;
        while at + HEADER_LEN <= buf.len() {
            let len = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
            let end = (at + HEADER_LEN + len as usize).min(buf.len());
            let mut id = [0u8; 8];
            id.copy_from_slice(&buf[at + 12..at + 20]);
            let id = u64::from_le_bytes(id);
            if let Some(s) = st.slots.get_mut(id as u32 as usize)
                && s.epoch == (id >> 32) as u32
                && matches!(s.state, SlotState::Pending(_) | SlotState::Abandoned)
            {
                s.frame.clear();
                s.frame.extend_from_slice(&buf[at..end]);
            }
            at = end;
        }
    }

    /// Writes all queued requests.
    pub(crate) fn flush(&self) {
        self.flush_locked(&mut self.writer.lock());
    }

    /// The server is down: fails every request in flight (called by the link).
    pub(crate) fn kill_down(&self) {
        let mut wake = Vec::new();
        {
            let mut st = self.state.lock();
            if st.dead.is_some() {
                return;
            }
            let mut freed = Vec::new();
            for (i, s) in st.slots.iter_mut().enumerate() {
                s.frame = Vec::new();
                match std::mem::replace(&mut s.state, SlotState::Free) {
                    SlotState::Pending(w) => {
                        wake.extend(w);
                        s.state = SlotState::Ready(Err(self.link.down_error()));
                    }
                    SlotState::Abandoned | SlotState::Free => freed.push(i as u32),
                    ready @ SlotState::Ready(_) => s.state = ready,
                }
            }
            st.free = freed;
            st.dead = Some(self.link.down_reason().unwrap_or_default());
        }
        self.cut();
        for t in wake {
            t.unpark();
        }
    }

    /// Re-establishes the stream of generation `generation` (unless someone already did): reconnects
    /// with exponential back-off and jitter within the link's deadline, resumes the session and
    /// resends every unanswered request in submission order. Declares the server down when the
    /// server refuses the connection or the session, or the deadline passes.
    fn recover(&self, generation: u64) {
        let _guard = self.recovering.lock();
        if self.generation.load(Ordering::Acquire) != generation || self.state.lock().dead.is_some()
        {
            return;
        }
        self.cut();
        let cfg = &self.link.config;
        let started = Instant::now();
        let deadline = started + cfg.reconnect_within;
        let mut backoff = Duration::from_millis(2);
        let mut attempt = 0u64;
        tracing::info!(addr = %self.addr(), "connection lost, reconnecting");
        let (stream, hello) = loop {
            if self.link.is_down() {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .link
                .handshake(cfg.timeout.min(left.max(Duration::from_millis(10))))
            {
                Ok(ok) => break ok,
                Err(HandshakeError::Fatal(e)) => {
                    self.link.mark_down(format!("cannot reconnect: {e}"));
                    return;
                }
                Err(HandshakeError::Transient(e)) => {
                    attempt += 1;
                    // Jitter: up to half the back-off, from the clock and the attempt number.
                    let seed = u64::from(started.elapsed().subsec_nanos()) ^ attempt;
                    let jitter = backoff.mul_f64((seed % 1000) as f64 / 2000.0);
                    let pause = backoff + jitter;
                    if Instant::now() + pause >= deadline {
                        let ms = cfg.reconnect_within.as_millis();
                        self.link
                            .mark_down(format!("no reconnection within {ms} ms (last: {e})"));
                        return;
                    }
                    std::thread::sleep(pause);
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        };
        if let Ok(t) = self.current.lock().0.read_timeout() {
            let _ = stream.set_read_timeout(t);
        }
        let stream = Arc::new(stream);
        let mut w = self.writer.lock();
        // Not yet written: goes out after the resent frames.
        let unwritten = std::mem::take(&mut w.buf);
        let mut resend: Vec<(u64, Vec<u8>)> = {
            let st = self.state.lock();
            st.slots
                .iter()
                .filter(|s| {
                    matches!(s.state, SlotState::Pending(_) | SlotState::Abandoned)
                        && !s.frame.is_empty()
                })
                .map(|s| (s.order, s.frame.clone()))
                .collect()
        };
        resend.sort_unstable_by_key(|(o, _)| *o);
        for (_, f) in &resend {
            w.buf.extend_from_slice(f);
        }
        w.buf.extend_from_slice(&unwritten);
        w.stream = stream.clone();
        *self.current.lock() = (stream, generation + 1);
        self.generation.store(generation + 1, Ordering::Release);
        self.flush_locked(&mut w);
        drop(w);
        let _ = hello;
        self.link.counters.reconnected();
        tracing::info!(
            addr = %self.addr(),
            resent = resend.len(),
            after_ms = started.elapsed().as_millis() as u64,
            "reconnected, session resumed"
        );
    }

    /// Gives up on a request (timeout, dropped ticket): its answer is discarded on arrival.
    pub(crate) fn abandon(&self, p: Pending) {
        let mut st = self.state.lock();
        let st = &mut *st;
        let s = &mut st.slots[p.slot as usize];
        if s.epoch != p.epoch {
            return;
        }
        match s.state {
            SlotState::Pending(_) if st.dead.is_none() => s.state = SlotState::Abandoned,
            SlotState::Pending(_) | SlotState::Ready(_) => {
                s.state = SlotState::Free;
                if s.frame.capacity() > KEEP_FRAME {
                    s.frame = Vec::new();
                }
                st.free.push(p.slot);
            }
            _ => {}
        }
    }

    fn take(st: &mut State, p: Pending) -> Option<Result<Reply, BackendError>> {
        let s = &mut st.slots[p.slot as usize];
        if s.epoch != p.epoch || !matches!(s.state, SlotState::Ready(_)) {
            return None;
        }
        let SlotState::Ready(r) = std::mem::replace(&mut s.state, SlotState::Free) else {
            return None;
        };
        if s.frame.capacity() > KEEP_FRAME {
            s.frame = Vec::new();
        }
        st.free.push(p.slot);
        Some(r)
    }

    fn wake_follower(st: &mut State) {
        while let Some(i) = st.followers.pop() {
            if let SlotState::Pending(Some(t)) = &st.slots[i as usize].state {
                t.unpark();
                return;
            }
        }
    }

    /// Waits for the answer to `p` until `deadline`.
    ///
    /// # Errors
    /// The server's error answer, [`BackendError::ServerDown`], or [`BackendError::Timeout`].
    pub(crate) fn wait(&self, p: Pending, deadline: Instant) -> Result<Reply, BackendError> {
        self.wait_with(p, deadline, None)
    }

    /// Waits for the answer to a read as [`Connection::wait`] does, but gives up with
    /// [`BackendError::Silent`] once the link's read patience has passed with nothing at all
    /// heard from the server (the request is abandoned: its answer is dropped on arrival).
    pub(crate) fn wait_read(&self, p: Pending, deadline: Instant) -> Result<Reply, BackendError> {
        let patience = self
            .link
            .read_patience()
            .map(|d| Patience::new(Instant::now(), d));
        self.wait_with(p, deadline, patience)
    }

    fn wait_with(
        &self,
        p: Pending,
        deadline: Instant,
        patience: Option<Patience>,
    ) -> Result<Reply, BackendError> {
        if p.seq > self.flushed.load(Ordering::Acquire) {
            let mut w = self.writer.lock();
            if p.seq > self.flushed.load(Ordering::Acquire) {
                self.flush_locked(&mut w);
            }
        }
        loop {
            let mut st = self.state.lock();
            if let Some(r) = Self::take(&mut st, p) {
                drop(st);
                if let Some(at) = p.at {
                    self.link.counters.answered(at.elapsed());
                }
                return r;
            }
            if !st.leader && st.dead.is_none() {
                st.leader = true;
                drop(st);
                match self.lead(p, deadline, patience) {
                    Led::Settled => {}
                    Led::TimedOut => return self.timed_out(p),
                    Led::Silent(quiet) => return self.given_up(p, quiet),
                    Led::Broken(generation) => self.recover(generation),
                }
                continue;
            }
            if st.dead.is_some() {
                return Err(self.link.down_error());
            }
            if let Some(quiet) = patience.and_then(|pa| pa.exhausted(&self.link)) {
                drop(st);
                return self.given_up(p, quiet);
            }
            if let SlotState::Pending(w) = &mut st.slots[p.slot as usize].state
                && w.is_none()
            {
                *w = Some(std::thread::current());
            }
            // Registered on every park: the leader wakes one follower to take over when done.
            st.followers.push(p.slot);
            drop(st);
            let now = Instant::now();
            if now >= deadline {
                return self.timed_out(p);
            }
            let until = patience.map_or(deadline, |pa| pa.next_look(now).min(deadline));
            std::thread::park_timeout(until.saturating_duration_since(now));
        }
    }

    /// Ends a patient read whose server stayed silent (unless its answer just came).
    fn given_up(&self, p: Pending, quiet: Duration) -> Result<Reply, BackendError> {
        if let Some(r) = Self::take(&mut self.state.lock(), p) {
            return r;
        }
        self.abandon(p);
        Err(BackendError::Silent {
            addr: self.addr().into(),
            after_ms: quiet.as_millis() as u64,
        })
    }

    fn timed_out(&self, p: Pending) -> Result<Reply, BackendError> {
        if let Some(r) = Self::take(&mut self.state.lock(), p) {
            if let Some(at) = p.at {
                self.link.counters.answered(at.elapsed());
            }
            return r;
        }
        self.link.counters.timed_out();
        self.abandon(p);
        Err(BackendError::Timeout {
            addr: self.addr().into(),
            after_ms: self.link.config.timeout.as_millis() as u64,
        })
    }

    /// Reads and dispatches answers until `p`'s has arrived; we hold the leadership.
    fn lead(&self, p: Pending, deadline: Instant, patience: Option<Patience>) -> Led {
        let mut guard = self.reader.lock();
        let r = &mut *guard;
        let outcome = loop {
            let generation = self.generation.load(Ordering::Acquire);
            if generation != r.generation {
                // Reconnected: what was buffered belongs to the old stream.
                let cur = self.current.lock();
                r.stream = cur.0.clone();
                r.generation = cur.1;
                r.start = 0;
                r.end = 0;
            }
            let mut broken = None;
            loop {
                match decode_frame(&r.buf[r.start..r.end], MAX_FRAME_BODY) {
                    Ok(Some((frame, used))) => {
                        r.start += used;
                        if let Err(e) = self.dispatch(&frame.header, frame.body) {
                            broken = Some(e);
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        broken = Some(format!("corrupt frame from server: {e}"));
                        break;
                    }
                }
            }
            if let Some(reason) = broken {
                tracing::warn!(addr = %self.addr(), %reason, "dropping a corrupt connection");
                let _ = r.stream.shutdown(std::net::Shutdown::Both);
                break Led::Broken(r.generation);
            }
            {
                let st = self.state.lock();
                let s = &st.slots[p.slot as usize];
                if st.dead.is_some()
                    || s.epoch != p.epoch
                    || !matches!(s.state, SlotState::Pending(_))
                {
                    break Led::Settled;
                }
            }
            if r.start == r.end {
                r.start = 0;
                r.end = 0;
                if r.buf.len() > SHRINK_ABOVE {
                    r.buf.truncate(READ_BUFFER);
                    r.buf.shrink_to_fit();
                }
            } else if r.start > 0 && (r.buf.len() - r.end < HEADER_LEN || r.start > r.buf.len() / 2)
            {
                r.buf.copy_within(r.start..r.end, 0);
                r.end -= r.start;
                r.start = 0;
            }
            if r.end - r.start >= HEADER_LEN
                && let Ok(h) = Header::parse(&r.buf[r.start..r.end], MAX_FRAME_BODY)
            {
                let need = r.start + HEADER_LEN + h.body_len as usize;
                if need > r.buf.len() {
                    r.buf.resize(need, 0);
                }
            }
            match r.stream.read(&mut r.buf[r.end..]) {
                Ok(0) => break Led::Broken(r.generation),
                Ok(n) => {
                    r.end += n;
                    self.link.touch();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        break Led::TimedOut;
                    }
                    if let Some(quiet) = patience.and_then(|pa| pa.exhausted(&self.link)) {
                        break Led::Silent(quiet);
                    }
                }
                Err(_) => break Led::Broken(r.generation),
            }
        };
        drop(guard);
        let mut st = self.state.lock();
        st.leader = false;
        Self::wake_follower(&mut st);
        outcome
    }

    /// Hands one answer to its request. An error means the stream cannot be trusted.
    fn dispatch(&self, h: &Header, body: &[u8]) -> Result<(), String> {
        let slot = h.req_id as u32;
        let epoch = (h.req_id >> 32) as u32;
        let error = h.flags & farmem_proto::FLAG_ERROR != 0;
        self.link.counters.received(HEADER_LEN + body.len(), error);
        let reply = decode_reply(self.addr(), h, body).map_err(|e| e.to_string())?;
        if h.req_id == 0 {
            // A connection-level refusal sent before any request was read.
            return Err(match reply {
                Err(e) => e.to_string(),
                Ok(_) => "unexpected answer with request id 0".into(),
            });
        }
        let waiter = {
            let mut st = self.state.lock();
            let st = &mut *st;
            // After a reconnect an answer may come twice (a request resent that had already
            // been written): the first one counts, later ones are dropped.
            let Some(s) = st.slots.get_mut(slot as usize) else {
                return Err(format!("answer to unknown request {:#x}", h.req_id));
            };
            if s.epoch != epoch {
                tracing::debug!(req_id = h.req_id, "dropping a late duplicate answer");
                return Ok(());
            }
            match std::mem::replace(&mut s.state, SlotState::Free) {
                SlotState::Pending(w) => {
                    s.state = SlotState::Ready(reply);
                    w
                }
                SlotState::Abandoned => {
                    if s.frame.capacity() > KEEP_FRAME {
                        s.frame = Vec::new();
                    }
                    st.free.push(slot);
                    None
                }
                other => {
                    s.state = other;
                    tracing::debug!(req_id = h.req_id, "dropping a duplicate answer");
                    return Ok(());
                }
            }
        };
        if let Some(t) = waiter {
            t.unpark();
        }
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.cut();
    }
}
