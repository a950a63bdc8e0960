//! Upstreams: the targets of a named group, how the next one is picked, and the connection
//! pools used to reach them (see [`pool`]).
//!
//! Pools are kept in a registry keyed by target and connection settings, shared by every
//! worker thread and every snapshot, so a reload keeps warm connections. Balancing is in
//! [`balance`], active health checks in [`health`], retries in [`retry`]; passive outlier
//! ejection is recorded per try (`UpstreamSet::record_outcome`).

pub mod balance;
pub mod dns;
pub mod exchange;
pub mod health;
pub mod http2;
pub mod metrics;
pub mod pool;
pub mod retry;
pub mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use floodgate_config::model::{AllUnhealthy, Upstream, UpstreamProtocol};
use floodgate_core::outlier::OutlierConfig;
use http::uri::Authority;

use crate::breaker::BreakerRegistry;

pub use balance::{Balancer, HashOn, InFlight, TargetStats};
pub use pool::{
    ConnPool, ExchangeError, Protocol, Remake, RequestHead, UpstreamBody, UpstreamConn,
};
pub use retry::{Allowance, Failure, RetryPolicy};

#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    address: String,
    protocol: Protocol,
    /// TLS settings and the server name, if TLS.
    tls: Option<(floodgate_config::model::UpstreamTls, String)>,
    connect: Duration,
    idle: Duration,
    max_idle: usize,
}

/// Connection pools, one per target and set of connection settings.
#[derive(Default)]
pub struct Pools {
    map: Mutex<HashMap<PoolKey, Arc<ConnPool>>>,
}

impl Pools {
    fn get(&self, key: PoolKey) -> Arc<ConnPool> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.clone())
            .or_insert_with(|| {
                Arc::new(ConnPool::with_tls(
                    &key.address,
                    key.protocol,
                    key.tls.as_ref().map(|(t, name)| (t, name.as_str())),
                    key.max_idle,
                    key.idle,
                    key.connect,
                ))
            })
            .clone()
    }

    /// Sweeps every pool (see [`ConnPool::sweep`]).
    pub fn sweep(&self) {
        let pools: Vec<Arc<ConnPool>> = {
            let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.values().cloned().collect()
        };
        for pool in pools {
            pool.sweep();
        }
    }

    /// Forgets pools that no snapshot uses any more (their idle connections close).
    pub fn prune(&self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, pool| Arc::strong_count(pool) > 1);
    }
}

/// One backend server.
#[derive(Clone)]
pub struct Target {
    /// `host:port` as configured.
    pub address: Arc<str>,
    /// The same, parsed.
    pub authority: Authority,
    /// Its connection pool.
    pub pool: Arc<ConnPool>,
    /// Its metric series.
    pub metrics: metrics::TargetMetrics,
    /// Draining: takes no new requests.
    pub draining: bool,
    /// The target's own circuit breaker (`circuit_breaker.scope: target`).
    pub breaker: Option<Arc<crate::breaker::ScopedBreaker>>,
}

/// The targets of an upstream at one moment, with the balancer built for them. Replaced
/// as a whole when names resolve to other addresses.
pub struct TargetSet {
    targets: Vec<Arc<Target>>,
    balancer: Balancer,
}

/// A named group of targets, ready for traffic.
pub struct UpstreamSet {
    /// The upstream's name.
    pub name: Arc<str>,
    current: ArcSwap<TargetSet>,
    /// The upstream's definition, to rebuild the target set from resolved names.
    cfg: Upstream,
    /// Whether any target is given by name (then [`dns`] resolves it).
    pub has_names: bool,
    /// Woken after a connect failure, so names are resolved again at once.
    pub resolve_now: tokio::sync::Notify,
    /// Time allowed from sending the request to receiving the response head (per try).
    pub request_timeout: Duration,
    /// Time allowed for all tries together, if limited.
    pub total_timeout: Option<Duration>,
    /// The upstream's bulkhead, over all routes.
    pub concurrency: Option<Arc<crate::admission::Admission>>,
    /// The retry policy, if retries are configured.
    pub retry: Option<RetryPolicy>,
    /// The upstream's circuit breaker (`circuit_breaker.scope: upstream`).
    pub breaker: Option<Arc<crate::breaker::ScopedBreaker>>,
    /// Passive outlier detection and the most targets it may take out at once.
    outlier: Option<(OutlierConfig, usize)>,
    /// Use every target when none is eligible.
    panic_when_all_unhealthy: bool,
}

/// Addresses that names resolved to: `name:port` → socket addresses.
pub type Resolved = HashMap<String, Vec<std::net::SocketAddr>>;

