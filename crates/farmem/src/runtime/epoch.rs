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

use std::cell::Cell;
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

/// How many dereferences of each kind a scope remembers, so that a miss under it can pin
/// exactly those and let the evacuator have the rest (see [`Scope::touched`]).
const SEEN: usize = 4;

/// A promise that far objects dereferenced under it stay where they are.
///
/// References returned by [`FarBox::read`](crate::FarBox::read) and friends borrow the scope, so
/// the borrow checker guarantees none outlives it. While any scope is alive on a thread, the
/// evacuator does not move or evict an object that thread may reference; it waits for the scope
/// to end, so keep scopes short, or call [`renew`](Scope::renew) in long loops.
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
    /// (opening or renewal). Kept relative to that point so that a hit does one compare of it
    /// with [`SEEN`], no other load.
    hits: Cell<u64>,
    /// Fast-path hits under this scope before that point. `hits_before + hits` are added to
    /// the runtime's counters when the scope ends.
    hits_before: Cell<u64>,
    /// Slow-path dereferences under this scope since then.
    slow: Cell<u64>,
    /// The first [`SEEN`] fast-path hits' `(slot address, payload address)` since the epoch
    /// was entered, at `hits`.
    seen_hits: [Cell<(usize, usize)>; SEEN],
    /// The first [`SEEN`] slow-path dereferences' (since the epoch was entered), at `slow`;
    /// `(0, 0)` for one that failed.
    seen_slow: [Cell<(usize, usize)>; SEEN],
    /// An internal scope of a container cursor: it never hands out a reference that outlives
    /// the cursor call that made it.
    internal: bool,
    _not_send: PhantomData<*mut ()>,
}

impl<'rt> Scope<'rt> {
    pub(crate) fn new(counters: &'rt CounterSet) -> Self {
        Self::open(counters, false)
    }

    /// A scope for a container cursor, whose calls copy values out and keep no reference into
    /// far objects between calls. While no other kind of scope is open on the thread, a miss
    /// under it may leave the epoch to wait for room (see [`Scope::unpinnable`]).
    pub(crate) fn internal(counters: &'rt CounterSet) -> Self {
        Self::open(counters, true)
    }

    fn open(counters: &'rt CounterSet, internal: bool) -> Self {
        let ts = current();
        let depth = ts.depth.load(StdOrdering::Relaxed);
        if depth == 0 {
            ts.epoch.enter();
        }
        ts.depth.store(depth + 1, StdOrdering::Relaxed);
        if !internal {
            let u = ts.user_depth.load(StdOrdering::Relaxed);
            ts.user_depth.store(u + 1, StdOrdering::Relaxed);
        }
        Self {
            ts,
            counters,
            hits: Cell::new(0),
            hits_before: Cell::new(0),
            slow: Cell::new(0),
            seen_hits: Default::default(),
            seen_slow: Default::default(),
            internal,
            _not_send: PhantomData,
        }
    }

    /// Lets the evacuator proceed: if this is the thread's only scope, leaves and re-enters it.
    ///
    /// Taking `&mut self` proves no reference obtained under this scope is alive. Inside a nested
    /// scope this does nothing (the outer scope may still hand out references).
    pub fn renew(&mut self) {
        if self.ts.depth.load(StdOrdering::Relaxed) == 1 {
            self.ts.epoch.exit();
            self.ts.epoch.enter();
            self.hits_before
                .set(self.hits_before.get() + self.hits.get());
            self.hits.set(0);
            self.slow.set(0);
        }
    }

