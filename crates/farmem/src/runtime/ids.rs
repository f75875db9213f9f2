//! Far object ids: one allocator per runtime.
//!
//! Several runtimes of a process may share one backend (an `Arc<dyn Backend>`, or the same memory
//! servers), so their ids must not collide. Each runtime numbers its objects within its own block
//! of the id space, `runtime number << BLOCK_BITS`, where the runtime number is the process-unique
//! number every runtime gets at construction (see `Runtime::new`). Ids are never reused while the
//! runtime lives; the remote agent's outputs and tables take ids from the same allocator.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::ObjectId;
use crate::error::{Error, Result};

/// Ids per runtime: 2^44 (17.6 trillion).
const BLOCK_BITS: u32 = 44;
/// Runtime numbers that fit below bit 62 (the space above is left to other users of a backend,
/// such as the paging mode's default ranges).
pub(crate) const MAX_RUNTIMES: u64 = 1 << (62 - BLOCK_BITS);

/// The id allocator of one runtime.
#[derive(Debug)]
pub(crate) struct Ids {
    next: AtomicU64,
    end: u64,
}

impl Ids {
    /// The allocator of runtime number `runtime` (below [`MAX_RUNTIMES`]). Id 0 is never used.
    pub(crate) fn new(runtime: u64) -> Self {
        debug_assert!(runtime < MAX_RUNTIMES);
        let base = runtime << BLOCK_BITS;
        Self {
            next: AtomicU64::new(base.max(1)),
            end: base + (1 << BLOCK_BITS),
        }
    }

    /// Reserves `n` consecutive fresh ids and returns the first.
    ///
    /// # Errors
    /// [`Error::TooManyObjects`] once the runtime's block is used up.
    pub(crate) fn reserve(&self, n: u64) -> Result<ObjectId> {
        self.next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |next| {
                next.checked_add(n).filter(|&end| end <= self.end)
            })
            .map_err(|_| Error::TooManyObjects)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn runtimes_get_disjoint_blocks_and_ids_are_not_reused() {
        let (a, b) = (Ids::new(1), Ids::new(2));
        let first = a.reserve(3).unwrap();
        assert_eq!(a.reserve(1).unwrap(), first + 3);
        assert!(b.reserve(1).unwrap() >= first + (1 << BLOCK_BITS));
        assert_ne!(
            Ids::new(0).reserve(1).unwrap(),
            0,
            "id 0 is never handed out"
        );
    }

    #[test]
    fn an_exhausted_block_fails_instead_of_spilling_into_the_next() {
        let ids = Ids::new(MAX_RUNTIMES - 1);
        assert!(ids.reserve((1 << BLOCK_BITS) - 1).is_ok());
        assert!(ids.reserve(1).is_ok());
        assert!(matches!(ids.reserve(1), Err(Error::TooManyObjects)));
        assert!(matches!(ids.reserve(u64::MAX), Err(Error::TooManyObjects)));
        assert!(ids.end <= 1 << 62);
    }
}
