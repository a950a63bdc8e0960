//! Circuit breakers, fallbacks and fault injection through the binary, against real
//! upstream servers whose behaviour the tests switch: a breaker opens, answers with the
//! route's fallback, and closes again through half-open; a target breaker takes one bad
//! target out; keyed breakers keep keys apart; each fallback kind and trigger; injected
//! faults.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::{Response, StatusCode};

use crate::support::*;

/// A server whose answer is switched through `status` (0 = 200), counting arrivals.
async fn switchable() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicU64>) {
    let status = Arc::new(AtomicUsize::new(0));
    let hits = Arc::new(AtomicU64::new(0));
    let (s, h) = (status.clone(), hits.clone());
    let addr = upstream(move |_req| {
        let (s, h) = (s.clone(), h.clone());
        async move {
            h.fetch_add(1, Ordering::Relaxed);
            let mut resp = Response::new(full("from upstream"));
            let code = s.load(Ordering::Relaxed);
            if code != 0 {
                *resp.status_mut() = StatusCode::from_u16(code as u16).unwrap();
            }
            resp
        }
    })
    .await;
    (addr, status, hits)
}

/// The admin `/breakers` entry for `scope`/`name` (and `key`, for keyed breakers).
async fn breaker_state(
    gw: &Gateway,
    scope: &str,
    name: &str,
    key: Option<&str>,
) -> serde_json::Value {
    let (_, _, body) = get(&format!("http://{}/breakers", gw.admin)).await;
    json(&body)["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["scope"] == scope && b["name"] == name && key.is_none_or(|k| b["key"] == k))
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no breaker {scope}/{name} in {}",
                String::from_utf8_lossy(&body)
            )
        })
}

