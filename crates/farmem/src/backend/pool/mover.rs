//! Batched moves: repair and drain copy many objects per request, with several batches in
//! flight.
//!
//! # A batch
//!
//! A batch is a list of plain objects that all need one more copy and can be read from one
//! source member. A worker takes a batch and
//!
//! 1. **claims** each object under its shard lock: only an entry that is not freed, not moving
//!    and idle (`busy == 0`) is claimed; it is marked *moving* and its state (members, `ver`)
//!    is remembered. Others are left for the single-object path ([`super::repair`]'s `fix`);
//! 2. **reads** the claimed objects from the source with one `get_many`;
//! 3. picks a **target** per object and writes each target's objects with one `put_many`
//!    (after raising the target's `moves` count and checking it still takes objects), or has
//!    the source server do 2 and 3 itself (see "Server to server" below);
//! 4. **commits** each object on its own, under its shard lock, only if it is still not freed,
//!    idle, at the remembered `ver` and members, and the target still takes objects: the
//!    target replaces the member leaving (down, removed or draining) or is added;
//! 5. **drops** copies no entry names: the leaving members' copies of committed objects (one
//!    `free` per member) and the target's copies of objects that did not commit (one `free`
//!    per target);
//! 6. **releases** every claim: a freed entry is removed now, any other one loses its moving
//!    mark.
//!
//! # Why no acknowledged write or free is lost, and no freed object comes back
//!
//! - *Writes.* A write marks its entry busy and bumps `ver` when it starts and again when it
//!   ends, both under the shard lock. The claim saw the entry idle at `ver = v`; a commit that
//!   still sees it idle at `v` knows that no write started after the claim (it would have bumped
//!   `ver`) and none was running at the claim, so the value read in step 2 (after the claim) is
//!   the last acknowledged one and the target holds exactly it. Otherwise the commit is refused
//!   and the target's copy is dropped in step 5. While an entry is moving, a write never adds
//!   members to it (whole-object writes do not substitute dead members then: they write to the
//!   serving ones, as a patch does, and the next repair round copies the new value), so the only
//!   way the target enters an entry is the mover's own commit, and a dropped target copy is
//!   never one a writer made. A write that starts after the commit sees the target in the entry
//!   and writes to it.
//! - *Frees.* A free of a moving entry does not remove it: it marks it *freed* (reads then
//!   answer "not found" and new writes of that id wait) and frees the copies its members hold.
//!   If the free came before the commit, the commit is refused (freed) and step 5 drops the
//!   target's copy, which the target has already acknowledged (step 3 ends before step 4), so
//!   the drop cannot overtake it. If the free came after the commit, the entry it read already
//!   named the target, so the free reached the target's copy, and step 5 drops the leaving
//!   member's one. In both cases the entry is removed only in step 6, after every copy the move
//!   made or left behind is gone, so a read of the freed id never finds a stray copy to adopt
//!   (an id with no entry is looked for on every member): the batch keeps the order of the
//!   single-object move (drop, then release) for every object. The batched repair reverted
//!   before released its claims before dropping the leaving copies, and a read in that gap
//!   adopted a copy of a freed object.
//! - *Members.* A target raises its `moves` count before it is checked to take objects, and a
//!   commit refuses a target that stopped taking them; a leaving member's `moves` count is
//!   raised by the commit and lowered after its copy is dropped. A drain waits for both to reach
//!   zero after its last look at the table, so no copy lands on or stays on a drained member.
//! - *Failures.* A source that fails ends the batch before anything was written; a target that
//!   fails is marked down (its copies are gone with it); a target that refuses gets its copies
//!   dropped. Objects that did not commit are left for the next round.
//!
//! # Speed
//!
//! Several workers run batches at once (each a read, a write and a few frees: the transport
//! pipelines them on shared connections), a batch costs two shard locks per object and no copy
//! of the data besides the transport's own, and the batch size follows the objects' size (about
//! a megabyte per batch while the application works, three while it is idle: see
//! `pacing.rs`).
//!
//! # Sharing the machine with the application
//!
//! Before each batch a worker asks the repairer for a turn ([`super::repair::Repairer::pace`]):
//! an AIMD controller on the application's request latency decides how many batches run at
//! once (`pacing.rs`): more while the application's calls stay within a target of their
//! latency with no mover running, half as many when they grow past it, every worker when the
//! application is idle. [`super::PoolConfig::repair_share`] caps the controller while the
//! application works and [`super::PoolConfig::repair_rate`] caps the bandwidth on top.
//!
//! # Server to server
//!
//! When the source and the target are each one memory server reached over TCP (and
//! [`super::PoolConfig::server_to_server`] is on), steps 2 and 3 are one request: the source
//! server copies the target's share of the batch straight into this client's session on the
//! target ([`farmem_proto::agent::op::OBJ_PUSH`]) and answers after the target acknowledged
//! it, with the size of each copy (or "missing"). The bytes then cross the network once and
//! the client's CPU stays out of the copy. The race rules above hold unchanged: the source
//! reads after the claim, the target has stored the copies before any commit, and a failed
//! push leaves copies that no entry names, which step 5 drops or the client path overwrites (a
//! push that fails for another reason than the source's failure is redone through the client).
//! Targets are chosen before the sizes are known, for the average size seen so far.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use super::Inner;
use super::member::{Member, MemberState, choose, is_member_failure};
use super::repair::commit;
use super::table::{Entry, Ix};
use farmem_proto::agent::{AgentMessage, PushResult, op};

