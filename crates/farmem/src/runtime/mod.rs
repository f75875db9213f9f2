//! The object runtime: the [`Runtime`] handle, and below it, bottom up:
//!
//! - [`word`]: the handle word's encoding ([`word::Word`]) and access modes;
//! - [`slot`]: the table of handle words (one stable 8-byte slot per far object);
//! - [`heap`]: the bounded local heap (log-structured regions, dedicated large allocations);
//! - [`epoch`]: scopes and grace periods, the mutator side of the evacuator handshake;
//! - [`access`]: the dereference decision, shared with the loom model;
//! - [`object`]: the object protocol (fetch, self-move, flush, invalidate, free, prefetch);
//! - [`evacuator`]: moving cold objects out while mutators run;
//! - [`far`]: the typed references [`FarBox`], [`FarSlice`], [`FarPtr`];
//! - [`ids`], [`frees`], [`stats`]: per-runtime id allocator, free queue and counters.

// The crate-wide lint waits for the containers, backend and paging types to get their `Debug`.
#![deny(missing_debug_implementations)]

mod access;
mod epoch;
mod evacuator;
mod far;
mod frees;
mod heap;
mod ids;
mod loan;
mod object;
mod pin;
mod slot;
mod stats;
mod word;

#[cfg(all(test, not(loom)))]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

pub use epoch::Scope;
pub(crate) use evacuator::MAX_REGIONS as MAX_EVACUATION_REGIONS;
pub use far::{Far, FarBox, FarPtr, FarRef, FarSlice, Pinned, PinnedMut};
pub(crate) use loan::LocalLoan;
pub use stats::Stats;

use crate::backend::{Backend, EmbeddedStore, ObjectId, Protection};
use crate::config::{BackendConfig, RuntimeConfig};
use crate::error::{Error, Result};
use evacuator::Evacuation;
use frees::FreeQueue;
use heap::{Allocation, Heap, Lane};
use ids::Ids;
use slot::SlotTable;
use stats::CounterSet;

/// Process-unique runtime numbers. Not observable state: a runtime's number only names it where
/// names must outlive it or span runtimes (each thread's cached per-runtime counters in `stats`,
/// the evacuator-waiter bit in `epoch`) and keeps the id blocks of runtimes that share a backend
/// apart (`ids`); no result depends on which number a runtime gets.
static NEXT_RUNTIME: AtomicU64 = AtomicU64::new(1);
/// Mutator lane numbers. Not observable state: a lane only spreads threads' allocations over
/// open regions (each runtime takes the number modulo its own lane count), so which lane a thread
/// gets changes where its objects land, never what any call returns.
static NEXT_LANE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static LANE: usize = NEXT_LANE.fetch_add(1, Ordering::Relaxed);
}

/// How long an allocation inside a scope that only other runtimes' evacuators wait for waits
/// for its own runtime's evacuator before it uses the slack (see `Inner::alloc_space`).
const FOREIGN_PATIENCE: Duration = Duration::from_millis(50);

/// Wakes and stops evacuator threads.
#[derive(Debug, Default)]
struct Signal {
    lock: Mutex<()>,
    cv: Condvar,
    shutdown: AtomicBool,
}

/// The shared state of one runtime. Its fields are private to the runtime module; the layers
/// below it get only what they use (the evacuator an [`Evacuation`], the heap and slot table
/// nothing of the runtime at all).
pub(crate) struct Inner {
    backend: Arc<dyn Backend>,
    heap: Heap,
    slots: SlotTable,
    counters: CounterSet,
    ids: Ids,
    cfg: RuntimeConfig,
    signal: Arc<Signal>,
    frees: FreeQueue,
    /// The last evacuation failure, reported by allocations that give up.
    last_error: Mutex<Option<Arc<crate::BackendError>>>,
    /// Process-unique number (see [`NEXT_RUNTIME`]).
    number: u64,
    /// The largest allocation waiting for room (0 if none): the evacuator makes room for it
    /// even below the high watermark (a large object may not fit in what is left under it).
    /// A hint, reset by every allocation that succeeds and raised again by those still waiting.
    wanted: AtomicUsize,
}

