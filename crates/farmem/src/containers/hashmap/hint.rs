//! Where each shard's cache arrays are, readable without the shard's lock, so that a batch of
//! lookups can prefetch the sets of all its keys before it locks any shard and their cache
//! misses overlap instead of queueing one shard at a time.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::cache::{WAYS, set_base};

/// Most cache lines prefetched for one key's set of values.
const MAX_VALUE_LINES: usize = 8;
/// Bytes of a cache line.
const LINE: usize = 64;

/// The addresses and number of sets of one shard's arrays, published by the shard (under its
/// lock) whenever they change. Readers use them only as prefetch addresses: a stale value
/// costs a useless prefetch, never a memory access.
#[derive(Debug, Default)]
pub(super) struct SetHint {
    meta: AtomicUsize,
    keys: AtomicUsize,
    values: AtomicUsize,
    sets: AtomicUsize,
}

impl SetHint {
    /// Publishes the shard's arrays: their addresses and its number of sets.
    pub(super) fn publish(&self, meta: *const u8, keys: usize, values: usize, sets: usize) {
        self.meta.store(meta as usize, Ordering::Relaxed);
        self.keys.store(keys, Ordering::Relaxed);
        self.values.store(values, Ordering::Relaxed);
        self.sets.store(sets, Ordering::Relaxed);
    }

    /// Prefetches the metadata, keys and values of the set of a key hashing to `h`, in a shard
    /// of `K` keys and `V` values.
    #[inline]
    pub(super) fn prefetch<K, V>(&self, h: u64) {
        let base = set_base(h, self.sets.load(Ordering::Relaxed));
        prefetch(self.meta.load(Ordering::Relaxed).wrapping_add(base));
        prefetch_range(
            self.keys
                .load(Ordering::Relaxed)
                .wrapping_add(base.wrapping_mul(size_of::<K>())),
            WAYS * size_of::<K>(),
        );
        prefetch_range(
            self.values
                .load(Ordering::Relaxed)
                .wrapping_add(base.wrapping_mul(size_of::<V>())),
            (WAYS * size_of::<V>()).min(MAX_VALUE_LINES * LINE),
        );
    }
}

/// Prefetches the cache lines of `len` bytes at `at`.
#[inline(always)]
fn prefetch_range(at: usize, len: usize) {
    let mut line = at & !(LINE - 1);
    let end = at.wrapping_add(len);
    while line < end {
        prefetch(line);
        line += LINE;
    }
}

/// Asks the CPU to bring the cache line of `addr` closer; no effect on the program's state.
#[inline(always)]
fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults and reads nothing the program sees,
    // whatever the address (a stale one included).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}
