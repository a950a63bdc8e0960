//! Upstreams: the targets of a named group, how the next one is picked, and the connection
//! pools used to reach them (see [`pool`]).
//!
//! Pools are kept in a registry keyed by target and connection settings, shared by every
//! worker thread and every snapshot, so a reload keeps warm connections. Balancing is in
//! [`balance`], active health checks in [`health`], retries in [`retry`]; passive outlier
//! ejection is recorded per try (`UpstreamSet::record_outcome`).

pub mod balance;
pub mod health;
pub mod pool;
pub mod retry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodgate_config::model::{AllUnhealthy, Upstream, UpstreamProtocol};
use floodgate_core::outlier::OutlierConfig;
use http::uri::Authority;

pub use balance::{Balancer, HashOn, InFlight, TargetStats};
pub use pool::{ConnPool, ExchangeError, Protocol, UpstreamConn};
pub use retry::{Allowance, Failure, RetryPolicy};

#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    address: String,
    protocol: Protocol,
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
                Arc::new(ConnPool::new(
                    &key.address,
                    key.protocol,
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
    pub metrics: crate::metrics::TargetMetrics,
    /// Draining: takes no new requests.
    pub draining: bool,
}

/// A named group of targets, ready for traffic.
pub struct UpstreamSet {
    /// The upstream's name.
    pub name: Arc<str>,
    targets: Vec<Target>,
    balancer: Balancer,
    /// Time allowed from sending the request to receiving the response head (per try).
    pub request_timeout: Duration,
    /// Time allowed for all tries together, if limited.
    pub total_timeout: Option<Duration>,
    /// The upstream's bulkhead, over all routes.
    pub concurrency: Option<Arc<crate::admission::Admission>>,
    /// The retry policy, if retries are configured.
    pub retry: Option<RetryPolicy>,
    /// Passive outlier detection and the most targets it may take out at once.
    outlier: Option<(OutlierConfig, usize)>,
    /// Use every target when none is eligible.
    panic_when_all_unhealthy: bool,
}

impl UpstreamSet {
    /// Builds an upstream from validated config.
    pub fn build(
        name: &str,
        cfg: &Upstream,
        pools: &Pools,
        metrics: &crate::metrics::Metrics,
    ) -> Self {
        let mut targets = Vec::new();
        let mut weights = Vec::new();
        for t in &cfg.targets {
            if let Ok(authority) = t.address().parse::<Authority>() {
                let pool = pools.get(PoolKey {
                    address: t.address().to_owned(),
                    protocol: match cfg.protocol {
                        UpstreamProtocol::Http1 => Protocol::Http1,
                        UpstreamProtocol::Http2 => Protocol::Http2,
                    },
                    connect: cfg.timeouts.connect.0,
                    idle: cfg.timeouts.idle.0,
                    max_idle: cfg.max_idle_per_target,
                });
                targets.push(Target {
                    address: Arc::from(t.address()),
                    authority,
                    pool,
                    metrics: metrics.target(name, t.address()),
                    draining: t.draining(),
                });
                weights.push(t.weight());
            }
        }
        UpstreamSet {
            name: Arc::from(name),
            balancer: Balancer::build(cfg, &targets, &weights),
            targets,
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

    /// What a consistent-hash key is made of, if this upstream hashes.
    pub fn hash_on(&self) -> Option<&HashOn> {
        self.balancer.hash_on()
    }

    /// The target for the next request (`hash`: the request's key hash, when hashing):
    /// among the healthy, not ejected targets; when there is none, among all of them if the
    /// upstream panics, else `None`.
    pub fn pick(&self, hash: Option<u64>) -> Option<&Target> {
        let now = crate::ratelimit::now();
        let targets = &self.targets;
        let eligible = |i: usize| !targets[i].draining && targets[i].pool.stats.eligible(now);
        self.balancer
            .pick(targets, hash, &eligible)
            .or_else(|| {
                // Panic mode sends to unhealthy targets, never to draining ones.
                self.panic_when_all_unhealthy
                    .then(|| self.balancer.pick(targets, hash, &|i| !targets[i].draining))
                    .flatten()
            })
            .and_then(|i| targets.get(i))
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
    pub fn pick_untried(&self, hash: Option<u64>, tried: &[Arc<str>]) -> Option<&Target> {
        let mut first = None;
        for _ in 0..self.targets.len().max(1) {
            let t = self.pick(hash)?;
            if !tried.contains(&t.address) {
                return Some(t);
            }
            first.get_or_insert(t);
        }
        first
    }

    /// The targets.
    pub fn targets(&self) -> Vec<&Target> {
        self.targets.iter().collect()
    }
}
