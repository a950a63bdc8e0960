//! The configuration of the protections against failing services (docs/circuit-breaking.md):
//! circuit breakers, fallbacks, fault injection and load-shedding criticality. Part of the
//! file's shape like [`crate::model`]; kept apart because these sections belong together.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::value::{Duration, Percent};

/// A circuit breaker. On an upstream (`scope: upstream` or `target`) or a route
/// (`scope: route` or `key`). At least one trip rule: `consecutive_failures`,
/// `failure_rate` or `slow_call_rate`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    /// What one breaker covers: `upstream` (all its targets) or `target` (one breaker per
    /// target; an open target is skipped by balancing) on an upstream; `route` or `key`
    /// (one breaker per value of `key`) on a route. Default `upstream` / `route`.
    #[serde(default)]
    pub scope: Option<BreakerScope>,
    /// `scope: key` only: the parts of the key, as a rate limit's `key` (`path:PARAM`,
    /// `header:NAME`, `query:NAME`, `client_ip`, `method`, `consumer`).
    #[serde(default)]
    pub key: Vec<String>,
    /// `scope: key` only: breakers held at most; over it, closed ones are forgotten first.
    /// Default 10000.
    #[serde(default)]
    pub max_keys: Option<usize>,
    /// Trip after this many failures in a row.
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    /// Trip when failures are at least this share of the calls in `window`.
    #[serde(default)]
    pub failure_rate: Option<Percent>,
    /// Trip when slow calls (taking at least `slow_call`) are at least this share of the
    /// calls in `window`.
    #[serde(default)]
    pub slow_call_rate: Option<Percent>,
    /// A call whose response head takes at least this long is slow. Default 5s.
    #[serde(default = "default_slow_call")]
    pub slow_call: Duration,
    /// The rates are judged only once `window` holds this many calls. Default 20.
    #[serde(default = "default_minimum_calls")]
    pub minimum_calls: u32,
    /// The sliding window of the rates (ten buckets). Default 10s.
    #[serde(default = "default_breaker_window")]
    pub window: Duration,
    /// Open time after a trip. Default 5s.
    #[serde(default = "default_open_for")]
    pub open_for: Duration,
    /// Each trip in a row (a failed half-open) multiplies the open time by this.
    /// Default 2 (1: constant).
    #[serde(default = "default_open_multiplier")]
    pub open_multiplier: f64,
    /// Longest open time. Default 60s.
    #[serde(default = "default_max_open_for")]
    pub max_open_for: Duration,
    /// Probe calls admitted in half-open. Default 3.
    #[serde(default = "default_half_open_calls")]
    pub half_open_calls: u32,
    /// Share of the probes that must succeed to close. Default 100%.
    #[serde(default = "default_close_ratio")]
    pub close_ratio: Percent,
    /// A probe with no result after this long gives its place back to another.
    /// Default 30s.
    #[serde(default = "default_probe_timeout")]
    pub probe_timeout: Duration,
    /// What counts as a failure: `connect_error`, `reset`, `timeout`, statuses (`503`)
    /// and classes (`5xx`). Default `[5xx, connect_error, reset, timeout]`. A client that
    /// goes away counts as neither success nor failure.
    #[serde(default = "default_failure_on")]
    pub failure_on: Vec<String>,
}

/// What one circuit breaker covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerScope {
    /// All of an upstream's targets.
    Upstream,
    /// Each target of an upstream.
    Target,
    /// A route.
    Route,
    /// Each key value of a route.
    Key,
}

/// What a route answers instead of an error (downgrading).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    /// The conditions that use the fallback: `breaker_open`, `upstream_error` (connect
    /// error, broken exchange, no target), `timeout`, `bulkhead_full`, `rate_limited`,
    /// `shed`. Default `[breaker_open]`. (Not `on`: YAML reads a bare `on` as `true`.)
    #[serde(default = "default_fallback_when")]
    pub when: Vec<FallbackTrigger>,
    /// A fixed response. Exactly one of `response` and `upstream`.
    #[serde(default)]
    pub response: Option<StaticResponse>,
    /// Another upstream to send the request to. After an upstream error or timeout only a
    /// request without a body (or one held for retries) can be sent again; others get the
    /// error.
    #[serde(default)]
    pub upstream: Option<String>,
}

