//! Capacity changes of a running server: operator shrinks and grows, the host reserve, and the
//! reclaim notice that asks clients to move the excess away.
//!
//! The capacity is `min(operator cap, host cap)`. Lowering it below what is used starts a
//! *reclaim*: stats answers ask every session to move `min(its use, excess)` bytes to other
//! servers until the deadline. Nothing is ever dropped: when the deadline passes with the excess
//! still held, the capacity becomes what is used ([`farmem_store::Budget::settle`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use farmem_proto::AdminStatus;
use farmem_store::Budget;
use parking_lot::Mutex;

/// Why an operator shrink did not reach its capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShrinkOutcome {
    /// Bytes still held above the capacity asked for at the deadline; the capacity is now what
    /// is used.
    Incomplete {
        /// Bytes above `asked`.
        held: u64,
        /// The capacity now.
        capacity: u64,
        /// The capacity asked for.
        asked: u64,
    },
    /// The server began shutting down.
    ShuttingDown,
}

#[derive(Debug)]
struct State {
    operator: u64,
    host: u64,
    /// When the reclaim under way gives up.
    deadline: Option<Instant>,
}

/// The capacity controls of one server.
#[derive(Debug)]
pub(crate) struct Capacity {
    budget: Arc<Budget>,
    state: Mutex<State>,
}

/// How often a waiting shrink looks at the use.
const POLL: Duration = Duration::from_millis(10);

impl Capacity {
    pub(crate) fn new(budget: Arc<Budget>) -> Self {
        let max = budget.max_capacity();
        Self {
            budget,
            state: Mutex::new(State {
                operator: max,
                host: max,
                deadline: None,
            }),
        }
    }

    /// Applies `min(operator, host)`; a shrink below use (re)starts the reclaim clock.
    fn apply(&self, st: &mut State, within: Duration) -> u64 {
        let before = self.budget.capacity();
        let cap = self.budget.set_capacity(st.operator.min(st.host));
        if self.budget.excess() == 0 {
            st.deadline = None;
        } else if cap < before || st.deadline.is_none() {
            st.deadline = Some(Instant::now() + within);
        }
        cap
    }

    /// The figures an admin answer carries.
    pub(crate) fn status(&self) -> AdminStatus {
        let st = self.state.lock();
        AdminStatus {
            used_bytes: self.budget.used(),
            capacity_bytes: self.budget.capacity(),
            max_capacity_bytes: self.budget.max_capacity(),
            excess_bytes: self.budget.excess(),
            reclaim_deadline_ms: left_ms(st.deadline),
        }
    }

    /// What a session using `session_used` bytes is asked to move away, and the milliseconds
    /// left to do it (both 0 outside a reclaim).
    pub(crate) fn reclaim_for(&self, session_used: u64) -> (u64, u64) {
        let excess = self.budget.excess();
        if excess == 0 {
            return (0, 0);
        }
        let left = left_ms(self.state.lock().deadline);
        if left == 0 {
            return (0, 0);
        }
        (excess.min(session_used), left)
    }

    /// Gives up a reclaim whose deadline passed: the capacity becomes what is used.
    pub(crate) fn tick(&self, now: Instant) {
        let mut st = self.state.lock();
        if st.deadline.is_some_and(|d| now >= d) {
            self.settle(&mut st);
        }
    }

    fn settle(&self, st: &mut State) -> u64 {
        let cap = self.budget.settle();
        st.operator = st.operator.max(cap);
        st.host = st.host.max(cap);
        st.deadline = None;
        cap
    }

    /// Raises the operator cap by `bytes` (at most to the configured capacity); returns the
    /// capacity.
    pub(crate) fn grow(&self, bytes: u64) -> u64 {
        let mut st = self.state.lock();
        st.operator = st.operator.saturating_add(bytes);
        self.apply(&mut st, Duration::ZERO)
    }

