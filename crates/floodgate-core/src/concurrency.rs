//! The gradient adaptive concurrency limit: how many requests may be in flight, following
//! measured latency. Latency samples are averaged over short windows; each window moves the
//! limit by the gradient `min_rtt × (1 + tolerance) / window_rtt` (between 0.5 and 1),
//! plus `√limit` of headroom so the limit can grow while latency stays at the minimum:
//!
//! `new = limit × gradient + √limit`, smoothed: `limit ← limit + smoothing × (new − limit)`,
//! kept within `[min_limit, max_limit]`.
//!
//! When latency rises above the tolerated minimum (queues building up behind the gateway),
//! the gradient falls below 1 and the limit shrinks; when it is back near the minimum, the
//! limit grows by about √limit per window. The minimum is re-measured every
//! `min_rtt_refresh` (the next window's average replaces it), so it follows a backend whose
//! baseline latency changed. Unlike Envoy, the limit is not dropped while re-measuring.
//! The admission itself (in-flight count, queue) belongs to the caller.

use crate::Nanos;

/// Parameters of the adaptive limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradientConfig {
    /// Limit at start.
    pub initial_limit: u32,
    /// Never below this.
    pub min_limit: u32,
    /// Never above this.
    pub max_limit: u32,
    /// Length of one sampling window.
    pub window: Nanos,
    /// Samples needed in a window before it counts (fewer: the window is extended).
    pub min_samples: u32,
    /// Latency above the minimum that is still tolerated, as a fraction (0.25 = 25%).
    pub tolerance: f64,
    /// Share of each step applied (0 < smoothing ≤ 1).
    pub smoothing: f64,
    /// How often the minimum latency is measured afresh.
    pub min_rtt_refresh: Nanos,
}

/// The adaptive limit's state.
#[derive(Debug, Clone)]
pub struct GradientLimit {
    cfg: GradientConfig,
    limit: f64,
    min_rtt: Option<Nanos>,
    min_rtt_since: Nanos,
    refreshing: bool,
    window_start: Option<Nanos>,
    sum: u128,
    count: u32,
}

impl GradientLimit {
    /// Starts at `cfg.initial_limit` with no latency measured yet.
    pub fn new(cfg: GradientConfig) -> Self {
        let min = cfg.min_limit.max(1);
        let max = cfg.max_limit.max(min);
        let cfg = GradientConfig {
            min_limit: min,
            max_limit: max,
            initial_limit: cfg.initial_limit.clamp(min, max),
            min_samples: cfg.min_samples.max(1),
            smoothing: cfg.smoothing.clamp(0.01, 1.0),
            tolerance: cfg.tolerance.max(0.0),
            ..cfg
        };
        GradientLimit {
            limit: f64::from(cfg.initial_limit),
            cfg,
            min_rtt: None,
            min_rtt_since: 0,
            refreshing: false,
            window_start: None,
            sum: 0,
            count: 0,
        }
    }

    /// The current limit.
    pub fn limit(&self) -> u32 {
        // Within [min_limit, max_limit] by construction.
        self.limit.round() as u32
    }

    /// The minimum window latency measured, if any.
    pub fn min_rtt(&self) -> Option<Nanos> {
        self.min_rtt
    }

    /// Records one request's latency `rtt`, finished at `now`; returns whether the limit
    /// was recomputed.
    pub fn on_sample(&mut self, rtt: Nanos, now: Nanos) -> bool {
        let start = *self.window_start.get_or_insert(now);
        self.sum += u128::from(rtt);
        self.count += 1;
        if now.saturating_sub(start) < self.cfg.window || self.count < self.cfg.min_samples {
            return false;
        }
        let avg = u64::try_from(self.sum / u128::from(self.count))
            .unwrap_or(u64::MAX)
            .max(1);
        self.window_start = Some(now);
        self.sum = 0;
        self.count = 0;
        self.update(avg, now);
        true
    }

    fn update(&mut self, window_rtt: Nanos, now: Nanos) {
        if self.refreshing || self.min_rtt.is_none() {
            self.min_rtt = Some(window_rtt);
            self.min_rtt_since = now;
            self.refreshing = false;
        } else if let Some(min) = self.min_rtt
            && window_rtt < min
        {
            self.min_rtt = Some(window_rtt);
        }
        if now.saturating_sub(self.min_rtt_since) >= self.cfg.min_rtt_refresh {
            self.refreshing = true;
        }
        let min = self.min_rtt.unwrap_or(window_rtt) as f64;
        let gradient = (min * (1.0 + self.cfg.tolerance) / window_rtt as f64).clamp(0.5, 1.0);
        let target = self.limit * gradient + self.limit.sqrt();
        let next = self.limit + self.cfg.smoothing * (target - self.limit);
        self.limit = next.clamp(f64::from(self.cfg.min_limit), f64::from(self.cfg.max_limit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MILLI;

    fn cfg() -> GradientConfig {
        GradientConfig {
            initial_limit: 20,
            min_limit: 2,
            max_limit: 200,
            window: 100 * MILLI,
            min_samples: 10,
            tolerance: 0.25,
            smoothing: 0.5,
            min_rtt_refresh: 60_000 * MILLI,
        }
    }

    /// Feeds `windows` windows of 10 samples of `rtt` each.
    fn feed(g: &mut GradientLimit, now: &mut Nanos, rtt: Nanos, windows: u32) {
        for _ in 0..windows {
            for _ in 0..10 {
                *now += 10 * MILLI;
                g.on_sample(rtt, *now);
            }
        }
    }

    #[test]
    fn grows_at_the_minimum_latency_and_shrinks_when_it_rises() {
        let mut g = GradientLimit::new(cfg());
        let mut now = 0;
        feed(&mut g, &mut now, 10 * MILLI, 20);
        let grown = g.limit();
        assert!(grown > 40, "limit should grow at steady latency: {grown}");
        feed(&mut g, &mut now, 40 * MILLI, 10);
        let shrunk = g.limit();
        assert!(shrunk < grown / 4, "{shrunk} vs {grown}");
        feed(&mut g, &mut now, 40 * MILLI, 50);
        assert!(g.limit() >= 2);
        // Back to the minimum: it grows again.
        let low = g.limit();
        feed(&mut g, &mut now, 10 * MILLI, 10);
        assert!(g.limit() > low);
    }

    #[test]
    fn stays_within_bounds() {
        let mut g = GradientLimit::new(GradientConfig {
            min_rtt_refresh: Nanos::MAX,
            ..cfg()
        });
        let mut now = 0;
        feed(&mut g, &mut now, MILLI, 500);
        assert_eq!(g.limit(), 200);
        // At the lowest gradient (0.5) the headroom √limit holds the limit at 4:
        // limit = limit / 2 + √limit.
        feed(&mut g, &mut now, 1000 * MILLI, 500);
        assert_eq!(g.limit(), 4);
    }

    #[test]
    fn the_minimum_is_measured_afresh() {
        let mut g = GradientLimit::new(GradientConfig {
            min_rtt_refresh: 1000 * MILLI,
            ..cfg()
        });
        let mut now = 0;
        feed(&mut g, &mut now, 10 * MILLI, 5);
        assert_eq!(g.min_rtt(), Some(10 * MILLI));
        // The backend's baseline moved to 30 ms for good.
        feed(&mut g, &mut now, 30 * MILLI, 30);
        assert_eq!(g.min_rtt(), Some(30 * MILLI));
    }
}
