//! The configuration of cache-penetration protection on routes (docs/caching.md).

use schemars::JsonSchema;
use serde::Deserialize;

/// An existence filter: requests whose key is certainly not among the known keys are
/// answered 404 at once, without reaching the upstream.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExistenceFilter {
    /// Where the key comes from: `path:PARAM`, `query:NAME` or `header:NAME`.
    pub key: String,
    /// The keys expected (sizes the filter). Default 1000000.
    #[serde(default = "default_expected")]
    pub expected_keys: u64,
    /// The false-positive rate wanted: the share of absent keys let through. Default 1%.
    #[serde(default = "default_rate")]
    pub false_positive_rate: crate::value::Percent,
    /// The known keys: a URL answering a JSON array of strings (or numbers), or one key per
    /// line. Until it has been read once, nothing is filtered.
    pub source: String,
    /// How often the source is read again. Default 5m.
    #[serde(default = "default_refresh")]
    pub refresh: crate::value::Duration,
    /// Add the key of every successful response (and the last segment of a 201's
    /// `Location`) to the filter, for keys created since the source was read. Default true.
    #[serde(default = "default_true")]
    pub learn: bool,
}

fn default_expected() -> u64 {
    1_000_000
}
fn default_rate() -> crate::value::Percent {
    crate::value::Percent(0.01)
}
fn default_refresh() -> crate::value::Duration {
    crate::value::Duration(std::time::Duration::from_secs(300))
}
fn default_true() -> bool {
    true
}

/// The shared HTTP cache's storage, for all routes that cache.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheStorage {
    /// The bytes the memory tier may hold (bodies, headers and keys); the least useful
    /// entries go first when it is full. Default 256MiB.
    #[serde(default = "default_memory")]
    pub memory: crate::value::ByteSize,
    /// The largest response stored. Larger ones stream through and are not kept.
    /// Default 8MiB.
    #[serde(default = "default_max_object")]
    pub max_object_size: crate::value::ByteSize,
    /// Also keep responses in the cluster's Redis, shared by every node: a node that
    /// misses in memory finds what another node fetched. Needs `cluster`. Default false.
    #[serde(default)]
    pub shared: bool,
}

impl Default for CacheStorage {
    fn default() -> Self {
        CacheStorage {
            memory: default_memory(),
            max_object_size: default_max_object(),
            shared: false,
        }
    }
}

fn default_memory() -> crate::value::ByteSize {
    crate::value::ByteSize(256 << 20)
}
fn default_max_object() -> crate::value::ByteSize {
    crate::value::ByteSize(8 << 20)
}

/// HTTP caching on a route (RFC 9111 as a shared cache), with the cures for cache
/// breakdown and avalanche (docs/caching.md).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteCache {
    /// Freshness for responses that say nothing about it (no `max-age`, `s-maxage` or
    /// `Expires`). Default: none, only what RFC 9111's heuristic allows.
    #[serde(default)]
    pub default_ttl: Option<crate::value::Duration>,
    /// Freshness that replaces whatever the upstream says (`max-age`, `Expires`,
    /// `no-cache`). `private`, `no-store` and `Set-Cookie` still keep a response out.
    /// Default: none.
    #[serde(default)]
    pub force_ttl: Option<crate::value::Duration>,
    /// Statuses cached as "does not exist", with `negative_ttl`. Default [404, 410].
    #[serde(default = "default_negative_statuses")]
    pub negative_statuses: Vec<u16>,
    /// How long a negative answer is fresh (`no-store` and `private` still keep it out).
    /// Default 10s.
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl: crate::value::Duration,
    /// Every stored freshness lifetime is shortened at random by up to this share, so
    /// entries stored together do not expire together. Default 10%.
    #[serde(default = "default_jitter")]
    pub jitter: crate::value::Percent,
    /// Serve a stale response at once and refresh it in the background, for up to this
    /// long after it went stale, when the upstream sets no `stale-while-revalidate`.
    /// Default 0s.
    #[serde(default = "zero")]
    pub stale_while_revalidate: crate::value::Duration,
    /// Serve a stale response when the upstream fails (5xx, unreachable, timeout, its
    /// circuit breaker open), for up to this long after it went stale, when the upstream
    /// sets no `stale-if-error`. Default 0s.
    #[serde(default = "zero")]
    pub stale_if_error: crate::value::Duration,
    /// Disregard clients' `no-cache`, `max-age` and `Pragma: no-cache`, so they cannot
    /// force trips to the upstream. Default false.
    #[serde(default)]
    pub ignore_client_no_cache: bool,
    /// While one request fetches a key, others for it wait for its response instead of
    /// going upstream too (request coalescing). Default true.
    #[serde(default = "default_true")]
    pub coalesce: bool,
    /// The longest a coalesced request waits before going upstream itself. Default 10s.
    #[serde(default = "default_coalesce_timeout")]
    pub coalesce_timeout: crate::value::Duration,
    /// Early probabilistic refresh (XFetch): a fresh hit near its expiry refreshes the
    /// entry in the background with a probability that grows as expiry nears. The
    /// factor β (1.0 is the usual value; larger refreshes earlier); 0 turns it off.
    /// Default 0.
    #[serde(default)]
    pub early_refresh: f64,
    /// Rate limits on each client's cache misses (requests that reach the upstream),
    /// checked in order, in the same form as `rate_limits`. Default: none.
    #[serde(default)]
    pub miss_rate_limits: Vec<crate::ratelimit::RateLimit>,
}

