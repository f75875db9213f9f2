//! Executes [`op::OBJ_PUSH`](farmem_proto::agent::op::OBJ_PUSH): copies objects of the asking
//! session straight into the client's session on another server (see
//! [`farmem_proto::agent::PushArgs`] for who may move what).
//!
//! The copies are written with ordinary `put_many` requests on a connection of their own that
//! joins the target session with its key and resume secret, so the target server checks them
//! exactly as it checks the client: its token, the session's secret, capacity and object size.
//! The answer comes only after the target acknowledged every copy, so a request the client
//! sends the target after it cannot overtake them.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use farmem_proto::agent::{AgentDecodeError, AgentMessage, PushArgs, PushResult};
use farmem_proto::{
    DEFAULT_MAX_FRAME, HEADER_LEN, Op, Request, Response, VERSION, WireError, begin_frame,
    decode_frame, encode_request, finish_frame,
};

use crate::Namespace;

/// How long the source waits to connect to the target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one read or write on the target connection may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Request bodies sent to the target stay below this (or the target's own limit).
const FRAME_BODY: usize = 4 << 20;

/// Why a push failed. Copies may have been written to the target before the failure; the
/// client drops or overwrites them (it has not recorded them anywhere).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The arguments could not be decoded.
    #[error("malformed push arguments")]
    Args(#[from] AgentDecodeError),
    /// The target server could not be reached or the connection failed.
    #[error("push to {addr}: connection failed")]
    Io {
        /// The target's address.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The target sent something that is not a valid answer.
    #[error("push to {addr}: malformed answer")]
    Wire {
        /// The target's address.
        addr: String,
        /// What was wrong.
        #[source]
        source: WireError,
    },
    /// The target refused the hello or a write.
    #[error("push to {addr}: refused ({code}): {message}")]
    Refused {
        /// The target's address.
        addr: String,
        /// The target's error code.
        code: u16,
        /// The target's message.
        message: String,
    },
}

/// Idle connections kept per session.
const KEEP: usize = 4;
/// An idle connection unused for this long is closed instead of reused (it holds the target
/// session open).
const KEEP_IDLE: Duration = Duration::from_secs(2);

/// A session's idle target connections, reused by its next pushes to the same target session
/// (no connect and hello per copy). They close with the session, or when found idle too long.
#[derive(Default)]
pub struct PushConnections {
    idle: Mutex<Vec<Target>>,
}

impl std::fmt::Debug for PushConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConnections")
            .field("idle", &self.idle.lock().len())
            .finish()
    }
}

impl PushConnections {
    /// An idle connection to the target of `a`, if one was kept and is fresh enough.
    fn take(&self, a: &PushArgs) -> Option<Target> {
        let mut idle = self.idle.lock();
        idle.retain(|t| t.since.elapsed() < KEEP_IDLE);
        let k = idle.iter().position(|t| t.key == Key::of(a))?;
        Some(idle.swap_remove(k))
    }

    fn keep(&self, mut t: Target) {
        t.since = Instant::now();
        let mut idle = self.idle.lock();
        if idle.len() < KEEP {
            idle.push(t);
        }
    }
}

/// What a kept connection is good for: the same target session, as the same client presents it.
#[derive(PartialEq, Eq)]
struct Key {
    addr: String,
    session: u64,
    resume: u64,
    token: Vec<u8>,
}

impl Key {
    fn of(a: &PushArgs) -> Self {
        Self {
            addr: a.addr.clone(),
            session: a.session,
            resume: a.resume,
            token: a.token.clone(),
        }
    }
}

/// A connection to a target session (after its hello): the stream, what was read from it but
/// not yet decoded, the target's frame limit, the last request id used.
struct Target {
    key: Key,
    addr: String,
    stream: TcpStream,
    rbuf: Vec<u8>,
    limit: usize,
    rid: u64,
    since: Instant,
}

