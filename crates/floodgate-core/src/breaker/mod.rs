//! The circuit breaker: closed → open → half-open → closed (or open again).
//!
//! - **Closed**: every call goes through. Results land in a sliding window of
//!   [`BUCKETS`] time buckets. The breaker trips when any configured rule holds:
//!   `consecutive_failures` failures in a row; or, once the window holds at least
//!   `minimum_calls` calls, failures / calls **≥** `failure_rate`, or slow calls / calls
//!   **≥** `slow_call_rate` (a slow call takes at least `slow_call`). Rates are compared
//!   in integer parts per million, so 3 failures of 10 trip a 30% rule exactly.
//! - **Open**: calls are refused, for `open_for × multiplier^(n-1)` on the n-th trip in a
//!   row (at most `max_open_for`). The first call after that time moves it to half-open.
//! - **Half-open**: at most `half_open_calls` probes are admitted. It closes once
//!   `⌈close_ratio × half_open_calls⌉` probes succeeded and opens again (the next, longer,
//!   open time) as soon as that can no longer happen. A slow probe counts as a failure.
//!   A probe whose result has not come within `probe_timeout` gives its place back, so a
//!   hung or lost probe can never wedge the breaker in half-open.
//!
//! A call admitted in one state whose result arrives after the breaker moved on (a
//! generation later) is ignored: it says nothing about the new state. A cancelled call
//! ([`Breaker::release`]) counts as neither success nor failure.
//!
//! The closed path takes no lock: one atomic load to admit, and a few relaxed atomic
//! adds to record (benches/breaker.rs). The lock is for open and half-open, and trips.

pub mod keyed;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::Nanos;

/// Buckets the sliding window is split into.
pub const BUCKETS: usize = 10;

/// Parts per million: rates are compared as integers.
const PPM: u64 = 1_000_000;

/// When a breaker trips and how it recovers.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Trip after this many failures in a row.
    pub consecutive_failures: Option<u32>,
    /// Trip when failures / calls in the window reaches this (0..=1).
    pub failure_rate: Option<f64>,
    /// Trip when slow calls / calls in the window reaches this (0..=1).
    pub slow_call_rate: Option<f64>,
    /// A call taking at least this long is slow.
    pub slow_call: Nanos,
    /// The rates are only judged once the window holds this many calls.
    pub minimum_calls: u32,
    /// The sliding window's length.
    pub window: Nanos,
    /// Open time after the first trip.
    pub open_for: Nanos,
    /// Open time grows by this factor per trip in a row (1 = constant).
    pub multiplier: f64,
    /// Longest open time.
    pub max_open_for: Nanos,
    /// Probes admitted in half-open.
    pub half_open_calls: u32,
    /// Share of the probes that must succeed to close (0..=1).
    pub close_ratio: f64,
    /// A probe with no result after this long gives its place back.
    pub probe_timeout: Nanos,
}

impl BreakerConfig {
    fn open_time(&self, trips: u32) -> Nanos {
        let factor = self
            .multiplier
            .max(1.0)
            .powi(trips.saturating_sub(1) as i32);
        let t = self.open_for as f64 * factor;
        if t >= self.max_open_for as f64 {
            self.max_open_for.max(self.open_for)
        } else {
            t as Nanos
        }
    }

    /// Probe successes needed to close.
    fn needed(&self) -> u32 {
        let calls = self.half_open_calls.max(1);
        let n = (self.close_ratio.clamp(0.0, 1.0) * f64::from(calls)).ceil() as u32;
        n.clamp(1, calls)
    }
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls go through.
    Closed = 0,
    /// Calls are refused.
    Open = 1,
    /// A few probe calls go through.
    HalfOpen = 2,
}

impl State {
    fn from_bits(b: u64) -> State {
        match b & 3 {
            0 => State::Closed,
            1 => State::Open,
            _ => State::HalfOpen,
        }
    }

    /// Lower-case name, for metrics, logs and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// A change of state, for the caller to log and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// Why it opened (for a move to open).
    pub cause: Option<Trip>,
}

/// What tripped a breaker open, with the counts that did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trip {
    /// `consecutive_failures`, `failure_rate`, `slow_call_rate` or `half_open_probe`
    /// (a probe failed).
    pub rule: &'static str,
    /// Failures in a row when it tripped.
    pub consecutive: u32,
    /// The closed window's counts when it tripped (the probes', from half-open).
    pub window: WindowCounts,
}

