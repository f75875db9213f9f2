//! Server-wide capacity accounting shared by all namespaces.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::StoreError;

/// The capacity of a server (or embedded store) and what is charged against it.
///
/// Every namespace charges its objects here; a charge that would exceed the *limit* fails and
/// changes nothing. The capacity can be lowered and raised at run time
/// ([`Budget::set_capacity`]), up to the capacity the budget was made with. Lowering it below
/// what is used never drops anything: the limit then follows use down as objects are freed
/// (what is freed cannot be taken again) until it reaches the new capacity.
///
/// ```
/// use farmem_store::Budget;
/// let b = Budget::new(1000);
/// b.exchange(600, 0).unwrap();
/// assert_eq!(b.set_capacity(400), 400);
/// assert_eq!((b.capacity(), b.limit(), b.excess()), (400, 600, 200));
/// b.release(100); // freed space is not given out again
/// assert!(b.exchange(50, 0).is_err());
/// b.release(200);
/// assert_eq!((b.limit(), b.excess()), (400, 0));
/// b.set_capacity(5000); // at most the capacity it was made with
/// assert_eq!(b.capacity(), 1000);
/// ```
#[derive(Debug)]
pub struct Budget {
    /// The capacity the budget was made with: the most [`Budget::set_capacity`] gives.
    max: u64,
    /// The capacity wanted now.
    target: AtomicU64,
    /// What charges may reach: `max(target, used)` while shrinking, else `target`.
    limit: AtomicU64,
    used: AtomicU64,
    pub(super) objects: AtomicU64,
    pub(super) bytes_written: AtomicU64,
    /// Serialises capacity changes.
    change: Mutex<()>,
}

impl Budget {
    /// A budget of `limit` bytes (`u64::MAX` for unlimited).
    pub fn new(limit: u64) -> Self {
        Self {
            max: limit,
            target: AtomicU64::new(limit),
            limit: AtomicU64::new(limit),
            used: AtomicU64::new(0),
            objects: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            change: Mutex::new(()),
        }
    }

    /// What charges may reach now: the capacity, or more while a shrink waits for use to come
    /// down to it.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Acquire)
    }

    /// The capacity wanted now (the configured one unless changed by [`Budget::set_capacity`]).
    pub fn capacity(&self) -> u64 {
        self.target.load(Ordering::Acquire)
    }

    /// The capacity the budget was made with.
    pub fn max_capacity(&self) -> u64 {
        self.max
    }

    /// Bytes used above the capacity (0 unless a shrink waits for use to come down).
    pub fn excess(&self) -> u64 {
        self.used().saturating_sub(self.capacity())
    }

    /// Sets the capacity to `bytes` (at most [`Budget::max_capacity`]) and returns it. Growing
    /// takes effect at once; shrinking below what is used keeps what is stored and lets the
    /// limit follow use down (see the type docs).
    pub fn set_capacity(&self, bytes: u64) -> u64 {
        let _g = self.change.lock();
        let target = bytes.min(self.max);
        self.target.store(target, Ordering::Release);
        let used = self.used();
        self.limit.store(target.max(used), Ordering::Release);
        // A charge that raced the store above was checked against the older limit.
        self.limit
            .fetch_max(self.used().min(self.max), Ordering::AcqRel);
        self.ratchet();
        target
    }

    /// Gives up waiting for use to come down: the capacity becomes what is used now (if that is
    /// more) and is returned.
    pub fn settle(&self) -> u64 {
        let _g = self.change.lock();
        let target = self.capacity().max(self.used()).min(self.max);
        self.target.store(target, Ordering::Release);
        self.limit.fetch_max(target, Ordering::AcqRel);
        self.ratchet();
        target
    }

    /// Lowers the limit towards the capacity as far as use allows.
    fn ratchet(&self) {
        let target = self.target.load(Ordering::Acquire);
        let mut lim = self.limit.load(Ordering::Acquire);
        while lim > target {
            let want = self.used().max(target);
            if want >= lim {
                return;
            }
            match self
                .limit
                .compare_exchange_weak(lim, want, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(now) => lim = now,
            }
        }
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
            let limit = self.limit();
            if add > release && next > limit {
                return Err(StoreError::OutOfCapacity {
                    needed: add,
                    available: limit.saturating_sub(base),
                });
            }
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        if release > add {
            self.ratchet();
        }
        Ok(())
    }

    /// Gives `bytes` back.
    pub fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(bytes))
            });
        self.ratchet();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrink_keeps_what_is_stored_and_follows_use_down() {
        let b = Budget::new(1000);
        b.exchange(800, 0).unwrap();
        assert_eq!(b.set_capacity(500), 500);
        assert_eq!((b.capacity(), b.limit(), b.excess()), (500, 800, 300));
        // Replacing an object by a smaller one is a release: the limit follows.
        b.exchange(100, 200).unwrap();
        assert_eq!((b.used(), b.limit()), (700, 700));
        assert!(matches!(
            b.exchange(1, 0),
            Err(StoreError::OutOfCapacity { available: 0, .. })
        ));
        b.release(300);
        assert_eq!((b.used(), b.limit(), b.excess()), (400, 500, 0));
        b.exchange(100, 0).unwrap();
        assert!(b.exchange(1, 0).is_err());
    }

    #[test]
    fn settle_and_grow() {
        let b = Budget::new(1000);
        b.exchange(800, 0).unwrap();
        b.set_capacity(100);
        b.release(100);
        // Giving up: the capacity is what is used, and stays there after frees.
        assert_eq!(b.settle(), 700);
        assert_eq!((b.capacity(), b.limit(), b.excess()), (700, 700, 0));
        b.release(700);
        assert_eq!(b.limit(), 700);
        b.exchange(700, 0).unwrap();
        assert!(b.exchange(1, 0).is_err());
        // Growing takes effect at once, up to the capacity it was made with.
        assert_eq!(b.set_capacity(u64::MAX), 1000);
        b.exchange(300, 0).unwrap();
        assert!(b.exchange(1, 0).is_err());
        assert_eq!(b.max_capacity(), 1000);
    }

    #[test]
    fn concurrent_charges_never_pass_a_settled_limit() {
        let b = std::sync::Arc::new(Budget::new(1 << 20));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        if b.exchange(64, 0).is_ok() {
                            b.release(64);
                        }
                    }
                })
            })
            .collect();
        for i in 0..200 {
            b.set_capacity(if i % 2 == 0 { 1024 } else { 1 << 20 });
        }
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(b.used(), 0);
        b.set_capacity(1024);
        assert_eq!(b.limit(), 1024);
    }
}
