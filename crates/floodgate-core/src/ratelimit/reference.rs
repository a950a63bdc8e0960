//! Property tests: each algorithm against a deliberately naive reference model that keeps
//! the whole history of admitted requests and decides from the definition, over random
//! arrival sequences. Also: retry-after is exact (a retry at that time passes, one
//! nanosecond earlier does not) and the token bucket and GCRA agree.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::{MILLI, Nanos, SECOND};

/// Arrival times: non-decreasing, gaps from 0 up to `max_gap`.
fn arrivals(max_gap: Nanos) -> impl Strategy<Value = Vec<Nanos>> {
    prop::collection::vec(prop_oneof![Just(0), 0..max_gap], 1..120).prop_map(|gaps| {
        gaps.iter()
            .scan(0, |t, g| {
                *t += g;
                Some(*t)
            })
            .collect()
    })
}

/// Rates whose interval is a whole number of nanoseconds (`ms` ms, the fast path) and rates
/// whose interval is not (`ms` ms + 7 ns over up to 7 events).
fn rate() -> impl Strategy<Value = Rate> {
    (1u64..8, 1u64..1000, any::<bool>())
        .prop_map(|(c, ms, exact)| Rate::new(c, ms * MILLI + if exact { 0 } else { 7 }))
}

/// Token bucket by its arrival-curve definition: the admitted sequence never has more than
/// `burst + rate × (t − s)` requests in any closed interval [s, t].
fn curve_admits(admitted: &[Nanos], t: Nanos, rate: Rate, burst: u64) -> bool {
    admitted.iter().all(|&s| {
        let n = admitted.iter().filter(|&&x| x >= s && x <= t).count() as u128 + 1;
        n * u128::from(rate.period)
            <= u128::from(burst) * u128::from(rate.period)
                + u128::from(t - s) * u128::from(rate.count)
    }) && burst >= 1
}

