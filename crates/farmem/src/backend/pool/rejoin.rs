//! Taking back down members whose server answers again.
//!
//! A member is marked down after a connection-class failure: its server went silent past the
//! detection time (frozen, partitioned), answered too late, or lost its connection. The pool's
//! watcher probes each down member with back-off ([`PoolConfig::rejoin_after`]), each probe on
//! a thread of its own so that a silent server never holds up the watcher.
//!
//! # Revival: the session comes back with its data
//!
//! A probe first asks the member's backend to take its session over to new connections
//! ([`Backend::resume`]). When the server still knows the session (it was frozen or cut off,
//! not restarted), the member is *revived*: a member over the resumed session takes the old
//! member's place in the list, under the same id, in state [`MemberState::Draining`]. It
//! serves what the location table still places on it, so objects whose every copy was on it
//! (one copy per object, or every replica frozen) are readable again, and the repair thread
//! moves every object it holds to live members, as in a drain. Once the table places nothing
//! on it, it is retired: its session is closed on the server, which frees at once every copy
//! the pool wrote off there (rewritten or re-replicated elsewhere while it was down, freed while
//! it did not answer, or written by requests that were still buffered on its old connections
//! when it froze and ran after it woke). Unless the server serves under another member already,
//! it also joins as a new, empty member over a fresh session ([`Backend::reconnect`];
//! [`MemberInfo::rejoined_as`] names it), which takes new objects and the repair's copies.
//!
//! Why nothing stale is read from the revived session: the location table names a member only
//! while it holds the object's last acknowledged value. A write that some member acknowledged
//! drops from the entry every member it named that did not acknowledge it (refused it, failed,
//! or was not serving: `write.rs`); a write no member acknowledged drops the members that
//! failed it while the entry names another one (which holds the value from before the write).
//! Repair and drains replace a down member's copy in the entry before they drop it, and a free
//! removes the entry. So what the revived session holds under an entry that names it is the
//! current value, or, when its member was the object's last one and failed a write, the value
//! of that unacknowledged write (a write that failed may or may not have taken effect). Copies
//! the table does not place on it are never read: the revived member is never asked for an id
//! the table does not know (`Member::answers_unknown`), and such copies go with the session.
//! Writes that start after the revival see it serving and write to it; writes that started
//! before skip it and drop it from their entries as they end. No free is lost: frees that
//! could not reach it while it was down concerned copies the table no longer places on it.
//!
//! The cost is a drain: the revived member's data crosses the client once more.
//!
//! # Revival in erasure-coded pools
//!
//! A member of a coded pool is revived the same way, draining. Its spans serve reads again
//! wherever the coded layout still places them: a stripe that lost more than `m` spans (more
//! than `m` of its members frozen or cut off at once) is readable again, and a degraded one
//! reads its objects with one request again instead of a decode. The coded maintenance thread
//! then rebuilds every stripe with a span on it, as for a draining member (`coded/rebuild.rs`):
//! each of its data spans goes to a live member (the server's fresh member, typically), and a
//! stripe whose parity span was on it gets a new parity set. Once no stripe and no table entry
//! names it, its session is closed, freeing everything the pool wrote off there.
//!
//! Why nothing stale is read, and parity stays consistent: every version of an object and every
//! parity set is written under a fresh key, never reused, whose bytes never change
//! (`coded/layout.rs`). The layout names a key on a member of a sealed stripe only once that
//! member took it: a write is acknowledged when the span's member holds the slot, one that
//! failed moves the span to another member (from the client's copy) before it completes, a
//! seal first moves the spans of members that do not serve, and rebuilds and new parity sets
//! switch the layout only after their new members took them. So a span rebuilt onto another
//! member (or a substitute) meanwhile, an object rewritten, freed or moved by compaction, a
//! parity set replaced: each has new names in the layout (a new member for the same bytes, or
//! new keys), and what the revived session holds under names the layout dropped is never asked
//! for, while what the layout still names on it holds exactly the bytes the stripe's parity was
//! computed over. Frees it missed while it was down concern keys the layout no longer names
//! (they go with the session). Unsealed stripes are the one place where the layout may name a
//! member before it holds a slot (a write in flight, a span on its way to another member): the
//! client's copy serves any slot a member lacks, a relocation that does not complete puts the
//! span back where it was, and a seal waits for the writes in flight and moves the spans of
//! members that do not serve, so it finds every span on a member that took its slots. A seal
//! also moves the revived member's spans off it (from the client's copy) where another member
//! can take them, so that it can be let go sooner. Writes that started before the revival and
//! meet the old, let-go backend mark nothing down (`Inner::mark_down` checks the member it used): the member in its
//! place is the revived one.
//!
//! # Renewal: the server comes back empty
//!
//! When the server no longer knows the session (it restarted without `--data-dir`, or the
//! session's lease ran out), or the backend cannot resume sessions, the probe renews it
//! ([`Backend::renew`]): the old session is declared ended on the client's side and closed on
//! the server (freeing what it held; a restarted server has none), and a fresh, empty session
//! joins as a *new* member ([`Inner::readmit`]): a new member id, so no entry of the location
//! table or of the coded layout that still names the old id can ever be read from the fresh
//! session. Repair then puts copies and parity on it like on any new member. Objects whose
//! only copies were in the lost session stay unavailable ([`BackendError::Unavailable`]). A
//! session that may still hold copies nothing else can give back is not renewed (renewing
//! would free them) while the server may still have it: [`Inner::holds_last_copies`].
//!
//! # The member list
//!
//! Member ids are positions in the list, named by the location table, and never reused. A
//! member whose server rejoined as another one, or whose revived session was emptied, stays in
//! the list as a tombstone ([`Member::tombstone`]) over a backend that answers nothing: its
//! connections, heartbeat thread and buffers are freed with its old backend.
//!
//! Races: a commit runs under the membership lock and takes the member back only while it is
//! still down and neither drained nor removed by the operator (who withdraws it first) nor
//! taken back already; otherwise the resumed or fresh backend is dropped (closing its
//! session). A server that fails again during the probe fails the probe (it stays down and is
//! probed later); one that fails again after it joined is an ordinary member failure, probed in
//! turn (a revived session that goes down again is revived again), after twice the wait when it
//! failed within [`PoolConfig::rejoin_max`] of joining (a flapping server uses member ids
//! slowly: [`MAX_MEMBERS`] over a pool's life).
//!
//! [`PoolConfig::rejoin_after`]: super::PoolConfig::rejoin_after
//! [`PoolConfig::rejoin_max`]: super::PoolConfig::rejoin_max
//! [`MemberInfo::rejoined_as`]: super::MemberInfo::rejoined_as
//! [`Backend::renew`]: crate::backend::Backend::renew
//! [`Backend::resume`]: crate::backend::Backend::resume
//! [`Backend::reconnect`]: crate::backend::Backend::reconnect
//! [`BackendError::Unavailable`]: crate::backend::BackendError::Unavailable
//! [`MAX_MEMBERS`]: super::MAX_MEMBERS

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::error::PoolError;
use super::member::{Member, MemberState};
use super::table::Ix;
use super::{Inner, MAX_MEMBERS, MemberId, PoolConfig};
use crate::backend::{Backend, BackendError, ObjectId, StoreStats};

