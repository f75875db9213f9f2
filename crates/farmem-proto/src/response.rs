//! Responses: what a memory server answers.

use crate::codec::{Reader, u32_at};
use crate::frame::{FLAG_ERROR, WireError, begin_frame, finish_frame};
use crate::request::Op;

/// Length marker of an absent object in a [`DataList`].
pub const MISSING: u32 = u32::MAX;

/// Answer to a hello. Body (32 bytes): `version: u16`, `reserved: u16`, `max_frame: u32`,
/// `session: u64`, `max_inflight: u32`, `reserved: u32`, `resume: u64` (older servers send only
/// the first 24 bytes; `resume` is then 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloInfo {
    /// Protocol version of the server.
    pub version: u16,
    /// Session key: present it in a further hello to join this session.
    pub session: u64,
    /// Largest request body the server accepts on this connection.
    pub max_frame: u32,
    /// Most requests the client should keep in flight on this connection.
    pub max_inflight: u32,
    /// The session's resume secret: present it with the session key to join or resume it.
    pub resume: u64,
}

/// Answer to stats: eleven `u64`s in this order (servers before the reclaim fields send the
/// first nine; both are accepted and the missing fields are 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Bytes charged (payload + per-object overhead + agent state + kept retry answers), all
    /// sessions.
    pub used_bytes: u64,
    /// Capacity: the configured capacity, or lower while the operator or the host's memory
    /// pressure has shrunk the server (it may then be below `used_bytes`).
    pub capacity_bytes: u64,
    /// Objects stored, all sessions.
    pub objects: u64,
    /// Bytes charged per object beyond its payload.
    pub per_object_overhead: u64,
    /// Payload bytes received by puts and patches since the server started.
    pub bytes_written: u64,
    /// Bytes charged to the asking session.
    pub session_used_bytes: u64,
    /// Objects of the asking session.
    pub session_objects: u64,
    /// Live sessions.
    pub sessions: u64,
    /// Open connections.
    pub connections: u64,
    /// Bytes the server asks the asking session to move to other servers (0: none): while a
    /// shrink is under way, `min(session_used_bytes, used_bytes - capacity_bytes)`.
    pub reclaim_bytes: u64,
    /// Milliseconds left before the shrink asking for `reclaim_bytes` gives up (0: none).
    pub reclaim_deadline_ms: u64,
}

/// Fields of a stats answer from servers that know the reclaim notice.
const STATS_FIELDS: usize = 11;
/// Fields of a stats answer from older servers.
const STATS_FIELDS_V2_0: usize = 9;

impl ServerStats {
    fn fields(&self) -> [u64; STATS_FIELDS] {
        [
            self.used_bytes,
            self.capacity_bytes,
            self.objects,
            self.per_object_overhead,
            self.bytes_written,
            self.session_used_bytes,
            self.session_objects,
            self.sessions,
            self.connections,
            self.reclaim_bytes,
            self.reclaim_deadline_ms,
        ]
    }
}

/// Answer to an admin request: five `u64`s in this order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdminStatus {
    /// Bytes charged, all sessions.
    pub used_bytes: u64,
    /// The capacity now (what stats report).
    pub capacity_bytes: u64,
    /// The configured capacity: the most `Grow` can give back.
    pub max_capacity_bytes: u64,
    /// Bytes held above the capacity, that clients are being asked to move away.
    pub excess_bytes: u64,
    /// Milliseconds left before the shrink under way gives up (0: none).
    pub reclaim_deadline_ms: u64,
}

impl AdminStatus {
    fn fields(&self) -> [u64; 5] {
        [
            self.used_bytes,
            self.capacity_bytes,
            self.max_capacity_bytes,
            self.excess_bytes,
            self.reclaim_deadline_ms,
        ]
    }
}

