//! Scopes and grace periods: the mutator side of the mutator/evacuator handshake.
//!
//! Every thread that dereferences far pointers has an [`Epoch`] counter, odd while the thread is
//! inside a [`Scope`]. Entering the outermost scope stores the odd value and issues a `SeqCst`
//! fence; leaving stores the next even value with `Release`. No shared atomic is written per
//! dereference.
//!
//! The evacuator marks objects `MOVING` (an atomic read-modify-write on the handle word), issues a
//! `SeqCst` fence, and then waits for every thread that was inside a scope to change its counter
//! ([`synchronize`]). By the store-buffering guarantee of the two fences, a mutator either sees the
//! `MOVING` mark on its next load of the handle word (and then moves the object itself or waits
//! for that one object), or the evacuator sees the mutator inside its scope and waits for it to
//! leave, after which no reference handed out before the mark is alive.
//!
//! Epochs are process-wide (shared by all runtimes), so a scope made by one runtime protects
//! objects of every runtime.
//!
//! A thread also keeps a log of what its scopes dereferenced since a reference they hand out
//! could first be alive (see `Log`). A miss that must wait for room pins exactly those objects
//! and leaves the epoch while it waits (`Inner::alloc_space`), so the evacuator can evict
//! everything else; the pins, not the epoch, then keep the logged objects in place.

use std::cell::{Cell, UnsafeCell};
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering as StdOrdering};

use parking_lot::Mutex;

use super::slot::Slot;
use super::stats::CounterSet;
use crate::loom::{AtomicU64, Ordering, fence, yield_now};

/// A thread's scope counter: odd while inside a scope.
#[derive(Debug)]
pub(crate) struct Epoch(AtomicU64);

impl Epoch {
    pub(crate) fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Enters a scope (outermost only). Only the owning thread calls this.
    pub(crate) fn enter(&self) {
        let c = self.0.load(Ordering::Relaxed);
        self.0.store(c + 1, Ordering::Relaxed);
        // Orders the store above before every later load of a handle word (see module docs).
        fence(Ordering::SeqCst);
    }

    /// Leaves a scope. Only the owning thread calls this.
    pub(crate) fn exit(&self) {
        let c = self.0.load(Ordering::Relaxed);
        // Release: every access made inside the scope happens-before the evacuator's acquire
        // load that observes the new value.
        self.0.store(c + 1, Ordering::Release);
    }

    /// The current counter value.
    pub(crate) fn load(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Waits until the thread has left the scope it was in when `snapshot` was taken.
    pub(crate) fn wait_past(&self, snapshot: u64) {
        if snapshot.is_multiple_of(2) {
            return;
        }
        let mut spins = 0u32;
        while self.load() == snapshot {
            backoff(&mut spins);
        }
    }
}

/// Spins briefly, then yields, then sleeps.
pub(crate) fn backoff(spins: &mut u32) {
    *spins += 1;
    if cfg!(loom) {
        yield_now();
    } else if *spins < 64 {
        std::hint::spin_loop();
    } else if *spins < 256 {
        yield_now();
    } else {
        std::thread::sleep(std::time::Duration::from_micros(20));
    }
}

/// Per-thread handshake state, registered process-wide.
#[derive(Debug)]
pub(crate) struct ThreadState {
    pub(crate) epoch: Epoch,
    /// Scope nesting depth; written by the owning thread only.
    depth: AtomicU32,
    /// How many of those scopes may hand out references that outlive a call into the runtime
    /// (every scope but the internal ones of the containers' cursors, which copy values out);
    /// written by the owning thread only.
    user_depth: AtomicU32,
    /// The counter value (an open scope) an evacuator is waiting for this thread to leave; 0 if
    /// none.
    waited_for: std::sync::atomic::AtomicU64,
    /// Which runtimes' evacuators are waiting for this thread: bit `runtime id % 64` (a
    /// collision only makes a foreign wait look like the runtime's own, the conservative side).
    waited_by: std::sync::atomic::AtomicU64,
    /// What the thread's user scopes dereferenced since their references could first be alive
    /// (see [`Log`]). Only the owning thread touches it.
    log: OwnerOnly<Log>,
}

/// Data of a [`ThreadState`] that only its thread uses, beside the fields evacuators read.
struct OwnerOnly<T>(UnsafeCell<T>);

// SAFETY: the value is only ever accessed by the thread that owns the `ThreadState` (through
// its scopes, which are `!Send`, and the free functions of this module acting on the calling
// thread's own state); other threads only hold the `Arc` to read the atomic fields.
unsafe impl<T: Send> Sync for OwnerOnly<T> {}

impl<T> std::fmt::Debug for OwnerOnly<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnerOnly")
    }
}

