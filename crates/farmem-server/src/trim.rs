//! Giving freed object memory back to the operating system.
//!
//! Objects over the store's slab sizes are separate allocations of the C allocator. Under
//! churn (writes and frees of objects of mixed sizes, as an erasure-coded pool's compaction
//! makes) the allocator's heap fills with holes: freed chunks between live ones, which it
//! reuses but never returns, so the resident memory of a server stayed 15-20% above the bytes
//! it holds. A server therefore asks the allocator to return the whole pages of its free chunks
//! (glibc's `malloc_trim`) each time the server has written or freed a share of what it
//! holds since the last time: the cost (a walk of the free chunks under the allocator's lock)
//! stays in proportion to the churn, and an idle server is never walked twice.
//!
//! The library decides when; the binary, which owns the process's allocator, says how
//! ([`crate::ServerHandle::release_freed_memory`]).

use farmem_proto::ServerStats;

/// Churn, as a share of the bytes held, between two trims (1/16: at most ~6% of holes).
const SHARE_SHIFT: u32 = 4;
/// Churn below this never triggers a trim (small servers, tests).
const MIN_CHURN: u64 = 1 << 20;

/// Decides when to trim from successive [`ServerStats`].
#[derive(Debug, Default)]
pub(crate) struct Trimmer {
    written: u64,
    used: u64,
}

impl Trimmer {
    /// Whether enough was written or freed since the last trim (and records it as done).
    pub(crate) fn due(&mut self, s: &ServerStats) -> bool {
        let churn =
            s.bytes_written.saturating_sub(self.written) + self.used.saturating_sub(s.used_bytes);
        // Freed bytes count until the next trim; growth only moves the baseline up.
        self.used = self.used.max(s.used_bytes);
        if churn < MIN_CHURN.max(s.used_bytes >> SHARE_SHIFT) {
            return false;
        }
        self.written = s.bytes_written;
        self.used = s.used_bytes;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(used: u64, written: u64) -> ServerStats {
        ServerStats {
            used_bytes: used,
            bytes_written: written,
            ..ServerStats::default()
        }
    }

    #[test]
    fn trims_after_a_share_of_churn_only() {
        let mut t = Trimmer::default();
        let mib = 1u64 << 20;
        // Filling: 64 MiB written, all still held.
        assert!(t.due(&st(64 * mib, 64 * mib)));
        // Idle: never again.
        assert!(!t.due(&st(64 * mib, 64 * mib)));
        // Overwrites: 3 MiB is under 1/16 of 64 MiB, 4 MiB is not.
        assert!(!t.due(&st(64 * mib, 67 * mib)));
        assert!(t.due(&st(64 * mib, 68 * mib)));
        // Frees without writes count too, across ticks.
        assert!(!t.due(&st(62 * mib, 68 * mib)));
        assert!(t.due(&st(59 * mib, 68 * mib)));
        // Small servers wait for 1 MiB.
        let mut t = Trimmer::default();
        assert!(!t.due(&st(1000, 900 * 1024)));
        assert!(t.due(&st(0, 1 << 20)));
        assert!(!t.due(&st(0, 1 << 20)));
    }
}