/// A far-memory runtime: a local heap of far objects with a budget, a backend, evacuators.
///
/// Cheap to clone (a shared handle). Several runtimes may exist in one process, and may share a
/// backend: each numbers its far objects within its own block of ids, and keeps its own
/// statistics. A [`Scope`] of any runtime protects the objects of every runtime on its thread.
///
/// ```
/// use farmem::{FarBox, Runtime, RuntimeConfig};
/// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
/// let b = FarBox::new(&rt, [7u8; 64]).unwrap();
/// let s = rt.scope();
/// assert_eq!(b.read(&s).unwrap()[63], 7);
/// ```
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
    /// How a pool keeps the objects allocated through this handle (see
    /// [`Runtime::with_protection`]).
    protection: Protection,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("backend", &self.inner.backend.describe())
            .field("budget", &self.inner.heap.budget)
            .field("used", &self.inner.heap.used())
            .field("protection", &self.protection)
            .finish()
    }
}

impl Runtime {
    /// Builds a runtime and starts its evacuator threads.
    ///
    /// # Errors
    /// [`Error::BudgetTooSmall`] / [`Error::Config`] for a bad configuration,
    /// [`Error::Backend`] when the servers cannot be reached, [`Error::System`] when the local
    /// heap cannot be reserved or an evacuator thread cannot start, [`Error::Config`] when the
    /// process has made too many runtimes.
    pub fn new(cfg: RuntimeConfig) -> Result<Self> {
        cfg.validate()?;
        let number = NEXT_RUNTIME.fetch_add(1, Ordering::Relaxed);
        if number >= ids::MAX_RUNTIMES {
            return Err(Error::Config(format!(
                "this process has made {} runtimes, the most it may",
                ids::MAX_RUNTIMES - 1
            )));
        }
        let backend: Arc<dyn Backend> = match &cfg.backend {
            BackendConfig::Embedded => Arc::new(EmbeddedStore::new()),
            BackendConfig::Custom(b) => b.clone(),
            BackendConfig::Servers { addrs, token } => connect_servers(addrs, token)?,
            BackendConfig::Pool { .. } | BackendConfig::Discover { .. } => {
                cfg.backend.connect_pool()?
            }
        };
        let heap = Heap::new(
            cfg.local_budget,
            cfg.region_size,
            cfg.slack_regions(),
            cfg.lanes,
            cfg.evacuator_threads,
        )
        .map_err(|source| Error::System {
            what: "reserve the local heap",
            source,
        })?;
        let inner = Arc::new(Inner {
            backend,
            heap,
            slots: SlotTable::new(),
            counters: CounterSet::new(number),
            ids: Ids::new(number),
            number,
            wanted: AtomicUsize::new(0),
            cfg,
            signal: Arc::new(Signal::default()),
            frees: FreeQueue::default(),
            last_error: Mutex::new(None),
        });
        inner.slots.set_owner(Arc::as_ptr(&inner));
        for i in 0..inner.cfg.evacuator_threads {
            let weak = Arc::downgrade(&inner);
            let signal = inner.signal.clone();
            std::thread::Builder::new()
                .name(format!("farmem-evac-{i}"))
                .spawn(move || evacuator_main(weak, signal, i))
                .map_err(|source| Error::System {
                    what: "start an evacuator thread",
                    source,
                })?;
        }
        Ok(Self {
            inner,
            protection: Protection::BySize,
        })
    }

