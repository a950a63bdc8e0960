//! Fallbacks (downgrading): what a route answers instead of an error, for the conditions
//! it lists. A fixed response is built once per snapshot; an alternate upstream gets the
//! request itself. Every fallback response carries `Floodgate-Fallback: <trigger>`.

use std::sync::Arc;

use bytes::Bytes;
use floodgate_config::resilience::{Fallback, FallbackTrigger};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::problem::Problem;
use crate::upstream::UpstreamSet;

/// The header that marks a fallback response.
pub const HEADER: HeaderName = HeaderName::from_static("floodgate-fallback");

/// What a fallback answers with.
pub enum FallbackAction {
    /// A fixed response.
    Static {
        /// Its status.
        status: StatusCode,
        /// Its headers (with `Content-Type`).
        headers: HeaderMap,
        /// Its body.
        body: Bytes,
    },
    /// The request, sent to another upstream.
    Upstream(Arc<UpstreamSet>),
}

/// A route's compiled fallback.
pub struct FallbackPlan {
    /// The conditions it answers, each with its counter.
    triggers: Vec<(FallbackTrigger, Counter)>,
    /// What to answer.
    pub action: FallbackAction,
}

/// The fallback condition a problem is, if any.
pub fn trigger_of(p: Problem) -> Option<FallbackTrigger> {
    Some(match p {
        Problem::CircuitOpen { .. } => FallbackTrigger::BreakerOpen,
        Problem::UpstreamConnect | Problem::UpstreamBroken | Problem::NoTarget => {
            FallbackTrigger::UpstreamError
        }
        Problem::UpstreamTimeout => FallbackTrigger::Timeout,
        Problem::ConcurrencyLimited => FallbackTrigger::BulkheadFull,
        Problem::RateLimited { .. } => FallbackTrigger::RateLimited,
        Problem::Shed => FallbackTrigger::Shed,
        _ => return None,
    })
}

impl FallbackPlan {
    /// Compiles validated config; `None` if its upstream is unknown.
    pub fn compile(
        f: &Fallback,
        route: &str,
        upstreams: &std::collections::BTreeMap<String, Arc<UpstreamSet>>,
        metrics: &FallbackMetrics,
    ) -> Option<Self> {
        let action = match (&f.response, &f.upstream) {
            (_, Some(u)) => FallbackAction::Upstream(upstreams.get(u)?.clone()),
            (Some(r), None) => {
                let mut headers = HeaderMap::new();
                let (body, content_type) = match (&r.json, &r.body) {
                    (Some(v), _) => (Bytes::from(v.to_string()), "application/json"),
                    (None, Some(text)) => (Bytes::from(text.clone()), "text/plain; charset=utf-8"),
                    (None, None) => (Bytes::new(), "text/plain; charset=utf-8"),
                };
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                for (name, value) in &r.headers {
                    if let (Ok(n), Ok(v)) = (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(value),
                    ) {
                        headers.insert(n, v);
                    }
                }
                FallbackAction::Static {
                    status: StatusCode::from_u16(r.status).ok()?,
                    headers,
                    body,
                }
            }
            (None, None) => return None,
        };
        Some(FallbackPlan {
            triggers: f
                .when
                .iter()
                .map(|&t| (t, metrics.counter(route, t.as_str())))
                .collect(),
            action,
        })
    }

    /// Whether this fallback answers `p`: the trigger, and its counter.
    pub fn covers(&self, p: Problem) -> Option<(FallbackTrigger, &Counter)> {
        let t = trigger_of(p)?;
        self.triggers
            .iter()
            .find(|(c, _)| *c == t)
            .map(|(t, counter)| (*t, counter))
    }
}

/// Fallbacks, in place of a failed answer.
pub(crate) const POLICY: crate::policy::RoutePolicy = crate::policy::RoutePolicy {
    name: "fallback",
    phase: crate::policy::Phase::Response,
    describe: |r| {
        let Some(fb) = &r.fallback else {
            return Vec::new();
        };
        let when: Vec<&str> = fb.when.iter().map(|t| t.as_str()).collect();
        let what = match (&fb.response, &fb.upstream) {
            (_, Some(u)) => format!("upstream {u:?}"),
            (Some(r), None) => format!("a fixed {} response", r.status),
            (None, None) => "nothing".into(),
        };
        vec![format!("fallback: {what} on {}", when.join(", "))]
    },
};

/// Fallbacks' metric family: fallback responses, by route and trigger.
pub struct FallbackMetrics {
    answered: Family<RouteKind, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteKind {
    route: String,
    kind: &'static str,
}

impl FallbackMetrics {
    /// Registers the family.
    pub(crate) fn register(reg: &mut Registry) -> Self {
        let m = FallbackMetrics {
            answered: Family::default(),
        };
        reg.register(
            "fallbacks",
            "Fallback responses, by route and what triggered them (kind)",
            m.answered.clone(),
        );
        m
    }

    /// The counter of fallback responses on `route` triggered by `trigger`.
    pub fn counter(&self, route: &str, trigger: &'static str) -> Counter {
        self.answered
            .get_or_create(&RouteKind {
                route: route.to_owned(),
                kind: trigger,
            })
            .clone()
    }
}