/// The least time a probe waits for the server's first answer.
const MIN_PATIENCE: Duration = Duration::from_secs(1);

/// How long a probe waits for the server's first answer.
fn patience(cfg: &PoolConfig) -> Duration {
    cfg.rejoin_after
        .map_or(MIN_PATIENCE, |d| d.max(MIN_PATIENCE))
}

/// Why member `m` cannot rejoin.
pub(crate) fn refusal(m: &Member) -> PoolError {
    let state = m.state();
    let why = if state != MemberState::Down {
        "only a down member rejoins"
    } else if m.is_withdrawn() {
        "the operator drained or removed it"
    } else if m.successor().is_some() && !m.is_revived() {
        "its server rejoined already (or was added back by hand)"
    } else {
        "its backend cannot renew its session"
    };
    PoolError::NoRejoin {
        member: m.name.clone(),
        state,
        why,
    }
}

/// One attempt to take back down member `id`: revives its session with its data when its
/// server still has it, else renews it and readmits the server as a new, empty member. Returns
/// the member the server now takes new objects as (the revived member's own id when it has
/// no fresh member).
pub(crate) fn rejoin(inner: &Inner, id: MemberId) -> Result<MemberId, PoolError> {
    let m = inner.member(id)?;
    if !m.may_rejoin() || !m.renewable() {
        return Err(refusal(&m));
    }
    let mut gone = false;
    match m.backend.resume(patience(&inner.cfg)) {
        Some(Ok(Some(session))) => return revive(inner, id, &m, session),
        // The server lost the session, and with it what it held.
        Some(Ok(None)) => gone = true,
        Some(Err(e)) => return Err(e.into()),
        None => {}
    }
    if m.is_revived() {
        // A revived session that is gone now: nothing of it to take back (its server serves
        // as its successor).
        inner.retire(id, MemberState::Down);
        return Err(refusal(&m));
    }
    if !gone && inner.holds_last_copies(id.0 as Ix) {
        // Renewing would close the session that holds them: wait until repair no longer
        // needs it (another copy, or enough spans, came back) rather than lose them.
        return Err(PoolError::NoRejoin {
            member: m.name.clone(),
            state: m.state(),
            why: "it holds the only copies of objects (or spans) that nothing else can rebuild",
        });
    }
    let fresh = match m.backend.renew(patience(&inner.cfg)) {
        None => {
            m.set_unrenewable();
            return Err(refusal(&m));
        }
        Some(r) => r?,
    };
    if let Some(twin) = twin(inner, &m) {
        // Its server was added back by hand meanwhile: the old session is freed, and a second
        // member on one server would make one failure cost two copies.
        return Err(inner.follow_twin(id, twin));
    }
    // It answered the renewal; one more request shows it still does (a flapping server fails
    // here and stays down).
    fresh.stats()?;
    inner.readmit(id, fresh)
}

