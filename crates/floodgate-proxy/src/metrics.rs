//! The gateway's Prometheus metrics. Families live in one registry for the process; each
//! route's series are looked up once when a snapshot is built, so the request path only
//! touches atomics (and the histogram's own lock), never the family maps.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteClass {
    route: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamError {
    upstream: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    upstream: String,
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetClass {
    upstream: String,
    target: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetReuse {
    upstream: String,
    target: String,
    connection: &'static str,
}

/// One target's series, resolved once per snapshot.
#[derive(Clone)]
pub struct TargetMetrics {
    /// 2xx to 5xx, made ahead; an informational status (which hyper hands on only for an
    /// upgrade) finds its series on the rare occasion it comes.
    by_class: [Counter; 4],
    family: Family<TargetClass, Counter>,
    label: (String, String),
    latency: Histogram,
    reused: Counter,
    fresh: Counter,
}

impl TargetMetrics {
    /// Counts one try that got a response head after `seconds`, on a pooled (`reused`) or
    /// new connection.
    pub fn response(&self, status: u16, seconds: f64, reused: bool) {
        match usize::from(status / 100).clamp(1, 5) {
            1 => {
                self.family
                    .get_or_create(&TargetClass {
                        upstream: self.label.0.clone(),
                        target: self.label.1.clone(),
                        class: "1xx",
                    })
                    .inc();
            }
            c => {
                self.by_class[c - 2].inc();
            }
        }
        self.latency.observe(seconds);
        if reused {
            self.reused.inc();
        } else {
            self.fresh.inc();
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitOutcome {
    route: String,
    limit: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    route: String,
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BulkheadLabel {
    /// `route` or `upstream`.
    scope: &'static str,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabel {
    /// `upstream`, `target`, `route` or `key`.
    scope: &'static str,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerTransition {
    scope: &'static str,
    name: String,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteKind {
    route: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabel {
    scope: &'static str,
    name: String,
    criticality: &'static str,
}

/// One circuit breaker's series (for a keyed breaker, shared by all its keys).
#[derive(Clone)]
pub struct BreakerMetrics {
    /// 0 closed, 1 open, 2 half-open (single breakers; keyed ones count open keys).
    pub state: Gauge,
    /// Transitions into closed, open and half-open.
    pub to: [Counter; 3],
    /// Calls refused while open or with every probe out.
    pub rejected: Counter,
}

/// The resilience families: breakers, fallbacks, injected faults, load shedding.
struct Resilience {
    breaker_state: Family<BreakerLabel, Gauge>,
    breaker_transitions: Family<BreakerTransition, Counter>,
    breaker_rejected: Family<BreakerLabel, Counter>,
    fallbacks: Family<RouteKind, Counter>,
    faults: Family<RouteKind, Counter>,
    shed: Family<ShedLabel, Counter>,
    queued: Family<BulkheadLabel, Gauge>,
    waf: Family<WafLabel, Counter>,
    auth_refusals: Family<AuthRefusal, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthRefusal {
    route: String,
    method: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WafLabel {
    route: String,
    rule: &'static str,
    mode: &'static str,
}

impl Resilience {
    fn register(reg: &mut Registry) -> Self {
        let r = Resilience {
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
            breaker_rejected: Family::default(),
            fallbacks: Family::default(),
            faults: Family::default(),
            shed: Family::default(),
            queued: Family::default(),
            waf: Family::default(),
            auth_refusals: Family::default(),
        };
        reg.register(
            "auth_refusals",
            "Requests a route's auth refused, by method (api_key, basic, jwt, introspection, \
             client_certificate, none, or authorization for a 403) and reason",
            r.auth_refusals.clone(),
        );
        reg.register(
            "waf_matches",
            "Requests a route's WAF matched, by rule set and mode (block, monitor)",
            r.waf.clone(),
        );
        reg.register(
            "circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open (scope `key`: keys not closed)",
            r.breaker_state.clone(),
        );
        reg.register(
            "circuit_breaker_transitions",
            "Circuit breaker state changes, by the state entered",
            r.breaker_transitions.clone(),
        );
        reg.register(
            "circuit_breaker_rejected",
            "Calls a circuit breaker refused",
            r.breaker_rejected.clone(),
        );
        reg.register(
            "fallbacks",
            "Fallback responses, by route and what triggered them (kind)",
            r.fallbacks.clone(),
        );
        reg.register(
            "faults_injected",
            "Faults injected, by route and kind (delay, abort)",
            r.faults.clone(),
        );
        reg.register(
            "concurrency_queued",
            "Requests waiting for a place in a bulkhead",
            r.queued.clone(),
        );
        reg.register(
            "load_shed",
            "Requests refused or pushed out of a bulkhead queue by criticality",
            r.shed.clone(),
        );
        r
    }
}

/// The HTTP cache's families.
struct CacheFamilies {
    lookups: Family<RouteKind, Counter>,
    idempotency: Family<RouteKind, Counter>,
    waiting: Gauge,
    entries: Gauge,
    bytes: Gauge,
}

impl CacheFamilies {
    fn register(reg: &mut Registry) -> Self {
        let c = CacheFamilies {
            lookups: Family::default(),
            idempotency: Family::default(),
            waiting: Gauge::default(),
            entries: Gauge::default(),
            bytes: Gauge::default(),
        };
        reg.register(
            "cache_lookups",
            "Cache lookups by route and result: hit, stale (served stale, refreshed in the \
             background), miss (forwarded), collapsed (served another request's fetch)",
            c.lookups.clone(),
        );
        reg.register(
            "idempotency_requests",
            "Requests with an idempotency key by route and outcome: first (forwarded), \
             replayed (answered with the kept response), in_flight (409: the first is still \
             in progress), mismatch (422: the key was used for another request), not_kept \
             (409: the first response was too large to keep)",
            c.idempotency.clone(),
        );
        reg.register(
            "cache_waiting",
            "Requests waiting for another request's fetch of the same key",
            c.waiting.clone(),
        );
        reg.register(
            "cache_entries",
            "Responses in the memory tier (updated every few seconds)",
            c.entries.clone(),
        );
        reg.register(
            "cache_bytes",
            "Bytes the memory tier holds (updated every few seconds)",
            c.bytes.clone(),
        );
        c
    }
}

/// One route's cache series.
#[derive(Clone, Debug, Default)]
pub struct CacheMetrics {
    /// Fresh hits.
    pub hit: Counter,
    /// Stale responses served while refreshed in the background.
    pub stale: Counter,
    /// Requests forwarded.
    pub miss: Counter,
    /// Requests served another request's fetch.
    pub collapsed: Counter,
    /// Requests waiting for another request's fetch (all routes).
    pub waiting: Gauge,
}

fn new_histogram() -> Histogram {
    // 0.5 ms to ~65 s in doublings.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// All metric families.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RouteClass, Counter>,
    latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    upstream_errors: Family<UpstreamError, Counter>,
    open_connections: Family<ListenerLabel, Gauge>,
    connections: Family<ListenerLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    config_ok: Gauge,
    access_log_dropped: Counter,
    limit_decisions: Family<LimitOutcome, Counter>,
    limit_keys: Family<LimitLabel, Gauge>,
    limit_evicted: Family<LimitLabel, Counter>,
    bulkhead_limit: Family<BulkheadLabel, Gauge>,
    bulkhead_in_flight: Family<BulkheadLabel, Gauge>,
    bulkhead_rejected: Family<BulkheadLabel, Counter>,
    upstream_retries: Family<UpstreamError, Counter>,
    ejections: Family<TargetLabel, Counter>,
    target_requests: Family<TargetClass, Counter>,
    target_latency: Family<TargetLabel, Histogram, fn() -> Histogram>,
    target_exchanges: Family<TargetReuse, Counter>,
    target_healthy: Family<TargetLabel, Gauge>,
    retry_budget_exhausted: Family<UpstreamLabel, Counter>,
    /// Latency of Redis calls.
    pub redis_latency: Histogram,
    /// Redis calls that failed or timed out.
    pub redis_errors: Counter,
    /// Live nodes last counted in the cluster.
    pub cluster_nodes: Gauge,
    resilience: Resilience,
    cache: CacheFamilies,
}

/// One rate limit's series, resolved once per snapshot.
#[derive(Clone)]
pub struct LimitMetrics {
    /// Admitted at once.
    pub allowed: Counter,
    /// Admitted after a wait (a leaky bucket's only: others have no such series).
    pub delayed: Option<Counter>,
    /// Refused with 429 (or 503 when Redis is unavailable and the limit fails closed).
    pub rejected: Counter,
    /// Would have been refused, but the limit is a dry run (a dry run's only).
    pub dry_run_rejected: Option<Counter>,
    /// Keys held now.
    pub keys: Gauge,
    /// Keys forgotten while holding state because the table was full.
    pub evicted: Counter,
}

/// A bulkhead's series.
#[derive(Clone)]
pub struct BulkheadMetrics {
    /// Its current limit.
    pub limit: Gauge,
    /// Requests in flight.
    pub in_flight: Gauge,
    /// Requests refused (queue full or wait timed out).
    pub rejected: Counter,
    /// Requests shed, by criticality (sheddable, normal, high, critical).
    pub shed: [Counter; 4],
    /// Requests waiting for a place.
    pub queued: Gauge,
}

/// A route's series, resolved once per snapshot.
#[derive(Clone)]
pub struct RouteMetrics {
    /// 2xx to 5xx, made ahead; 1xx (a switch of protocols) finds its series when it comes.
    by_class: [Counter; 4],
    family: Family<RouteClass, Counter>,
    route: Arc<str>,
    latency: Histogram,
}

impl RouteMetrics {
    /// Counts one finished request.
    pub fn record(&self, status: u16, seconds: f64) {
        match usize::from(status / 100).clamp(1, 5) {
            1 => {
                self.family
                    .get_or_create(&RouteClass {
                        route: self.route.to_string(),
                        class: "1xx",
                    })
                    .inc();
            }
            c => {
                self.by_class[c - 2].inc();
            }
        }
        self.latency.observe(seconds);
    }
}

/// A listener's connection series.
#[derive(Clone)]
pub struct ListenerMetrics {
    /// Connections open now.
    pub open: Gauge,
    /// Connections accepted.
    pub accepted: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Self {
        // The process's own series have no prefix; Floodgate's carry `floodgate_`.
        let mut root = Registry::default();
        root.register_collector(Box::new(crate::process_metrics::ProcessCollector));
        let build = prometheus_client::metrics::info::Info::new(vec![(
            "version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        )]);
        let reg = root.sub_registry_with_prefix("floodgate");
        reg.register("build", "The running build", build);
        let requests = Family::<RouteClass, Counter>::default();
        let latency =
            Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(new_histogram);
        let upstream_errors = Family::<UpstreamError, Counter>::default();
        let open_connections = Family::<ListenerLabel, Gauge>::default();
        let connections = Family::<ListenerLabel, Counter>::default();
        let reloads = Family::<ResultLabel, Counter>::default();
        let config_ok = Gauge::default();
        let access_log_dropped = Counter::default();
        reg.register(
            "requests",
            "Requests answered, by route and status class",
            requests.clone(),
        );
        reg.register(
            "request_duration_seconds",
            "Time from request head to response end, by route",
            latency.clone(),
        );
        reg.register(
            "upstream_errors",
            "Failed upstream exchanges, by upstream and kind",
            upstream_errors.clone(),
        );
        reg.register(
            "open_connections",
            "Client connections open now, by listener",
            open_connections.clone(),
        );
        reg.register(
            "connections",
            "Client connections accepted, by listener",
            connections.clone(),
        );
        reg.register(
            "config_reloads",
            "Configuration reloads, by result",
            reloads.clone(),
        );
        reg.register(
            "config_last_reload_successful",
            "1 if the last reload attempt succeeded",
            config_ok.clone(),
        );
        reg.register(
            "access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        let limit_decisions = Family::<LimitOutcome, Counter>::default();
        let limit_keys = Family::<LimitLabel, Gauge>::default();
        let limit_evicted = Family::<LimitLabel, Counter>::default();
        let bulkhead_limit = Family::<BulkheadLabel, Gauge>::default();
        let bulkhead_in_flight = Family::<BulkheadLabel, Gauge>::default();
        let bulkhead_rejected = Family::<BulkheadLabel, Counter>::default();
        let upstream_retries = Family::<UpstreamError, Counter>::default();
        let ejections = Family::<TargetLabel, Counter>::default();
        let target_requests = Family::<TargetClass, Counter>::default();
        let target_latency =
            Family::<TargetLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                new_histogram,
            );
        let target_exchanges = Family::<TargetReuse, Counter>::default();
        reg.register(
            "upstream_responses",
            "Response heads received from targets, by upstream, target and status class",
            target_requests.clone(),
        );
        reg.register(
            "upstream_response_duration_seconds",
            "Time from sending a try to its response head, by upstream and target",
            target_latency.clone(),
        );
        reg.register(
            "upstream_exchanges",
            "Exchanges with targets, by connection: `reused` (from the pool) or `new`",
            target_exchanges.clone(),
        );
        let target_healthy = Family::<TargetLabel, Gauge>::default();
        reg.register(
            "upstream_ejections",
            "Targets taken out of balancing by outlier detection",
            ejections.clone(),
        );
        reg.register(
            "upstream_target_healthy",
            "1 while a target passes its active health checks, 0 while it fails them",
            target_healthy.clone(),
        );
        let retry_budget_exhausted = Family::<UpstreamLabel, Counter>::default();
        reg.register(
            "upstream_retries",
            "Retries of failed tries, by upstream and what failed (kind)",
            upstream_retries.clone(),
        );
        reg.register(
            "upstream_retry_budget_exhausted",
            "Retries not made because the upstream's retry budget was spent",
            retry_budget_exhausted.clone(),
        );
        let redis_latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 14));
        let redis_errors = Counter::default();
        let cluster_nodes = Gauge::default();
        reg.register(
            "ratelimit_decisions",
            "Rate-limit decisions, by route, limit and outcome",
            limit_decisions.clone(),
        );
        reg.register(
            "ratelimit_keys",
            "Keys a rate limit holds state for on this node",
            limit_keys.clone(),
        );
        reg.register(
            "ratelimit_keys_evicted",
            "Keys forgotten while holding state because the limit's max_keys was reached",
            limit_evicted.clone(),
        );
        reg.register(
            "concurrency_limit",
            "Current limit of a bulkhead (fixed or adaptive), by scope and name",
            bulkhead_limit.clone(),
        );
        reg.register(
            "concurrency_in_flight",
            "Requests in flight through a bulkhead",
            bulkhead_in_flight.clone(),
        );
        reg.register(
            "concurrency_rejected",
            "Requests refused by a bulkhead (queue full or wait timed out)",
            bulkhead_rejected.clone(),
        );
        config_ok.set(1);
        let resilience = Resilience::register(reg);
        let cache = CacheFamilies::register(reg);
        Metrics {
            resilience,
            cache,
            upstream_retries,
            ejections,
            target_requests,
            target_latency,
            target_exchanges,
            target_healthy,
            retry_budget_exhausted,
            limit_decisions,
            limit_keys,
            limit_evicted,
            bulkhead_limit,
            bulkhead_in_flight,
            bulkhead_rejected,
            redis_latency,
            redis_errors,
            cluster_nodes,
            registry: Mutex::new(root),
            requests,
            latency,
            upstream_errors,
            open_connections,
            connections,
            reloads,
            config_ok,
            access_log_dropped,
        }
    }

    /// The series of one route.
    pub fn route(&self, route: &str) -> RouteMetrics {
        let class = |c: &'static str| {
            self.requests
                .get_or_create(&RouteClass {
                    route: route.to_owned(),
                    class: c,
                })
                .clone()
        };
        RouteMetrics {
            by_class: [class("2xx"), class("3xx"), class("4xx"), class("5xx")],
            family: self.requests.clone(),
            route: Arc::from(route),
            latency: self
                .latency
                .get_or_create(&RouteLabel {
                    route: route.to_owned(),
                })
                .clone(),
        }
    }

    /// The series of one rate limit; `queues` (a leaky bucket) and `dry_run` say which
    /// outcomes it can have, and only those series exist.
    pub fn limit(&self, route: &str, limit: &str, queues: bool, dry_run: bool) -> LimitMetrics {
        let outcome = |outcome: &'static str| {
            self.limit_decisions
                .get_or_create(&LimitOutcome {
                    route: route.to_owned(),
                    limit: limit.to_owned(),
                    outcome,
                })
                .clone()
        };
        let label = LimitLabel {
            route: route.to_owned(),
            limit: limit.to_owned(),
        };
        LimitMetrics {
            allowed: outcome("allowed"),
            delayed: queues.then(|| outcome("delayed")),
            rejected: outcome("rejected"),
            dry_run_rejected: dry_run.then(|| outcome("dry_run_rejected")),
            keys: self.limit_keys.get_or_create(&label).clone(),
            evicted: self.limit_evicted.get_or_create(&label).clone(),
        }
    }

    /// The series of one bulkhead; `scope` is `route` or `upstream`.
    pub fn bulkhead(&self, scope: &'static str, name: &str) -> BulkheadMetrics {
        let label = BulkheadLabel {
            scope,
            name: name.to_owned(),
        };
        BulkheadMetrics {
            limit: self.bulkhead_limit.get_or_create(&label).clone(),
            in_flight: self.bulkhead_in_flight.get_or_create(&label).clone(),
            rejected: self.bulkhead_rejected.get_or_create(&label).clone(),
            queued: self.resilience.queued.get_or_create(&label).clone(),
            shed: ["sheddable", "normal", "high", "critical"].map(|criticality| {
                self.resilience
                    .shed
                    .get_or_create(&ShedLabel {
                        scope,
                        name: name.to_owned(),
                        criticality,
                    })
                    .clone()
            }),
        }
    }

    /// The series of one circuit breaker.
    pub fn breaker(&self, scope: &'static str, name: &str) -> BreakerMetrics {
        let r = &self.resilience;
        let label = BreakerLabel {
            scope,
            name: name.to_owned(),
        };
        let to = |to: &'static str| {
            r.breaker_transitions
                .get_or_create(&BreakerTransition {
                    scope,
                    name: name.to_owned(),
                    to,
                })
                .clone()
        };
        BreakerMetrics {
            state: r.breaker_state.get_or_create(&label).clone(),
            to: [to("closed"), to("open"), to("half_open")],
            rejected: r.breaker_rejected.get_or_create(&label).clone(),
        }
    }

    /// The counter of fallback responses on `route` triggered by `trigger`.
    pub fn fallback(&self, route: &str, trigger: &'static str) -> Counter {
        self.resilience
            .fallbacks
            .get_or_create(&RouteKind {
                route: route.to_owned(),
                kind: trigger,
            })
            .clone()
    }

    /// The counter of injected faults (`delay` or `abort`) on `route`.
    pub fn fault(&self, route: &str, kind: &'static str) -> Counter {
        self.resilience
            .faults
            .get_or_create(&RouteKind {
                route: route.to_owned(),
                kind,
            })
            .clone()
    }

    /// The cache series of `route`.
    pub fn cache(&self, route: &str) -> CacheMetrics {
        let get = |kind| {
            self.cache
                .lookups
                .get_or_create(&RouteKind {
                    route: route.to_owned(),
                    kind,
                })
                .clone()
        };
        CacheMetrics {
            hit: get("hit"),
            stale: get("stale"),
            miss: get("miss"),
            collapsed: get("collapsed"),
            waiting: self.cache.waiting.clone(),
        }
    }

    /// The counter of `route`'s idempotency-key requests with outcome `kind`.
    pub fn idempotency(&self, route: &str, kind: &'static str) -> Counter {
        self.cache
            .idempotency
            .get_or_create(&RouteKind {
                route: route.to_owned(),
                kind,
            })
            .clone()
    }

    /// Records the memory tier's size.
    pub fn cache_usage(&self, entries: u64, bytes: u64) {
        self.cache
            .entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.cache
            .bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Counts a request a route's auth refused.
    pub fn auth_refusal(&self, route: &str, method: &'static str, reason: &'static str) {
        self.resilience
            .auth_refusals
            .get_or_create(&AuthRefusal {
                route: route.to_owned(),
                method,
                reason,
            })
            .inc();
    }

    /// Counts a WAF match.
    pub fn waf_match(&self, route: &str, rule: &'static str, mode: &'static str) {
        self.resilience
            .waf
            .get_or_create(&WafLabel {
                route: route.to_owned(),
                rule,
                mode,
            })
            .inc();
    }

    /// The series of one listener.
    pub fn listener(&self, listener: &str) -> ListenerMetrics {
        let l = ListenerLabel {
            listener: listener.to_owned(),
        };
        ListenerMetrics {
            open: self.open_connections.get_or_create(&l).clone(),
            accepted: self.connections.get_or_create(&l).clone(),
        }
    }

    /// Counts a failed upstream exchange.
    pub fn upstream_error(&self, upstream: &str, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamError {
                upstream: upstream.to_owned(),
                kind,
            })
            .inc();
    }

    /// Counts a retry.
    pub fn upstream_retry(&self, upstream: &str, kind: &'static str) {
        self.upstream_retries
            .get_or_create(&UpstreamError {
                upstream: upstream.to_owned(),
                kind,
            })
            .inc();
    }

    /// The series of one target.
    pub fn target(&self, upstream: &str, target: &str) -> TargetMetrics {
        let class = |c: &'static str| {
            self.target_requests
                .get_or_create(&TargetClass {
                    upstream: upstream.to_owned(),
                    target: target.to_owned(),
                    class: c,
                })
                .clone()
        };
        let exchanges = |connection: &'static str| {
            self.target_exchanges
                .get_or_create(&TargetReuse {
                    upstream: upstream.to_owned(),
                    target: target.to_owned(),
                    connection,
                })
                .clone()
        };
        TargetMetrics {
            by_class: [class("2xx"), class("3xx"), class("4xx"), class("5xx")],
            family: self.target_requests.clone(),
            label: (upstream.to_owned(), target.to_owned()),
            latency: self
                .target_latency
                .get_or_create(&TargetLabel {
                    upstream: upstream.to_owned(),
                    target: target.to_owned(),
                })
                .clone(),
            reused: exchanges("reused"),
            fresh: exchanges("new"),
        }
    }

    /// Counts an ejection.
    pub fn ejection(&self, upstream: &str, target: &str) {
        self.ejections
            .get_or_create(&TargetLabel {
                upstream: upstream.to_owned(),
                target: target.to_owned(),
            })
            .inc();
    }

    /// A target's active health gauge.
    pub fn target_healthy(&self, upstream: &str, target: &str) -> Gauge {
        self.target_healthy
            .get_or_create(&TargetLabel {
                upstream: upstream.to_owned(),
                target: target.to_owned(),
            })
            .clone()
    }

    /// Counts a retry the budget refused.
    pub fn retry_budget_exhausted(&self, upstream: &str) {
        self.retry_budget_exhausted
            .get_or_create(&UpstreamLabel {
                upstream: upstream.to_owned(),
            })
            .inc();
    }

    /// Counts a reload attempt.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&ResultLabel {
                result: if ok { "success" } else { "failure" },
            })
            .inc();
        self.config_ok.set(i64::from(ok));
    }

    /// Counts a dropped access log line.
    pub fn access_log_dropped(&self) {
        self.access_log_dropped.inc();
    }

    /// Exports the cluster's series (Redis latency and errors, live nodes): only a gateway
    /// with a `cluster` section has them, so no others show series that cannot move.
    pub fn register_cluster(&self) {
        let mut root = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let reg = root.sub_registry_with_prefix("floodgate");
        reg.register(
            "redis_duration_seconds",
            "Latency of Redis calls",
            self.redis_latency.clone(),
        );
        reg.register(
            "redis_errors",
            "Redis calls that failed or timed out",
            self.redis_errors.clone(),
        );
        reg.register(
            "cluster_nodes",
            "Live gateway nodes last counted in the cluster",
            self.cluster_nodes.clone(),
        );
    }

    /// Renders everything in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
            out.clear();
        }
        out
    }
}
