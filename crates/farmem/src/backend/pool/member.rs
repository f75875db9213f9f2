//! Members of a pool: one backend (one server) each, its state and its free-space estimate.

use std::sync::Arc;
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
use std::time::{Duration, Instant};

use super::table::{Ix, mix};
use crate::backend::{Backend, BackendError};

/// The life cycle of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemberState {
    /// Serving and taking new objects.
    Live,
    /// Serving, but its objects are being moved away and it takes no new ones.
    Draining,
    /// Holds nothing and takes nothing (after a drain).
    Drained,
    /// Failed with a connection-class error (its server went silent, answered too late, or
    /// its connection broke): not used while down. Its objects are repaired from their other
    /// copies, and writes go to other members. When its server answers again the pool takes it
    /// back (see [`PoolConfig::rejoin_after`]): if the server still has the member's session
    /// (it was frozen or cut off), the member is revived with its data, [`MemberState::Draining`]
    /// (what the location table, or an erasure-coded pool's layout, still places on it is read
    /// from it while repair moves it away, then the session is closed and it is `Drained`); the
    /// server also joins as a new
    /// member over a fresh session ([`MemberInfo::rejoined_as`] names it). If the session is
    /// gone (the server restarted), the server joins as a new, empty member
    /// ([`Backend::renew`]) and this one stays `Down`. A member the operator drained or removed
    /// is never taken back.
    ///
    /// [`PoolConfig::rejoin_after`]: super::PoolConfig::rejoin_after
    /// [`MemberInfo::rejoined_as`]: super::MemberInfo::rejoined_as
    Down,
    /// Detached from the pool.
    Removed,
}

impl MemberState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Live,
            1 => Self::Draining,
            2 => Self::Drained,
            3 => Self::Down,
            _ => Self::Removed,
        }
    }

    /// Whether the member answers requests (it may hold copies).
    pub fn serves(self) -> bool {
        matches!(self, Self::Live | Self::Draining)
    }
}

/// Whether `e` means the member itself is gone (as opposed to a refused request).
///
/// Connection-class errors: the server could not be reached, the connection broke, it did not
/// answer in time, or its transport has declared it down.
pub fn is_member_failure(e: &BackendError) -> bool {
    matches!(
        e,
        BackendError::Unreachable { .. }
            | BackendError::Disconnected { .. }
            | BackendError::Timeout { .. }
            | BackendError::ServerDown { .. }
    )
}

/// One member.
pub(crate) struct Member {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) name: String,
    state: AtomicU8,
    /// Estimated free bytes: capacity minus use at the last stats refresh minus bytes placed since.
    free: AtomicI64,
    /// Requests in flight (reads prefer the least loaded replica).
    pub(crate) inflight: AtomicU32,
    /// The application's calls on this member that ended, and their total time in nanoseconds
    /// (repair and drain pacing follows their latency: `pacing.rs`).
    app_calls: AtomicU64,
    app_nanos: AtomicU64,
    /// Per-object overhead the member charges (from its stats).
    overhead: AtomicU64,
    /// Moves in progress that may still write or drop a copy on this member (a drain waits for
    /// them to finish).
    pub(crate) moves: AtomicU32,
    /// Until when (nanoseconds after `born`; 0: not) reads ask the other replicas first: its
    /// server went silent under a read (see [`Backend::set_read_patience`]) and has not
    /// answered one since. Suspicion lapses after [`SUSPICION`], so a server that was only
    /// stalled gets its share of reads back.
    suspect_until: AtomicU64,
    born: Instant,
    /// Nanoseconds after `born` when it was marked down (0: not).
    down_after: AtomicU64,
    /// The member its server rejoined the pool as (`usize::MAX`: none).
    successor: AtomicUsize,
    /// The operator drained or removed it: never taken back.
    withdrawn: AtomicBool,
    /// Whether its backend can renew its session ([`Backend::renew`]); false once it said no.
    renewable: AtomicBool,
    /// Whether it is a server taken back after it went down.
    rejoiner: AtomicBool,
    /// How many times in a row its server was taken back only to fail again soon (rejoins wait
    /// longer for each).
    pub(crate) flaps: AtomicU32,
    /// Whether it is a session taken back with its data after its member went down (see
    /// `rejoin.rs`): it serves what the location table (or the coded layout) still places on
    /// it while repair moves it away, but may also hold copies the pool wrote off, so it is
    /// never asked for ids the table does not place on it.
    revived: AtomicBool,
}