/// Takes down member `id` back over `session`, its resumed session (see the module docs).
fn revive(
    inner: &Inner,
    id: MemberId,
    m: &Member,
    session: Arc<dyn Backend>,
) -> Result<MemberId, PoolError> {
    // Until it is committed, a failure lets the session go without closing it: the next probe
    // resumes it again (the backend it was resumed from still knows it).
    let attempt = || -> Result<Option<Arc<dyn Backend>>, BackendError> {
        // It answered the resumption; one more request shows it still does.
        session.stats()?;
        if m.successor().is_some() || twin(inner, m).is_some() {
            return Ok(None);
        }
        match session.reconnect() {
            Some(Ok(b)) => {
                b.stats()?;
                Ok(Some(b))
            }
            Some(Err(e)) => Err(e),
            None => Ok(None),
        }
    };
    match attempt() {
        Ok(fresh) => inner.revive_commit(id, session, fresh),
        Err(e) => {
            session.detach();
            Err(e.into())
        }
    }
}

/// A serving member over the same server as `m` (by name), other than `m`.
pub(crate) fn twin(inner: &Inner, m: &Member) -> Option<Ix> {
    inner
        .members()
        .iter()
        .position(|x| !std::ptr::eq(&**x, m) && x.serves() && !x.is_revived() && x.name == m.name)
        .map(|i| i as Ix)
}

/// The backend of a member that was let go: answers nothing.
#[derive(Debug)]
struct Retired {
    name: String,
}

impl Retired {
    fn err(&self) -> BackendError {
        BackendError::ServerDown {
            addr: self.name.clone(),
            reason: "pool member retired".into(),
        }
    }
}

