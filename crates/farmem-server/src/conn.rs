//! One client connection's protocol: the hello, then requests answered into the connection's
//! write buffer. The event loop ([`crate::evloop`]) owns the socket, the buffers and the timers;
//! this module decides what a frame means and when a connection must end.
//!
//! Before its hello is through a connection may send only a small frame (`max_hello_frame`)
//! and must finish the handshake by one deadline; after it, it is closed when idle for
//! `idle_timeout` or when it does not read its answers for `write_timeout`.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use farmem_proto::{
    AdminAction, ErrorCode, Header, HelloInfo, Op, Request, Response, VERSION, encode_error,
};
use farmem_store::{LogError, Session};

use crate::Limits;
use crate::server::Shared;

/// Keepalive probes after the idle time: this far apart, this many.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 6;

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum Close {
    /// The peer closed it.
    Eof,
    /// Socket error.
    Io(io::Error),
    /// The peer broke the protocol or was refused; the reason is in its write buffer.
    Refused(String),
    /// The server is shutting down.
    Shutdown,
    /// The client closed its session; the answer is in the write buffer.
    SessionClosed,
    /// The hello was not through by its deadline; the reason is in its write buffer.
    HelloTimeout,
    /// An authenticated client sent nothing for the idle timeout.
    Idle,
    /// The client did not read its answers for the write timeout.
    NotReading,
    /// Serving the connection panicked (a bug); the connection alone is dropped.
    Panicked,
    /// The log of a durable server could not be written: the answers not yet sent are
    /// dropped (their changes are not durable) and the connection ends.
    NotDurable(LogError),
}

impl Close {
    /// Whether the connection has last words to send (already in its write buffer, or the
    /// `ShuttingDown` notice) before it is closed.
    pub(crate) fn has_last_words(&self) -> bool {
        matches!(
            self,
            Close::Refused(_) | Close::Shutdown | Close::SessionClosed | Close::HelloTimeout
        )
    }

    /// Logs why the connection with `peer` ended.
    pub(crate) fn log(&self, peer: SocketAddr, limits: &Limits) {
        match self {
            Close::Eof => tracing::debug!(%peer, "client closed the connection"),
            Close::Io(e) => tracing::debug!(%peer, error = %e, "connection ended"),
            Close::Shutdown => tracing::debug!(%peer, "closed at server shutdown"),
            Close::SessionClosed => tracing::debug!(%peer, "session closed by the client"),
            Close::Refused(reason) => tracing::warn!(%peer, %reason, "closing connection"),
            Close::HelloTimeout => {
                tracing::warn!(%peer, timeout = ?limits.hello_timeout, "hello not completed in time");
            }
            Close::Idle => {
                tracing::info!(%peer, timeout = ?limits.idle_timeout, "closing an idle connection");
            }
            Close::NotReading => {
                tracing::warn!(%peer, timeout = ?limits.write_timeout, "client does not read its answers");
            }
            Close::Panicked => tracing::error!(%peer, "a bug ended this connection"),
            Close::NotDurable(e) => {
                tracing::error!(%peer, error = %e, "closing: the answers' changes could not be logged");
            }
        }
    }
}

/// What a connection holds, released however it ends (a panic included): its session and its
/// slot in the server's connection count.
pub(crate) struct ConnGuard {
    pub(crate) shared: Arc<Shared>,
    pub(crate) session: Option<Arc<Session>>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            self.shared.leave(s);
        }
        self.shared.release();
    }
}

/// Sets the TCP keepalive of an accepted connection.
pub(crate) fn configure(stream: &TcpStream, limits: &Limits) -> io::Result<()> {
    if !limits.keepalive.is_zero() {
        let ka = socket2::TcpKeepalive::new()
            .with_time(limits.keepalive)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_PROBES);
        socket2::SockRef::from(stream).set_tcp_keepalive(&ka)?;
    }
    Ok(())
}

/// What became of a request frame.
pub(crate) enum Handled {
    /// Answered into the write buffer.
    Answered,
    /// A long operation (agent work): the frame runs on the worker pool, its answer comes later.
    Offload,
    /// A server-to-server copy: as [`Handled::Offload`], on the copy pool.
    Copy,
}
/// Writes the hello-deadline refusal into `wbuf`.
pub(crate) fn hello_timeout(wbuf: &mut Vec<u8>, limits: &Limits) -> Close {
    let msg = format!("hello not completed within {:?}", limits.hello_timeout);
    encode_error(wbuf, Op::Hello, 0, ErrorCode::Refused, [0; 3], &msg);
    Close::HelloTimeout
}

