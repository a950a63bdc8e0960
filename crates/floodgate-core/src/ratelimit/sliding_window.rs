//! Sliding window counter: counts per fixed window, and the count of the previous window
//! weighted by how much of it still overlaps the sliding window ending now:
//! `estimate = previous × (period − elapsed) / period + current`. A request of `cost` is
//! admitted when `estimate + cost ≤ limit`, compared exactly (no rounding). Two counters
//! per key; the estimate assumes the previous window's requests were spread evenly, so
//! under adversarial timing it can admit up to about 2 × limit in one sliding window.

use super::{Algorithm, Decision, Quota, Rate, Verdict};
use crate::Nanos;

/// Sliding window counter parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlidingWindow {
    rate: Rate,
}

impl SlidingWindow {
    /// About `rate.count` units per sliding window of `rate.period`.
    pub fn new(rate: Rate) -> Self {
        SlidingWindow { rate }
    }
}

/// Per-key counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct CounterState {
    index: u64,
    current: u64,
    previous: u64,
}

impl SlidingWindow {
    fn roll(&self, s: &mut CounterState, now: Nanos) -> Nanos {
        let w = self.rate.period;
        let index = now / w;
        if index == s.index.saturating_add(1) {
            s.previous = s.current;
            s.current = 0;
            s.index = index;
        } else if index > s.index {
            s.previous = 0;
            s.current = 0;
            s.index = index;
        }
        // Time into the window; 0 if the clock went back (the previous window then weighs
        // fully: conservative).
        now.saturating_sub(s.index.saturating_mul(w)).min(w - 1)
    }

    /// Whether `previous × (w − e) + (current + cost) × w ≤ limit × w`.
    fn fits(&self, previous: u64, current: u64, elapsed: Nanos, cost: u64) -> bool {
        let w = u128::from(self.rate.period);
        let lhs = u128::from(previous) * (w - u128::from(elapsed))
            + u128::from(current.saturating_add(cost)) * w;
        lhs <= u128::from(self.rate.count) * w
    }

    /// The earliest time into the current window (`>= elapsed`) at which `cost` more fits
    /// with these counters, if any.
    fn fits_from(&self, previous: u64, current: u64, cost: u64) -> Option<Nanos> {
        let limit = self.rate.count;
        let room = limit.checked_sub(current.checked_add(cost)?)?;
        if previous == 0 {
            return Some(0);
        }
        // previous × (w − e) ≤ room × w  ⇔  e ≥ w − room × w / previous
        let w = u128::from(self.rate.period);
        let allowed = (u128::from(room) * w) / u128::from(previous);
        // The smallest whole e with w − e ≤ ⌊room × w / previous⌋.
        let e = w.saturating_sub(allowed);
        (e < w).then(|| Nanos::try_from(e).unwrap_or(Nanos::MAX))
    }
}

impl Algorithm for SlidingWindow {
    type State = CounterState;

    fn check(&self, s: &mut CounterState, now: Nanos, cost: u64) -> Decision {
        let w = self.rate.period;
        let elapsed = self.roll(s, now);
        let window_start_in = w - elapsed; // time until the next window starts
        if !self.fits(s.previous, s.current, elapsed, cost) {
            let retry_after = match self.fits_from(s.previous, s.current, cost) {
                Some(e) if e > elapsed => e - elapsed,
                _ => match self.fits_from(s.current, 0, cost) {
                    Some(e) => window_start_in.saturating_add(e),
                    None => Nanos::MAX,
                },
            };
            return Decision {
                verdict: Verdict::Reject { retry_after },
                remaining: 0,
                reset: self.reset(s, elapsed),
            };
        }
        s.current += cost;
        let w128 = u128::from(w);
        let budget = super::div_floor(
            (u128::from(self.rate.count) * w128)
                .saturating_sub(u128::from(s.previous) * (w128 - u128::from(elapsed))),
            w,
        );
        let remaining = u64::try_from(budget)
            .unwrap_or(u64::MAX)
            .saturating_sub(s.current);
        Decision {
            verdict: Verdict::Allow,
            remaining,
            reset: self.reset(s, elapsed),
        }
    }

    fn at_rest(&self, s: &CounterState, now: Nanos) -> bool {
        let index = now / self.rate.period;
        (s.current == 0 && s.previous == 0)
            || index > s.index.saturating_add(1)
            || (index == s.index.saturating_add(1) && s.current == 0)
    }

    fn quota(&self) -> Quota {
        Quota {
            quota: self.rate.count,
            window: self.rate.period,
            sustained: None,
        }
    }
}

impl SlidingWindow {
    /// Time until both counters have slid out.
    fn reset(&self, s: &CounterState, elapsed: Nanos) -> Nanos {
        let w = self.rate.period;
        if s.current > 0 {
            (2 * w).saturating_sub(elapsed)
        } else if s.previous > 0 {
            w - elapsed
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MILLI, SECOND};

    /// The vector: the fixed window's boundary burst is refused here.
    #[test]
    fn a_burst_right_after_a_full_window_is_refused() {
        let sw = SlidingWindow::new(Rate::new(100, 60 * SECOND));
        let mut s = CounterState::default();
        for _ in 0..100 {
            assert!(sw.check(&mut s, 59_900 * MILLI, 1).admitted());
        }
        let d = sw.check(&mut s, 60 * SECOND, 1);
        // previous 100 × (60 − e)/60 + 1 ≤ 100  ⇔  e ≥ 0.6 s
        assert_eq!(
            d.verdict,
            Verdict::Reject {
                retry_after: 600 * MILLI
            }
        );
        let mut admitted = 0;
        for _ in 0..100 {
            if sw.check(&mut s, 60 * SECOND, 1).admitted() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 0);
        assert!(sw.check(&mut s, 60_600 * MILLI, 1).admitted());
        assert!(!sw.check(&mut s, 60_600 * MILLI, 1).admitted());
    }

    #[test]
    fn clock_going_backwards_admits_nothing_extra() {
        let sw = SlidingWindow::new(Rate::new(2, SECOND));
        let mut s = CounterState::default();
        assert!(sw.check(&mut s, 5 * SECOND, 1).admitted());
        assert!(sw.check(&mut s, 5 * SECOND, 1).admitted());
        assert!(!sw.check(&mut s, SECOND, 1).admitted());
    }
}