/// How long a member that went silent under a read is asked last.
const SUSPICION: Duration = Duration::from_secs(1);

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("name", &self.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Member {
    /// A member over `backend`, whose reads give up on a silent server after `patience`.
    pub(crate) fn new(backend: Arc<dyn Backend>, patience: Option<Duration>) -> Self {
        backend.set_read_patience(patience);
        let m = Self {
            name: backend.describe(),
            backend,
            state: AtomicU8::new(0),
            free: AtomicI64::new(i64::MAX),
            inflight: AtomicU32::new(0),
            app_calls: AtomicU64::new(0),
            app_nanos: AtomicU64::new(0),
            overhead: AtomicU64::new(64),
            moves: AtomicU32::new(0),
            suspect_until: AtomicU64::new(0),
            born: Instant::now(),
            down_after: AtomicU64::new(0),
            successor: AtomicUsize::new(usize::MAX),
            withdrawn: AtomicBool::new(false),
            renewable: AtomicBool::new(true),
            rejoiner: AtomicBool::new(false),
            flaps: AtomicU32::new(0),
            revived: AtomicBool::new(false),
        };
        // Best effort: a member that cannot answer now is found out by its first request.
        let _ = m.refresh();
        m
    }

    /// What stays of this member in the pool's list once its backend is let go (its server
    /// rejoined as another member, or its revived session was emptied): the same name, state
    /// and history over `backend`, which answers nothing, so that its connections, threads and
    /// buffers are freed (member ids are positions in the list and are never reused).
    pub(crate) fn tombstone(&self, backend: Arc<dyn Backend>, state: MemberState) -> Self {
        let m = Self::new(backend, None);
        m.set_state(state);
        m.down_after
            .store(self.down_after.load(Ordering::Relaxed), Ordering::Relaxed);
        m.successor
            .store(self.successor.load(Ordering::Acquire), Ordering::Release);
        m.withdrawn.store(self.is_withdrawn(), Ordering::Release);
        m.renewable.store(self.renewable(), Ordering::Relaxed);
        m.rejoiner.store(self.is_rejoiner(), Ordering::Relaxed);
        m.flaps
            .store(self.flaps.load(Ordering::Relaxed), Ordering::Relaxed);
        m
    }

    /// Notes that it is a session taken back with its data (see [`Member::revived`]).
    pub(crate) fn set_revived(&self) {
        self.revived.store(true, Ordering::Release);
    }

    /// Whether it is a session taken back with its data, possibly holding written-off copies.
    pub(crate) fn is_revived(&self) -> bool {
        self.revived.load(Ordering::Acquire)
    }

    /// Whether it may be asked for an id the location table does not place anywhere (agent
    /// outputs, tables nobody wrote yet): it serves and holds no written-off copies.
    pub(crate) fn answers_unknown(&self) -> bool {
        self.serves() && !self.is_revived()
    }

    pub(crate) fn state(&self) -> MemberState {
        MemberState::from_u8(self.state.load(Ordering::SeqCst))
    }

    pub(crate) fn set_state(&self, s: MemberState) {
        self.state.store(s as u8, Ordering::Release);
    }

    /// Moves from `from` to `to`; false when the state was something else.
    pub(crate) fn transition(&self, from: MemberState, to: MemberState) -> bool {
        self.state
            .compare_exchange(from as u8, to as u8, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Marks the member down; true when this call did it.
    pub(crate) fn mark_down(&self) -> bool {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            let s = MemberState::from_u8(cur);
            if matches!(s, MemberState::Down | MemberState::Removed) {
                return false;
            }
            match self.state.compare_exchange(
                cur,
                MemberState::Down as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    let after = (self.born.elapsed().as_nanos() as u64).max(1);
                    self.down_after.store(after, Ordering::Relaxed);
                    return true;
                }
                Err(v) => cur = v,
            }
        }
    }

    /// How long it served before it was marked down (`None`: not down).
    pub(crate) fn lived(&self) -> Option<Duration> {
        match self.down_after.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// The member its server rejoined the pool as.
    pub(crate) fn successor(&self) -> Option<Ix> {
        match self.successor.load(Ordering::Acquire) {
            usize::MAX => None,
            ix => Some(ix as Ix),
        }
    }

    pub(crate) fn set_successor(&self, ix: Ix) {
        self.successor.store(usize::from(ix), Ordering::Release);
    }

    /// Notes that the operator drained or removed it: it is never taken back.
    pub(crate) fn withdraw(&self) {
        self.withdrawn.store(true, Ordering::Release);
    }

    /// A drain that failed left it live: it may be taken back again should it fail.
    pub(crate) fn clear_withdrawn(&self) {
        self.withdrawn.store(false, Ordering::Release);
    }

    pub(crate) fn set_rejoiner(&self) {
        self.rejoiner.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_rejoiner(&self) -> bool {
        self.rejoiner.load(Ordering::Relaxed)
    }

    pub(crate) fn is_withdrawn(&self) -> bool {
        self.withdrawn.load(Ordering::Acquire)
    }

    /// Whether its backend may be able to renew its session.
    pub(crate) fn renewable(&self) -> bool {
        self.renewable.load(Ordering::Relaxed)
    }

    pub(crate) fn set_unrenewable(&self) {
        self.renewable.store(false, Ordering::Relaxed);
    }

    /// Whether the pool may take its server back: down, not withdrawn by the operator, not
    /// taken back already (a revived session that went down again may be taken back again:
    /// its server serves under another member meanwhile).
    pub(crate) fn may_rejoin(&self) -> bool {
        self.state() == MemberState::Down
            && !self.is_withdrawn()
            && (self.successor().is_none() || self.is_revived())
    }

    /// Whether its server went silent under a read and has not answered one since.
    pub(crate) fn is_suspect(&self) -> bool {
        match self.suspect_until.load(Ordering::Relaxed) {
            0 => false,
            until => (self.born.elapsed().as_nanos() as u64) < until,
        }
    }

    /// Notes the outcome of a read: a read given up on a silent server makes the member
    /// suspect for a while, an answer clears it.
    pub(crate) fn note_read<T>(&self, r: &Result<T, BackendError>) {
        if matches!(r, Err(BackendError::Silent { .. })) {
            tracing::debug!(member = %self.name, "pool member silent under a read: reads go to other replicas");
            let until = (self.born.elapsed() + SUSPICION).as_nanos() as u64;
            self.suspect_until.store(until.max(1), Ordering::Relaxed);
        } else if r.is_ok() && self.suspect_until.load(Ordering::Relaxed) != 0 {
            self.suspect_until.store(0, Ordering::Relaxed);
        }
    }

    /// Runs `f`, an application call on this member: counted in flight meanwhile, its time
    /// added to the totals the pacing of repair and drains reads ([`Member::app_totals`]).
    pub(crate) fn app_call<R>(&self, f: impl FnOnce() -> R) -> R {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let r = f();
        let took = start.elapsed().as_nanos() as u64;
        self.inflight.fetch_sub(1, Ordering::Relaxed);
        self.app_nanos.fetch_add(took, Ordering::Relaxed);
        self.app_calls.fetch_add(1, Ordering::Relaxed);
        r
    }

    /// The application's calls on this member that ended so far and their total nanoseconds.
    pub(crate) fn app_totals(&self) -> (u64, u64) {
        (
            self.app_calls.load(Ordering::Relaxed),
            self.app_nanos.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn serves(&self) -> bool {
        self.state().serves()
    }

    pub(crate) fn takes_new(&self) -> bool {
        self.state() == MemberState::Live
    }

    pub(crate) fn free(&self) -> i64 {
        self.free.load(Ordering::Relaxed)
    }

    /// Charges `bytes` of payload placed on this member against its free estimate.
    pub(crate) fn charge(&self, bytes: usize) {
        let cost = bytes as i64 + self.overhead.load(Ordering::Relaxed) as i64;
        self.free.fetch_sub(cost, Ordering::Relaxed);
    }

    /// Whether `bytes` more are likely to fit.
    pub(crate) fn has_room(&self, bytes: usize) -> bool {
        self.free() >= bytes as i64 + self.overhead.load(Ordering::Relaxed) as i64
    }

    /// Re-reads the member's stats into the free estimate.
    pub(crate) fn refresh(&self) -> Result<(), BackendError> {
        let st = self.backend.stats()?;
        let free = st.capacity_bytes.saturating_sub(st.used_bytes);
        self.free
            .store(free.min(i64::MAX as u64) as i64, Ordering::Relaxed);
        self.overhead
            .store(st.per_object_overhead, Ordering::Relaxed);
        Ok(())
    }
}

/// A small pseudo-random source for placement choices (per pool, lock-free).
#[derive(Debug, Default)]
pub(crate) struct Dice(AtomicU64);

impl Dice {
    pub(crate) fn roll(&self, n: usize) -> usize {
        let x = mix(self.0.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed));
        (x % n as u64) as usize
    }
}

/// Picks up to `need` distinct members for a new copy of `bytes` bytes among those taking new
/// objects and not in `exclude`: each pick takes the member with more free space of two drawn at
/// random (power of two choices). Members with room come first; when none has room, none is
/// picked.
/// How many members outside `exclude` could take `bytes` of new data now (what [`choose`] picks
/// from, without charging them).
pub(crate) fn room_for(members: &[Arc<Member>], exclude: &[Ix], bytes: usize) -> usize {
    (0..members.len())
        .filter(|&i| {
            let m = &members[i];
            m.takes_new() && m.has_room(bytes) && !exclude.contains(&(i as Ix))
        })
        .count()
}

pub(crate) fn choose(
    members: &[Arc<Member>],
    exclude: &[Ix],
    need: usize,
    bytes: usize,
    dice: &Dice,
) -> Vec<Ix> {
    let mut cands: Vec<Ix> = (0..members.len())
        .filter(|&i| {
            let m = &members[i];
            m.takes_new() && m.has_room(bytes) && !exclude.contains(&(i as Ix))
        })
        .map(|i| i as Ix)
        .collect();
    let mut out = Vec::with_capacity(need);
    while out.len() < need && !cands.is_empty() {
        let a = dice.roll(cands.len());
        let pick = if cands.len() == 1 {
            a
        } else {
            let mut b = dice.roll(cands.len() - 1);
            if b >= a {
                b += 1;
            }
            let (fa, fb) = (
                members[usize::from(cands[a])].free(),
                members[usize::from(cands[b])].free(),
            );
            if fb > fa { b } else { a }
        };
        let ix = cands.swap_remove(pick);
        members[usize::from(ix)].charge(bytes);
        out.push(ix);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::EmbeddedStore;

    #[test]
    fn placement_follows_free_space_and_excludes() {
        let members: Vec<Arc<Member>> = (0..3)
            .map(|i| {
                Arc::new(Member::new(
                    Arc::new(EmbeddedStore::with_capacity((i + 1) * 1_000_000)),
                    None,
                ))
            })
            .collect();
        let dice = Dice::default();
        let mut counts = [0usize; 3];
        for _ in 0..600 {
            for ix in choose(&members, &[], 1, 1000, &dice) {
                counts[usize::from(ix)] += 1;
            }
        }
        // The biggest member gets the most; the smallest fills up first and gets the least.
        assert!(counts[2] > counts[0], "{counts:?}");
        let two = choose(&members, &[2], 2, 10, &dice);
        assert_eq!(two.len(), 2);
        assert!(!two.contains(&2));
        members[0].set_state(MemberState::Down);
        assert_eq!(choose(&members, &[2], 2, 10, &dice), vec![1]);
        assert!(is_member_failure(&BackendError::Timeout {
            addr: "x".into(),
            after_ms: 1
        }));
        assert!(!is_member_failure(&BackendError::NotFound(1)));
    }

    #[test]
    fn a_silent_read_makes_a_member_suspect_until_it_answers() {
        let m = Member::new(Arc::new(EmbeddedStore::new()), None);
        assert!(!m.is_suspect());
        let silent: Result<(), BackendError> = Err(BackendError::Silent {
            addr: "x".into(),
            after_ms: 20,
        });
        assert!(!is_member_failure(silent.as_ref().unwrap_err()));
        m.note_read(&silent);
        assert!(m.is_suspect());
        m.note_read::<()>(&Err(BackendError::NotFound(1)));
        assert!(m.is_suspect());
        m.note_read(&Ok(()));
        assert!(!m.is_suspect());
    }
}
