//! Taking a client's sessions over to new connections ([`Backend::resume`]), or ending them
//! and opening fresh ones ([`Backend::renew`]): how a pool takes back a member whose server was
//! failed over and answers again, with what its session holds when the server kept it, without
//! it otherwise.
//!
//! [`Backend::resume`]: crate::backend::Backend::resume
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

impl TcpBackend {
    /// Takes this backend's sessions over to a new backend (see
    /// [`Backend::resume`](crate::backend::Backend::resume)): each server's link is declared
    /// down and its connections cut first (nothing more is sent through this backend), then a
    /// probe connection resumes the session within `probe`; when every server still knows its
    /// session, [`TcpBackend::connect`] runs with this backend's settings, resuming them, its
    /// request ids starting past every id this backend used. `Ok(None)`: a server no longer
    /// knows its session (restarted, or the lease ran out).
    ///
    /// # Errors
    /// [`BackendError::Timeout`] when a server does not answer within `probe`,
    /// [`BackendError::Unreachable`] when nobody listens, and the errors of
    /// [`TcpBackend::connect`]. The sessions are left as they are.
    pub fn resume_sessions(&self, probe: Duration) -> Result<Option<TcpBackend>, BackendError> {
        let mut adopt = Vec::with_capacity(self.servers.len());
        for s in &self.servers {
            s.link
                .retire("session handed over: the client resumes it on new connections".into());
            s.link.cut_all();
            let (session, secret) = s.link.session_secret();
            if session == 0 {
                return Ok(None);
            }
            // Past every id handed out, and a margin for ids counted but never written.
            let next = s.link.peek_next_id().saturating_add(1 << 16);
            if !session_alive(&s.link, (session, secret), next, probe)? {
                return Ok(None);
            }
            // Should the new backend be let go before it is used and the session resumed from
            // this one again, that resumption numbers past what the new one may have used.
            s.link.continue_ids(next.saturating_add(1 << 24));
            adopt.push((session, secret, next));
        }
        TcpBackend::connect_adopting(self.config.clone(), &adopt).map(Some)
    }

    /// Lets go of the sessions without closing them (see
    /// [`Backend::detach`](crate::backend::Backend::detach)).
    pub(crate) fn detach_sessions(&self) {
        for s in &self.servers {
            s.link.retire("session let go by the client".into());
            s.link.cut_all();
        }
    }
}

/// `b` as a shared backend.
pub(super) fn shared(b: TcpBackend) -> std::sync::Arc<dyn crate::backend::Backend> {
    std::sync::Arc::new(b)
}

/// A link for one probe of `link`'s server within `probe`, resuming `session` (no heartbeat, no
/// reconnection beyond the probe).
fn probe_link(link: &Link, session: (u64, u64), probe: Duration) -> std::sync::Arc<Link> {
    let l = Link::new(
        link.addr.clone(),
        LinkConfig {
            timeout: probe,
            reconnect_within: probe,
            heartbeat: Duration::ZERO,
            await_restart: false,
            ..link.config.clone()
        },
    );
    l.adopt_session(session.0, session.1);
    l
}

/// Whether `link`'s server still knows `session`: resumes it on a probe connection (requests
/// numbered from `next`) and leaves it open on the server.
fn session_alive(
    link: &Link,
    session: (u64, u64),
    next: u64,
    probe: Duration,
) -> Result<bool, BackendError> {
    let prober = probe_link(link, session, probe);
    prober.continue_ids(next);
    match Connection::open(&prober) {
        Ok(conn) => {
            prober.retire("probe done".into());
            conn.cut();
            Ok(true)
        }
        // The server no longer knows the session: its objects are gone.
        Err(BackendError::ServerDown { .. }) => Ok(false),
        Err(e) => Err(e),
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
    let closer = probe_link(link, (session, secret), probe);
    // Past every id the old link used: a retry window must not mistake the close for one.
    closer.continue_ids(link.peek_next_id().saturating_add(1 << 16));
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
