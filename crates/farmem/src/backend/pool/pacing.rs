//! Pacing of repair and drains: how many copy batches may run at once, by the application's
//! request latency, and the bandwidth cap.
//!
//! # The controller
//!
//! The pool times every application call on a member (`Member::app_call`). While no mover
//! runs, the mean latency of those calls is the *baseline* (a smoothed mean over the
//! maintenance thread's looks, each half a second or so). While a mover runs, every
//! [`TICK`] the mean latency of the calls that ended in it, smoothed over ticks, is compared
//! with [`TARGET`] times the baseline, AIMD style (as TCP's congestion window, or Carbink's
//! background work):
//!
//! - under the target, the *window* (batches that may run at once) grows by [`STEP`];
//! - over it, or when a call has been waiting the whole tick, the window shrinks by
//!   [`BACKOFF`] (at most once every few ticks: a decrease takes a tick to show);
//! - with no application call in flight or ended during a tick, the application is idle: the
//!   window is the most the mover has, and batches are larger ([`Pacer::batch_bytes`]).
//!
//! A window under 1 is a duty cycle: one batch at a time, and after a batch of `d` seconds the
//! next waits `d * (1 - w) / w`. A window of `w >= 1` lets `floor(w)` batches run together.
//! Every mover takes its turns from the same controller: the batched mover's batches, the
//! single-object path's copies and each page of a server-side table copy.
//!
//! # Caps
//!
//! [`super::PoolConfig::repair_share`] caps the window while the application works, as a share
//! of the mover's full pace ([`MOVERS`] batches back to back); [`super::PoolConfig::repair_rate`]
//! caps the bytes per second on top (a token bucket), idle or not.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::member::Member;

/// Batches a repair pass or drain round keeps in flight at most.
pub(super) const MOVERS: usize = 4;

/// How often the controller looks at the application's latency while a mover runs.
pub(super) const TICK: Duration = Duration::from_millis(10);

/// Foreground latency the controller aims under by default, as a multiple of the baseline
/// ([`super::PoolConfig::repair_target`]): an application whose calls take 1.5x as long keeps
/// about 0.7x of its throughput (at 2x, the web frontend kept 0.5-0.6x while a drain ran).
pub(crate) const TARGET: f64 = 1.5;

/// The lowest latency target the controller accepts (a multiple of the baseline).
const MIN_TARGET: f64 = 1.05;

/// Additive increase of the window per tick under the target.
pub(super) const STEP: f64 = 0.25;

/// Multiplicative decrease of the window per tick over the target.
pub(super) const BACKOFF: f64 = 0.7;

/// Weight of a tick's latency in the smoothed one.
const SMOOTHING: f64 = 0.3;

/// Ticks after a decrease before the next one.
const HOLD: u32 = 3;

/// Smallest window: one batch a tenth of the time.
const FLOOR: f64 = 0.1;

/// The window a mover starts with while the application works.
const START: f64 = 1.0;

/// Application calls a tick wants before it judges their latency (fewer: the tick is
/// stretched, up to [`LONG_TICK`]).
const MIN_CALLS: u64 = 8;

/// The longest a tick is stretched for want of calls.
const LONG_TICK: Duration = Duration::from_millis(50);

/// Bytes a batch aims at while the application works: large enough to amortize a round trip,
/// small enough that an application request queued behind it on a shared connection waits
/// about a millisecond, and below the transport's buffer-shrinking thresholds (no
/// reallocation per batch).
pub(super) const BATCH_BYTES: usize = 960 << 10;

/// Bytes a batch aims at while the application is idle (still below the transport's 4 MiB
/// buffer-shrinking threshold).
const IDLE_BATCH_BYTES: usize = 3 << 20;

/// Weight of a new quiet interval in the baseline.
const BASELINE_WEIGHT: f64 = 0.3;

/// The additive-increase, multiplicative-decrease rule on the window (pure, so it can be
/// tested on a model).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Aimd {
    /// Batches that may run at once (under 1: a duty cycle).
    pub(super) window: f64,
    /// The most the window may reach while the application works.
    pub(super) cap: f64,
    /// The application's latency aimed under, as a multiple of the baseline.
    target: f64,
    /// The application's latency, smoothed over ticks (single ticks of a few dozen calls vary
    /// 2-5x on a loaded machine).
    smooth: Option<f64>,
    /// Ticks to wait after a decrease before the next one (its effect takes a tick to show).
    hold: u32,
}