    /// A handle on the same runtime whose new far objects a pool keeps as `p` says: containers
    /// built on it (and their chunks, as they grow) are replicated or erasure-coded whatever
    /// the pool's size rule. Everything else is shared with `self` (budget, heap, statistics);
    /// objects keep the choice they were allocated with.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use farmem::backend::{Backend, EmbeddedStore, PoolBackend, PoolConfig, Protection, Redundancy};
    /// use farmem::containers::FarVec;
    /// use farmem::{Runtime, RuntimeConfig};
    /// // Six members coding 4+2 by default.
    /// let members: Vec<Arc<dyn Backend>> =
    ///     (0..6).map(|_| Arc::new(EmbeddedStore::new()) as Arc<dyn Backend>).collect();
    /// let pool = Arc::new(PoolBackend::new(members, PoolConfig::new(Redundancy::coded(4, 2))).unwrap());
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20).custom_backend(pool.clone())).unwrap();
    /// // A hot index replicated (3 copies, reads never decode), a large column coded.
    /// let mut index = FarVec::<u32>::new(&rt.with_protection(Protection::Replicated));
    /// let mut column = FarVec::<f64>::new(&rt);
    /// index.extend_from_slice(&[1, 2, 3]).unwrap();
    /// column.extend_from_slice(&[0.5; 1000]).unwrap();
    /// index.flush().unwrap();
    /// column.flush().unwrap();
    /// assert_eq!(index.get(2).unwrap(), 3);
    /// // Only the column's chunk (64 KiB) is on the coded path.
    /// assert_eq!(pool.coded_stats().unwrap().live_bytes, 64 << 10);
    /// ```
    #[must_use]
    pub fn with_protection(&self, p: Protection) -> Runtime {
        Runtime {
            inner: self.inner.clone(),
            protection: p,
        }
    }

    /// How a pool keeps the objects allocated through this handle.
    pub fn protection(&self) -> Protection {
        self.protection
    }

    /// Opens a scope: far objects dereferenced under it stay put until it ends.
    pub fn scope(&self) -> Scope<'_> {
        Scope::new(&self.inner.counters)
    }

    /// Opens a container cursor's internal scope (see `Scope::internal`).
    pub(crate) fn cursor_scope(&self) -> Scope<'_> {
        Scope::internal(&self.inner.counters)
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// Statistics summed over all threads.
    pub fn stats(&self) -> Stats {
        let mut s = self.inner.counters.sum();
        s.local_bytes = self.inner.heap.used() as u64;
        s.local_budget = self.inner.heap.budget as u64;
        s
    }

    /// Bytes of local memory in use (regions and dedicated allocations).
    pub fn local_bytes(&self) -> usize {
        self.inner.heap.used()
    }

    /// The local budget.
    pub fn budget(&self) -> usize {
        self.inner.heap.budget
    }

    /// Local bytes that `count` objects of `len` bytes each keep from the evacuator once
    /// packed for a long pin (see `FarVec::pin_all`).
    pub(crate) fn packed_footprint(&self, count: usize, len: usize) -> usize {
        self.inner.heap.packed_footprint(count, len)
    }

    /// The heap's region size.
    pub(crate) fn region_size(&self) -> usize {
        self.inner.heap.region_size()
    }

    /// Bytes the heap may use beyond the budget: allocations made inside a scope (which cannot
    /// wait for the evacuator) and evacuator compaction targets may use them.
    pub fn slack_bytes(&self) -> usize {
        self.inner.heap.slack
    }

    /// Sends queued frees of far copies to the backend now.
    ///
    /// # Errors
    /// The backend's error; the ids stay queued.
    pub fn flush_frees(&self) -> Result<()> {
        self.inner.frees.flush(&*self.inner.backend)
    }

    /// Reserves `n` fresh consecutive far object ids of this runtime and returns the first. No
    /// other far object of this runtime, nor of any other runtime of this process, will use
    /// them, so someone else (the remote agent) may write objects under them for
    /// [`FarSlice::from_far`] to adopt.
    ///
    /// # Errors
    /// [`Error::TooManyObjects`] once the runtime's ids are used up.
    pub(crate) fn reserve_ids(&self, n: u64) -> Result<ObjectId> {
        self.inner.ids.reserve_in(n, self.protection)
    }

    /// Counts bytes of remote-agent arguments sent and results received.
    pub(crate) fn count_agent_traffic(&self, sent: usize, received: usize) {
        self.inner.counters.with(|c| {
            stats::Counters::bump(&c.agent_bytes_sent, sent as u64);
            stats::Counters::bump(&c.agent_bytes_received, received as u64);
        });
    }

    /// Counts bytes streamed from the backend past the local heap.
    pub(crate) fn count_streamed(&self, bytes: usize) {
        self.inner
            .counters
            .with(|c| stats::Counters::bump(&c.bytes_streamed, bytes as u64));
    }

    /// Evicts every local object not pinned by a scope, on the calling thread, ignoring hot
    /// bits; open regions are sealed first.
    ///
    /// # Panics
    /// Panics if the calling thread is inside a scope (that would wait for itself).
    pub(crate) fn evacuate_now(&self) {
        assert!(
            !epoch::scope_state(self.inner.number).inside,
            "evacuate_now called inside a scope"
        );
        let inner = &self.inner;
        let rounds = inner.heap.used() / (evacuator::MAX_REGIONS * inner.cfg.region_size) + 1;
        for _ in 0..rounds {
            let target = inner.heap.used().max(1);
            if !evacuator::round(&inner.evacuation(), 0, target, true) {
                break;
            }
        }
    }
}

