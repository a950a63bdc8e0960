//! The gateway's Prometheus metrics: one registry for the process. The gateway's own
//! families (requests and their duration by route, connections by listener, reloads, the
//! access log) are here; each policy's families are in its own module, registered here
//! once each. A route's series are looked up when a snapshot is built, so the request path
//! only touches atomics (and the histogram's own lock), never the family maps.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::admission::BulkheadFamilies;
use crate::auth::AuthMetrics;
use crate::breaker::BreakerFamilies;
use crate::cache::CacheFamilies;
use crate::fallback::FallbackMetrics;
use crate::fault::FaultMetrics;
use crate::idempotency::IdempotencyFamilies;
use crate::ratelimit::LimitFamilies;
use crate::ratelimit::cluster::ClusterMetrics;
use crate::upstream::metrics::UpstreamMetrics;
use crate::waf::WafMetrics;

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
struct ListenerLabel {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabel {
    listener: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
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
    open_connections: Family<ListenerLabel, Gauge>,
    connections: Family<ListenerLabel, Counter>,
    refused: Family<RefusedLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    config_ok: Gauge,
    access_log_dropped: Counter,
    /// Upstreams and their targets.
    pub upstreams: UpstreamMetrics,
    /// Rate limits.
    pub limits: LimitFamilies,
    /// Bulkheads and load shedding.
    pub bulkheads: BulkheadFamilies,
    /// Circuit breakers.
    pub breakers: BreakerFamilies,
    /// Fallback responses.
    pub fallbacks: FallbackMetrics,
    /// Injected faults.
    pub faults: FaultMetrics,
    /// WebSocket tunnels.
    pub websocket: crate::websocket::WebSocketMetrics,
    /// Authentication refusals.
    pub auth: AuthMetrics,
    /// WAF matches.
    pub waf: WafMetrics,
    /// The HTTP cache.
    pub cache: CacheFamilies,
    /// Idempotency keys.
    pub idempotency: IdempotencyFamilies,
    /// Redis and the cluster (exported by [`Metrics::register_cluster`]).
    pub cluster: Arc<ClusterMetrics>,
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
        let open_connections = Family::<ListenerLabel, Gauge>::default();
        let connections = Family::<ListenerLabel, Counter>::default();
        let refused = Family::<RefusedLabel, Counter>::default();
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
            "requests_refused",
            "Request heads refused before a request existed (malformed, ambiguous framing, too large, too slow), by listener and problem code",
            refused.clone(),
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
        config_ok.set(1);
        // Each policy's own families, in the order a request meets them.
        let upstreams = UpstreamMetrics::register(reg);
        let auth = AuthMetrics::register(reg);
        let waf = WafMetrics::register(reg);
        let limits = LimitFamilies::register(reg);
        let cache = CacheFamilies::register(reg);
        let idempotency = IdempotencyFamilies::register(reg);
        let bulkheads = BulkheadFamilies::register(reg);
        let breakers = BreakerFamilies::register(reg);
        let faults = FaultMetrics::register(reg);
        let fallbacks = FallbackMetrics::register(reg);
        let websocket = crate::websocket::WebSocketMetrics::register(reg);
        Metrics {
            registry: Mutex::new(root),
            requests,
            latency,
            open_connections,
            connections,
            refused,
            reloads,
            config_ok,
            access_log_dropped,
            upstreams,
            limits,
            bulkheads,
            breakers,
            fallbacks,
            faults,
            websocket,
            auth,
            waf,
            cache,
            idempotency,
            cluster: Arc::default(),
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

    /// Counts a request head refused on `listener` with the problem `code`.
    pub fn refused(&self, listener: &str, code: &'static str) {
        self.refused
            .get_or_create(&RefusedLabel {
                listener: listener.to_owned(),
                code,
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
        self.cluster.register(reg);
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