/// Checks the decision's retry-after on a copy of the state.
fn retry_after_is_exact<A: Algorithm>(alg: &A, state: &A::State, t: Nanos, d: Decision)
where
    A::State: Clone,
{
    if let Verdict::Reject { retry_after } = d.verdict
        && retry_after != Nanos::MAX
    {
        let mut s = state.clone();
        assert!(
            alg.check(&mut s, t + retry_after, 1).admitted(),
            "retry at +{retry_after} refused"
        );
        if retry_after > 0 {
            let mut s = state.clone();
            assert!(
                !alg.check(&mut s, t + retry_after - 1, 1).admitted(),
                "retry 1 ns before +{retry_after} admitted"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn token_bucket_matches_its_definition(
        times in arrivals(400 * MILLI), rate in rate(), burst in 1u64..6
    ) {
        let tb = TokenBucket::new(rate, burst);
        let mut s = TokenState::default();
        let mut admitted = vec![];
        for t in times {
            let expect = curve_admits(&admitted, t, rate, burst);
            let before = s;
            let d = tb.check(&mut s, t, 1);
            prop_assert_eq!(d.admitted(), expect, "t={}", t);
            if expect { admitted.push(t); } else { retry_after_is_exact(&tb, &before, t, d); }
        }
    }

    #[test]
    fn gcra_matches_the_token_bucket(
        times in arrivals(400 * MILLI), rate in rate(), burst in 1u64..6
    ) {
        let (tb, g) = (TokenBucket::new(rate, burst), Gcra::new(rate, burst));
        let (mut a, mut b) = (TokenState::default(), GcraState::default());
        for t in times {
            let before = b;
            let (da, db) = (tb.check(&mut a, t, 1), g.check(&mut b, t, 1));
            prop_assert_eq!(da, db, "t={}", t);
            retry_after_is_exact(&g, &before, t, db);
        }
    }

    #[test]
    fn fixed_window_matches_its_definition(times in arrivals(400 * MILLI), rate in rate()) {
        let fw = FixedWindow::new(rate);
        let mut s = WindowState::default();
        let mut per_window: HashMap<u64, u64> = HashMap::new();
        for t in times {
            let used = per_window.entry(t / rate.period).or_default();
            let expect = *used < rate.count;
            let before = s;
            let d = fw.check(&mut s, t, 1);
            prop_assert_eq!(d.admitted(), expect, "t={}", t);
            if expect { *used += 1; } else { retry_after_is_exact(&fw, &before, t, d); }
        }
    }

    #[test]
    fn sliding_log_matches_its_definition(times in arrivals(400 * MILLI), rate in rate()) {
        let sl = SlidingLog::new(rate);
        let mut s = LogState::default();
        let mut admitted: Vec<Nanos> = vec![];
        for t in times {
            let in_window = admitted.iter().filter(|&&x| x + rate.period > t).count() as u64;
            let expect = in_window < rate.count;
            let before = s.clone();
            let d = sl.check(&mut s, t, 1);
            prop_assert_eq!(d.admitted(), expect, "t={}", t);
            if expect { admitted.push(t); } else { retry_after_is_exact(&sl, &before, t, d); }
        }
    }

    #[test]
    fn sliding_window_matches_its_definition(times in arrivals(400 * MILLI), rate in rate()) {
        let sw = SlidingWindow::new(rate);
        let mut s = CounterState::default();
        let mut admitted: Vec<Nanos> = vec![];
        let w = rate.period;
        for t in times {
            let idx = t / w;
            let cur = admitted.iter().filter(|&&x| x / w == idx).count() as u128;
            let prev = admitted.iter().filter(|&&x| idx > 0 && x / w == idx - 1).count() as u128;
            let e = u128::from(t - idx * w);
            let w128 = u128::from(w);
            let expect = prev * (w128 - e) + (cur + 1) * w128 <= u128::from(rate.count) * w128;
            let before = s;
            let d = sw.check(&mut s, t, 1);
            prop_assert_eq!(d.admitted(), expect, "t={}", t);
            if expect { admitted.push(t); } else { retry_after_is_exact(&sw, &before, t, d); }
        }
    }

    /// The leaky bucket against nginx's `limit_req` arithmetic, written out as nginx does
    /// it (excess in thousandths of a request, rate per 1000 s, a millisecond clock);
    /// times are whole milliseconds and the period one second, where nginx is exact.
    #[test]
    fn leaky_bucket_matches_nginx(
        gaps in prop::collection::vec(prop_oneof![Just(0u64), 0..300u64], 1..120),
        count in 1u64..20, burst in 0u64..6, delay in 0u64..7
    ) {
        let lb = LeakyBucket::new(Rate::new(count, SECOND), burst, delay, None);
        let mut s = LeakyState::default();
        let nginx_rate = i64::try_from(count * 1000).unwrap();
        let (burst_x, delay_x) = (i64::try_from(burst * 1000).unwrap(), i64::try_from(delay.min(burst) * 1000).unwrap());
        let mut node: Option<(i64, i64)> = None; // (excess, last ms)
        let mut now_ms: i64 = 0;
        for g in gaps {
            now_ms += i64::try_from(g).unwrap();
            let excess = match node {
                None => 0,
                Some((excess, last)) => (excess - nginx_rate * (now_ms - last) / 1000 + 1000).max(0),
            };
            let d = lb.check(&mut s, u64::try_from(now_ms).unwrap() * MILLI, 1);
            if excess > burst_x {
                prop_assert!(!d.admitted(), "t={}ms excess={}", now_ms, excess);
                continue;
            }
            // nginx stores the excess only for requests it admits.
            node = Some((excess, now_ms));
            let wait_ns = u64::try_from((excess - delay_x).max(0)).unwrap() * 1_000_000;
            let expect = wait_ns.div_ceil(count);
            match d.verdict {
                Verdict::Allow => prop_assert_eq!(expect, 0),
                Verdict::Delay(ns) => prop_assert_eq!(ns, expect),
                Verdict::Reject { .. } => prop_assert!(false, "refused at t={}ms excess={}", now_ms, excess),
            }
        }
    }

    /// Whatever the clock does, no algorithm admits more in total than if every request
    /// that saw the clock go back had instead arrived at the latest time seen so far: a
    /// clock going backwards never buys extra.
    #[test]
    fn a_clock_going_backwards_never_admits_more(
        mut times in prop::collection::vec(0u64..(3 * SECOND), 1..100), rate in rate(), burst in 1u64..6
    ) {
        fn total<A: Algorithm>(a: &A, times: &[Nanos]) -> usize {
            let mut s = A::State::default();
            times.iter().filter(|&&t| a.check(&mut s, t, 1).admitted()).count()
        }
        let shuffled = times.clone();
        let mut latest = 0;
        for t in &mut times {
            latest = latest.max(*t);
            *t = latest;
        }
        prop_assert!(total(&TokenBucket::new(rate, burst), &shuffled) <= total(&TokenBucket::new(rate, burst), &times));
        prop_assert!(total(&Gcra::new(rate, burst), &shuffled) <= total(&Gcra::new(rate, burst), &times));
        prop_assert!(total(&FixedWindow::new(rate), &shuffled) <= total(&FixedWindow::new(rate), &times));
        prop_assert!(total(&SlidingLog::new(rate), &shuffled) <= total(&SlidingLog::new(rate), &times));
        prop_assert!(total(&SlidingWindow::new(rate), &shuffled) <= total(&SlidingWindow::new(rate), &times));
        let lb = LeakyBucket::new(rate, burst, burst, None);
        prop_assert!(total(&lb, &shuffled) <= total(&lb, &times));
    }
}
