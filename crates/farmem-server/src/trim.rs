//! Giving freed object memory back to the operating system.
//!
//! Objects over the store's slab sizes are separate allocations of the C allocator. Under
//! churn (writes and frees of objects of mixed sizes, as an erasure-coded pool's compaction
//! makes) the allocator's heap fills with holes: freed chunks between live ones, which it
//! reuses but never returns, so the resident memory of a server stayed 15-20% above the bytes
//! it holds. A server therefore asks the allocator to return the whole pages of its free chunks
//! (glibc's `malloc_trim`) each time the server has written or freed a share of what it
//! holds since the last time (at most once a second), and once more when the churn stops: the
//! cost (a walk of the free chunks under the allocator's lock) stays in proportion to the churn,
//! a server that has gone quiet holds no freed pages, and an idle server is never walked twice.
//!
//! The library decides when; the binary, which owns the process's allocator, says how
//! ([`crate::ServerHandle::release_freed_memory`]).

use std::time::Duration;

use farmem_proto::ServerStats;

/// Churn, as a share of the bytes held, between two trims under way (1/16: at most ~6% of
/// holes).
const SHARE_SHIFT: u32 = 4;
/// Churn below this never triggers a trim while the churn goes on (small servers, tests).
const MIN_CHURN: u64 = 1 << 20;
/// How often the figures are looked at.
pub(crate) const TICK: Duration = Duration::from_millis(250);
/// Ticks between two trims while the churn goes on.
const BUSY_TICKS: u32 = 4;

/// Decides when to trim from successive [`ServerStats`], one per [`TICK`].
#[derive(Debug, Default)]
pub(crate) struct Trimmer {
    /// Figures at the last trim.
    written: u64,
    used: u64,
    /// Figures at the last tick.
    seen: (u64, u64),
    /// Ticks since the last trim.
    ticks: u32,
}

impl Trimmer {
    /// Whether enough was written or freed since the last trim, or the churn since it has
    /// stopped (and records it as done).
    pub(crate) fn due(&mut self, s: &ServerStats) -> bool {
        self.ticks = self.ticks.saturating_add(1);
        let churn =
            s.bytes_written.saturating_sub(self.written) + self.used.saturating_sub(s.used_bytes);
        // Freed bytes count until the next trim; growth only moves the baseline up.
        self.used = self.used.max(s.used_bytes);
        let quiet = self.seen == (s.bytes_written, s.used_bytes);
        self.seen = (s.bytes_written, s.used_bytes);
        let busy_due =
            self.ticks >= BUSY_TICKS && churn >= MIN_CHURN.max(s.used_bytes >> SHARE_SHIFT);
        if !(busy_due || quiet && churn > 0) {
            return false;
        }
        self.written = s.bytes_written;
        self.used = s.used_bytes;
        self.ticks = 0;
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
    fn trims_after_a_share_of_churn_and_when_it_stops() {
        let mut t = Trimmer::default();
        let mib = 1u64 << 20;
        // Filling: 64 MiB written, all still held; the first tick is too early.
        assert!(!t.due(&st(32 * mib, 32 * mib)));
        assert!(!t.due(&st(40 * mib, 40 * mib)));
        assert!(!t.due(&st(50 * mib, 50 * mib)));
        assert!(t.due(&st(64 * mib, 64 * mib)));
        // Idle: never again.
        for _ in 0..8 {
            assert!(!t.due(&st(64 * mib, 64 * mib)));
        }
        // Overwrites going on: 3 MiB is under 1/16 of 64 MiB, 4 MiB is not.
        assert!(!t.due(&st(64 * mib, 65 * mib)));
        assert!(!t.due(&st(64 * mib, 66 * mib)));
        assert!(!t.due(&st(64 * mib, 67 * mib)));
        assert!(t.due(&st(64 * mib, 68 * mib)));
        // Frees without writes count too, across ticks; at most one trim a second under way.
        assert!(!t.due(&st(62 * mib, 68 * mib)));
        assert!(!t.due(&st(59 * mib, 68 * mib)));
        assert!(!t.due(&st(57 * mib, 68 * mib)));
        assert!(t.due(&st(55 * mib, 68 * mib)));
        // A little churn, then quiet: one trim when it stops, then none.
        assert!(!t.due(&st(55 * mib, 68 * mib + 1000)));
        assert!(t.due(&st(55 * mib, 68 * mib + 1000)));
        assert!(!t.due(&st(55 * mib, 68 * mib + 1000)));
        // Small servers: only when the churn stops.
        let mut t = Trimmer::default();
        assert!(!t.due(&st(0, 0)));
        for i in 1..6 {
            assert!(!t.due(&st(1000, i * 1024)));
        }
        assert!(t.due(&st(1000, 5 * 1024)));
        assert!(!t.due(&st(1000, 5 * 1024)));
    }
}
