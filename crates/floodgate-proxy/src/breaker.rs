//! Circuit breakers at the gateway: floodgate-core's [`Breaker`] given a scope (upstream,
//! target, route, or a route's key), a rule for what counts as a failure, metrics, and a
//! log line per state change. Breakers outlive snapshots ([`BreakerRegistry`]), so a
//! reload that keeps a breaker's definition keeps its state.
//!
//! A call is a [`Call`]: reported once with how it ended, or, if dropped unreported (the
//! client went away, or the gateway refused the request for its own reasons), given back
//! without counting as success or failure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use floodgate_config::resilience::{BreakerScope, CircuitBreaker};
use floodgate_core::breaker::{
    Breaker, BreakerConfig, CallResult, Refusal, Snapshot, State, Ticket, Transition,
    keyed::KeyedBreakers,
};
use http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::kept::Kept;
use crate::problem::Problem;
use crate::ratelimit::key::KeyPart;
use crate::ratelimit::now;

/// How a call ended, as far as a breaker is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status.
    Status(StatusCode),
    /// No connection could be made (or no target was available).
    Connect,
    /// The exchange broke.
    Reset,
    /// No response in time.
    Timeout,
}

/// Which outcomes are failures (`failure_on`).
#[derive(Debug, Clone)]
struct FailurePolicy {
    connect: bool,
    reset: bool,
    timeout: bool,
    statuses: Vec<u16>,
    /// Status classes: `5` for `5xx`.
    classes: Vec<u16>,
}

impl FailurePolicy {
    fn new(conditions: &[String]) -> Self {
        let has = |c: &str| conditions.iter().any(|o| o == c);
        FailurePolicy {
            connect: has("connect_error"),
            reset: has("reset"),
            timeout: has("timeout"),
            statuses: conditions.iter().filter_map(|o| o.parse().ok()).collect(),
            classes: conditions
                .iter()
                .filter_map(|o| o.strip_suffix("xx")?.parse().ok())
                .collect(),
        }
    }

    fn is_failure(&self, o: Outcome) -> bool {
        match o {
            Outcome::Connect => self.connect,
            Outcome::Reset => self.reset,
            Outcome::Timeout => self.timeout,
            Outcome::Status(s) => {
                let s = s.as_u16();
                self.statuses.contains(&s) || self.classes.contains(&(s / 100))
            }
        }
    }
}

enum Kind {
    Single(Arc<Breaker>),
    Keyed {
        breakers: Box<KeyedBreakers>,
        parts: Vec<KeyPart>,
    },
}

/// A breaker (or a table of keyed breakers) with its scope and failure rule.
pub struct ScopedBreaker {
    /// `upstream`, `target`, `route` or `key`.
    pub scope: &'static str,
    /// What it covers: an upstream, `upstream/target`, or a route.
    pub name: Arc<str>,
    kind: Kind,
    policy: FailurePolicy,
    metrics: BreakerMetrics,
}

/// The core configuration of a breaker from config.
pub fn core_config(c: &CircuitBreaker) -> BreakerConfig {
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    BreakerConfig {
        consecutive_failures: c.consecutive_failures,
        failure_rate: c.failure_rate.map(|p| p.0),
        slow_call_rate: c.slow_call_rate.map(|p| p.0),
        slow_call: nanos(c.slow_call.0),
        minimum_calls: c.minimum_calls,
        window: nanos(c.window.0),
        open_for: nanos(c.open_for.0),
        multiplier: c.open_multiplier,
        max_open_for: nanos(c.max_open_for.0),
        half_open_calls: c.half_open_calls,
        close_ratio: c.close_ratio.0,
        probe_timeout: nanos(c.probe_timeout.0),
    }
}

/// The scope name of a breaker definition on an upstream (`on_route` false) or a route.
pub fn scope_of(c: &CircuitBreaker, on_route: bool) -> &'static str {
    match (c.scope, on_route) {
        (Some(BreakerScope::Target), _) => "target",
        (Some(BreakerScope::Key), _) => "key",
        (Some(BreakerScope::Route), _) | (None, true) => "route",
        (Some(BreakerScope::Upstream), _) | (None, false) => "upstream",
    }
}

