//! Erasure coding of a pool ([`Redundancy::Coded`](super::Redundancy::Coded)), after Carbink
//! (OSDI'22).
//!
//! # Layout
//!
//! Each object stays **whole on one member** under a key of its own, so a failure-free read is
//! one request to one member and costs what it costs without redundancy. Objects are packed
//! into *spans*: a stripe has `k` data spans on `k` distinct members and `m` parity spans on `m`
//! further members. A span is a list of objects on its member laid end to end (the layout is
//! kept by the client; the member just stores objects), and parity is Reed-Solomon over the
//! spans padded to the longest. Any `m` members of a stripe may fail: the lost spans are
//! computed from any `k` others. See `layout.rs` for the bookkeeping, `codec.rs` for the crate.
//!
//! # Writes: log-structured, for write-back batches
//!
//! Every write (a `put`, each object of a `put_many`) is a **new version in a fresh slot** of
//! the open stripe; sealed stripes are never modified, so parity never needs a read-modify-write
//! and a write interrupted by a failure can never leave a sealed stripe inconsistent
//! (`write.rs`):
//! 1. the batch's objects are appended to the least filled spans of the open stripe (the client
//!    keeps a copy of every unsealed span in memory: about `k` spans, more only while parity
//!    has no room, see below) and the index points at the new versions;
//! 2. each object is sent to its span's member, one request per member for the whole batch, in
//!    parallel; the write is **acknowledged once its member holds it**. Until the stripe is
//!    sealed the client's copy is the second copy: any number of member failures lose nothing
//!    while the client lives (and a client that dies takes its session, and all its objects,
//!    with it). When a member fails mid-write, its span of the open stripe moves to another
//!    member (written again from the client's copy) and the write completes there. When a
//!    member *refuses* the objects and no member has room for its span, the write fails and
//!    each refused object keeps its previous version: a sealed (or sealing) one's stripe stays
//!    until the batch knows which versions were taken, and an unsealed one is still in the
//!    client's copy. Compaction's refused copies lose nothing the same way;
//! 3. when the open stripe holds `k` spans' worth of bytes and no batch is still sending into it,
//!    the writer that finished last *seals* it: computes the `m` parity spans from its copy,
//!    writes them to `m` other members, and only then drops its copy. A stripe left partly
//!    filled is sealed by the maintenance thread after [`CodingOptions::seal_after`].
//!
//! A member failing during a seal gets its data span moved (from the client's copy) or its parity
//! span written elsewhere before the seal completes. A member that refuses a write as full has
//! its span of the open stripe moved the same way, to a member with room. A full stripe for
//! whose `m` parity spans too few members have room (members down or full) stays open, held by
//! the client, until members come back, rather than be sealed able to survive fewer than `m`
//! failures; past [`CodingOptions::hold_unsealed`] of held data, stripes are sealed with the
//! parity there is room for, and repair adds the rest once there is.
//!
//! # Reads
//!
//! One request to the object's member. When it is down, an unsealed object is served from the
//! client's copy; a sealed one by a *degraded read*: the same byte range of `k` other spans of
//! its stripe (only the few objects of each data span that overlap it, and only the parity
//! pages under it: parity spans are stored as pages of `PARITY_PAGE`
//! bytes), all requests in flight at once (one round trip), only that range decoded
//! (`read.rs`). Only the object's own range is decoded, and kept for the next reads of it
//! (`cache.rs`). Rebuild traffic goes in chunks that give way to degraded reads in flight
//! (`rebuild.rs`), so a demand read never queues behind a whole stripe.
//!
//! # Dead space and compaction
//!
//! An overwritten or freed object of a sealed stripe stays on its member as *dead space* (the
//! parity still needs it). A stripe whose objects are all dead is freed at once, parity
//! included; otherwise stripes are *compacted*: while dead bytes exceed
//! [`CodingOptions::compact_slack`] of the live bytes, the stripe with the most dead bytes has its
//! live objects written again (as new versions, only if still current, so a racing application
//! write wins) and the old stripe dies and is freed (`compact.rs`). Compaction keeps pace with
//! the application: a write or free batch that leaves dead bytes while over the slack compacts
//! until it has reclaimed as much as it created, and the maintenance thread takes the rest. So
//! memory stays near `(k + m) / k` of the live bytes *during* a run with frees, not only after.
//!
//! # Repair
//!
//! The maintenance thread rebuilds every span of a sealed stripe that sits on a member that is
//! down, removed or draining: it fetches any `k` spans of the stripe, decodes the others and
//! writes the lost ones to members outside the stripe (`rebuild.rs`). A stripe sealed with fewer
//! than `m` parity spans (too few members at the time) gets the rest once there are members.
//! A down member whose server comes back with its session is revived draining (the pool's
//! `rejoin.rs`): its spans serve reads again, so stripes that lost more than `m` spans are
//! readable again, until their stripes are rebuilt off it and its session is closed.
//!
//! With no member outside a stripe (a pool of exactly `k + m` members), a lost data span is
//! rebuilt onto a *substitute*: a member of the stripe that already holds another of its spans.
//! Reads of its objects are then one request again instead of a decode, and the stripe survives
//! as many further failures as it did degraded; it moves to a member of its own once one is
//! added (`rebuild.rs`).
//!
//! # Small objects
//!
//! [`PoolConfig::code_from`](super::PoolConfig::code_from) replicates objects below a size
//! beside the coded ones (on `m + 1` members, as the hash tables), so that large containers
//! (vector chunks, columns, paging regions) are coded and small objects keep one-request writes
//! (the pool's `mixed.rs`).
//!
//! # Limits
//!
//! Vector operations of the remote agent run on the member holding each chunk, over its
//! current key (the pool's [`Sites`](crate::backend::Sites) names chunks by key); chunks on a
//! failed member, or moved by a write or compaction under the operation, are computed on the
//! client from degraded reads. Outputs the agent writes on a member are read back, freed there
//! and written through the coded path. A direct single-member `compute` over coded objects is
//! refused ([`BackendError::Config`]).
//! The agent's server-side hash tables (`HT_*`) are not byte objects: the pool replicates them
//! on `m + 1` members ([`Redundancy::copies`](super::Redundancy::copies)), so a `FarHashMap`
//! works on a coded pool and survives as many failures as its coded data.

