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
use std::sync::Arc;

use super::{Inner, MAX_MEMBERS, MemberId, PoolConfig};
use crate::backend::Backend;

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
    } else if m.successor().is_some() {
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

/// One attempt to take back down member `id`: renews its backend's session and readmits the
/// server as a new member.
pub(crate) fn rejoin(inner: &Inner, id: MemberId) -> Result<MemberId, PoolError> {
    let m = inner.member(id)?;
    if !m.may_rejoin() || !m.renewable() {
        return Err(refusal(&m));
    }
    if inner.holds_last_copies(id.0 as Ix) {
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

/// A serving member over the same server as `m` (by name), other than `m`.
pub(crate) fn twin(inner: &Inner, m: &Member) -> Option<Ix> {
    inner
        .members()
        .iter()
        .position(|x| !std::ptr::eq(&**x, m) && x.serves() && x.name == m.name)
        .map(|i| i as Ix)
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

    /// Down member `old`'s server was added back by hand as member `twin`: notes it as the
    /// member its server rejoined as (it is not taken back a second time) and returns why.
    pub(crate) fn follow_twin(&self, old: MemberId, twin: Ix) -> PoolError {
        let _g = self.membership.lock();
        match self.member(old) {
            Ok(prev) => {
                if prev.may_rejoin() {
                    prev.set_successor(twin);
                }
                refusal(&prev)
            }
            Err(e) => e,
        }
    }

    /// Takes back down member `old` over `backend` (its renewed session) as a new member, if
    /// it may still rejoin; the pool's rejoins count one more.
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
            return Err(refusal(&prev));
        }
        let member = Arc::new(Member::new(backend, self.cfg.read_patience));
        // A server that failed again soon after it was taken back waits longer next time.
        let flapped = prev.is_rejoiner() && prev.lived().is_some_and(|l| l < self.cfg.rejoin_max);
        member.set_rejoiner();
        let flaps = if flapped {
            prev.flaps.load(Ordering::Relaxed) + 1
        } else {
            0
        };
        member.flaps.store(flaps, Ordering::Relaxed);
        let mut list = self.members.write();
        if list.len() >= MAX_MEMBERS {
            return Err(PoolError::TooManyMembers { max: MAX_MEMBERS });
        }
        let ix = list.len();
        let mut v = list.to_vec();
        v.push(member);
        *list = v.into();
        drop(list);
        prev.set_successor(ix as Ix);
        self.rejoins.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            member = %prev.name,
            was = old.0,
            now = ix,
            "pool member answers again: rejoined as a new, empty member"
        );
        // Objects and stripes short of copies and parity get them on it.
        self.repair.wake();
        Ok(MemberId(ix))
    }
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use parking_lot::Mutex;

    use super::super::{PoolBackend, Redundancy};
    use super::*;
    use crate::backend::{Backend, BackendError, EmbeddedStore, ObjectId, StoreStats};

    /// A server in a box: answers while `up`, and renews into a fresh, empty store after
    /// freeing what this session held.
    #[derive(Debug)]
    struct Boxed {
        name: String,
        store: EmbeddedStore,
        held: Mutex<HashSet<ObjectId>>,
        up: Arc<AtomicBool>,
        ended: AtomicBool,
    }

    impl Boxed {
        fn new(name: &str, up: Arc<AtomicBool>) -> Arc<Self> {
            Arc::new(Self {
                name: name.into(),
                store: EmbeddedStore::new(),
                held: Mutex::default(),
                up,
                ended: AtomicBool::new(false),
            })
        }

        fn check(&self) -> Result<(), BackendError> {
            if self.up.load(Ordering::SeqCst) && !self.ended.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(BackendError::Timeout {
                    addr: "boxed".into(),
                    after_ms: 1,
                })
            }
        }
    }

    impl Backend for Boxed {
        fn put(&self, id: ObjectId, data: &[u8]) -> Result<(), BackendError> {
            self.check()?;
            self.held.lock().insert(id);
            self.store.put(id, data)
        }
        fn get(&self, id: ObjectId) -> Result<Vec<u8>, BackendError> {
            self.check()?;
            self.store.get(id)
        }
        fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>, BackendError> {
            self.check()?;
            self.store.get_many(ids)
        }
        fn put_many(&self, items: &[(ObjectId, &[u8])]) -> Result<(), BackendError> {
            self.check()?;
            self.held.lock().extend(items.iter().map(|(id, _)| *id));
            self.store.put_many(items)
        }
        fn free(&self, ids: &[ObjectId]) -> Result<(), BackendError> {
            self.check()?;
            self.store.free(ids)
        }
        fn stats(&self) -> Result<StoreStats, BackendError> {
            self.check()?;
            self.store.stats()
        }
        fn compute(&self, route: ObjectId, op: u16, args: &[u8]) -> Result<Vec<u8>, BackendError> {
            self.check()?;
            self.store.compute(route, op, args)
        }
        fn renew(&self, _probe: Duration) -> Option<Result<Arc<dyn Backend>, BackendError>> {
            self.ended.store(true, Ordering::SeqCst);
            if !self.up.load(Ordering::SeqCst) {
                return Some(Err(BackendError::Timeout {
                    addr: "boxed".into(),
                    after_ms: 1,
                }));
            }
            let ids: Vec<ObjectId> = self.held.lock().drain().collect();
            if let Err(e) = self.store.free(&ids) {
                return Some(Err(e));
            }
            Some(Ok(
                Boxed::new(&self.name, self.up.clone()) as Arc<dyn Backend>
            ))
        }
        fn describe(&self) -> String {
            self.name.clone()
        }
    }

    fn pool(members: &[Arc<Boxed>], first: Option<Duration>) -> PoolBackend {
        let cfg = PoolConfig::new(Redundancy::replicas(3))
            .maintenance_interval(Duration::from_millis(5))
            .rejoin(first, Duration::from_millis(200));
        let list = members
            .iter()
            .map(|m| m.clone() as Arc<dyn Backend>)
            .collect();
        PoolBackend::new(list, cfg).unwrap()
    }

    fn wait(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Three members, three copies; member 0 fails a write and goes down.
    fn failed_over(first: Option<Duration>) -> (Vec<Arc<Boxed>>, Arc<AtomicBool>, PoolBackend) {
        let up = Arc::new(AtomicBool::new(true));
        let m = vec![
            Boxed::new("a", up.clone()),
            Boxed::new("b", Arc::new(AtomicBool::new(true))),
            Boxed::new("c", Arc::new(AtomicBool::new(true))),
        ];
        let p = pool(&m, first);
        for id in 0..50 {
            p.put(id, &[id as u8; 100]).unwrap();
        }
        up.store(false, Ordering::SeqCst);
        p.put(50, &[50; 100]).unwrap();
        assert_eq!(p.member_state(MemberId(0)), Some(MemberState::Down));
        (m, up, p)
    }

    #[test]
    fn a_member_holding_the_only_copies_is_not_renewed() {
        // One copy per object: member 0's objects exist nowhere else.
        let up = Arc::new(AtomicBool::new(true));
        let m = [
            Boxed::new("a", up.clone()),
            Boxed::new("b", Arc::new(AtomicBool::new(true))),
        ];
        let cfg = PoolConfig::new(Redundancy::replicas(1))
            .maintenance_interval(Duration::from_millis(5))
            .rejoin(Some(Duration::from_millis(10)), Duration::from_millis(200));
        let list = m.iter().map(|x| x.clone() as Arc<dyn Backend>).collect();
        let p = PoolBackend::new(list, cfg).unwrap();
        let mut on_a = Vec::new();
        for id in 0..64 {
            p.put(id, &[id as u8; 100]).unwrap();
            if p.locations(id).unwrap() == [MemberId(0)] {
                on_a.push(id);
            }
        }
        assert!(!on_a.is_empty());
        up.store(false, Ordering::SeqCst);
        let _ = p.get(on_a[0]);
        assert_eq!(p.member_state(MemberId(0)), Some(MemberState::Down));
        up.store(true, Ordering::SeqCst);
        // Several probe turns pass: none renews the session that holds the only copies.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(p.rejoins(), 0);
        assert!(matches!(
            p.rejoin_member(MemberId(0)),
            Err(PoolError::NoRejoin { .. })
        ));
        assert!(!m[0].ended.load(Ordering::SeqCst), "its session was ended");
        for &id in &on_a {
            assert_eq!(m[0].store.get(id).unwrap(), vec![id as u8; 100]);
        }
    }

    #[test]
    fn a_down_member_that_answers_again_rejoins_empty_and_gets_its_copies_back() {
        let (m, up, p) = failed_over(Some(Duration::from_millis(10)));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(p.rejoins(), 0, "rejoined while it does not answer");
        up.store(true, Ordering::SeqCst);
        wait("the rejoin", || p.rejoins() == 1);
        let now = p.members()[0].rejoined_as.unwrap();
        assert_eq!(now, MemberId(3));
        // The old session's objects are freed; the new member gets every object's third copy.
        assert_eq!(m[0].store.stats().unwrap().objects, 0);
        wait("full redundancy", || p.repair_now() == 0);
        for id in 0..=50 {
            assert_eq!(p.get(id).unwrap(), vec![id as u8; 100]);
            assert!(p.locations(id).unwrap().contains(&now));
        }
        assert_eq!(p.member_state(MemberId(0)), Some(MemberState::Down));
        assert!(p.rejoin_member(MemberId(0)).is_err(), "rejoined twice");
    }

    #[test]
    fn with_rejoins_off_a_down_member_stays_out_until_asked() {
        let (m, up, p) = failed_over(None);
        up.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(p.rejoins(), 0);
        assert!(
            m[0].store.stats().unwrap().objects > 0,
            "stale copies left alone"
        );
        let now = p.rejoin_member(MemberId(0)).unwrap();
        assert_eq!(p.member_state(now), Some(MemberState::Live));
        assert_eq!(m[0].store.stats().unwrap().objects, 0);
    }
}
