//! Requests: what a client asks of a memory server.

use crate::codec::{Reader, u32_at, u64_at};
use crate::frame::{WireError, begin_frame, finish_frame};
use crate::{HELLO_MAGIC, MAX_OBJECT};

/// Operation codes (the `op` header field). Answers carry the op of their request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Op {
    /// Handshake: version, auth token, session to join.
    Hello = 1,
    /// Store one object.
    Put = 2,
    /// Fetch one object.
    Get = 3,
    /// Fetch many objects.
    GetMany = 4,
    /// Store many objects.
    PutMany = 5,
    /// In-place edits of existing objects.
    Patch = 6,
    /// Free objects.
    Free = 7,
    /// Space accounting.
    Stats = 8,
    /// Remote-agent operation.
    Compute = 9,
    /// Liveness probe: answered at once with an empty body.
    Ping = 10,
    /// Ends the session: its objects are freed at once (a clean client exit).
    CloseSession = 11,
    /// Operator request (capacity changes, status), authenticated by the admin token; may be
    /// sent instead of a hello.
    Admin = 12,
}

/// What an [`Request::Admin`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum AdminAction {
    /// Report capacity and use; changes nothing.
    Status = 1,
    /// Lower the capacity by `bytes`; clients are asked to move the excess away within the
    /// deadline.
    Shrink = 2,
    /// Raise the capacity by `bytes` (at most to the configured capacity).
    Grow = 3,
    /// Set the capacity to `bytes` (at most the configured capacity).
    Set = 4,
    /// Server-wide [`ServerStats`](crate::ServerStats) (every session's use, connections,
    /// bytes written); answered with a `STATS` frame (op [`Op::Stats`], the request's id).
    /// A client's own `STATS` shows only its session unless the server has no admin token.
    Stats = 5,
}

impl AdminAction {
    /// The action with code `code`, if known.
    pub fn from_code(code: u16) -> Option<Self> {
        [
            Self::Status,
            Self::Shrink,
            Self::Grow,
            Self::Set,
            Self::Stats,
        ]
        .into_iter()
        .find(|a| *a as u16 == code)
    }
}

impl Op {
    /// The op with code `code`.
    ///
    /// # Errors
    /// [`WireError::UnknownOp`] for unassigned codes.
    pub fn from_code(code: u16) -> Result<Op, WireError> {
        Ok(match code {
            1 => Op::Hello,
            2 => Op::Put,
            3 => Op::Get,
            4 => Op::GetMany,
            5 => Op::PutMany,
            6 => Op::Patch,
            7 => Op::Free,
            8 => Op::Stats,
            9 => Op::Compute,
            10 => Op::Ping,
            11 => Op::CloseSession,
            12 => Op::Admin,
            _ => return Err(WireError::UnknownOp(code)),
        })
    }

    /// Lower-case name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Op::Hello => "hello",
            Op::Put => "put",
            Op::Get => "get",
            Op::GetMany => "get_many",
            Op::PutMany => "put_many",
            Op::Patch => "patch",
            Op::Free => "free",
            Op::Stats => "stats",
            Op::Compute => "compute",
            Op::Ping => "ping",
            Op::CloseSession => "close_session",
            Op::Admin => "admin",
        }
    }
}

/// A validated list of object ids: `count: u32` then `count` × `u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdList<'a> {
    raw: &'a [u8],
}

impl<'a> IdList<'a> {
    /// Number of ids.
    pub fn len(&self) -> usize {
        self.raw.len() / 8
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The ids in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = u64> + 'a {
        self.raw.chunks_exact(8).map(|c| u64_at(c, 0))
    }

    fn encode(ids: &[u64], out: &mut Vec<u8>) {
        out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
    }

    fn decode(c: &mut Reader<'a>, op: &'static str) -> Result<Self, WireError> {
        let n = c.u32().map_err(|_| malformed(op, "missing count"))? as usize;
        let raw = n
            .checked_mul(8)
            .and_then(|b| c.bytes(b).ok())
            .ok_or(malformed(op, "id list shorter than its count"))?;
        Ok(IdList { raw })
    }
}

/// A validated list of `(id, bytes)` items: `count: u32`, then per item `id: u64`,
/// `len: u32`, `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutList<'a> {
    count: usize,
    raw: &'a [u8],
}

impl<'a> PutList<'a> {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Total payload bytes.
    pub fn payload_bytes(&self) -> u64 {
        self.iter().map(|(_, d)| d.len() as u64).sum()
    }