/// How many fast-path hits a user scope records per stay in the epoch (since it was opened or
/// renewed), not counting repeats of the thread's last record: past that it stops recording
/// (a hot loop pays no store for it) and the thread's [`Log`] is marked incomplete, so a miss
/// then cannot let the evacuator have the rest (see [`Scope::touched`]).
pub(crate) const RECORDED_HITS: u64 = 4096;

/// How many records the thread's [`Log`] holds in all (nested scopes each record up to
/// [`RECORDED_HITS`] hits, and misses are all recorded); past that it is incomplete.
pub(crate) const LOG_CAPACITY: usize = 4 * RECORDED_HITS as usize;

/// Every object the thread's user scopes dereferenced since the thread last had no user scope
/// open (or its only scope was renewed): `(slot address, payload address)` pairs, repeats of the
/// last one left out. Internal scopes of the containers' cursors record nothing (they keep no
/// reference between calls). `complete` is false once something was not recorded.
#[derive(Debug)]
struct Log {
    entries: Vec<(usize, usize)>,
    complete: bool,
}

impl Log {
    const fn new() -> Self {
        Self {
            entries: Vec::new(),
            complete: true,
        }
    }

    /// Records `e`; false (nothing recorded) when it repeats the last record.
    #[inline(always)]
    fn push(&mut self, e: (usize, usize)) -> bool {
        let len = self.entries.len();
        if len > 0 && self.entries[len - 1] == e {
            return false;
        }
        if len < self.entries.capacity() {
            self.entries.push(e);
        } else {
            self.push_grow(e);
        }
        true
    }

    #[cold]
    #[inline(never)]
    fn push_grow(&mut self, e: (usize, usize)) {
        if self.entries.len() >= LOG_CAPACITY {
            self.complete = false;
        } else {
            self.entries.reserve(self.entries.len().max(64));
            self.entries.push(e);
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.complete = true;
    }

    /// Nothing dereferenced under a user scope may be referenced.
    fn is_empty(&self) -> bool {
        self.complete && self.entries.is_empty()
    }
}

/// Every thread that ever opened a scope. Process-wide by design, and the one piece of shared
/// state the library keeps: a scope is a property of a thread, not of a runtime, so one scope
/// protects the objects of every runtime the thread dereferences. That is what lets a hit check
/// nothing but the handle word (no check that the scope belongs to the object's runtime). It holds
/// no data and nothing a caller can observe; each evacuator only reads it to find the threads to
/// wait for.
static REGISTRY: Mutex<Vec<Arc<ThreadState>>> = Mutex::new(Vec::new());

struct Registration(Arc<ThreadState>);

impl Registration {
    fn new() -> Self {
        let ts = Arc::new(ThreadState {
            epoch: Epoch::new(),
            depth: AtomicU32::new(0),
            user_depth: AtomicU32::new(0),
            waited_for: std::sync::atomic::AtomicU64::new(0),
            waited_by: std::sync::atomic::AtomicU64::new(0),
            log: OwnerOnly(UnsafeCell::new(Log::new())),
        });
        REGISTRY.lock().push(ts.clone());
        Self(ts)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        REGISTRY.lock().retain(|t| !Arc::ptr_eq(t, &self.0));
    }
}

thread_local! {
    static THREAD: Registration = Registration::new();
}

fn current() -> Arc<ThreadState> {
    THREAD.with(|r| r.0.clone())
}

impl ThreadState {
    /// The thread's [`Log`].
    ///
    /// # Safety
    /// Only the thread that owns this state may call this, and it may not hold another
    /// reference returned by it meanwhile.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    unsafe fn log(&self) -> &mut Log {
        // SAFETY: the caller is the owning thread, the only one that touches the log, and holds
        // no other reference to it.
        unsafe { &mut *self.log.0.get() }
    }

