//! Runtime statistics: per-thread counters, summed on read.
//!
//! Each thread owns one [`Counters`] per runtime and updates it with plain relaxed load + store
//! (no read-modify-write, no contention); [`Runtime::stats`](crate::Runtime::stats) sums them.
//! Hits are first counted in the [`Scope`](crate::Scope) and added when it ends.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// A snapshot of a runtime's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Dereferences that found the object local (counted when their scope ends).
    pub hits: u64,
    /// Dereferences that had to fetch the object.
    pub misses: u64,
    /// Objects fetched by prefetch calls.
    pub prefetched: u64,
    /// Bytes fetched from the backend (misses and prefetches).
    pub bytes_fetched: u64,
    /// Bytes written back to the backend (evacuation and flushes).
    pub bytes_written_back: u64,
    /// Evacuation rounds completed.
    pub evacuation_rounds: u64,
    /// Objects evicted from local memory.
    pub objects_evicted: u64,
    /// Hot objects moved by the evacuator to compact the heap.
    pub objects_compacted: u64,
    /// Objects a mutator moved itself because it touched them during evacuation.
    pub self_moves: u64,
    /// Bytes of remote-agent arguments the containers sent (offloaded operations).
    pub agent_bytes_sent: u64,
    /// Bytes of remote-agent results the containers received.
    pub agent_bytes_received: u64,
    /// Bytes non-temporal scans ([`FarVec::scan_nt`](crate::containers::FarVec::scan_nt))
    /// streamed from the backend without caching them (not included in `bytes_fetched`).
    pub bytes_streamed: u64,
    /// Bytes of local memory in use (regions and dedicated allocations).
    pub local_bytes: u64,
    /// The configured local budget.
    pub local_budget: u64,
}

macro_rules! counters {
    ($($name:ident),*) => {
        /// One thread's counters for one runtime.
        #[derive(Debug, Default)]
        pub(crate) struct Counters { $(pub(crate) $name: AtomicU64,)* }

        impl Counters {
            fn sum_into(&self, s: &mut Stats) {
                $(s.$name += self.$name.load(Ordering::Relaxed);)*
            }
        }
    };
}

counters!(
    hits,
    misses,
    prefetched,
    bytes_fetched,
    bytes_written_back,
    evacuation_rounds,
    objects_evicted,
    objects_compacted,
    self_moves,
    agent_bytes_sent,
    agent_bytes_received,
    bytes_streamed
);

impl Counters {
    /// Adds `n` to a counter of the calling thread (owner-only, so load + store is exact).
    pub(crate) fn bump(field: &AtomicU64, n: u64) {
        field.store(field.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    pub(crate) fn add_hits(&self, n: u64) {
        Self::bump(&self.hits, n);
    }
}

/// All threads' counters of one runtime.
#[derive(Debug)]
pub(crate) struct CounterSet {
    id: u64,
    all: Mutex<Vec<Arc<Counters>>>,
}

thread_local! {
    static MINE: RefCell<Vec<(u64, Arc<Counters>)>> = const { RefCell::new(Vec::new()) };
}

impl CounterSet {
    pub(crate) fn new(id: u64) -> Self {
        Self {
            id,
            all: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on the calling thread's counters (ignored during thread teardown).
    pub(crate) fn with(&self, f: impl FnOnce(&Counters)) {
        let _ = MINE.try_with(|m| {
            let mut m = m.borrow_mut();
            if let Some((_, c)) = m.iter().find(|(id, _)| *id == self.id) {
                f(c);
                return;
            }
            let c = Arc::new(Counters::default());
            self.all.lock().push(c.clone());
            f(&c);
            m.push((self.id, c));
        });
    }

    /// Sums every thread's counters.
    pub(crate) fn sum(&self) -> Stats {
        let mut s = Stats::default();
        for c in self.all.lock().iter() {
            c.sum_into(&mut s);
        }
        s
    }
}

impl Drop for CounterSet {
    fn drop(&mut self) {
        let id = self.id;
        let _ = MINE.try_with(|m| m.borrow_mut().retain(|(i, _)| *i != id));
    }
}
