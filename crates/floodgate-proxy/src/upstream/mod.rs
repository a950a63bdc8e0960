//! Upstreams: the targets of a named group, how the next one is picked, and the connection
//! pools used to reach them (see [`pool`]).
//!
//! Pools are kept in a registry keyed by target and connection settings, shared by every
//! worker thread and every snapshot, so a reload keeps warm connections. Balancing here is
//! weighted round robin; the upstreams issue brings the other algorithms, health checks and
//! retries.

pub mod pool;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodgate_config::model::Upstream;
use http::uri::Authority;

pub use pool::{ConnPool, ExchangeError, UpstreamConn};

#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    address: String,
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
}

/// A named group of targets, ready for traffic.
pub struct UpstreamSet {
    /// The upstream's name.
    pub name: Arc<str>,
    /// Targets, each repeated by its weight, for round robin.
    slots: Vec<Target>,
    next: AtomicUsize,
    /// Time allowed from sending the request to receiving the response head.
    pub request_timeout: Duration,
    /// The upstream's bulkhead, over all routes.
    pub concurrency: Option<Arc<crate::admission::Admission>>,
}

impl UpstreamSet {
    /// Builds an upstream from validated config.
    pub fn build(name: &str, cfg: &Upstream, pools: &Pools) -> Self {
        let mut slots = Vec::new();
        for t in &cfg.targets {
            if let Ok(authority) = t.address().parse::<Authority>() {
                let pool = pools.get(PoolKey {
                    address: t.address().to_owned(),
                    connect: cfg.timeouts.connect.0,
                    idle: cfg.timeouts.idle.0,
                    max_idle: cfg.max_idle_per_target,
                });
                let target = Target {
                    address: Arc::from(t.address()),
                    authority,
                    pool,
                };
                for _ in 0..t.weight() {
                    slots.push(target.clone());
                }
            }
        }
        UpstreamSet {
            name: Arc::from(name),
            slots,
            next: AtomicUsize::new(fastrand::usize(..usize::MAX / 2)),
            request_timeout: cfg.timeouts.request.0,
            concurrency: None,
        }
    }

    /// The next target in weighted round-robin order.
    pub fn pick(&self) -> Option<&Target> {
        if self.slots.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.slots.get(i % self.slots.len())
    }

    /// The distinct targets.
    pub fn targets(&self) -> Vec<&Target> {
        let mut out: Vec<&Target> = Vec::new();
        for t in &self.slots {
            if !out.iter().any(|o| o.address == t.address) {
                out.push(t);
            }
        }
        out
    }
}