impl ScopedBreaker {
    fn new(scope: &'static str, name: &str, c: &CircuitBreaker, metrics: &BreakerFamilies) -> Self {
        let cfg = core_config(c);
        let kind = if scope == "key" {
            Kind::Keyed {
                breakers: Box::new(KeyedBreakers::new(
                    cfg,
                    c.max_keys
                        .unwrap_or(floodgate_config::resilience::DEFAULT_BREAKER_KEYS),
                )),
                parts: c.key.iter().filter_map(|p| KeyPart::parse(p)).collect(),
            }
        } else {
            Kind::Single(Arc::new(Breaker::new(cfg)))
        };
        let metrics = metrics.series(scope, name);
        metrics.state.set(0);
        ScopedBreaker {
            scope,
            name: Arc::from(name),
            kind,
            policy: FailurePolicy::new(&c.failure_on),
            metrics,
        }
    }

    /// The key parts, for a keyed breaker.
    pub fn key_parts(&self) -> Option<&[KeyPart]> {
        match &self.kind {
            Kind::Keyed { parts, .. } => Some(parts),
            Kind::Single(_) => None,
        }
    }

    /// Asks to make a call (`key`: the rendered key, for a keyed breaker).
    pub fn acquire(self: &Arc<Self>, key: &[u8]) -> Result<Call, Refusal> {
        let breaker = match &self.kind {
            Kind::Single(b) => b.clone(),
            Kind::Keyed { breakers, .. } => breakers.get(key),
        };
        let (result, transition) = breaker.try_acquire(now());
        if let Some(t) = transition {
            self.on_transition(t, key);
        }
        match result {
            Ok(ticket) => Ok(Call {
                key: matches!(self.kind, Kind::Keyed { .. }).then(|| key.into()),
                owner: self.clone(),
                breaker,
                ticket,
                started: Instant::now(),
                reported: false,
            }),
            Err(refusal) => {
                self.metrics.rejected.inc();
                Err(refusal)
            }
        }
    }

    /// A call through this breaker, or the problem that answers when it refuses (open, or
    /// every half-open probe out).
    pub fn admit(self: &Arc<Self>, key: &[u8]) -> Result<Call, Problem> {
        self.acquire(key).map_err(|r| Problem::CircuitOpen {
            retry_after_secs: r.retry_after.div_ceil(1_000_000_000).max(1),
        })
    }

    /// Whether a single breaker refuses calls now (for balancing, which skips targets
    /// whose breaker is open without taking a probe place).
    pub fn is_open(&self) -> bool {
        match &self.kind {
            Kind::Single(b) => b.state() == State::Open,
            Kind::Keyed { .. } => false,
        }
    }

    fn on_transition(&self, t: Transition, key: &[u8]) {
        self.metrics.to[t.to as usize].inc();
        match &self.kind {
            Kind::Single(_) => {
                self.metrics.state.set(t.to as i64);
            }
            Kind::Keyed { .. } => match (t.from, t.to) {
                (State::Closed, _) => {
                    self.metrics.state.inc();
                }
                (_, State::Closed) => {
                    self.metrics.state.dec();
                }
                _ => {}
            },
        }
        let key = String::from_utf8_lossy(&key[..key.len().min(64)]);
        if t.to == State::Open {
            let cause = t.cause;
            tracing::warn!(
                scope = self.scope,
                name = %self.name,
                key = %key,
                from = t.from.as_str(),
                to = t.to.as_str(),
                rule = cause.map_or("", |c| c.rule),
                failures_in_a_row = cause.map_or(0, |c| c.consecutive),
                window_calls = cause.map_or(0, |c| c.window.calls),
                window_failures = cause.map_or(0, |c| c.window.failures),
                window_slow = cause.map_or(0, |c| c.window.slow),
                "circuit breaker opened"
            );
        } else {
            tracing::info!(scope = self.scope, name = %self.name, key = %key, from = t.from.as_str(), to = t.to.as_str(), "circuit breaker state changed");
        }
    }

