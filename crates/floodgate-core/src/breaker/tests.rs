//! Every transition and edge on a fake clock, and a property test of the half-open
//! allowance.

use super::*;
use crate::{MILLI, SECOND};
use proptest::prelude::*;

fn cfg() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: None,
        failure_rate: Some(0.5),
        slow_call_rate: None,
        slow_call: 10 * SECOND,
        minimum_calls: 10,
        window: 10 * SECOND,
        open_for: 5 * SECOND,
        multiplier: 2.0,
        max_open_for: 30 * SECOND,
        half_open_calls: 3,
        close_ratio: 1.0,
        probe_timeout: 2 * SECOND,
    }
}

const OK: CallResult = CallResult::Success(MILLI);
const FAIL: CallResult = CallResult::Failure(MILLI);

/// One admitted call with `result` at `now`; panics if refused.
fn call(b: &Breaker, result: CallResult, now: Nanos) -> Option<Transition> {
    let t = b.try_acquire(now).0.expect("admitted");
    b.record(t, result, now)
}

fn to(state: State) -> impl Fn(Option<Transition>) -> bool {
    move |t| t.is_some_and(|t| t.to == state)
}

#[test]
fn rate_needs_minimum_calls_and_trips_at_exactly_the_threshold() {
    let b = Breaker::new(cfg());
    // Nine failures: below the minimum of ten calls, whatever the rate.
    for i in 0..9 {
        assert_eq!(call(&b, FAIL, i), None);
    }
    assert_eq!(b.state(), State::Closed);
    let b = Breaker::new(cfg());
    for i in 0..5 {
        call(&b, OK, i);
    }
    for i in 5..9 {
        assert_eq!(call(&b, FAIL, i), None);
    }
    // Tenth call, fifth failure: 5/10 = 50% ≥ 50%.
    assert!(to(State::Open)(call(&b, FAIL, 9)));
    assert_eq!(b.state(), State::Open);
}

#[test]
fn a_rate_just_under_the_threshold_does_not_trip() {
    let mut c = cfg();
    c.failure_rate = Some(0.3);
    let b = Breaker::new(c);
    for i in 0..8 {
        call(&b, OK, i);
    }
    // 2/10 < 30%.
    call(&b, FAIL, 8);
    assert_eq!(call(&b, FAIL, 9), None);
    // 3/11 = 27% < 30%, 3/10 would be exactly 30%: check the exact case too.
    assert_eq!(call(&b, FAIL, 10), None);
    let b = Breaker::new(BreakerConfig {
        failure_rate: Some(0.3),
        ..cfg()
    });
    for i in 0..7 {
        call(&b, OK, i);
    }
    call(&b, FAIL, 7);
    call(&b, FAIL, 8);
    assert!(to(State::Open)(call(&b, FAIL, 9)), "3/10 = 30% trips");
}

#[test]
fn consecutive_failures_trip_and_a_success_resets_the_run() {
    let b = Breaker::new(BreakerConfig {
        consecutive_failures: Some(3),
        failure_rate: None,
        ..cfg()
    });
    call(&b, FAIL, 0);
    call(&b, FAIL, 1);
    call(&b, OK, 2);
    call(&b, FAIL, 3);
    call(&b, FAIL, 4);
    assert_eq!(b.state(), State::Closed);
    assert!(to(State::Open)(call(&b, FAIL, 5)));
}

#[test]
fn old_calls_leave_the_window() {
    let b = Breaker::new(cfg());
    for i in 0..9 {
        call(&b, FAIL, i * MILLI);
    }
    // Eleven seconds later the nine failures are gone: this is call one of the window.
    assert_eq!(call(&b, FAIL, 11 * SECOND), None);
    assert_eq!(b.snapshot(11 * SECOND).window.calls, 1);
}

#[test]
fn slow_calls_trip_on_their_own_rate() {
    let b = Breaker::new(BreakerConfig {
        failure_rate: None,
        slow_call_rate: Some(0.8),
        slow_call: SECOND,
        ..cfg()
    });
    let slow = CallResult::Success(SECOND);
    for i in 0..2 {
        call(&b, OK, i);
    }
    for i in 2..9 {
        assert_eq!(call(&b, slow, i), None);
    }
    // 8 slow of 10 = 80%: successes, yet the breaker opens.
    assert!(to(State::Open)(call(&b, slow, 9)));
}

