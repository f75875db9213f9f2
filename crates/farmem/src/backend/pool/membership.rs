//! Membership that changes at run time: a watcher thread per pool that
//!
//! - follows the pool's [`MemberSource`] (pools built by [`PoolBackend::connect`]): addresses
//!   that appear join, addresses that leave a DNS answer are drained and removed;
//! - takes back members that went down once their server answers again (`rejoin.rs`), and
//!   re-admits an address whose member went down and cannot renew its session by connecting
//!   to it again, retrying with exponential back-off, so repair can use it;
//! - moves data off members whose server asks for it (a server being shrunk by its operator or
//!   its host's memory pressure: [`StoreStats::reclaim_bytes`]), through the pool's mover with
//!   the race rules of a drain, never dropping a copy that has no replacement.
//!
//! [`PoolBackend::connect`]: super::PoolBackend::connect
//! [`StoreStats::reclaim_bytes`]: crate::backend::StoreStats::reclaim_bytes

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::discover::{Connector, MemberSource};
use super::member::{Member, MemberState};
use super::mover;
use super::pacing::MOVERS;
use super::rejoin::Probes;
use super::repair::{Fix, move_off};
use super::table::Ix;
use super::{Inner, MemberId};
use crate::backend::{ObjectId, StoreStats};

/// How a pool built by [`PoolBackend::connect`](super::PoolBackend::connect) manages its own
/// members.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use farmem::backend::{Membership, MemberSource, PoolBackend, PoolConfig, Redundancy};
/// use farmem::backend::pool::{SystemResolver, TcpConnector};
/// let source = MemberSource::Dns {
///     name: "memsrv.default.svc.cluster.local:7070".into(),
///     resolver: Arc::new(SystemResolver),
///     every: Duration::from_secs(10),
/// };
/// let membership = Membership::new(source, Arc::new(TcpConnector::new(b"token".to_vec())));
/// let pool = PoolBackend::connect(membership, PoolConfig::new(Redundancy::replicas(2))).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct Membership {
    /// Where the servers come from.
    pub source: MemberSource,
    /// How to connect to one.
    pub connector: Arc<dyn Connector>,
    /// First wait before retrying an address that has no member, or whose member is down and
    /// is not taken back by the pool itself ([`PoolConfig::rejoin_after`] off, or a backend
    /// that cannot renew its session); doubled after each failed attempt.
    ///
    /// [`PoolConfig::rejoin_after`]: super::PoolConfig::rejoin_after
    pub readmit_first: Duration,
    /// Longest wait between attempts.
    pub readmit_max: Duration,
}

impl Membership {
    /// Servers from `source`, connected with `connector`; re-admission retries after 250 ms,
    /// backing off to 10 s.
    pub fn new(source: MemberSource, connector: Arc<dyn Connector>) -> Self {
        Self {
            source,
            connector,
            readmit_first: Duration::from_millis(250),
            readmit_max: Duration::from_secs(10),
        }
    }

    /// Sets the re-admission back-off.
    #[must_use]
    pub fn readmit_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.readmit_first = first;
        self.readmit_max = max.max(first);
        self
    }
}

/// One address of the source and the member serving it.
#[derive(Debug)]
struct Slot {
    member: Option<MemberId>,
    retry_at: Instant,
    backoff: Duration,
}

/// The addresses a self-managed pool follows.
#[derive(Debug)]
pub(crate) struct Roster {
    cfg: Membership,
    slots: HashMap<String, Slot>,
    next_resolve: Instant,
}

impl Roster {
    /// A roster for `cfg` whose addresses `joined` are members already.
    pub(crate) fn new(cfg: Membership, joined: Vec<(String, Option<MemberId>)>) -> Self {
        let now = Instant::now();
        let slots = joined
            .into_iter()
            .map(|(a, member)| {
                let slot = Slot {
                    member,
                    retry_at: now,
                    backoff: cfg.readmit_first,
                };
                (a, slot)
            })
            .collect();
        let next_resolve = match &cfg.source {
            MemberSource::Dns { every, .. } => now + *every,
            MemberSource::Static(_) => now,
        };
        Self {
            cfg,
            slots,
            next_resolve,
        }
    }