    /// Every breaker's state for the admin API: `(key, snapshot)`, key empty unless keyed.
    pub fn states(&self) -> Vec<(Box<str>, Snapshot)> {
        let now = now();
        match &self.kind {
            Kind::Single(b) => vec![("".into(), b.snapshot(now))],
            Kind::Keyed { breakers, .. } => breakers
                .list()
                .into_iter()
                .map(|(k, b)| (k, b.snapshot(now)))
                .collect(),
        }
    }

    /// Forgets keyed breakers at rest.
    pub fn sweep(&self) {
        if let Kind::Keyed { breakers, .. } = &self.kind {
            breakers.sweep(now());
        }
    }
}

/// An admitted call; report it with [`Call::finish`]. Dropped unreported, it counts as
/// neither success nor failure.
pub struct Call {
    owner: Arc<ScopedBreaker>,
    breaker: Arc<Breaker>,
    ticket: Ticket,
    started: Instant,
    reported: bool,
    /// A keyed breaker's key, for the log of its transitions.
    key: Option<Box<[u8]>>,
}

impl Call {
    /// Reports how the call ended.
    pub fn finish(mut self, outcome: Outcome) {
        self.reported = true;
        let took = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let result = if self.owner.policy.is_failure(outcome) {
            CallResult::Failure(took)
        } else {
            CallResult::Success(took)
        };
        if let Some(t) = self.breaker.record(self.ticket, result, now()) {
            self.owner
                .on_transition(t, self.key.as_deref().unwrap_or_default());
        }
    }
}

impl Call {
    /// Reports the call by the answer its request got: a status, or the problem that
    /// answered. The gateway's own refusals and the client's faults count as neither
    /// success nor failure (the call is given back unreported).
    pub fn report(self, answer: Result<StatusCode, Problem>) {
        let outcome = match answer {
            Ok(status) => Some(Outcome::Status(status)),
            Err(p) => Outcome::of_problem(p),
        };
        if let Some(o) = outcome {
            self.finish(o);
        }
    }
}

impl Outcome {
    /// How a request that `p` answered ended, for a breaker: `None` for a problem that
    /// is not the upstream's doing.
    pub fn of_problem(p: Problem) -> Option<Outcome> {
        match p {
            Problem::UpstreamTimeout => Some(Outcome::Timeout),
            Problem::UpstreamConnect | Problem::NoTarget => Some(Outcome::Connect),
            Problem::UpstreamBroken => Some(Outcome::Reset),
            Problem::FaultAbort(status) => Some(Outcome::Status(status)),
            _ => None,
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.release(self.ticket);
        }
    }
}

/// Breakers kept across reloads.
#[derive(Default)]
pub struct BreakerRegistry(Kept<ScopedBreaker>);

impl BreakerRegistry {
    /// The breaker of `scope` for `name` with definition `c`, made if new.
    pub fn get_or_build(
        &self,
        scope: &'static str,
        name: &str,
        c: &CircuitBreaker,
        metrics: &BreakerFamilies,
    ) -> Arc<ScopedBreaker> {
        self.0.get_or_build(scope, name, c, || {
            ScopedBreaker::new(scope, name, c, metrics)
        })
    }

    /// Drops the breakers the snapshot just built does not use.
    pub fn retain_built(&self) {
        self.0.retain_built();
    }

    /// Every breaker, by scope and name.
    pub fn all(&self) -> Vec<Arc<ScopedBreaker>> {
        let mut all = self.0.all();
        all.sort_by(|a, b| (a.scope, &a.name).cmp(&(b.scope, &b.name)));
        all
    }

    /// Forgets keyed breakers at rest.
    pub fn sweep(&self) {
        for b in self.0.all() {
            b.sweep();
        }
    }
}

/// The route's circuit breaker, at admission.
pub(crate) const ROUTE_POLICY: crate::policy::RoutePolicy = crate::policy::RoutePolicy {
    name: "route circuit breaker",
    phase: crate::policy::Phase::Admission,
    describe: |r| {
        r.circuit_breaker
            .iter()
            .map(|cb| describe("route", cb))
            .collect()
    },
};