/// A condition that can trigger a fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FallbackTrigger {
    /// A circuit breaker refused the call.
    BreakerOpen,
    /// The upstream could not be reached or broke the exchange.
    UpstreamError,
    /// The upstream did not answer in time.
    Timeout,
    /// A bulkhead had no place.
    BulkheadFull,
    /// A rate limit refused the request.
    RateLimited,
    /// Load shedding refused the request.
    Shed,
}

impl FallbackTrigger {
    /// The name in metrics and the `Floodgate-Fallback` header.
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackTrigger::BreakerOpen => "breaker_open",
            FallbackTrigger::UpstreamError => "upstream_error",
            FallbackTrigger::Timeout => "timeout",
            FallbackTrigger::BulkheadFull => "bulkhead_full",
            FallbackTrigger::RateLimited => "rate_limited",
            FallbackTrigger::Shed => "shed",
        }
    }
}

/// A fixed response.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StaticResponse {
    /// Its status. Default 200.
    #[serde(default = "default_static_status")]
    pub status: u16,
    /// Its headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A text body (`Content-Type: text/plain` unless set in `headers`). At most one of
    /// `body` and `json`.
    #[serde(default)]
    pub body: Option<String>,
    /// A JSON body (`Content-Type: application/json`).
    #[serde(default)]
    pub json: Option<serde_json::Value>,
}

/// Faults injected into a route's requests, for drills and tests.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Delay requests before they are sent upstream.
    #[serde(default)]
    pub delay: Option<FaultDelay>,
    /// Answer requests with an error instead of sending them upstream.
    #[serde(default)]
    pub abort: Option<FaultAbort>,
    /// Only requests carrying this header are faulted. Default: all requests (in the
    /// given shares).
    #[serde(default)]
    pub header: Option<String>,
}

/// An injected delay.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultDelay {
    /// How long.
    pub duration: Duration,
    /// Share of requests delayed. Default 100%.
    #[serde(default = "default_fault_share")]
    pub share: Percent,
}

/// An injected error.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    /// The status answered (400 to 599).
    pub status: u16,
    /// Share of requests aborted. Default 100%.
    #[serde(default = "default_fault_share")]
    pub share: Percent,
}

/// How much a route's requests matter when the gateway is overloaded: when a bulkhead is
/// full, `sheddable` requests are refused at once, and a waiting place goes to the most
/// critical request first (a more critical arrival pushes out the least critical waiter).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Criticality {
    /// Never waits for a place.
    Sheddable,
    /// The default.
    #[default]
    Normal,
    /// Served before `normal`.
    High,
    /// Served first.
    Critical,
}

impl Criticality {
    /// The name in metrics and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Criticality::Sheddable => "sheddable",
            Criticality::Normal => "normal",
            Criticality::High => "high",
            Criticality::Critical => "critical",
        }
    }

    /// Parses a header value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "sheddable" => Criticality::Sheddable,
            "normal" => Criticality::Normal,
            "high" => Criticality::High,
            "critical" => Criticality::Critical,
            _ => return None,
        })
    }
}

/// Keyed breakers held at most when `max_keys` is not given.
pub const DEFAULT_BREAKER_KEYS: usize = 10_000;

fn default_slow_call() -> Duration {
    Duration(std::time::Duration::from_secs(5))
}
fn default_minimum_calls() -> u32 {
    20
}
fn default_breaker_window() -> Duration {
    Duration(std::time::Duration::from_secs(10))
}
fn default_open_for() -> Duration {
    Duration(std::time::Duration::from_secs(5))
}
fn default_open_multiplier() -> f64 {
    2.0
}
fn default_max_open_for() -> Duration {
    Duration(std::time::Duration::from_secs(60))
}
fn default_half_open_calls() -> u32 {
    3
}
fn default_close_ratio() -> Percent {
    Percent(1.0)
}
fn default_probe_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}
fn default_failure_on() -> Vec<String> {
    ["5xx", "connect_error", "reset", "timeout"]
        .map(String::from)
        .to_vec()
}
fn default_fallback_when() -> Vec<FallbackTrigger> {
    vec![FallbackTrigger::BreakerOpen]
}
fn default_static_status() -> u16 {
    200
}
fn default_fault_share() -> Percent {
    Percent(1.0)
}