impl Aimd {
    /// A controller whose window may reach `cap` (at least [`FLOOR`]), aiming under `target`
    /// times the baseline latency (at least [`MIN_TARGET`]).
    pub(super) fn new(cap: f64, target: f64) -> Self {
        let cap = cap.max(FLOOR);
        Self {
            window: START.min(cap),
            cap,
            target: if target.is_finite() {
                target.max(MIN_TARGET)
            } else {
                TARGET
            },
            smooth: None,
            hold: 0,
        }
    }

    /// One tick: the application's mean latency `latency` against `baseline`; returns the new
    /// window.
    pub(super) fn update(&mut self, latency: f64, baseline: f64) -> f64 {
        let smooth = self
            .smooth
            .map_or(latency, |s| s * (1.0 - SMOOTHING) + latency * SMOOTHING);
        self.smooth = Some(smooth);
        if smooth <= baseline * self.target {
            self.window = (self.window + STEP).min(self.cap);
        } else if self.hold == 0 {
            self.window = (self.window * BACKOFF).max(FLOOR);
            self.hold = HOLD;
        }
        self.hold = self.hold.saturating_sub(1);
        self.window
    }
}

/// A token bucket: `take(n)` sleeps so that at most `rate` bytes per second pass on average.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

/// What the controller knows between ticks.
#[derive(Debug)]
struct Ctl {
    aimd: Aimd,
    /// Mean latency of an application call with no mover running, in seconds.
    baseline: Option<f64>,
    /// Application calls ended and their nanoseconds, over every member, at the last look.
    seen: (u64, u64),
    /// When the last look was.
    last: Instant,
    /// Whether a mover ran since the last look (the interval is no baseline then).
    moved: bool,
    /// Whether the application was idle at the last tick.
    idle: bool,
}

/// The pacing shared by every mover of a pool (see the module docs).
#[derive(Debug)]
pub(crate) struct Pacer {
    bucket: Option<Mutex<Bucket>>,
    ctl: Mutex<Ctl>,
    /// The window in thousandths, for turns that do not take the lock.
    window_milli: AtomicUsize,
    /// Whether the application was idle at the last tick.
    idle: std::sync::atomic::AtomicBool,
    /// Batches running.
    turns: AtomicUsize,
    /// Movers running (passes, drain rounds, sheds).
    active: AtomicUsize,
    /// While the window is under 1, no batch starts before this.
    rest_until: Mutex<Option<Instant>>,
}

/// A batch's turn from [`Pacer::pace`]; the turn ends when it drops.
pub(super) struct Turn<'a> {
    p: &'a Pacer,
    start: Instant,
    /// The window when the turn began, if under 1 (a duty cycle).
    duty: Option<f64>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.duty {
            // Rest so that batches take about `w` of the time.
            let rest = self.start.elapsed().mul_f64((1.0 - w) / w);
            let until = Instant::now() + rest;
            let mut u = self.p.rest_until.lock();
            *u = Some(u.map_or(until, |t| t.max(until)));
        }
        self.p.turns.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A mover running, from [`Pacer::moving`]: the application's latency meanwhile is no
/// baseline.
pub(super) struct Moving<'a>(&'a Pacer);