impl Backend for Retired {
    fn put(&self, _: ObjectId, _: &[u8]) -> Result<(), BackendError> {
        Err(self.err())
    }
    fn get(&self, _: ObjectId) -> Result<Vec<u8>, BackendError> {
        Err(self.err())
    }
    fn get_many(&self, _: &[ObjectId]) -> Result<Vec<Vec<u8>>, BackendError> {
        Err(self.err())
    }
    fn put_many(&self, _: &[(ObjectId, &[u8])]) -> Result<(), BackendError> {
        Err(self.err())
    }
    fn free(&self, _: &[ObjectId]) -> Result<(), BackendError> {
        Ok(())
    }
    fn stats(&self) -> Result<StoreStats, BackendError> {
        Err(self.err())
    }
    fn compute(&self, _: ObjectId, _: u16, _: &[u8]) -> Result<Vec<u8>, BackendError> {
        Err(self.err())
    }
    fn describe(&self) -> String {
        self.name.clone()
    }
}

impl Inner {
    /// Whether member `ix` holds copies nothing else can give back: an object whose every
    /// copy is on members that do not serve, one of them `ix`, or a coded span its stripe
    /// cannot rebuild without it. Such a member is not renewed (its session, and so those
    /// copies, would be freed); the probe is tried again later.
    pub(crate) fn holds_last_copies(&self, ix: Ix) -> bool {
        let members = self.members();
        let serves = |m: Ix| {
            members
                .get(usize::from(m))
                .is_none_or(|x| x.state().serves())
        };
        let mut found = false;
        self.table.select(|e| {
            if !found && e.contains(ix) && !e.members().iter().any(|&m| m != ix && serves(m)) {
                found = true;
            }
            false
        });
        found
            || self
                .coded_engine
                .read()
                .as_ref()
                .and_then(std::sync::Weak::upgrade)
                .is_some_and(|c| c.needs_member(ix))
    }

    /// Whether the coded layout (of an erasure-coded pool) has a span of some stripe on
    /// member `ix`.
    fn coded_names(&self, ix: Ix) -> bool {
        self.coded_engine
            .read()
            .as_ref()
            .and_then(std::sync::Weak::upgrade)
            .is_some_and(|c| c.names_member(ix))
    }

    /// Wakes the coded maintenance thread (of an erasure-coded pool): a member came back.
    fn wake_coded(&self) {
        let engine = self
            .coded_engine
            .read()
            .as_ref()
            .and_then(std::sync::Weak::upgrade);
        if let Some(c) = engine {
            c.wake();
        }
    }

    /// Down member `old`'s server was added back by hand as member `twin`: notes it as the
    /// member its server rejoined as (it is not taken back a second time) and returns why.
    pub(crate) fn follow_twin(&self, old: MemberId, twin: Ix) -> PoolError {
        let _g = self.membership.lock();
        match self.member(old) {
            Ok(prev) => {
                if prev.may_rejoin() {
                    prev.set_successor(twin);
                }
                let e = refusal(&prev);
                self.retire(old, prev.state());
                e
            }
            Err(e) => e,
        }
    }

    /// Puts `member` in place of member `ix` in the list.
    fn replace_member(&self, ix: usize, member: Arc<Member>) {
        let mut list = self.members.write();
        if ix < list.len() {
            let mut v = list.to_vec();
            v[ix] = member;
            *list = v.into();
        }
    }

    /// Replaces member `id` by its tombstone in `state` (see [`Member::tombstone`]): its
    /// backend goes once no call holds it any more.
    pub(crate) fn retire(&self, id: MemberId, state: MemberState) {
        let Ok(prev) = self.member(id) else {
            return;
        };
        let dead = Arc::new(Retired {
            name: prev.name.clone(),
        });
        let t = Arc::new(prev.tombstone(dead, state));
        self.replace_member(id.0, t);
    }

    /// The flap count a member taken back after `prev` starts with: one more than `prev`'s when
    /// `prev` was itself taken back and failed again within [`PoolConfig::rejoin_max`].
    fn flaps_after(&self, prev: &Member) -> u32 {
        let flapped = prev.is_rejoiner() && prev.lived().is_some_and(|l| l < self.cfg.rejoin_max);
        if flapped {
            prev.flaps.load(Ordering::Relaxed) + 1
        } else {
            0
        }
    }