use crate::backend::{BackendError, ObjectId};

/// Objects in a worker's first batch of a source (before it knows their size).
const FIRST_BATCH: usize = 32;
/// The size a batch's targets are chosen for before any object of its source was seen (a
/// server-to-server copy learns the sizes only from its answer).
const FIRST_SIZE: usize = 8 << 10;
/// Most objects in one batch.
const MAX_BATCH: usize = 2048;

/// What a batched move needs to know about an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Plan {
    /// The member to read from: the leaving copy's when it still serves, else a live one.
    src: Ix,
    /// The member whose copy the new one replaces (down, removed or draining), if any.
    from: Option<Ix>,
}

/// The batched move of `e`, when it is a plain object that needs exactly a new copy (anything
/// else is the single-object path's). A live member `evict` (a server being shrunk) counts as
/// draining.
fn plan(e: &Entry, members: &[Arc<Member>], want: usize, evict: Option<Ix>) -> Option<Plan> {
    if e.is_table() || e.is_freed() {
        return None;
    }
    let st = |m: Ix| {
        members.get(usize::from(m)).map(|x| match x.state() {
            MemberState::Live if evict == Some(m) => MemberState::Draining,
            s => s,
        })
    };
    let mut live = 0;
    let mut src = None;
    let mut draining = None;
    let mut gone = None;
    for &m in e.members() {
        match st(m) {
            Some(MemberState::Live) => {
                live += 1;
                src.get_or_insert(m);
            }
            Some(MemberState::Draining) => {
                draining.get_or_insert(m);
            }
            _ => {
                gone.get_or_insert(m);
            }
        }
    }
    if live >= want {
        return None;
    }
    // A leaving copy is read first: the live members serve the application's reads meanwhile.
    Some(Plan {
        src: draining.or(src)?,
        from: gone.or(draining),
    })
}

/// An object claimed by a batch.
struct Claim {
    id: ObjectId,
    seen: Entry,
    from: Option<Ix>,
}

/// Work shared by the workers of one [`run`]: per source, the ids still to move.
struct Queue {
    sources: Vec<(Ix, Vec<ObjectId>)>,
    next: usize,
}

impl Queue {
    /// Up to `n` ids of one source (sources taken in turn).
    fn take(&mut self, n: impl Fn(Ix) -> usize) -> Option<(Ix, Vec<ObjectId>)> {
        self.sources.retain(|(_, ids)| !ids.is_empty());
        if self.sources.is_empty() {
            return None;
        }
        self.next %= self.sources.len();
        let (src, ids) = &mut self.sources[self.next];
        self.next += 1;
        let k = n(*src).clamp(1, MAX_BATCH).min(ids.len());
        let batch = ids.split_off(ids.len() - k);
        Some((*src, batch))
    }
}