    /// The items in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &'a [u8])> + 'a {
        let mut rest = self.raw;
        (0..self.count).map(move |_| {
            let id = u64_at(rest, 0);
            let len = u32_at(rest, 8) as usize;
            let data = &rest[12..12 + len];
            rest = &rest[12 + len..];
            (id, data)
        })
    }

    fn decode(c: &mut Reader<'a>) -> Result<Self, WireError> {
        const OP: &str = "put_many";
        let count = c.u32().map_err(|_| malformed(OP, "missing count"))? as usize;
        let start = c.rest();
        for _ in 0..count {
            c.u64().map_err(|_| malformed(OP, "truncated item"))?;
            let len = c.u32().map_err(|_| malformed(OP, "truncated item"))?;
            if len > MAX_OBJECT {
                return Err(malformed(OP, "object larger than MAX_OBJECT"));
            }
            c.bytes(len as usize)
                .map_err(|_| malformed(OP, "truncated object"))?;
        }
        let used = start.len() - c.remaining();
        Ok(PutList {
            count,
            raw: &start[..used],
        })
    }
}

/// A validated patch batch: `count: u32`, then per object `id: u64`, `edits: u32`, then per
/// edit `offset: u32`, `len: u32`, `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchList<'a> {
    count: usize,
    raw: &'a [u8],
}

/// The edits of one object in a [`PatchList`]: `(offset, bytes)`.
#[derive(Clone, Debug)]
pub struct EditIter<'a> {
    left: usize,
    rest: &'a [u8],
}

impl<'a> Iterator for EditIter<'a> {
    type Item = (u32, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let off = u32_at(self.rest, 0);
        let len = u32_at(self.rest, 4) as usize;
        let data = &self.rest[8..8 + len];
        self.rest = &self.rest[8 + len..];
        Some((off, data))
    }
}

impl<'a> PatchList<'a> {
    /// Number of objects patched.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The objects and their edits, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, EditIter<'a>)> + 'a {
        let mut rest = self.raw;
        (0..self.count).map(move |_| {
            let id = u64_at(rest, 0);
            let n = u32_at(rest, 8) as usize;
            let mut edits = EditIter {
                left: n,
                rest: &rest[12..],
            };
            let start = edits.rest;
            for _ in edits.by_ref() {}
            let used = start.len() - edits.rest.len();
            rest = &start[used..];
            (
                id,
                EditIter {
                    left: n,
                    rest: &start[..used],
                },
            )
        })
    }

    fn decode(c: &mut Reader<'a>) -> Result<Self, WireError> {
        const OP: &str = "patch";
        let count = c.u32().map_err(|_| malformed(OP, "missing count"))? as usize;
        let start = c.rest();
        for _ in 0..count {
            c.u64().map_err(|_| malformed(OP, "truncated object"))?;
            let n = c.u32().map_err(|_| malformed(OP, "truncated object"))?;
            for _ in 0..n {
                c.u32().map_err(|_| malformed(OP, "truncated edit"))?;
                let len = c.u32().map_err(|_| malformed(OP, "truncated edit"))?;
                c.bytes(len as usize)
                    .map_err(|_| malformed(OP, "truncated edit bytes"))?;
            }
        }
        let used = start.len() - c.remaining();
        Ok(PatchList {
            count,
            raw: &start[..used],
        })
    }
}

/// A request, borrowing its variable parts from the frame body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// Body: `magic: u32` ([`HELLO_MAGIC`]), `version: u16`, `reserved: u16` (0),
    /// `session: u64` (0 = new session), `token_len: u32`, token bytes, then optionally
    /// `resume: u64` (absent = 0).
    Hello {
        /// Protocol version of the client.
        version: u16,
        /// Session key to join, 0 for a new session.
        session: u64,
        /// Shared-secret token (empty when none).
        token: &'a [u8],
        /// The session's resume secret (from the hello answer that created it); required to
        /// join or resume an existing session, ignored for a new one.
        resume: u64,
    },
    /// Body: `id: u64`, then the object bytes (the rest of the body).
    Put {
        /// Object id.
        id: u64,
        /// Object bytes.
        data: &'a [u8],
    },
    /// Body: `id: u64`.
    Get {
        /// Object id.
        id: u64,
    },
    /// Body: an id list (`count: u32`, `count` × `u64`).
    GetMany {
        /// Object ids.
        ids: IdList<'a>,
    },
    /// Body: see [`PutList`].
    PutMany {
        /// The objects.
        items: PutList<'a>,
    },
    /// Body: see [`PatchList`].
    Patch {
        /// The edits.
        items: PatchList<'a>,
    },
    /// Body: an id list.
    Free {
        /// Object ids.
        ids: IdList<'a>,
    },
    /// Body: empty.
    Stats,
    /// Body: `route: u64`, `op: u16`, `reserved: u16` (0), then the argument bytes.
    Compute {
        /// Object id that picked this server.
        route: u64,
        /// Agent operation number.
        op: u16,
        /// Encoded arguments.
        args: &'a [u8],
    },
    /// Body: empty.
    Ping,
    /// Body: empty.
    CloseSession,
    /// Body: `action: u16` ([`AdminAction`]), `reserved: u16` (0), `bytes: u64`,
    /// `deadline_ms: u64`, `token_len: u32`, token bytes.
    Admin {
        /// What to do.
        action: AdminAction,
        /// Bytes to shrink or grow by, or the capacity to set (ignored by status).
        bytes: u64,
        /// How long clients get to move data away before a shrink gives up (milliseconds).
        deadline_ms: u64,
        /// The server's admin token.
        token: &'a [u8],
    },
}

