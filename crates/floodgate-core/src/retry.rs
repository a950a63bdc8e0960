//! Retry budget and backoff. A budget lets retries add at most `ratio` of the requests seen
//! recently, plus a small floor of retries per second, so that during an outage retries
//! cannot multiply the load on the service that is failing (the scheme of Finagle and
//! Linkerd). Requests and retries are counted in one-second buckets over a ten-second
//! window, with the clock passed in.

use crate::{Nanos, SECOND};

/// Buckets in the window (one per second).
const BUCKETS: usize = 10;

/// A retry budget.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: f64,
    /// (second, requests, retries) per bucket, indexed by second mod BUCKETS.
    buckets: [(u64, u64, u64); BUCKETS],
}

impl RetryBudget {
    /// Retries may add `ratio` (0.2 = 20%) of requests, plus `min_per_second` per second.
    pub fn new(ratio: f64, min_per_second: f64) -> Self {
        RetryBudget {
            ratio: ratio.max(0.0),
            min_per_second: min_per_second.max(0.0),
            buckets: [(u64::MAX, 0, 0); BUCKETS],
        }
    }

    fn bucket(&mut self, now: Nanos) -> &mut (u64, u64, u64) {
        let second = now / SECOND;
        let b = &mut self.buckets[(second % BUCKETS as u64) as usize];
        if b.0 != second {
            *b = (second, 0, 0);
        }
        b
    }

    fn totals(&self, now: Nanos) -> (u64, u64) {
        let second = now / SECOND;
        self.buckets
            .iter()
            .filter(|b| b.0 != u64::MAX && b.0 <= second && second - b.0 < BUCKETS as u64)
            .fold((0, 0), |(req, ret), b| (req + b.1, ret + b.2))
    }

    /// Counts an original request (not a retry).
    pub fn record_request(&mut self, now: Nanos) {
        self.bucket(now).1 += 1;
    }

    /// Takes a retry from the budget if there is room: retries in the window + 1 must not
    /// exceed `ratio × requests + min_per_second × window`.
    pub fn try_retry(&mut self, now: Nanos) -> bool {
        let (requests, retries) = self.totals(now);
        let allowed = self.ratio * requests as f64 + self.min_per_second * BUCKETS as f64;
        if (retries + 1) as f64 > allowed {
            return false;
        }
        self.bucket(now).2 += 1;
        true
    }
}

/// Exponential backoff with full jitter: a wait drawn uniformly from
/// `[0, min(max, base × 2^retry)]`; `unit` is a uniform random number in `[0, 1)`.
pub fn backoff(retry: u32, base: Nanos, max: Nanos, unit: f64) -> Nanos {
    let ceiling = base
        .saturating_mul(1u64.checked_shl(retry.min(62)).unwrap_or(u64::MAX))
        .min(max);
    (ceiling as f64 * unit.clamp(0.0, 1.0)) as Nanos
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MILLI;

    #[test]
    fn retries_stay_within_the_share_of_requests() {
        let mut b = RetryBudget::new(0.2, 0.0);
        for _ in 0..100 {
            b.record_request(0);
        }
        let granted = (0..100).filter(|_| b.try_retry(0)).count();
        assert_eq!(granted, 20);
        // Ten seconds later the old requests no longer count.
        assert!(!b.try_retry(10 * SECOND));
        b.record_request(10 * SECOND);
        assert!(
            !b.try_retry(10 * SECOND),
            "0.2 of one request is no whole retry"
        );
    }

    #[test]
    fn the_floor_allows_a_few_retries_without_traffic() {
        let mut b = RetryBudget::new(0.0, 1.0);
        let granted = (0..50).filter(|_| b.try_retry(0)).count();
        assert_eq!(granted, 10, "1 per second over a 10 s window");
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        assert_eq!(backoff(0, 25 * MILLI, 250 * MILLI, 0.999_999), 24_999_975);
        assert_eq!(backoff(3, 25 * MILLI, 250 * MILLI, 0.5), 100 * MILLI);
        assert_eq!(backoff(10, 25 * MILLI, 250 * MILLI, 0.5), 125 * MILLI);
        assert_eq!(backoff(63, 25 * MILLI, 250 * MILLI, 0.0), 0);
    }
}
