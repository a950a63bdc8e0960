//! The rate-limit phase of a route: its limits compiled from config, checked in order
//! for each request, and the `RateLimit-Policy` / `RateLimit` fields
//! (draft-ietf-httpapi-ratelimit-headers) that describe them.
//!
//! Local limits keep their state in [`floodgate_core::ratelimit::KeyedLimiter`]s held by
//! the [`LimiterRegistry`], so a reload keeps the state of every limit whose definition did
//! not change. Cluster limits decide in Redis ([`cluster`]), with a local fallback.
//!
//! A request refused by one limit has already been counted by the limits before it in the
//! list (as with Envoy's descriptors); put the cheapest-to-exhaust limit first if that
//! matters.

pub mod cluster;
pub mod key;
mod registry;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use floodgate_config::model::{Algorithm, FailMode, RateLimit, Scope};
use floodgate_core::Nanos;
use floodgate_core::ratelimit::{
    Algorithm as CoreAlgorithm, Decision, DynLimiter, FixedWindow, Gcra, KeyedLimiter, LeakyBucket,
    Quota, Rate, SlidingLog, SlidingWindow, TokenBucket, Verdict,
};
use http::HeaderValue;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use registry::LimiterRegistry;

use cluster::{ClusterClient, ClusterParams};
use key::{KeyPart, RequestFacts};

/// Now, on the process's monotonic timeline. Read from quanta's TSC-based clock, which
/// costs about a third of `std::time::Instant::now` (≈10 ns against ≈25 ns on a VM), and
/// every request with a limit reads it.
pub fn now() -> Nanos {
    static EPOCH: OnceLock<quanta::Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(quanta::Instant::now);
    Nanos::try_from(quanta::Instant::now().duration_since(epoch).as_nanos()).unwrap_or(Nanos::MAX)
}

/// A route's rate limits, in order.
#[derive(Default)]
pub struct RouteLimits {
    limits: Vec<CompiledLimit>,
}

struct CompiledLimit {
    name: Arc<str>,
    parts: Vec<KeyPart>,
    dry_run: bool,
    headers: bool,
    backend: Backend,
    metrics: LimitMetrics,
}

enum Backend {
    Local(Arc<dyn DynLimiter>),
    Cluster(Box<ClusterLimit>),
}

struct ClusterLimit {
    client: Arc<ClusterClient>,
    algorithm: Algorithm,
    /// `<prefix>rl:<route>:<limit>:`, followed by the key.
    base: Vec<u8>,
    default: ClusterParams,
    overrides: HashMap<Vec<u8>, ClusterParams>,
    fail_mode: FailMode,
    spec: RateLimit,
    quota: Quota,
    /// The fail-open limiter and the node count it was scaled for.
    fallback: Mutex<Option<(u32, Arc<dyn DynLimiter>)>>,
}

/// What the rate-limit phase decided.
pub enum Outcome {
    /// Go on, after `delay` if it is not zero.
    Admitted {
        /// Wait this long first (leaky bucket queue).
        delay: Duration,
        /// Fields for the response, if any limit asks for them on every response.
        headers: Option<LimitHeaders>,
        /// A dry-run limit that would have refused the request.
        dry_run_hit: Option<Arc<str>>,
    },
    /// Refuse with 429.
    Rejected {
        /// The limit that refused.
        limit: Arc<str>,
        /// When a retry may pass.
        retry_after: Duration,
        /// The fields describing the limits.
        headers: LimitHeaders,
    },
    /// A cluster limit that fails closed could not reach Redis: refuse with 503.
    Unavailable {
        /// The limit.
        limit: Arc<str>,
    },
}

/// `RateLimit-Policy` and `RateLimit` field values.
#[derive(Debug, Default, Clone)]
pub struct LimitHeaders {
    policy: String,
    state: String,
}