/// The upstream's (or its targets') circuit breaker, at admission and at each try.
pub(crate) const UPSTREAM_POLICY: crate::policy::UpstreamPolicy = crate::policy::UpstreamPolicy {
    name: "upstream circuit breaker",
    phase: crate::policy::Phase::Admission,
    describe: |u| {
        u.circuit_breaker
            .iter()
            .map(|cb| describe("upstream", cb))
            .collect()
    },
};

/// A circuit breaker on `on` (`route` or `upstream`): its scope and trip rules.
fn describe(on: &str, cb: &CircuitBreaker) -> String {
    let pct = |p: f64| (p * 1000.0).round() / 10.0;
    let mut rules = Vec::new();
    if let Some(n) = cb.consecutive_failures {
        rules.push(format!("{n} failures in a row"));
    }
    if let Some(r) = cb.failure_rate {
        rules.push(format!("failures ≥ {}%", pct(r.0)));
    }
    if let Some(r) = cb.slow_call_rate {
        rules.push(format!("calls over {} ≥ {}%", cb.slow_call, pct(r.0)));
    }
    let scope = scope_of(cb, on == "route");
    let key = if cb.key.is_empty() {
        String::new()
    } else {
        format!(" per {}", cb.key.join("+"))
    };
    // The window and its minimum only concern the rates.
    let window = if cb.failure_rate.is_some() || cb.slow_call_rate.is_some() {
        format!(
            " (rates over {}, at least {} calls)",
            cb.window, cb.minimum_calls
        )
    } else {
        String::new()
    };
    format!(
        "circuit breaker ({scope}{key}): opens on {}{window}, open {} growing to {}, {} probes",
        rules.join(" or "),
        cb.open_for,
        cb.max_open_for,
        cb.half_open_calls
    )
}

/// Circuit breakers' metric families: state, transitions and refusals, by scope and name.
pub struct BreakerFamilies {
    state: Family<BreakerLabel, Gauge>,
    transitions: Family<BreakerTransition, Counter>,
    rejected: Family<BreakerLabel, Counter>,
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

impl BreakerFamilies {
    /// Registers the families.
    pub(crate) fn register(reg: &mut Registry) -> Self {
        let m = BreakerFamilies {
            state: Family::default(),
            transitions: Family::default(),
            rejected: Family::default(),
        };
        reg.register(
            "circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open (scope `key`: keys not closed)",
            m.state.clone(),
        );
        reg.register(
            "circuit_breaker_transitions",
            "Circuit breaker state changes, by the state entered",
            m.transitions.clone(),
        );
        reg.register(
            "circuit_breaker_rejected",
            "Calls a circuit breaker refused",
            m.rejected.clone(),
        );
        m
    }

    /// The series of one circuit breaker.
    pub fn series(&self, scope: &'static str, name: &str) -> BreakerMetrics {
        let label = BreakerLabel {
            scope,
            name: name.to_owned(),
        };
        let to = |to: &'static str| {
            self.transitions
                .get_or_create(&BreakerTransition {
                    scope,
                    name: name.to_owned(),
                    to,
                })
                .clone()
        };
        BreakerMetrics {
            state: self.state.get_or_create(&label).clone(),
            to: [to("closed"), to("open"), to("half_open")],
            rejected: self.rejected.get_or_create(&label).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_on_classifies_outcomes() {
        let p = FailurePolicy::new(&["5xx".into(), "429".into(), "timeout".into()]);
        assert!(p.is_failure(Outcome::Status(StatusCode::BAD_GATEWAY)));
        assert!(p.is_failure(Outcome::Status(StatusCode::TOO_MANY_REQUESTS)));
        assert!(!p.is_failure(Outcome::Status(StatusCode::NOT_FOUND)));
        assert!(p.is_failure(Outcome::Timeout));
        assert!(!p.is_failure(Outcome::Connect));
        assert!(!p.is_failure(Outcome::Reset));
    }
}
