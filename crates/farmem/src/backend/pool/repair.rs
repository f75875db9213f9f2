//! Restoring redundancy: the maintenance thread, repair passes, drains and the bandwidth limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use farmem_proto::agent::{AgentMessage, op};
use parking_lot::{Condvar, Mutex};

use super::Inner;
use super::error::PoolError;
use super::member::{Member, MemberState, choose, is_member_failure};
use super::mover;
use super::pacing::{MOVERS, Pacer, Turn};
use super::table::{Entry, Ix};
use super::table_copy;
use crate::backend::ObjectId;

/// Repair and drain progress of a pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepairStats {
    /// Repair passes over the location table so far.
    pub passes: u64,
    /// Copies made (repairs and drain moves).
    pub copies: u64,
    /// Bytes copied by them.
    pub bytes_copied: u64,
    /// Copies dropped without a replacement (no room elsewhere, another copy remains).
    pub dropped: u64,
    /// Objects short of copies at the end of the last pass.
    pub pending: u64,
    /// Objects of the last pass that found no member with room.
    pub no_room: u64,
    /// Objects of the last pass with no live copy left.
    pub lost: u64,
}

/// The repair machinery shared by the maintenance thread and drains.
#[derive(Debug)]
pub(crate) struct Repairer {
    /// How fast movers may go (see `pacing.rs`).
    pub(super) pacer: Pacer,
    passes: AtomicU64,
    pub(super) copies: AtomicU64,
    pub(super) bytes: AtomicU64,
    dropped: AtomicU64,
    pending: AtomicU64,
    no_room: AtomicU64,
    lost: AtomicU64,
    wake: Mutex<bool>,
    cv: Condvar,
    shutdown: AtomicBool,
}

impl Repairer {
    pub(crate) fn new(rate: Option<u64>, share: f64, target: f64) -> Self {
        Self {
            pacer: Pacer::new(rate, share, target),
            passes: AtomicU64::new(0),
            copies: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            no_room: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            wake: Mutex::new(false),
            cv: Condvar::new(),
            shutdown: AtomicBool::new(false),
        }
    }

    /// Asks the maintenance thread for a pass now.
    pub(crate) fn wake(&self) {
        *self.wake.lock() = true;
        self.cv.notify_one();
    }

    pub(crate) fn shut_down(&self) {
        self.shutdown.store(true, Ordering::Release);
        self.wake();
    }

    pub(super) fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// Waits until `bytes` may be copied under the bandwidth cap.
    pub(super) fn take(&self, bytes: usize) {
        self.pacer.take(bytes);
    }

    /// Waits for a turn to run a batch, one of at most `workers` (see `pacing.rs`); the turn
    /// ends when the returned guard drops.
    pub(super) fn pace(&self, members: &[Arc<Member>], workers: usize) -> Turn<'_> {
        self.pacer.pace(members, workers, || self.stopping())
    }

    pub(crate) fn stats(&self) -> RepairStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RepairStats {
            passes: l(&self.passes),
            copies: l(&self.copies),
            bytes_copied: l(&self.bytes),
            dropped: l(&self.dropped),
            pending: l(&self.pending),
            no_room: l(&self.no_room),
            lost: l(&self.lost),
        }
    }
}

/// The body of the maintenance thread: refresh member statistics, then repair, every interval
/// or when woken.
pub(crate) fn maintenance(inner: &Arc<Inner>) {
    loop {
        {
            let mut flag = inner.repair.wake.lock();
            if !*flag && !inner.repair.stopping() {
                inner
                    .repair
                    .cv
                    .wait_for(&mut flag, inner.cfg.maintenance_interval);
            }
            *flag = false;
        }
        if inner.repair.stopping() {
            return;
        }
        inner.repair.pacer.observe(&inner.members());
        inner.refresh_members();
        pass(inner);
    }
}

