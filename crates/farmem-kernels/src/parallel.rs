//! Cutting rows into runs for several threads.

#[allow(unused_imports)]
use crate::*;

/// Rows one thread of a parallel kernel gets at least.
pub(crate) const ROWS_PER_THREAD: u64 = 1 << 18;

/// Rows `0..len` cut into at most `threads` runs of at least [`ROWS_PER_THREAD`] rows.
pub(crate) fn split_rows(len: u64, threads: usize) -> Vec<std::ops::Range<u64>> {
    let parts = (threads as u64).min(len / ROWS_PER_THREAD).max(1);
    let each = len.div_ceil(parts);
    (0..parts)
        .map(|p| (p * each).min(len)..((p + 1) * each).min(len))
        .collect()
}

/// `f` of every run on its own thread; the results in run order, or the first run's error.
pub(crate) fn on_threads<T: Send>(
    runs: &[std::ops::Range<u64>],
    f: impl Fn(std::ops::Range<u64>) -> Result<T, KernelError> + Sync,
) -> Result<Vec<T>, KernelError> {
    if let [one] = runs {
        return Ok(vec![f(one.clone())?]);
    }
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = runs.iter().map(|r| s.spawn(move || f(r.clone()))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(KernelError::ThreadPanicked))
            })
            .collect()
    })
}
