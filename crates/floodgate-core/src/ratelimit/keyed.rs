//! Per-key limiter state within a memory bound.
//!
//! Keys are hashed once with a per-process random SipHash key ([`hash_key`]) and only the
//! 64-bit hash is stored: an attacker cannot choose keys that collide, and a key costs 8
//! bytes whatever its length. The table is split into shards, each behind its own mutex,
//! so threads deciding for different keys rarely meet. The mutex is parking_lot's: it spins
//! briefly before parking, which halves the cost of two threads deciding for one hot key
//! compared with std's (measured in benches/ratelimit.rs).
//!
//! Bounds, in the order they act:
//! - a key whose state is *at rest* (it would decide exactly like a new key) carries no
//!   information and is removed by [`KeyedLimiter::sweep`], which the gateway runs
//!   periodically: no loss;
//! - a shard at its share of `max_keys` makes room for a new key by evicting one chosen by
//!   the CLOCK (second chance) policy, an O(1) approximation of least recently used: keys
//!   wait in a ring in insertion order; one used since it last came up gets another
//!   round, the first one not used is evicted. An
//!   evicted key that comes back starts fresh, so under a flood of distinct keys a real
//!   client may be forgotten and get a new allowance; the count of such evictions is
//!   reported so an operator can raise `max_keys`. Memory never exceeds the bound.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Algorithm, Decision, Quota};
use crate::Nanos;

/// Hashes key bytes with the process's random SipHash key. The bytes are written without
/// a length prefix (`Hash for [u8]` adds one): each hash covers one whole key, so none is
/// needed, and short keys then take one SipHash block less.
pub fn hash_key(hasher: &RandomState, key: &[u8]) -> u64 {
    let mut h = hasher.build_hasher();
    h.write(key);
    h.finish()
}

/// The stored keys are already keyed hashes; hashing them again would only cost time.
/// (A hand-written hasher: std has no identity hasher.)
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Where in the 64-bit hash the shard number is taken from.
const SHARD_BITS_AT: u32 = 40;

type Table<S> = HashMap<u64, Slot<S>, BuildHasherDefault<IdentityHasher>>;

struct Slot<S> {
    state: S,
    /// Used since the CLOCK hand last passed it.
    referenced: bool,
}

/// One shard: the table and the CLOCK ring of its keys (same keys, insertion order).
struct Shard<S> {
    table: Table<S>,
    ring: VecDeque<u64>,
}

impl<S> Default for Shard<S> {
    fn default() -> Self {
        Shard {
            table: Table::default(),
            ring: VecDeque::new(),
        }
    }
}

impl<S> Shard<S> {
    fn evict_one(&mut self) -> bool {
        while let Some(h) = self.ring.pop_front() {
            match self.table.get_mut(&h) {
                None => {}
                Some(slot) if slot.referenced => {
                    slot.referenced = false;
                    self.ring.push_back(h);
                }
                Some(_) => {
                    self.table.remove(&h);
                    return true;
                }
            }
        }
        false
    }
}

/// Counts for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyedStats {
    /// Keys held now.
    pub keys: u64,
    /// Keys evicted while they still held state (the table was full).
    pub evicted: u64,
}

/// One algorithm applied per key, with per-key overrides (hot-key limits), in bounded memory.
pub struct KeyedLimiter<A: Algorithm> {
    default: A,
    /// The default's quota, computed once (it may take a 128-bit division).
    default_quota: Quota,
    overrides: HashMap<u64, (A, Quota), BuildHasherDefault<IdentityHasher>>,
    hasher: RandomState,
    shards: Box<[Mutex<Shard<A::State>>]>,
    /// `shards.len() - 1` (a power of two minus one).
    shard_mask: u64,
    per_shard: usize,
    keys: AtomicU64,
    evicted: AtomicU64,
}

