//! Nanoseconds per rate-limit decision, every algorithm, against the `governor` crate in
//! the same run: one key and 10,000 keys, one and two threads. Every decision reads the
//! clock, as in the gateway (both read quanta's clock: governor's default).
//! Limits are set high enough that every request is admitted: the cost of the common case.
//!
//! Run: `cargo bench -p floodgate-core --bench ratelimit`

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use floodgate_core::ratelimit::{
    Algorithm, FixedWindow, Gcra, KeyedLimiter, LeakyBucket, Rate, SlidingLog, SlidingWindow,
    TokenBucket,
};
use floodgate_core::{Nanos, SECOND};

const KEYS: u64 = 10_000;

/// The gateway's clock (floodgate-proxy's `ratelimit::now`): quanta, the TSC-based clock
/// governor also reads, at a third of `std::time::Instant`'s cost on this machine.
fn now() -> Nanos {
    static EPOCH: OnceLock<quanta::Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(quanta::Instant::now);
    quanta::Instant::now().duration_since(epoch).as_nanos() as Nanos
}

fn key_bytes() -> Vec<[u8; 8]> {
    (0..KEYS).map(|k| k.to_le_bytes()).collect()
}

/// Runs `op(i)` `iters` times spread over `threads` threads; wall time for all.
fn timed(threads: u64, iters: u64, op: &(dyn Fn(u64) + Sync)) -> Duration {
    let per = iters.div_ceil(threads);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in 0..per {
                    op(t * 7919 + i);
                }
            });
        }
    });
    start.elapsed()
}

fn ours<A: Algorithm>(c: &mut Criterion, name: &str, alg: impl Fn() -> A) {
    let keys = key_bytes();
    for threads in [1u64, 2] {
        let mut g = c.benchmark_group(format!("{threads}-thread"));
        let one = KeyedLimiter::new(alg(), vec![], 100_000);
        g.bench_function(BenchmarkId::new(name, "1-key"), |b| {
            b.iter_custom(|iters| {
                timed(threads, iters, &|_| {
                    black_box(one.check(b"k", now(), 1));
                })
            })
        });
        let many = KeyedLimiter::new(alg(), vec![], 100_000);
        g.bench_function(BenchmarkId::new(name, "10k-keys"), |b| {
            b.iter_custom(|iters| {
                timed(threads, iters, &|i| {
                    black_box(many.check(&keys[(i % KEYS) as usize], now(), 1));
                })
            })
        });
        g.finish();
    }
}

fn governor(c: &mut Criterion) {
    let quota = governor::Quota::per_second(NonZeroU32::new(1_000_000).unwrap())
        .allow_burst(NonZeroU32::new(1_000_000).unwrap());
    for threads in [1u64, 2] {
        let mut g = c.benchmark_group(format!("{threads}-thread"));
        let direct = governor::RateLimiter::direct(quota);
        g.bench_function(BenchmarkId::new("governor-direct", "1-key"), |b| {
            b.iter_custom(|iters| {
                timed(threads, iters, &|_| {
                    black_box(direct.check().is_ok());
                })
            })
        });
        let keyed = governor::RateLimiter::<u64, _, _>::keyed(quota);
        g.bench_function(BenchmarkId::new("governor-keyed", "1-key"), |b| {
            b.iter_custom(|iters| {
                timed(threads, iters, &|_| {
                    black_box(keyed.check_key(&1).is_ok());
                })
            })
        });
        let keyed = governor::RateLimiter::<u64, _, _>::keyed(quota);
        g.bench_function(BenchmarkId::new("governor-keyed", "10k-keys"), |b| {
            b.iter_custom(|iters| {
                timed(threads, iters, &|i| {
                    black_box(keyed.check_key(&(i % KEYS)).is_ok());
                })
            })
        });
        g.finish();
    }
}

fn all(c: &mut Criterion) {
    // A million per second: never refuses, and realistic magnitudes.
    let fast = Rate::new(1_000_000, SECOND);
    c.bench_function("clock/std-Instant", |b| {
        b.iter(|| black_box(Instant::now()))
    });
    c.bench_function("clock/quanta-Instant", |b| {
        b.iter(|| black_box(quanta::Instant::now()))
    });
    c.bench_function("clock/bench-now", |b| b.iter(|| black_box(now())));
    governor(c);
    ours(c, "gcra", || Gcra::new(fast, 1_000_000));
    ours(c, "token_bucket", || TokenBucket::new(fast, 1_000_000));
    ours(c, "leaky_bucket", || {
        LeakyBucket::new(fast, 1_000_000, u64::MAX, None)
    });
    ours(c, "fixed_window", || FixedWindow::new(fast));
    ours(c, "sliding_window", || SlidingWindow::new(fast));
    // The log keeps one timestamp per request in the window: a short window keeps it small.
    ours(c, "sliding_log", || {
        SlidingLog::new(Rate::new(10_000, SECOND / 1000))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = all
}
criterion_main!(benches);
