//! The runtime handle: configuration, backend, heap, slots and evacuator threads.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::backend::{Backend, EmbeddedStore, ObjectId};
use crate::config::{BackendConfig, RuntimeConfig};
use crate::epoch::{self, Scope};
use crate::error::{Error, Result};
use crate::heap::{Allocation, Heap, Lane};
use crate::slot::SlotTable;
use crate::stats::{CounterSet, Stats};

/// Far object ids are unique per process, so runtimes may share a backend.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static NEXT_RUNTIME: AtomicU64 = AtomicU64::new(1);
static NEXT_LANE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static LANE: usize = NEXT_LANE.fetch_add(1, Ordering::Relaxed);
}

/// How long an allocation inside a scope that only other runtimes' evacuators wait for waits
/// for its own runtime's evacuator before it uses the slack (see `Inner::alloc_space`).
const FOREIGN_PATIENCE: Duration = Duration::from_millis(50);

/// Frees queued before a batch `free` call is sent.
const FREE_BATCH: usize = 512;

/// Wakes and stops evacuator threads.
#[derive(Default)]
pub(crate) struct Signal {
    lock: Mutex<()>,
    cv: Condvar,
    shutdown: AtomicBool,
}

pub(crate) struct Inner {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) heap: Heap,
    pub(crate) slots: SlotTable,
    pub(crate) counters: CounterSet,
    pub(crate) cfg: RuntimeConfig,
    pub(crate) signal: Arc<Signal>,
    pub(crate) pending_free: Mutex<Vec<ObjectId>>,
    pub(crate) last_error: Mutex<Option<Arc<crate::BackendError>>>,
    /// Process-unique id (also names this runtime's evacuators in the scope handshake).
    pub(crate) id: u64,
    high_bytes: usize,
    low_bytes: usize,
}

/// A far-memory runtime: a local heap of far objects with a budget, a backend, evacuators.
///
/// Cheap to clone (a shared handle). Several runtimes may exist in one process.
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
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("backend", &self.inner.backend.describe())
            .field("budget", &self.inner.heap.budget)
            .field("used", &self.inner.heap.used())
            .finish()
    }
}