    /// [`ThreadState::log`] for reading, by the owning thread.
    fn log_ref(&self) -> &Log {
        // SAFETY: as in `log`: only the owning thread calls this, and no `&mut` to the log is
        // held across a call that could reach here.
        unsafe { &*self.log.0.get() }
    }

    /// Forgets the log: no reference a user scope handed out can be alive.
    fn clear_log(&self) {
        // SAFETY: called by the owning thread, which holds no other reference to its log.
        unsafe { self.log() }.clear();
    }
}

/// What the calling thread's scope means for an allocation of runtime `runtime`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ScopeState {
    /// The thread is inside a scope.
    pub(crate) inside: bool,
    /// Some evacuator waits for this very scope to end.
    pub(crate) waited_for: bool,
    /// The evacuator of `runtime` is among them: waiting for that runtime's evacuator would
    /// deadlock.
    pub(crate) by_own: bool,
}

fn waiter_bit(runtime: u64) -> u64 {
    1 << (runtime % 64)
}

/// The calling thread's scope state, for an allocation of runtime `runtime`.
pub(crate) fn scope_state(runtime: u64) -> ScopeState {
    THREAD
        .try_with(|r| {
            let inside = r.0.depth.load(StdOrdering::Relaxed) > 0;
            let waited_for =
                inside && r.0.waited_for.load(StdOrdering::Acquire) == r.0.epoch.load();
            let by_own =
                waited_for && r.0.waited_by.load(StdOrdering::Acquire) & waiter_bit(runtime) != 0;
            ScopeState {
                inside,
                waited_for,
                by_own,
            }
        })
        .unwrap_or_default()
}

/// Waits for a grace period: every thread inside a scope when this is called has left it.
///
/// The caller (the evacuator of runtime `runtime`) must have made its marks (read-modify-writes
/// on handle words) before calling. `on_block` runs before waiting for a thread, after it can see
/// that it is waited for.
pub(crate) fn synchronize(runtime: u64, on_block: impl Fn()) {
    fence(Ordering::SeqCst);
    let threads: Vec<Arc<ThreadState>> = REGISTRY.lock().clone();
    let bit = waiter_bit(runtime);
    for ts in threads {
        let snap = ts.epoch.load();
        if !snap.is_multiple_of(2) {
            ts.waited_by.fetch_or(bit, StdOrdering::AcqRel);
            ts.waited_for.store(snap, StdOrdering::Release);
            on_block();
            ts.epoch.wait_past(snap);
            let _ =
                ts.waited_for
                    .compare_exchange(snap, 0, StdOrdering::AcqRel, StdOrdering::Relaxed);
            ts.waited_by.fetch_and(!bit, StdOrdering::AcqRel);
        }
    }
}