mod cache;
mod codec;
mod compact;
mod layout;
mod read;
mod rebuild;
mod write;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use self::codec::Codec;
pub use self::codec::CodingError;
use self::layout::{Key, Layout, Phase};
use super::Inner;
use super::fanout::fan_out;
use super::member::is_member_failure;
use super::table::Ix;
use crate::backend::BackendError;

/// Tuning of a [`Redundancy::Coded`](super::Redundancy::Coded) pool.
///
/// ```
/// use std::time::Duration;
/// use farmem::backend::pool::CodingOptions;
/// let o = CodingOptions::default().span_bytes(32 << 10).seal_after(Duration::from_millis(50));
/// assert_eq!(o.span_bytes, 32 << 10);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CodingOptions {
    /// Bytes a data span takes before its stripe is sealed (an object larger than this fills a
    /// span alone).
    pub span_bytes: usize,
    /// Dead bytes allowed, as a share of live bytes, before compaction starts.
    pub compact_slack: f64,
    /// A partly filled stripe with no write in flight is sealed after this long.
    pub seal_after: Duration,
    /// Whether a write or free batch that leaves dead space while over the slack compacts in
    /// step, before it returns (memory stays near the scheme's factor during a run), or leaves
    /// all compaction to the maintenance thread (writes return sooner; dead space can grow
    /// between its passes). Default on.
    pub compact_inline: bool,
    /// Most bytes of full stripes the client keeps unsealed (its copy is their second copy)
    /// while too few members can take their parity (members down or full), rather than seal
    /// them with fewer than `m` parity spans. Past it, stripes are sealed with the parity
    /// there is room for, and repair adds the rest later.
    pub hold_unsealed: usize,
}

impl Default for CodingOptions {
    /// 128 KiB spans (parity pads every span to the longest, which is at most one object
    /// longer than the others: small against 128 KiB), 1% dead space, sealing after 100 ms,
    /// up to 64 MiB held unsealed while parity has no room.
    fn default() -> Self {
        Self {
            span_bytes: 128 << 10,
            compact_slack: 0.01,
            seal_after: Duration::from_millis(100),
            compact_inline: true,
            hold_unsealed: 64 << 20,
        }
    }
}