impl Drop for Moving<'_> {
    fn drop(&mut self) {
        self.0.ctl.lock().moved = true;
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The application's calls ended and their nanoseconds, over `members`.
fn totals(members: &[Arc<Member>]) -> (u64, u64) {
    members.iter().fold((0, 0), |(c, n), m| {
        let (mc, mn) = m.app_totals();
        (c + mc, n + mn)
    })
}

/// The window's cap for a share of the mover's full pace.
fn share_cap(share: f64) -> f64 {
    share.clamp(0.01, 1.0) * MOVERS as f64
}

fn app_inflight(members: &[Arc<Member>]) -> bool {
    members
        .iter()
        .any(|m| m.inflight.load(Ordering::Relaxed) > 0)
}

impl Pacer {
    /// Pacing with an optional cap of `rate` bytes per second, the window capped at `share`
    /// of [`MOVERS`] while the application works and the application's latency aimed under
    /// `target` times its baseline.
    pub(crate) fn new(rate: Option<u64>, share: f64, target: f64) -> Self {
        let aimd = Aimd::new(share_cap(share), target);
        Self {
            bucket: rate.map(|r| {
                let rate = r.max(1) as f64;
                // A tenth of a second of burst, at least one large object.
                let burst = (rate / 10.0).max(1_048_576.0);
                Mutex::new(Bucket {
                    rate,
                    burst,
                    tokens: burst,
                    last: Instant::now(),
                })
            }),
            window_milli: AtomicUsize::new((aimd.window * 1000.0) as usize),
            ctl: Mutex::new(Ctl {
                aimd,
                baseline: None,
                seen: (0, 0),
                last: Instant::now(),
                moved: false,
                idle: false,
            }),
            idle: std::sync::atomic::AtomicBool::new(false),
            turns: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            rest_until: Mutex::new(None),
        }
    }

    /// Sets the window's cap to `share` of [`MOVERS`] and the latency target to `target` times
    /// the baseline; the window starts afresh.
    pub(crate) fn set_pacing(&self, share: f64, target: f64) {
        let mut c = self.ctl.lock();
        c.aimd = Aimd::new(share_cap(share), target);
        self.publish(&c);
    }

    /// Waits until `bytes` may be copied under the bandwidth cap.
    pub(super) fn take(&self, bytes: usize) {
        let Some(b) = &self.bucket else { return };
        let wait = {
            let mut b = b.lock();
            let now = Instant::now();
            let refill = now.duration_since(b.last).as_secs_f64() * b.rate;
            b.tokens = (b.tokens + refill).min(b.burst);
            b.last = now;
            b.tokens -= bytes as f64;
            if b.tokens < 0.0 {
                Duration::from_secs_f64(-b.tokens / b.rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }

    /// Marks a mover running until the guard drops; the first one closes the quiet interval
    /// (the baseline) and starts the window afresh.
    pub(super) fn moving(&self, members: &[Arc<Member>]) -> Moving<'_> {
        if self.active.fetch_add(1, Ordering::AcqRel) == 0 {
            let mut c = self.ctl.lock();
            let quiet = !c.moved;
            Self::look(&mut c, members, quiet);
            c.aimd = Aimd::new(c.aimd.cap, c.aimd.target);
            tracing::debug!(baseline_us = c.baseline.map(|b| b * 1e6), "a mover starts");
            c.idle = false;
            self.publish(&c);
        }
        Moving(self)
    }

    /// The maintenance thread's look at the application's latency: an interval with no mover
    /// running feeds the baseline.
    pub(super) fn observe(&self, members: &[Arc<Member>]) {
        let mut c = self.ctl.lock();
        if self.active.load(Ordering::Acquire) == 0 {
            let quiet = !c.moved;
            Self::look(&mut c, members, quiet);
        }
    }

    /// Closes the interval since the last look; it feeds the baseline if it was `quiet` (no
    /// mover ran in it).
    fn look(c: &mut Ctl, members: &[Arc<Member>], quiet: bool) {
        let now = totals(members);
        let (calls, nanos) = (
            now.0.saturating_sub(c.seen.0),
            now.1.saturating_sub(c.seen.1),
        );
        c.seen = now;
        c.last = Instant::now();
        c.moved = false;
        if quiet && calls >= MIN_CALLS {
            let mean = nanos as f64 / calls as f64 / 1e9;
            c.baseline = Some(match c.baseline {
                // A failure's stalls (before it is noticed) move it at most 2x per look.
                Some(b) => b * (1.0 - BASELINE_WEIGHT) + mean.min(2.0 * b) * BASELINE_WEIGHT,
                None => mean,
            });
        }
    }

    /// One tick of the controller, if one is due (see the module docs).
    fn tick(&self, members: &[Arc<Member>]) {
        let Some(mut c) = self.ctl.try_lock() else {
            return;
        };
        let elapsed = c.last.elapsed();
        if elapsed < TICK {
            return;
        }
        let now = totals(members);
        let (calls, nanos) = (
            now.0.saturating_sub(c.seen.0),
            now.1.saturating_sub(c.seen.1),
        );
        let inflight = app_inflight(members);
        if calls < MIN_CALLS && inflight && elapsed < LONG_TICK {
            // Too few calls to judge: a longer tick.
            return;
        }
        c.seen = now;
        c.last = Instant::now();
        c.moved = true;
        c.idle = calls == 0 && !inflight;
        if !c.idle {
            match c.baseline {
                Some(b) => {
                    // A call that waited the whole tick counts as one that long.
                    let mean = if calls == 0 {
                        elapsed.as_secs_f64()
                    } else {
                        nanos as f64 / calls as f64 / 1e9
                    };
                    c.aimd.update(mean, b);
                    tracing::debug!(
                        calls,
                        latency_us = mean * 1e6,
                        baseline_us = b * 1e6,
                        window = c.aimd.window,
                        "repair pacing"
                    );
                }
                // Nothing to compare with: the cautious start.
                None => c.aimd.window = START.min(c.aimd.cap) * BACKOFF,
            }
        }
        self.publish(&c);
    }

    fn publish(&self, c: &Ctl) {
        self.window_milli
            .store((c.aimd.window * 1000.0) as usize, Ordering::Relaxed);
        self.idle.store(c.idle, Ordering::Relaxed);
    }

    /// The window now: `None` while the application is idle (every turn may run).
    fn window(&self) -> Option<f64> {
        (!self.idle.load(Ordering::Relaxed))
            .then(|| self.window_milli.load(Ordering::Relaxed) as f64 / 1000.0)
    }

    /// Whether the application was idle at the last tick (no call in flight or ended).
    pub(super) fn app_idle(&self) -> bool {
        self.idle.load(Ordering::Relaxed)
    }

    /// Bytes a batch should aim at now: more while the application is idle.
    pub(super) fn batch_bytes(&self) -> usize {
        if self.app_idle() {
            IDLE_BATCH_BYTES
        } else {
            BATCH_BYTES
        }
    }

    /// Waits for a turn to run a batch (one of at most `workers`): as many turns as the
    /// window allows, after the rest of a duty cycle (see the module docs). `stopping` ends
    /// the wait at once (the pool shuts down). The turn ends when the returned guard drops.
    pub(super) fn pace(
        &self,
        members: &[Arc<Member>],
        workers: usize,
        stopping: impl Fn() -> bool,
    ) -> Turn<'_> {
        loop {
            self.tick(members);
            let window = self.window();
            let stop = stopping();
            let duty = window.filter(|&w| w < 1.0 && !stop);
            if duty.is_some() {
                let until = *self.rest_until.lock();
                let now = Instant::now();
                if let Some(t) = until
                    && t > now
                {
                    std::thread::sleep((t - now).min(Duration::from_millis(2)));
                    continue;
                }
            }
            let limit = window.map_or(workers, |w| (w.floor() as usize).clamp(1, workers));
            if self.turns.fetch_add(1, Ordering::AcqRel) < limit || stop {
                return Turn {
                    p: self,
                    start: Instant::now(),
                    duty,
                };
            }
            self.turns.fetch_sub(1, Ordering::AcqRel);
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model of the machine: the application's latency grows with the batches running
    /// (`per_batch` of the baseline each).
    fn latency(window: f64, per_batch: f64) -> f64 {
        1.0 + per_batch * window
    }

    #[test]
    fn the_window_grows_while_latency_stays_under_the_target() {
        let mut a = Aimd::new(4.0, TARGET);
        let mut last = a.window;
        for _ in 0..5 {
            let w = a.update(1.1, 1.0);
            assert!(w > last, "{w} after {last}");
            last = w;
        }
    }

    #[test]
    fn the_window_shrinks_when_latency_is_over_the_target() {
        let mut a = Aimd::new(4.0, TARGET);
        a.window = 3.0;
        let w = a.update(TARGET + 0.5, 1.0);
        assert!((w - 3.0 * BACKOFF).abs() < 1e-9, "{w}");
        // The next ticks wait for the decrease to show.
        assert_eq!(a.update(TARGET + 0.5, 1.0), w);
        for _ in 0..200 {
            a.update(10.0, 1.0);
        }
        assert_eq!(a.window, FLOOR);
    }

    #[test]
    fn the_window_never_passes_its_cap() {
        let mut a = Aimd::new(0.5 * MOVERS as f64, TARGET);
        for _ in 0..100 {
            a.update(0.5, 1.0);
            assert!(a.window <= 2.0);
        }
        assert_eq!(a.window, 2.0);
        let mut small = Aimd::new(0.3, TARGET);
        assert!(small.window <= 0.3);
        for _ in 0..100 {
            small.update(0.5, 1.0);
        }
        assert_eq!(small.window, 0.3);
    }

    #[test]
    fn on_a_model_the_window_settles_around_the_target() {
        // Each batch costs the application 20% latency: the target is `goal` batches.
        let per_batch = 0.2;
        let goal = (TARGET - 1.0) / per_batch;
        let mut a = Aimd::new(MOVERS as f64, TARGET);
        let mut seen = Vec::new();
        for _ in 0..400 {
            let w = a.window;
            a.update(latency(w, per_batch), 1.0);
            seen.push(a.window);
        }
        let tail = &seen[200..];
        let mean = tail.iter().sum::<f64>() / tail.len() as f64;
        assert!(
            (goal * 0.5..=goal * 1.2).contains(&mean),
            "mean window {mean} on a model whose target is {goal} batches"
        );
        assert!(tail.iter().all(|&w| w <= goal + 1.0), "{tail:?}");
        // A cheaper copy lets it reach the cap.
        let mut b = Aimd::new(MOVERS as f64, TARGET);
        for _ in 0..200 {
            let w = b.window;
            b.update(latency(w, 0.1), 1.0);
        }
        assert_eq!(b.window, MOVERS as f64);
    }

    #[test]
    fn a_higher_latency_target_settles_at_a_wider_window() {
        // Each batch costs the application 25% latency: 1.5x allows 2 batches, 1.25x one.
        let settle = |target: f64| {
            let mut a = Aimd::new(MOVERS as f64, target);
            let mut sum = 0.0;
            for i in 0..400 {
                let w = a.window;
                a.update(latency(w, 0.25), 1.0);
                if i >= 200 {
                    sum += a.window;
                }
            }
            sum / 200.0
        };
        let (low, high) = (settle(1.25), settle(1.5));
        assert!(low < high, "{low} at 1.25x, {high} at 1.5x");
        assert!(low <= 1.5 && high <= 2.5, "{low} at 1.25x, {high} at 1.5x");
        // Targets under the floor are raised to it.
        assert_eq!(Aimd::new(4.0, 0.5).target, MIN_TARGET);
    }

    #[test]
    fn set_pacing_replaces_the_cap_and_the_target() {
        let p = Pacer::new(None, 1.0, TARGET);
        p.set_pacing(0.25, 3.0);
        let c = p.ctl.lock();
        assert_eq!(c.aimd.cap, 1.0);
        assert_eq!(c.aimd.target, 3.0);
        assert_eq!(p.window_milli.load(Ordering::Relaxed), 1000);
    }

    #[test]
    fn turns_follow_the_window() {
        let p = Pacer::new(None, 1.0, TARGET);
        let members: Vec<Arc<Member>> = Vec::new();
        // Idle application (no member, no call): every worker gets a turn.
        {
            let mut c = p.ctl.lock();
            c.idle = true;
            p.publish(&c);
        }
        let turns: Vec<_> = (0..4).map(|_| p.pace(&members, 4, || false)).collect();
        assert_eq!(p.turns.load(Ordering::Relaxed), 4);
        assert_eq!(p.batch_bytes(), IDLE_BATCH_BYTES);
        drop(turns);
        // A busy application at window 2: two turns, a third waits (stopping lets it through).
        {
            let mut c = p.ctl.lock();
            c.idle = false;
            c.aimd.window = 2.0;
            c.last = Instant::now() + Duration::from_secs(3600);
            p.publish(&c);
        }
        let a = p.pace(&members, 4, || false);
        let b = p.pace(&members, 4, || false);
        assert_eq!(p.turns.load(Ordering::Relaxed), 2);
        let c = p.pace(&members, 4, || true);
        assert_eq!(p.turns.load(Ordering::Relaxed), 3);
        assert_eq!(p.batch_bytes(), BATCH_BYTES);
        drop((a, b, c));
        assert_eq!(p.turns.load(Ordering::Relaxed), 0);
    }
}
