//! The connection protocol without sockets, for the `connection` fuzz target and its corpus
//! replay test (not a stable API).
//!
//! A [`Harness`] is a server's shared state (sessions, capacity, limits) with no listener and
//! no threads; a [`Connection`] is fed bytes as a socket would deliver them (whole frames,
//! pieces of frames, several frames at once) and answers through the same frame-level code as
//! the event loop (`wire::next`); requests the event loop hands to its worker pool
//! run in place, through the same job function.

use std::sync::Arc;

use crate::conn::{ConnGuard, run_offloaded};
use crate::server::Shared;
use crate::wire::{self, Next};
use crate::{Limits, ServerConfig};

/// A server's state, without sockets or threads.
pub struct Harness {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness").finish_non_exhaustive()
    }
}

impl Harness {
    /// A server of `capacity` bytes requiring `token` (if any), objects of at most
    /// `max_object` bytes, sessions that end with their last connection, and short agent time
    /// limits; `None` if these limits are inconsistent.
    pub fn new(token: Option<Vec<u8>>, capacity: u64, max_object: u32) -> Option<Self> {
        let limits = Limits {
            max_object,
            max_frame: max_object.checked_add(4096)?,
            max_response: 256 << 10,
            agent_time_limit: std::time::Duration::from_millis(200),
            ..Limits::default()
        };
        let config = ServerConfig {
            capacity,
            token,
            limits,
            agent_threads: 1,
            session_lease: std::time::Duration::ZERO,
            ..ServerConfig::default()
        };
        Some(Self {
            shared: Shared::detached(config)?,
        })
    }

    /// Opens a connection; `None` at the connection limit.
    pub fn connect(&self) -> Option<Connection> {
        self.shared.open_connection().then(|| Connection {
            guard: ConnGuard {
                shared: self.shared.clone(),
                session: None,
            },
            rbuf: Vec::new(),
            open: true,
        })
    }

    /// Bytes charged against the capacity and objects stored, over every session.
    pub fn usage(&self) -> (u64, u64) {
        self.shared.usage()
    }

    /// The capacity.
    pub fn capacity(&self) -> u64 {
        self.shared.config.capacity
    }

    /// Sessions held.
    pub fn sessions(&self) -> usize {
        self.shared.session_count()
    }

    /// The largest frame a connection may send before its hello.
    pub fn max_hello_frame(&self) -> u32 {
        self.shared.config.limits.max_hello_frame
    }
}

/// One connection's protocol state: its session (after the hello) and its unanswered input.
pub struct Connection {
    guard: ConnGuard,
    rbuf: Vec<u8>,
    open: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("session", &self.session())
            .field("buffered", &self.rbuf.len())
            .field("open", &self.open)
            .finish()
    }
}

impl Connection {
    /// Delivers `bytes` as read from the socket; answers are appended to `out`. Returns whether
    /// the connection is still open (once closed, it takes nothing more and its session is
    /// released).
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> bool {
        if !self.open {
            return false;
        }
        self.rbuf.extend_from_slice(bytes);
        let shared = self.guard.shared.clone();
        let mut used = 0;
        while self.open {
            let data = &self.rbuf[used..];
            match wire::next(&shared, &mut self.guard.session, data, out) {
                Next::More => break,
                Next::Answered(n) => used += n,
                Next::Offload { len, .. } => {
                    let frame = &self.rbuf[used..used + len];
                    let a = run_offloaded(&shared, self.guard.session.clone(), frame, &|| false);
                    if self.guard.session.is_none() && a.opened.is_some() {
                        self.guard.session = a.opened;
                    }
                    out.extend_from_slice(&a.out);
                    used += len;
                    self.open = a.end.is_ok();
                }
                Next::End { used: n, .. } => {
                    used += n;
                    self.open = false;
                }
            }
        }
        self.rbuf.drain(..used);
        if !self.open {
            self.rbuf = Vec::new();
            if let Some(s) = self.guard.session.take() {
                shared.leave(s);
            }
        }
        self.open
    }

    /// The key of the session this connection holds, if its hello went through.
    pub fn session(&self) -> Option<u64> {
        self.guard.session.as_ref().map(|s| s.key)
    }

    /// Bytes of input held (an unfinished frame).
    pub fn buffered(&self) -> usize {
        self.rbuf.len()
    }
}
