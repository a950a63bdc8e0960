//! Nanoseconds per call through a closed circuit breaker: admit, read the clock, record
//! a success, as the gateway does for every proxied request. One thread, and two threads
//! on one breaker (the lock contended). Goal: under 30 ns on the closed path.
//!
//! Run: `cargo bench -p floodgate-core --bench breaker`

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::OnceLock;

use criterion::{Criterion, criterion_group, criterion_main};
use floodgate_core::breaker::{Breaker, BreakerConfig, CallResult};
use floodgate_core::{MILLI, Nanos, SECOND};

/// The gateway's clock (quanta), as in benches/ratelimit.rs.
fn now() -> Nanos {
    static EPOCH: OnceLock<quanta::Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(quanta::Instant::now);
    quanta::Instant::now().duration_since(epoch).as_nanos() as Nanos
}

fn breaker() -> Breaker {
    Breaker::new(BreakerConfig {
        consecutive_failures: Some(5),
        failure_rate: Some(0.5),
        slow_call_rate: Some(0.5),
        slow_call: SECOND,
        minimum_calls: 20,
        window: 10 * SECOND,
        open_for: 5 * SECOND,
        multiplier: 2.0,
        max_open_for: 60 * SECOND,
        half_open_calls: 3,
        close_ratio: 1.0,
        probe_timeout: 10 * SECOND,
    })
}

fn call(b: &Breaker) {
    let t = now();
    let (ticket, _) = b.try_acquire(t);
    let ticket = ticket.unwrap();
    black_box(b.record(ticket, CallResult::Success(MILLI), t));
}

fn closed_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_closed");
    let b = breaker();
    g.bench_function("1_thread", |bench| bench.iter(|| call(&b)));
    g.bench_function("2_threads_one_breaker", |bench| {
        bench.iter_custom(|iters| {
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for _ in 0..iters.div_ceil(2) {
                            call(&b);
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    // Without the clock read: the breaker's own cost.
    g.bench_function("1_thread_no_clock", |bench| {
        let mut t: Nanos = 0;
        bench.iter(|| {
            t += 1000;
            let (ticket, _) = b.try_acquire(t);
            black_box(b.record(ticket.unwrap(), CallResult::Success(MILLI), t))
        })
    });
    g.finish();
}

criterion_group!(benches, closed_path);
criterion_main!(benches);
