//! Sliding window log: the times of the requests admitted in the last `period` are kept;
//! a request is admitted when fewer than `limit` units are in the log. Exact (no boundary
//! effect), at the price of memory: up to `limit` timestamps (8 bytes each) per key, so
//! configuration caps `limit` for this algorithm.

use std::collections::VecDeque;

use super::{Algorithm, Decision, Quota, Rate, Verdict};
use crate::Nanos;

/// Sliding window log parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlidingLog {
    rate: Rate,
}

impl SlidingLog {
    /// At most `rate.count` units in any window of `rate.period`.
    pub fn new(rate: Rate) -> Self {
        SlidingLog { rate }
    }
}

/// Per-key log: admission times, oldest first (one entry per unit of cost).
#[derive(Debug, Default, Clone)]
pub struct LogState {
    times: VecDeque<Nanos>,
}

impl SlidingLog {
    fn expire(&self, s: &mut LogState, now: Nanos) {
        while s
            .times
            .front()
            .is_some_and(|&t| t.saturating_add(self.rate.period) <= now)
        {
            s.times.pop_front();
        }
    }
}

impl Algorithm for SlidingLog {
    type State = LogState;

    fn check(&self, s: &mut LogState, now: Nanos, cost: u64) -> Decision {
        self.expire(s, now);
        let limit = usize::try_from(self.rate.count).unwrap_or(usize::MAX);
        let cost_n = usize::try_from(cost).unwrap_or(usize::MAX);
        let used = s.times.len();
        let reset_after = |s: &LogState| {
            s.times.back().map_or(0, |&t| {
                t.saturating_add(self.rate.period).saturating_sub(now)
            })
        };
        if used.saturating_add(cost_n) > limit {
            let retry_after = if cost_n > limit {
                Nanos::MAX
            } else {
                // Enough entries must expire: the (used + cost - limit)-th oldest.
                let t = s.times[used + cost_n - limit - 1];
                t.saturating_add(self.rate.period).saturating_sub(now)
            };
            return Decision {
                verdict: Verdict::Reject { retry_after },
                remaining: (limit.saturating_sub(used)) as u64,
                reset: reset_after(s),
            };
        }
        // Keep the log sorted even if the clock went back: an entry is never older than
        // the newest one, which only delays its expiry (conservative).
        let at = s.times.back().map_or(now, |&b| b.max(now));
        s.times.extend(std::iter::repeat_n(at, cost_n));
        Decision {
            verdict: Verdict::Allow,
            remaining: (limit - s.times.len()) as u64,
            reset: reset_after(s),
        }
    }

    fn at_rest(&self, s: &LogState, now: Nanos) -> bool {
        s.times
            .back()
            .is_none_or(|&t| t.saturating_add(self.rate.period) <= now)
    }

    fn quota(&self) -> Quota {
        Quota {
            quota: self.rate.count,
            window: self.rate.period,
            sustained: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MILLI, SECOND};

    #[test]
    fn no_boundary_burst_and_exact_retry_after() {
        let l = SlidingLog::new(Rate::new(100, 60 * SECOND));
        let mut s = LogState::default();
        for _ in 0..100 {
            assert!(l.check(&mut s, 59_900 * MILLI, 1).admitted());
        }
        let d = l.check(&mut s, 60 * SECOND, 1);
        assert_eq!(
            d.verdict,
            Verdict::Reject {
                retry_after: 59_900 * MILLI
            }
        );
        assert!(l.check(&mut s, 119_900 * MILLI, 1).admitted());
    }
}