/// The long-lived registries an upstream's targets are built against.
pub struct Registries<'a> {
    /// Connection pools.
    pub pools: &'a Pools,
    /// The upstreams' metric families.
    pub metrics: &'a metrics::UpstreamMetrics,
    /// The circuit breakers' metric families.
    pub breaker_metrics: &'a crate::breaker::BreakerFamilies,
    /// Circuit breakers.
    pub breakers: &'a BreakerRegistry,
}

fn target_set(name: &str, cfg: &Upstream, resolved: &Resolved, r: &Registries<'_>) -> TargetSet {
    let (pools, metrics) = (r.pools, r.metrics);
    let target_breaker = cfg
        .circuit_breaker
        .as_ref()
        .filter(|c| crate::breaker::scope_of(c, false) == "target");
    let mut targets = Vec::new();
    let mut weights = Vec::new();
    for t in &cfg.targets {
        // A name that resolved becomes one target per address; otherwise the configured
        // address is the target (an IP literal, or a name the OS resolves at connect).
        let addresses: Vec<String> = match resolved.get(t.address()) {
            Some(addrs) if !addrs.is_empty() => addrs.iter().map(ToString::to_string).collect(),
            _ => vec![t.address().to_owned()],
        };
        for address in addresses {
            // Two names for one address are one server: one target, their weights added.
            if let Some(i) = targets
                .iter()
                .position(|t: &Arc<Target>| *t.address == *address)
            {
                weights[i] += t.weight();
                continue;
            }
            let Ok(authority) = address.parse::<Authority>() else {
                continue;
            };
            // SNI and certificate check: the configured name, else the host as configured
            // (not the address a name resolved to).
            let tls = cfg.tls.as_ref().map(|tls| {
                let host = t
                    .address()
                    .rsplit_once(':')
                    .map_or(t.address(), |(h, _)| h)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                (
                    tls.clone(),
                    tls.server_name.clone().unwrap_or_else(|| host.to_owned()),
                )
            });
            let pool = pools.get(PoolKey {
                address: address.clone(),
                tls,
                protocol: match cfg.protocol {
                    UpstreamProtocol::Http1 => Protocol::Http1,
                    UpstreamProtocol::Http2 => Protocol::Http2,
                },
                connect: cfg.timeouts.connect.0,
                idle: cfg.timeouts.idle.0,
                max_idle: cfg.max_idle_per_target,
            });
            targets.push(Arc::new(Target {
                breaker: target_breaker.map(|c| {
                    r.breakers.get_or_build(
                        "target",
                        &format!("{name}/{address}"),
                        c,
                        r.breaker_metrics,
                    )
                }),
                metrics: metrics.target(name, &address),
                address: Arc::from(address.as_str()),
                authority,
                pool,
                draining: t.draining(),
            }));
            weights.push(t.weight());
        }
    }
    let plain: Vec<&Target> = targets.iter().map(|t| &**t).collect();
    TargetSet {
        balancer: Balancer::build(cfg, &plain, &weights),
        targets,
    }
}

impl UpstreamSet {
    /// Builds an upstream from validated config (names not resolved yet).
    pub fn build(name: &str, cfg: &Upstream, r: &Registries<'_>) -> Self {
        let has_names = cfg
            .targets
            .iter()
            .any(|t| t.address().parse::<std::net::SocketAddr>().is_err());
        UpstreamSet {
            name: Arc::from(name),
            current: ArcSwap::from_pointee(target_set(name, cfg, &Resolved::new(), r)),
            breaker: cfg
                .circuit_breaker
                .as_ref()
                .filter(|c| crate::breaker::scope_of(c, false) == "upstream")
                .map(|c| {
                    r.breakers
                        .get_or_build("upstream", name, c, r.breaker_metrics)
                }),
            cfg: cfg.clone(),
            has_names,
            resolve_now: tokio::sync::Notify::new(),
            request_timeout: cfg.timeouts.request.0,
            total_timeout: cfg.timeouts.total.map(|d| d.0),
            concurrency: None,
            retry: cfg.retries.as_ref().map(RetryPolicy::new),
            outlier: cfg.outlier_detection.as_ref().map(|o| {
                let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
                let config = OutlierConfig {
                    consecutive: o
                        .consecutive_failures
                        .or(o.failure_rate.is_none().then_some(5)),
                    failure_rate: o.failure_rate.map(|p| p.0),
                    min_requests: o.min_requests,
                    window: nanos(o.window.0),
                    base: nanos(o.base_ejection.0),
                    max: nanos(o.max_ejection.0),
                };
                // Rounded down: one of two targets at 50%, none of one.
                let most = (o.max_ejected.0 * cfg.targets.len() as f64).floor() as usize;
                (config, most)
            }),
            panic_when_all_unhealthy: cfg.on_all_unhealthy == AllUnhealthy::Panic,
        }
    }

