//! Admin requests: the server side (authenticated by the admin token) and the client that
//! `farmem-server ctl` uses.
//!
//! An admin request may be the first request on a connection (no hello, no session). It must
//! carry the server's admin token (`--admin-token-file`), separate from the client token: every
//! client program holds the client token, while shrinking a server (pushing everyone's data
//! elsewhere) is an operator's decision. A server without an admin token refuses every admin
//! request. A refused admin request closes the connection.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use farmem_proto::{
    AdminAction, AdminStatus, ErrorCode, Op, Request, Response, ServerStats, WireError,
    decode_frame, encode_error, encode_request,
};

use crate::capacity::ShrinkOutcome;
use crate::conn::{Close, refuse, tokens_equal};
use crate::server::Shared;

/// The longest deadline an admin request may give (longer ones are cut to this).
const MAX_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// Answers an admin request (blocking until a shrink completes or gives up).
pub(crate) fn serve(
    shared: &Shared,
    rid: u64,
    action: AdminAction,
    bytes: u64,
    deadline_ms: u64,
    token: &[u8],
    wbuf: &mut Vec<u8>,
) -> Result<(), Close> {
    let op = Op::Admin;
    let Some(expected) = &shared.config.admin_token else {
        let msg = "admin requests are disabled on this server (no --admin-token-file)";
        return Err(refuse(wbuf, op, rid, ErrorCode::AdminRefused, 0, msg));
    };
    if !tokens_equal(expected, token) {
        let msg = "admin token refused";
        return Err(refuse(wbuf, op, rid, ErrorCode::AdminRefused, 0, msg));
    }
    let within = Duration::from_millis(deadline_ms).min(MAX_DEADLINE);
    let stopping = || shared.is_shutting_down();
    let cap = &shared.capacity;
    if action == AdminAction::Stats {
        Response::Stats(shared.stats()).encode(wbuf, Op::Stats, rid);
        return Ok(());
    }
    let outcome = match action {
        AdminAction::Status | AdminAction::Stats => Ok(0),
        AdminAction::Grow => Ok(cap.grow(bytes)),
        AdminAction::Shrink => cap.shrink(bytes, within, &stopping),
        AdminAction::Set => cap.set(bytes, within, &stopping),
    };
    match outcome {
        Ok(_) => {
            tracing::info!(?action, bytes, status = ?cap.status(), "admin request done");
            Response::Admin(cap.status()).encode(wbuf, op, rid);
            Ok(())
        }
        Err(ShrinkOutcome::Incomplete {
            held,
            capacity,
            asked,
        }) => {
            let msg = format!(
                "shrink incomplete: {held} bytes still held above the {asked} bytes asked for \
                 (clients could not move them); the capacity stays at {capacity} bytes"
            );
            encode_error(
                wbuf,
                op,
                rid,
                ErrorCode::ShrinkIncomplete,
                [held, capacity, asked],
                &msg,
            );
            Ok(())
        }
        Err(ShrinkOutcome::ShuttingDown) => {
            encode_error(
                wbuf,
                op,
                rid,
                ErrorCode::ShuttingDown,
                [0; 3],
                "shutting down",
            );
            Err(Close::Shutdown)
        }
    }
}

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The server could not be reached.
    #[error("cannot reach {addr}")]
    Connect {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The connection failed mid-request.
    #[error("admin connection failed")]
    Io(#[from] std::io::Error),
    /// The server refused the admin token (or has none).
    #[error("admin request refused: {message}")]
    Refused {
        /// The server's reason.
        message: String,
    },
    /// A shrink did not reach its capacity by the deadline: clients could not move enough away.
    /// Nothing was dropped; the capacity is now what is used.
    #[error(
        "shrink incomplete: {held} bytes still held above the {asked} bytes asked for; \
         capacity is now {capacity} bytes"
    )]
    Incomplete {
        /// Bytes still held above `asked`.
        held: u64,
        /// The capacity now.
        capacity: u64,
        /// The capacity asked for.
        asked: u64,
    },
    /// The answer could not be decoded.
    #[error("malformed answer")]
    Protocol(#[from] WireError),
    /// Any other error answer.
    #[error("server error {code}: {message}")]
    Server {
        /// Its code ([`ErrorCode`]).
        code: u16,
        /// Its message.
        message: String,
    },
}

