//! Rate limits and bulkheads through the binary: every algorithm's count, keys, overrides,
//! trusted proxies, the 429 answer and its headers, dry runs, queueing, bulkheads and the
//! metrics. Limits are chosen slow (per hour) so that counts do not depend on timing.

use std::sync::Arc;

use http::{Response, StatusCode};
use tokio::sync::{Notify, mpsc};

use crate::support::*;

fn limited(name: &str, path: &str, limits: &str) -> String {
    format!(
        "  - name: {name}\n    match: {{ path: \"{path}\" }}\n    upstream: backend\n    rate_limits:\n{limits}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_gets_429_problem_with_retry_after_and_ratelimit_fields() {
    let up = echo_upstream().await;
    let routes = limited(
        "tb",
        "/tb",
        "      - { name: hourly, algorithm: token_bucket, rate: 1/1h, burst: 3, headers: true }",
    );
    let gw = Gateway::start(&config(up, &routes, ""));
    for remaining in [2, 1, 0] {
        let (status, h, _) = get(&gw.url("/tb")).await;
        assert_eq!(status, StatusCode::OK);
        // The rate, and the burst (what may go at once, refilled in 3 hours).
        assert_eq!(
            h["ratelimit-policy"],
            "\"hourly\";q=1;w=3600, \"hourly:burst\";q=3;w=10800"
        );
        // r: requests left; t: seconds until the bucket is full again.
        let expect = format!(
            "\"hourly:burst\";r={remaining};t={}",
            (3 - remaining) * 3600
        );
        assert_eq!(h["ratelimit"], expect.as_str());
    }
    let (status, h, body) = get(&gw.url("/tb")).await;
    let v = assert_problem(
        status,
        &h,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
    );
    assert_eq!(h["retry-after"], "3600");
    assert_eq!(
        h["ratelimit-policy"],
        "\"hourly\";q=1;w=3600, \"hourly:burst\";q=3;w=10800"
    );
    assert_eq!(h["ratelimit"], "\"hourly:burst\";r=0;t=10800");
    assert_eq!(v["instance"], "/tb");
    let line = gw.access_line("\"status\":429").await;
    assert_eq!(line["rate_limit"], "hourly");
    assert_eq!(line["route"], "tb");
    let series = |outcome: &str| {
        format!(
            "floodgate_ratelimit_decisions_total{{route=\"tb\",limit=\"hourly\",outcome=\"{outcome}\"}}"
        )
    };
    assert_eq!(gw.metric(&series("allowed")).await, 3.0);
    assert_eq!(gw.metric(&series("rejected")).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_algorithm_admits_its_limit() {
    let up = echo_upstream().await;
    let routes = [
        limited(
            "tb",
            "/tb",
            "      - { algorithm: token_bucket, rate: 1/1h, burst: 4 }",
        ),
        limited(
            "gcra",
            "/gcra",
            "      - { algorithm: gcra, rate: 1/1h, burst: 4 }",
        ),
        limited(
            "fixed",
            "/fixed",
            "      - { algorithm: fixed_window, rate: 4/1h }",
        ),
        limited(
            "log",
            "/log",
            "      - { algorithm: sliding_log, rate: 4/1h }",
        ),
        limited(
            "sliding",
            "/sliding",
            "      - { algorithm: sliding_window, rate: 4/1h }",
        ),
        limited(
            "leaky",
            "/leaky",
            "      - { algorithm: leaky_bucket, rate: 1/1h, burst: 3, nodelay: true }",
        ),
    ]
    .concat();
    let gw = Gateway::start(&config(up, &routes, ""));
    for path in ["/tb", "/gcra", "/fixed", "/log", "/sliding", "/leaky"] {
        // The leaky bucket passes one plus its burst of 3; the others their limit of 4.
        assert_eq!(
            statuses(&gw.url(path), &[], 6).await,
            [200, 200, 200, 200, 429, 429],
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_overrides_and_several_limits() {
    let up = echo_upstream().await;
    let routes = [
        limited(
            "keyed",
            "/keyed",
            "      - algorithm: gcra\n        rate: 1/1h\n        burst: 1\n        key: [ \"header:x-api-key\" ]\n        overrides: [ { value: gold, rate: 1/1h, burst: 3 } ]",
        ),
        limited(
            "both",
            "/both/{id}",
            "      - { name: per-id, algorithm: fixed_window, rate: 2/1h, key: [ \"path:id\" ] }\n      - { name: route-wide, algorithm: fixed_window, rate: 3/1h, key: [ route ] }",
        ),
    ]
    .concat();
    let gw = Gateway::start(&config(up, &routes, ""));
    let url = gw.url("/keyed");
    assert_eq!(statuses(&url, &[("x-api-key", "a")], 2).await, [200, 429]);
    assert_eq!(statuses(&url, &[("x-api-key", "b")], 2).await, [200, 429]);
    assert_eq!(
        statuses(&url, &[("x-api-key", "gold")], 4).await,
        [200, 200, 200, 429]
    );
    // Requests without the header share one allowance.
    assert_eq!(statuses(&url, &[], 2).await, [200, 429]);

    // Two limits: per id (2) and for the whole route (3); both must pass.
    assert_eq!(statuses(&gw.url("/both/1"), &[], 3).await, [200, 200, 429]);
    let (status, h, body) = get(&gw.url("/both/2")).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    assert!(h.get("ratelimit").is_none(), "headers only when asked for");
    let (status, h, body) = get(&gw.url("/both/3")).await;
    assert_problem(
        status,
        &h,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
    );
    assert_eq!(h["ratelimit-policy"], "\"route-wide\";q=3;w=3600");
    let line = gw.access_line("/both/3").await;
    assert_eq!(line["rate_limit"], "route-wide");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_address_comes_from_trusted_proxies_only() {
    let up = echo_upstream().await;
    let cfg = format!(
        "listeners:
  - name: behind-lb
    address: 127.0.0.1:0
    trusted_proxies: [ 127.0.0.0/8 ]
  - name: direct
    address: 127.0.0.1:0
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
upstreams:
  backend: {{ targets: [ \"{up}\" ] }}
routes:
  - match: {{ path_prefix: / }}
    upstream: backend
    rate_limits:
      - {{ algorithm: fixed_window, rate: 1/1h, key: [ client_ip ] }}
"
    );
    let gw = Gateway::start(&cfg);
    let lb = format!("http://{}/", gw.listeners["behind-lb"]);
    let direct = format!("http://{}/", gw.listeners["direct"]);
    // Behind the trusted load balancer, each forwarded client has its own allowance.
    assert_eq!(
        statuses(&lb, &[("x-forwarded-for", "198.51.100.1")], 2).await,
        [200, 429]
    );
    assert_eq!(
        statuses(&lb, &[("x-forwarded-for", "6.6.6.6, 198.51.100.2")], 1).await,
        [200]
    );
    assert_eq!(
        statuses(&lb, &[("forwarded", "for=198.51.100.3")], 2).await,
        [200, 429]
    );
    // Directly, the field is not believed: a client cannot pick its own key.
    assert_eq!(
        statuses(&direct, &[("x-forwarded-for", "203.0.113.1")], 1).await,
        [200]
    );
    assert_eq!(
        statuses(&direct, &[("x-forwarded-for", "203.0.113.2")], 1).await,
        [429]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_counts_and_logs_but_refuses_nothing() {
    let up = echo_upstream().await;
    let routes = limited(
        "dry",
        "/dry",
        "      - { name: trial, algorithm: fixed_window, rate: 1/1h, dry_run: true }",
    );
    let gw = Gateway::start(&config(up, &routes, ""));
    assert_eq!(statuses(&gw.url("/dry"), &[], 3).await, [200, 200, 200]);
    assert_eq!(
        gw.metric(
            "floodgate_ratelimit_decisions_total{route=\"dry\",limit=\"trial\",outcome=\"dry_run_rejected\"}"
        )
        .await,
        2.0
    );
    let line = gw.access_line("\"dry_run\":true").await;
    assert_eq!(line["rate_limit"], "trial");
    assert_eq!(line["status"], 200);
}

/// Queued requests wait for their turn instead of being refused. The rate (1/s) is slow
/// next to a request's round trip, so the second request always finds the first's slot
/// taken; only outcomes are checked, not times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaky_bucket_queues_then_refuses() {
    let up = echo_upstream().await;
    let routes = limited(
        "queue",
        "/queue",
        "      - { name: q, algorithm: leaky_bucket, rate: 1/s, burst: 1, max_delay: 5s }",
    );
    let gw = Gateway::start(&config(up, &routes, ""));
    let url = gw.url("/queue");
    // Three at once: one goes, one waits its turn and then goes too, the third finds the
    // queue (burst 1) full.
    let (a, b, c) = tokio::join!(get(&url), get(&url), get(&url));
    let mut got = [a.0.as_u16(), b.0.as_u16(), c.0.as_u16()];
    got.sort_unstable();
    assert_eq!(got, [200, 200, 429]);
    let series = |o: &str| {
        format!(
            "floodgate_ratelimit_decisions_total{{route=\"queue\",limit=\"q\",outcome=\"{o}\"}}"
        )
    };
    assert_eq!(gw.metric(&series("allowed")).await, 1.0);
    assert_eq!(gw.metric(&series("delayed")).await, 1.0);
    assert_eq!(gw.metric(&series("rejected")).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bulkhead_refuses_with_503_and_frees_its_place() {
    // The upstream holds each request until the test lets it go.
    let release = Arc::new(Notify::new());
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let up = {
        let release = release.clone();
        upstream(move |_req| {
            let release = release.clone();
            let arrived_tx = arrived_tx.clone();
            async move {
                let _sent = arrived_tx.send(());
                release.notified().await;
                Response::new(full("done"))
            }
        })
        .await
    };
    let routes = "  - name: held\n    match: { path: /held }\n    upstream: backend\n    concurrency: { max_in_flight: 1 }\n  - name: adaptive\n    match: { path: /adaptive }\n    upstream: backend\n    concurrency: { adaptive: { initial_limit: 7 } }\n";
    let gw = Gateway::start(&config(up, routes, ""));
    let url = gw.url("/held");
    let u = url.clone();
    let first = tokio::spawn(async move { get(&u).await });
    arrived
        .recv()
        .await
        .expect("first request reached the upstream");
    let (status, h, body) = get(&url).await;
    assert_problem(
        status,
        &h,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "concurrency-limited",
    );
    assert_eq!(h["retry-after"], "1");
    release.notify_one();
    assert_eq!(first.await.unwrap().0, StatusCode::OK);
    // The place is free again.
    let u = url.clone();
    let second = tokio::spawn(async move { get(&u).await });
    arrived
        .recv()
        .await
        .expect("second request reached the upstream");
    release.notify_one();
    assert_eq!(second.await.unwrap().0, StatusCode::OK);
    let label = "{scope=\"route\",name=\"held\"}";
    assert_eq!(
        gw.metric(&format!("floodgate_concurrency_rejected_total{label}"))
            .await,
        1.0
    );
    assert_eq!(
        gw.metric("floodgate_concurrency_limit{scope=\"route\",name=\"adaptive\"}")
            .await,
        7.0,
        "the adaptive limit starts at its initial value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptive_limit_falls_when_the_upstream_slows() {
    let slow = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = slow.clone();
    let up = upstream(move |_req| {
        let s = s.clone();
        async move {
            if s.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Response::new(full("ok"))
        }
    })
    .await;
    let routes = "  - name: adaptive\n    match: { path: /adaptive }\n    upstream: backend\n    concurrency: { adaptive: { initial_limit: 20, window: 20ms, tolerance: 10% } }\n";
    let gw = Gateway::start(&config(up, routes, ""));
    let url = gw.url("/adaptive");
    let series = "floodgate_concurrency_limit{scope=\"route\",name=\"adaptive\"}";
    // Fast answers first: the minimum latency is learned.
    for _ in 0..50 {
        assert_eq!(get(&url).await.0, StatusCode::OK);
    }
    // (On a loaded machine, fast answers vary too and the limit may already sit a little
    // below its initial 20.) The upstream slows down: latency far over the minimum, and
    // the limit falls well below where fast answers leave it (they only raise it: `L + √L`
    // at a gradient of 1), toward where the lowest gradient holds it (4: `0.5 × L + √L =
    // L`). The limit moves once per window of at least 10 answers: they come 10 at a time.
    slow.store(true, std::sync::atomic::Ordering::Relaxed);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let batch: Vec<_> = (0..10)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { get(&url).await.0 })
            })
            .collect();
        for answer in batch {
            // Within the limit, or refused by it once it has fallen below ten.
            let status = answer.await.unwrap();
            assert!(
                status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
                "{status}"
            );
        }
        let now = gw.metric(series).await;
        if now <= 8.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the limit stayed at {now} while latency rose"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_state_of_unchanged_limits_only() {
    let up = echo_upstream().await;
    let limited_route = limited(
        "kept",
        "/kept",
        "      - { name: w, algorithm: fixed_window, rate: 2/1h, key: [ route ] }",
    );
    let gw = Gateway::start(&config(up, &limited_route, ""));
    assert_eq!(statuses(&gw.url("/kept"), &[], 3).await, [200, 200, 429]);

    // Another route added: this limit is untouched and remembers its two requests.
    let other = "  - name: other\n    match: { path: /other }\n    upstream: backend\n";
    gw.write_config(&config(up, &format!("{limited_route}{other}"), ""));
    gw.wait_log("\"generation\":2").expect("reload 2");
    assert_eq!(statuses(&gw.url("/other"), &[], 1).await, [200]);
    assert_eq!(statuses(&gw.url("/kept"), &[], 1).await, [429]);

    // The limit itself changed: it starts afresh.
    let changed = limited_route.replace("rate: 2/1h", "rate: 3/1h");
    gw.write_config(&config(up, &changed, ""));
    gw.wait_log("\"generation\":3").expect("reload 3");
    assert_eq!(
        statuses(&gw.url("/kept"), &[], 4).await,
        [200, 200, 200, 429]
    );
}
