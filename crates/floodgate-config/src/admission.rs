//! Bulkheads: how many requests a route or upstream may have in flight (a fixed number or
//! an adaptive, latency-driven limit) and how many may wait for a place.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::value::{Duration, Percent};

/// A bulkhead: how many requests may be in flight, and how many may wait for a place.
/// Exactly one of `max_in_flight` and `adaptive`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// A fixed limit.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// A limit that follows measured latency (gradient).
    #[serde(default)]
    pub adaptive: Option<Adaptive>,
    /// Requests that may wait for a place; more are refused at once (503). Default 0.
    #[serde(default)]
    pub queue: u32,
    /// Longest wait for a place; then 503. Default 1s.
    #[serde(default = "default_queue_timeout")]
    pub queue_timeout: Duration,
}

/// The gradient adaptive concurrency limit (docs/rate-limiting.md).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Adaptive {
    /// Limit at start. Default 20.
    #[serde(default = "default_adaptive_initial")]
    pub initial_limit: u32,
    /// Never below. Default 1.
    #[serde(default = "default_adaptive_min")]
    pub min_limit: u32,
    /// Never above. Default 1000.
    #[serde(default = "default_adaptive_max")]
    pub max_limit: u32,
    /// Latency is averaged over windows this long. Default 100ms.
    #[serde(default = "default_adaptive_window")]
    pub window: Duration,
    /// Latency over the minimum still tolerated. Default 50%.
    #[serde(default = "default_adaptive_tolerance")]
    pub tolerance: Percent,
    /// How often the minimum latency is measured afresh. Default 30s.
    #[serde(default = "default_adaptive_refresh")]
    pub min_rtt_refresh: Duration,
}

fn default_adaptive_initial() -> u32 {
    20
}
fn default_adaptive_max() -> u32 {
    1000
}
fn default_adaptive_min() -> u32 {
    1
}
fn default_adaptive_refresh() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}
fn default_adaptive_tolerance() -> Percent {
    Percent(0.5)
}
fn default_adaptive_window() -> Duration {
    Duration(std::time::Duration::from_millis(100))
}
fn default_queue_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(1))
}