impl LimitHeaders {
    /// Adds a limit's policies and state. A window algorithm is one policy, its limit per
    /// window. A bucket is two: `"name"`, its long-run rate, and `"name:burst"`, what may
    /// go at once (and how long that takes to come back), which the state describes. The
    /// draft's windows are whole seconds: a shorter window is stated per second (5 per
    /// 100 ms as 50 per second); a burst that refills within a second as that burst per
    /// second, which is what a client may send in any second without being refused.
    fn push(&mut self, name: &str, quota: Quota, d: &Decision) {
        let sep = |s: &mut String| {
            if !s.is_empty() {
                s.push_str(", ");
            }
        };
        sep(&mut self.policy);
        let state_name = match quota.sustained {
            None => {
                let (q, w) = per_whole_seconds(quota.quota, quota.window);
                let _ = write!(self.policy, "\"{name}\";q={q};w={w}");
                name.to_owned()
            }
            Some((count, period)) => {
                let (q, w) = per_whole_seconds(count, period);
                let _ = write!(
                    self.policy,
                    "\"{name}\";q={q};w={w}, \"{name}:burst\";q={};w={}",
                    quota.quota,
                    secs_ceil(quota.window).max(1)
                );
                format!("{name}:burst")
            }
        };
        sep(&mut self.state);
        let _ = write!(
            self.state,
            "\"{state_name}\";r={};t={}",
            d.remaining,
            secs_ceil(d.reset)
        );
    }

    /// The header values, if they are valid field values (limit names are validated);
    /// the text is moved into them, not copied.
    pub fn into_values(self) -> Option<(HeaderValue, HeaderValue)> {
        Some((
            HeaderValue::from_maybe_shared(bytes::Bytes::from(self.policy)).ok()?,
            HeaderValue::from_maybe_shared(bytes::Bytes::from(self.state)).ok()?,
        ))
    }
}

fn secs_ceil(ns: Nanos) -> u64 {
    ns.div_ceil(1_000_000_000)
}

/// `count` per `period` as a count per whole number of seconds (the draft's `w`): the
/// window rounded up to a second, the count scaled to it (rounded down, never over).
fn per_whole_seconds(count: u64, period: Nanos) -> (u64, u64) {
    let w = secs_ceil(period).max(1);
    let q = u128::from(count) * u128::from(w) * 1_000_000_000 / u128::from(period.max(1));
    (u64::try_from(q).unwrap_or(u64::MAX), w)
}

impl RouteLimits {
    /// Compiles a route's limits; local state comes from `registry`.
    pub fn compile(
        route: &str,
        limits: &[RateLimit],
        registry: &LimiterRegistry,
        cluster: Option<&Arc<ClusterClient>>,
        metrics: &LimitFamilies,
    ) -> Self {
        let limits = limits
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let name = floodgate_config::limit_name(l, i);
                let metrics = metrics.series(
                    route,
                    &name,
                    l.algorithm == Algorithm::LeakyBucket,
                    l.dry_run,
                );
                let backend = match (l.scope, cluster) {
                    (Scope::Cluster, Some(client)) => {
                        let base = format!("{}rl:{route}:{name}:", client.prefix()).into_bytes();
                        Backend::Cluster(Box::new(ClusterLimit {
                            client: client.clone(),
                            algorithm: l.algorithm,
                            base,
                            default: cluster_params(l.rate, l.burst),
                            overrides: l
                                .overrides
                                .iter()
                                .map(|o| {
                                    (
                                        o.value.clone().into_bytes(),
                                        cluster_params(o.rate, o.burst),
                                    )
                                })
                                .collect(),
                            fail_mode: l.on_redis_error.unwrap_or_default(),
                            quota: build_local(l, 1).quota(),
                            spec: l.clone(),
                            fallback: Mutex::new(None),
                        }))
                    }
                    _ => {
                        let identity = format!("{route}\u{0}{name}\u{0}{l:?}");
                        Backend::Local(
                            registry.get_or_build(&identity, &metrics, || build_local(l, 1)),
                        )
                    }
                };
                CompiledLimit {
                    parts: l.key.iter().filter_map(|p| KeyPart::parse(p)).collect(),
                    name: Arc::from(name),
                    dry_run: l.dry_run,
                    headers: l.headers,
                    backend,
                    metrics,
                }
            })
            .collect();
        RouteLimits { limits }
    }

    /// Whether the route has no limits.
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// Runs every limit for one request.
    pub async fn check(&self, facts: &RequestFacts<'_>) -> Outcome {
        let now = now();
        let mut key = Vec::with_capacity(64);
        let mut delay: Nanos = 0;
        let mut headers: Option<LimitHeaders> = None;
        let mut dry_run_hit = None;
        for limit in &self.limits {
            key::render(&limit.parts, facts, &mut key);
            let (decision, quota) = match &limit.backend {
                Backend::Local(l) => l.check(&key, now, 1),
                Backend::Cluster(c) => match c.check(&key, now).await {
                    Some(r) => r,
                    None => {
                        limit.metrics.rejected.inc();
                        return Outcome::Unavailable {
                            limit: limit.name.clone(),
                        };
                    }
                },
            };
            match decision.verdict {
                Verdict::Allow => {
                    limit.metrics.allowed.inc();
                }
                Verdict::Delay(d) => {
                    if let Some(c) = &limit.metrics.delayed {
                        c.inc();
                    }
                    delay = delay.max(d);
                }
                Verdict::Reject { retry_after } => {
                    if limit.dry_run {
                        if let Some(c) = &limit.metrics.dry_run_rejected {
                            c.inc();
                        }
                        dry_run_hit.get_or_insert_with(|| limit.name.clone());
                    } else {
                        limit.metrics.rejected.inc();
                        let mut h = headers.unwrap_or_default();
                        h.push(&limit.name, quota, &decision);
                        return Outcome::Rejected {
                            limit: limit.name.clone(),
                            retry_after: Duration::from_nanos(retry_after),
                            headers: h,
                        };
                    }
                }
            }
            if limit.headers {
                headers.get_or_insert_with(LimitHeaders::default).push(
                    &limit.name,
                    quota,
                    &decision,
                );
            }
        }
        Outcome::Admitted {
            delay: Duration::from_nanos(delay),
            headers,
            dry_run_hit,
        }
    }
}