/// A promise that far objects dereferenced under it stay where they are.
///
/// References returned by [`FarBox::read`](crate::FarBox::read) and friends borrow the scope, so
/// the borrow checker guarantees none outlives it. While any scope is alive on a thread, the
/// evacuator does not move or evict an object that thread may reference; it waits for the scope
/// to end, so keep scopes short, or call [`renew`](Scope::renew) in long loops.
///
/// A miss that needs room while the budget is full pins only what the thread's scopes
/// dereferenced and lets the evacuator evict everything else meanwhile, so it fails with
/// [`Error::LocalHeapExhausted`](crate::Error::LocalHeapExhausted) only when that does not leave
/// room. A scope records every object it dereferences, up to 4096 hits (repeats of the same
/// object in a row aside) and every miss since it was opened or renewed; a scope that hit more
/// objects than that pins everything, as if it had dereferenced every object, until it is
/// renewed or ends.
///
/// Scopes nest: an inner scope is free, the thread stays pinned until the outermost one ends.
/// A scope is tied to its thread (`!Send`). Leaking a scope (`mem::forget`) stalls evacuation.
///
/// ```
/// use farmem::{FarBox, Runtime, RuntimeConfig};
/// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
/// let mut b = FarBox::new(&rt, 41u64).unwrap();
/// let s = rt.scope();
/// *b.write(&s).unwrap() += 1;
/// assert_eq!(*b.read(&s).unwrap(), 42);
/// ```
///
/// # Scopes and locks
/// Writing needs `&mut FarBox`, so objects several threads write live behind a lock. Take the
/// lock first, then open the scope, and end the scope before the lock: a thread that waits for
/// a lock *inside* a scope holds up the evacuator for as long as it waits, and when the lock's
/// holder needs local room that only the evacuator can make, neither moves (the holder's
/// allocation ends in [`Error::LocalHeapExhausted`](crate::Error::LocalHeapExhausted) after
/// the runtime's allocation timeout). The same holds for any blocking wait (a channel, a join).
///
/// ```
/// use std::sync::Mutex;
/// use farmem::{FarBox, Runtime, RuntimeConfig};
/// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
/// let counter = Mutex::new(FarBox::new(&rt, 0u64).unwrap());
/// std::thread::scope(|t| {
///     for _ in 0..4 {
///         t.spawn(|| {
///             for _ in 0..100 {
///                 let mut b = counter.lock().unwrap(); // the lock first,
///                 let s = rt.scope(); //                  then the scope,
///                 *b.write(&s).unwrap() += 1;
///             } //                                       dropped in reverse order
///         });
///     }
/// });
/// assert_eq!(counter.lock().unwrap().get().unwrap(), 400);
/// ```
pub struct Scope<'rt> {
    ts: Arc<ThreadState>,
    /// The counters of the runtime that opened the scope.
    counters: &'rt CounterSet,
    /// Fast-path hits under this scope since the thread last entered its epoch under it
    /// (opening or renewal), counted up from [`Scope::first_hit`] (negative for a user scope),
    /// repeats of the thread's last record left out while it is negative. A hit tests its sign,
    /// nothing else, to know whether to record itself.
    hits: Cell<u64>,
    /// What is added to `hits` (wrapping) to count this scope's fast-path hits in all, for the
    /// runtime's counters when the scope ends: hits before that point, repeats left out of
    /// `hits`, minus [`Scope::first_hit`].
    hits_before: Cell<u64>,
    /// An internal scope of a container cursor: it never hands out a reference that outlives
    /// the cursor call that made it, and records nothing.
    internal: bool,
    _not_send: PhantomData<*mut ()>,
}

impl<'rt> Scope<'rt> {
    pub(crate) fn new(counters: &'rt CounterSet) -> Self {
        Self::open(counters, false)
    }

    /// A scope for a container cursor, whose calls copy values out and keep no reference into
    /// far objects between calls. It records none of its dereferences, so a miss under it pins
    /// only what the thread's other scopes dereferenced (see [`Scope::touched`]).
    pub(crate) fn internal(counters: &'rt CounterSet) -> Self {
        Self::open(counters, true)
    }

    fn open(counters: &'rt CounterSet, internal: bool) -> Self {
        let ts = current();
        let depth = ts.depth.load(StdOrdering::Relaxed);
        if depth == 0 {
            ts.clear_log();
            ts.epoch.enter();
        }
        ts.depth.store(depth + 1, StdOrdering::Relaxed);
        if !internal {
            let u = ts.user_depth.load(StdOrdering::Relaxed);
            ts.user_depth.store(u + 1, StdOrdering::Relaxed);
        }
        let first = Self::first_hit(internal);
        Self {
            ts,
            counters,
            hits: Cell::new(first),
            hits_before: Cell::new(0u64.wrapping_sub(first)),
            internal,
            _not_send: PhantomData,
        }
    }

    /// Where `hits` starts: `RECORDED_HITS + 1` below zero for a user scope, so that it turns
    /// non-negative (and recording stops) after that many hits; 0 for an internal one, so that
    /// its hits record nothing without a test of `internal`. (A sign test is the shortest
    /// check a hot loop can carry.)
    const fn first_hit(internal: bool) -> u64 {
        if internal {
            0
        } else {
            0u64.wrapping_sub(RECORDED_HITS + 1)
        }
    }

    /// Lets the evacuator proceed: if this is the thread's only scope, leaves and re-enters it.
    ///
    /// Taking `&mut self` proves no reference obtained under this scope is alive. Inside a nested
    /// scope this does nothing (the outer scope may still hand out references).
    pub fn renew(&mut self) {
        if self.ts.depth.load(StdOrdering::Relaxed) == 1 {
            self.ts.epoch.exit();
            self.ts.clear_log();
            self.ts.epoch.enter();
            let first = Self::first_hit(self.internal);
            self.hits_before.set(
                self.hits_before
                    .get()
                    .wrapping_add(self.hits.get().wrapping_sub(first)),
            );
            self.hits.set(first);
        }
    }