/// Whether `e` lacks copies on live members or has one on a member that is leaving or gone.
fn needs_work(e: &Entry, members: &[Arc<Member>], want: usize) -> bool {
    e.members().len() < want
        || e.members()
            .iter()
            .any(|&m| members.get(usize::from(m)).is_some_and(|m| !m.takes_new()))
}

/// Batched runs over `ids` that leave some objects behind (busy, raced with another mover)
/// this many more times, while they make progress, before the single-object path takes them.
const BATCH_RETRIES: usize = 3;

/// Moves what it can of `ids` with the batched mover, retrying the objects it left while that
/// makes progress; returns the ids for the single-object path.
///
/// Server-side tables (copied page by page, one long stream each) are copied on a thread of
/// their own meanwhile, each page in a turn of the same pacing as the batches.
fn batched(inner: &Inner, ids: Vec<ObjectId>, evict: Option<Ix>) -> Vec<ObjectId> {
    let (tables, ids): (Vec<ObjectId>, Vec<ObjectId>) = ids
        .into_iter()
        .partition(|&id| inner.table.get(id).is_some_and(|e| e.is_table()));
    if tables.is_empty() {
        return batched_objects(inner, ids, evict);
    }
    std::thread::scope(|s| {
        let copier = s.spawn(|| copy_tables(inner, tables, evict));
        let mut left = batched_objects(inner, ids, evict);
        match copier.join() {
            Ok(tables_left) => left.extend(tables_left),
            Err(panic) => std::panic::resume_unwind(panic),
        }
        left
    })
}

/// Runs [`fix`] on each server-side table of `ids`; returns the ids it did not finish (for the
/// single-object path, which reports why).
fn copy_tables(inner: &Inner, ids: Vec<ObjectId>, evict: Option<Ix>) -> Vec<ObjectId> {
    let mut left = Vec::new();
    for id in ids {
        if inner.repair.stopping() {
            left.push(id);
            continue;
        }
        match fix(inner, id, evict) {
            Fix::Done | Fix::Gone => {}
            Fix::Raced | Fix::NoRoom | Fix::Lost => left.push(id),
        }
    }
    left
}

/// The batched mover over plain objects `ids` (see [`batched`]).
fn batched_objects(inner: &Inner, ids: Vec<ObjectId>, evict: Option<Ix>) -> Vec<ObjectId> {
    let mut left = mover::run(inner, ids, MOVERS, evict);
    for _ in 0..BATCH_RETRIES {
        if left.is_empty() || inner.repair.stopping() {
            break;
        }
        // Writes in flight end, other movers release their claims.
        std::thread::sleep(Duration::from_millis(1));
        let before = left.len();
        left = mover::run(inner, left, MOVERS, evict);
        if left.len() == before {
            break;
        }
    }
    left
}

/// What a batched run achieved, for the debug log of a repair pass or drain round.
struct Progress {
    /// Objects it was given.
    objects: usize,
    /// Objects it left for the single-object path.
    singles: usize,
    /// When it started and ended.
    start: Instant,
    end: Instant,
    /// Bytes copied by the pool before and after it.
    bytes: (u64, u64),
}

impl Progress {
    /// Logs the batched run and the single-object path after it (ending now).
    fn log(&self, inner: &Inner, what: &'static str, round: usize) {
        tracing::debug!(
            what,
            round,
            objects = self.objects,
            batched_ms = (self.end - self.start).as_secs_f64() * 1e3,
            batched_bytes = self.bytes.1 - self.bytes.0,
            singles = self.singles,
            singles_ms = self.end.elapsed().as_secs_f64() * 1e3,
            singles_bytes = inner.repair.stats().bytes_copied - self.bytes.1,
            "repair progress"
        );
    }
}

/// [`batched`] over `ids` (no member evicted), timed.
fn batched_timed(inner: &Inner, ids: Vec<ObjectId>) -> (Vec<ObjectId>, Progress) {
    let (start, objects) = (Instant::now(), ids.len());
    let bytes0 = inner.repair.stats().bytes_copied;
    let left = batched(inner, ids, None);
    let progress = Progress {
        objects,
        singles: left.len(),
        start,
        end: Instant::now(),
        bytes: (bytes0, inner.repair.stats().bytes_copied),
    };
    (left, progress)
}