    /// Follows the source and re-admits what answers again.
    fn reconcile(&mut self, inner: &Inner, stop: &Stop) {
        let now = Instant::now();
        if let MemberSource::Dns { every, .. } = &self.cfg.source
            && now >= self.next_resolve
        {
            self.next_resolve = now + *every;
            match self.cfg.source.addresses() {
                Ok(list) if !list.is_empty() => self.follow(inner, &list, stop),
                Ok(_) => tracing::warn!(
                    name = self.cfg.source.describe(),
                    "no addresses in the answer: pool members unchanged"
                ),
                Err(e) => tracing::warn!(
                    name = self.cfg.source.describe(),
                    error = %e,
                    "cannot resolve: pool members unchanged"
                ),
            }
        }
        self.readmit(inner, stop);
    }

    /// Adds slots for new addresses; drains and removes members whose address left.
    fn follow(&mut self, inner: &Inner, wanted: &[String], stop: &Stop) {
        let now = Instant::now();
        for a in wanted {
            self.slots.entry(a.clone()).or_insert(Slot {
                member: None,
                retry_at: now,
                backoff: self.cfg.readmit_first,
            });
        }
        let gone: Vec<String> = self
            .slots
            .keys()
            .filter(|a| !wanted.contains(a))
            .cloned()
            .collect();
        for a in gone {
            if stop.stopped() {
                return;
            }
            let done = self.slots[&a].member.is_none_or(|id| leave(inner, id, &a));
            if done {
                self.slots.remove(&a);
            }
        }
    }

    /// Connects to addresses without a serving member (new, or down), each after its back-off.
    fn readmit(&mut self, inner: &Inner, stop: &Stop) {
        for (addr, slot) in &mut self.slots {
            if stop.stopped() {
                return;
            }
            // Follow the address's member to the one its server rejoined as.
            while let Some(next) = slot
                .member
                .and_then(|id| inner.member(id).ok())
                .and_then(|m| m.successor())
            {
                slot.member = Some(MemberId(usize::from(next)));
            }
            // A down member whose session the pool renews by itself is left to it.
            let needed = slot.member.is_none_or(|id| {
                inner.member(id).is_ok_and(|m| {
                    m.state() == MemberState::Down
                        && (inner.cfg.rejoin_after.is_none() || !m.renewable())
                })
            });
            let now = Instant::now();
            if !needed || now < slot.retry_at {
                continue;
            }
            match self.cfg.connector.connect(addr) {
                Ok(backend) => match inner.add_member(backend) {
                    Ok(id) => {
                        if slot.member.is_some() {
                            tracing::info!(%addr, member = id.0, "server answers again: re-admitted");
                        } else {
                            tracing::info!(%addr, member = id.0, "new pool member");
                        }
                        slot.member = Some(id);
                        slot.backoff = self.cfg.readmit_first;
                    }
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "cannot add a pool member");
                        slot.retry_at = now + self.cfg.readmit_max;
                    }
                },
                Err(e) => {
                    tracing::debug!(%addr, error = %e, retry_in = ?slot.backoff, "server still unreachable");
                    slot.retry_at = now + slot.backoff;
                    slot.backoff = (slot.backoff * 2).min(self.cfg.readmit_max);
                }
            }
        }
    }
}

/// Drains (while it serves) and removes member `id` whose address left the source; false when
/// it has to be tried again later.
fn leave(inner: &Inner, id: MemberId, addr: &str) -> bool {
    let Ok(m) = inner.member(id) else {
        return true;
    };
    match m.state() {
        MemberState::Live => match inner.drain_member(id) {
            Ok(()) => {
                tracing::info!(%addr, "address left the pool's source: drained and removed");
                inner.remove_member(id).is_ok()
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "address left the pool's source, cannot drain it yet");
                false
            }
        },
        // Someone else is draining it.
        MemberState::Draining => false,
        _ => inner.remove_member(id).is_ok(),
    }
}

