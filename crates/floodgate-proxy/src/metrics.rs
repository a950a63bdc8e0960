//! The gateway's Prometheus metrics. Families live in one registry for the process; each
//! route's series are looked up once when a snapshot is built, so the request path only
//! touches atomics (and the histogram's own lock), never the family maps.

use std::sync::Mutex;

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
struct ListenerLabel {
    listener: String,
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
    upstream_errors: Family<UpstreamError, Counter>,
    open_connections: Family<ListenerLabel, Gauge>,
    connections: Family<ListenerLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    config_ok: Gauge,
    access_log_dropped: Counter,
}

/// A route's series, resolved once per snapshot.
#[derive(Clone)]
pub struct RouteMetrics {
    by_class: [Counter; 5],
    latency: Histogram,
}

impl RouteMetrics {
    /// Counts one finished request.
    pub fn record(&self, status: u16, seconds: f64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].inc();
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
        let mut reg = Registry::with_prefix("floodgate");
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
        config_ok.set(1);
        Metrics {
            registry: Mutex::new(reg),
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
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
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

    /// Counts a failed upstream exchange.
    pub fn upstream_error(&self, upstream: &str, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamError {
                upstream: upstream.to_owned(),
                kind,
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
