//! Token bucket: a bucket of `burst` tokens, refilled continuously at `rate`; a request
//! takes `cost` tokens or is refused. Starts full.
//!
//! The state is kept as the *deficit* (tokens missing from a full bucket), in the rate's
//! scaled units (one token and one nanosecond of refill are both whole numbers of them), so
//! the arithmetic is exact and a never-seen key (deficit 0) is a full bucket.

use super::{Algorithm, Decision, Quota, Rate, Verdict, Wide};
use crate::Nanos;

/// Token bucket parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenBucket {
    rate: Rate,
    burst: u64,
}

impl TokenBucket {
    /// Refill at `rate`, hold at most `burst` tokens (at least 1).
    pub fn new(rate: Rate, burst: u64) -> Self {
        TokenBucket {
            rate,
            burst: burst.max(1),
        }
    }

    fn capacity(&self) -> u128 {
        self.rate.events(self.burst)
    }
}

/// Per-key token bucket state.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokenState {
    /// Missing tokens, scaled (see the module comment).
    deficit: Wide,
    /// Latest time seen.
    last: Nanos,
}

impl TokenBucket {
    /// The deficit at `now` after refilling since the last update.
    fn refilled(&self, s: &TokenState, now: Nanos) -> u128 {
        let elapsed = now.saturating_sub(s.last);
        s.deficit.get().saturating_sub(self.rate.scale(elapsed))
    }
}

impl Algorithm for TokenBucket {
    type State = TokenState;

    fn check(&self, s: &mut TokenState, now: Nanos, cost: u64) -> Decision {
        let deficit = self.refilled(s, now);
        let after = deficit + self.rate.events(cost);
        let cap = self.capacity();
        if after > cap {
            let retry_after = if cost > self.burst {
                Nanos::MAX
            } else {
                self.rate.unscale_ceil(after - cap)
            };
            return Decision {
                verdict: Verdict::Reject { retry_after },
                remaining: self.rate.whole_events(cap - deficit),
                reset: self.rate.unscale_ceil(deficit),
            };
        }
        s.deficit = Wide::new(after);
        s.last = s.last.max(now);
        Decision {
            verdict: Verdict::Allow,
            remaining: self.rate.whole_events(cap - after),
            reset: self.rate.unscale_ceil(after),
        }
    }

    fn at_rest(&self, s: &TokenState, now: Nanos) -> bool {
        self.refilled(s, now) == 0
    }

    fn quota(&self) -> Quota {
        // A full bucket refills in burst × period / count.
        Quota {
            quota: self.burst,
            window: self.rate.unscale_ceil(self.capacity()).max(1),
            sustained: Some((self.rate.count, self.rate.period)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MILLI, SECOND};

    #[test]
    fn starts_full_refills_and_reports_exact_retry_after() {
        let tb = TokenBucket::new(Rate::new(10, SECOND), 5);
        let mut s = TokenState::default();
        for i in 0..5 {
            let d = tb.check(&mut s, 0, 1);
            assert_eq!(d.verdict, Verdict::Allow);
            assert_eq!(d.remaining, 4 - i);
        }
        let d = tb.check(&mut s, 0, 1);
        assert_eq!(
            d.verdict,
            Verdict::Reject {
                retry_after: 100 * MILLI
            }
        );
        assert_eq!(d.reset, 500 * MILLI);
        assert!(tb.check(&mut s, 100 * MILLI, 1).admitted());
        assert!(!tb.check(&mut s, 100 * MILLI, 1).admitted());
        assert!(tb.at_rest(&s, 600 * MILLI));
        assert!(!tb.at_rest(&s, 599 * MILLI));
    }

    #[test]
    fn thirds_of_a_second_do_not_drift() {
        // 3 per second: one token every 333,333,333.3 ns. Burst 2, so taking each token
        // when it arrives never finds the bucket full (a full bucket discards refill).
        let tb = TokenBucket::new(Rate::new(3, SECOND), 2);
        let mut s = TokenState::default();
        assert!(tb.check(&mut s, 0, 1).admitted());
        assert!(tb.check(&mut s, 0, 1).admitted());
        let d = tb.check(&mut s, 0, 1);
        assert_eq!(
            d.verdict,
            Verdict::Reject {
                retry_after: 333_333_334
            }
        );
        // The k-th token arrives at exactly k/3 s, rounded up to the nanosecond, for an
        // hour: one nanosecond earlier it is not there yet.
        for k in 1..=10_800u64 {
            let at = (k * SECOND).div_ceil(3);
            assert!(!tb.check(&mut s, at - 1, 1).admitted(), "token {k} early");
            assert!(tb.check(&mut s, at, 1).admitted(), "token {k} late");
        }
    }

    #[test]
    fn clock_going_backwards_admits_nothing_extra() {
        let tb = TokenBucket::new(Rate::new(1, SECOND), 2);
        let mut s = TokenState::default();
        assert!(tb.check(&mut s, 10 * SECOND, 1).admitted());
        assert!(tb.check(&mut s, 10 * SECOND, 1).admitted());
        assert!(!tb.check(&mut s, 3 * SECOND, 1).admitted());
        assert!(!tb.check(&mut s, 0, 1).admitted());
        assert!(tb.check(&mut s, 11 * SECOND, 1).admitted());
    }

    #[test]
    fn a_cost_above_the_burst_can_never_pass() {
        let tb = TokenBucket::new(Rate::new(1, SECOND), 2);
        let mut s = TokenState::default();
        let d = tb.check(&mut s, 0, 3);
        assert_eq!(
            d.verdict,
            Verdict::Reject {
                retry_after: Nanos::MAX
            }
        );
    }
}
