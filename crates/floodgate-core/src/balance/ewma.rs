//! Peak EWMA latency (as in Finagle and Linkerd): an exponentially weighted moving average
//! of response times that jumps straight to any sample above it (so a slowing target is
//! avoided at once) and otherwise decays toward new samples with time constant `tau`.
//! Balancers multiply it by the requests in flight (plus one) to get a target's cost.

use crate::Nanos;

/// One target's latency estimate.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeakEwma {
    /// The estimate, in nanoseconds; 0 before the first sample.
    cost: f64,
    /// When it was last updated.
    stamp: Nanos,
}

impl PeakEwma {
    /// Records a response time `rtt` seen at `now`, with decay time constant `tau`.
    pub fn observe(&mut self, rtt: Nanos, now: Nanos, tau: Nanos) {
        let rtt = rtt as f64;
        if rtt > self.cost || self.cost == 0.0 {
            self.cost = rtt;
        } else {
            let elapsed = now.saturating_sub(self.stamp) as f64;
            let w = (-elapsed / (tau.max(1) as f64)).exp();
            self.cost = self.cost * w + rtt * (1.0 - w);
        }
        self.stamp = self.stamp.max(now);
    }

    /// The latency estimate in nanoseconds.
    pub fn latency(&self) -> f64 {
        self.cost
    }

    /// The balancing cost with `in_flight` requests outstanding: latency × (in flight + 1).
    /// A target with no sample yet costs by its queue alone, so new targets get tried.
    pub fn cost(&self, in_flight: u32) -> f64 {
        self.cost.max(1.0) * (f64::from(in_flight) + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MILLI;

    #[test]
    fn jumps_to_peaks_and_decays_toward_new_samples() {
        let tau = 10_000 * MILLI;
        let mut e = PeakEwma::default();
        e.observe(10 * MILLI, 0, tau);
        assert_eq!(e.latency(), (10 * MILLI) as f64);
        e.observe(100 * MILLI, MILLI, tau);
        assert_eq!(e.latency(), (100 * MILLI) as f64, "a peak is taken at once");
        // Fast samples pull it down, by more the longer since the last one.
        e.observe(10 * MILLI, 2 * MILLI, tau);
        let after_short = e.latency();
        assert!(after_short > 99.0 * MILLI as f64);
        e.observe(10 * MILLI, 20_000 * MILLI, tau);
        assert!(e.latency() < 25.0 * MILLI as f64, "{}", e.latency());
        // Cost grows with the queue.
        assert!(e.cost(3) > 3.9 * e.latency());
    }
}