/// Hooks for farmem's own integration tests: not part of the supported API, may change or
/// disappear in any release.
#[doc(hidden)]
pub mod test_support {
    use super::{FarBox, FarSlice, Runtime};
    use crate::backend::ObjectId;
    use crate::error::Result;
    use bytemuck::Pod;

    /// Evicts every local object of `rt` not pinned by a scope, now, on the calling thread
    /// (which must not be inside a scope).
    pub fn evacuate_now(rt: &Runtime) {
        rt.evacuate_now();
    }

    /// Reserves `n` fresh far object ids of `rt` (as the containers do for agent outputs).
    ///
    /// # Errors
    /// As the runtime's id allocator.
    pub fn reserve_ids(rt: &Runtime, n: u64) -> Result<ObjectId> {
        rt.reserve_ids(n)
    }

    /// Adopts `len` values that exist only in the backend under `id`.
    ///
    /// # Errors
    /// [`Error::ObjectTooLarge`](crate::Error::ObjectTooLarge), [`Error::TooManyObjects`](crate::Error::TooManyObjects). Nothing is fetched now: if the far
    /// object is missing or not `len * size_of::<T>()` bytes, the dereference that fetches it fails.
    pub fn adopt_slice<T: Pod>(rt: &Runtime, id: ObjectId, len: usize) -> Result<FarSlice<T>> {
        FarSlice::from_far(rt, id, len)
    }

    /// Adopts one value that exists only in the backend under `id`.
    ///
    /// # Errors
    /// [`Error::TooManyObjects`](crate::Error::TooManyObjects). Nothing is fetched now: if the far object is missing or not
    /// `size_of::<T>()` bytes, the dereference that fetches it fails.
    pub fn adopt_box<T: Pod>(rt: &Runtime, id: ObjectId) -> Result<FarBox<T>> {
        FarBox::from_far(rt, id)
    }
}

fn connect_servers(addrs: &[String], token: &str) -> Result<Arc<dyn Backend>> {
    let mut cfg = crate::backend::TcpConfig::new(addrs.iter());
    if !token.is_empty() {
        cfg = cfg.token(token.as_bytes().to_vec());
    }
    Ok(Arc::new(crate::backend::TcpBackend::connect(cfg)?))
}

impl Inner {
    /// The calling thread's mutator lane.
    fn mutator_lane(&self) -> Lane {
        Lane::Mutator(LANE.try_with(|l| *l).unwrap_or(0))
    }

    fn max_object(&self) -> usize {
        (self.heap.budget / 2).min(1 << 36)
    }

    /// The watermarks, as fractions of what the heap's objects may use (see `Heap::limit`).
    fn watermark(&self, fraction: f64) -> usize {
        (self.heap.limit() as f64 * fraction) as usize
    }

