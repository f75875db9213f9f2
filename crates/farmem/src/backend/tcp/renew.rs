//! Ending a client's sessions and opening fresh ones ([`Backend::renew`]): how a pool takes
//! back a member whose server was failed over and answers again, without ever reading what the
//! old session held and without leaving it on the server.
//!
//! [`Backend::renew`]: crate::backend::Backend::renew

use std::time::{Duration, Instant};

use farmem_proto::Op;

use super::TcpBackend;
use super::conn::Connection;
use super::link::{Link, LinkConfig};
use super::reply::Reply;
use crate::backend::BackendError;

impl TcpBackend {
    /// Ends this backend's session on every server and connects again with fresh, empty ones
    /// (see [`Backend::renew`](crate::backend::Backend::renew)): each server's link is declared
    /// down first (every later call on this backend fails with [`BackendError::ServerDown`], so
    /// nothing more lands in the old session), then a new connection resumes the old session
    /// and closes it (the server frees its objects at once; a server that restarted or let the
    /// session's lease run out has nothing to free), then [`TcpBackend::connect`] runs with this
    /// backend's settings.
    ///
    /// # Errors
    /// [`BackendError::Timeout`] when a server does not answer within `probe`,
    /// [`BackendError::Unreachable`] when nobody listens, and the errors of
    /// [`TcpBackend::connect`].
    pub fn renew_sessions(&self, probe: Duration) -> Result<TcpBackend, BackendError> {
        for s in &self.servers {
            end_session(&s.link, probe)?;
        }
        TcpBackend::connect(self.config.clone())
    }
}

/// Declares `link` down, cuts its connections and closes its session on the server.
fn end_session(link: &Link, probe: Duration) -> Result<(), BackendError> {
    link.retire("session ended: the client renewed it".into());
    link.cut_all();
    let (session, secret) = link.session_secret();
    if session == 0 {
        return Ok(());
    }
    let closer = Link::new(
        link.addr.clone(),
        LinkConfig {
            timeout: probe,
            reconnect_within: probe,
            heartbeat: Duration::ZERO,
            await_restart: false,
            ..link.config.clone()
        },
    );
    closer.adopt_session(session, secret);
    let conn = match Connection::open(&closer) {
        Ok(c) => c,
        // The server no longer knows the session (restarted, or its lease ran out): its
        // objects are gone already.
        Err(BackendError::ServerDown { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let r = conn
        .submit(Op::CloseSession, true, |_| {})
        .and_then(|p| conn.wait(p, Instant::now() + probe));
    closer.retire("session closed".into());
    conn.cut();
    match r {
        Ok(Reply::Done) | Err(BackendError::ServerDown { .. }) => {
            tracing::debug!(addr = %link.addr, "old session ended");
            Ok(())
        }
        Ok(other) => Err(super::unexpected(&other)),
        Err(e) => Err(e),
    }
}