/// Error codes of error answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `a` = object id.
    NotFound = 1,
    /// `a` = bytes needed, `b` = bytes available.
    OutOfCapacity = 2,
    /// `a` = object id, `b` = expected size, `c` = actual size.
    SizeMismatch = 3,
    /// `a` = size, `b` = limit.
    TooLarge = 4,
    /// The token was missing or wrong; the connection is closed.
    AuthRefused = 5,
    /// `a` = the server's version; the connection is closed.
    VersionMismatch = 6,
    /// A remote-agent operation failed; see the message.
    Compute = 7,
    /// The request could not be decoded; the connection is closed.
    Malformed = 8,
    /// The first request was not a hello; the connection is closed.
    HelloRequired = 9,
    /// Too many connections, or the session key is unknown; the connection is closed.
    Refused = 10,
    /// The server is shutting down.
    ShuttingDown = 11,
    /// A hello named a session that does not exist (never created, closed, or its lease ran
    /// out) or presented the wrong resume secret; the connection is closed.
    SessionRefused = 12,
    /// A retried request already ran, but its answer was too large to be remembered.
    ReplayUnavailable = 13,
    /// An admin request without the right admin token (or to a server without one); the
    /// connection is closed.
    AdminRefused = 14,
    /// A shrink could not be completed by its deadline: `a` = bytes still held above the capacity
    /// asked for, `b` = the capacity now (what is used), `c` = the capacity asked for.
    ShrinkIncomplete = 15,
    /// The answer would exceed the server's response limit (a batched get naming large objects
    /// many times, a large agent result): `a` = bytes of the answer when it was cut (at least),
    /// `b` = the limit. Nothing was changed; the connection stays open.
    ResponseTooLarge = 16,
    /// A per-session quota set by the operator would be exceeded: `a` = which
    /// ([`QuotaKind`]), `b` = the limit (bytes, objects, or requests per second), `c` = for
    /// bytes and objects what the session would have held, for the request rate the
    /// milliseconds after which a request will be accepted again. Nothing was changed; the
    /// connection stays open.
    QuotaExceeded = 17,
    /// A durable server could not log the change (its disk or log limit is full, or writing
    /// its log failed): `a` = bytes the change needed (0 when the log failed). Nothing was
    /// changed; the connection stays open.
    StorageFailed = 18,
}

/// Which per-session quota an [`ErrorCode::QuotaExceeded`] answer is about (its `a` detail).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum QuotaKind {
    /// Bytes charged (payload, per-object overhead and agent state).
    Bytes = 1,
    /// Objects stored.
    Objects = 2,
    /// Requests per second (a token bucket).
    Rate = 3,
}

impl QuotaKind {
    /// The kind with code `c`, if known.
    pub fn from_code(c: u64) -> Option<QuotaKind> {
        [QuotaKind::Bytes, QuotaKind::Objects, QuotaKind::Rate]
            .into_iter()
            .find(|k| *k as u64 == c)
    }

    /// A short lower-case name (`bytes`, `objects`, `rate`), as metrics and messages use it.
    pub fn name(self) -> &'static str {
        match self {
            QuotaKind::Bytes => "bytes",
            QuotaKind::Objects => "objects",
            QuotaKind::Rate => "rate",
        }
    }
}

impl ErrorCode {
    /// The code for a raw value, if known.
    pub fn from_code(c: u16) -> Option<ErrorCode> {
        use ErrorCode::*;
        [
            NotFound,
            OutOfCapacity,
            SizeMismatch,
            TooLarge,
            AuthRefused,
            VersionMismatch,
            Compute,
            Malformed,
            HelloRequired,
            Refused,
            ShuttingDown,
            SessionRefused,
            ReplayUnavailable,
            AdminRefused,
            ShrinkIncomplete,
            ResponseTooLarge,
            QuotaExceeded,
            StorageFailed,
        ]
        .into_iter()
        .find(|k| *k as u16 == c)
    }
}

/// An error answer. Body: `code: u16`, `reserved: u16`, `a: u64`, `b: u64`, `c: u64`, then a
/// UTF-8 message (rest of the body).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorInfo<'a> {
    /// Raw error code ([`ErrorCode`]).
    pub code: u16,
    /// First detail, meaning per code.
    pub a: u64,
    /// Second detail.
    pub b: u64,
    /// Third detail.
    pub c: u64,
    /// Human-readable message.
    pub message: &'a str,
}