/// An admitted call, to hand back with its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    generation: u64,
    /// The probe's number, in half-open.
    probe: Option<u64>,
}

impl Ticket {
    /// Whether the call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }
}

/// The answer to a call that may not go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Time until the breaker admits probes (zero in half-open: probes are all out).
    pub retry_after: Nanos,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    /// It succeeded, after this long.
    Success(Nanos),
    /// It failed, after this long.
    Failure(Nanos),
}

/// The window's counts, for the admin API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowCounts {
    /// Calls.
    pub calls: u32,
    /// Failed calls.
    pub failures: u32,
    /// Slow calls.
    pub slow: u32,
}

/// What the admin API shows of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// The state.
    pub state: State,
    /// Counts in the closed window (closed) or of the probes (half-open: failures and
    /// successes so far, `calls` = probes judged).
    pub window: WindowCounts,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Open: time until half-open.
    pub half_open_in: Option<Nanos>,
    /// Trips in a row (sets the open time).
    pub trips: u32,
    /// Probes in flight (half-open).
    pub probes_in_flight: u32,
}

/// Half-open and open bookkeeping, behind the breaker's lock.
#[derive(Debug)]
struct Inner {
    state: State,
    generation: u64,
    /// Open: when half-open begins.
    open_until: Nanos,
    /// Trips since the breaker last closed.
    trips: u32,
    /// Half-open: probes out (number, deadline), successes and failures so far.
    probes: Vec<(u64, Nanos)>,
    next_probe: u64,
    probe_ok: u32,
    probe_failed: u32,
}

/// One count of one bucket: `bucket number (low 32 bits) << 32 | count`. A stamp that is
/// not the bucket's current number means the count is from an earlier lap of the ring.
#[derive(Debug, Default)]
struct Cell(AtomicU64);

impl Cell {
    fn add(&self, stamp: u64) {
        let cur = self.0.load(Ordering::Relaxed);
        if cur >> 32 == stamp {
            self.0.fetch_add(1, Ordering::Relaxed);
        } else if self
            .0
            .compare_exchange(cur, stamp << 32 | 1, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
            && self.0.load(Ordering::Relaxed) >> 32 == stamp
        {
            // Another call started the bucket first.
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn get(&self, stamp: u64) -> u32 {
        let v = self.0.load(Ordering::Relaxed);
        if v >> 32 == stamp { v as u32 } else { 0 }
    }
}

/// The closed state's sliding window: per bucket, calls, failures and slow calls. Updated
/// without the lock (three relaxed atomics); a count racing a bucket's reset may be lost,
/// which moves a rate by one call in thousands at most.
#[derive(Debug, Default)]
struct Window {
    calls: [Cell; BUCKETS],
    failures: [Cell; BUCKETS],
    slow: [Cell; BUCKETS],
    consecutive: AtomicU32,
}

/// One circuit breaker. Thread-safe; every method takes the current time.
#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    /// `⌈2⁶⁴ / bucket_len⌉`: `now × recip >> 64` is the bucket number (one multiply in
    /// place of a 64-bit division; it can only be one too high for the last nanosecond
    /// of a bucket).
    recip: u64,
    window: Window,
    failure_ppm: Option<u64>,
    slow_ppm: Option<u64>,
    /// `generation << 2 | state`: the closed path reads only this.
    word: AtomicU64,
    inner: Mutex<Inner>,
}

fn ppm(rate: f64) -> u64 {
    (rate.clamp(0.0, 1.0) * PPM as f64).round() as u64
}

impl Breaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig) -> Self {
        let bucket_len = (cfg.window / BUCKETS as u64).max(2);
        Breaker {
            recip: (u128::from(u64::MAX) / u128::from(bucket_len)) as u64 + 1,
            window: Window::default(),
            failure_ppm: cfg.failure_rate.map(ppm),
            slow_ppm: cfg.slow_call_rate.map(ppm),
            word: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                state: State::Closed,
                generation: 0,
                open_until: 0,
                trips: 0,
                probes: Vec::new(),
                next_probe: 0,
                probe_ok: 0,
                probe_failed: 0,
            }),
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    /// The state as last published (no lock; an open breaker whose time is up still
    /// reads open until a call arrives).
    pub fn state(&self) -> State {
        State::from_bits(self.word.load(Ordering::Acquire))
    }

