//! The upstreams' metric families: responses, latency and connection reuse per target,
//! failed exchanges, retries and the budget's refusals per upstream, ejections and active
//! health per target. Each target's series are resolved once when its set is built.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

fn new_histogram() -> Histogram {
    // 0.5 ms to ~65 s in doublings, as the routes' request durations.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// The upstreams' families.
pub struct UpstreamMetrics {
    errors: Family<UpstreamError, Counter>,
    retries: Family<UpstreamError, Counter>,
    retry_budget_exhausted: Family<UpstreamLabel, Counter>,
    ejections: Family<TargetLabel, Counter>,
    healthy: Family<TargetLabel, Gauge>,
    responses: Family<TargetClass, Counter>,
    latency: Family<TargetLabel, Histogram, fn() -> Histogram>,
    exchanges: Family<TargetReuse, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamError {
    upstream: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
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

impl UpstreamMetrics {
    /// Registers the families.
    pub(crate) fn register(reg: &mut Registry) -> Self {
        let m = UpstreamMetrics {
            errors: Family::default(),
            retries: Family::default(),
            retry_budget_exhausted: Family::default(),
            ejections: Family::default(),
            healthy: Family::default(),
            responses: Family::default(),
            latency: Family::new_with_constructor(new_histogram),
            exchanges: Family::default(),
        };
        reg.register(
            "upstream_errors",
            "Failed upstream exchanges, by upstream and kind",
            m.errors.clone(),
        );
        reg.register(
            "upstream_responses",
            "Response heads received from targets, by upstream, target and status class",
            m.responses.clone(),
        );
        reg.register(
            "upstream_response_duration_seconds",
            "Time from sending a try to its response head, by upstream and target",
            m.latency.clone(),
        );
        reg.register(
            "upstream_exchanges",
            "Exchanges with targets, by connection: `reused` (from the pool) or `new`",
            m.exchanges.clone(),
        );
        reg.register(
            "upstream_ejections",
            "Targets taken out of balancing by outlier detection",
            m.ejections.clone(),
        );
        reg.register(
            "upstream_target_healthy",
            "1 while a target passes its active health checks, 0 while it fails them",
            m.healthy.clone(),
        );
        reg.register(
            "upstream_retries",
            "Retries of failed tries, by upstream and what failed (kind)",
            m.retries.clone(),
        );
        reg.register(
            "upstream_retry_budget_exhausted",
            "Retries not made because the upstream's retry budget was spent",
            m.retry_budget_exhausted.clone(),
        );
        m
    }

    /// Counts a failed upstream exchange.
    pub fn error(&self, upstream: &str, kind: &'static str) {
        self.errors
            .get_or_create(&UpstreamError {
                upstream: upstream.to_owned(),
                kind,
            })
            .inc();
    }

    /// Counts a retry.
    pub fn retry(&self, upstream: &str, kind: &'static str) {
        self.retries
            .get_or_create(&UpstreamError {
                upstream: upstream.to_owned(),
                kind,
            })
            .inc();
    }

    /// Counts a retry the budget refused.
    pub fn retry_budget_exhausted(&self, upstream: &str) {
        self.retry_budget_exhausted
            .get_or_create(&UpstreamLabel {
                upstream: upstream.to_owned(),
            })
            .inc();
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
    pub fn healthy(&self, upstream: &str, target: &str) -> Gauge {
        self.healthy
            .get_or_create(&TargetLabel {
                upstream: upstream.to_owned(),
                target: target.to_owned(),
            })
            .clone()
    }

    /// The series of one target.
    pub fn target(&self, upstream: &str, target: &str) -> TargetMetrics {
        let class = |c: &'static str| {
            self.responses
                .get_or_create(&TargetClass {
                    upstream: upstream.to_owned(),
                    target: target.to_owned(),
                    class: c,
                })
                .clone()
        };
        let exchanges = |connection: &'static str| {
            self.exchanges
                .get_or_create(&TargetReuse {
                    upstream: upstream.to_owned(),
                    target: target.to_owned(),
                    connection,
                })
                .clone()
        };
        TargetMetrics {
            by_class: [class("2xx"), class("3xx"), class("4xx"), class("5xx")],
            family: self.responses.clone(),
            label: (upstream.to_owned(), target.to_owned()),
            latency: self
                .latency
                .get_or_create(&TargetLabel {
                    upstream: upstream.to_owned(),
                    target: target.to_owned(),
                })
                .clone(),
            reused: exchanges("reused"),
            fresh: exchanges("new"),
        }
    }
}