    fn needs_evacuation(&self) -> bool {
        self.heap.used() + self.wanted.load(Ordering::Relaxed)
            > self.watermark(self.cfg.high_watermark)
    }

    fn evacuation_target(&self) -> usize {
        (self.heap.used() + self.wanted.load(Ordering::Relaxed))
            .saturating_sub(self.watermark(self.cfg.low_watermark))
    }

    fn wake_evacuator(&self) {
        let _g = self.signal.lock.lock();
        self.signal.cv.notify_all();
    }

    /// What the evacuator works with.
    fn evacuation(&self) -> Evacuation<'_> {
        Evacuation {
            heap: &self.heap,
            slots: &self.slots,
            backend: &*self.backend,
            frees: &self.frees,
            counters: &self.counters,
            last_error: &self.last_error,
            runtime: self.number,
            writeback_batch: self.cfg.writeback_batch,
        }
    }

    /// Finds local space for an object, waiting for the evacuator if needed.
    ///
    /// Stays within the budget, waiting for the evacuator up to `alloc_timeout`. When this
    /// runtime's evacuator waits for the calling thread's own scope, waiting would deadlock:
    /// then the allocation uses the slack. If that is exhausted too, the thread pins what its
    /// scopes dereferenced ([`Scope::touched`]; nothing when no reference can be alive,
    /// [`Scope::unpinnable`]) and leaves its epoch while it waits, so the evacuator can evict
    /// everything else, including what the scope is about to use. When the thread's scopes do not
    /// know what they dereferenced, or what they did leaves no room, it fails with
    /// `pinned: true`.
    ///
    /// Grace periods are process-wide, so another runtime's evacuator may be waiting for this
    /// scope too. That alone is no reason to draw on this runtime's slack (this runtime's
    /// evacuator may be held up by that other runtime's scopes, and then nothing refills the
    /// slack): such an allocation first waits for this runtime's evacuator for
    /// [`FOREIGN_PATIENCE`], and only then uses the slack (a cycle of runtimes waiting for each
    /// other's scopes would otherwise never resolve).
    fn alloc_space(
        &self,
        lane: Lane,
        slot: u32,
        len: usize,
        scope: Option<&Scope<'_>>,
    ) -> Result<Allocation> {
        if len > self.max_object() {
            return Err(Error::ObjectTooLarge {
                size: len,
                limit: self.max_object(),
            });
        }
        let start = Instant::now();
        let evacuator = matches!(lane, Lane::Evacuator(_));
        let mut foreign_since: Option<Instant> = None;
        // Set while the thread is out of its epoch (re-entered when dropped).
        let mut suspended = None;
        loop {
            if let Some(a) = self.heap.alloc(lane, slot, len, self.heap.limit()) {
                if self.wanted.load(Ordering::Relaxed) != 0 {
                    self.wanted.store(0, Ordering::Relaxed);
                }
                if self.needs_evacuation() {
                    self.wake_evacuator();
                }
                return Ok(a);
            }
            if !evacuator {
                self.wanted.fetch_max(len, Ordering::Relaxed);
            }
            let st = epoch::scope_state(self.number);
            let foreign = st.waited_for && !st.by_own;
            let since = match (foreign, foreign_since) {
                (true, Some(t)) => Some(t),
                (true, None) => Some(Instant::now()),
                (false, _) => None,
            };
            foreign_since = since;
            let blocked = st.by_own || since.is_some_and(|t| t.elapsed() >= FOREIGN_PATIENCE);
            if blocked || evacuator {
                // Waiting cannot help (see above), so use the slack.
                let limit = self.heap.limit() + self.heap.slack;
                if let Some(a) = self.heap.alloc(lane, slot, len, limit) {
                    self.wake_evacuator();
                    return Ok(a);
                }
            }
            if blocked && suspended.is_none() && !evacuator {
                // No slack left either. If nothing of ours is pinned, get out of the
                // evacuator's way and wait like a thread outside any scope; if the thread's
                // scopes know what they dereferenced, pin just that and do the same.
                suspended = match scope {
                    Some(s) if s.unpinnable() => Some(s.suspend()),
                    Some(s) => s.touched().and_then(|t| self.pin_touched(t, len)),
                    None => epoch::suspend_unreferenced()
                        .or_else(|| epoch::touched().and_then(|t| self.pin_touched(t, len))),
                };
                if suspended.is_some() {
                    continue;
                }
            }
            self.wake_evacuator();
            let timed_out = start.elapsed() > self.cfg.alloc_timeout;
            if blocked || timed_out || evacuator {
                let pinned = blocked || suspended.as_ref().is_some_and(|s| s.holds_pins());
                return Err(Error::LocalHeapExhausted {
                    budget: self.heap.budget,
                    in_use: self.heap.used(),
                    pinned,
                    cause: self.last_error.lock().clone(),
                });
            }
            self.heap.wait_freed(Duration::from_millis(1));
        }
    }
}

