//! One breaker per key (a path parameter, a header...), within a memory bound.
//!
//! Keys are stored as their 64-bit keyed hash ([`crate::ratelimit::hash_key`]), so a key
//! costs the same whatever its length and cannot be chosen to collide. At `max_keys` a new
//! key makes room by evicting one chosen by the CLOCK policy, skipping breakers that are
//! not closed: forgetting an open breaker would let its key's traffic through again.
//! [`KeyedBreakers::sweep`] drops breakers at rest (closed, empty window): no loss.
//!
//! One mutex guards the table: a lookup is a hash probe and an `Arc` clone, and the
//! breaker's own lock is taken outside it.

use std::collections::{HashMap, VecDeque};
use std::hash::RandomState;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::{Breaker, BreakerConfig, State};
use crate::Nanos;
use crate::ratelimit::hash_key;

struct Slot {
    breaker: Arc<Breaker>,
    referenced: bool,
    /// The key as given (truncated), for the admin API.
    label: Box<str>,
}

#[derive(Default)]
struct Table {
    map: HashMap<u64, Slot>,
    ring: VecDeque<u64>,
}

/// Breakers by key, at most `max_keys` of them.
pub struct KeyedBreakers {
    cfg: BreakerConfig,
    hasher: RandomState,
    max_keys: usize,
    table: Mutex<Table>,
    evicted: AtomicU64,
}

/// Longest key label kept for display, in bytes.
const LABEL_MAX: usize = 64;

impl KeyedBreakers {
    /// An empty table of breakers configured by `cfg`.
    pub fn new(cfg: BreakerConfig, max_keys: usize) -> Self {
        KeyedBreakers {
            cfg,
            hasher: RandomState::new(),
            max_keys: max_keys.max(1),
            table: Mutex::new(Table::default()),
            evicted: AtomicU64::new(0),
        }
    }

    /// The breaker for `key`, made if new.
    pub fn get(&self, key: &[u8]) -> Arc<Breaker> {
        let h = hash_key(&self.hasher, key);
        let mut t = self.table.lock();
        if let Some(slot) = t.map.get_mut(&h) {
            slot.referenced = true;
            return slot.breaker.clone();
        }
        if t.map.len() >= self.max_keys && self.evict_one(&mut t) {
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        let breaker = Arc::new(Breaker::new(self.cfg.clone()));
        let label = String::from_utf8_lossy(&key[..key.len().min(LABEL_MAX)]);
        t.map.insert(
            h,
            Slot {
                breaker: breaker.clone(),
                referenced: false,
                label: label.into(),
            },
        );
        t.ring.push_back(h);
        breaker
    }

    fn evict_one(&self, t: &mut Table) -> bool {
        // Two rounds at most: the first clears reference bits. Breakers that are not
        // closed always get another round; if every one is open, the oldest goes.
        for _ in 0..2 * t.ring.len() {
            let Some(h) = t.ring.pop_front() else {
                return false;
            };
            match t.map.get_mut(&h) {
                None => continue,
                Some(slot) if slot.referenced || slot.breaker.state() != State::Closed => {
                    slot.referenced = false;
                    t.ring.push_back(h);
                }
                Some(_) => {
                    t.map.remove(&h);
                    return true;
                }
            }
        }
        match t.ring.pop_front() {
            Some(h) => t.map.remove(&h).is_some(),
            None => false,
        }
    }

    /// Drops every breaker at rest at `now`.
    pub fn sweep(&self, now: Nanos) {
        let mut t = self.table.lock();
        let t = &mut *t;
        t.map.retain(|_, slot| !slot.breaker.at_rest(now));
        let map = &t.map;
        t.ring.retain(|h| map.contains_key(h));
    }

    /// Breakers held.
    pub fn len(&self) -> usize {
        self.table.lock().map.len()
    }

    /// Whether no breaker is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Breakers evicted while the table was full.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Every breaker with its key label (the first 64 bytes, as text).
    pub fn list(&self) -> Vec<(Box<str>, Arc<Breaker>)> {
        self.table
            .lock()
            .map
            .values()
            .map(|s| (s.label.clone(), s.breaker.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SECOND;
    use crate::breaker::CallResult;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: Some(1),
            failure_rate: None,
            slow_call_rate: None,
            slow_call: SECOND,
            minimum_calls: 1,
            window: 10 * SECOND,
            open_for: 10 * SECOND,
            multiplier: 1.0,
            max_open_for: 10 * SECOND,
            half_open_calls: 1,
            close_ratio: 1.0,
            probe_timeout: SECOND,
        }
    }

    #[test]
    fn keys_have_their_own_breakers() {
        let k = KeyedBreakers::new(cfg(), 10);
        let a = k.get(b"a");
        let t = a.try_acquire(0).0.expect("closed");
        a.record(t, CallResult::Failure(0), 0);
        assert_eq!(a.state(), State::Open);
        assert_eq!(k.get(b"b").state(), State::Closed);
        assert!(Arc::ptr_eq(&a, &k.get(b"a")));
    }

    #[test]
    fn memory_is_bounded_and_open_breakers_are_kept() {
        let k = KeyedBreakers::new(cfg(), 100);
        let open = k.get(b"open");
        let t = open.try_acquire(0).0.expect("closed");
        open.record(t, CallResult::Failure(0), 0);
        for i in 0..10_000 {
            k.get(i.to_string().as_bytes());
        }
        assert_eq!(k.len(), 100);
        assert_eq!(k.evicted(), 10_000 + 1 - 100);
        assert!(
            Arc::ptr_eq(&open, &k.get(b"open")),
            "the open breaker stayed"
        );
    }

    #[test]
    fn sweep_keeps_only_breakers_with_state() {
        let k = KeyedBreakers::new(cfg(), 100);
        k.get(b"idle");
        let busy = k.get(b"busy");
        let t = busy.try_acquire(0).0.expect("closed");
        busy.record(t, CallResult::Success(0), 0);
        k.sweep(1);
        assert_eq!(k.len(), 1);
        assert_eq!(&*k.list()[0].0, "busy");
    }
}
