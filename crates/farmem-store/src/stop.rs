//! When an agent operation must stop before it finishes: a time limit per request, and a client
//! that went away.
//!
//! The agent's kernels read their input one chunk object at a time through the session's
//! [`StoreContext`](crate::StoreContext); each read asks [`Stop::check`] first, so an operation
//! stops within one chunk's work of its limit (chunks are at most the largest object, and
//! typically 64 KiB).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use farmem_kernels::Interrupt;

/// How often, at most, the `gone` probe is asked (it may cost a system call).
const PROBE_EVERY: Duration = Duration::from_millis(5);

/// The conditions under which an agent operation stops early.
///
/// ```
/// use std::time::Duration;
/// use farmem_store::Stop;
/// let stop = Stop::after(Some(Duration::from_secs(60)));
/// assert!(stop.check().is_ok());
/// let gone = || true;
/// assert!(Stop::never().or_when(&gone).check().is_err());
/// ```
pub struct Stop<'a> {
    start: Instant,
    limit: Option<Duration>,
    gone: Option<&'a (dyn Fn() -> bool + Sync)>,
    /// Nanoseconds after `start` before which `gone` is not asked again.
    next_probe: AtomicU64,
}

impl std::fmt::Debug for Stop<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stop")
            .field("limit", &self.limit)
            .field("watched", &self.gone.is_some())
            .finish()
    }
}

impl<'a> Stop<'a> {
    /// No limit: the operation runs to its end.
    pub fn never() -> Self {
        Self::after(None)
    }

    /// Stops the operation once it has run for `limit` (from now); `None`: no limit.
    pub fn after(limit: Option<Duration>) -> Self {
        Self {
            start: Instant::now(),
            limit,
            gone: None,
            next_probe: AtomicU64::new(0),
        }
    }

    /// Also stops it when `gone` answers `true` (asked at most every few milliseconds): the
    /// client that sent the request has disconnected.
    pub fn or_when(mut self, gone: &'a (dyn Fn() -> bool + Sync)) -> Self {
        self.gone = Some(gone);
        self
    }

    /// Whether the operation may go on.
    ///
    /// # Errors
    /// The [`Interrupt`] that stops it.
    pub fn check(&self) -> Result<(), Interrupt> {
        if self.limit.is_none() && self.gone.is_none() {
            return Ok(());
        }
        let ran = self.start.elapsed();
        if let Some(limit) = self.limit
            && ran > limit
        {
            return Err(Interrupt::TimeLimit {
                limit_ms: limit.as_millis() as u64,
            });
        }
        if let Some(gone) = self.gone {
            let now = ran.as_nanos() as u64;
            if now >= self.next_probe.load(Ordering::Relaxed) {
                self.next_probe
                    .store(now + PROBE_EVERY.as_nanos() as u64, Ordering::Relaxed);
                if gone() {
                    return Err(Interrupt::Abandoned);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_time_limit_stops_once_passed() {
        let stop = Stop::after(Some(Duration::from_millis(20)));
        assert_eq!(stop.check(), Ok(()));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(stop.check(), Err(Interrupt::TimeLimit { limit_ms: 20 }));
    }

    #[test]
    fn the_probe_is_asked_at_most_every_few_milliseconds() {
        let asked = AtomicUsize::new(0);
        let gone = || {
            asked.fetch_add(1, Ordering::Relaxed);
            false
        };
        let stop = Stop::never().or_when(&gone);
        for _ in 0..10_000 {
            assert_eq!(stop.check(), Ok(()));
        }
        // 10,000 checks take well under the probe period on any machine we run on, but allow
        // for a slow one: far fewer probes than checks.
        assert!(asked.load(Ordering::Relaxed) < 100);
        std::thread::sleep(PROBE_EVERY * 2);
        let before = asked.load(Ordering::Relaxed);
        assert_eq!(stop.check(), Ok(()));
        assert_eq!(asked.load(Ordering::Relaxed), before + 1);
    }
}