    /// Whether no reference into a far object obtained on this thread can be alive, so the
    /// thread may leave its epoch while a dereference under this scope waits for room (the
    /// evacuator may then move or evict anything, as for a thread outside any scope): no user
    /// scope of the thread dereferenced anything since it entered its epoch (cursors' internal
    /// scopes keep no reference between calls).
    pub(crate) fn unpinnable(&self) -> bool {
        self.ts.log_ref().is_empty()
    }

    /// Leaves the thread's epoch until the returned guard is dropped. Only when
    /// [`Scope::unpinnable`] holds, and the caller dereferences nothing meanwhile.
    pub(crate) fn suspend(&self) -> Suspended {
        debug_assert!(self.unpinnable());
        self.ts.epoch.exit();
        Suspended {
            ts: self.ts.clone(),
            pins: Vec::new(),
        }
    }

    /// Every object dereferenced under this thread's scopes that a reference may still point
    /// into (see [`touched`]).
    pub(crate) fn touched(&self) -> Option<Vec<(usize, usize)>> {
        touched_of(&self.ts)
    }

    /// Whether some evacuator is waiting for the thread to leave its current epoch.
    #[inline]
    pub(crate) fn waited_on(&self) -> bool {
        let e = self.ts.epoch.load();
        !e.is_multiple_of(2) && self.ts.waited_for.load(StdOrdering::Acquire) == e
    }

    /// Lets a waiting evacuator proceed when that is safe ([`Scope::unpinnable`]): leaves and
    /// re-enters the epoch. For cursors, between calls. Returns whether it did.
    pub(crate) fn yield_if_waited(&self) -> bool {
        if self.waited_on() && self.unpinnable() {
            drop(self.suspend());
            return true;
        }
        false
    }

    /// Notes a dereference of `slot` that took the slow path: it hands out a reference to the
    /// payload at `at` (`None` when it failed). A user scope records every one of them (up to
    /// the log's [`LOG_CAPACITY`]).
    #[inline]
    pub(crate) fn count_slow(&self, slot: &Slot, at: Option<usize>) {
        if let Some(at) = at
            && !self.internal
        {
            // SAFETY: a scope is used only on its own thread (`!Send`), and no other reference
            // to the log is held here.
            unsafe { self.ts.log() }.push((std::ptr::from_ref(slot) as usize, at));
        }
    }

    /// Whether this is a container cursor's internal scope.
    pub(crate) fn is_internal(&self) -> bool {
        self.internal
    }

    /// Whether this is the thread's outermost (only) scope.
    pub fn is_outermost(&self) -> bool {
        self.ts.depth.load(StdOrdering::Relaxed) == 1
    }

    /// Counts a fast-path hit of `slot`, whose payload is at `at`.
    #[inline(always)]
    pub(crate) fn count_hit(&self, slot: &Slot, at: usize) {
        let n = self.hits.get();
        // Only the first `RECORDED_HITS` hits since the epoch was entered are recorded: past
        // that, one compare, and a hot loop's hits store nothing but the count. The recording
        // is laid out of the loop's way (`cold_path`), so a hot loop's hit takes no branch but
        // its loop's own.
        if (n as i64) < 0 {
            std::hint::cold_path();
            if !self.record_hit(n, slot, at) {
                return;
            }
        }
        self.hits.set(n.wrapping_add(1));
    }

    /// Records a hit (of `slot`, payload at `at`; `n` is `hits`, negative) in the thread's log;
    /// false when it repeats the last record (then counted apart, not in `hits`).
    #[inline(always)]
    fn record_hit(&self, n: u64, slot: &Slot, at: usize) -> bool {
        // SAFETY: a scope is used only on its own thread (`!Send`), and no other reference to
        // the log is held here.
        let log = unsafe { self.ts.log() };
        if n == u64::MAX {
            // The `RECORDED_HITS + 1`th: past the bound, nothing more is recorded.
            log.complete = false;
            return true;
        }
        if log.push((std::ptr::from_ref(slot) as usize, at)) {
            return true;
        }
        self.hits_before.set(self.hits_before.get().wrapping_add(1));
        false
    }