fn malformed(op: &'static str, what: &'static str) -> WireError {
    WireError::Malformed { op, what }
}

impl<'a> Request<'a> {
    /// The operation of this request.
    pub fn op(&self) -> Op {
        match self {
            Request::Hello { .. } => Op::Hello,
            Request::Put { .. } => Op::Put,
            Request::Get { .. } => Op::Get,
            Request::GetMany { .. } => Op::GetMany,
            Request::PutMany { .. } => Op::PutMany,
            Request::Patch { .. } => Op::Patch,
            Request::Free { .. } => Op::Free,
            Request::Stats => Op::Stats,
            Request::Compute { .. } => Op::Compute,
            Request::Ping => Op::Ping,
            Request::CloseSession => Op::CloseSession,
            Request::Admin { .. } => Op::Admin,
        }
    }

    /// Whether running this request again (a client resending it after its connection broke)
    /// is harmless: reads, stores of whole objects with given bytes, and frees. Servers
    /// remember the answers of the other requests (patches, agent operations) for retries.
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self,
            Request::Get { .. }
                | Request::GetMany { .. }
                | Request::Stats
                | Request::Ping
                | Request::Put { .. }
                | Request::PutMany { .. }
                | Request::Free { .. }
        )
    }

    /// Decodes the body of a request frame with operation code `op`.
    ///
    /// # Errors
    /// [`WireError::UnknownOp`] or [`WireError::Malformed`]; never panics.
    pub fn decode(op: u16, body: &'a [u8]) -> Result<Request<'a>, WireError> {
        let op = Op::from_code(op)?;
        let name = op.name();
        let mut c = Reader::new(body);
        let short = || malformed(name, "body too short");
        let req = match op {
            Op::Hello => {
                if c.u32().map_err(|_| short())? != HELLO_MAGIC {
                    return Err(malformed(name, "bad magic"));
                }
                let version = c.u16().map_err(|_| short())?;
                if c.u16().map_err(|_| short())? != 0 {
                    return Err(malformed(name, "reserved field is not zero"));
                }
                let session = c.u64().map_err(|_| short())?;
                let n = c.u32().map_err(|_| short())?;
                let token = c.bytes(n as usize).map_err(|_| short())?;
                let resume = if c.is_empty() {
                    0
                } else {
                    c.u64().map_err(|_| short())?
                };
                Request::Hello {
                    version,
                    session,
                    token,
                    resume,
                }
            }
            Op::Put => {
                let id = c.u64().map_err(|_| short())?;
                let data = c.take_rest();
                if data.len() > MAX_OBJECT as usize {
                    return Err(malformed(name, "object larger than MAX_OBJECT"));
                }
                Request::Put { id, data }
            }
            Op::Get => Request::Get {
                id: c.u64().map_err(|_| short())?,
            },
            Op::GetMany => Request::GetMany {
                ids: IdList::decode(&mut c, name)?,
            },
            Op::PutMany => Request::PutMany {
                items: PutList::decode(&mut c)?,
            },
            Op::Patch => Request::Patch {
                items: PatchList::decode(&mut c)?,
            },
            Op::Free => Request::Free {
                ids: IdList::decode(&mut c, name)?,
            },
            Op::Stats => Request::Stats,
            Op::Ping => Request::Ping,
            Op::CloseSession => Request::CloseSession,
            Op::Admin => {
                let code = c.u16().map_err(|_| short())?;
                let action =
                    AdminAction::from_code(code).ok_or(malformed(name, "unknown admin action"))?;
                if c.u16().map_err(|_| short())? != 0 {
                    return Err(malformed(name, "reserved field is not zero"));
                }
                let bytes = c.u64().map_err(|_| short())?;
                let deadline_ms = c.u64().map_err(|_| short())?;
                let n = c.u32().map_err(|_| short())?;
                let token = c.bytes(n as usize).map_err(|_| short())?;
                Request::Admin {
                    action,
                    bytes,
                    deadline_ms,
                    token,
                }
            }
            Op::Compute => {
                let route = c.u64().map_err(|_| short())?;
                let op = c.u16().map_err(|_| short())?;
                if c.u16().map_err(|_| short())? != 0 {
                    return Err(malformed(name, "reserved field is not zero"));
                }
                Request::Compute {
                    route,
                    op,
                    args: c.take_rest(),
                }
            }
        };
        if !c.is_empty() {
            return Err(malformed(name, "trailing bytes"));
        }
        Ok(req)
    }

    /// Appends the body of this request to `out` (no header).
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        match *self {
            Request::Hello {
                version,
                session,
                token,
                resume,
            } => {
                out.extend_from_slice(&HELLO_MAGIC.to_le_bytes());
                out.extend_from_slice(&version.to_le_bytes());
                out.extend_from_slice(&0u16.to_le_bytes());
                out.extend_from_slice(&session.to_le_bytes());
                out.extend_from_slice(&(token.len() as u32).to_le_bytes());
                out.extend_from_slice(token);
                out.extend_from_slice(&resume.to_le_bytes());
            }
            Request::Put { id, data } => {
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(data);
            }
            Request::Get { id } => out.extend_from_slice(&id.to_le_bytes()),
            Request::GetMany { ids } | Request::Free { ids } => {
                out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
                out.extend_from_slice(ids.raw);
            }
            Request::PutMany { items } => {
                out.extend_from_slice(&(items.count as u32).to_le_bytes());
                out.extend_from_slice(items.raw);
            }
            Request::Patch { items } => {
                out.extend_from_slice(&(items.count as u32).to_le_bytes());
                out.extend_from_slice(items.raw);
            }
            Request::Stats | Request::Ping | Request::CloseSession => {}
            Request::Admin {
                action,
                bytes,
                deadline_ms,
                token,
            } => {
                out.extend_from_slice(&(action as u16).to_le_bytes());
                out.extend_from_slice(&0u16.to_le_bytes());
                out.extend_from_slice(&bytes.to_le_bytes());
                out.extend_from_slice(&deadline_ms.to_le_bytes());
                out.extend_from_slice(&(token.len() as u32).to_le_bytes());
                out.extend_from_slice(token);
            }
            Request::Compute { route, op, args } => {
                out.extend_from_slice(&route.to_le_bytes());
                out.extend_from_slice(&op.to_le_bytes());
                out.extend_from_slice(&0u16.to_le_bytes());
                out.extend_from_slice(args);
            }
        }
    }
}

