//! Passive outlier detection: a target whose live traffic fails (consecutive failures, or a
//! failure rate over a window once enough requests were seen) is ejected from balancing for
//! a time that grows with each ejection (`base × n`, at most `max`), and comes back by
//! itself when that time is over. A target that then stays in for `max` starts counting
//! from one again. The caller enforces how many targets may be out at once.

use crate::{Nanos, SECOND};

/// Buckets the failure-rate window is split into.
const BUCKETS: usize = 10;

/// When to eject.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierConfig {
    /// Eject after this many failures in a row.
    pub consecutive: Option<u32>,
    /// Eject when failures / requests over `window` reaches this (0..=1) ...
    pub failure_rate: Option<f64>,
    /// ... once at least this many requests were seen in it.
    pub min_requests: u32,
    /// The failure-rate window.
    pub window: Nanos,
    /// First ejection time; the n-th is `base × n`.
    pub base: Nanos,
    /// Longest ejection.
    pub max: Nanos,
}

/// One target's outlier state.
#[derive(Debug, Clone, Default)]
pub struct OutlierState {
    consecutive: u32,
    /// (bucket number, requests, failures).
    buckets: [(u64, u32, u32); BUCKETS],
    ejections: u32,
    ejected_until: Option<Nanos>,
}

impl OutlierState {
    /// Whether the target is out of balancing at `now`.
    pub fn is_ejected(&self, now: Nanos) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    /// Times ejected in the current series.
    pub fn ejections(&self) -> u32 {
        self.ejections
    }

    fn bucket_len(cfg: &OutlierConfig) -> Nanos {
        (cfg.window / BUCKETS as u64).max(SECOND / 100)
    }

    /// Records one result; true when the rules now call for an ejection (the caller
    /// decides, given how many targets are already out, and then calls [`Self::eject`]).
    pub fn record(&mut self, cfg: &OutlierConfig, ok: bool, now: Nanos) -> bool {
        if self.is_ejected(now) {
            return false;
        }
        self.consecutive = if ok { 0 } else { self.consecutive + 1 };
        let n = now / Self::bucket_len(cfg);
        let b = &mut self.buckets[(n % BUCKETS as u64) as usize];
        if b.0 != n || (b.1 == 0 && b.2 == 0) {
            *b = (n, 0, 0);
        }
        b.1 += 1;
        b.2 += u32::from(!ok);
        if ok {
            return false;
        }
        if cfg.consecutive.is_some_and(|c| self.consecutive >= c) {
            return true;
        }
        if let Some(rate) = cfg.failure_rate {
            let (requests, failures) = self
                .buckets
                .iter()
                .filter(|b| b.0 <= n && n - b.0 < BUCKETS as u64)
                .fold((0u32, 0u32), |(r, f), b| (r + b.1, f + b.2));
            if requests >= cfg.min_requests.max(1)
                && f64::from(failures) >= rate * f64::from(requests)
            {
                return true;
            }
        }
        false
    }

    /// Ejects the target at `now`; returns for how long.
    pub fn eject(&mut self, cfg: &OutlierConfig, now: Nanos) -> Nanos {
        // A target that stayed in for `max` since its last ejection starts a new series.
        if self
            .ejected_until
            .is_some_and(|until| now.saturating_sub(until) >= cfg.max)
        {
            self.ejections = 0;
        }
        self.ejections += 1;
        let time = cfg
            .base
            .saturating_mul(u64::from(self.ejections))
            .min(cfg.max);
        self.ejected_until = Some(now.saturating_add(time));
        self.consecutive = 0;
        self.buckets = Default::default();
        time
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OutlierConfig {
        OutlierConfig {
            consecutive: Some(3),
            failure_rate: Some(0.5),
            min_requests: 10,
            window: 10 * SECOND,
            base: 30 * SECOND,
            max: 90 * SECOND,
        }
    }

    #[test]
    fn consecutive_failures_eject_for_growing_times_and_targets_come_back() {
        let c = cfg();
        let mut s = OutlierState::default();
        assert!(!s.record(&c, false, 0));
        assert!(!s.record(&c, true, 0), "a success resets the run");
        assert!(!s.record(&c, false, 0));
        assert!(!s.record(&c, false, 0));
        assert!(s.record(&c, false, 0));
        assert_eq!(s.eject(&c, 0), 30 * SECOND);
        assert!(s.is_ejected(29 * SECOND));
        assert!(!s.is_ejected(30 * SECOND), "back by itself");
        for _ in 0..2 {
            s.record(&c, false, 31 * SECOND);
        }
        assert!(s.record(&c, false, 31 * SECOND));
        assert_eq!(s.eject(&c, 31 * SECOND), 60 * SECOND);
        assert_eq!(s.eject(&c, 100 * SECOND), 90 * SECOND, "capped at max");
        // In for `max` after that: a new series.
        assert_eq!(s.eject(&c, 400 * SECOND), 30 * SECOND);
    }

    #[test]
    fn a_failure_rate_ejects_once_enough_requests_were_seen() {
        let c = OutlierConfig {
            consecutive: None,
            ..cfg()
        };
        let mut s = OutlierState::default();
        let mut ejected = false;
        for i in 0..10 {
            // Alternating: 50% failures, never two in a row.
            ejected = s.record(&c, i % 2 == 1, SECOND);
            if i < 9 {
                assert!(!ejected, "not before 10 requests");
            }
        }
        assert!(!ejected, "the 10th was a success");
        assert!(s.record(&c, false, SECOND), "6 of 11 failed");
        // Old results leave the window.
        let mut fresh = OutlierState::default();
        for _ in 0..9 {
            fresh.record(&c, false, 0);
        }
        assert!(!fresh.record(&c, true, 20 * SECOND));
    }
}