/// Most objects moved between two looks at what a shrinking server still asks for.
const SHED_BATCH: u64 = 4096;

/// Moves data off every live member whose server asks for it.
fn reclaim(inner: &Inner, stop: &Stop) {
    let members = inner.members();
    for (i, m) in members.iter().enumerate() {
        if stop.stopped() {
            return;
        }
        if m.state() != MemberState::Live {
            continue;
        }
        // Failures are the maintenance thread's to judge.
        if let Ok(st) = m.backend.stats()
            && st.reclaim_bytes > 0
        {
            shed(inner, i as Ix, m, st, stop);
        }
    }
}

/// Moves objects off member `ix` until its server asks for nothing more, no other member has
/// room, or nothing is left to move: each round moves about what the server still asks for
/// with the batched mover (the member counts as draining for it), and what the mover leaves
/// (tables, busy objects) one object at a time.
fn shed(inner: &Inner, ix: Ix, m: &Member, mut st: StoreStats, stop: &Stop) {
    tracing::info!(
        member = %m.name,
        bytes = st.reclaim_bytes,
        deadline_ms = st.reclaim_deadline_ms,
        "server asks to move data away"
    );
    let mut ids = inner.table.select(|e| e.contains(ix)).into_iter();
    let _moving = inner.repair.pacer.moving(&inner.members());
    let mut moved = 0u64;
    while st.reclaim_bytes > 0 && !stop.stopped() {
        let avg = (st.used_bytes / st.objects.max(1)).max(1);
        let batch = (st.reclaim_bytes / avg + 1).min(SHED_BATCH) as usize;
        let round: Vec<ObjectId> = ids.by_ref().take(batch).collect();
        if round.is_empty() {
            tracing::warn!(member = %m.name, moved, "nothing more of this pool to move");
            return;
        }
        let tried = round.len() as u64;
        let left = mover::run(inner, round, MOVERS, Some(ix));
        moved += tried - left.len() as u64;
        for id in left {
            if stop.stopped() {
                break;
            }
            match move_off(inner, id, ix) {
                Fix::Done => moved += 1,
                Fix::NoRoom => {
                    tracing::warn!(member = %m.name, moved, "no room on other members: data stays");
                    return;
                }
                Fix::Gone | Fix::Raced | Fix::Lost => {}
            }
        }
        match m.backend.stats() {
            Ok(s) => st = s,
            Err(_) => return,
        }
    }
    tracing::info!(member = %m.name, moved, "moved data off a shrinking server");
}

/// The stop signal of the watcher.
#[derive(Debug, Default)]
struct Stop {
    flag: Mutex<bool>,
    cv: Condvar,
}

impl Stop {
    fn stopped(&self) -> bool {
        *self.flag.lock()
    }

    /// Waits `d` or until stopped; true when stopped.
    fn wait(&self, d: Duration) -> bool {
        let mut f = self.flag.lock();
        if !*f {
            self.cv.wait_for(&mut f, d);
        }
        *f
    }
}

