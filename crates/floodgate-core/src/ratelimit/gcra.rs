//! GCRA, the generic cell rate algorithm (virtual scheduling form): each key keeps a
//! theoretical arrival time (TAT); a request is admitted when, after adding its emission
//! interval, the TAT is at most `burst` intervals ahead of now. One number of state per key.
//!
//! It admits exactly what a token bucket of the same rate and burst admits (the ATM
//! "virtual scheduling" and "continuous-state leaky bucket" forms are equivalent); the
//! property tests check that equivalence on random arrivals.

use super::{Algorithm, Decision, Quota, Rate, Verdict, Wide};
use crate::Nanos;

/// GCRA parameters: emission interval `period / count`, tolerance `burst` intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gcra {
    rate: Rate,
    burst: u64,
}

impl Gcra {
    /// `rate` sustained, up to `burst` (at least 1) at once.
    pub fn new(rate: Rate, burst: u64) -> Self {
        Gcra {
            rate,
            burst: burst.max(1),
        }
    }
}

/// Per-key GCRA state: the theoretical arrival time, scaled by the rate's count.
#[derive(Debug, Default, Clone, Copy)]
pub struct GcraState {
    tat: Wide,
}

impl Algorithm for Gcra {
    type State = GcraState;

    fn check(&self, s: &mut GcraState, now: Nanos, cost: u64) -> Decision {
        let now_s = self.rate.scale(now);
        let limit = self.rate.events(self.burst);
        let base = s.tat.get().max(now_s);
        let new_tat = base + self.rate.events(cost);
        let ahead = new_tat - now_s;
        if ahead > limit {
            let retry_after = if cost > self.burst {
                Nanos::MAX
            } else {
                self.rate.unscale_ceil(ahead - limit)
            };
            let used = base - now_s;
            return Decision {
                verdict: Verdict::Reject { retry_after },
                remaining: self.rate.whole_events(limit.saturating_sub(used)),
                reset: self.rate.unscale_ceil(used),
            };
        }
        s.tat = Wide::new(new_tat);
        Decision {
            verdict: Verdict::Allow,
            remaining: self.rate.whole_events(limit - ahead),
            reset: self.rate.unscale_ceil(ahead),
        }
    }

    fn at_rest(&self, s: &GcraState, now: Nanos) -> bool {
        s.tat.get() <= self.rate.scale(now)
    }

    fn quota(&self) -> Quota {
        Quota {
            quota: self.burst,
            window: self.rate.unscale_ceil(self.rate.events(self.burst)).max(1),
            sustained: Some((self.rate.count, self.rate.period)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MILLI, SECOND};

    /// The vector: rate 10/s, burst 5, six requests at t=0.
    #[test]
    fn six_at_once_five_pass_sixth_waits_100ms() {
        let g = Gcra::new(Rate::new(10, SECOND), 5);
        let mut s = GcraState::default();
        for _ in 0..5 {
            assert_eq!(g.check(&mut s, 0, 1).verdict, Verdict::Allow);
        }
        assert_eq!(
            g.check(&mut s, 0, 1).verdict,
            Verdict::Reject {
                retry_after: 100 * MILLI
            }
        );
        assert!(g.check(&mut s, 100 * MILLI, 1).admitted());
    }

    #[test]
    fn clock_going_backwards_admits_nothing_extra() {
        let g = Gcra::new(Rate::new(1, SECOND), 1);
        let mut s = GcraState::default();
        assert!(g.check(&mut s, 5 * SECOND, 1).admitted());
        assert!(!g.check(&mut s, 0, 1).admitted());
        assert!(!g.check(&mut s, 5 * SECOND, 1).admitted());
        assert!(g.check(&mut s, 6 * SECOND, 1).admitted());
    }
}