impl Runtime {
    /// Builds a runtime and starts its evacuator threads.
    ///
    /// # Errors
    /// [`Error::BudgetTooSmall`] / [`Error::Config`] for a bad configuration,
    /// [`Error::Backend`] when the servers cannot be reached, [`Error::Config`] when the local
    /// heap cannot be reserved.
    pub fn new(cfg: RuntimeConfig) -> Result<Self> {
        cfg.validate()?;
        let backend: Arc<dyn Backend> = match &cfg.backend {
            BackendConfig::Embedded => Arc::new(EmbeddedStore::new()),
            BackendConfig::Custom(b) => b.clone(),
            BackendConfig::Servers { addrs, token } => connect_servers(addrs, token)?,
            BackendConfig::Pool {
                addrs,
                token,
                replicas,
            } => BackendConfig::connect_pool(addrs, token, *replicas)?,
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
        let budget = cfg.local_budget as f64;
        let id = NEXT_RUNTIME.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::new(Inner {
            backend,
            heap,
            slots: SlotTable::new(),
            counters: CounterSet::new(id),
            id,
            high_bytes: (budget * cfg.high_watermark) as usize,
            low_bytes: (budget * cfg.low_watermark) as usize,
            cfg,
            signal: Arc::new(Signal::default()),
            pending_free: Mutex::new(Vec::new()),
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
        Ok(Self { inner })
    }

    /// Opens a scope: far objects dereferenced under it stay put until it ends.
    pub fn scope(&self) -> Scope<'_> {
        Scope::new(&self.inner)
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

    /// Bytes the heap may use beyond the budget: allocations made inside a scope (which cannot
    /// wait for the evacuator) and evacuator compaction targets may use them.
    pub fn slack_bytes(&self) -> usize {
        self.inner.heap.slack
    }

    /// Reserves `n` fresh consecutive far object ids and returns the first. No other far object
    /// of this process (of any runtime) will use them, so someone else (the remote agent) may
    /// write objects under them for [`FarSlice::from_far`](crate::FarSlice::from_far) to adopt.
    ///
    /// ```
    /// # let rt = farmem::Runtime::new(farmem::RuntimeConfig::new(16 << 20)).unwrap();
    /// let first = rt.reserve_ids(3);
    /// assert!(rt.reserve_ids(1) >= first + 3);
    /// ```
    pub fn reserve_ids(&self, n: u64) -> ObjectId {
        NEXT_ID.fetch_add(n, Ordering::Relaxed)
    }

    /// Sends queued frees of far copies to the backend now.
    ///
    /// # Errors
    /// The backend's error; the ids stay queued.
    pub fn flush_frees(&self) -> Result<()> {
        self.inner.flush_frees()
    }

    /// Evicts every local object not pinned by a scope, on the calling thread (which must not be
    /// inside a scope), ignoring hot bits; open regions are sealed first. For tests and
    /// benchmarks.
    ///
    /// # Panics
    /// Panics if the calling thread is inside a scope (that would wait for itself).
    pub fn evacuate_now(&self) {
        assert!(
            !epoch::scope_state(self.inner.id).inside,
            "evacuate_now called inside a scope"
        );
        let rounds = self.inner.heap.used()
            / (crate::evacuator::MAX_REGIONS * self.inner.cfg.region_size)
            + 1;
        for _ in 0..rounds {
            if !crate::evacuator::round(&self.inner, 0, true) {
                break;
            }
        }
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
    pub(crate) fn next_id() -> ObjectId {
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    }

    /// The calling thread's mutator lane.
    pub(crate) fn mutator_lane(&self) -> Lane {
        Lane::Mutator(LANE.try_with(|l| *l).unwrap_or(0))
    }

    pub(crate) fn max_object(&self) -> usize {
        (self.heap.budget / 2).min(1 << 36)
    }

    fn needs_evacuation(&self) -> bool {
        self.heap.used() > self.high_bytes
    }

    pub(crate) fn evacuation_target(&self) -> usize {
        self.heap.used().saturating_sub(self.low_bytes)
    }

    pub(crate) fn wake_evacuator(&self) {
        let _g = self.signal.lock.lock();
        self.signal.cv.notify_all();
    }

    /// Finds local space for an object, waiting for the evacuator if needed.
    ///
    /// Stays within the budget, waiting for the evacuator up to `alloc_timeout`. When this
    /// runtime's evacuator waits for the calling thread's own scope, waiting would deadlock: then
    /// the allocation may use the slack, and fails with `pinned: true` if that is exhausted too.
    ///
    /// Grace periods are process-wide, so another runtime's evacuator may be waiting for this
    /// scope too. That alone is no reason to draw on this runtime's slack (this runtime's
    /// evacuator may be held up by that other runtime's scopes, and then nothing refills the
    /// slack): such an allocation first waits for this runtime's evacuator for
    /// [`FOREIGN_PATIENCE`], and only then uses the slack (a cycle of runtimes waiting for each
    /// other's scopes would otherwise never resolve).
    pub(crate) fn alloc_space(&self, lane: Lane, slot: u32, len: usize) -> Result<Allocation> {
        if len > self.max_object() {
            return Err(Error::ObjectTooLarge {
                size: len,
                limit: self.max_object(),
            });
        }
        let start = Instant::now();
        let evacuator = matches!(lane, Lane::Evacuator(_));
        let mut foreign_since: Option<Instant> = None;
        loop {
            if let Some(a) = self.heap.alloc(lane, slot, len, self.heap.budget) {
                if self.needs_evacuation() {
                    self.wake_evacuator();
                }
                return Ok(a);
            }
            let st = epoch::scope_state(self.id);
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
                let limit = self.heap.budget + self.heap.slack;
                if let Some(a) = self.heap.alloc(lane, slot, len, limit) {
                    self.wake_evacuator();
                    return Ok(a);
                }
            }
            self.wake_evacuator();
            let timed_out = start.elapsed() > self.cfg.alloc_timeout;
            if blocked || timed_out || evacuator {
                return Err(Error::LocalHeapExhausted {
                    budget: self.heap.budget,
                    in_use: self.heap.used(),
                    pinned: blocked,
                    cause: self.last_error.lock().clone(),
                });
            }
            self.heap.wait_freed(Duration::from_millis(1));
        }
    }

    /// Queues the far copy of `id` for freeing.
    pub(crate) fn queue_free(&self, id: ObjectId) {
        let full = {
            let mut q = self.pending_free.lock();
            q.push(id);
            q.len() >= FREE_BATCH
        };
        if full && let Err(e) = self.flush_frees() {
            tracing::warn!("freeing far copies failed (will retry): {e}");
        }
    }

    pub(crate) fn flush_frees(&self) -> Result<()> {
        let ids = std::mem::take(&mut *self.pending_free.lock());
        if ids.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.backend.free(&ids) {
            self.pending_free.lock().extend(ids);
            return Err(e.into());
        }
        Ok(())
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
            let w = s.word.load(crate::loom::Ordering::Acquire);
            if w & crate::slot::bits::REMOTE != 0 {
                remote.push(s.id());
            }
            if w & crate::slot::bits::PRESENT != 0 && w & crate::slot::bits::LARGE != 0 {
                large.push((crate::slot::bits::addr(w), s.len()));
            }
        });
        for (addr, len) in large {
            // SAFETY: with the runtime gone no handle or reference to this allocation remains.
            unsafe { self.heap.free_large(addr, len) };
        }
        self.pending_free.lock().extend(remote);
        if let Err(e) = self.flush_frees() {
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
        let worked = inner.needs_evacuation() && crate::evacuator::round(&inner, idx, false);
        if !worked && !inner.pending_free.lock().is_empty() {
            let _ = inner.flush_frees();
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{FarBox, FarPtr, FarSlice};

    /// Small enough for miri: `cargo +nightly miri test -p farmem --lib runtime::tests`.
    #[test]
    fn objects_round_trip_through_eviction() {
        let rt = Runtime::new(
            RuntimeConfig::new(8 * (64 << 10))
                .region_size(64 << 10)
                .lanes(1)
                .evacuator_threads(1),
        )
        .unwrap();
        let mut small = FarBox::new(&rt, [3u64; 4]).unwrap();
        let big = FarSlice::from_slice(&rt, &[9u8; 20_000]).unwrap();
        let node = FarBox::new(&rt, [5u64, FarPtr::<u64>::NULL.to_bits()]).unwrap();
        let ptr = node.into_ptr();
        {
            let s = rt.scope();
            small.write(&s).unwrap()[1] = 4;
        }
        rt.evacuate_now();
        assert!(!small.is_local());
        assert_eq!(small.get().unwrap(), [3, 4, 3, 3]);
        assert!(big.to_vec().unwrap().iter().all(|&b| b == 9));
        let node = FarBox::from_ptr(&rt, ptr).unwrap();
        assert_eq!(node.get().unwrap()[0], 5);
        small.flush().unwrap();
        small.invalidate_local().unwrap();
        assert_eq!(small.get().unwrap()[1], 4);
        assert!(rt.stats().objects_evicted >= 3);
    }
}
