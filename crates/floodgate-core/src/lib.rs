//! Floodgate's governance algorithms: pure code with no sockets and no async runtime.
//! Every function that depends on time takes the current time as an argument ([`Nanos`]),
//! so tests drive a fake clock and the gateway drives a monotonic one.
//!
//! - [`ratelimit`]: token bucket, leaky bucket, fixed window, sliding window log, sliding
//!   window counter and GCRA, plus bounded keyed state ([`ratelimit::KeyedLimiter`]).
//! - [`concurrency`]: the gradient adaptive concurrency limit.
//! - [`breaker`]: the circuit breaker, single and keyed.
//! - [`bloom`]: a lock-free Bloom filter for existence checks.

pub mod balance;
pub mod bloom;
pub mod breaker;
pub mod concurrency;
pub mod outlier;
pub mod ratelimit;
pub mod retry;

/// A point in time or a span, in nanoseconds on the caller's monotonic timeline.
pub type Nanos = u64;

/// Nanoseconds in one second.
pub const SECOND: Nanos = 1_000_000_000;

/// Nanoseconds in one millisecond.
pub const MILLI: Nanos = 1_000_000;
