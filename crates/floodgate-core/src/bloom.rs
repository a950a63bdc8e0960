//! A Bloom filter for existence checks (cache-penetration protection): "certainly absent"
//! or "maybe present", sized from the expected number of keys and the false-positive rate
//! wanted. Lock-free: bits are set with atomic OR, so inserts and lookups run concurrently.
//! Keys are hashed once with the process's random SipHash key into two 64-bit values, from
//! which the k bit positions are derived (Kirsch–Mitzenmacher double hashing).

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fixed-size Bloom filter.
pub struct Bloom {
    words: Box<[AtomicU64]>,
    bits: u64,
    hashes: u32,
    hasher: RandomState,
}

impl Bloom {
    /// A filter for `expected` keys at false-positive rate `rate` (0 < rate < 1):
    /// m = ⌈−n·ln p / (ln 2)²⌉ bits and k = round(m/n · ln 2) hashes.
    pub fn new(expected: u64, rate: f64) -> Self {
        let n = expected.max(1) as f64;
        let p = rate.clamp(1e-9, 0.5);
        let ln2 = std::f64::consts::LN_2;
        let bits = ((-n * p.ln()) / (ln2 * ln2)).ceil().max(64.0) as u64;
        let hashes = ((bits as f64 / n) * ln2).round().clamp(1.0, 30.0) as u32;
        let words = bits.div_ceil(64);
        Bloom {
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
            bits: words * 64,
            hashes,
            hasher: RandomState::new(),
        }
    }

    fn positions(&self, key: &[u8]) -> impl Iterator<Item = u64> + '_ {
        let mut h = self.hasher.build_hasher();
        h.write(key);
        let h1 = h.finish();
        h.write_u8(0xff);
        let h2 = h.finish() | 1;
        (0..u64::from(self.hashes)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % self.bits)
    }

    /// Adds a key.
    pub fn insert(&self, key: &[u8]) {
        for bit in self.positions(key) {
            self.words[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Relaxed);
        }
    }

    /// False: the key was certainly never inserted. True: it may have been.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.positions(key).all(|bit| {
            self.words[(bit / 64) as usize].load(Ordering::Relaxed) & (1 << (bit % 64)) != 0
        })
    }

    /// The filter's size in bytes.
    pub fn bytes(&self) -> usize {
        self.words.len() * 8
    }

    /// The number of hash functions.
    pub fn hashes(&self) -> u32 {
        self.hashes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_the_false_positive_rate_holds() {
        let b = Bloom::new(100_000, 0.01);
        for i in 0..100_000u32 {
            b.insert(format!("present-{i}").as_bytes());
        }
        assert!((0..100_000u32).all(|i| b.contains(format!("present-{i}").as_bytes())));
        let fp = (0..100_000u32)
            .filter(|i| b.contains(format!("absent-{i}").as_bytes()))
            .count();
        // 1% expected; allow for chance.
        assert!(fp < 1_300, "{fp} false positives of 100000");
        // ≈ 9.6 bits per key and 7 hashes for 1%.
        assert_eq!(b.hashes(), 7);
        assert!((110_000..130_000).contains(&b.bytes()), "{}", b.bytes());
    }
}