    /// Whether no reference into a far object obtained on this thread can be alive, so the
    /// thread may leave its epoch while a dereference under this scope waits for room (the
    /// evacuator may then move or evict anything, as for a thread outside any scope).
    ///
    /// True for a cursor's internal scope while no other kind of scope is open on the thread,
    /// and for the thread's only user scope while it has handed out nothing since it entered
    /// the epoch (opened or renewed): a scope pins only what it dereferenced.
    pub(crate) fn unpinnable(&self) -> bool {
        let users = self.ts.user_depth.load(StdOrdering::Relaxed);
        if self.internal {
            users == 0
        } else {
            users == 1 && self.hits.get() == 0 && self.slow.get() == 0
        }
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

    /// Every object dereferenced under this scope since the thread entered its epoch, as
    /// `(slot address, payload address)` pairs without repeats, when the scope knows them all:
    /// it is the thread's only user scope (cursors' internal scopes keep no reference between
    /// calls) and made at most [`SEEN`] hits and [`SEEN`] slow-path dereferences (a user scope
    /// counts each hit as it makes it; only internal scopes count in bulk). `None` otherwise.
    pub(crate) fn touched(&self) -> Option<Vec<(usize, usize)>> {
        if self.internal || self.ts.user_depth.load(StdOrdering::Relaxed) != 1 {
            return None;
        }
        let (hits, slow) = (self.hits.get(), self.slow.get());
        if hits > SEEN as u64 || slow > SEEN as u64 {
            return None;
        }
        let mut out: Vec<(usize, usize)> = Vec::with_capacity(2 * SEEN);
        for c in self.seen_hits[..hits as usize]
            .iter()
            .chain(&self.seen_slow[..slow as usize])
        {
            let e = c.get();
            if e != (0, 0) && !out.contains(&e) {
                out.push(e);
            }
        }
        Some(out)
    }

    /// Leaves the thread's epoch until the returned guard is dropped, which re-enters it and
    /// then takes back `pins`: one pin (see `pin`) on each of these slots. The caller has pinned
    /// every object this scope dereferenced ([`Scope::touched`]) and dereferences nothing
    /// meanwhile.
    ///
    /// # Safety
    /// Every pointer in `pins` is a slot of a runtime that outlives the guard.
    pub(crate) unsafe fn suspend_pinned(&self, pins: Vec<*const Slot>) -> Suspended {
        self.ts.epoch.exit();
        Suspended {
            ts: self.ts.clone(),
            pins,
        }
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
    /// payload at `at` (`None` when it failed).
    #[inline]
    pub(crate) fn count_slow(&self, slot: &Slot, at: Option<usize>) {
        let n = self.slow.get();
        if let Some(c) = self.seen_slow.get(n as usize) {
            c.set(at.map_or((0, 0), |a| (std::ptr::from_ref(slot) as usize, a)));
        }
        self.slow.set(n + 1);
    }

    /// Whether this is the thread's outermost (only) scope.
    pub fn is_outermost(&self) -> bool {
        self.ts.depth.load(StdOrdering::Relaxed) == 1
    }

    /// Counts a fast-path hit of `slot`, whose payload is at `at`.
    #[inline(always)]
    pub(crate) fn count_hit(&self, slot: &Slot, at: usize) {
        let n = self.hits.get();
        // Only the first `SEEN` hits since the epoch was entered can matter (`touched` gives up
        // beyond them): record those, and spare later hits the store (a hot loop's hits are
        // store-bound).
        if let Some(c) = self.seen_hits.get(n as usize) {
            c.set((std::ptr::from_ref(slot) as usize, at));
        }
        self.hits.set(n + 1);
    }

    /// Counts `n` fast-path hits of an internal scope (a cursor's), which needs no record of
    /// them.
    #[inline(always)]
    pub(crate) fn count_hits_internal(&self, n: u64) {
        debug_assert!(self.internal);
        self.hits.set(self.hits.get() + n);
    }
}

impl Drop for Scope<'_> {
    fn drop(&mut self) {
        let depth = self.ts.depth.load(StdOrdering::Relaxed) - 1;
        self.ts.depth.store(depth, StdOrdering::Relaxed);
        if !self.internal {
            let u = self.ts.user_depth.load(StdOrdering::Relaxed);
            self.ts.user_depth.store(u - 1, StdOrdering::Relaxed);
        }
        if depth == 0 {
            self.ts.epoch.exit();
        }
        let hits = self.hits_before.get() + self.hits.get();
        if hits > 0 {
            self.counters.with(|c| c.add_hits(hits));
        }
    }
}

/// A thread outside its epoch for a while (see [`Scope::suspend`]); re-enters it when dropped,
/// then takes back the pins it holds (see [`Scope::suspend_pinned`]).
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

/// Leaves the calling thread's epoch until the returned guard is dropped, if the thread is
/// inside one only through cursors' internal scopes (which keep no reference between calls; see
/// [`Scope::unpinnable`]). For runtime calls made without a scope (prefetches) that must wait for
/// room; the caller holds no reference into a far object.
pub(crate) fn suspend_cursor_thread() -> Option<Suspended> {
    let ts = current();
    let inside = ts.depth.load(StdOrdering::Relaxed) > 0;
    if !inside || ts.user_depth.load(StdOrdering::Relaxed) != 0 {
        return None;
    }
    ts.epoch.exit();
    Some(Suspended {
        ts,
        pins: Vec::new(),
    })
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