    /// Appends `member` to the list; its id.
    fn push_member(&self, member: Arc<Member>) -> Result<Ix, PoolError> {
        let mut list = self.members.write();
        if list.len() >= MAX_MEMBERS {
            return Err(PoolError::TooManyMembers { max: MAX_MEMBERS });
        }
        let ix = list.len();
        let mut v = list.to_vec();
        v.push(member);
        *list = v.into();
        Ok(ix as Ix)
    }

    /// Takes down member `old` back over `session`, its resumed session, in its place and
    /// draining; `fresh` (a fresh session on its server, if any) joins as a new member. Returns
    /// the member its server takes new objects as.
    fn revive_commit(
        &self,
        old: MemberId,
        session: Arc<dyn Backend>,
        fresh: Option<Arc<dyn Backend>>,
    ) -> Result<MemberId, PoolError> {
        let _g = self.membership.lock();
        let prev = self.member(old)?;
        if !prev.may_rejoin() {
            return Err(refusal(&prev));
        }
        let flaps = self.flaps_after(&prev);
        let revived = Arc::new(Member::new(session, self.cfg.read_patience));
        revived.set_state(MemberState::Draining);
        revived.set_revived();
        revived.set_rejoiner();
        revived.flaps.store(flaps, Ordering::Relaxed);
        let mut now = prev.successor().map(|s| MemberId(usize::from(s)));
        if let Some(b) = fresh {
            let member = Arc::new(Member::new(b, self.cfg.read_patience));
            member.set_rejoiner();
            member.flaps.store(flaps, Ordering::Relaxed);
            match self.push_member(member) {
                Ok(ix) => now = Some(MemberId(usize::from(ix))),
                // Its data comes back all the same; the server takes no new objects.
                Err(e) => {
                    tracing::warn!(member = %prev.name, error = %e, "revived member gets no fresh session")
                }
            }
        } else if now.is_none() {
            now = twin(self, &prev).map(|t| MemberId(usize::from(t)));
        }
        if let Some(s) = now {
            revived.set_successor(s.0 as Ix);
        }
        self.replace_member(old.0, revived);
        self.rejoins.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            member = %prev.name,
            id = old.0,
            fresh = ?now,
            "pool member answers again with its session: revived, its objects are readable and move to live members"
        );
        // Its objects and spans move to live members; objects short of copies get them.
        self.repair.wake();
        self.wake_coded();
        Ok(now.unwrap_or(old))
    }

    /// Takes back down member `old` over `backend` (its renewed session) as a new member, if
    /// it may still rejoin; the pool's rejoins count one more, and `old` becomes a tombstone.
    pub(crate) fn readmit(
        &self,
        old: MemberId,
        backend: Arc<dyn Backend>,
    ) -> Result<MemberId, PoolError> {
        let _g = self.membership.lock();
        let prev = self.member(old)?;
        if !prev.may_rejoin() {
            return Err(refusal(&prev));
        }
        if let Some(twin) = twin(self, &prev) {
            prev.set_successor(twin);
            let e = refusal(&prev);
            self.retire(old, MemberState::Down);
            return Err(e);
        }
        let member = Arc::new(Member::new(backend, self.cfg.read_patience));
        // A server that failed again soon after it was taken back waits longer next time.
        member.set_rejoiner();
        member
            .flaps
            .store(self.flaps_after(&prev), Ordering::Relaxed);
        let ix = self.push_member(member)?;
        prev.set_successor(ix);
        self.retire(old, MemberState::Down);
        self.rejoins.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            member = %prev.name,
            was = old.0,
            now = ix,
            "pool member answers again: rejoined as a new, empty member"
        );
        // Objects and stripes short of copies and parity get them on it.
        self.repair.wake();
        self.wake_coded();
        Ok(MemberId(usize::from(ix)))
    }

    /// Retires every revived member the location table no longer places anything on (its
    /// session is closed on the server, freeing what the pool wrote off there).
    pub(crate) fn retire_emptied(&self) {
        let members = self.members();
        for (i, m) in members.iter().enumerate() {
            if !(m.is_revived() && m.state() == MemberState::Draining) {
                continue;
            }
            let ix = i as Ix;
            // It takes no new objects, copies or spans: once no entry or stripe names it and no
            // move owes it a drop, nothing can name it again.
            if m.moves.load(Ordering::SeqCst) > 0
                || !self.table.select(|e| e.contains(ix)).is_empty()
                || self.coded_names(ix)
            {
                continue;
            }
            let _g = self.membership.lock();
            if !m.transition(MemberState::Draining, MemberState::Drained) {
                continue;
            }
            if m.moves.load(Ordering::SeqCst) > 0 {
                m.transition(MemberState::Drained, MemberState::Draining);
                continue;
            }
            tracing::info!(member = %m.name, id = i, "revived session emptied: closed");
            self.retire(MemberId(i), MemberState::Drained);
        }
    }
}