impl ClusterLimit {
    /// Decides in Redis, or locally when Redis is unavailable and the limit fails open;
    /// `None` when it fails closed.
    async fn check(&self, key: &[u8], now: Nanos) -> Option<(Decision, Quota)> {
        if self.client.available() {
            let params = self.overrides.get(key).copied().unwrap_or(self.default);
            let mut full = Vec::with_capacity(self.base.len() + key.len());
            full.extend_from_slice(&self.base);
            full.extend_from_slice(key);
            if let Some(d) = self.client.decide(self.algorithm, &full, params).await {
                return Some((d, self.quota));
            }
        }
        match self.fail_mode {
            FailMode::FailClosed => None,
            FailMode::FailOpen => Some(self.fallback().check(key, now, 1)),
        }
    }

    /// The local limiter at this limit ÷ the live nodes, rebuilt when that number changes.
    fn fallback(&self) -> Arc<dyn DynLimiter> {
        let nodes = self.client.live_nodes();
        let mut slot = self.fallback.lock().unwrap_or_else(|p| p.into_inner());
        match &*slot {
            Some((n, l)) if *n == nodes => l.clone(),
            _ => {
                let l = build_local(&self.spec, u64::from(nodes));
                *slot = Some((nodes, l.clone()));
                l
            }
        }
    }
}

type ConfigRate = floodgate_config::value::Rate;

fn cluster_params(rate: ConfigRate, burst: Option<u64>) -> ClusterParams {
    ClusterParams {
        count: rate.count,
        period: rate.per,
        burst: burst.unwrap_or(rate.count).max(1),
    }
}

fn core_rate(rate: ConfigRate, divisor: u64) -> Rate {
    Rate::new(
        (rate.count / divisor.max(1)).max(1),
        Nanos::try_from(rate.per.as_nanos()).unwrap_or(Nanos::MAX),
    )
}

/// A keyed limiter of `l`'s shape, its default and overrides made by `make`.
fn keyed<A: CoreAlgorithm>(
    l: &RateLimit,
    make: impl Fn(ConfigRate, Option<u64>) -> A,
) -> Arc<dyn DynLimiter> {
    let overrides = l
        .overrides
        .iter()
        .map(|o| (o.value.clone().into_bytes(), make(o.rate, o.burst)))
        .collect();
    Arc::new(KeyedLimiter::new(
        make(l.rate, l.burst),
        overrides,
        l.max_keys,
    ))
}