#[test]
fn open_refuses_until_its_time_then_probes_close_it() {
    let b = Breaker::new(BreakerConfig {
        consecutive_failures: Some(1),
        ..cfg()
    });
    call(&b, FAIL, 0);
    let (r, t) = b.try_acquire(SECOND);
    assert_eq!(
        r,
        Err(Refusal {
            retry_after: 4 * SECOND
        })
    );
    assert_eq!(t, None);
    assert_eq!(b.snapshot(SECOND).half_open_in, Some(4 * SECOND));
    // Its time up, it shows the state the next call meets, before any call moves it.
    let due = b.snapshot(5 * SECOND);
    assert_eq!((due.state, due.half_open_in), (State::HalfOpen, None));
    assert_eq!(b.state(), State::Open);
    let (r, t) = b.try_acquire(5 * SECOND);
    assert!(r.expect("probe").is_probe());
    assert!(to(State::HalfOpen)(t));
    let p2 = b.try_acquire(5 * SECOND).0.expect("probe 2");
    let p3 = b.try_acquire(5 * SECOND).0.expect("probe 3");
    // All three probes are out: the fourth call is refused.
    assert_eq!(b.try_acquire(5 * SECOND).0, Err(Refusal { retry_after: 0 }));
    let p1 = r.expect("probe");
    assert_eq!(b.record(p1, OK, 6 * SECOND), None);
    assert_eq!(b.record(p2, OK, 6 * SECOND), None);
    assert!(to(State::Closed)(b.record(p3, OK, 6 * SECOND)));
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot(6 * SECOND).trips, 0);
}

#[test]
fn a_failed_probe_reopens_for_longer_each_time_up_to_the_maximum() {
    let b = Breaker::new(BreakerConfig {
        consecutive_failures: Some(1),
        ..cfg()
    });
    call(&b, FAIL, 0);
    let mut now = 0;
    for expected in [10, 20, 30, 30] {
        // Open for 5 s after the first trip; each failed probe doubles it, up to 30 s.
        now += b.snapshot(now).half_open_in.expect("open");
        let (p, _) = b.try_acquire(now);
        assert!(to(State::Open)(b.record(p.expect("probe"), FAIL, now)));
        assert_eq!(b.snapshot(now).half_open_in, Some(expected * SECOND));
    }
}

#[test]
fn close_ratio_allows_some_probe_failures() {
    let b = Breaker::new(BreakerConfig {
        consecutive_failures: Some(1),
        half_open_calls: 4,
        close_ratio: 0.75,
        ..cfg()
    });
    call(&b, FAIL, 0);
    let now = 5 * SECOND;
    let p: Vec<_> = (0..4)
        .map(|_| b.try_acquire(now).0.expect("probe"))
        .collect();
    assert_eq!(
        b.record(p[0], FAIL, now),
        None,
        "one failure of four is allowed"
    );
    assert_eq!(b.record(p[1], OK, now), None);
    assert_eq!(b.record(p[2], OK, now), None);
    assert!(to(State::Closed)(b.record(p[3], OK, now)));
}

#[test]
fn a_slow_probe_counts_as_a_failure() {
    let b = Breaker::new(BreakerConfig {
        consecutive_failures: Some(1),
        slow_call: SECOND,
        ..cfg()
    });
    call(&b, FAIL, 0);
    let p = b.try_acquire(5 * SECOND).0.expect("probe");
    assert!(to(State::Open)(b.record(
        p,
        CallResult::Success(2 * SECOND),
        7 * SECOND
    )));
}

#[test]
fn a_hung_probe_gives_its_place_back_on_time() {
    let b = Breaker::new(BreakerConfig {
        consecutive_failures: Some(1),
        half_open_calls: 1,
        ..cfg()
    });
    call(&b, FAIL, 0);
    let hung = b.try_acquire(5 * SECOND).0.expect("probe");
    assert_eq!(b.try_acquire(6 * SECOND).0, Err(Refusal { retry_after: 0 }));
    // At the probe timeout (2 s) the place re-arms.
    let fresh = b.try_acquire(7 * SECOND).0.expect("re-armed probe");
    // The hung probe reporting late changes nothing.
    assert_eq!(b.record(hung, FAIL, 8 * SECOND), None);
    assert_eq!(b.state(), State::HalfOpen);
    assert!(to(State::Closed)(b.record(fresh, OK, 8 * SECOND)));
}