/// When a down member is probed next, and the probe running.
#[derive(Debug)]
struct Probe {
    at: Instant,
    backoff: Duration,
    running: Option<JoinHandle<Result<MemberId, PoolError>>>,
}

/// The probes of down members, kept by the pool's watcher thread.
#[derive(Debug, Default)]
pub(crate) struct Probes {
    next: HashMap<Ix, Probe>,
}

impl Probes {
    /// Starts a probe (on a thread of its own) of every down member whose turn has come, and
    /// takes in the outcome of the probes that ended (see the module docs).
    pub(crate) fn run(&mut self, inner: &Arc<Inner>, stopped: &dyn Fn() -> bool) {
        inner.retire_emptied();
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
            if let Some(p) = self.next.get_mut(&ix)
                && p.running.as_ref().is_some_and(JoinHandle::is_finished)
            {
                let outcome = p.running.take().map(JoinHandle::join);
                match outcome {
                    Some(Ok(Ok(_))) => {
                        self.next.remove(&ix);
                    }
                    Some(Ok(Err(PoolError::Backend(e)))) => {
                        p.backoff = p.backoff.saturating_mul(2).min(max);
                        p.at = Instant::now() + p.backoff;
                        tracing::debug!(member = %m.name, error = %e, retry_in = ?p.backoff, "down pool member still does not answer");
                    }
                    Some(Ok(Err(e @ PoolError::TooManyMembers { .. }))) => {
                        p.at = Instant::now() + max;
                        tracing::warn!(member = %m.name, error = %e, "down pool member answers again but cannot rejoin");
                    }
                    Some(Ok(Err(e))) => {
                        self.next.remove(&ix);
                        tracing::debug!(member = %m.name, error = %e, "down pool member not taken back");
                    }
                    Some(Err(_)) | None => {
                        self.next.remove(&ix);
                        tracing::warn!(member = %m.name, "a probe of a down pool member panicked");
                    }
                }
                continue;
            }
            let running = self.next.get(&ix).is_some_and(|p| p.running.is_some());
            if !running && (!m.may_rejoin() || !m.renewable()) {
                self.next.remove(&ix);
                continue;
            }
            let p = self.next.entry(ix).or_insert_with(|| {
                let flaps = m.flaps.load(Ordering::Relaxed).min(16);
                let wait = first.saturating_mul(1 << flaps).min(max);
                Probe {
                    at: Instant::now() + wait,
                    backoff: wait,
                    running: None,
                }
            });
            if p.running.is_some() || Instant::now() < p.at {
                continue;
            }
            let bg = inner.clone();
            let spawned = std::thread::Builder::new()
                .name("farmem-pool-probe".into())
                .spawn(move || rejoin(&bg, MemberId(i)));
            match spawned {
                Ok(h) => p.running = Some(h),
                Err(e) => {
                    p.at = Instant::now() + p.backoff;
                    tracing::warn!(error = %e, "cannot start a probe of a down pool member");
                }
            }
        }
    }

    /// Waits for the probes still running (the watcher stops).
    pub(crate) fn finish(&mut self) {
        for (_, p) in self.next.drain() {
            if let Some(h) = p.running {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod coded_tests;
#[cfg(test)]
mod fakes;
#[cfg(test)]
mod tests;