/// Appends a complete request frame with request id `req_id` to `out`.
pub fn encode_request(out: &mut Vec<u8>, req_id: u64, req: &Request<'_>) {
    let start = begin_frame(out, req.op() as u16, 0, req_id);
    req.encode_body(out);
    finish_frame(out, start);
}

/// Body encoders for batch requests, used by clients that build frames in place.
pub mod body {
    use super::IdList;

    /// Appends an id-list body (get_many, free).
    pub fn ids(out: &mut Vec<u8>, ids: &[u64]) {
        IdList::encode(ids, out);
    }

    /// Appends a put_many body.
    pub fn put_many(out: &mut Vec<u8>, items: &[(u64, &[u8])]) {
        out.extend_from_slice(&(items.len() as u32).to_le_bytes());
        for (id, data) in items {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
    }

    /// One object's edits: its id and `(offset, bytes)` pairs.
    pub type PatchItem<'a> = (u64, &'a [(u32, &'a [u8])]);

    /// Appends a patch body: per object its id and `(offset, bytes)` edits.
    pub fn patch(out: &mut Vec<u8>, items: &[PatchItem<'_>]) {
        out.extend_from_slice(&(items.len() as u32).to_le_bytes());
        for (id, edits) in items {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&(edits.len() as u32).to_le_bytes());
            for (off, bytes) in edits.iter() {
                out.extend_from_slice(&off.to_le_bytes());
                out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                out.extend_from_slice(bytes);
            }
        }
    }
}
