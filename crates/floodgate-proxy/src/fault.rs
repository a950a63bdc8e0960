//! Fault injection for drills: a route may delay some requests and answer others with an
//! error instead of sending them upstream, each in a configured share of requests, and
//! optionally only for requests that carry a given header. Faults act inside the route's
//! circuit breaker, so an injected error or delay trips it as a real one would.

use std::time::Duration;

use floodgate_config::resilience::Fault;
use http::{HeaderMap, HeaderName, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// A route's compiled faults.
pub struct FaultPlan {
    delay: Option<(Duration, f64)>,
    abort: Option<(StatusCode, f64)>,
    header: Option<HeaderName>,
    /// Injected delays.
    pub delays: Counter,
    /// Injected errors.
    pub aborts: Counter,
}

/// The faults drawn for one request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Injected {
    /// Wait this long first.
    pub delay: Option<Duration>,
    /// Then answer this status.
    pub abort: Option<StatusCode>,
}

impl FaultPlan {
    /// Compiles validated config, counting into `delays` and `aborts`.
    pub fn compile(f: &Fault, delays: Counter, aborts: Counter) -> Self {
        FaultPlan {
            delays,
            aborts,
            delay: f.delay.as_ref().map(|d| (d.duration.0, d.share.0)),
            abort: f
                .abort
                .as_ref()
                .and_then(|a| Some((StatusCode::from_u16(a.status).ok()?, a.share.0))),
            header: f
                .header
                .as_ref()
                .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
        }
    }

    /// Draws the faults for a request with `headers`.
    pub fn draw(&self, headers: &HeaderMap) -> Injected {
        if self
            .header
            .as_ref()
            .is_some_and(|h| !headers.contains_key(h))
        {
            return Injected::default();
        }
        let hit = |share: f64| share >= 1.0 || fastrand::f64() < share;
        Injected {
            delay: self.delay.filter(|&(_, s)| hit(s)).map(|(d, _)| d),
            abort: self.abort.filter(|&(_, s)| hit(s)).map(|(c, _)| c),
        }
    }
}

/// Fault injection, at admission.
pub(crate) const POLICY: crate::policy::RoutePolicy = crate::policy::RoutePolicy {
    name: "fault injection",
    phase: crate::policy::Phase::Admission,
    describe: |r| {
        let Some(f) = &r.fault else { return Vec::new() };
        let share = |p: f64| (p * 1000.0).round() / 10.0;
        let mut parts = Vec::new();
        if let Some(d) = &f.delay {
            parts.push(format!("delay {} for {}%", d.duration, share(d.share.0)));
        }
        if let Some(a) = &f.abort {
            parts.push(format!("abort {} for {}%", a.status, share(a.share.0)));
        }
        let gate = f
            .header
            .as_ref()
            .map(|h| format!(" of requests with {h}"))
            .unwrap_or_default();
        vec![format!("fault injection: {}{gate}", parts.join(", "))]
    },
};

/// Fault injection's metric family: faults injected, by route and kind.
pub struct FaultMetrics {
    injected: Family<RouteKind, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteKind {
    route: String,
    kind: &'static str,
}

impl FaultMetrics {
    /// Registers the family.
    pub(crate) fn register(reg: &mut Registry) -> Self {
        let m = FaultMetrics {
            injected: Family::default(),
        };
        reg.register(
            "faults_injected",
            "Faults injected, by route and kind (delay, abort)",
            m.injected.clone(),
        );
        m
    }

    /// The counter of injected faults (`delay` or `abort`) on `route`.
    pub fn counter(&self, route: &str, kind: &'static str) -> Counter {
        self.injected
            .get_or_create(&RouteKind {
                route: route.to_owned(),
                kind,
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodgate_config::resilience::{FaultAbort, FaultDelay};
    use floodgate_config::value::{Duration as D, Percent};

    fn plan(share: f64, header: Option<&str>) -> FaultPlan {
        FaultPlan::compile(
            &Fault {
                delay: Some(FaultDelay {
                    duration: D(Duration::from_millis(5)),
                    share: Percent(1.0),
                }),
                abort: Some(FaultAbort {
                    status: 503,
                    share: Percent(share),
                }),
                header: header.map(String::from),
            },
            Counter::default(),
            Counter::default(),
        )
    }

    #[test]
    fn shares_and_header_gate() {
        let all = plan(1.0, None).draw(&HeaderMap::new());
        assert_eq!(all.abort, Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(all.delay, Some(Duration::from_millis(5)));
        assert_eq!(plan(0.0, None).draw(&HeaderMap::new()).abort, None);
        let gated = plan(1.0, Some("x-drill"));
        assert_eq!(gated.draw(&HeaderMap::new()), Injected::default());
        let mut h = HeaderMap::new();
        h.insert("x-drill", "1".parse().unwrap());
        assert!(gated.draw(&h).abort.is_some());
        // About half of 2000 requests at 50%.
        let half = plan(0.5, None);
        let n = (0..2000)
            .filter(|_| half.draw(&HeaderMap::new()).abort.is_some())
            .count();
        assert!((850..1150).contains(&n), "{n}");
    }
}