/// A client for a server's admin requests.
///
/// ```no_run
/// use std::time::Duration;
/// use farmem_server::AdminClient;
/// let admin = AdminClient::new("10.0.0.5:7070", b"operator secret".to_vec());
/// let st = admin.shrink(2 << 30, Duration::from_secs(30)).unwrap();
/// println!("capacity now {} bytes, {} used", st.capacity_bytes, st.used_bytes);
/// ```
#[derive(Clone)]
pub struct AdminClient {
    addr: String,
    token: Vec<u8>,
    /// Extra wait beyond a shrink's deadline for the answer.
    grace: Duration,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// A client for the server at `addr` presenting admin token `token`.
    pub fn new(addr: impl Into<String>, token: Vec<u8>) -> Self {
        Self {
            addr: addr.into(),
            token,
            grace: Duration::from_secs(10),
        }
    }

    /// Capacity, use and any shrink under way.
    ///
    /// # Errors
    /// [`AdminError`].
    pub fn status(&self) -> Result<AdminStatus, AdminError> {
        self.call(AdminAction::Status, 0, Duration::ZERO)
    }

    /// Server-wide figures: every session's use and objects, sessions, connections, bytes
    /// written (a client's own `STATS` shows only its session on a server with an admin token).
    ///
    /// # Errors
    /// As [`AdminClient::status`].
    pub fn stats(&self) -> Result<ServerStats, AdminError> {
        self.call_with(AdminAction::Stats, 0, Duration::ZERO, |r| match r {
            Response::Stats(st) => Some(st),
            _ => None,
        })
    }

    /// Lowers the capacity by `bytes`; clients get `deadline` to move the excess away.
    ///
    /// # Errors
    /// [`AdminError::Incomplete`] when they could not; others as [`AdminClient::status`].
    pub fn shrink(&self, bytes: u64, deadline: Duration) -> Result<AdminStatus, AdminError> {
        self.call(AdminAction::Shrink, bytes, deadline)
    }

    /// Raises the capacity by `bytes` (at most to the server's configured capacity).
    ///
    /// # Errors
    /// As [`AdminClient::status`].
    pub fn grow(&self, bytes: u64) -> Result<AdminStatus, AdminError> {
        self.call(AdminAction::Grow, bytes, Duration::ZERO)
    }

    /// Sets the capacity to `bytes`, as [`AdminClient::shrink`] when that is below use.
    ///
    /// # Errors
    /// As [`AdminClient::shrink`].
    pub fn set(&self, bytes: u64, deadline: Duration) -> Result<AdminStatus, AdminError> {
        self.call(AdminAction::Set, bytes, deadline)
    }

    fn call(
        &self,
        action: AdminAction,
        bytes: u64,
        deadline: Duration,
    ) -> Result<AdminStatus, AdminError> {
        self.call_with(action, bytes, deadline, |r| match r {
            Response::Admin(st) => Some(st),
            _ => None,
        })
    }

    /// Sends one admin request; `pick` takes the answer it expects from a non-error answer.
    fn call_with<T>(
        &self,
        action: AdminAction,
        bytes: u64,
        deadline: Duration,
        pick: impl Fn(Response<'_>) -> Option<T>,
    ) -> Result<T, AdminError> {
        let connect = |source| AdminError::Connect {
            addr: self.addr.clone(),
            source,
        };
        let addr = self
            .addr
            .to_socket_addrs()
            .map_err(connect)?
            .next()
            .ok_or_else(|| connect(std::io::ErrorKind::NotFound.into()))?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(connect)?;
        s.set_read_timeout(Some(deadline.min(MAX_DEADLINE) + self.grace))?;
        let mut buf = Vec::new();
        let req = Request::Admin {
            action,
            bytes,
            deadline_ms: deadline.as_millis().min(u128::from(u64::MAX)) as u64,
            token: &self.token,
        };
        encode_request(&mut buf, 1, &req);
        s.write_all(&buf)?;
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some((frame, _)) = decode_frame(&got, 1 << 20)? {
                let h = frame.header;
                return match Response::decode(h.op, h.flags, frame.body)? {
                    Response::Error(e) => Err(match ErrorCode::from_code(e.code) {
                        Some(ErrorCode::AdminRefused) => AdminError::Refused {
                            message: e.message.to_string(),
                        },
                        Some(ErrorCode::ShrinkIncomplete) => AdminError::Incomplete {
                            held: e.a,
                            capacity: e.b,
                            asked: e.c,
                        },
                        _ => AdminError::Server {
                            code: e.code,
                            message: e.message.to_string(),
                        },
                    }),
                    other => pick(other).ok_or_else(|| AdminError::Server {
                        code: 0,
                        message: "unexpected answer to an admin request".into(),
                    }),
                };
            }
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            got.extend_from_slice(&chunk[..n]);
        }
    }
}
