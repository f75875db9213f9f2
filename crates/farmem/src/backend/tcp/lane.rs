//! The bulk lane: requests a thread marks as bulk go on a connection of their own.

thread_local! {
    /// The current thread's requests are bulk (see [`BulkLane`]).
    static BULK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread's requests are bulk now.
pub(super) fn is_bulk() -> bool {
    BULK.with(std::cell::Cell::get)
}

/// While alive, marks the current thread's requests as *bulk* (the paging reclaimer's
/// write-backs): a backend with several connections per server sends them on the last
/// connection, and from the first such request on keeps every other request off it, so that
/// latency-bound requests (demand fetches) never queue behind a bulk batch. Restores the previous
/// marking when dropped.
pub(crate) struct BulkLane {
    was: bool,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl BulkLane {
    /// Marks the current thread (until the returned guard is dropped).
    pub(crate) fn enter() -> Self {
        Self {
            was: BULK.with(|b| b.replace(true)),
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Drop for BulkLane {
    fn drop(&mut self) {
        BULK.with(|b| b.set(self.was));
    }
}