/// Runs [`fix`] on `id` in a turn of the repairer's pacing (see [`Repairer::pace`]), unless a
/// look at its entry shows there is nothing to do now (another mover has it or moved it): most
/// of what the batched mover leaves is such, and a turn each cost a drain about a second.
/// `None` when another mover holds the object's claim. A server-side table takes a turn per
/// page of its copy instead (`table_copy.rs`).
fn fix_paced(inner: &Inner, id: ObjectId) -> Option<Fix> {
    let members = inner.members();
    let table = match inner.table.get(id) {
        None => return Some(Fix::Gone),
        Some(e) if e.is_moving() => return None,
        Some(e) if !needs_work(&e, &members, inner.cfg.redundancy.copies()) => {
            return Some(Fix::Done);
        }
        Some(e) => e.is_table(),
    };
    let _turn = (!table).then(|| inner.repair.pace(&members, MOVERS));
    Some(fix(inner, id, None))
}

/// One repair pass over the whole table.
pub(crate) fn pass(inner: &Inner) {
    let members = inner.members();
    let want = inner.cfg.redundancy.copies();
    let ids = inner.table.select(|e| needs_work(e, &members, want));
    let _moving = (!ids.is_empty()).then(|| inner.repair.pacer.moving(&members));
    let (left, progress) = batched_timed(inner, ids);
    let (mut pending, mut no_room, mut lost) = (0, 0, 0);
    for id in left {
        if inner.repair.stopping() {
            return;
        }
        match fix_paced(inner, id).unwrap_or(Fix::Raced) {
            Fix::Done | Fix::Gone => {}
            Fix::Raced => pending += 1,
            Fix::NoRoom => {
                pending += 1;
                no_room += 1;
            }
            Fix::Lost => lost += 1,
        }
    }
    if progress.objects > 0 {
        progress.log(inner, "repair pass", 0);
    }
    let r = &inner.repair;
    r.pending.store(pending, Ordering::Relaxed);
    r.no_room.store(no_room, Ordering::Relaxed);
    r.lost.store(lost, Ordering::Relaxed);
    r.passes.fetch_add(1, Ordering::Relaxed);
}

/// Moves every object off draining member `m`.
pub(crate) fn drain(inner: &Inner, m: Ix) -> Result<(), PoolError> {
    let name = || inner.members()[usize::from(m)].name.clone();
    let _moving = inner.repair.pacer.moving(&inner.members());
    let mut remaining = 0;
    let mut round = 0;
    while round < 1000 {
        // Placement reads member states under the shard locks, and this select takes every
        // shard lock after the member stopped taking new objects: nothing can slip past.
        let ids = inner.table.select(|e| e.contains(m));
        // Another mover (the maintenance thread's pass) working on one of them makes progress
        // for us: wait for it without counting the round (a large table takes a while).
        if ids
            .iter()
            .any(|&id| inner.table.get(id).is_some_and(|e| e.is_moving()))
            && ids.len() < 64
        {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        round += 1;
        if ids.is_empty() {
            // Moves committed by other movers may still owe the drop of this member's copy.
            let member = &inner.members()[usize::from(m)];
            while member.moves.load(Ordering::SeqCst) > 0 {
                std::thread::sleep(Duration::from_micros(100));
            }
            return Ok(());
        }
        remaining = ids.len();
        if round > 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (left, progress) = batched_timed(inner, ids);
        let mut own = 0;
        let others = !left.is_empty();
        for id in left {
            match fix_paced(inner, id) {
                Some(Fix::NoRoom) => return Err(PoolError::NoRoom { member: name(), id }),
                Some(Fix::Done | Fix::Gone | Fix::Raced | Fix::Lost) => own += 1,
                None => {}
            }
        }
        if own == 0 && others {
            // Every object left is another mover's now (the maintenance thread's pass): it
            // makes progress for us, so the round does not count.
            round -= 1;
        }
        progress.log(inner, "drain round", round);
    }
    Err(PoolError::DrainStalled {
        member: name(),
        remaining,
    })
}

/// What [`fix`] achieved.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fix {
    /// Fully replicated on live members (or nothing more can be done without room: copies
    /// dropped from leaving members while another copy remains).
    Done,
    /// The object was freed.
    Gone,
    /// Writes kept racing the copy.
    Raced,
    /// No member has room for another copy.
    NoRoom,
    /// No live copy left.
    Lost,
}