/// Moves what it can of `ids` in batches with `workers` batches in flight; returns the ids left
/// for the single-object path (tables, objects only losing a copy, busy or raced ones, objects
/// that found no room or whose batch failed). A live member `evict` (a server being shrunk) is
/// treated as draining: its copies are replaced.
pub(crate) fn run(
    inner: &Inner,
    ids: Vec<ObjectId>,
    workers: usize,
    evict: Option<Ix>,
) -> Vec<ObjectId> {
    let workers = workers.max(1);
    let members = inner.members();
    let want = inner.cfg.redundancy.copies();
    let mut left = Vec::new();
    let mut by_src: HashMap<Ix, Vec<ObjectId>> = HashMap::new();
    for id in ids {
        match inner
            .table
            .get(id)
            .and_then(|e| plan(&e, &members, want, evict))
        {
            Some(p) => by_src.entry(p.src).or_default().push(id),
            None => left.push(id),
        }
    }
    if by_src.is_empty() {
        return left;
    }
    let queue = Mutex::new(Queue {
        sources: by_src.into_iter().collect(),
        next: 0,
    });
    // Average object size per source, learnt from the batches read so far.
    let sizes: Mutex<HashMap<Ix, usize>> = Mutex::new(HashMap::new());
    let left = Mutex::new(left);
    let work = || {
        loop {
            if inner.repair.stopping() {
                return;
            }
            let next = queue.lock().take(|src| {
                sizes.lock().get(&src).map_or(FIRST_BATCH, |&avg| {
                    inner.repair.pacer.batch_bytes() / avg.max(1)
                })
            });
            let Some((src, batch)) = next else { return };
            let est = sizes.lock().get(&src).copied().unwrap_or(FIRST_SIZE);
            let _turn = inner.repair.pace(&members, workers);
            let out = batch_move(inner, src, &batch, evict, est);
            if let Some(avg) = out.avg_size {
                sizes.lock().insert(src, avg);
            }
            left.lock().extend(out.left);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..workers {
            s.spawn(work);
        }
        work();
    });
    left.into_inner()
}

/// What one batch achieved.
struct Outcome {
    /// Ids for the single-object path.
    left: Vec<ObjectId>,
    /// Average size of the objects read.
    avg_size: Option<usize>,
}

/// Moves one batch of objects read from `src` (see the module docs).
fn batch_move(inner: &Inner, src: Ix, ids: &[ObjectId], evict: Option<Ix>, est: usize) -> Outcome {
    let members = inner.members();
    let want = inner.cfg.redundancy.copies();
    let mut left = Vec::new();
    let mut claims = Vec::with_capacity(ids.len());
    for &id in ids {
        let mut shard = inner.table.shard(id);
        let Some(e) = shard.get_mut(&id) else {
            continue;
        };
        if e.is_freed() {
            continue;
        }
        if e.is_moving() || e.busy > 0 {
            left.push(id);
            continue;
        }
        match plan(e, &members, want, evict) {
            Some(p) if p.src == src => {
                e.set_moving(true);
                claims.push(Claim {
                    id,
                    seen: *e,
                    from: p.from,
                });
            }
            // Its copies changed since the plan: the single-object path decides.
            _ => left.push(id),
        }
    }
    if claims.is_empty() {
        return Outcome {
            left,
            avg_size: None,
        };
    }
    let mut b = Batch {
        inner,
        members: &members,
        claims: &claims,
        left,
        committed: vec![false; claims.len()],
        drops: HashMap::new(),
        raised: Vec::new(),
        paid: 0,
    };
    let push = inner.cfg.server_to_server;
    let avg_size = if push && members[usize::from(src)].backend.push_target().is_some() {
        b.by_push(src, est)
    } else {
        b.by_client(src)
    };
    b.finish();
    Outcome {
        left: b.left,
        avg_size,
    }
}

/// A batch's claimed objects on their way (see the module docs for the steps).
struct Batch<'a> {
    inner: &'a Inner,
    members: &'a [Arc<Member>],
    claims: &'a [Claim],
    /// Ids for the single-object path.
    left: Vec<ObjectId>,
    /// Per claim: whether its move committed.
    committed: Vec<bool>,
    /// Copies to drop, per member: the leaving members' and orphaned target copies.
    drops: HashMap<Ix, Vec<ObjectId>>,
    /// Targets whose `moves` count was raised, by how much.
    raised: Vec<(Ix, u32)>,
    /// Bytes copied by committed moves.
    paid: usize,
}

