//! The gateway's shared state: the current snapshot behind an `ArcSwap`, and the parts that
//! outlive snapshots (metrics, connection pools, the access log). Reload is here: build the new
//! snapshot completely, then swap; requests in flight keep the one they started with.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use floodgate_config::ValidConfig;

use crate::access_log::AccessLog;
use crate::admission::AdmissionRegistry;
use crate::breaker::BreakerRegistry;
use crate::metrics::Metrics;
use crate::ratelimit::LimiterRegistry;
use crate::ratelimit::cluster::ClusterClient;
use crate::snapshot::{Shared, Snapshot};
use crate::upstream::Pools;
use crate::upstream::dns::Resolvers;
use crate::upstream::health::HealthChecks;

/// Why a new config was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The change needs a restart (listeners are bound once).
    #[error("{0} (this change needs a restart; the running configuration is kept)")]
    NeedsRestart(String),
    /// A file the config names could not be used.
    #[error("{0} (the running configuration is kept)")]
    Unusable(BuildError),
}

/// Why a configuration that passed validation could not be built into a running gateway:
/// a file it names, or a part only the runtime can judge. Each names the part at fault.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A listener's certificate or key files.
    #[error("listener {listener:?}: TLS: {reason}")]
    ListenerTls {
        /// The listener's name.
        listener: String,
        /// What is wrong with its files.
        reason: String,
    },
    /// The token issuer's signing key.
    #[error("oauth2: {0}")]
    OAuth2(String),
    /// A route's JWT keys.
    #[error("routes[{route}].auth.jwt: {reason}")]
    JwtKeys {
        /// The route's index in `routes`.
        route: usize,
        /// What is wrong with its keys.
        reason: String,
    },
    /// The cluster's Redis client.
    #[error("{0}")]
    Cluster(String),
}

/// Reads every route's JWT key files, so an unusable one refuses the configuration.
fn check_jwt_keys(config: &ValidConfig) -> Result<(), BuildError> {
    let local = match &config.oauth2 {
        Some(o) => Some(crate::auth::oauth2::TokenIssuer::build(o).map_err(BuildError::OAuth2)?),
        None => None,
    };
    for (i, r) in config.routes.iter().enumerate() {
        if let Some(j) = r.auth.as_ref().and_then(|a| a.jwt.as_ref()) {
            crate::auth::jwt::JwtVerifier::compile(j, local.as_ref())
                .map_err(|reason| BuildError::JwtKeys { route: i, reason })?;
        }
    }
    Ok(())
}

/// Each listener's TLS server configuration, read from its files.
fn listener_tls(
    config: &ValidConfig,
) -> Result<Vec<Option<Arc<rustls::ServerConfig>>>, BuildError> {
    config
        .listeners
        .iter()
        .map(|l| {
            l.tls
                .as_ref()
                .map(|t| {
                    crate::tls_server::server_config(t).map_err(|reason| BuildError::ListenerTls {
                        listener: l.name.clone(),
                        reason,
                    })
                })
                .transpose()
        })
        .collect()
}

/// Shared state of a running gateway.
pub struct Gateway {
    current: ArcSwap<Snapshot>,
    generation: AtomicU64,
    /// Metrics for the whole process.
    pub metrics: Arc<Metrics>,
    /// Upstream connection pools, kept across reloads.
    pub pools: Pools,
    /// The access log.
    pub access_log: AccessLog,
    /// Local rate-limiter state, kept across reloads.
    pub limiters: LimiterRegistry,
    /// Bulkheads, kept across reloads.
    pub admissions: AdmissionRegistry,
    /// The cluster's Redis client (read at start).
    pub cluster: Option<Arc<ClusterClient>>,
    /// Active health-check tasks.
    pub health: HealthChecks,
    /// Target-name resolver tasks.
    pub resolvers: Resolvers,
    /// Circuit breakers, kept across reloads.
    pub breakers: BreakerRegistry,
    /// Basic-auth password checks (bounded, with remembered successes).
    pub basic: crate::auth::BasicVerifier,
    /// Existence filters, kept across reloads.
    pub existence: crate::kept::Kept<crate::existence::Existence>,
    /// Idempotency-key stores, kept across reloads.
    pub idempotency: crate::kept::Kept<crate::idempotency::KeyStore>,
    /// Open WebSocket tunnels by route, kept across reloads (so limits count them).
    pub tunnels: crate::kept::Kept<crate::websocket::TunnelCounts>,
    /// The HTTP cache, kept across reloads.
    pub cache: Arc<crate::cache::CacheState>,
    /// How the last reload went (none yet: `None`), for `/status`.
    last_reload: std::sync::Mutex<Option<ReloadRecord>>,
}

/// One reload's outcome.
#[derive(Debug, Clone)]
pub struct ReloadRecord {
    /// When it was tried.
    pub at: std::time::SystemTime,
    /// What asked for it (`SIGHUP`, `file change`).
    pub cause: String,
    /// The generation it made, or why the file was refused.
    pub outcome: Result<u64, String>,
    /// What it changed (see [`floodgate_config::diff::changes`]).
    pub changes: Vec<String>,
}