/// The running watcher of a pool; stopped and joined when dropped.
#[derive(Debug)]
pub(crate) struct Watcher {
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Starts the watcher of `inner` (`roster`: the addresses it follows, if any).
    pub(crate) fn start(inner: Arc<Inner>, roster: Option<Roster>) -> Self {
        let stop = Arc::new(Stop::default());
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("farmem-pool-members".into())
            .spawn(move || {
                let mut roster = roster;
                let mut probes = Probes::default();
                while !s.wait(inner.cfg.maintenance_interval) {
                    probes.run(&inner, &|| s.stopped());
                    if let Some(r) = &mut roster {
                        r.reconcile(&inner, &s);
                    }
                    reclaim(&inner, &s);
                }
                probes.finish();
            })
            .map_err(|e| tracing::warn!(error = %e, "pool membership thread could not start"))
            .ok();
        Self { stop, thread }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        *self.stop.flag.lock() = true;
        self.stop.cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::super::{PoolBackend, PoolConfig, Redundancy};
    use super::*;
    use crate::backend::{Backend, BackendError, EmbeddedStore, ObjectId};

    /// An embedded store that, like a shrinking server, asks to move away what it holds above
    /// `keep` bytes.
    #[derive(Debug)]
    struct Asking {
        inner: EmbeddedStore,
        keep: AtomicU64,
    }

    impl Asking {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                inner: EmbeddedStore::new(),
                keep: AtomicU64::new(u64::MAX),
            })
        }
    }

    impl Backend for Asking {
        fn put(&self, id: ObjectId, data: &[u8]) -> Result<(), BackendError> {
            self.inner.put(id, data)
        }
        fn get(&self, id: ObjectId) -> Result<Vec<u8>, BackendError> {
            self.inner.get(id)
        }
        fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>, BackendError> {
            self.inner.get_many(ids)
        }
        fn put_many(&self, items: &[(ObjectId, &[u8])]) -> Result<(), BackendError> {
            self.inner.put_many(items)
        }
        fn free(&self, ids: &[ObjectId]) -> Result<(), BackendError> {
            self.inner.free(ids)
        }
        fn stats(&self) -> Result<StoreStats, BackendError> {
            let mut s = self.inner.stats()?;
            let keep = self.keep.load(Ordering::SeqCst);
            s.capacity_bytes = s.capacity_bytes.min(keep);
            s.reclaim_bytes = s.used_bytes.saturating_sub(keep);
            s.reclaim_deadline_ms = u64::from(s.reclaim_bytes > 0) * 1000;
            Ok(s)
        }
        fn compute(&self, route: ObjectId, op: u16, args: &[u8]) -> Result<Vec<u8>, BackendError> {
            self.inner.compute(route, op, args)
        }
        fn describe(&self) -> String {
            "asking".into()
        }
    }

    fn pool(members: &[Arc<Asking>]) -> PoolBackend {
        let cfg = PoolConfig::new(Redundancy::replicas(2))
            .repair_rate(None)
            .maintenance_interval(Duration::from_millis(10));
        let list = members
            .iter()
            .map(|m| m.clone() as Arc<dyn Backend>)
            .collect();
        PoolBackend::new(list, cfg).unwrap()
    }

    fn val(id: u64) -> Vec<u8> {
        vec![id as u8; 1000]
    }

    fn wait(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_member_that_asks_gets_its_excess_moved_and_nothing_is_lost() {
        let m: Vec<Arc<Asking>> = (0..3).map(|_| Asking::new()).collect();
        let pool = pool(&m);
        for id in 0..300 {
            pool.put(id, &val(id)).unwrap();
        }
        let used = |i: usize| m[i].inner.stats().unwrap().used_bytes;
        assert!(used(0) > 100_000);
        m[0].keep.store(50_000, Ordering::SeqCst);
        wait("the excess to move", || used(0) <= 50_000);
        for id in 0..300 {
            assert_eq!(pool.get(id).unwrap(), val(id));
            assert_eq!(pool.locations(id).unwrap().len(), 2);
        }
        assert_eq!(pool.pool_stats().under_replicated, 0);
    }

    #[test]
    fn with_no_room_elsewhere_no_copy_is_dropped() {
        // Two members, two copies: every object is on both, so there is nowhere to move to.
        let m: Vec<Arc<Asking>> = (0..2).map(|_| Asking::new()).collect();
        let pool = pool(&m);
        for id in 0..100 {
            pool.put(id, &val(id)).unwrap();
        }
        let before = m[0].inner.stats().unwrap().used_bytes;
        m[0].keep.store(0, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(m[0].inner.stats().unwrap().used_bytes, before);
        for id in 0..100 {
            assert_eq!(pool.get(id).unwrap(), val(id));
        }
        assert_eq!(pool.pool_stats().under_replicated, 0);
        assert_eq!(pool.pool_stats().repair.dropped, 0);
    }
}