/// A validated get_many answer: `count: u32`, then per object `len: u32` ([`MISSING`] when the
/// object does not exist, followed by no bytes) and `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataList<'a> {
    count: usize,
    raw: &'a [u8],
}

impl<'a> DataList<'a> {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The objects in request order; `None` for missing ones.
    pub fn iter(&self) -> impl Iterator<Item = Option<&'a [u8]>> + 'a {
        let mut rest = self.raw;
        (0..self.count).map(move |_| {
            let len = u32_at(rest, 0);
            if len == MISSING {
                rest = &rest[4..];
                return None;
            }
            let data = &rest[4..4 + len as usize];
            rest = &rest[4 + len as usize..];
            Some(data)
        })
    }

    /// Appends the count of a get_many answer body; follow with [`DataList::push`] per entry.
    pub fn begin(out: &mut Vec<u8>, count: usize) {
        out.extend_from_slice(&(count as u32).to_le_bytes());
    }

    /// Appends one entry.
    pub fn push(out: &mut Vec<u8>, item: Option<&[u8]>) {
        match item {
            None => out.extend_from_slice(&MISSING.to_le_bytes()),
            Some(d) => {
                out.extend_from_slice(&(d.len() as u32).to_le_bytes());
                out.extend_from_slice(d);
            }
        }
    }
}

