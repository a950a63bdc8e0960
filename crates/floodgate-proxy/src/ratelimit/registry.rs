//! Local limiter state that outlives snapshots: a reload reuses the state of every limit
//! whose route, name and definition are unchanged, and drops the rest. The periodic sweep
//! frees keys at rest and refreshes the key-count metrics.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use floodgate_core::ratelimit::DynLimiter;

use super::LimitMetrics;

struct Entry {
    limiter: Arc<dyn DynLimiter>,
    metrics: LimitMetrics,
    evicted_seen: u64,
}

/// Limiters by identity (route, limit name and definition).
#[derive(Default)]
pub struct LimiterRegistry {
    entries: Mutex<HashMap<String, Entry>>,
    /// Identities used by the snapshot being built.
    building: Mutex<HashSet<String>>,
}

impl LimiterRegistry {
    /// The limiter for `identity`, built by `build` if there is none yet.
    pub fn get_or_build(
        &self,
        identity: &str,
        metrics: &LimitMetrics,
        build: impl FnOnce() -> Arc<dyn DynLimiter>,
    ) -> Arc<dyn DynLimiter> {
        self.building
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(identity.to_owned());
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .entry(identity.to_owned())
            .or_insert_with(|| Entry {
                limiter: build(),
                metrics: metrics.clone(),
                evicted_seen: 0,
            })
            .limiter
            .clone()
    }

    /// Drops every limiter the snapshot just built does not use.
    pub fn retain_built(&self) {
        let used = std::mem::take(&mut *self.building.lock().unwrap_or_else(|p| p.into_inner()));
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|identity, e| {
            let keep = used.contains(identity);
            if !keep {
                e.metrics.keys.set(0);
            }
            keep
        });
    }

    /// Frees keys at rest in every limiter and updates the metrics.
    pub fn sweep(&self, now: floodgate_core::Nanos) {
        let limiters: Vec<_> = {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries.keys().cloned().collect()
        };
        for identity in limiters {
            let limiter = {
                let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
                match entries.get(&identity) {
                    Some(e) => e.limiter.clone(),
                    None => continue,
                }
            };
            limiter.sweep(now);
            let stats = limiter.stats();
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = entries.get_mut(&identity) {
                e.metrics
                    .keys
                    .set(i64::try_from(stats.keys).unwrap_or(i64::MAX));
                e.metrics
                    .evicted
                    .inc_by(stats.evicted.saturating_sub(e.evicted_seen));
                e.evicted_seen = stats.evicted;
            }
        }
    }
}
