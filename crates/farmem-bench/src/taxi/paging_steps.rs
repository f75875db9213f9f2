//! The taxi analysis' paging counters, step by step (the paging mode's child prints them).

use farmem::paging::PagingStats;

use crate::apps::taxi;

/// Prints the paging counters of each analysis step on stderr (pages; times in ms).
pub(super) fn print(steps: &[PagingStats]) {
    if steps.is_empty() {
        return;
    }
    eprintln!(
        "{:<28} {:>6} {:>6} {:>7} {:>6} {:>6} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "paging per step",
        "fetch",
        "zero",
        "prefet",
        "wasted",
        "waits",
        "wait ms",
        "wb pg",
        "wb MB",
        "cleaned",
        "clean",
        "freed",
        "evictms"
    );
    let mut total = PagingStats::default();
    for (i, s) in steps.iter().enumerate() {
        let name = taxi::STEP_NAMES.get(i).copied().unwrap_or("?");
        row(&format!("{}. {name}", i + 1), s);
        total.fetch_faults += s.fetch_faults;
        total.zero_faults += s.zero_faults;
        total.prefetched += s.prefetched;
        total.prefetch_wasted += s.prefetch_wasted;
        total.reclaim_waits += s.reclaim_waits;
        total.reclaim_wait_ns += s.reclaim_wait_ns;
        total.written_back += s.written_back;
        total.bytes_sent += s.bytes_sent;
        total.cleaned += s.cleaned;
        total.evicted_clean += s.evicted_clean;
        total.freed_stored += s.freed_stored;
        total.evict_ns += s.evict_ns;
    }
    row("analysis", &total);
}

/// One line of the table.
fn row(name: &str, s: &PagingStats) {
    let ms = |ns: u64| ns as f64 / 1e6;
    eprintln!(
        "{:<28} {:>6} {:>6} {:>7} {:>6} {:>6} {:>8.1} {:>7} {:>7.1} {:>7} {:>7} {:>7} {:>7.1}",
        name,
        s.fetch_faults,
        s.zero_faults,
        s.prefetched,
        s.prefetch_wasted,
        s.reclaim_waits,
        ms(s.reclaim_wait_ns),
        s.written_back,
        s.bytes_sent as f64 / 1e6,
        s.cleaned,
        s.evicted_clean,
        s.freed_stored,
        ms(s.evict_ns)
    );
}