impl Batch<'_> {
    /// Step 2 and 3 through the client: reads the claimed objects from `src` with one
    /// `get_many`, writes each target's share with one `put_many`, commits. Returns the
    /// objects' average size.
    fn by_client(&mut self, src: Ix) -> Option<usize> {
        let all: Vec<usize> = (0..self.claims.len()).collect();
        let data = self.read(src, &all)?;
        let total: usize = data.iter().map(Vec::len).sum();
        // Targets: one per object, grouped.
        let mut by_target: HashMap<Ix, Vec<usize>> = HashMap::new();
        for (k, (c, d)) in self.claims.iter().zip(&data).enumerate() {
            let exclude = c.seen.members();
            match choose(self.members, exclude, 1, d.len(), &self.inner.dice).first() {
                Some(&t) => by_target.entry(t).or_default().push(k),
                None => self.left.push(c.id),
            }
        }
        for (t, idx) in by_target {
            if !self.reserve(t, &idx) {
                continue;
            }
            let items: Vec<(ObjectId, &[u8])> = idx
                .iter()
                .map(|&k| (self.claims[k].id, data[k].as_slice()))
                .collect();
            if self.write(t, &idx, &items) {
                let sizes: Vec<usize> = idx.iter().map(|&k| data[k].len()).collect();
                self.commit(t, &idx, &sizes);
            }
        }
        Some(total / data.len().max(1))
    }

    /// Steps 2 and 3 server to server: `src` copies each target's share straight to the target
    /// ([`farmem_proto::agent::op::OBJ_PUSH`]); a share whose push fails for another reason
    /// than the source's failure goes through the client instead. `est` is the expected object
    /// size (the targets are chosen before the sizes are known). Returns the objects' average
    /// size.
    fn by_push(&mut self, src: Ix, est: usize) -> Option<usize> {
        let mut by_target: HashMap<Ix, Vec<usize>> = HashMap::new();
        for (k, c) in self.claims.iter().enumerate() {
            let exclude = c.seen.members();
            match choose(self.members, exclude, 1, est, &self.inner.dice).first() {
                Some(&t) => by_target.entry(t).or_default().push(k),
                None => self.left.push(c.id),
            }
        }
        let (mut total, mut n) = (0, 0);
        let mut groups = by_target.into_iter();
        while let Some((t, idx)) = groups.next() {
            if !self.reserve(t, &idx) {
                continue;
            }
            let target = &self.members[usize::from(t)];
            let Some(to) = target.backend.push_target() else {
                self.left.extend(idx.iter().map(|&k| self.claims[k].id));
                continue;
            };
            let ids: Vec<ObjectId> = idx.iter().map(|&k| self.claims[k].id).collect();
            let args = to.args(ids).encode();
            let source = &self.members[usize::from(src)];
            let pushed = source
                .backend
                .compute(self.claims[idx[0]].id, op::OBJ_PUSH, &args)
                .and_then(|out| {
                    PushResult::decode(&out).map_err(|e| BackendError::Protocol(e.into()))
                });
            let sizes = match pushed {
                Ok(r) if r.sizes.len() == idx.len() => r.sizes,
                Err(err) if is_member_failure(&err) => {
                    // The source is gone; the target may hold some copies.
                    self.inner.mark_down(self.members, src, &err);
                    self.orphans(t, &idx);
                    self.abandon(groups);
                    return None;
                }
                r => {
                    if let Err(err) = r {
                        tracing::debug!(member = %target.name, error = %err, "a push failed: copying through the client");
                    }
                    let Some(data) = self.read(src, &idx) else {
                        // `read` left the ids; the target may hold some copies.
                        let ids = idx.iter().map(|&k| self.claims[k].id);
                        self.drops.entry(t).or_default().extend(ids);
                        self.abandon(groups);
                        return None;
                    };
                    let items: Vec<(ObjectId, &[u8])> = idx
                        .iter()
                        .zip(&data)
                        .map(|(&k, d)| (self.claims[k].id, d.as_slice()))
                        .collect();
                    // Overwrites what the push may have written.
                    if self.write(t, &idx, &items) {
                        let sizes: Vec<usize> = data.iter().map(Vec::len).collect();
                        total += sizes.iter().sum::<usize>();
                        n += sizes.len();
                        self.commit(t, &idx, &sizes);
                    }
                    continue;
                }
            };
            let (mut have, mut have_sizes) = (Vec::new(), Vec::new());
            for (&k, &size) in idx.iter().zip(&sizes) {
                if size == PushResult::MISSING {
                    // Not on the source (freed meanwhile): nothing was written for it.
                    self.left.push(self.claims[k].id);
                } else {
                    have.push(k);
                    have_sizes.push(size as usize);
                }
            }
            total += have_sizes.iter().sum::<usize>();
            n += have.len();
            self.commit(t, &have, &have_sizes);
        }
        (n > 0).then(|| total / n)
    }

    /// Leaves the claims of the target groups not copied yet.
    fn abandon(&mut self, groups: impl Iterator<Item = (Ix, Vec<usize>)>) {
        for (_, idx) in groups {
            self.left.extend(idx.iter().map(|&k| self.claims[k].id));
        }
    }

    /// Reads the claimed objects `idx` from `src`; `None` (and the ids left) when that fails.
    fn read(&mut self, src: Ix, idx: &[usize]) -> Option<Vec<Vec<u8>>> {
        let ids: Vec<ObjectId> = idx.iter().map(|&k| self.claims[k].id).collect();
        let source = &self.members[usize::from(src)];
        match source.backend.get_many(&ids) {
            Ok(d) if d.len() == ids.len() => Some(d),
            r => {
                match r {
                    Err(err) if is_member_failure(&err) => {
                        self.inner.mark_down(self.members, src, &err)
                    }
                    Err(err) => tracing::debug!(error = %err, "a repair batch could not be read"),
                    Ok(_) => tracing::debug!("a repair batch read came back short"),
                }
                self.left.extend(ids);
                None
            }
        }
    }

    /// Raises target `t`'s `moves` count for claims `idx` and checks it still takes objects;
    /// false (and the ids left) when it does not.
    fn reserve(&mut self, t: Ix, idx: &[usize]) -> bool {
        let target = &self.members[usize::from(t)];
        target.moves.fetch_add(idx.len() as u32, Ordering::SeqCst);
        self.raised.push((t, idx.len() as u32));
        // A drain that started meanwhile either sees these moves counted or is seen here.
        if target.takes_new() {
            return true;
        }
        self.left.extend(idx.iter().map(|&k| self.claims[k].id));
        false
    }

    /// Claims `idx` may have copies on `t` that no entry names: dropped in step 5, left.
    fn orphans(&mut self, t: Ix, idx: &[usize]) {
        let ids = idx.iter().map(|&k| self.claims[k].id);
        self.drops.entry(t).or_default().extend(ids.clone());
        self.left.extend(ids);
    }

    /// Writes `items` (claims `idx`) to target `t` with one `put_many`; false when that failed
    /// (the target marked down, or its copies to be dropped).
    fn write(&mut self, t: Ix, idx: &[usize], items: &[(ObjectId, &[u8])]) -> bool {
        let target = &self.members[usize::from(t)];
        match target.backend.put_many(items) {
            Ok(()) => true,
            Err(err) if is_member_failure(&err) => {
                self.inner.mark_down(self.members, t, &err);
                self.left.extend(idx.iter().map(|&k| self.claims[k].id));
                false
            }
            Err(err) => {
                tracing::debug!(member = %target.name, error = %err, "a repair batch was refused");
                // Some may have been written before the refusal.
                self.orphans(t, idx);
                false
            }
        }
    }

    /// Step 4 for claims `idx` (of `sizes` bytes) now copied to `t`.
    fn commit(&mut self, t: Ix, idx: &[usize], sizes: &[usize]) {
        let inner = self.inner;
        for (&k, &size) in idx.iter().zip(sizes) {
            let c = &self.claims[k];
            let ok = match c.from {
                Some(f) => commit(inner, c.id, &c.seen, f, |e| e.replace(f, t)),
                None => commit(inner, c.id, &c.seen, Ix::MAX, |e| e.push(t)),
            };
            if ok {
                self.committed[k] = true;
                self.paid += size;
                if let Some(f) = c.from {
                    self.drops.entry(f).or_default().push(c.id);
                }
            } else {
                self.drops.entry(t).or_default().push(c.id);
                if !inner
                    .table
                    .shard(c.id)
                    .get(&c.id)
                    .is_some_and(Entry::is_freed)
                {
                    self.left.push(c.id);
                }
            }
        }
    }

    /// Steps 5 and 6: counts, drops, `moves` counts, claims released.
    fn finish(&mut self) {
        let (inner, members) = (self.inner, self.members);
        let r = &inner.repair;
        let copies = self.committed.iter().filter(|&&c| c).count();
        r.copies.fetch_add(copies as u64, Ordering::Relaxed);
        r.bytes.fetch_add(self.paid as u64, Ordering::Relaxed);
        // Step 5: drops, while every claim is still held.
        for (m, gone) in &self.drops {
            let member = &members[usize::from(*m)];
            if member.serves()
                && let Err(e) = member.backend.free(gone)
            {
                tracing::debug!(member = %member.name, error = %e, "dropping copies failed");
            }
        }
        // The leaving members' counts were raised by the commits.
        for (k, c) in self.claims.iter().enumerate() {
            if self.committed[k]
                && let Some(f) = c.from
            {
                members[usize::from(f)].moves.fetch_sub(1, Ordering::AcqRel);
            }
        }
        for &(t, n) in &self.raised {
            members[usize::from(t)].moves.fetch_sub(n, Ordering::AcqRel);
        }
        // Step 6.
        release(inner, self.claims);
        inner.repair.take(self.paid);
    }
}

/// Ends the claims: freed entries go, the others lose their moving mark.
fn release(inner: &Inner, claims: &[Claim]) {
    for c in claims {
        let mut shard = inner.table.shard(c.id);
        if let Some(e) = shard.get_mut(&c.id) {
            if e.is_freed() {
                shard.remove(&c.id);
            } else {
                e.set_moving(false);
            }
        }
    }
}