#[test]
fn a_cancelled_call_counts_as_neither() {
    let b = Breaker::new(BreakerConfig {
        consecutive_failures: Some(1),
        half_open_calls: 1,
        ..cfg()
    });
    call(&b, FAIL, 0);
    let p = b.try_acquire(5 * SECOND).0.expect("probe");
    b.release(p);
    assert_eq!(b.state(), State::HalfOpen);
    // The place is free again at once.
    let p = b.try_acquire(5 * SECOND).0.expect("probe after cancel");
    assert!(to(State::Closed)(b.record(p, OK, 5 * SECOND)));
}

#[test]
fn results_from_an_earlier_state_are_ignored() {
    let b = Breaker::new(BreakerConfig {
        consecutive_failures: Some(1),
        ..cfg()
    });
    let early = b.try_acquire(0).0.expect("closed");
    call(&b, FAIL, 0);
    // The breaker opened while `early` was out: its failure says nothing new.
    assert_eq!(b.record(early, FAIL, 1), None);
    assert_eq!(b.snapshot(1).trips, 1);
}

#[test]
fn at_rest_only_when_closed_and_empty() {
    let b = Breaker::new(cfg());
    assert!(b.at_rest(0));
    call(&b, OK, 0);
    assert!(!b.at_rest(SECOND));
    assert!(b.at_rest(11 * SECOND));
}

/// One step of a random schedule: acquire, report an outstanding call, cancel one, or
/// let time pass.
#[derive(Debug, Clone)]
enum Step {
    Acquire,
    Report(usize, bool),
    Cancel(usize),
    Wait(Nanos),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Acquire),
        4 => (any::<usize>(), any::<bool>()).prop_map(|(i, ok)| Step::Report(i, ok)),
        1 => any::<usize>().prop_map(Step::Cancel),
        2 => (0..3 * SECOND).prop_map(Step::Wait),
    ]
}

proptest! {
    /// Whatever the order of calls, results, cancellations and time, half-open never has
    /// more probes out than its allowance, and never judges more than it.
    #[test]
    fn half_open_never_admits_more_than_its_allowance(
        steps in proptest::collection::vec(step(), 1..300),
        allowance in 1u32..5,
    ) {
        let b = Breaker::new(BreakerConfig {
            consecutive_failures: Some(2),
            half_open_calls: allowance,
            close_ratio: 0.5,
            open_for: SECOND,
            ..cfg()
        });
        let mut now = 0;
        let mut out: Vec<Ticket> = Vec::new();
        for s in steps {
            match s {
                Step::Acquire => {
                    if let (Ok(t), _) = b.try_acquire(now) {
                        out.push(t);
                    }
                }
                Step::Report(i, ok) if !out.is_empty() => {
                    let t = out.swap_remove(i % out.len());
                    b.record(t, if ok { OK } else { FAIL }, now);
                }
                Step::Cancel(i) if !out.is_empty() => {
                    b.release(out.swap_remove(i % out.len()));
                }
                Step::Wait(d) => now += d,
                _ => {}
            }
            let snap = b.snapshot(now);
            if snap.state == State::HalfOpen {
                prop_assert!(snap.probes_in_flight + snap.window.calls <= allowance, "{snap:?}");
                let g = b.inner.lock();
                prop_assert!(g.probes.len() as u32 + g.probe_ok + g.probe_failed <= allowance);
            }
        }
    }
}

#[test]
fn a_trip_says_which_rule_and_the_counts() {
    let b = Breaker::new(BreakerConfig {
        consecutive_failures: Some(2),
        ..cfg()
    });
    call(&b, OK, 0);
    call(&b, FAIL, 0);
    let t = call(&b, FAIL, 0).expect("tripped");
    let cause = t.cause.expect("a cause");
    assert_eq!(cause.rule, "consecutive_failures");
    assert_eq!(cause.consecutive, 2);
    assert_eq!((cause.window.calls, cause.window.failures), (3, 2));

    let b = Breaker::new(cfg());
    for _ in 0..5 {
        call(&b, OK, 0);
    }
    let mut last = None;
    for _ in 0..5 {
        last = call(&b, FAIL, 0).or(last);
    }
    let cause = last
        .expect("tripped at half failing")
        .cause
        .expect("a cause");
    assert_eq!(cause.rule, "failure_rate");
    assert_eq!((cause.window.calls, cause.window.failures), (10, 5));
}
