//! One client connection: read a batch of request frames, answer them all, write the answers
//! in one go, repeat. Blocking I/O on a dedicated thread (lowest latency on small machines).
//!
//! Before its hello is through a connection holds only a small buffer (`max_hello_frame`) and
//! must finish the handshake by one deadline; after it, it is closed when idle for
//! `idle_timeout` or when it does not read its answers for `write_timeout`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use farmem_proto::{
    ErrorCode, HEADER_LEN, Header, HelloInfo, Op, Request, Response, VERSION, decode_frame,
    encode_error,
};
use farmem_store::Session;

use crate::Limits;
use crate::server::Shared;

const READ_BUFFER: usize = 64 << 10;
const SHRINK_ABOVE: usize = 4 << 20;
/// Keepalive probes after the idle time: this far apart, this many.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 6;

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
    /// The hello was not through by its deadline; the reason was sent to it.
    HelloTimeout,
    /// An authenticated client sent nothing for the idle timeout.
    Idle,
    /// The client did not read its answers for the write timeout.
    NotReading,
}

impl From<io::Error> for Close {
    fn from(e: io::Error) -> Self {
        if is_timeout(&e) {
            Close::NotReading // reads map their timeouts themselves
        } else {
            Close::Io(e)
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// What a connection holds, released however its thread ends (a panic included): its session
/// and its slot in the server's connection table, whose copy of the socket is closed with it.
pub(crate) struct ConnGuard {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: u64,
    pub(crate) session: Option<Arc<Session>>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            self.shared.leave(s);
        }
        self.shared.release(self.id);
    }
}

/// Sets the write timeout and TCP keepalive of an accepted connection.
fn configure(stream: &TcpStream, limits: &Limits) -> io::Result<()> {
    if !limits.write_timeout.is_zero() {
        stream.set_write_timeout(Some(limits.write_timeout))?;
    }
    if !limits.keepalive.is_zero() {
        let ka = socket2::TcpKeepalive::new()
            .with_time(limits.keepalive)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_PROBES);
        socket2::SockRef::from(stream).set_tcp_keepalive(&ka)?;
    }
    Ok(())
}

/// Serves `stream` until the client leaves, misbehaves, times out or the server shuts down.
pub(crate) fn serve(mut stream: TcpStream, peer: SocketAddr, mut guard: ConnGuard) {
    let shared = guard.shared.clone();
    let limits = &shared.config.limits;
    let mut rbuf = vec![0u8; HEADER_LEN + limits.max_hello_frame as usize];
    let mut wbuf = Vec::new();
    let outcome = match configure(&stream, limits) {
        Ok(()) => run(
            &mut stream,
            &shared,
            &mut guard.session,
            &mut rbuf,
            &mut wbuf,
        ),
        Err(e) => Close::Io(e),
    };
    match outcome {
        Close::Eof => tracing::debug!(%peer, "client closed the connection"),
        Close::Io(e) => tracing::debug!(%peer, error = %e, "connection ended"),
        Close::Shutdown => {
            tracing::debug!(%peer, "closed at server shutdown");
            wbuf.clear();
            let msg = "the server is shutting down";
            encode_error(
                &mut wbuf,
                Op::Hello,
                0,
                ErrorCode::ShuttingDown,
                [0; 3],
                msg,
            );
            let _ = stream.write_all(&wbuf);
        }
        Close::SessionClosed => {
            tracing::debug!(%peer, "session closed by the client");
            let _ = stream.write_all(&wbuf);
        }
        Close::Refused(reason) => {
            tracing::warn!(%peer, %reason, "closing connection");
            let _ = stream.write_all(&wbuf);
        }
        Close::HelloTimeout => {
            tracing::warn!(%peer, timeout = ?limits.hello_timeout, "hello not completed in time");
            let _ = stream.write_all(&wbuf);
        }
        Close::Idle => {
            tracing::info!(%peer, timeout = ?limits.idle_timeout, "closing an idle connection");
        }
        Close::NotReading => {
            tracing::warn!(%peer, timeout = ?limits.write_timeout, "client does not read its answers");
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn run(
    stream: &mut TcpStream,
    shared: &Shared,
    session: &mut Option<Arc<Session>>,
    rbuf: &mut Vec<u8>,
    wbuf: &mut Vec<u8>,
) -> Close {
    let limits = &shared.config.limits;
    let hello_deadline = Instant::now() + limits.hello_timeout;
    let (mut start, mut end) = (0usize, 0usize);
    let mut greeted = false;
    loop {
        // Before the hello only a small frame is accepted: the buffer stays small.
        let mut max_frame = if session.is_some() {
            limits.max_frame
        } else {
            limits.max_hello_frame
        };
        // Answer every complete frame in the buffer.
        loop {
            match decode_frame(&rbuf[start..end], max_frame) {
                Ok(Some((frame, used))) => {
                    start += used;
                    let gone = || peer_gone(stream);
                    let h = frame.header;
                    if let Err(c) = handle(shared, session, h, frame.body, wbuf, &gone) {
                        return c;
                    }
                    if session.is_some() {
                        max_frame = limits.max_frame;
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
        if !greeted && session.is_some() {
            greeted = true;
            if rbuf.len() < READ_BUFFER {
                rbuf.resize(READ_BUFFER, 0);
            }
            let idle = Some(limits.idle_timeout).filter(|d| !d.is_zero());
            if let Err(e) = stream.set_read_timeout(idle) {
                return Close::Io(e);
            }
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
            && let Ok(h) = Header::parse(&rbuf[..end], max_frame)
        {
            let need = HEADER_LEN + h.body_len as usize;
            if need > rbuf.len() {
                rbuf.resize(need, 0);
            }
        }
        if !greeted {
            // One deadline for the whole hello, however the bytes trickle in.
            let left = hello_deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return hello_timeout(wbuf, limits);
            }
            if let Err(e) = stream.set_read_timeout(Some(left)) {
                return Close::Io(e);
            }
        }
        match stream.read(&mut rbuf[end..]) {
            Ok(0) if shared.is_shutting_down() => return Close::Shutdown,
            Ok(0) => return Close::Eof,
            Ok(n) => end += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) && !greeted => return hello_timeout(wbuf, limits),
            Err(e) if is_timeout(&e) => return Close::Idle,
            Err(e) => return Close::Io(e),
        }
    }
}

fn hello_timeout(wbuf: &mut Vec<u8>, limits: &Limits) -> Close {
    let msg = format!("hello not completed within {:?}", limits.hello_timeout);
    encode_error(wbuf, Op::Hello, 0, ErrorCode::Refused, [0; 3], &msg);
    Close::HelloTimeout
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

/// Whether the peer of `stream` has hung up (or the connection broke), asked while an agent
/// operation runs on this thread. It peeks without blocking: a peer that left more requests
/// unread behind the running one is noticed only when those are read.
fn peer_gone(stream: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
    let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT;
    match socket2::SockRef::from(stream).recv_with_flags(&mut byte, flags) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ),
    }
}

fn handle(
    shared: &Shared,
    session: &mut Option<Arc<Session>>,
    h: Header,
    body: &[u8],
    wbuf: &mut Vec<u8>,
    gone: &(dyn Fn() -> bool + Sync),
) -> Result<(), Close> {
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
        Response::Stats(crate::session_view::stats(shared, s)).encode(wbuf, op, rid);
    } else if let Request::CloseSession = req {
        shared.close(s.key);
        Response::Done.encode(wbuf, op, rid);
        return Err(Close::SessionClosed);
    } else {
        crate::metrics::execute(shared, s, &req, rid, body.len(), wbuf, gone);
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
