//! A route's rate limits: the algorithm, its rate and burst, what the key is made of, where
//! the counts live (this node or the fleet) and what to do when the shared store fails.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::value::{Duration, Rate};

/// One rate limit (docs/rate-limiting.md has each algorithm's exact rule).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Name in metrics, logs and the `RateLimit` headers; unique within the route.
    /// Default `limit-N` (N = position in the list).
    #[serde(default)]
    pub name: Option<String>,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Token buckets, GCRA and the leaky bucket: the sustained rate. Windows: the limit
    /// per window (`100/1m` = 100 per minute).
    pub rate: Rate,
    /// Token bucket and GCRA: requests allowed at once (default: the rate's count).
    /// Leaky bucket: requests that may wait in the queue (default 0). Not for windows.
    #[serde(default)]
    pub burst: Option<u64>,
    /// Leaky bucket only: the first `delay` queued requests go at once (their slots are
    /// still used), the rest wait for their turn. Default 0.
    #[serde(default)]
    pub delay: Option<u64>,
    /// Leaky bucket only: no queued request waits (`delay` = `burst`). Default false.
    #[serde(default)]
    pub nodelay: bool,
    /// Leaky bucket only: a request that would wait longer than this is refused.
    #[serde(default)]
    pub max_delay: Option<Duration>,
    /// What is limited separately: a list of parts, joined. `client_ip`, `route`,
    /// `method`, `consumer` (the authenticated consumer; `anonymous` without one),
    /// `header:NAME`, `query:NAME`, `path:PARAM`. A part missing from a request counts as
    /// empty, so such requests share one allowance. Default `[client_ip]`.
    #[serde(default = "default_limit_key")]
    pub key: Vec<String>,
    /// Own limits for particular key values (hot keys). The value is the key's parts
    /// joined with `|`.
    #[serde(default)]
    pub overrides: Vec<LimitOverride>,
    /// Only count and log what would be refused; refuse nothing. Default false.
    #[serde(default)]
    pub dry_run: bool,
    /// `local` (this node's own state) or `cluster` (state in the cluster's Redis, shared
    /// by every node; needs `cluster`). Default `local`.
    #[serde(default)]
    pub scope: Scope,
    /// Cluster scope: what to do when Redis cannot answer in time. `fail_open` limits
    /// locally at the limit divided by the number of live nodes last seen; `fail_closed`
    /// refuses (503). Default `fail_open`.
    #[serde(default)]
    pub on_redis_error: Option<FailMode>,
    /// Keys held at most, per node (local scope, and the local fallback). Over it the
    /// least recently used keys are forgotten. Default 100000.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// Send `RateLimit-Policy` and `RateLimit` on every response, not only on 429.
    /// Default false.
    #[serde(default)]
    pub headers: bool,
}

/// A rate-limiting algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Bucket of `burst` tokens refilled at `rate`.
    TokenBucket,
    /// A queue drained at `rate`: excess requests wait (nginx `limit_req`).
    LeakyBucket,
    /// At most `rate` per window, windows aligned to the clock.
    FixedWindow,
    /// At most `rate` in any window ending now, from a log of request times.
    SlidingLog,
    /// Weighted count of the current and previous windows.
    SlidingWindow,
    /// Generic cell rate algorithm: the token bucket's decisions from one timestamp.
    Gcra,
}

/// Where a limit keeps its state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// In this node.
    #[default]
    Local,
    /// In the cluster's Redis.
    Cluster,
}

/// Behaviour of a cluster limit while Redis is unavailable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Limit locally at the limit ÷ live nodes.
    #[default]
    FailOpen,
    /// Refuse with 503.
    FailClosed,
}

/// A hot-key override.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitOverride {
    /// The key value (parts joined with `|`).
    pub value: String,
    /// Its rate.
    pub rate: Rate,
    /// Its burst (as the limit's `burst`).
    #[serde(default)]
    pub burst: Option<u64>,
}

fn default_limit_key() -> Vec<String> {
    vec!["client_ip".into()]
}
fn default_max_keys() -> usize {
    100_000
}