/// Builds the local keyed limiter for `l`, with counts and bursts divided by `divisor`
/// (the fail-open share of one node; 1 otherwise).
fn build_local(l: &RateLimit, divisor: u64) -> Arc<dyn DynLimiter> {
    let div = |b: u64| (b / divisor.max(1)).max(1);
    match l.algorithm {
        Algorithm::TokenBucket => keyed(l, |r, b| {
            TokenBucket::new(core_rate(r, divisor), div(b.unwrap_or(r.count)))
        }),
        Algorithm::Gcra => keyed(l, |r, b| {
            Gcra::new(core_rate(r, divisor), div(b.unwrap_or(r.count)))
        }),
        Algorithm::LeakyBucket => {
            let delay = if l.nodelay {
                u64::MAX
            } else {
                l.delay.unwrap_or(0)
            };
            let max_delay = l
                .max_delay
                .map(|d| Nanos::try_from(d.0.as_nanos()).unwrap_or(Nanos::MAX));
            keyed(l, |r, b| {
                LeakyBucket::new(core_rate(r, divisor), b.unwrap_or(0), delay, max_delay)
            })
        }
        Algorithm::FixedWindow => keyed(l, |r, _| FixedWindow::new(core_rate(r, divisor))),
        Algorithm::SlidingLog => keyed(l, |r, _| SlidingLog::new(core_rate(r, divisor))),
        Algorithm::SlidingWindow => keyed(l, |r, _| SlidingWindow::new(core_rate(r, divisor))),
    }
}

/// Rate limits, the last of the guards.
pub(crate) const POLICY: crate::policy::RoutePolicy = crate::policy::RoutePolicy {
    name: "rate limits",
    phase: crate::policy::Phase::Guards,
    describe: |r| {
        r.rate_limits
            .iter()
            .enumerate()
            .map(|(i, l)| describe(l, i))
            .collect()
    },
};

/// One limit, in a line.
fn describe(l: &floodgate_config::model::RateLimit, i: usize) -> String {
    use floodgate_config::model::{Algorithm, Scope};
    let alg = match l.algorithm {
        Algorithm::TokenBucket => "token bucket",
        Algorithm::LeakyBucket => "leaky bucket",
        Algorithm::FixedWindow => "fixed window",
        Algorithm::SlidingLog => "sliding window log",
        Algorithm::SlidingWindow => "sliding window counter",
        Algorithm::Gcra => "GCRA",
    };
    let rate = format!(
        "{}/{}",
        l.rate.count,
        floodgate_config::value::Duration(l.rate.per)
    );
    let mut extra = Vec::new();
    if let Some(b) = l.burst {
        extra.push(format!("burst {b}"));
    }
    if l.nodelay {
        extra.push("nodelay".into());
    } else if let Some(d) = l.delay {
        extra.push(format!("delay {d}"));
    }
    if !l.overrides.is_empty() {
        extra.push(format!("{} override(s)", l.overrides.len()));
    }
    if l.scope == Scope::Cluster {
        extra.push(format!("cluster, {:?}", l.on_redis_error.unwrap_or_default()).to_lowercase());
    }
    if l.dry_run {
        extra.push("dry run".into());
    }
    format!(
        "rate limit {:?}: {alg} {rate} per {}{}",
        floodgate_config::limit_name(l, i),
        l.key.join("+"),
        if extra.is_empty() {
            String::new()
        } else {
            format!(" ({})", extra.join(", "))
        }
    )
}

/// Rate limits' metric families, by route and limit.
pub struct LimitFamilies {
    decisions: Family<LimitOutcome, Counter>,
    keys: Family<LimitLabel, Gauge>,
    evicted: Family<LimitLabel, Counter>,
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

impl LimitFamilies {
    /// Registers the families.
    pub(crate) fn register(reg: &mut Registry) -> Self {
        let m = LimitFamilies {
            decisions: Family::default(),
            keys: Family::default(),
            evicted: Family::default(),
        };
        reg.register(
            "ratelimit_decisions",
            "Rate-limit decisions, by route, limit and outcome",
            m.decisions.clone(),
        );
        reg.register(
            "ratelimit_keys",
            "Keys a rate limit holds state for on this node",
            m.keys.clone(),
        );
        reg.register(
            "ratelimit_keys_evicted",
            "Keys forgotten while holding state because the limit's max_keys was reached",
            m.evicted.clone(),
        );
        m
    }

