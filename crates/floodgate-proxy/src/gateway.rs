//! The gateway's shared state: the current snapshot behind an `ArcSwap`, and the parts that
//! outlive snapshots (metrics, connection pools, the access log). Reload is here: build the new
//! snapshot completely, then swap; requests in flight keep the one they started with.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use floodgate_config::ValidConfig;

use crate::access_log::AccessLog;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::upstream::Pools;

/// Why a new config was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The change needs a restart (listeners are bound once).
    #[error("{0} (this change needs a restart; the running configuration is kept)")]
    NeedsRestart(String),
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
}

impl Gateway {
    /// Creates the gateway with its first snapshot.
    pub fn new(config: ValidConfig, metrics: Arc<Metrics>, access_log: AccessLog) -> Arc<Self> {
        let pools = Pools::default();
        let snap = Snapshot::build(config, 1, &pools, &metrics);
        Arc::new(Gateway {
            current: ArcSwap::from_pointee(snap),
            generation: AtomicU64::new(1),
            metrics,
            pools,
            access_log,
        })
    }

    /// The snapshot in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Applies a new validated config, or refuses it and keeps the current one.
    pub fn reload(&self, config: ValidConfig) -> Result<u64, ReloadError> {
        let old = self.snapshot();
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
        if old.config.admin.address != config.admin.address {
            return Err(ReloadError::NeedsRestart(
                "the admin address changed".into(),
            ));
        }
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let snap = Snapshot::build(config, generation, &self.pools, &self.metrics);
        self.current.store(Arc::new(snap));
        self.pools.prune();
        Ok(generation)
    }
}