impl Inner {
    /// Pins every object of `touched` (what the calling thread's scopes dereferenced,
    /// [`Scope::touched`]; all of this runtime) and leaves the thread's epoch, for an allocation
    /// of `len` bytes that must wait for room. `None` (nothing pinned) when one of those objects
    /// belongs to another runtime or has moved, or when what it pins leaves no room for `len`
    /// bytes anyway.
    fn pin_touched(&self, touched: Vec<(usize, usize)>, len: usize) -> Option<epoch::Suspended> {
        let mut pins: Vec<&slot::Slot> = Vec::with_capacity(touched.len());
        let mut bytes = len;
        let mut ok = true;
        for (slot, at) in touched {
            let Some(slot) = self.slots.find(slot) else {
                ok = false;
                break;
            };
            if pin::pin_at(slot, at) {
                pins.push(slot);
                bytes += slot.len();
            } else if slot.load().is_present() {
                // Moved by another thread since (its old copy waits for this thread's epoch),
                // or the slot was reused: keep everything.
                ok = false;
                break;
            }
            // Not local: freed or invalidated since, so no reference to it is alive.
        }
        if !ok || bytes > self.heap.limit() {
            pins.into_iter().for_each(pin::unpin);
            return None;
        }
        let pins = pins.into_iter().map(std::ptr::from_ref).collect();
        // SAFETY: the slots are this runtime's, and `self` outlives the guard (a local of the
        // allocation that borrows it).
        Some(unsafe { epoch::suspend_pinned(pins) })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.signal.shutdown.store(true, Ordering::Release);
        self.wake_evacuator();
        // Free what detached objects (and anything else) still hold, locally and remotely.
        let mut remote = Vec::new();
        let mut large = Vec::new();
        self.slots.for_each(|_, s| {
            let w = s.load();
            if w.has_far_copy() {
                remote.push(s.id());
            }
            if w.is_present() && w.is_large() {
                large.push((w.addr(), s.len()));
            }
        });
        for (addr, len) in large {
            // SAFETY: with the runtime gone no handle or reference to this allocation remains.
            unsafe { self.heap.free_large(addr, len) };
        }
        self.frees.extend(remote);
        if let Err(e) = self.frees.flush(&*self.backend) {
            tracing::warn!("freeing far copies at shutdown failed: {e}");
        }
    }
}

fn evacuator_main(weak: Weak<Inner>, signal: Arc<Signal>, idx: usize) {
    loop {
        if signal.shutdown.load(Ordering::Acquire) {
            return;
        }
        let Some(inner) = weak.upgrade() else { return };
        let worked = inner.needs_evacuation()
            && evacuator::round(&inner.evacuation(), idx, inner.evacuation_target(), false);
        if !worked && !inner.frees.is_empty() {
            let _ = inner.frees.flush(&*inner.backend);
        }
        let busy = worked && inner.needs_evacuation();
        drop(inner);
        if !busy {
            let mut g = signal.lock.lock();
            if !signal.shutdown.load(Ordering::Acquire) {
                signal.cv.wait_for(&mut g, Duration::from_millis(20));
            }
        }
    }
}
