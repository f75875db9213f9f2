//! Far object ids: one allocator per runtime.
//!
//! Several runtimes of a process may share one backend (an `Arc<dyn Backend>`, or the same memory
//! servers), so their ids must not collide. Each runtime numbers its objects within its own block
//! of the id space, `runtime number << BLOCK_BITS`, where the runtime number is the process-unique
//! number every runtime gets at construction (see `Runtime::new`). A block is split in one part
//! per [`Protection`], whose choice the id carries to the pool. Ids are never reused while the
//! runtime lives; the remote agent's outputs and tables take ids from the same allocator.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::{ObjectId, Protection};
use crate::error::{Error, Result};

/// Ids per runtime: 2^44 (17.6 trillion), a quarter of them per protection.
const BLOCK_BITS: u32 = 44;
/// Runtime numbers that fit below bit 62 (the space above is left to other users of a backend,
/// such as the paging mode's default ranges).
pub(crate) const MAX_RUNTIMES: u64 = 1 << (62 - BLOCK_BITS);

const CHOICES: [Protection; 3] = [
    Protection::BySize,
    Protection::Replicated,
    Protection::Coded,
];

/// The id allocator of one runtime.
#[derive(Debug)]
pub(crate) struct Ids {
    /// Next id of each choice of [`CHOICES`].
    next: [AtomicU64; 3],
    /// End of the part of each.
    end: [u64; 3],
}

impl Ids {
    /// The allocator of runtime number `runtime` (below [`MAX_RUNTIMES`]). Id 0 is never used.
    pub(crate) fn new(runtime: u64) -> Self {
        debug_assert!(runtime < MAX_RUNTIMES);
        let base = |p: Protection| p.tag(runtime << BLOCK_BITS);
        Self {
            next: CHOICES.map(|p| AtomicU64::new(base(p).max(1))),
            end: CHOICES.map(|p| base(p) + Protection::SPAN),
        }
    }

    /// Reserves `n` consecutive fresh ids carrying `p` and returns the first.
    ///
    /// # Errors
    /// [`Error::TooManyObjects`] once the runtime's part for `p` is used up.
    pub(crate) fn reserve_in(&self, n: u64, p: Protection) -> Result<ObjectId> {
        let i = CHOICES.iter().position(|&c| c == p).unwrap_or(0);
        let end = self.end[i];
        self.next[i]
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |next| {
                next.checked_add(n).filter(|&e| e <= end)
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
        let any = Protection::BySize;
        let first = a.reserve_in(3, any).unwrap();
        assert_eq!(a.reserve_in(1, any).unwrap(), first + 3);
        assert!(b.reserve_in(1, any).unwrap() >= first + (1 << BLOCK_BITS));
        assert_ne!(
            Ids::new(0).reserve_in(1, any).unwrap(),
            0,
            "id 0 is never handed out"
        );
    }

    #[test]
    fn each_protection_has_its_own_ids_carrying_it() {
        let ids = Ids::new(3);
        let mut seen = Vec::new();
        for p in CHOICES {
            let id = ids.reserve_in(5, p).unwrap();
            assert_eq!(Protection::of(id), p);
            assert_eq!(Protection::of(id + 4), p);
            assert_eq!(id >> BLOCK_BITS, 3);
            seen.push(id);
        }
        assert!(seen.windows(2).all(|w| w[1] >= w[0] + 5));
    }

    #[test]
    fn an_exhausted_block_fails_instead_of_spilling_into_the_next() {
        let ids = Ids::new(MAX_RUNTIMES - 1);
        for p in CHOICES {
            let first = ids.reserve_in(Protection::SPAN - 1, p).unwrap();
            assert!(ids.reserve_in(1, p).is_ok());
            assert!(matches!(ids.reserve_in(1, p), Err(Error::TooManyObjects)));
            assert!(matches!(
                ids.reserve_in(u64::MAX, p),
                Err(Error::TooManyObjects)
            ));
            assert_eq!(Protection::of(first), p);
        }
        assert!(ids.end.iter().all(|&e| e <= 1 << 62));
    }
}