impl CodingOptions {
    /// Sets [`CodingOptions::span_bytes`] (at least 64).
    #[must_use]
    pub fn span_bytes(mut self, bytes: usize) -> Self {
        self.span_bytes = bytes.max(64);
        self
    }

    /// Sets [`CodingOptions::compact_slack`].
    #[must_use]
    pub fn compact_slack(mut self, share: f64) -> Self {
        self.compact_slack = share.max(0.0);
        self
    }

    /// Sets [`CodingOptions::compact_inline`].
    #[must_use]
    pub fn compact_inline(mut self, on: bool) -> Self {
        self.compact_inline = on;
        self
    }

    /// Sets [`CodingOptions::hold_unsealed`] (0: seal at once with the parity there is room
    /// for).
    #[must_use]
    pub fn hold_unsealed(mut self, bytes: usize) -> Self {
        self.hold_unsealed = bytes;
        self
    }

    /// Sets [`CodingOptions::seal_after`].
    #[must_use]
    pub fn seal_after(mut self, after: Duration) -> Self {
        self.seal_after = after;
        self
    }
}

/// State of the coded data of a pool, from
/// [`PoolBackend::coded_stats`](super::PoolBackend::coded_stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodedStats {
    /// Objects.
    pub objects: u64,
    /// Stripes (open and sealed).
    pub stripes: u64,
    /// Stripes not yet sealed (held by the client).
    pub unsealed: u64,
    /// Bytes of the client's copies of those stripes.
    pub unsealed_bytes: u64,
    /// Sealed stripes with a span on a member that is gone, or short of parity.
    pub degraded: u64,
    /// Bytes of live objects.
    pub live_bytes: u64,
    /// Bytes of dead objects still held by members.
    pub dead_bytes: u64,
    /// Bytes of parity held by members.
    pub parity_bytes: u64,
    /// Sealed stripes with fewer than `m` parity spans (members had no room for the rest when
    /// they were sealed or rebuilt; repair adds it once there is room).
    pub short_parity: u64,
    /// Bytes of live objects in those stripes.
    pub short_parity_live_bytes: u64,
    /// Parity sets written with fewer than `m` spans (seals and rebuilds), since the start.
    pub sealed_short: u64,
    /// Reads served by decoding.
    pub degraded_reads: u64,
    /// Spans (data or parity) rebuilt onto other members.
    pub rebuilt_spans: u64,
    /// Bytes those rebuilt spans wrote to members (data slots and parity).
    pub rebuilt_bytes: u64,
    /// Stripes compacted.
    pub compacted: u64,
    /// Time the reads served by decoding spent fetching the `k` ranges (all requests in
    /// flight at once), in nanoseconds summed over the reads.
    pub degraded_fetch_ns: u64,
    /// Time they spent decoding, in nanoseconds summed over the reads.
    pub degraded_decode_ns: u64,
    /// Their whole time from the first request sent to the bytes returned (fetch, decode,
    /// copy out), in nanoseconds summed over the reads.
    pub degraded_read_ns: u64,
    /// Reads served by decoding that started while a rebuild was fetching or writing spans.
    pub degraded_reads_during_rebuild: u64,
}

#[derive(Debug, Default)]
struct Counters {
    degraded_reads: AtomicU64,
    rebuilt_spans: AtomicU64,
    rebuilt_bytes: AtomicU64,
    compacted: AtomicU64,
    sealed_short: AtomicU64,
    fetch_ns: AtomicU64,
    decode_ns: AtomicU64,
    read_ns: AtomicU64,
    during_rebuild: AtomicU64,
}

