//! The "farmem internals" thread mark: allocations made while it is set never go to a paged region.
//!
//! The pager thread sets it for its whole life; every other farmem code path that may talk to the
//! backend or touch pager state while holding a pager lock sets it for that scope. [`PagingAlloc`]
//! sends allocations of marked threads to the system allocator, which rules out the deadlock where
//! the pager (or a thread holding the pager lock) faults on a page that only the pager can serve.
//!
//! [`PagingAlloc`]: super::PagingAlloc

use std::cell::Cell;

thread_local! {
    // Const-initialised and without destructor: safe to read from inside a global allocator.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// While alive, allocations of this thread bypass paged memory (nestable).
///
/// ```
/// use farmem::paging::InternalGuard;
/// let _g = InternalGuard::new();
/// assert!(InternalGuard::is_set());
/// ```
#[must_use = "the mark is removed when the guard is dropped"]
#[derive(Debug)]
pub struct InternalGuard(());

impl InternalGuard {
    /// Marks the current thread until the guard is dropped.
    pub fn new() -> Self {
        let _ = DEPTH.try_with(|d| d.set(d.get() + 1));
        Self(())
    }

    /// Whether the current thread is marked (`true` as well while its thread-locals are torn down,
    /// to stay on the safe side).
    pub fn is_set() -> bool {
        DEPTH.try_with(|d| d.get() > 0).unwrap_or(true)
    }
}

impl Default for InternalGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for InternalGuard {
    fn drop(&mut self) {
        let _ = DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nests_and_unwinds() {
        assert!(!InternalGuard::is_set());
        {
            let _a = InternalGuard::new();
            let _b = InternalGuard::new();
            drop(_b);
            assert!(InternalGuard::is_set());
        }
        assert!(!InternalGuard::is_set());
    }
}
