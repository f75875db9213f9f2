//! Per-session quotas set by the operator: bytes, objects and a request rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use farmem_proto::Op;

use crate::StoreError;

/// What one session may hold and how fast it may ask, set by the server's operator.
///
/// Bytes and objects are checked when they are charged (a put, an agent table), so a session
/// never holds more; the rate is a token bucket checked per request ([`Session::admit`]).
/// `None` is no limit.
///
/// [`Session::admit`]: crate::Session::admit
///
/// ```
/// use farmem_store::SessionQuota;
/// let q = SessionQuota { bytes: Some(1 << 30), requests_per_second: Some(1000), ..Default::default() };
/// assert_eq!(q.burst(), Some(1000)); // one second's worth unless set
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionQuota {
    /// Bytes charged to the session (payload, per-object overhead, agent state).
    pub bytes: Option<u64>,
    /// Objects stored by the session.
    pub objects: Option<u64>,
    /// Requests per second (sustained).
    pub requests_per_second: Option<u64>,
    /// Requests that may come at once above the sustained rate (default: one second's worth).
    pub burst: Option<u64>,
}

impl SessionQuota {
    /// The bucket size of the rate limit: [`SessionQuota::burst`], else one second's worth.
    pub fn burst(&self) -> Option<u64> {
        let rps = self.requests_per_second?;
        Some(self.burst.unwrap_or(rps).max(1))
    }

    /// Whether no quota is set.
    pub fn is_unlimited(&self) -> bool {
        self.bytes.is_none() && self.objects.is_none() && self.requests_per_second.is_none()
    }
}

/// Whether a request counts against the request rate: pings (heartbeats), frees, stats and
/// session ends never do (refusing them would only keep memory held or a live client looking
/// dead).
pub fn is_rate_limited(op: Op) -> bool {
    matches!(
        op,
        Op::Put | Op::Get | Op::GetMany | Op::PutMany | Op::Patch | Op::Compute
    )
}

/// A lock-free token bucket (the generic cell rate algorithm): one compare-and-swap per request.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    base: Instant,
    /// Nanoseconds between two requests at the sustained rate.
    interval: u64,
    /// How far ahead of now the theoretical arrival time may run: `burst * interval`.
    tolerance: u64,
    /// Theoretical arrival time of the next request, in nanoseconds since `base`.
    tat: AtomicU64,
    per_second: u64,
}

impl RateLimiter {
    pub(crate) fn new(per_second: u64, burst: u64) -> Self {
        let per_second = per_second.max(1);
        let interval = (1_000_000_000 / per_second).max(1);
        Self {
            base: Instant::now(),
            interval,
            tolerance: interval.saturating_mul(burst.max(1)),
            tat: AtomicU64::new(0),
            per_second,
        }
    }

    /// Takes a token at `now`, or tells how long until one is free.
    pub(crate) fn acquire(&self, now: Instant) -> Result<(), StoreError> {
        let now =
            u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now).saturating_add(self.interval);
            let ahead = next - now;
            if ahead > self.tolerance {
                let wait = Duration::from_nanos(ahead - self.tolerance);
                return Err(StoreError::RateLimited {
                    limit: self.per_second,
                    retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
                });
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(t) => tat = t,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let r = RateLimiter::new(10, 3);
        let t0 = r.base;
        for _ in 0..3 {
            r.acquire(t0).unwrap();
        }
        match r.acquire(t0) {
            Err(StoreError::RateLimited {
                limit: 10,
                retry_after_ms,
            }) => assert_eq!(retry_after_ms, 100),
            other => panic!("{other:?}"),
        }
        // One token comes back every 100 ms.
        r.acquire(t0 + Duration::from_millis(100)).unwrap();
        assert!(r.acquire(t0 + Duration::from_millis(150)).is_err());
        // A long pause refills the bucket to its size, no more.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            r.acquire(later).unwrap();
        }
        assert!(r.acquire(later).is_err());
    }

    #[test]
    fn burst_defaults_to_one_second() {
        let q = SessionQuota {
            requests_per_second: Some(50),
            ..Default::default()
        };
        assert_eq!(q.burst(), Some(50));
        assert_eq!(SessionQuota::default().burst(), None);
        assert!(SessionQuota::default().is_unlimited());
        assert!(is_rate_limited(Op::Get) && !is_rate_limited(Op::Ping));
    }
}