/// The coded data path of a pool (shared with its maintenance thread).
pub(crate) struct Engine {
    pub(crate) pool: Arc<Inner>,
    k: usize,
    m: usize,
    opts: CodingOptions,
    /// Read-mostly: every read takes it shared; writes, seals, rebuilds and compaction take
    /// it exclusive for bookkeeping only (never across a network call).
    layout: RwLock<Layout>,
    codec: Codec,
    /// Ranges of spans decoded by degraded reads.
    decoded: Mutex<cache::Decoded>,
    counters: Counters,
    /// Degraded reads fetching or decoding now (rebuild traffic gives way to them).
    demand: AtomicU32,
    /// Signalled (under `demand_lock`) when the last degraded read in flight ends: rebuilds
    /// giving way sleep on it instead of polling, which on a loaded machine took CPU from the
    /// reads they were waiting for.
    demand_done: Condvar,
    demand_lock: Mutex<()>,
    /// Rebuilds fetching or writing spans now.
    rebuilding: AtomicU32,
    /// Whether the last seal found too few members for full parity (logged once per spell).
    parity_short: AtomicBool,
    /// Whether full stripes are held in the client for lack of parity members (logged once
    /// per spell).
    holding: AtomicBool,
    /// One maintenance pass at a time.
    maint: Mutex<()>,
    wake: Mutex<bool>,
    cv: Condvar,
    stop: AtomicBool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("k", &self.k)
            .field("m", &self.m)
            .finish_non_exhaustive()
    }
}

/// One of a count of operations in flight (degraded reads, rebuilds): counted from
/// [`InFlight::enter`] until dropped.
struct InFlight<'a>(&'a AtomicU32);

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicU32) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A degraded read in flight: counted in `Engine::demand` until dropped; the last one to end
/// wakes the rebuilds giving way to the reads.
struct Demand<'a>(&'a Engine);

impl<'a> Demand<'a> {
    fn enter(e: &'a Engine) -> Self {
        e.demand.fetch_add(1, Ordering::AcqRel);
        Self(e)
    }
}

impl Drop for Demand<'_> {
    fn drop(&mut self) {
        if self.0.demand.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Under the lock: a rebuild that saw reads in flight is asleep on the condition
            // variable by now, or will see the count at zero.
            let _g = self.0.demand_lock.lock();
            self.0.demand_done.notify_all();
        }
    }
}

/// The coded data path and its maintenance thread (stopped on drop).
#[derive(Debug)]
pub(crate) struct Coded {
    pub(crate) engine: Arc<Engine>,
    thread: Option<JoinHandle<()>>,
}