impl Target {
    fn io(&self, source: std::io::Error) -> PushError {
        PushError::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    fn send(&mut self, buf: &[u8]) -> Result<(), PushError> {
        self.stream.write_all(buf).map_err(|e| self.io(e))
    }

    /// Reads the next answer and checks it is a success; returns the hello's frame limit.
    fn answer(&mut self) -> Result<Option<u32>, PushError> {
        loop {
            let wire = |source| PushError::Wire {
                addr: self.addr.clone(),
                source,
            };
            if let Some((frame, used)) =
                decode_frame(&self.rbuf, DEFAULT_MAX_FRAME).map_err(wire)?
            {
                let h = frame.header;
                let out = match Response::decode(h.op, h.flags, frame.body).map_err(wire)? {
                    Response::Hello(info) => Ok(Some(info.max_frame)),
                    Response::Done => Ok(None),
                    Response::Error(e) => Err(PushError::Refused {
                        addr: self.addr.clone(),
                        code: e.code,
                        message: e.message.to_string(),
                    }),
                    _ => Err(wire(WireError::Malformed {
                        op: "push",
                        what: "unexpected answer",
                    })),
                };
                self.rbuf.drain(..used);
                return out;
            }
            let at = self.rbuf.len();
            self.rbuf.resize(at + (64 << 10), 0);
            let n = match self.stream.read(&mut self.rbuf[at..]) {
                Ok(0) => Err(self.io(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => Ok(n),
                Err(e) => Err(self.io(e)),
            };
            self.rbuf.truncate(at + n.as_ref().map_or(0, |&n| n));
            n?;
        }
    }
}

/// Connects to the target of `a` and says hello to its session.
fn connect(a: &PushArgs) -> Result<Target, PushError> {
    let io = |source| PushError::Io {
        addr: a.addr.clone(),
        source,
    };
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    let mut found = None;
    for sa in a.addr.to_socket_addrs().map_err(io)? {
        match TcpStream::connect_timeout(&sa, CONNECT_TIMEOUT) {
            Ok(stream) => {
                found = Some(stream);
                break;
            }
            Err(e) => last = e,
        }
    }
    let stream = found.ok_or_else(|| io(last))?;
    stream.set_nodelay(true).map_err(io)?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    let mut t = Target {
        key: Key::of(a),
        addr: a.addr.clone(),
        stream,
        rbuf: Vec::new(),
        limit: FRAME_BODY,
        rid: 1,
        since: Instant::now(),
    };
    let mut buf = Vec::new();
    let hello = Request::Hello {
        version: VERSION,
        session: a.session,
        token: &a.token,
        resume: a.resume,
    };
    encode_request(&mut buf, t.rid, &hello);
    t.send(&buf)?;
    if let Some(m) = t.answer()? {
        t.limit = (m as usize).min(FRAME_BODY);
    }
    Ok(t)
}

/// Runs a push for the session owning `ns` (its kept connections `conns`) with encoded
/// [`PushArgs`] `args`; returns the encoded [`PushResult`].
///
/// # Errors
/// [`PushError`]; some copies may have been written to the target then.
pub(crate) fn push(
    ns: &Namespace,
    conns: &PushConnections,
    args: &[u8],
) -> Result<Vec<u8>, PushError> {
    let a = PushArgs::decode(args)?;
    // A kept connection may have been closed by the target meanwhile: one fresh try then.
    if let Some(t) = conns.take(&a)
        && let Ok((t, out)) = copy(ns, &a, t)
    {
        conns.keep(t);
        return Ok(out);
    }
    let (t, out) = copy(ns, &a, connect(&a)?)?;
    conns.keep(t);
    Ok(out)
}

/// Copies the objects of `a` over `t`; returns the connection (for reuse) and the answer.
fn copy(ns: &Namespace, a: &PushArgs, mut t: Target) -> Result<(Target, Vec<u8>), PushError> {
    let limit = t.limit;
    let mut buf = Vec::new();
    let mut sizes = Vec::with_capacity(a.ids.len());
    let mut sent = 0u64;
    // The frame being filled (its start and item count), and the end of the frames completed.
    let mut open: Option<(usize, u32)> = None;
    let mut done = 0;
    buf.clear();
    let close = |buf: &mut Vec<u8>, open: &mut Option<(usize, u32)>, done: &mut usize| {
        if let Some((start, n)) = open.take() {
            let at = start + HEADER_LEN;
            buf[at..at + 4].copy_from_slice(&n.to_le_bytes());
            finish_frame(buf, start);
            *done = buf.len();
        }
    };
    for &id in &a.ids {
        let got = ns.get_with(id, |d| {
            if let Some((start, n)) = open
                && n > 0
                && buf.len() - start - HEADER_LEN + 12 + d.len() > limit
            {
                close(&mut buf, &mut open, &mut done);
            }
            let (_, n) = open.get_or_insert_with(|| {
                sent += 1;
                t.rid += 1;
                let start = begin_frame(&mut buf, Op::PutMany as u16, 0, t.rid);
                buf.extend_from_slice(&0u32.to_le_bytes());
                (start, 0)
            });
            *n += 1;
            buf.extend_from_slice(&id.to_le_bytes());
            buf.extend_from_slice(&(d.len() as u32).to_le_bytes());
            buf.extend_from_slice(d);
            d.len() as u32
        });
        sizes.push(got.unwrap_or(PushResult::MISSING));
        // Completed frames go out at once: a push of many objects holds about one frame.
        if done > 0 {
            t.send(&buf[..done])?;
            buf.drain(..done);
            if let Some((start, _)) = &mut open {
                *start -= done;
            }
            done = 0;
        }
    }
    close(&mut buf, &mut open, &mut done);
    if done > 0 {
        t.send(&buf)?;
    }
    for _ in 0..sent {
        t.answer()?;
    }
    Ok((t, PushResult { sizes }.encode()))
}
