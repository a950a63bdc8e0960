//! Leaky bucket as a queue (nginx `limit_req` semantics): requests leave at a constant
//! `rate`. A request that finds the queue empty goes at once; otherwise it waits for its
//! turn, as long as at most `burst` requests are ahead of it and the wait is at most
//! `max_delay`; beyond that it is refused. With `delay: N` the first N queued requests go at
//! once (their slots are still used), the rest wait; `nodelay` is `delay = burst`.
//!
//! State per key: the time the last admitted request leaves the queue (scaled by the
//! rate's count). The waiting itself is the caller's job: [`Verdict::Delay`] says how long.

use super::{Algorithm, Decision, Quota, Rate, Verdict, Wide};
use crate::Nanos;

/// Leaky bucket parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeakyBucket {
    rate: Rate,
    burst: u64,
    delay: u64,
    max_delay: Option<Nanos>,
}

impl LeakyBucket {
    /// Drain at `rate`; queue at most `burst`; the first `delay` queued requests are not
    /// held back (`delay >= burst` is `nodelay`); no wait longer than `max_delay`.
    pub fn new(rate: Rate, burst: u64, delay: u64, max_delay: Option<Nanos>) -> Self {
        LeakyBucket {
            rate,
            burst,
            delay: delay.min(burst),
            max_delay,
        }
    }
}

/// Per-key leaky bucket state.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeakyState {
    /// When the last admitted request leaves the queue, scaled, plus one; 0 for a new key.
    last_out: Wide,
}

impl Algorithm for LeakyBucket {
    type State = LeakyState;

    fn check(&self, s: &mut LeakyState, now: Nanos, cost: u64) -> Decision {
        let now_s = self.rate.scale(now);
        let interval = self.rate.events(1);
        // How far behind now this request's turn is ("excess" in nginx).
        let out = match s.last_out.get().checked_sub(1) {
            None => now_s + self.rate.events(cost.saturating_sub(1)),
            Some(last) => now_s.max(last + self.rate.events(cost)),
        };
        let excess = out - now_s;
        let limit = self.rate.events(self.burst);
        let remaining = |excess: u128| self.rate.whole_events(limit.saturating_sub(excess));
        if excess > limit {
            return Decision {
                verdict: Verdict::Reject {
                    retry_after: self.rate.unscale_ceil(excess - limit),
                },
                remaining: 0,
                reset: self
                    .rate
                    .unscale_ceil(excess.saturating_sub(self.rate.events(cost))),
            };
        }
        let wait = self
            .rate
            .unscale_ceil(excess.saturating_sub(self.rate.events(self.delay)));
        if let Some(max) = self.max_delay
            && wait > max
        {
            return Decision {
                verdict: Verdict::Reject {
                    retry_after: wait - max,
                },
                remaining: 0,
                reset: self
                    .rate
                    .unscale_ceil(excess.saturating_sub(self.rate.events(cost))),
            };
        }
        s.last_out = Wide::new(out + 1);
        Decision {
            verdict: if wait == 0 {
                Verdict::Allow
            } else {
                Verdict::Delay(wait)
            },
            remaining: remaining(excess),
            reset: self.rate.unscale_ceil(excess + interval),
        }
    }

    fn at_rest(&self, s: &LeakyState, now: Nanos) -> bool {
        // Once the last request's turn is a full interval in the past, the next request
        // computes the same as for a new key.
        s.last_out
            .get()
            .checked_sub(1)
            .is_none_or(|last| last + self.rate.events(1) <= self.rate.scale(now))
    }

    fn quota(&self) -> Quota {
        Quota {
            quota: self.burst + 1,
            window: self
                .rate
                .unscale_ceil(self.rate.events(self.burst + 1))
                .max(1),
            sustained: Some((self.rate.count, self.rate.period)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MILLI, SECOND};

    fn run(b: &LeakyBucket, n: usize) -> Vec<Verdict> {
        let mut s = LeakyState::default();
        (0..n).map(|_| b.check(&mut s, 0, 1).verdict).collect()
    }

    /// The vector: rate 10/s, burst 5, seven simultaneous requests.
    #[test]
    fn seven_at_once_one_goes_five_wait_one_refused() {
        let b = LeakyBucket::new(Rate::new(10, SECOND), 5, 0, None);
        let v = run(&b, 7);
        assert_eq!(v[0], Verdict::Allow);
        for (i, verdict) in v[1..6].iter().enumerate() {
            assert_eq!(*verdict, Verdict::Delay((i as u64 + 1) * 100 * MILLI));
        }
        assert_eq!(
            v[6],
            Verdict::Reject {
                retry_after: 100 * MILLI
            }
        );
    }

    /// The vector with `delay: 2`.
    #[test]
    fn two_stage_delay() {
        let b = LeakyBucket::new(Rate::new(10, SECOND), 5, 2, None);
        let v = run(&b, 7);
        assert_eq!(&v[..3], &[Verdict::Allow; 3]);
        assert_eq!(
            &v[3..6],
            &[
                Verdict::Delay(100 * MILLI),
                Verdict::Delay(200 * MILLI),
                Verdict::Delay(300 * MILLI)
            ]
        );
        assert!(matches!(v[6], Verdict::Reject { .. }));
    }

    #[test]
    fn nodelay_passes_the_burst_at_once_and_max_delay_caps_the_wait() {
        let b = LeakyBucket::new(Rate::new(10, SECOND), 5, u64::MAX, None);
        let v = run(&b, 7);
        assert_eq!(&v[..6], &[Verdict::Allow; 6]);
        assert!(matches!(v[6], Verdict::Reject { .. }));
        let b = LeakyBucket::new(Rate::new(10, SECOND), 5, 0, Some(250 * MILLI));
        let v = run(&b, 5);
        assert_eq!(v[2], Verdict::Delay(200 * MILLI));
        assert_eq!(
            v[3],
            Verdict::Reject {
                retry_after: 50 * MILLI
            }
        );
        // The refused request took no slot: the next one is refused the same way.
        assert_eq!(
            v[4],
            Verdict::Reject {
                retry_after: 50 * MILLI
            }
        );
    }

    #[test]
    fn drains_at_the_rate() {
        let b = LeakyBucket::new(Rate::new(10, SECOND), 0, 0, None);
        let mut s = LeakyState::default();
        assert!(b.check(&mut s, 0, 1).admitted());
        assert!(!b.check(&mut s, 50 * MILLI, 1).admitted());
        assert!(b.check(&mut s, 100 * MILLI, 1).admitted());
        assert!(!b.at_rest(&s, 150 * MILLI));
        assert!(b.at_rest(&s, 200 * MILLI));
    }

    #[test]
    fn clock_going_backwards_admits_nothing_extra() {
        let b = LeakyBucket::new(Rate::new(1, SECOND), 0, 0, None);
        let mut s = LeakyState::default();
        assert!(b.check(&mut s, 10 * SECOND, 1).admitted());
        assert!(!b.check(&mut s, 2 * SECOND, 1).admitted());
        assert!(b.check(&mut s, 11 * SECOND, 1).admitted());
    }
}
