//! One pipelined connection to a memory server.
//!
//! Many threads may have requests in flight on one connection; answers come back in any order
//! and are matched by request id. There is no reader thread: a thread waiting for an answer
//! reads the socket itself when nobody else is ("leader reads and dispatches"), hands answers for
//! other requests to their waiting threads, and passes the leadership on when its own answer has
//! arrived. A lone thread therefore costs one `write` and one `read` per round trip.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use farmem_proto::{
    ErrorCode, ErrorInfo, HEADER_LEN, Header, HelloInfo, MAX_FRAME_BODY, Op, Request, Response,
    ServerStats, VERSION, begin_frame, decode_frame, finish_frame,
};
use parking_lot::Mutex;

use farmem_store::agent::AgentErrorCode;

use crate::backend::{BackendError, DisconnectCause, ProtocolError};

const READ_BUFFER: usize = 256 << 10;
const SHRINK_ABOVE: usize = 4 << 20;
/// Buffered request bytes that force a write even without an explicit flush.
const FLUSH_AT: usize = 64 << 10;

/// A decoded, owned answer.
#[derive(Debug)]
pub(crate) enum Reply {
    Done,
    Data(Vec<u8>),
    Many(Vec<Option<Vec<u8>>>),
    Hello(HelloInfo),
    Stats(ServerStats),
}

enum SlotState {
    Free,
    Pending(Option<Thread>),
    Ready(Result<Reply, BackendError>),
    Abandoned,
}

struct Slot {
    epoch: u32,
    state: SlotState,
}

struct State {
    slots: Vec<Slot>,
    free: Vec<u32>,
    leader: bool,
    followers: Vec<u32>,
    dead: Option<DisconnectCause>,
}

struct Reader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

struct Writer {
    buf: Vec<u8>,
    queued: u64,
}

/// A request written (or queued) on a connection whose answer has not been collected yet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending {
    slot: u32,
    epoch: u32,
    seq: u64,
}

/// A connection to one memory server.
pub(crate) struct Connection {
    addr: String,
    stream: TcpStream,
    state: Mutex<State>,
    reader: Mutex<Reader>,
    writer: Mutex<Writer>,
    flushed: AtomicU64,
    timeout: Duration,
    /// Largest request body the server accepts (from its hello).
    pub(crate) max_frame: u32,
}

fn req_id(slot: u32, epoch: u32) -> u64 {
    (u64::from(epoch) << 32) | u64::from(slot)
}

/// Maps an error answer to a typed error.
pub(crate) fn error_from(addr: &str, e: &ErrorInfo<'_>) -> BackendError {
    let msg = e.message.to_string();
    match ErrorCode::from_code(e.code) {
        Some(ErrorCode::NotFound) => BackendError::NotFound(e.a),
        Some(ErrorCode::OutOfCapacity) => BackendError::OutOfCapacity {
            needed: e.a,
            available: e.b,
        },
        Some(ErrorCode::SizeMismatch) => BackendError::SizeMismatch {
            id: e.a,
            expected: e.b,
            actual: e.c,
        },
        Some(ErrorCode::TooLarge) => BackendError::TooLarge {
            size: e.a,
            limit: e.b,
        },
        Some(ErrorCode::AuthRefused) => BackendError::AuthRefused { addr: addr.into() },
        Some(ErrorCode::VersionMismatch) => BackendError::VersionMismatch {
            addr: addr.into(),
            client: VERSION,
            server: u16::try_from(e.a).unwrap_or(u16::MAX),
        },
        Some(ErrorCode::Compute) => BackendError::RemoteAgent {
            addr: addr.into(),
            code: AgentErrorCode::from_code(e.a),
            message: msg,
        },
        Some(ErrorCode::Refused | ErrorCode::ShuttingDown) => BackendError::Disconnected {
            addr: addr.into(),
            cause: DisconnectCause::Refused {
                code: e.code,
                message: msg,
            },
        },
        _ => BackendError::Protocol(ProtocolError::ServerError {
            addr: addr.into(),
            code: e.code,
            message: msg,
        }),
    }
}

fn decode_reply(
    addr: &str,
    h: &Header,
    body: &[u8],
) -> Result<Result<Reply, BackendError>, ProtocolError> {
    let resp = Response::decode(h.op, h.flags, body)?;
    Ok(match resp {
        Response::Done => Ok(Reply::Done),
        Response::Data(d) => Ok(Reply::Data(d.to_vec())),
        Response::Many(list) => Ok(Reply::Many(
            list.iter().map(|o| o.map(<[u8]>::to_vec)).collect(),
        )),
        Response::Hello(h) => Ok(Reply::Hello(h)),
        Response::Stats(s) => Ok(Reply::Stats(s)),
        Response::Error(e) => Err(error_from(addr, &e)),
    })
}