    /// The series of one limit; `queues` and `dry_run` add the series only those have.
    pub fn series(&self, route: &str, limit: &str, queues: bool, dry_run: bool) -> LimitMetrics {
        let outcome = |outcome: &'static str| {
            self.decisions
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
            keys: self.keys.get_or_create(&label).clone(),
            evicted: self.evicted.get_or_create(&label).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(yaml_alg: Algorithm, rate: &str, burst: Option<u64>) -> RateLimit {
        RateLimit {
            name: None,
            algorithm: yaml_alg,
            rate: rate.parse().unwrap(),
            burst,
            delay: None,
            nodelay: false,
            max_delay: None,
            key: vec!["route".into()],
            overrides: vec![],
            dry_run: false,
            scope: Scope::Cluster,
            on_redis_error: None,
            max_keys: 10,
            headers: false,
        }
    }

    fn admitted(l: &Arc<dyn DynLimiter>, n: usize) -> usize {
        (0..n).filter(|_| l.check(b"k", 0, 1).0.admitted()).count()
    }

    /// Fail-open: each of N nodes limits locally at the limit ÷ N, so the fleet as a whole
    /// still admits about the limit.
    #[test]
    fn the_fail_open_share_divides_count_and_burst_by_the_live_nodes() {
        let tb = limit(Algorithm::TokenBucket, "30/1h", Some(30));
        assert_eq!(admitted(&build_local(&tb, 1), 100), 30);
        assert_eq!(admitted(&build_local(&tb, 3), 100), 10);
        let fw = limit(Algorithm::FixedWindow, "30/1h", None);
        assert_eq!(admitted(&build_local(&fw, 4), 100), 7);
        // Never below one.
        assert_eq!(admitted(&build_local(&fw, 1000), 100), 1);
    }

    #[test]
    fn ratelimit_fields_follow_the_draft_syntax() {
        let mut h = LimitHeaders::default();
        let d = Decision {
            verdict: Verdict::Allow,
            remaining: 4,
            reset: 1_500_000_000,
        };
        h.push(
            "per-ip",
            Quota {
                quota: 10,
                window: 60_000_000_000,
                sustained: None,
            },
            &d,
        );
        h.push(
            "daily",
            Quota {
                quota: 1000,
                window: 86_400_000_000_000,
                sustained: None,
            },
            &d,
        );
        let (policy, state) = h.into_values().unwrap();
        assert_eq!(policy, "\"per-ip\";q=10;w=60, \"daily\";q=1000;w=86400");
        assert_eq!(state, "\"per-ip\";r=4;t=2, \"daily\";r=4;t=2");
    }

    /// The case: 10/s with a burst of 5 is not "5 per second".
    #[test]
    fn a_bucket_states_its_rate_and_its_burst() {
        let tb = limit(Algorithm::TokenBucket, "10/s", Some(5));
        let (d, quota) = build_local(&tb, 1).check(b"k", 0, 1);
        let mut h = LimitHeaders::default();
        h.push("api", quota, &d);
        let (policy, state) = h.into_values().unwrap();
        assert_eq!(policy, "\"api\";q=10;w=1, \"api:burst\";q=5;w=1");
        assert!(
            state.to_str().unwrap().starts_with("\"api:burst\";r=4;"),
            "{state:?}"
        );
        // A leaky bucket lets one go and queues `burst`.
        let lb = limit(Algorithm::LeakyBucket, "2/s", Some(3));
        let (d, quota) = build_local(&lb, 1).check(b"k", 0, 1);
        let mut h = LimitHeaders::default();
        h.push("queue", quota, &d);
        let (policy, _) = h.into_values().unwrap();
        assert_eq!(policy, "\"queue\";q=2;w=1, \"queue:burst\";q=4;w=2");
        // Windows shorter than a second are stated per second.
        assert_eq!(per_whole_seconds(5, 100_000_000), (50, 1));
        assert_eq!(per_whole_seconds(20, 1_500_000_000), (26, 2));
        assert_eq!(per_whole_seconds(1000, 3_600_000_000_000), (1000, 3600));
    }
}
