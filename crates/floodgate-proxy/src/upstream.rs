//! Upstreams: the targets of a named group, how the next one is picked, and the pooled HTTP
//! client used to reach them.
//!
//! Clients are kept in a registry keyed by their settings and shared by every upstream with
//! the same settings, every worker thread and every snapshot, so a reload keeps warm pooled
//! connections. Balancing here is weighted round robin; the upstreams issue brings the other
//! algorithms, health checks and retries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodgate_config::model::Upstream;
use http::uri::Authority;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::RequestBody;

/// The client type every upstream exchange goes through.
pub type UpstreamClient = Client<HttpConnector, RequestBody>;

#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    connect: Duration,
    idle: Duration,
    max_idle: usize,
}

/// Pooled clients, one per distinct set of connection settings.
#[derive(Default)]
pub struct Clients {
    map: Mutex<HashMap<ClientKey, UpstreamClient>>,
}

impl Clients {
    fn get(&self, key: ClientKey) -> UpstreamClient {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.clone())
            .or_insert_with(|| {
                let mut conn = HttpConnector::new();
                conn.set_connect_timeout(Some(key.connect));
                conn.set_nodelay(true);
                conn.enforce_http(true);
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(key.idle)
                    .pool_max_idle_per_host(key.max_idle)
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .build(conn)
            })
            .clone()
    }
}

/// One backend server.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` as configured.
    pub address: Arc<str>,
    /// The same, parsed for building request URIs.
    pub authority: Authority,
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
    /// The pooled client.
    pub client: UpstreamClient,
}

impl UpstreamSet {
    /// Builds an upstream from validated config.
    pub fn build(name: &str, cfg: &Upstream, clients: &Clients) -> Self {
        let mut slots = Vec::new();
        for t in &cfg.targets {
            if let Ok(authority) = t.address().parse::<Authority>() {
                let target = Target {
                    address: Arc::from(t.address()),
                    authority,
                };
                for _ in 0..t.weight() {
                    slots.push(target.clone());
                }
            }
        }
        let key = ClientKey {
            connect: cfg.timeouts.connect.0,
            idle: cfg.timeouts.idle.0,
            max_idle: cfg.max_idle_per_target,
        };
        UpstreamSet {
            name: Arc::from(name),
            slots,
            next: AtomicUsize::new(fastrand::usize(..usize::MAX / 2)),
            request_timeout: cfg.timeouts.request.0,
            client: clients.get(key),
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