enum Led {
    /// Our answer arrived, or the connection died (the slot says which).
    Settled,
    /// Our deadline passed first.
    TimedOut,
}

impl Connection {
    /// Connects to `addr` and says hello (joining `session` unless it is 0).
    pub(crate) fn open(
        addr: &str,
        token: Option<&[u8]>,
        session: u64,
        timeout: Duration,
        version: u16,
    ) -> Result<(Connection, HelloInfo), BackendError> {
        let unreachable = |source| BackendError::Unreachable {
            addr: addr.into(),
            source,
        };
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs().map_err(unreachable)?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "address resolved to nothing");
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or_else(|| unreachable(last))?;
        let setup = |s: &TcpStream| -> io::Result<()> {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))
        };
        setup(&stream).map_err(unreachable)?;
        let conn = Connection {
            addr: addr.into(),
            stream,
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
            }),
            writer: Mutex::new(Writer {
                buf: Vec::with_capacity(FLUSH_AT),
                queued: 0,
            }),
            flushed: AtomicU64::new(0),
            timeout,
            max_frame: 1 << 20,
        };
        let hello = Request::Hello {
            version,
            session,
            token: token.unwrap_or(&[]),
        };
        let p = conn.submit(Op::Hello, true, |b| hello.encode_body(b))?;
        match conn.wait(p, Instant::now() + timeout)? {
            Reply::Hello(h) => {
                let mut conn = conn;
                conn.max_frame = h.max_frame.min(MAX_FRAME_BODY);
                Ok((conn, h))
            }
            other => Err(BackendError::Protocol(ProtocolError::UnexpectedAnswer {
                answer: format!("{other:?} to hello from {addr}"),
            })),
        }
    }

    /// Server address.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Queues a request whose body `body` appends; writes it now if `flush`.
    ///
    /// # Errors
    /// [`BackendError::Disconnected`] when the connection is dead.
    pub(crate) fn submit(
        &self,
        op: Op,
        flush: bool,
        body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Pending, BackendError> {
        let (slot, epoch) = {
            let mut st = self.state.lock();
            if let Some(reason) = &st.dead {
                return Err(self.gone(reason));
            }
            let slot = match st.free.pop() {
                Some(s) => s,
                None => {
                    st.slots.push(Slot {
                        epoch: 0,
                        state: SlotState::Free,
                    });
                    (st.slots.len() - 1) as u32
                }
            };
            let s = &mut st.slots[slot as usize];
            s.epoch = s.epoch.wrapping_add(1);
            s.state = SlotState::Pending(None);
            (slot, s.epoch)
        };
        let mut w = self.writer.lock();
        let start = begin_frame(&mut w.buf, op as u16, 0, req_id(slot, epoch));
        body(&mut w.buf);
        finish_frame(&mut w.buf, start);
        w.queued += 1;
        let seq = w.queued;
        if flush || w.buf.len() >= FLUSH_AT {
            self.flush_locked(&mut w);
        }
        Ok(Pending { slot, epoch, seq })
    }

    fn flush_locked(&self, w: &mut Writer) {
        if w.buf.is_empty() {
            return;
        }
        let r = (&self.stream).write_all(&w.buf);
        w.buf.clear();
        if w.buf.capacity() > SHRINK_ABOVE {
            w.buf.shrink_to(FLUSH_AT);
        }
        self.flushed.store(w.queued, Ordering::Release);
        if let Err(e) = r {
            self.kill(DisconnectCause::Io(Arc::new(e)));
        }
    }

    /// Writes all queued requests.
    pub(crate) fn flush(&self) {
        self.flush_locked(&mut self.writer.lock());
    }

    fn gone(&self, cause: &DisconnectCause) -> BackendError {
        BackendError::Disconnected {
            addr: self.addr.clone(),
            cause: cause.clone(),
        }
    }

    /// Marks the connection dead and fails every request in flight.
    fn kill(&self, reason: DisconnectCause) {
        let mut wake = Vec::new();
        {
            let mut st = self.state.lock();
            if st.dead.is_some() {
                return;
            }
            tracing::warn!(addr = %self.addr, %reason, "connection to memory server lost");
            let mut freed = Vec::new();
            for (i, s) in st.slots.iter_mut().enumerate() {
                match std::mem::replace(&mut s.state, SlotState::Free) {
                    SlotState::Pending(w) => {
                        wake.extend(w);
                        s.state = SlotState::Ready(Err(BackendError::Disconnected {
                            addr: self.addr.clone(),
                            cause: reason.clone(),
                        }));
                    }
                    SlotState::Abandoned | SlotState::Free => freed.push(i as u32),
                    ready @ SlotState::Ready(_) => s.state = ready,
                }
            }
            st.free = freed;
            st.dead = Some(reason);
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        for t in wake {
            t.unpark();
        }
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
    /// The server's error answer, [`BackendError::Disconnected`], or [`BackendError::Timeout`].
    pub(crate) fn wait(&self, p: Pending, deadline: Instant) -> Result<Reply, BackendError> {
        if p.seq > self.flushed.load(Ordering::Acquire) {
            let mut w = self.writer.lock();
            if p.seq > self.flushed.load(Ordering::Acquire) {
                self.flush_locked(&mut w);
            }
        }
        loop {
            let mut st = self.state.lock();
            if let Some(r) = Self::take(&mut st, p) {
                return r;
            }
            if !st.leader && st.dead.is_none() {
                st.leader = true;
                drop(st);
                if let Led::TimedOut = self.lead(p, deadline) {
                    return self.timed_out(p);
                }
                continue;
            }
            if let Some(reason) = &st.dead {
                return Err(self.gone(reason));
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
            std::thread::park_timeout(deadline - now);
        }
    }

    fn timed_out(&self, p: Pending) -> Result<Reply, BackendError> {
        if let Some(r) = Self::take(&mut self.state.lock(), p) {
            return r;
        }
        self.abandon(p);
        Err(BackendError::Timeout {
            addr: self.addr.clone(),
            after_ms: self.timeout.as_millis() as u64,
        })
    }

    /// Reads and dispatches answers until `p`'s has arrived; we hold the leadership.
    fn lead(&self, p: Pending, deadline: Instant) -> Led {
        let mut guard = self.reader.lock();
        let r = &mut *guard;
        let outcome = loop {
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
                        broken = Some(DisconnectCause::Corrupt(e));
                        break;
                    }
                }
            }
            if let Some(reason) = broken {
                self.kill(reason);
                break Led::Settled;
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
            match (&self.stream).read(&mut r.buf[r.end..]) {
                Ok(0) => self.kill(DisconnectCause::Closed),
                Ok(n) => r.end += n,
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
                }
                Err(e) => self.kill(DisconnectCause::Io(Arc::new(e))),
            }
        };
        drop(guard);
        let mut st = self.state.lock();
        st.leader = false;
        Self::wake_follower(&mut st);
        outcome
    }

    /// Hands one answer to its request. An error means the stream cannot be trusted.
    fn dispatch(&self, h: &Header, body: &[u8]) -> Result<(), DisconnectCause> {
        let slot = h.req_id as u32;
        let epoch = (h.req_id >> 32) as u32;
        let bad = |e: ProtocolError| DisconnectCause::BadAnswer(Arc::new(e));
        let reply = decode_reply(&self.addr, h, body).map_err(bad)?;
        if h.req_id == 0 {
            // A connection-level refusal sent before any request was read.
            return Err(match reply {
                Err(BackendError::Disconnected { cause, .. }) => cause,
                Err(e) => DisconnectCause::Server(Arc::new(e)),
                Ok(r) => bad(ProtocolError::UnexpectedAnswer {
                    answer: format!("{r:?} with request id 0"),
                }),
            });
        }
        let unknown = || bad(ProtocolError::UnknownRequest { req_id: h.req_id });
        let waiter = {
            let mut st = self.state.lock();
            let st = &mut *st;
            let Some(s) = st.slots.get_mut(slot as usize) else {
                return Err(unknown());
            };
            if s.epoch != epoch {
                return Err(unknown());
            }
            match std::mem::replace(&mut s.state, SlotState::Free) {
                SlotState::Pending(w) => {
                    s.state = SlotState::Ready(reply);
                    w
                }
                SlotState::Abandoned => {
                    st.free.push(slot);
                    None
                }
                other => {
                    s.state = other;
                    return Err(bad(ProtocolError::DuplicateAnswer { req_id: h.req_id }));
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
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}