impl Gateway {
    /// Creates the gateway with its first snapshot. Makes no connection: the cluster's
    /// Redis is reached on first use (see [`Gateway::start_background`]).
    pub fn new(
        config: ValidConfig,
        metrics: Arc<Metrics>,
        access_log: AccessLog,
    ) -> Result<Arc<Self>, BuildError> {
        let cluster = match &config.cluster {
            Some(c) => {
                metrics.register_cluster();
                Some(Arc::new(
                    ClusterClient::new(c, metrics.cluster.clone()).map_err(BuildError::Cluster)?,
                ))
            }
            None => None,
        };
        let pools = Pools::default();
        let limiters = LimiterRegistry::default();
        let admissions = AdmissionRegistry::default();
        let breakers = BreakerRegistry::default();
        let existence = crate::kept::Kept::default();
        let idempotency = crate::kept::Kept::default();
        let tunnels = crate::kept::Kept::default();
        let cache = Arc::new(crate::cache::CacheState::new(&config.cache));
        let tls = listener_tls(&config)?;
        check_jwt_keys(&config)?;
        let snap = Snapshot::build(
            config,
            1,
            &Shared {
                pools: &pools,
                metrics: &metrics,
                limiters: &limiters,
                admissions: &admissions,
                breakers: &breakers,
                existence: &existence,
                idempotency: &idempotency,
                tunnels: &tunnels,
                cache: &cache,
                listener_tls: &tls,
                cluster: cluster.as_ref(),
            },
        );
        Ok(Arc::new(Gateway {
            current: ArcSwap::from_pointee(snap),
            generation: AtomicU64::new(1),
            metrics,
            pools,
            access_log,
            limiters,
            admissions,
            cluster,
            health: HealthChecks::default(),
            resolvers: Resolvers::default(),
            breakers,
            basic: crate::auth::BasicVerifier::default(),
            existence,
            idempotency,
            tunnels,
            cache,
            last_reload: std::sync::Mutex::new(None),
        }))
    }

    /// Keeps `record` as the last reload's.
    pub fn record_reload(&self, record: ReloadRecord) {
        *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(record);
    }

    /// The last reload's outcome, if there was one.
    pub fn last_reload(&self) -> Option<ReloadRecord> {
        self.last_reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Starts the gateway's background work on the current runtime: the cluster heartbeat
    /// and the periodic sweep of idle pooled connections and rate-limit keys at rest.
    pub fn start_background(self: &Arc<Self>) {
        if let Some(c) = &self.cluster {
            tokio::spawn(c.clone().heartbeat_loop());
            tokio::spawn(crate::cache::broadcast::listen(
                c.clone(),
                self.cache.clone(),
            ));
        }
        self.sync_upstream_tasks(&self.snapshot());
        let gw = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(gw) = gw.upgrade() else { return };
                gw.pools.sweep();
                gw.limiters.sweep(crate::ratelimit::now());
                gw.breakers.sweep();
                let store = gw.cache.store();
                store.sync();
                let (entries, bytes) = store.usage();
                gw.metrics.cache.usage(entries, bytes);
            }
        });
    }

    /// Starts the health checks and name resolvers `snap`'s upstreams need, and stops
    /// those of the previous snapshot it no longer has.
    fn sync_upstream_tasks(self: &Arc<Self>, snap: &Snapshot) {
        self.health
            .sync(snap.upstreams.values(), &self.metrics.upstreams);
        let gw = Arc::downgrade(self);
        let on_resolved: crate::upstream::dns::OnResolved = Arc::new(move |set, resolved| {
            let Some(gw) = gw.upgrade() else {
                return false;
            };
            set.apply_resolved(resolved, &gw.registries());
            gw.health
                .sync(gw.snapshot().upstreams.values(), &gw.metrics.upstreams);
            true
        });
        let dns = &snap.config.dns;
        self.resolvers.sync(
            snap.upstreams.values(),
            dns.refresh.0,
            dns.hosts_file.as_deref(),
            &on_resolved,
        );
    }

    /// The registries upstream targets are built against.
    pub fn registries(&self) -> crate::upstream::Registries<'_> {
        crate::upstream::Registries {
            pools: &self.pools,
            metrics: &self.metrics.upstreams,
            breaker_metrics: &self.metrics.breakers,
            breakers: &self.breakers,
        }
    }

    /// The snapshot in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Applies a new validated config, or refuses it and keeps the current one; the new
    /// generation and what changed.
    pub fn reload(
        self: &Arc<Self>,
        config: ValidConfig,
    ) -> Result<(u64, Vec<String>), ReloadError> {
        let old = self.snapshot();
        let changes = floodgate_config::diff::changes(&old.config, &config);
        let before: Vec<_> = old
            .config
            .listeners
            .iter()
            .map(|l| (&l.name, l.address))
            .collect();
        let after: Vec<_> = config
            .listeners
            .iter()
            .map(|l| (&l.name, l.address))
            .collect();
        if before != after {
            return Err(ReloadError::NeedsRestart(
                "listener names or addresses changed".into(),
            ));
        }
        if format!("{:?}", old.config.cluster) != format!("{:?}", config.cluster) {
            return Err(ReloadError::NeedsRestart(
                "the cluster section changed".into(),
            ));
        }
        if old.config.admin.address != config.admin.address {
            return Err(ReloadError::NeedsRestart(
                "the admin address changed".into(),
            ));
        }
        let tls = listener_tls(&config).map_err(ReloadError::Unusable)?;
        check_jwt_keys(&config).map_err(ReloadError::Unusable)?;
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let snap = Snapshot::build(
            config,
            generation,
            &Shared {
                pools: &self.pools,
                metrics: &self.metrics,
                limiters: &self.limiters,
                admissions: &self.admissions,
                breakers: &self.breakers,
                existence: &self.existence,
                idempotency: &self.idempotency,
                tunnels: &self.tunnels,
                cache: &self.cache,
                listener_tls: &tls,
                cluster: self.cluster.as_ref(),
            },
        );
        let snap = Arc::new(snap);
        self.current.store(snap.clone());
        self.sync_upstream_tasks(&snap);
        self.pools.prune();
        Ok((generation, changes))
    }
}