    /// Sets the operator cap to `bytes` and, when that is below use, waits until clients have
    /// moved the excess away or `within` has passed.
    ///
    /// # Errors
    /// [`ShrinkOutcome`] when the capacity could not be reached by the deadline.
    pub(crate) fn set(
        &self,
        bytes: u64,
        within: Duration,
        stopping: &dyn Fn() -> bool,
    ) -> Result<u64, ShrinkOutcome> {
        let asked = {
            let mut st = self.state.lock();
            st.operator = bytes;
            self.apply(&mut st, within)
        };
        let deadline = Instant::now() + within;
        if self.budget.excess() > 0 {
            tracing::info!(
                capacity = asked,
                used = self.budget.used(),
                ?within,
                "shrinking: clients are asked to move the excess away"
            );
        }
        loop {
            if self.budget.used() <= asked {
                return Ok(self.budget.capacity());
            }
            if stopping() {
                return Err(ShrinkOutcome::ShuttingDown);
            }
            if Instant::now() >= deadline {
                let mut st = self.state.lock();
                let used = self.budget.used();
                if used <= asked {
                    return Ok(self.budget.capacity());
                }
                let capacity = self.settle(&mut st);
                tracing::warn!(
                    asked,
                    held = used - asked,
                    capacity,
                    "shrink incomplete at its deadline: the capacity stays at what is used"
                );
                return Err(ShrinkOutcome::Incomplete {
                    held: used - asked,
                    capacity,
                    asked,
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Lowers the operator cap by `bytes`, as [`Capacity::set`].
    ///
    /// # Errors
    /// As [`Capacity::set`].
    pub(crate) fn shrink(
        &self,
        bytes: u64,
        within: Duration,
        stopping: &dyn Fn() -> bool,
    ) -> Result<u64, ShrinkOutcome> {
        let target = self.budget.capacity().saturating_sub(bytes);
        self.set(target, within, stopping)
    }

    /// Sets the host cap (from the host reserve); a shrink gets `within` to complete.
    pub(crate) fn set_host(&self, bytes: u64, within: Duration) -> u64 {
        let mut st = self.state.lock();
        st.host = bytes;
        self.apply(&mut st, within)
    }

    /// The host cap now.
    pub(crate) fn host(&self) -> u64 {
        self.state.lock().host
    }
}

fn left_ms(deadline: Option<Instant>) -> u64 {
    deadline.map_or(0, |d| {
        let left = d.saturating_duration_since(Instant::now());
        (left.as_millis() as u64).max(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrink_waits_for_use_then_gives_up_without_dropping() {
        let budget = Arc::new(Budget::new(1000));
        let cap = Arc::new(Capacity::new(budget.clone()));
        budget.exchange(800, 0).unwrap();
        // Clients free 300 bytes meanwhile: the shrink to 500 completes.
        let b = budget.clone();
        let freer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            b.release(300);
        });
        assert_eq!(cap.shrink(500, Duration::from_secs(5), &|| false), Ok(500));
        freer.join().unwrap();
        assert_eq!(cap.reclaim_for(100), (0, 0));
        // Nobody moves anything: at the deadline the capacity is what is used.
        let r = cap.set(100, Duration::from_millis(30), &|| false);
        assert_eq!(
            r,
            Err(ShrinkOutcome::Incomplete {
                held: 400,
                capacity: 500,
                asked: 100
            })
        );
        assert_eq!((budget.capacity(), budget.used()), (500, 500));
        assert_eq!(cap.grow(10_000), 1000);
    }

    #[test]
    fn reclaim_notice_and_host_cap() {
        let budget = Arc::new(Budget::new(1000));
        let cap = Capacity::new(budget.clone());
        budget.exchange(600, 0).unwrap();
        assert_eq!(cap.set_host(400, Duration::from_secs(60)), 400);
        let (ask, ms) = cap.reclaim_for(150);
        assert_eq!(ask, 150);
        assert!(ms > 0 && ms <= 60_000);
        assert_eq!(cap.reclaim_for(10_000).0, 200);
        assert_eq!(cap.status().excess_bytes, 200);
        // The deadline passes: settled at what is used, no more asking.
        cap.tick(Instant::now() + Duration::from_secs(61));
        assert_eq!(cap.reclaim_for(150), (0, 0));
        assert_eq!((budget.capacity(), cap.host()), (600, 600));
        // The host recovers.
        assert_eq!(cap.set_host(1000, Duration::from_secs(1)), 1000);
    }
}
