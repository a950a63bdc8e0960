//! Fixed window: at most `limit` units per window of `period`, windows aligned to
//! multiples of the period on the caller's timeline; the count starts over at each
//! boundary. Admits up to 2 × limit across a boundary (the end of one window and the
//! start of the next).

use super::{Algorithm, Decision, Quota, Rate, Verdict};
use crate::Nanos;

/// Fixed window parameters: `rate.count` per `rate.period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FixedWindow {
    rate: Rate,
}

impl FixedWindow {
    /// `rate.count` units per window of `rate.period`.
    pub fn new(rate: Rate) -> Self {
        FixedWindow { rate }
    }
}

/// Per-key fixed window state.
#[derive(Debug, Default, Clone, Copy)]
pub struct WindowState {
    /// Index of the window `used` counts in.
    index: u64,
    used: u64,
}

impl Algorithm for FixedWindow {
    type State = WindowState;

    fn check(&self, s: &mut WindowState, now: Nanos, cost: u64) -> Decision {
        let w = self.rate.period;
        let limit = self.rate.count;
        let index = now / w;
        // A later window starts over; an earlier one (clock went back) keeps counting in
        // the latest window seen.
        if index > s.index {
            s.index = index;
            s.used = 0;
        }
        let window_end = s.index.saturating_add(1).saturating_mul(w);
        let reset = window_end.saturating_sub(now);
        if s.used.saturating_add(cost) > limit {
            let retry_after = if cost > limit { Nanos::MAX } else { reset };
            return Decision {
                verdict: Verdict::Reject { retry_after },
                remaining: limit.saturating_sub(s.used),
                reset,
            };
        }
        s.used += cost;
        Decision {
            verdict: Verdict::Allow,
            remaining: limit - s.used,
            reset,
        }
    }

    fn at_rest(&self, s: &WindowState, now: Nanos) -> bool {
        s.used == 0 || now / self.rate.period > s.index
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

    /// The vector: L=100/60 s, 100 requests at 59.9 s and 100 at 60.0 s.
    #[test]
    fn admits_twice_the_limit_across_a_boundary() {
        let f = FixedWindow::new(Rate::new(100, 60 * SECOND));
        let mut s = WindowState::default();
        for _ in 0..100 {
            assert!(f.check(&mut s, 59_900 * MILLI, 1).admitted());
        }
        let d = f.check(&mut s, 59_900 * MILLI, 1);
        assert_eq!(
            d.verdict,
            Verdict::Reject {
                retry_after: 100 * MILLI
            }
        );
        for _ in 0..100 {
            assert!(f.check(&mut s, 60 * SECOND, 1).admitted());
        }
        assert!(!f.check(&mut s, 60 * SECOND, 1).admitted());
    }

    #[test]
    fn clock_going_backwards_keeps_counting_in_the_latest_window() {
        let f = FixedWindow::new(Rate::new(1, SECOND));
        let mut s = WindowState::default();
        assert!(f.check(&mut s, 5 * SECOND, 1).admitted());
        assert!(!f.check(&mut s, 2 * SECOND, 1).admitted());
        assert!(f.check(&mut s, 6 * SECOND, 1).admitted());
    }
}
