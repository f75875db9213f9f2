//! Taking back down members whose server answers again.
//!
//! A member marked down after a connection-class failure had its objects and spans repaired
//! elsewhere: whatever its server still holds for this pool is written off and may be stale. The
//! pool's watcher probes each down member with back-off ([`PoolConfig::rejoin_after`]); a probe
//! is [`Backend::renew`] on the member's backend, which declares the old session ended on the
//! client's side (nothing more is sent to it), then closes it on the server (freeing every
//! copy and span it held; a server that restarted has none) and opens a fresh, empty session.
//! The server then joins as a *new* member ([`Inner::readmit`]): a new member id, so no entry
//! of the location table or of the coded layout that still names the old id (repair has not
//! reached it yet, or a write that was in flight when the member failed) can ever be read from
//! the fresh session. Repair then puts copies and parity on it like on any new member.
//!
//! Races: the commit runs under the membership lock and takes the member back only while it is
//! still down and neither drained nor removed by the operator (who withdraws it first) nor
//! taken back already; otherwise the fresh backend is dropped, closing its session. A server
//! that fails again during the probe fails the probe (it stays down and is probed later); one
//! that fails again after it joined is an ordinary member failure of the new member, which is
//! probed in turn, after twice the wait when it failed within [`PoolConfig::rejoin_max`] of
//! joining (a flapping server uses member ids slowly: [`MAX_MEMBERS`] over a pool's life).
//!
//! [`PoolConfig::rejoin_after`]: super::PoolConfig::rejoin_after
//! [`PoolConfig::rejoin_max`]: super::PoolConfig::rejoin_max
//! [`Backend::renew`]: crate::backend::Backend::renew
//! [`MAX_MEMBERS`]: super::MAX_MEMBERS

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::error::PoolError;
use super::member::{Member, MemberState};
use super::table::Ix;
use super::{Inner, MemberId, PoolConfig};

/// The least time a probe waits for the server's first answer.
const MIN_PATIENCE: Duration = Duration::from_secs(1);

/// How long a probe waits for the server's first answer.
fn patience(cfg: &PoolConfig) -> Duration {
    cfg.rejoin_after.map_or(MIN_PATIENCE, |d| d.max(MIN_PATIENCE))
}

/// Why member `m` cannot rejoin.
pub(crate) fn refusal(m: &Member) -> PoolError {
    let state = m.state();
    let why = if state != MemberState::Down {
        "only a down member rejoins"
    } else if m.is_withdrawn() {
        "the operator drained or removed it"
    } else if m.successor().is_some() {
        "its server rejoined already"
    } else {
        "its backend cannot renew its session"
    };
    PoolError::NoRejoin {
        member: m.name.clone(),
        state,
        why,
    }
}

/// One attempt to take back down member `id`: renews its backend's session and readmits the
/// server as a new member.
pub(crate) fn rejoin(inner: &Inner, id: MemberId) -> Result<MemberId, PoolError> {
    let m = inner.member(id)?;
    if !m.may_rejoin() || !m.renewable() {
        return Err(refusal(&m));
    }
    let fresh = match m.backend.renew(patience(&inner.cfg)) {
        None => {
            m.set_unrenewable();
            return Err(refusal(&m));
        }
        Some(r) => r?,
    };
    // It answered the renewal; one more request shows it still does (a flapping server fails
    // here and stays down).
    fresh.stats()?;
    inner.readmit(id, fresh)
}

/// When a down member is probed next.
#[derive(Debug)]
struct Probe {
    at: Instant,
    backoff: Duration,
}

/// The probes of down members, kept by the pool's watcher thread.
#[derive(Debug, Default)]
pub(crate) struct Probes {
    next: HashMap<Ix, Probe>,
}

impl Probes {
    /// Probes every down member whose turn has come (see the module docs).
    pub(crate) fn run(&mut self, inner: &Inner, stopped: &dyn Fn() -> bool) {
        let Some(first) = inner.cfg.rejoin_after else {
            return;
        };
        let max = inner.cfg.rejoin_max;
        let members = inner.members();
        for (i, m) in members.iter().enumerate() {
            if stopped() {
                return;
            }
            let ix = i as Ix;
            if !m.may_rejoin() || !m.renewable() {
                self.next.remove(&ix);
                continue;
            }
            let p = self.next.entry(ix).or_insert_with(|| {
                let flaps = m.flaps.load(Ordering::Relaxed).min(16);
                let wait = first.saturating_mul(1 << flaps).min(max);
                Probe {
                    at: Instant::now() + wait,
                    backoff: wait,
                }
            });
            if Instant::now() < p.at {
                continue;
            }
            match rejoin(inner, MemberId(i)) {
                Ok(_) => {
                    self.next.remove(&ix);
                }
                Err(PoolError::Backend(e)) => {
                    p.backoff = p.backoff.saturating_mul(2).min(max);
                    p.at = Instant::now() + p.backoff;
                    tracing::debug!(member = %m.name, error = %e, retry_in = ?p.backoff, "down pool member still does not answer");
                }
                Err(e @ PoolError::TooManyMembers { .. }) => {
                    p.at = Instant::now() + max;
                    tracing::warn!(member = %m.name, error = %e, "down pool member answers again but cannot rejoin");
                }
                Err(e) => {
                    self.next.remove(&ix);
                    tracing::debug!(member = %m.name, error = %e, "down pool member not taken back");
                }
            }
        }
    }
}