impl<A: Algorithm> KeyedLimiter<A> {
    /// A limiter applying `default` to every key except those in `overrides` (raw key
    /// bytes with their own parameters), holding at most `max_keys` keys.
    pub fn new(default: A, overrides: Vec<(Vec<u8>, A)>, max_keys: usize) -> Self {
        let max_keys = max_keys.max(1);
        let shard_count = (max_keys / 4096).next_power_of_two().clamp(1, 32);
        let hasher = RandomState::new();
        let overrides = overrides
            .into_iter()
            .map(|(k, a): (Vec<u8>, A)| {
                let q = a.quota();
                (hash_key(&hasher, &k), (a, q))
            })
            .collect();
        KeyedLimiter {
            default_quota: default.quota(),
            default,
            overrides,
            shards: (0..shard_count).map(|_| Mutex::default()).collect(),
            shard_mask: shard_count as u64 - 1,
            per_shard: max_keys.div_ceil(shard_count),
            hasher,
            keys: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    /// Decides on a request of `cost` for `key` at `now`; returns the decision and the
    /// quota that applied to the key.
    pub fn check(&self, key: &[u8], now: Nanos, cost: u64) -> (Decision, Quota) {
        let h = hash_key(&self.hasher, key);
        let (alg, quota) = self
            .overrides
            .get(&h)
            .map_or((&self.default, self.default_quota), |(a, q)| (a, *q));
        // The shard comes from middle bits of the hash: the table inside a shard uses the
        // low bits for the bucket and the top seven as tags, which must stay varied.
        let shard = ((h >> SHARD_BITS_AT) & self.shard_mask) as usize;
        let mut shard = self.shards[shard].lock();
        if let Some(slot) = shard.table.get_mut(&h) {
            slot.referenced = true;
            return (alg.check(&mut slot.state, now, cost), quota);
        }
        let mut state = A::State::default();
        let decision = alg.check(&mut state, now, cost);
        if !alg.at_rest(&state, now) {
            if shard.table.len() >= self.per_shard && shard.evict_one() {
                self.keys.fetch_sub(1, Ordering::Relaxed);
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
            shard.table.insert(
                h,
                Slot {
                    state,
                    referenced: false,
                },
            );
            shard.ring.push_back(h);
            self.keys.fetch_add(1, Ordering::Relaxed);
        }
        (decision, quota)
    }

    /// Removes every key whose state is at rest at `now` (no information is lost).
    pub fn sweep(&self, now: Nanos) {
        for shard in &self.shards {
            let mut guard = shard.lock();
            let shard = &mut *guard;
            let before = shard.table.len();
            shard.table.retain(|h, slot| {
                let alg = self.overrides.get(h).map_or(&self.default, |(a, _)| a);
                !alg.at_rest(&slot.state, now)
            });
            let table = &shard.table;
            shard.ring.retain(|h| table.contains_key(h));
            let removed = (before - table.len()) as u64;
            self.keys.fetch_sub(removed, Ordering::Relaxed);
        }
    }

    /// Keys held and evictions so far.
    pub fn stats(&self) -> KeyedStats {
        KeyedStats {
            keys: self.keys.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }

    /// The quota of the default parameters.
    pub fn quota(&self) -> Quota {
        self.default_quota
    }

    /// The most memory the key tables can take, in bytes. A shard's hash table grows in
    /// powers of two, keeps an eighth free, and under churn (keys removed and added) grows
    /// once more rather than rehash in place while over half full; so it reaches at most
    /// the power of two above `16/7 × its share of max_keys` buckets, each an entry plus a
    /// control byte. The CLOCK ring adds 8 bytes per key. State kept outside the table
    /// (the sliding log's timestamps) comes on top: up to `limit × 8` bytes a key.
    pub fn memory_bound(&self) -> usize {
        let buckets = (self.per_shard * 16 / 7 + 1).next_power_of_two();
        let entry = std::mem::size_of::<(u64, Slot<A::State>)>() + 1;
        let ring = self.per_shard.next_power_of_two() * 8;
        self.shards.len() * (buckets * entry + ring)
    }

    /// The most the process's resident memory grows for the key tables: [`Self::memory_bound`]
    /// and half again. Tables and rings grow by doubling, and the allocator may keep the
    /// memory of the generation before the last (half the final size) instead of giving it
    /// back to the system.
    pub fn resident_bound(&self) -> usize {
        self.memory_bound() * 3 / 2
    }
}

/// A keyed limiter of any algorithm, for callers that pick the algorithm at run time.
pub trait DynLimiter: Send + Sync {
    /// See [`KeyedLimiter::check`].
    fn check(&self, key: &[u8], now: Nanos, cost: u64) -> (Decision, Quota);
    /// See [`KeyedLimiter::sweep`].
    fn sweep(&self, now: Nanos);
    /// See [`KeyedLimiter::stats`].
    fn stats(&self) -> KeyedStats;
    /// See [`KeyedLimiter::quota`].
    fn quota(&self) -> Quota;
}

impl<A: Algorithm> DynLimiter for KeyedLimiter<A> {
    fn check(&self, key: &[u8], now: Nanos, cost: u64) -> (Decision, Quota) {
        KeyedLimiter::check(self, key, now, cost)
    }
    fn sweep(&self, now: Nanos) {
        KeyedLimiter::sweep(self, now);
    }
    fn stats(&self) -> KeyedStats {
        KeyedLimiter::stats(self)
    }
    fn quota(&self) -> Quota {
        KeyedLimiter::quota(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SECOND;
    use crate::ratelimit::{Gcra, Rate, Verdict};

    #[test]
    fn keys_are_independent_and_overrides_apply() {
        let l = KeyedLimiter::new(
            Gcra::new(Rate::new(1, SECOND), 1),
            vec![(b"vip".to_vec(), Gcra::new(Rate::new(1, SECOND), 3))],
            100,
        );
        assert!(l.check(b"a", 0, 1).0.admitted());
        assert!(!l.check(b"a", 0, 1).0.admitted());
        assert!(l.check(b"b", 0, 1).0.admitted());
        for _ in 0..3 {
            assert!(l.check(b"vip", 0, 1).0.admitted());
        }
        let (d, q) = l.check(b"vip", 0, 1);
        assert!(matches!(d.verdict, Verdict::Reject { .. }));
        assert_eq!(q.quota, 3);
        assert_eq!(l.stats().keys, 3);
    }

    #[test]
    fn sweep_drops_only_keys_at_rest() {
        let l = KeyedLimiter::new(Gcra::new(Rate::new(1, SECOND), 1), vec![], 100);
        l.check(b"old", 0, 1);
        l.check(b"new", 5 * SECOND, 1);
        l.sweep(5 * SECOND + 1);
        assert_eq!(l.stats().keys, 1);
        // "new" still remembers its request.
        assert!(!l.check(b"new", 5 * SECOND + 1, 1).0.admitted());
    }

    #[test]
    fn never_holds_more_than_max_keys() {
        let l = KeyedLimiter::new(Gcra::new(Rate::new(1, 3600 * SECOND), 1), vec![], 1000);
        for i in 0..50_000u32 {
            l.check(&i.to_le_bytes(), u64::from(i), 1);
        }
        let stats = l.stats();
        assert!(stats.keys <= 1000, "{stats:?}");
        assert_eq!(stats.keys + stats.evicted, 50_000);
        let held: usize = l.shards.iter().map(|s| s.lock().table.len()).sum();
        assert_eq!(held as u64, stats.keys);
    }
}
