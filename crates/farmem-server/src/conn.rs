//! One client connection: read a batch of request frames, answer them all, write the answers
//! in one go, repeat. Blocking I/O on a dedicated thread (lowest latency on small machines).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use farmem_proto::{
    ErrorCode, HEADER_LEN, Header, HelloInfo, Op, Request, Response, ServerStats, VERSION,
    decode_frame, encode_error,
};
use farmem_store::{Session, execute_request};

use crate::server::Shared;

const READ_BUFFER: usize = 64 << 10;
const SHRINK_ABOVE: usize = 4 << 20;

/// Why a connection ended.
pub(crate) enum Close {
    /// The peer closed it.
    Eof,
    /// Socket error.
    Io(io::Error),
    /// The peer broke the protocol or was refused; the reason was sent to it.
    Refused(String),
    /// The server is shutting down.
    Shutdown,
    /// The client closed its session; the answer is in the write buffer.
    SessionClosed,
}

impl From<io::Error> for Close {
    fn from(e: io::Error) -> Self {
        Close::Io(e)
    }
}

/// Serves `stream` until the client leaves, misbehaves, or the server shuts down.
pub(crate) fn serve(mut stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let mut session = None;
    let mut rbuf = vec![0u8; READ_BUFFER];
    let mut wbuf = Vec::with_capacity(READ_BUFFER);
    let outcome = run(&mut stream, &shared, &mut session, &mut rbuf, &mut wbuf);
    match outcome {
        Close::Eof => tracing::debug!(%peer, "client closed the connection"),
        Close::Io(e) => tracing::debug!(%peer, error = %e, "connection ended"),
        Close::Shutdown => tracing::debug!(%peer, "closed at server shutdown"),
        Close::SessionClosed => {
            tracing::debug!(%peer, "session closed by the client");
            let _ = stream.write_all(&wbuf);
        }
        Close::Refused(reason) => {
            tracing::warn!(%peer, %reason, "closing connection");
            let _ = stream.write_all(&wbuf);
        }
    }
    if let Some(s) = session {
        shared.leave(s);
    }
}

fn run(
    stream: &mut TcpStream,
    shared: &Shared,
    session: &mut Option<Arc<Session>>,
    rbuf: &mut Vec<u8>,
    wbuf: &mut Vec<u8>,
) -> Close {
    let limits = &shared.config.limits;
    let (mut start, mut end) = (0usize, 0usize);
    let mut greeted = false;
    if let Err(e) = stream.set_read_timeout(Some(limits.hello_timeout)) {
        return e.into();
    }
    loop {
        // Answer every complete frame in the buffer.
        loop {
            match decode_frame(&rbuf[start..end], limits.max_frame) {
                Ok(Some((frame, used))) => {
                    start += used;
                    if let Err(c) = handle(shared, session, frame.header, frame.body, wbuf) {
                        return c;
                    }
                    if wbuf.len() >= limits.max_write_buffer {
                        if let Err(e) = stream.write_all(wbuf) {
                            return e.into();
                        }
                        wbuf.clear();
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let id = frame_id(&rbuf[start..end]);
                    let msg = format!("malformed frame: {e}");
                    encode_error(wbuf, Op::Hello, id, ErrorCode::Malformed, [0; 3], &msg);
                    return Close::Refused(msg);
                }
            }
        }
        if !wbuf.is_empty() {
            if let Err(e) = stream.write_all(wbuf) {
                return e.into();
            }
            wbuf.clear();
            if wbuf.capacity() > SHRINK_ABOVE {
                wbuf.shrink_to(READ_BUFFER);
            }
        }
        if shared.is_shutting_down() {
            return Close::Shutdown;
        }
        // Keep the partial frame at the front; make room for all of it.
        if start == end {
            start = 0;
            end = 0;
            if rbuf.len() > SHRINK_ABOVE {
                rbuf.truncate(READ_BUFFER);
                rbuf.shrink_to_fit();
            }
        } else if start > 0 {
            rbuf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        if end >= HEADER_LEN
            && let Ok(h) = Header::parse(&rbuf[..end], limits.max_frame)
        {
            let need = HEADER_LEN + h.body_len as usize;
            if need > rbuf.len() {
                rbuf.resize(need, 0);
            }
        }
        if !greeted && session.is_some() {
            greeted = true;
            if let Err(e) = stream.set_read_timeout(None) {
                return e.into();
            }
        }
        match stream.read(&mut rbuf[end..]) {
            Ok(0) => return Close::Eof,
            Ok(n) => end += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return e.into(),
        }
    }
}

/// The request id of a (possibly broken) frame, for the error answer.
fn frame_id(b: &[u8]) -> u64 {
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

fn hello(
    shared: &Shared,
    session: &mut Option<Arc<Session>>,
    req_id: u64,
    req: &Request<'_>,
    wbuf: &mut Vec<u8>,
) -> Result<(), Close> {
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
    let (s, secret) = if key == 0 {
        shared.new_session()
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
    Ok(())
}

fn handle(
    shared: &Shared,
    session: &mut Option<Arc<Session>>,
    h: Header,
    body: &[u8],
    wbuf: &mut Vec<u8>,
) -> Result<(), Close> {
    let rid = h.req_id;
    let req = match Request::decode(h.op, body) {
        Ok(r) => r,
        Err(e) => {
            let op = Op::from_code(h.op).unwrap_or(Op::Hello);
            let msg = format!("malformed request: {e}");
            return Err(refuse(wbuf, op, rid, ErrorCode::Malformed, 0, &msg));
        }
    };
    let op = req.op();
    if let Request::Hello { .. } = req {
        return hello(shared, session, rid, &req, wbuf);
    }
    if let Request::Admin {
        action,
        bytes,
        deadline_ms,
        token,
    } = req
    {
        return crate::admin::serve(shared, rid, action, bytes, deadline_ms, token, wbuf);
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
        let mut st: ServerStats = shared.stats();
        st.session_used_bytes = s.ns.used_bytes();
        st.session_objects = s.ns.len();
        (st.reclaim_bytes, st.reclaim_deadline_ms) =
            shared.capacity.reclaim_for(st.session_used_bytes);
        Response::Stats(st).encode(wbuf, op, rid);
    } else if let Request::CloseSession = req {
        shared.close(s.key);
        Response::Done.encode(wbuf, op, rid);
        return Err(Close::SessionClosed);
    } else {
        execute_request(s, &req, rid, wbuf);
    }
    Ok(())
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