    /// Asks to make a call at `now`.
    pub fn try_acquire(&self, now: Nanos) -> (Result<Ticket, Refusal>, Option<Transition>) {
        let word = self.word.load(Ordering::Acquire);
        if State::from_bits(word) == State::Closed {
            return (
                Ok(Ticket {
                    generation: word >> 2,
                    probe: None,
                }),
                None,
            );
        }
        let mut g = self.inner.lock();
        let mut transition = None;
        if g.state == State::Open {
            if now < g.open_until {
                return (
                    Err(Refusal {
                        retry_after: g.open_until - now,
                    }),
                    None,
                );
            }
            self.enter(&mut g, State::HalfOpen);
            transition = Some(Transition {
                from: State::Open,
                to: State::HalfOpen,
                cause: None,
            });
        }
        match g.state {
            State::Closed => (
                Ok(Ticket {
                    generation: g.generation,
                    probe: None,
                }),
                transition,
            ),
            State::HalfOpen => {
                // Places of probes that never reported come back.
                g.probes.retain(|&(_, deadline)| now < deadline);
                let used = g.probes.len() as u32 + g.probe_ok + g.probe_failed;
                if used >= self.cfg.half_open_calls.max(1) {
                    return (Err(Refusal { retry_after: 0 }), transition);
                }
                let id = g.next_probe;
                g.next_probe += 1;
                let deadline = now.saturating_add(self.cfg.probe_timeout);
                g.probes.push((id, deadline));
                (
                    Ok(Ticket {
                        generation: g.generation,
                        probe: Some(id),
                    }),
                    transition,
                )
            }
            State::Open => unreachable!("left above"),
        }
    }