/// The request id of a (possibly broken) frame, for the error answer.
pub(crate) fn frame_id(b: &[u8]) -> u64 {
    b.get(12..20)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Constant-time comparison (time depends only on the lengths).
pub(crate) fn tokens_equal(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

pub(crate) fn refuse(
    wbuf: &mut Vec<u8>,
    op: Op,
    req_id: u64,
    code: ErrorCode,
    d: u64,
    msg: &str,
) -> Close {
    encode_error(wbuf, op, req_id, code, [d, 0, 0], msg);
    Close::Refused(msg.to_string())
}

/// Answers a hello. `may_block` says whether the caller may wait for the disk: a new session
/// on a durable server is logged and synced before its hello is answered, so on an I/O thread
/// (`false`) that hello is checked and then offloaded.
fn hello(
    shared: &Shared,
    session: &mut Option<Arc<Session>>,
    req_id: u64,
    req: &Request<'_>,
    wbuf: &mut Vec<u8>,
    may_block: bool,
) -> Result<Handled, Close> {
    let op = Op::Hello;
    let Request::Hello {
        version,
        session: key,
        token,
        resume,
    } = *req
    else {
        return Err(refuse(
            wbuf,
            op,
            req_id,
            ErrorCode::Malformed,
            0,
            "not a hello",
        ));
    };
    if session.is_some() {
        return Err(refuse(
            wbuf,
            op,
            req_id,
            ErrorCode::Malformed,
            0,
            "second hello",
        ));
    }
    if let Some(expected) = &shared.config.token
        && !tokens_equal(expected, token)
    {
        let msg = "authentication refused";
        return Err(refuse(wbuf, op, req_id, ErrorCode::AuthRefused, 0, msg));
    }
    if version != VERSION {
        let msg = format!("server speaks protocol version {VERSION}, client {version}");
        return Err(refuse(
            wbuf,
            op,
            req_id,
            ErrorCode::VersionMismatch,
            VERSION.into(),
            &msg,
        ));
    }
    if key == 0 && !may_block && shared.is_durable() {
        return Ok(Handled::Offload);
    }
    let (s, secret) = if key == 0 {
        match shared.new_session() {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("cannot open a session: {e}");
                return Err(refuse(wbuf, op, req_id, ErrorCode::StorageFailed, 0, &msg));
            }
        }
    } else {
        match shared.join(key, resume) {
            Ok(s) => s,
            Err(crate::server::JoinRefused) => {
                let msg = "unknown or expired session, or wrong resume secret";
                return Err(refuse(
                    wbuf,
                    op,
                    req_id,
                    ErrorCode::SessionRefused,
                    key,
                    msg,
                ));
            }
        }
    };
    let limits = &shared.config.limits;
    Response::Hello(HelloInfo {
        version: VERSION,
        session: s.key,
        max_frame: limits.max_frame,
        max_inflight: limits.max_inflight,
        resume: secret,
    })
    .encode(wbuf, op, req_id);
    *session = Some(s);
    Ok(Handled::Answered)
}

/// Answers one request frame into `wbuf`, or says it must run on the worker pool
/// ([`Handled::Offload`]: agent operations but short hash-table lookups, and shrinks, checked
/// here like every request; on a durable server also session opens and closes, which wait for
/// the disk).
pub(crate) fn handle(
    shared: &Shared,
    session: &mut Option<Arc<Session>>,
    h: Header,
    body: &[u8],
    wbuf: &mut Vec<u8>,
) -> Result<Handled, Close> {
    let rid = h.req_id;
    if h.flags != 0 {
        let op = Op::from_code(h.op).unwrap_or(Op::Hello);
        let msg = "request frames carry no flags";
        return Err(refuse(wbuf, op, rid, ErrorCode::Malformed, 0, msg));
    }
    let req = match Request::decode(h.op, body) {
        Ok(r) => r,
        Err(e) => {
            let op = Op::from_code(h.op).unwrap_or(Op::Hello);
            let msg = format!("malformed request: {e}");
            return Err(refuse(wbuf, op, rid, ErrorCode::Malformed, 0, &msg));
        }
    };
    let op = req.op();
    if rid == 0 && !matches!(req, Request::Hello { .. } | Request::Admin { .. }) {
        let msg = "request id 0 is reserved (only a hello or an admin request may use it)";
        return Err(refuse(wbuf, op, rid, ErrorCode::Malformed, 0, msg));
    }
    if let Request::Hello { .. } = req {
        return hello(shared, session, rid, &req, wbuf, false);
    }
    if let Request::Admin {
        action,
        bytes,
        deadline_ms,
        token,
    } = req
    {
        if matches!(action, AdminAction::Shrink | AdminAction::Set) {
            return Ok(Handled::Offload); // waits for clients to move data away
        }
        return crate::admin::serve(shared, rid, action, bytes, deadline_ms, token, wbuf)
            .map(|()| Handled::Answered);
    }
    let Some(s) = session.as_deref() else {
        return Err(refuse(
            wbuf,
            op,
            rid,
            ErrorCode::HelloRequired,
            0,
            "hello required first",
        ));
    };
    if let Request::Stats = req {
        Response::Stats(crate::session_view::stats(shared, s)).encode(wbuf, op, rid);
    } else if let Request::CloseSession = req {
        if shared.is_durable() {
            return Ok(Handled::Offload); // the session's end is synced to the log
        }
        shared.close(s.key);
        Response::Done.encode(wbuf, op, rid);
        return Err(Close::SessionClosed);
    } else if let Request::Compute { op, .. } = req {
        if op == farmem_proto::agent::op::OBJ_PUSH {
            return Ok(Handled::Copy);
        }
        // Short hash-table lookups are answered here (they wait for nothing); the rest run on
        // the worker pool.
        if crate::metrics::execute_inline(shared, s, &req, rid, body.len(), wbuf) {
            return Ok(Handled::Answered);
        }
        return Ok(Handled::Offload);
    } else {
        crate::metrics::execute(shared, s, &req, rid, body.len(), wbuf, &|| false);
    }
    Ok(Handled::Answered)
}

/// What an offloaded request (see [`Handled::Offload`]) produced.
pub(crate) struct Offloaded {
    /// Its answer (committed: on a durable server its changes are on disk).
    pub(crate) out: Vec<u8>,
    /// The session the hello of this job opened, for its connection to hold.
    pub(crate) opened: Option<Arc<Session>>,
    /// `Err`: the connection must end after the answer.
    pub(crate) end: Result<(), Close>,
}

/// Runs an offloaded request frame for a connection holding `session`, then commits the
/// session's changes (on a durable server; a worker may wait for the disk). An agent operation
/// stops early when `gone` says its client hung up.
pub(crate) fn run_offloaded(
    shared: &Shared,
    session: Option<Arc<Session>>,
    frame: &[u8],
    gone: &(dyn Fn() -> bool + Sync),
) -> Offloaded {
    let mut out = Vec::new();
    let mut session = session;
    let mut opened = None;
    let decoded = farmem_proto::decode_frame(frame, u32::MAX)
        .ok()
        .flatten()
        .and_then(|(f, _)| {
            let req = Request::decode(f.header.op, f.body).ok()?;
            Some((f.header.req_id, f.body.len(), req))
        });
    let mut end = match decoded {
        Some((
            rid,
            _,
            Request::Admin {
                action,
                bytes,
                deadline_ms,
                token,
            },
        )) => crate::admin::serve(shared, rid, action, bytes, deadline_ms, token, &mut out),
        Some((rid, _, req @ Request::Hello { .. })) => {
            let r = hello(shared, &mut session, rid, &req, &mut out, true).map(drop);
            opened.clone_from(&session);
            r
        }
        Some((rid, body_len, req)) => match session.as_deref() {
            Some(s) if matches!(req, Request::CloseSession) => {
                shared.close(s.key);
                Response::Done.encode(&mut out, Op::CloseSession, rid);
                Err(Close::SessionClosed)
            }
            Some(s) => {
                crate::metrics::execute(shared, s, &req, rid, body_len, &mut out, gone);
                Ok(())
            }
            None => Err(Close::Refused(
                "offloaded a request without a session".into(),
            )),
        },
        None => Err(Close::Refused(
            "offloaded a frame that does not decode".into(),
        )),
    };
    if let Some(s) = session.as_deref()
        && let Err(e) = s.commit()
    {
        out.clear();
        end = Err(Close::NotDurable(e));
    }
    Offloaded { out, opened, end }
}

#[cfg(test)]
mod tests {
    use super::tokens_equal;

    #[test]
    fn token_comparison() {
        assert!(tokens_equal(b"secret", b"secret"));
        assert!(!tokens_equal(b"secret", b"secreT"));
        assert!(!tokens_equal(b"secret", b"secret1"));
        assert!(!tokens_equal(b"", b"x"));
        assert!(tokens_equal(b"", b""));
    }
}