/// Drops the copy of `id` held by `m` (best effort: the member may be leaving).
fn drop_copy(m: &Member, id: ObjectId, table: bool) {
    let r = if table {
        m.backend.compute(id, op::HT_DROP, &id.encode()).map(drop)
    } else {
        m.backend.free(&[id])
    };
    if let Err(e) = r {
        tracing::debug!(member = %m.name, id, error = %e, "dropping a moved copy failed");
    }
}

/// Moves object `id` off live member `from` to another member with room (a server being shrunk),
/// with the race rules of a drain; never drops a copy without a replacement ([`Fix::NoRoom`]).
pub(crate) fn move_off(inner: &Inner, id: ObjectId, from: Ix) -> Fix {
    fix(inner, id, Some(from))
}

/// Brings object `id` to full redundancy on live members, replacing copies on members that are
/// down, removed or draining (and on `evict`, treated as draining). Safe against concurrent
/// writers, frees and other movers (see [`Entry`]).
fn fix(inner: &Inner, id: ObjectId, evict: Option<Ix>) -> Fix {
    for attempt in 0..64 {
        let fence = attempt >= FENCE_AFTER;
        let claimed = {
            let mut shard = inner.table.shard(id);
            match shard.get_mut(&id) {
                None => return Fix::Gone,
                Some(e) if e.is_freed() => return Fix::Gone,
                Some(e) if e.is_moving() => return Fix::Raced,
                Some(e) if e.busy > 0 && !fence => None,
                Some(e) => {
                    e.set_moving(true);
                    if fence {
                        e.set_fenced();
                    }
                    Some(*e)
                }
            }
        };
        let Some(mut e) = claimed else {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        };
        if fence {
            match settle(inner, id) {
                Some(idle) => e = idle,
                None => {
                    // Writes in flight did not end in time (they may wait on another fence):
                    // let them through and try again later.
                    release(inner, id, None, e.is_table());
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
        }
        let (step, orphan, target) = step(inner, id, &e, evict);
        release(inner, id, orphan, e.is_table());
        if let Some(t) = target {
            inner.members()[usize::from(t)]
                .moves
                .fetch_sub(1, Ordering::AcqRel);
        }
        match step {
            Step::Again => continue,
            Step::Finished(f) => return f,
        }
    }
    Fix::Raced
}

/// Failed claims or commits of one object after which [`fix`] fences its entry.
const FENCE_AFTER: usize = 3;

/// How long a fenced move waits for the writes in flight to end.
const SETTLE_TIMEOUT: Duration = Duration::from_millis(50);

/// Waits until the fenced, claimed entry of `id` has no write in flight; returns it then, or
/// `None` after [`SETTLE_TIMEOUT`] or when it is gone or freed.
fn settle(inner: &Inner, id: ObjectId) -> Option<Entry> {
    let start = Instant::now();
    loop {
        match inner.table.shard(id).get(&id) {
            Some(e) if e.is_freed() => return None,
            Some(e) if e.busy == 0 => return Some(*e),
            Some(_) => {}
            None => return None,
        }
        if start.elapsed() >= SETTLE_TIMEOUT {
            return None;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// What one step of [`fix`] leads to.
pub(super) enum Step {
    Again,
    Finished(Fix),
}

/// One copy or drop on a claimed entry `e`; returns the outcome, a member holding a copy that
/// did not get into the entry, and the member copied to (its `moves` count was raised).
fn step(
    inner: &Inner,
    id: ObjectId,
    e: &Entry,
    evict: Option<Ix>,
) -> (Step, Option<Ix>, Option<Ix>) {
    let want = inner.cfg.redundancy.copies();
    let members = inner.members();
    let st = |m: Ix| match members[usize::from(m)].state() {
        MemberState::Live if evict == Some(m) => MemberState::Draining,
        s => s,
    };
    let live: Vec<Ix> = e
        .members()
        .iter()
        .copied()
        .filter(|&m| st(m) == MemberState::Live)
        .collect();
    let draining: Vec<Ix> = e
        .members()
        .iter()
        .copied()
        .filter(|&m| st(m) == MemberState::Draining)
        .collect();
    if live.is_empty() && draining.is_empty() {
        return (Step::Finished(Fix::Lost), None, None);
    }
    let gone = e.members().iter().copied().find(|&m| !st(m).serves());
    let from = gone.or(draining.first().copied());
    if from.is_none() && live.len() >= want {
        return (Step::Finished(Fix::Done), None, None);
    }
    if let Some(f) = from
        && live.len() >= want
    {
        // Enough live copies: just forget the leaving one.
        if commit(inner, id, e, f, |e| e.remove(f)) {
            drop_moved(&members[usize::from(f)], id, e.is_table());
        }
        return (Step::Again, None, None);
    }
    if e.is_table() {
        return table_copy::step(inner, id, e, &live, &draining, from, evict);
    }
    // Copy from a live replica (a draining one if need be) to a new member.
    let mut copy = None;
    // A leaving copy first: the live members serve the application's reads meanwhile.
    for &s in draining.iter().chain(&live) {
        match members[usize::from(s)].backend.get(id) {
            Ok(c) => {
                copy = Some(c);
                break;
            }
            Err(err) if is_member_failure(&err) => inner.mark_down(&members, s, &err),
            Err(err) => {
                tracing::debug!(id, error = %err, "repair could not read a copy");
            }
        }
    }
    let Some(copy) = copy else {
        return (Step::Finished(Fix::Raced), None, None);
    };
    let bytes = copy.len();
    let Some(&t) = choose(&members, e.members(), 1, bytes, &inner.dice).first() else {
        return no_target(inner, id, e, from, !live.is_empty(), evict);
    };
    let target = &members[usize::from(t)];
    if !reserve(target) {
        return (Step::Again, None, Some(t));
    }
    match target.backend.put(id, &copy) {
        Ok(()) => {}
        Err(err) if is_member_failure(&err) => {
            inner.mark_down(&members, t, &err);
            return (Step::Again, None, Some(t));
        }
        Err(err) => {
            tracing::debug!(id, member = %target.name, error = %err, "repair copy refused");
            return (Step::Finished(Fix::NoRoom), Some(t), Some(t));
        }
    }
    finish_copy(inner, id, e, from, t, bytes)
}

/// Raises `target`'s `moves` count for a copy to it; false when it no longer takes objects
/// (the count stays raised: the caller lowers it).
pub(super) fn reserve(target: &Member) -> bool {
    target.moves.fetch_add(1, Ordering::SeqCst);
    // A drain that started meanwhile either sees this move counted or is seen here.
    target.takes_new()
}

/// The step of [`fix`] when no member has room for another copy of the claimed entry `e`: a
/// copy on a leaving member `from` is dropped if another remains (`others`), unless `from` is
/// being shrunk.
pub(super) fn no_target(
    inner: &Inner,
    id: ObjectId,
    e: &Entry,
    from: Option<Ix>,
    others: bool,
    evict: Option<Ix>,
) -> (Step, Option<Ix>, Option<Ix>) {
    if let Some(f) = from
        && others
        && evict != Some(f)
    {
        // No room for a replacement, but another copy remains: degrade.
        if commit(inner, id, e, f, |e| e.remove(f)) {
            inner.repair.dropped.fetch_add(1, Ordering::Relaxed);
            drop_moved(&inner.members()[usize::from(f)], id, e.is_table());
        }
        return (Step::Again, None, None);
    }
    (Step::Finished(Fix::NoRoom), None, None)
}

/// The end of a step of [`fix`] that copied `bytes` of the claimed entry `e` to `t`: commits
/// the copy in place of `from` (or beside the others), counts it, drops `from`'s copy, pays the
/// bandwidth limit.
pub(super) fn finish_copy(
    inner: &Inner,
    id: ObjectId,
    e: &Entry,
    from: Option<Ix>,
    t: Ix,
    bytes: usize,
) -> (Step, Option<Ix>, Option<Ix>) {
    let committed = match from {
        Some(f) => commit(inner, id, e, f, |e| e.replace(f, t)),
        None => commit(inner, id, e, Ix::MAX, |e| e.push(t)),
    };
    if !committed {
        return (Step::Again, Some(t), Some(t));
    }
    let r = &inner.repair;
    r.copies.fetch_add(1, Ordering::Relaxed);
    r.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    if let Some(f) = from {
        drop_moved(&inner.members()[usize::from(f)], id, e.is_table());
    }
    // The bandwidth limit is paid after the copy, outside the claim (a table's copy paid it
    // page by page).
    if !e.is_table() {
        inner.repair.take(bytes);
    }
    (Step::Again, None, Some(t))
}

/// Ends a claim on `id`: drops the copy on `orphan` unless it got into the entry, removes an
/// entry freed meanwhile, clears the moving mark otherwise.
fn release(inner: &Inner, id: ObjectId, orphan: Option<Ix>, table: bool) {
    if let Some(t) = orphan {
        let keep = inner
            .table
            .shard(id)
            .get(&id)
            .is_some_and(|e| !e.is_freed() && e.contains(t));
        if !keep {
            // Still claimed: no writer or mover can put `t` into the entry meanwhile.
            drop_copy(&inner.members()[usize::from(t)], id, table);
        }
    }
    let mut shard = inner.table.shard(id);
    if let Some(e) = shard.get_mut(&id) {
        if e.is_freed() {
            shard.remove(&id);
        } else {
            e.set_moving(false);
        }
    }
}

/// Drops the copy `m` held before a committed move, if `m` still serves.
fn drop_moved(m: &Member, id: ObjectId, table: bool) {
    if m.serves() {
        drop_copy(m, id, table);
    }
    m.moves.fetch_sub(1, Ordering::AcqRel);
}

/// Applies `f` to the claimed entry of `id` if no write started or ended since `seen` was read,
/// it was not freed, and the members it adds still take objects; true when applied. A member
/// `leaving` the entry (`Ix::MAX`: none) then owes a drop of its copy ([`drop_moved`]).
pub(super) fn commit(
    inner: &Inner,
    id: ObjectId,
    seen: &Entry,
    leaving: Ix,
    f: impl FnOnce(&mut Entry),
) -> bool {
    let mut shard = inner.table.shard(id);
    let members = inner.members();
    let Some(e) = shard.get_mut(&id) else {
        return false;
    };
    if e.is_freed() || e.ver != seen.ver || e.busy != 0 || e.members() != seen.members() {
        return false;
    }
    let mut next = *e;
    f(&mut next);
    // A target chosen before it started draining must not get in after the drain's last look.
    if next
        .members()
        .iter()
        .any(|&m| !seen.contains(m) && !members[usize::from(m)].takes_new())
    {
        return false;
    }
    next.ver = next.ver.wrapping_add(1);
    *e = next;
    if let Some(m) = members.get(usize::from(leaving)) {
        m.moves.fetch_add(1, Ordering::AcqRel);
    }
    true
}