    /// Reports the result of an admitted call at `now`.
    pub fn record(&self, ticket: Ticket, result: CallResult, now: Nanos) -> Option<Transition> {
        let (failed, took) = match result {
            CallResult::Success(t) => (false, t),
            CallResult::Failure(t) => (true, t),
        };
        let slow = took >= self.cfg.slow_call;
        if ticket.probe.is_none() {
            let word = self.word.load(Ordering::Acquire);
            if word >> 2 != ticket.generation || State::from_bits(word) != State::Closed {
                return None;
            }
            return self.record_closed(ticket, failed, slow, now);
        }
        let mut g = self.inner.lock();
        if ticket.generation != g.generation {
            return None;
        }
        match (g.state, ticket.probe) {
            (State::HalfOpen, Some(id)) => {
                let Some(i) = g.probes.iter().position(|&(p, _)| p == id) else {
                    // Timed out: its place was already given back.
                    return None;
                };
                g.probes.swap_remove(i);
                if failed || slow {
                    g.probe_failed += 1;
                } else {
                    g.probe_ok += 1;
                }
                let needed = self.cfg.needed();
                let allowed_failures = self.cfg.half_open_calls.max(1) - needed;
                if g.probe_ok >= needed {
                    g.trips = 0;
                    self.enter(&mut g, State::Closed);
                    Some(Transition {
                        from: State::HalfOpen,
                        to: State::Closed,
                        cause: None,
                    })
                } else if g.probe_failed > allowed_failures {
                    let window = WindowCounts {
                        calls: g.probe_ok + g.probe_failed,
                        failures: g.probe_failed,
                        slow: 0,
                    };
                    self.trip(&mut g, now);
                    Some(Transition {
                        from: State::HalfOpen,
                        to: State::Open,
                        cause: Some(Trip {
                            rule: "half_open_probe",
                            consecutive: 0,
                            window,
                        }),
                    })
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// Gives back an admitted call that ended without a result (the client went away).
    pub fn release(&self, ticket: Ticket) {
        if let Some(id) = ticket.probe {
            let mut g = self.inner.lock();
            if ticket.generation == g.generation {
                g.probes.retain(|&(p, _)| p != id);
            }
        }
    }

    /// What the admin API shows, at `now`.
    /// The state a call would meet now: an open breaker whose time is up is shown
    /// half-open (the next call is its first probe), though it moves there only when that
    /// call arrives.
    pub fn snapshot(&self, now: Nanos) -> Snapshot {
        let g = self.inner.lock();
        let state = if g.state == State::Open && now >= g.open_until {
            State::HalfOpen
        } else {
            g.state
        };
        let window = match state {
            State::Closed => self.counts(now),
            State::Open => WindowCounts::default(),
            State::HalfOpen => WindowCounts {
                calls: g.probe_ok + g.probe_failed,
                failures: g.probe_failed,
                slow: 0,
            },
        };
        Snapshot {
            state,
            window,
            consecutive_failures: self.window.consecutive.load(Ordering::Relaxed),
            half_open_in: (state == State::Open).then(|| g.open_until.saturating_sub(now)),
            trips: g.trips,
            probes_in_flight: g.probes.iter().filter(|&&(_, d)| now < d).count() as u32,
        }
    }

    /// Whether the breaker is closed with nothing in its window at `now`: it would act
    /// exactly like a new one, so a keyed table may forget it.
    pub fn at_rest(&self, now: Nanos) -> bool {
        self.state() == State::Closed
            && self.window.consecutive.load(Ordering::Relaxed) == 0
            && self.counts(now).calls == 0
    }

    fn epoch(&self, now: Nanos) -> u64 {
        ((u128::from(now) * u128::from(self.recip)) >> 64) as u64
    }

    fn record_closed(
        &self,
        ticket: Ticket,
        failed: bool,
        slow: bool,
        now: Nanos,
    ) -> Option<Transition> {
        let epoch = self.epoch(now);
        let i = (epoch % BUCKETS as u64) as usize;
        let stamp = epoch & 0xffff_ffff;
        let w = &self.window;
        w.calls[i].add(stamp);
        if failed {
            w.failures[i].add(stamp);
        }
        if slow {
            w.slow[i].add(stamp);
        }
        let consecutive = if failed {
            w.consecutive.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            if w.consecutive.load(Ordering::Relaxed) != 0 {
                w.consecutive.store(0, Ordering::Relaxed);
            }
            if !slow {
                // A success that is not slow lowers both rates: it cannot trip.
                return None;
            }
            0
        };
        let cause = self.should_trip(consecutive, now)?;
        let mut g = self.inner.lock();
        if g.state != State::Closed || g.generation != ticket.generation {
            return None;
        }
        self.trip(&mut g, now);
        Some(Transition {
            from: State::Closed,
            to: State::Open,
            cause: Some(cause),
        })
    }

    /// The rule that trips the breaker now, with its counts; `None` while none does.
    fn should_trip(&self, consecutive: u32, now: Nanos) -> Option<Trip> {
        let trip = |rule, window| {
            Some(Trip {
                rule,
                consecutive,
                window,
            })
        };
        if self
            .cfg
            .consecutive_failures
            .is_some_and(|n| consecutive >= n.max(1))
        {
            return trip("consecutive_failures", self.counts(now));
        }
        if self.failure_ppm.is_none() && self.slow_ppm.is_none() {
            return None;
        }
        let c = self.counts(now);
        if c.calls < self.cfg.minimum_calls.max(1) {
            return None;
        }
        let reached = |count: u32, rate: Option<u64>| {
            rate.is_some_and(|r| u64::from(count) * PPM >= r * u64::from(c.calls))
        };
        if reached(c.failures, self.failure_ppm) {
            return trip("failure_rate", c);
        }
        if reached(c.slow, self.slow_ppm) {
            return trip("slow_call_rate", c);
        }
        None
    }

    fn counts(&self, now: Nanos) -> WindowCounts {
        let epoch = self.epoch(now);
        let w = &self.window;
        let mut c = WindowCounts::default();
        for back in 0..BUCKETS as u64 {
            let Some(e) = epoch.checked_sub(back) else {
                break;
            };
            let i = (e % BUCKETS as u64) as usize;
            let stamp = e & 0xffff_ffff;
            c.calls += w.calls[i].get(stamp);
            c.failures += w.failures[i].get(stamp);
            c.slow += w.slow[i].get(stamp);
        }
        c
    }

    fn trip(&self, g: &mut Inner, now: Nanos) {
        g.trips = g.trips.saturating_add(1);
        g.open_until = now.saturating_add(self.cfg.open_time(g.trips));
        self.enter(g, State::Open);
    }

    /// Moves to `state` in a new generation, with fresh counts.
    fn enter(&self, g: &mut Inner, state: State) {
        g.state = state;
        g.generation += 1;
        let w = &self.window;
        for cell in w.calls.iter().chain(&w.failures).chain(&w.slow) {
            cell.0.store(0, Ordering::Relaxed);
        }
        w.consecutive.store(0, Ordering::Relaxed);
        g.probes.clear();
        g.probe_ok = 0;
        g.probe_failed = 0;
        self.word
            .store(g.generation << 2 | state as u64, Ordering::Release);
    }
}

#[cfg(test)]
mod tests;
