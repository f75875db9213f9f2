//! Server-wide capacity accounting shared by all namespaces.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::StoreError;

/// The hard capacity of a server (or embedded store) and what is charged against it.
///
/// Every namespace charges its objects here; a charge that would exceed the limit fails and
/// changes nothing, so the limit is never exceeded.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: AtomicU64,
    pub(super) objects: AtomicU64,
    pub(super) bytes_written: AtomicU64,
}

impl Budget {
    /// A budget of `limit` bytes (`u64::MAX` for unlimited).
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
            objects: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
        }
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes currently charged.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Objects stored in all namespaces.
    pub fn objects(&self) -> u64 {
        self.objects.load(Ordering::Relaxed)
    }

    /// Payload bytes written by puts and patches so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }

    /// Atomically charges `add` bytes while releasing `release` bytes (a replacement).
    ///
    /// # Errors
    /// [`StoreError::OutOfCapacity`] when the result would exceed the limit and the charge
    /// grows; nothing changes then.
    pub fn exchange(&self, add: u64, release: u64) -> Result<(), StoreError> {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let base = cur.saturating_sub(release);
            let next = base.saturating_add(add);
            if add > release && next > self.limit {
                return Err(StoreError::OutOfCapacity {
                    needed: add,
                    available: self.limit.saturating_sub(base),
                });
            }
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    /// Gives `bytes` back.
    pub fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(bytes))
            });
    }
}