impl Coded {
    /// Starts coding `k + m` over `pool`'s members.
    pub(crate) fn start(pool: Arc<Inner>, k: u8, m: u8, opts: CodingOptions) -> Self {
        let engine = Arc::new(Engine {
            pool,
            k: usize::from(k),
            m: usize::from(m),
            opts,
            layout: RwLock::new(Layout::default()),
            codec: Codec::default(),
            decoded: Mutex::new(cache::Decoded::default()),
            counters: Counters::default(),
            demand: AtomicU32::new(0),
            demand_done: Condvar::new(),
            demand_lock: Mutex::new(()),
            rebuilding: AtomicU32::new(0),
            parity_short: AtomicBool::new(false),
            holding: AtomicBool::new(false),
            maint: Mutex::new(()),
            wake: Mutex::new(false),
            cv: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let bg = engine.clone();
        let thread = std::thread::Builder::new()
            .name("farmem-coded".into())
            .spawn(move || bg.run())
            .ok();
        if thread.is_none() {
            tracing::warn!("coded pool maintenance thread could not start: it runs on demand only");
        }
        Self { engine, thread }
    }
}

impl Drop for Coded {
    fn drop(&mut self) {
        self.engine.stop.store(true, Ordering::SeqCst);
        {
            let mut w = self.engine.wake.lock();
            *w = true;
            self.engine.cv.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Engine {
    fn run(&self) {
        let every = self
            .opts
            .seal_after
            .min(self.pool.cfg.maintenance_interval)
            .max(Duration::from_millis(5));
        loop {
            {
                let mut w = self.wake.lock();
                if !*w && !self.stop.load(Ordering::SeqCst) {
                    self.cv.wait_for(&mut w, every);
                }
                *w = false;
            }
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            self.maintain(false);
        }
    }

    /// Wakes the maintenance thread.
    pub(crate) fn wake(&self) {
        let mut w = self.wake.lock();
        *w = true;
        self.cv.notify_one();
    }

    /// One maintenance pass: seal idle stripes (every unsealed one with `all`), rebuild lost
    /// spans, compact dead space. Returns the stripes still degraded or unsealed afterwards.
    pub(crate) fn maintain(&self, all: bool) -> usize {
        let _g = self.maint.lock();
        self.seal_idle(all);
        self.rebuild_all();
        self.compact(all);
        if all {
            // Compaction's writes went to a new open stripe.
            self.seal_idle(true);
        }
        let st = self.stats();
        (st.degraded + if all { st.unsealed } else { 0 }) as usize
    }

    /// Whether member `ix` holds a span of a sealed stripe that fewer than `k` spans on other
    /// serving members could rebuild: its server then holds data nothing else has.
    pub(crate) fn needs_member(&self, ix: Ix) -> bool {
        let members = self.pool.members();
        let serves = |m: Ix| {
            members
                .get(usize::from(m))
                .is_none_or(|x| x.state().serves())
        };
        let l = self.layout.read();
        l.stripes.iter().any(|(_, st)| {
            st.phase == Phase::Sealed && {
                let on = st.members();
                on.contains(&ix) && on.iter().filter(|&&m| m != ix && serves(m)).count() < self.k
            }
        })
    }

    /// Whether some stripe (open or sealed) has a data or parity span on member `ix`.
    pub(crate) fn names_member(&self, ix: Ix) -> bool {
        let l = self.layout.read();
        l.stripes.values().any(|st| st.members().contains(&ix))
    }

    /// Keys the layout has member `ix` hold: the slots of its spans (those of sealed stripes
    /// left out of the parity were freed at the seal) and its parity pages.
    #[cfg(test)]
    pub(crate) fn keys_on(&self, ix: Ix) -> u64 {
        let l = self.layout.read();
        let mut n = 0;
        for st in l.stripes.values() {
            for sp in st.spans.iter().filter(|sp| sp.member == ix) {
                n += sp
                    .slots
                    .iter()
                    .filter(|s| st.phase != Phase::Sealed || s.state != layout::SlotState::Gone)
                    .count() as u64;
            }
            let mine: Vec<_> = st.parity.iter().filter(|p| p.0 == ix).copied().collect();
            n += layout::parity_page_keys(&mine, st.shard_len).len() as u64;
        }
        n
    }

    /// Counts of the coded data.
    pub(crate) fn stats(&self) -> CodedStats {
        let members = self.pool.members();
        let l = self.layout.read();
        let degraded = l
            .stripes
            .values()
            .filter(|s| s.phase == Phase::Sealed && self.needs_rebuild(s, &members))
            .count();
        let short = l
            .stripes
            .values()
            .filter(|s| s.phase == Phase::Sealed && s.parity.len() < self.m);
        let (short_parity, short_parity_live_bytes) =
            short.fold((0, 0), |(n, b), s| (n + 1, b + s.live_bytes));
        CodedStats {
            objects: l.index.len() as u64,
            stripes: l.stripes.len() as u64,
            unsealed: l
                .stripes
                .values()
                .filter(|s| s.phase != Phase::Sealed)
                .count() as u64,
            unsealed_bytes: l.unsealed_bytes,
            degraded: degraded as u64,
            live_bytes: l.live_bytes,
            dead_bytes: l.dead_bytes,
            parity_bytes: l.parity_bytes(),
            short_parity,
            short_parity_live_bytes,
            sealed_short: self.counters.sealed_short.load(Ordering::Relaxed),
            degraded_reads: self.counters.degraded_reads.load(Ordering::Relaxed),
            rebuilt_spans: self.counters.rebuilt_spans.load(Ordering::Relaxed),
            rebuilt_bytes: self.counters.rebuilt_bytes.load(Ordering::Relaxed),
            compacted: self.counters.compacted.load(Ordering::Relaxed),
            degraded_fetch_ns: self.counters.fetch_ns.load(Ordering::Relaxed),
            degraded_decode_ns: self.counters.decode_ns.load(Ordering::Relaxed),
            degraded_read_ns: self.counters.read_ns.load(Ordering::Relaxed),
            degraded_reads_during_rebuild: self.counters.during_rebuild.load(Ordering::Relaxed),
        }
    }

    /// Which of `ids` are coded objects of this engine.
    pub(crate) fn holds(&self, ids: &[u64]) -> Vec<bool> {
        let l = self.layout.read();
        ids.iter().map(|id| l.index.contains_key(id)).collect()
    }

    /// Whether `id` is a coded object of this engine.
    pub(crate) fn holds_one(&self, id: u64) -> bool {
        self.layout.read().index.contains_key(&id)
    }

    /// The member holding each of `ids` whole and the key it has there (`None` for an object
    /// not on the coded path).
    pub(crate) fn places(&self, ids: &[u64]) -> Vec<Option<(Ix, Key)>> {
        let l = self.layout.read();
        ids.iter()
            .map(|&id| l.target(id).map(|t| (t.member, t.key)))
            .collect()
    }

    /// The member holding object `id` whole.
    pub(crate) fn location(&self, id: u64) -> Option<Ix> {
        self.layout.read().target(id).map(|t| t.member)
    }

    /// Frees `keys` on their members, best effort (a member that fails is marked down; keys
    /// left on a live member are only wasted space).
    fn free_keys(&self, keys: Vec<(Ix, Key)>) {
        if keys.is_empty() {
            return;
        }
        let members = self.pool.members();
        let mut groups: Vec<(Ix, Vec<Key>)> = Vec::new();
        for (ix, key) in keys {
            if !members.get(usize::from(ix)).is_some_and(|m| m.serves()) {
                continue;
            }
            match groups.iter_mut().find(|g| g.0 == ix) {
                Some(g) => g.1.push(key),
                None => groups.push((ix, vec![key])),
            }
        }
        let parallel = groups.len() > 1;
        for (ix, r) in fan_out(&members, groups, parallel, &|m, keys: Vec<Key>| {
            m.backend.free(&keys)
        }) {
            match r {
                Err(e) if is_member_failure(&e) => self.pool.mark_down(&members, ix, &e),
                Err(e) => tracing::debug!(error = %e, "coded pool: free failed"),
                Ok(()) => {}
            }
        }
    }

    /// Frees objects.
    pub(crate) fn free(&self, ids: &[u64]) -> Result<(), BackendError> {
        let (keys, created) = {
            let mut l = self.layout.write();
            let dead_before = l.dead_bytes;
            let keys: Vec<(Ix, Key)> = ids.iter().flat_map(|&id| l.remove(id)).collect();
            (keys, l.dead_bytes.saturating_sub(dead_before))
        };
        self.free_keys(keys);
        self.compact_behind(created);
        Ok(())
    }

    /// A direct single-member agent call over coded objects: refused (see the module docs).
    pub(crate) fn compute_refused(&self) -> BackendError {
        BackendError::Config(format!(
            "an agent call on one member cannot name objects of a {}+{} erasure-coded pool (each \
             version has a key of the pool's): vector operations are spread over the members \
             through the pool's sites",
            self.k, self.m
        ))
    }

    /// Reads, edits and writes back objects (patches of coded data are new versions).
    pub(crate) fn patch_many(
        &self,
        items: &[(u64, &[crate::backend::Edit<'_>])],
    ) -> Result<(), BackendError> {
        let ids: Vec<u64> = items.iter().map(|(id, _)| *id).collect();
        let mut objs = self.get_many(&ids)?;
        for ((id, edits), data) in items.iter().zip(objs.iter_mut()) {
            crate::backend::check_edits(*id, data.len(), edits)?;
            for &(off, bytes) in edits.iter() {
                data[off as usize..off as usize + bytes.len()].copy_from_slice(bytes);
            }
        }
        let puts: Vec<(u64, &[u8])> = ids
            .iter()
            .zip(&objs)
            .map(|(&id, d)| (id, d.as_slice()))
            .collect();
        self.put_many(&puts)
    }
}

/// Checks a coded scheme's parameters.
pub(crate) fn check_scheme(k: u8, m: u8) -> Result<(), String> {
    if k == 0 || m == 0 || k.saturating_add(m) > super::scheme::MAX_CODED_SHARDS {
        return Err(format!(
            "a coded scheme needs 1 <= k, 1 <= m and k + m <= {} (got {k}+{m})",
            super::scheme::MAX_CODED_SHARDS
        ));
    }
    Ok(())
}
