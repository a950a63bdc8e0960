//! State that outlives snapshots (bulkheads, circuit breakers): a reload that keeps a
//! policy's definition keeps its state, so it neither resets counts nor doubles places.
//! Entries are keyed by scope, name and the definition's text; a snapshot build marks
//! what it uses, and [`Kept::retain_built`] then drops the rest.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// Entries by identity.
pub struct Kept<T> {
    entries: Mutex<HashMap<String, Arc<T>>>,
    building: Mutex<HashSet<String>>,
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Kept {
            entries: Mutex::default(),
            building: Mutex::default(),
        }
    }
}

fn lock<X>(m: &Mutex<X>) -> MutexGuard<'_, X> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<T> Kept<T> {
    /// The entry for `scope`/`name` with definition `definition` (its `Debug` text), made
    /// by `make` if new.
    pub fn get_or_build(
        &self,
        scope: &str,
        name: &str,
        definition: &dyn std::fmt::Debug,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        let identity = format!("{scope}\u{0}{name}\u{0}{definition:?}");
        lock(&self.building).insert(identity.clone());
        lock(&self.entries)
            .entry(identity)
            .or_insert_with(|| Arc::new(make()))
            .clone()
    }

    /// Drops the entries not asked for since the last call.
    pub fn retain_built(&self) {
        let used = std::mem::take(&mut *lock(&self.building));
        lock(&self.entries).retain(|k, _| used.contains(k));
    }

    /// The entry for `scope`/`name`, whatever its definition.
    pub fn named(&self, scope: &str, name: &str) -> Option<Arc<T>> {
        let prefix = format!("{scope}\u{0}{name}\u{0}");
        lock(&self.entries)
            .iter()
            .find(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
    }

    /// Every entry.
    pub fn all(&self) -> Vec<Arc<T>> {
        lock(&self.entries).values().cloned().collect()
    }
}