    /// Counts `n` fast-path hits of an internal scope (a cursor's), which needs no record of
    /// them.
    #[inline(always)]
    pub(crate) fn count_hits_internal(&self, n: u64) {
        debug_assert!(self.internal);
        self.hits.set(self.hits.get().wrapping_add(n));
    }
}

impl Drop for Scope<'_> {
    fn drop(&mut self) {
        let depth = self.ts.depth.load(StdOrdering::Relaxed) - 1;
        self.ts.depth.store(depth, StdOrdering::Relaxed);
        if !self.internal {
            let u = self.ts.user_depth.load(StdOrdering::Relaxed) - 1;
            self.ts.user_depth.store(u, StdOrdering::Relaxed);
            if u == 0 {
                // No user scope is left to hand out references: what they dereferenced can go.
                self.ts.clear_log();
            }
        }
        if depth == 0 {
            self.ts.epoch.exit();
        }
        let hits = self.hits_before.get().wrapping_add(self.hits.get());
        if hits > 0 {
            self.counters.with(|c| c.add_hits(hits));
        }
    }
}

/// A thread outside its epoch for a while (see [`suspend_unreferenced`]); re-enters it when
/// dropped, then takes back the pins it holds (see [`suspend_pinned`]).
#[derive(Debug)]
pub(crate) struct Suspended {
    ts: Arc<ThreadState>,
    pins: Vec<*const Slot>,
}

impl Suspended {
    /// Whether the thread pinned objects to leave its epoch.
    pub(crate) fn holds_pins(&self) -> bool {
        !self.pins.is_empty()
    }
}

/// Every object a user scope of `ts`'s thread dereferenced since the thread entered its epoch
/// with a user scope open, as sorted `(slot address, payload address)` pairs without repeats:
/// a superset of what a reference handed out under the thread's scopes may point into (cursors'
/// internal scopes keep none between calls). `None` when the log is incomplete: a scope made
/// more than [`RECORDED_HITS`] hits since it entered the epoch, or the thread's scopes more
/// than [`LOG_CAPACITY`] records in all.
fn touched_of(ts: &ThreadState) -> Option<Vec<(usize, usize)>> {
    let log = ts.log_ref();
    if !log.complete {
        return None;
    }
    let mut out = log.entries.clone();
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// [`Scope::touched`] for the calling thread, whatever scope it is in; `None` outside a scope.
pub(crate) fn touched() -> Option<Vec<(usize, usize)>> {
    let ts = current();
    if ts.depth.load(StdOrdering::Relaxed) == 0 {
        return None;
    }
    touched_of(&ts)
}

/// Leaves the calling thread's epoch until the returned guard is dropped, if it is inside one
/// and no reference a scope handed out can be alive ([`Scope::unpinnable`]). For runtime calls
/// made without a scope (allocations, prefetches) that must wait for room; the caller itself
/// holds no reference into a far object.
pub(crate) fn suspend_unreferenced() -> Option<Suspended> {
    let ts = current();
    if ts.depth.load(StdOrdering::Relaxed) == 0 || !ts.log_ref().is_empty() {
        return None;
    }
    ts.epoch.exit();
    Some(Suspended {
        ts,
        pins: Vec::new(),
    })
}

/// Leaves the calling thread's epoch until the returned guard is dropped, which re-enters it and
/// then takes back `pins`: one pin (see `pin`) on each of these slots. The caller has pinned
/// every object [`touched`] returned, and dereferences nothing meanwhile.
///
/// # Safety
/// Every pointer in `pins` is a slot of a runtime that outlives the guard.
pub(crate) unsafe fn suspend_pinned(pins: Vec<*const Slot>) -> Suspended {
    let ts = current();
    ts.epoch.exit();
    Suspended { ts, pins }
}

impl Drop for Suspended {
    fn drop(&mut self) {
        // Back inside the epoch first: from then on the evacuator waits for this thread before
        // it moves anything it marks, so the pins can go.
        self.ts.epoch.enter();
        for &slot in &self.pins {
            // SAFETY: `suspend_pinned`'s caller promised the slots outlive this guard.
            super::pin::unpin(unsafe { &*slot });
        }
    }
}

impl std::fmt::Debug for Scope<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("depth", &self.ts.depth.load(StdOrdering::Relaxed))
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
#[path = "epoch_tests.rs"]
mod tests;