/// Waits out an open breaker's remaining time, as the admin API reports it.
async fn wait_half_open(gw: &Gateway, scope: &str, name: &str, key: Option<&str>) {
    let b = breaker_state(gw, scope, name, key).await;
    assert_eq!(b["state"], "open", "{b}");
    let ms = b["half_open_in_ms"].as_f64().unwrap();
    tokio::time::sleep(Duration::from_secs_f64(ms / 1000.0 + 0.02)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_breaker_opens_falls_back_and_closes_through_half_open() {
    let (addr, status, hits) = switchable().await;
    let gw = gateway_with(
        &format!(
            "  shop:
    targets: [ \"{addr}\" ]
    circuit_breaker:
      consecutive_failures: 3
      open_for: 2s
      half_open_calls: 2"
        ),
        "  - match: { path_prefix: / }
    upstream: shop
    fallback:
      when: [ breaker_open ]
      response: { status: 200, json: { products: [], degraded: true } }",
    );
    status.store(500, Ordering::Relaxed);
    // Three failures pass through (the upstream's 500s), then the breaker opens.
    assert_eq!(statuses(&gw.url("/p"), &[], 3).await, [500, 500, 500]);
    for _ in 0..5 {
        let (s, h, body) = get(&gw.url("/p")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["floodgate-fallback"], "breaker_open");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(json(&body)["degraded"], true);
    }
    assert_eq!(
        hits.load(Ordering::Relaxed),
        3,
        "nothing reached the upstream while open"
    );
    let opened = gw
        .wait_log("circuit breaker opened")
        .expect("transition logged");
    assert!(
        opened.contains("\"rule\":\"consecutive_failures\"")
            && opened.contains("\"failures_in_a_row\":3"),
        "the line says what tripped it: {opened}"
    );
    assert_eq!(
        gw.metric("floodgate_circuit_breaker_state{scope=\"upstream\",name=\"shop\"}")
            .await,
        1.0
    );
    let b = breaker_state(&gw, "upstream", "shop", None).await;
    assert_eq!(b["trips"], 1);

    // Still failing at half-open: one probe fails and it opens again, for twice as long.
    wait_half_open(&gw, "upstream", "shop", None).await;
    let due = breaker_state(&gw, "upstream", "shop", None).await;
    assert_eq!(
        due["state"], "half_open",
        "the state a request would meet: {due}"
    );
    assert!(due["half_open_in_ms"].is_null(), "{due}");
    assert_eq!(
        get(&gw.url("/p")).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let b = breaker_state(&gw, "upstream", "shop", None).await;
    assert_eq!(b["trips"], 2);
    assert!(b["half_open_in_ms"].as_f64().unwrap() > 2000.0, "{b}");

    // Healed: two successful probes close it.
    status.store(0, Ordering::Relaxed);
    wait_half_open(&gw, "upstream", "shop", None).await;
    assert_eq!(statuses(&gw.url("/p"), &[], 2).await, [200, 200]);
    assert_eq!(
        breaker_state(&gw, "upstream", "shop", None).await["state"],
        "closed"
    );
    let (s, h, body) = get(&gw.url("/p")).await;
    assert_eq!((s, &body[..]), (StatusCode::OK, &b"from upstream"[..]));
    assert!(h.get("floodgate-fallback").is_none());
    let to = |state: &str| {
        format!(
            "floodgate_circuit_breaker_transitions_total{{scope=\"upstream\",name=\"shop\",to=\"{state}\"}}"
        )
    };
    assert_eq!(gw.metric(&to("open")).await, 2.0);
    assert_eq!(gw.metric(&to("half_open")).await, 2.0);
    assert_eq!(gw.metric(&to("closed")).await, 1.0);
    assert_eq!(
        gw.metric("floodgate_fallbacks_total{route=\"route-0\",kind=\"breaker_open\"}")
            .await,
        5.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_fallback_an_open_breaker_answers_503_with_retry_after() {
    let (addr, status, _) = switchable().await;
    status.store(503, Ordering::Relaxed);
    let gw = pool_gateway(&format!(
        "    targets: [ \"{addr}\" ]\n    circuit_breaker: {{ failure_rate: 50%, minimum_calls: 4, open_for: 30s }}"
    ));
    assert_eq!(statuses(&gw.url("/"), &[], 4).await, [503; 4]);
    let (s, h, body) = get(&gw.url("/")).await;
    assert_problem(
        s,
        &h,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "circuit-open",
    );
    let retry_after: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((29..=30).contains(&retry_after), "{retry_after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_breaker_takes_only_the_failing_target_out() {
    let (bad, bad_status, bad_hits) = switchable().await;
    bad_status.store(502, Ordering::Relaxed);
    let good = named_upstream("good").await;
    let gw = pool_gateway(&format!(
        "    targets: [ \"{bad}\", \"{good}\" ]
    circuit_breaker: {{ scope: target, consecutive_failures: 2, open_for: 60s }}"
    ));
    let got = statuses(&gw.url("/"), &[], 20).await;
    // Round robin gives the bad target two requests before its breaker opens.
    assert_eq!(got.iter().filter(|&&s| s == 502).count(), 2, "{got:?}");
    assert_eq!(bad_hits.load(Ordering::Relaxed), 2);
    let b = breaker_state(&gw, "target", &format!("pool/{bad}"), None).await;
    assert_eq!(b["state"], "open");
    assert_eq!(
        breaker_state(&gw, "target", &format!("pool/{good}"), None).await["state"],
        "closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_breakers_keep_keys_apart() {
    let addr = upstream(|req| async move {
        let mut resp = Response::new(full("item"));
        if req.uri().path().ends_with("/bad") {
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        }
        resp
    })
    .await;
    let gw = gateway_with(
        &format!("  items:\n    targets: [ \"{addr}\" ]"),
        "  - match: { path: \"/items/{id}\" }
    upstream: items
    circuit_breaker: { scope: key, key: [ \"path:id\" ], consecutive_failures: 2, open_for: 60s }",
    );
    assert_eq!(statuses(&gw.url("/items/bad"), &[], 2).await, [500, 500]);
    let (s, h, body) = get(&gw.url("/items/bad")).await;
    assert_problem(
        s,
        &h,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "circuit-open",
    );
    assert_eq!(statuses(&gw.url("/items/good"), &[], 3).await, [200; 3]);
    assert_eq!(
        breaker_state(&gw, "key", "route-0", Some("bad")).await["state"],
        "open"
    );
    assert_eq!(
        breaker_state(&gw, "key", "route-0", Some("good")).await["state"],
        "closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallbacks_for_each_trigger() {
    let spare = named_upstream("spare").await;
    let slow = upstream(|_req| async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Response::new(full("late"))
    })
    .await;
    let ok = named_upstream("ok").await;
    let dead = closed_port();
    let gw = gateway_with(
        &format!(
            "  dead:\n    targets: [ \"{dead}\" ]
  slow:\n    targets: [ \"{slow}\" ]\n    timeouts: {{ request: 100ms }}
  held:\n    targets: [ \"{slow}\" ]\n    timeouts: {{ request: 1s }}
  ok:\n    targets: [ \"{ok}\" ]
  spare:\n    targets: [ \"{spare}\" ]"
        ),
        "  - name: to-spare
    match: { path: /error }
    upstream: dead
    fallback: { when: [ upstream_error ], upstream: spare }
  - name: on-timeout
    match: { path: /timeout }
    upstream: slow
    fallback:
      when: [ timeout ]
      response: { status: 203, headers: { x-served-by: fallback }, body: cached answer }
  - name: limited
    match: { path: /limited }
    upstream: ok
    rate_limits: [ { algorithm: token_bucket, rate: 1/1m, burst: 1 } ]
    fallback: { when: [ rate_limited ], response: { body: try later } }
  - name: full
    match: { path: /full }
    upstream: held
    concurrency: { max_in_flight: 1 }
    fallback: { when: [ bulkhead_full ], response: { status: 503, body: busy } }
  - name: batch
    match: { path: /batch }
    upstream: held
    criticality: sheddable
    concurrency: { max_in_flight: 1, queue: 5 }
    fallback: { when: [ shed ], response: { status: 202, body: later } }",
    );
    let (s, h, body) = get(&gw.url("/error")).await;
    assert_eq!((s, &body[..]), (StatusCode::OK, &b"spare"[..]));
    assert_eq!(h["floodgate-fallback"], "upstream_error");

    let (s, h, body) = get(&gw.url("/timeout")).await;
    assert_eq!(
        (s, &body[..]),
        (
            StatusCode::NON_AUTHORITATIVE_INFORMATION,
            &b"cached answer"[..]
        )
    );
    assert_eq!(h["x-served-by"], "fallback");
    assert_eq!(h["floodgate-fallback"], "timeout");

    assert_eq!(get(&gw.url("/limited")).await.0, StatusCode::OK);
    let (s, h, body) = get(&gw.url("/limited")).await;
    assert_eq!((s, &body[..]), (StatusCode::OK, &b"try later"[..]));
    assert_eq!(h["floodgate-fallback"], "rate_limited");

    // One request holds the only place (the slow upstream times out after 1 s, so it ends
    // by itself); one more meanwhile gets the fallback. A sheddable request at a full
    // bulkhead is shed at once, even with room to queue.
    for (path, status, body, trigger) in [
        (
            "/full",
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "bulkhead_full",
        ),
        ("/batch", StatusCode::ACCEPTED, "later", "shed"),
    ] {
        let first = tokio::spawn(get(gw.url(path).leak()));
        let in_flight = format!(
            "floodgate_concurrency_in_flight{{scope=\"route\",name=\"{}\"}}",
            path.trim_start_matches('/')
        );
        until("the first request holds the place", || async {
            gw.metric(&in_flight).await >= 1.0
        })
        .await;
        let (s, h, b) = get(&gw.url(path)).await;
        assert_eq!((s, &b[..]), (status, body.as_bytes()));
        assert_eq!(h["floodgate-fallback"], trigger);
        assert_eq!(first.await.unwrap().0, StatusCode::GATEWAY_TIMEOUT);
    }
    for (route, kind) in [
        ("to-spare", "upstream_error"),
        ("on-timeout", "timeout"),
        ("limited", "rate_limited"),
        ("full", "bulkhead_full"),
        ("batch", "shed"),
    ] {
        let series = format!("floodgate_fallbacks_total{{route=\"{route}\",kind=\"{kind}\"}}");
        assert_eq!(gw.metric(&series).await, 1.0, "{series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_abort_and_delay_requests_that_carry_the_header() {
    let (addr, _, hits) = switchable().await;
    let gw = gateway_with(
        &format!("  shop:\n    targets: [ \"{addr}\" ]"),
        "  - name: aborts
    match: { path: /abort }
    upstream: shop
    fault: { abort: { status: 503 }, header: x-drill }
  - name: delays
    match: { path: /delay }
    upstream: shop
    fault: { delay: { duration: 300ms } }
    circuit_breaker: { slow_call_rate: 100%, slow_call: 200ms, minimum_calls: 2, open_for: 60s }",
    );
    assert_eq!(get(&gw.url("/abort")).await.0, StatusCode::OK);
    let (s, h, body) = get_with(&gw.url("/abort"), &[("x-drill", "1")]).await;
    assert_problem(
        s,
        &h,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "fault-injected",
    );
    assert_eq!(
        hits.load(Ordering::Relaxed),
        1,
        "an aborted request never reaches the upstream"
    );
    // Each delayed call is slow for the route's breaker: two of them open it, which
    // proves the delay without timing the test.
    assert_eq!(statuses(&gw.url("/delay"), &[], 2).await, [200, 200]);
    let (s, h, body) = get(&gw.url("/delay")).await;
    assert_problem(
        s,
        &h,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "circuit-open",
    );
    assert_eq!(
        gw.metric("floodgate_faults_injected_total{route=\"aborts\",kind=\"abort\"}")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric("floodgate_faults_injected_total{route=\"delays\",kind=\"delay\"}")
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_sheds_the_least_critical_first() {
    // An upstream that holds every request until the test lets it go.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let addr = upstream(move |_req| {
        let g = g.clone();
        async move {
            let _p = g.acquire().await.unwrap();
            Response::new(full("done"))
        }
    })
    .await;
    let gw = Gateway::start(&format!(
        "listeners:
  - name: public
    address: 127.0.0.1:0
    trusted_proxies: [ 127.0.0.1 ]
    criticality_header: x-criticality
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ enabled: false }}
upstreams:
  held:
    targets: [ \"{addr}\" ]
    concurrency: {{ max_in_flight: 1, queue: 1, queue_timeout: 30s }}
routes:
  - {{ name: batch, match: {{ path: /batch }}, upstream: held, criticality: sheddable }}
  - {{ name: browse, match: {{ path: /browse }}, upstream: held }}
  - {{ name: checkout, match: {{ path: /checkout }}, upstream: held, criticality: critical }}
"
    ));
    let in_flight = |s: &'static str| tokio::spawn(get(gw.url(s).leak()));
    let holder = in_flight("/browse");
    let in_flight_series = "floodgate_concurrency_in_flight{scope=\"upstream\",name=\"held\"}";
    until("a request in flight", || async {
        gw.metric(in_flight_series).await >= 1.0
    })
    .await;
    // Full: a sheddable request is refused at once.
    let (s, h, body) = get(&gw.url("/batch")).await;
    assert_problem(s, &h, &body, StatusCode::SERVICE_UNAVAILABLE, "load-shed");
    assert_eq!(h["retry-after"], "1");
    // So is a normal one that a trusted proxy marks sheddable.
    let (s, h, body) = get_with(&gw.url("/browse"), &[("x-criticality", "sheddable")]).await;
    assert_problem(s, &h, &body, StatusCode::SERVICE_UNAVAILABLE, "load-shed");
    assert_eq!(
        gw.metric(
            "floodgate_load_shed_total{scope=\"upstream\",name=\"held\",criticality=\"sheddable\"}"
        )
        .await,
        2.0
    );
    // A normal request waits in the queue; a critical one pushes it out.
    let waiting = in_flight("/browse");
    let queued = "floodgate_concurrency_queued{scope=\"upstream\",name=\"held\"}";
    until("a request queued", || async {
        gw.metric(queued).await >= 1.0
    })
    .await;
    let critical = in_flight("/checkout");
    let (s, h, body) = waiting.await.unwrap();
    assert_problem(s, &h, &body, StatusCode::SERVICE_UNAVAILABLE, "load-shed");
    gate.add_permits(10);
    assert_eq!(holder.await.unwrap().0, StatusCode::OK);
    assert_eq!(critical.await.unwrap().0, StatusCode::OK);
    assert_eq!(
        gw.metric(
            "floodgate_load_shed_total{scope=\"upstream\",name=\"held\",criticality=\"normal\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_whose_client_leaves_gives_its_place_back() {
    // The first request after the breaker opens hangs at the upstream; its client gives up.
    let hang = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (h, f) = (hang.clone(), failing.clone());
    let addr = upstream(move |_req| {
        let (h, f) = (h.clone(), f.clone());
        async move {
            if h.swap(false, Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            let mut resp = Response::new(full("ok"));
            if f.load(Ordering::SeqCst) {
                *resp.status_mut() = StatusCode::BAD_GATEWAY;
            }
            resp
        }
    })
    .await;
    let gw = pool_gateway(&format!(
        "    targets: [ \"{addr}\" ]
    circuit_breaker: {{ consecutive_failures: 1, open_for: 200ms, half_open_calls: 1, probe_timeout: 60s }}"
    ));
    assert_eq!(get(&gw.url("/")).await.0, StatusCode::BAD_GATEWAY);
    wait_half_open(&gw, "upstream", "pool", None).await;
    hang.store(true, Ordering::SeqCst);
    failing.store(false, Ordering::SeqCst);
    // The probe: its client leaves after a moment, while the upstream still holds it.
    let probe = tokio::time::timeout(Duration::from_millis(300), get(gw.url("/").leak())).await;
    assert!(probe.is_err(), "the probe hangs");
    let b = breaker_state(&gw, "upstream", "pool", None).await;
    assert_eq!(b["state"], "half_open");
    // Its place came back when the client left (the probe timeout is a minute away): the
    // next request is the probe that closes the breaker.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (s, h, _) = get(&gw.url("/")).await;
        if s == StatusCode::OK {
            break;
        }
        assert_eq!(h["content-type"], "application/problem+json", "{s}");
        assert!(
            std::time::Instant::now() < deadline,
            "the probe's place never came back"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(
        breaker_state(&gw, "upstream", "pool", None).await["state"],
        "closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_an_unchanged_breaker_open() {
    let (addr, status, _) = switchable().await;
    status.store(500, Ordering::Relaxed);
    let upstreams = format!(
        "  pool:\n    targets: [ \"{addr}\" ]\n    circuit_breaker: {{ consecutive_failures: 2, open_for: 60s }}"
    );
    let config = |extra_route: &str| {
        config_with(
            &upstreams,
            &format!("  - match: {{ path_prefix: / }}\n    upstream: pool\n{extra_route}"),
        )
    };
    let gw = Gateway::start(&config(""));
    assert_eq!(statuses(&gw.url("/"), &[], 2).await, [500, 500]);
    assert_eq!(get(&gw.url("/")).await.0, StatusCode::SERVICE_UNAVAILABLE);
    gw.write_config(&config("  - match: { path: /new }\n    upstream: pool"));
    gw.wait_log("\"configuration reloaded\"").expect("reloaded");
    let (s, h, body) = get(&gw.url("/new")).await;
    assert_problem(
        s,
        &h,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "circuit-open",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_names_the_fallback_and_the_error_it_replaced() {
    let dead = closed_port();
    let gw = Gateway::start(&config(
        dead.addr,
        "  - name: down
    match: { path: /down }
    upstream: backend
    fallback: { when: [ upstream_error ], response: { body: sorry } }",
        "",
    ));
    assert_eq!(get(&gw.url("/down")).await.0, StatusCode::OK);
    let line = gw.access_line("\"route\":\"down\"").await;
    assert_eq!(line["status"], 200);
    assert_eq!(line["fallback"], "upstream_error");
    assert_eq!(line["error"], "upstream-connect-failed");
    assert_eq!(line["upstream"], "backend");
}