/// An answer, borrowing from the frame body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response<'a> {
    /// Answer to hello.
    Hello(HelloInfo),
    /// Success without data (put, put_many, patch, free): empty body.
    Done,
    /// Object bytes (get) or an agent result (compute): the whole body.
    Data(&'a [u8]),
    /// Answer to get_many.
    Many(DataList<'a>),
    /// Answer to stats.
    Stats(ServerStats),
    /// Answer to admin.
    Admin(AdminStatus),
    /// An error (header flag [`FLAG_ERROR`]).
    Error(ErrorInfo<'a>),
}

fn malformed(op: &'static str, what: &'static str) -> WireError {
    WireError::Malformed { op, what }
}

impl<'a> Response<'a> {
    /// Decodes the body of an answer to a request with operation `op`.
    ///
    /// # Errors
    /// [`WireError`] when the body does not fit the op; never panics.
    pub fn decode(op: u16, flags: u16, body: &'a [u8]) -> Result<Response<'a>, WireError> {
        let op = Op::from_code(op)?;
        let name = op.name();
        let mut c = Reader::new(body);
        let short = || malformed(name, "answer too short");
        let resp = if flags & FLAG_ERROR != 0 {
            let code = c.u16().map_err(|_| short())?;
            let _ = c.u16().map_err(|_| short())?;
            let a = c.u64().map_err(|_| short())?;
            let b = c.u64().map_err(|_| short())?;
            let cc = c.u64().map_err(|_| short())?;
            let message = std::str::from_utf8(c.take_rest())
                .map_err(|_| malformed(name, "error message is not UTF-8"))?;
            Response::Error(ErrorInfo {
                code,
                a,
                b,
                c: cc,
                message,
            })
        } else {
            match op {
                Op::Hello => {
                    let version = c.u16().map_err(|_| short())?;
                    let _ = c.u16().map_err(|_| short())?;
                    let max_frame = c.u32().map_err(|_| short())?;
                    let session = c.u64().map_err(|_| short())?;
                    let max_inflight = c.u32().map_err(|_| short())?;
                    let _ = c.u32().map_err(|_| short())?;
                    let resume = if c.is_empty() {
                        0
                    } else {
                        c.u64().map_err(|_| short())?
                    };
                    Response::Hello(HelloInfo {
                        version,
                        session,
                        max_frame,
                        max_inflight,
                        resume,
                    })
                }
                Op::Put | Op::PutMany | Op::Patch | Op::Free | Op::Ping | Op::CloseSession => {
                    Response::Done
                }
                Op::Get | Op::Compute => Response::Data(c.take_rest()),
                Op::GetMany => {
                    let count = c.u32().map_err(|_| short())? as usize;
                    let start = c.rest();
                    for _ in 0..count {
                        let len = c.u32().map_err(|_| short())?;
                        if len != MISSING {
                            c.bytes(len as usize).map_err(|_| short())?;
                        }
                    }
                    let used = start.len() - c.remaining();
                    Response::Many(DataList {
                        count,
                        raw: &start[..used],
                    })
                }
                Op::Stats => {
                    let n = c.remaining() / 8;
                    if !c.remaining().is_multiple_of(8)
                        || (n != STATS_FIELDS && n != STATS_FIELDS_V2_0)
                    {
                        return Err(malformed(name, "stats answer is neither 9 nor 11 numbers"));
                    }
                    let mut f = [0u64; STATS_FIELDS];
                    for v in f.iter_mut().take(n) {
                        *v = c.u64().map_err(|_| short())?;
                    }
                    Response::Stats(ServerStats {
                        used_bytes: f[0],
                        capacity_bytes: f[1],
                        objects: f[2],
                        per_object_overhead: f[3],
                        bytes_written: f[4],
                        session_used_bytes: f[5],
                        session_objects: f[6],
                        sessions: f[7],
                        connections: f[8],
                        reclaim_bytes: f[9],
                        reclaim_deadline_ms: f[10],
                    })
                }
                Op::Admin => {
                    let mut f = [0u64; 5];
                    for v in &mut f {
                        *v = c.u64().map_err(|_| short())?;
                    }
                    Response::Admin(AdminStatus {
                        used_bytes: f[0],
                        capacity_bytes: f[1],
                        max_capacity_bytes: f[2],
                        excess_bytes: f[3],
                        reclaim_deadline_ms: f[4],
                    })
                }
            }
        };
        if !c.is_empty() {
            return Err(malformed(name, "trailing bytes in answer"));
        }
        Ok(resp)
    }

    /// Appends a complete answer frame for request `req_id` with operation `op` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>, op: Op, req_id: u64) {
        let flags = if matches!(self, Response::Error(_)) {
            FLAG_ERROR
        } else {
            0
        };
        let start = begin_frame(out, op as u16, flags, req_id);
        match *self {
            Response::Hello(h) => {
                out.extend_from_slice(&h.version.to_le_bytes());
                out.extend_from_slice(&0u16.to_le_bytes());
                out.extend_from_slice(&h.max_frame.to_le_bytes());
                out.extend_from_slice(&h.session.to_le_bytes());
                out.extend_from_slice(&h.max_inflight.to_le_bytes());
                out.extend_from_slice(&0u32.to_le_bytes());
                out.extend_from_slice(&h.resume.to_le_bytes());
            }
            Response::Done => {}
            Response::Data(d) => out.extend_from_slice(d),
            Response::Many(list) => {
                out.extend_from_slice(&(list.count as u32).to_le_bytes());
                out.extend_from_slice(list.raw);
            }
            Response::Stats(s) => {
                for v in s.fields() {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            Response::Admin(s) => {
                for v in s.fields() {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            Response::Error(e) => {
                out.extend_from_slice(&e.code.to_le_bytes());
                out.extend_from_slice(&0u16.to_le_bytes());
                for v in [e.a, e.b, e.c] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.extend_from_slice(e.message.as_bytes());
            }
        }
        finish_frame(out, start);
    }
}

/// Appends an error answer frame.
pub fn encode_error(
    out: &mut Vec<u8>,
    op: Op,
    req_id: u64,
    code: ErrorCode,
    details: [u64; 3],
    message: &str,
) {
    Response::Error(ErrorInfo {
        code: code as u16,
        a: details[0],
        b: details[1],
        c: details[2],
        message,
    })
    .encode(out, op, req_id);
}