fn default_negative_statuses() -> Vec<u16> {
    vec![404, 410]
}
fn default_negative_ttl() -> crate::value::Duration {
    crate::value::Duration(std::time::Duration::from_secs(10))
}
fn default_jitter() -> crate::value::Percent {
    crate::value::Percent(0.1)
}
fn zero() -> crate::value::Duration {
    crate::value::Duration(std::time::Duration::ZERO)
}
fn default_coalesce_timeout() -> crate::value::Duration {
    crate::value::Duration(std::time::Duration::from_secs(10))
}

/// Idempotency keys on a route (draft-ietf-httpapi-idempotency-key-header): a request with
/// an `Idempotency-Key` has its response kept, and a repeat with the same key gets that
/// response again instead of reaching the upstream a second time (docs/caching.md).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Idempotency {
    /// The methods keys apply to. Default [POST, PATCH].
    #[serde(default = "default_idempotent_methods")]
    pub methods: Vec<String>,
    /// Answer 400 to a request of those methods without a key. Default false.
    #[serde(default)]
    pub required: bool,
    /// How long a key and its response are kept. Default 24h.
    #[serde(default = "default_idempotency_ttl")]
    pub ttl: crate::value::Duration,
    /// The bytes the route's kept responses may take (bodies, fields and keys); the oldest
    /// go first when full. Default 16MiB.
    #[serde(default = "default_idempotency_memory")]
    pub memory: crate::value::ByteSize,
    /// The largest request body accepted with a key: the body is read whole to tell a
    /// repeat from a different request under the same key (413 beyond). Default 1MiB.
    #[serde(default = "default_idempotency_body")]
    pub max_body_size: crate::value::ByteSize,
    /// The largest response kept. A repeat of a request whose response was larger is
    /// refused (409), not sent upstream again. Default 1MiB.
    #[serde(default = "default_idempotency_body")]
    pub max_response_size: crate::value::ByteSize,
    /// Keep keys and responses in the cluster's Redis, so a retry that reaches another
    /// node is still a repeat (`memory` then serves only while Redis is unreachable).
    /// Needs `cluster`. Default false.
    #[serde(default)]
    pub shared: bool,
}

fn default_idempotent_methods() -> Vec<String> {
    vec!["POST".into(), "PATCH".into()]
}
fn default_idempotency_ttl() -> crate::value::Duration {
    crate::value::Duration(std::time::Duration::from_secs(24 * 3600))
}
fn default_idempotency_memory() -> crate::value::ByteSize {
    crate::value::ByteSize(16 << 20)
}
fn default_idempotency_body() -> crate::value::ByteSize {
    crate::value::ByteSize(1 << 20)
}
