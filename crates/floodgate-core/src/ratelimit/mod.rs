//! Rate-limiting algorithms. Each is a small parameter value implementing [`Algorithm`]
//! over its own per-key state; [`KeyedLimiter`] holds that state for many keys within a
//! memory bound. All arithmetic is exact integer arithmetic: rates are kept as
//! `count / period` and time is scaled (by `count / gcd(count, period)`, usually 1) where
//! needed, so a limit of 3/s has no rounding drift and retry-after times are exact to the
//! nanosecond (rounded up).
//!
//! Time never has to be monotonic: when `now` is earlier than a time already seen, every
//! algorithm treats it as the latest time it saw (or something more conservative), so a
//! clock going backwards neither panics nor admits more than the limit.
//!
//! docs/rate-limiting.md states each algorithm's rule, bursts and known error.

mod fixed_window;
mod gcra;
mod keyed;
mod leaky_bucket;
mod sliding_log;
mod sliding_window;
mod token_bucket;

#[cfg(test)]
mod reference;

pub use fixed_window::FixedWindow;
pub use fixed_window::WindowState;
pub use gcra::Gcra;
pub use gcra::GcraState;
pub use keyed::{DynLimiter, KeyedLimiter, KeyedStats, hash_key};
pub use leaky_bucket::LeakyBucket;
pub use leaky_bucket::LeakyState;
pub use sliding_log::LogState;
pub use sliding_log::SlidingLog;
pub use sliding_window::CounterState;
pub use sliding_window::SlidingWindow;
pub use token_bucket::TokenBucket;
pub use token_bucket::TokenState;

use crate::Nanos;

/// `count` events per `period` nanoseconds. Both are at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Events.
    pub count: u64,
    /// Per this many nanoseconds.
    pub period: Nanos,
    /// Scaled units per nanosecond: `count / gcd(count, period)`; 1 whenever the emission
    /// interval is a whole number of nanoseconds (`10/s`, `1000/h`), the common case.
    units_per_ns: u64,
    /// Scaled units per event: `period / gcd(count, period)`.
    units_per_event: u64,
}

impl Rate {
    /// A rate of `count` per `period`; zero values are raised to 1 so the arithmetic never
    /// divides by zero (configuration validation refuses them before they get here).
    pub fn new(count: u64, period: Nanos) -> Self {
        let (count, period) = (count.max(1), period.max(1));
        let g = gcd(count, period);
        Rate {
            count,
            period,
            units_per_ns: count / g,
            units_per_event: period / g,
        }
    }

    /// `t` in scaled units, where one nanosecond is `units_per_ns` and one event exactly
    /// `units_per_event`, so that time and events are both whole numbers.
    fn scale(self, t: Nanos) -> u128 {
        u128::from(t) * u128::from(self.units_per_ns)
    }

    /// Scaled units back to nanoseconds, rounded up.
    fn unscale_ceil(self, units: u128) -> Nanos {
        if self.units_per_ns == 1 {
            return to_nanos(units);
        }
        to_nanos(div_ceil(units, self.units_per_ns))
    }

    /// How many whole events `units` holds.
    fn whole_events(self, units: u128) -> u64 {
        u64::try_from(div_floor(units, self.units_per_event)).unwrap_or(u64::MAX)
    }

    /// `n` events in scaled units.
    fn events(self, n: u64) -> u128 {
        u128::from(n) * u128::from(self.units_per_event)
    }
}

/// A 128-bit value stored as two 64-bit halves: the same range as `u128` with 8-byte
/// alignment instead of 16, which keeps per-key entries small (a GCRA key: 32 bytes instead
/// of 48) and more of a large key table in cache.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Wide([u64; 2]);

impl Wide {
    fn get(self) -> u128 {
        (u128::from(self.0[1]) << 64) | u128::from(self.0[0])
    }

    fn new(v: u128) -> Self {
        // Truncation is the point: the halves of `v`.
        Wide([v as u64, (v >> 64) as u64])
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `a / b` rounded down. 128-bit division is a slow library call; the values almost always
/// fit in 64 bits, where it is one instruction.
pub(super) fn div_floor(a: u128, b: u64) -> u128 {
    match u64::try_from(a) {
        Ok(a) => u128::from(a / b),
        Err(_) => a / u128::from(b),
    }
}

/// `a / b` rounded up (see [`div_floor`]).
fn div_ceil(a: u128, b: u64) -> u128 {
    match u64::try_from(a) {
        Ok(a) => u128::from(a.div_ceil(b)),
        Err(_) => a.div_ceil(u128::from(b)),
    }
}

/// Saturating conversion of a large intermediate into nanoseconds.
fn to_nanos(v: u128) -> Nanos {
    Nanos::try_from(v).unwrap_or(Nanos::MAX)
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admit now.
    Allow,
    /// Admit after waiting this long (leaky bucket only).
    Delay(Nanos),
    /// Refuse; a retry after this long would be admitted if nothing else arrives.
    Reject {
        /// Time until a retry can succeed (`Nanos::MAX` when it never can, e.g. a cost
        /// larger than the burst).
        retry_after: Nanos,
    },
}

/// A verdict with the quota state after it, for the `RateLimit` response field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Admit, delay or reject.
    pub verdict: Verdict,
    /// Requests of cost 1 that would be admitted right now, after this decision.
    pub remaining: u64,
    /// Time until the quota is whole again if nothing else arrives.
    pub reset: Nanos,
}

impl Decision {
    /// Whether the request may go on (now or after a delay).
    pub fn admitted(&self) -> bool {
        !matches!(self.verdict, Verdict::Reject { .. })
    }
}

/// The policy an algorithm advertises in `RateLimit-Policy`: `quota` units per `window`,
/// and for the buckets their long-run rate besides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Units per window (`q`): for a window algorithm its limit; for a bucket what may go
    /// at once (its burst; a leaky bucket's burst + 1: one at once and `burst` queued).
    pub quota: u64,
    /// The window (`w`), in nanoseconds: a window algorithm's window; for a bucket the
    /// time it takes to refill `quota`.
    pub window: Nanos,
    /// A bucket's long-run rate, `(count, period)`; `None` for window algorithms, whose
    /// quota is their rate.
    pub sustained: Option<(u64, Nanos)>,
}

/// One rate-limiting algorithm with its parameters.
pub trait Algorithm: Send + Sync + 'static {
    /// Per-key state; `Default` is the state of a key never seen.
    type State: Default + Send;

    /// Decides on a request of `cost` units arriving at `now`, updating `state` only when
    /// the request is admitted (or delayed).
    fn check(&self, state: &mut Self::State, now: Nanos, cost: u64) -> Decision;

    /// Whether `state` carries no information any more at `now`, i.e. equals a fresh
    /// state for every future decision. Such keys are dropped without loss.
    fn at_rest(&self, state: &Self::State, now: Nanos) -> bool;

    /// The policy to advertise.
    fn quota(&self) -> Quota;
}
