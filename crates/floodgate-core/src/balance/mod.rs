//! Load-balancing algorithms, pure: the data plane keeps the per-target counters and asks
//! these functions which target to use.
//!
//! - [`SmoothWeighted`]: smooth weighted round robin (nginx's), precomputed into one cycle
//!   so a pick is one atomic increment in the caller.
//! - [`p2c`]: power of two choices: of two distinct random targets, the one with the lower
//!   cost (least requests in flight, or peak-EWMA latency × in flight).
//! - [`PeakEwma`]: a latency average that jumps to peaks at once and decays slowly.
//! - [`Maglev`]: consistent hashing by lookup table, with an optional bounded-load walk.
//! - [`stable_hash`]: the key hash consistent hashing uses; the same on every node.

mod ewma;
mod maglev;
mod smooth;

pub use ewma::PeakEwma;
pub use maglev::{Maglev, bounded_capacity};
pub use smooth::SmoothWeighted;

/// Of two distinct candidates `a` and `b` (indexes below `n`, drawn at random by the
/// caller), the one with the lower `cost`; `a` on a tie. With one target, 0.
pub fn p2c(n: usize, a: usize, b: usize, cost: impl Fn(usize) -> f64) -> usize {
    if n <= 1 {
        return 0;
    }
    let (a, b) = (a % n, b % n);
    let b = if a == b { (b + 1) % n } else { b };
    if cost(b) < cost(a) { b } else { a }
}

/// A 64-bit hash of `bytes` that is the same in every process and every build: FNV-1a
/// followed by MurmurHash3's finaliser for good low bits. (Hand-written because std's
/// hashers are randomly keyed or not promised stable, and every node of a fleet must send
/// a key to the same target.)
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p2c_takes_the_cheaper_of_two_distinct() {
        let costs = [5.0, 1.0, 3.0];
        assert_eq!(p2c(3, 0, 1, |i| costs[i]), 1);
        assert_eq!(p2c(3, 2, 0, |i| costs[i]), 2);
        // Same index drawn twice: the next one is the second candidate.
        assert_eq!(p2c(3, 0, 0, |i| costs[i]), 1);
        assert_eq!(p2c(1, 0, 0, |_| 0.0), 0);
    }

    #[test]
    fn the_stable_hash_is_stable() {
        assert_ne!(stable_hash(b"a"), stable_hash(b"b"));
        // Spread: a thousand keys hash apart, and the top bit (which Maglev's table index
        // depends on as much as any) is set for about half.
        let hashes: std::collections::HashSet<u64> = (0..1000u32)
            .map(|i| stable_hash(format!("key-{i}").as_bytes()))
            .collect();
        assert_eq!(hashes.len(), 1000);
        let high = hashes.iter().filter(|h| *h >> 63 == 1).count();
        assert!((400..600).contains(&high), "{high}");
        // Pinned: a change here would move every consistent-hash key in a running fleet.
        assert_eq!(stable_hash(b"user-42"), 0xa39532c7ab051e8d);
    }
}