    /// The configured target addresses given by name (`name:port`).
    pub fn names(&self) -> Vec<String> {
        self.cfg
            .targets
            .iter()
            .map(|t| t.address().to_owned())
            .filter(|a| a.parse::<std::net::SocketAddr>().is_err())
            .collect()
    }

    /// Replaces the targets with those `resolved` gives.
    pub fn apply_resolved(&self, resolved: &Resolved, r: &Registries<'_>) {
        self.current
            .store(Arc::new(target_set(&self.name, &self.cfg, resolved, r)));
    }

    /// What a consistent-hash key is made of, if this upstream hashes.
    pub fn hash_on(&self) -> Option<HashOn> {
        self.current.load().balancer.hash_on().cloned()
    }

    /// The target for the next request (`hash`: the request's key hash, when hashing):
    /// among the healthy, not ejected targets; when there is none, among all of them if the
    /// upstream panics, else `None`.
    pub fn pick(&self, hash: Option<u64>) -> Option<Arc<Target>> {
        let now = crate::ratelimit::now();
        let set = self.current.load();
        let targets = &set.targets;
        let eligible = |i: usize| {
            let t = &targets[i];
            !t.draining
                && t.pool.stats.eligible(now)
                && !t.breaker.as_ref().is_some_and(|b| b.is_open())
        };
        set.balancer
            .pick(targets, hash, &eligible)
            .or_else(|| {
                // Panic mode sends to unhealthy targets, never to draining ones.
                self.panic_when_all_unhealthy
                    .then(|| set.balancer.pick(targets, hash, &|i| !targets[i].draining))
                    .flatten()
            })
            .and_then(|i| targets.get(i).cloned())
    }

    /// Records a live request's outcome at `target` for outlier detection; returns the
    /// ejection time if the target was ejected just now.
    pub fn record_outcome(&self, target: &Target, ok: bool) -> Option<Duration> {
        let (cfg, most) = self.outlier.as_ref()?;
        let now = crate::ratelimit::now();
        if !target.pool.stats.record_outcome(cfg, ok, now) {
            return None;
        }
        let out = self
            .current
            .load()
            .targets
            .iter()
            .filter(|t| t.pool.stats.ejected(now))
            .count();
        if out >= *most {
            return None;
        }
        Some(Duration::from_nanos(target.pool.stats.eject(cfg, now)))
    }

    /// A target for a retry: one not in `tried` if the balancer offers one within as many
    /// picks as there are targets, else the balancer's choice.
    pub fn pick_untried(&self, hash: Option<u64>, tried: &[Arc<str>]) -> Option<Arc<Target>> {
        let mut first = None;
        for _ in 0..self.current.load().targets.len().max(1) {
            let t = self.pick(hash)?;
            if !tried.contains(&t.address) {
                return Some(t);
            }
            first.get_or_insert(t);
        }
        first
    }

    /// How many targets there are now.
    pub fn target_count(&self) -> usize {
        self.current.load().targets.len()
    }

    /// Whether a target's own breaker is open.
    pub fn has_open_target_breaker(&self) -> bool {
        self.current
            .load()
            .targets
            .iter()
            .any(|t| t.breaker.as_ref().is_some_and(|b| b.is_open()))
    }

    /// The targets now.
    pub fn targets(&self) -> Vec<Arc<Target>> {
        self.current.load().targets.clone()
    }
}

/// Passive outlier detection: targets ejected by how their tries end.
pub(crate) const OUTLIER_POLICY: crate::policy::UpstreamPolicy = crate::policy::UpstreamPolicy {
    name: "outlier detection",
    phase: crate::policy::Phase::Exchange,
    describe: |u| {
        let Some(o) = &u.outlier_detection else {
            return Vec::new();
        };
        // As the upstream applies it: 5 in a row unless only a failure rate is given.
        let consecutive = o
            .consecutive_failures
            .or(o.failure_rate.is_none().then_some(5));
        let mut rules = Vec::new();
        if let Some(n) = consecutive {
            rules.push(format!("{n} failures in a row"));
        }
        if let Some(r) = o.failure_rate {
            rules.push(format!(
                "a failure rate of {}% over {} (at least {} requests)",
                (r.0 * 100.0).round(),
                o.window,
                o.min_requests
            ));
        }
        vec![format!(
            "outlier detection: eject after {}, for {} (growing, at most {})",
            rules.join(" or "),
            o.base_ejection,
            o.max_ejection
        )]
    },
};
