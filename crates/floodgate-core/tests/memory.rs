//! A flood of distinct keys cannot grow a keyed limiter past its bound. Its own test
//! binary (own process), so the resident set measured is this test's alone.

use floodgate_core::ratelimit::{KeyedLimiter, Rate, TokenBucket};
use floodgate_core::{MILLI, SECOND};

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kb * 1024
}

#[test]
fn one_million_distinct_keys_stay_within_the_bound() {
    const MAX_KEYS: usize = 100_000;
    // A slow refill, so every key holds state for the whole test.
    let limiter = KeyedLimiter::new(
        TokenBucket::new(Rate::new(1, 3600 * SECOND), 5),
        vec![],
        MAX_KEYS,
    );
    let bound = limiter.resident_bound();
    let before = rss_bytes();
    let mut key = [0u8; 24];
    for i in 0..1_000_000u64 {
        key[..8].copy_from_slice(&i.to_le_bytes());
        key[8..16].copy_from_slice(&(i ^ 0x9e37_79b9).to_le_bytes());
        assert!(limiter.check(&key, i * MILLI / 1000, 1).0.admitted());
    }
    let grown = rss_bytes().saturating_sub(before);
    let stats = limiter.stats();
    println!(
        "keys held {}, evicted {}, RSS grew {} KiB, tables at most {} KiB, resident at most {} KiB",
        stats.keys,
        stats.evicted,
        grown / 1024,
        limiter.memory_bound() / 1024,
        bound / 1024
    );
    assert!(stats.keys <= MAX_KEYS as u64);
    assert_eq!(stats.keys + stats.evicted, 1_000_000);
    assert!(grown <= bound, "RSS grew {grown} bytes, bound {bound}");
    // The bound means something: a million keys held (64-byte entries) would need more
    // than three times as much.
    assert!(bound * 3 < 1_000_000 * 64);
}
