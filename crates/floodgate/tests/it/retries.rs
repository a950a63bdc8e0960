//! Retries through the binary, counted at real upstream servers: a dead target is retried
//! on a live one; a listed status is retried for GET but not for POST; the budget caps
//! retries while everything fails; a small body is sent again whole, a streamed one never.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::support::*;

/// A server answering `status`, counting arrivals by method.
async fn counting(status: StatusCode) -> (SocketAddr, Arc<[AtomicU64; 2]>) {
    let counts: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let c = counts.clone();
    let addr = upstream(move |req| {
        let c = c.clone();
        async move {
            let i = usize::from(req.method() == Method::POST);
            c[i].fetch_add(1, Ordering::Relaxed);
            let mut resp = Response::new(full("x"));
            *resp.status_mut() = status;
            resp
        }
    })
    .await;
    (addr, counts)
}

async fn post(url: &str, body: &'static str) -> (StatusCode, Bytes) {
    let (status, _, body) = send(
        Request::post(url)
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_target_is_retried_on_a_live_one() {
    let dead = closed_port();
    let (live, counts) = counting(StatusCode::OK).await;
    let gw = pool_gateway(&format!(
        "    targets: [ \"{dead}\", \"{live}\" ]\n    retries: {{ attempts: 1 }}"
    ));
    for _ in 0..10 {
        assert_eq!(get(&gw.url("/")).await.0, StatusCode::OK);
    }
    // POST too: a connect failure means nothing reached the target.
    for _ in 0..4 {
        assert_eq!(post(&gw.url("/"), "p").await.0, StatusCode::OK);
    }
    assert_eq!(counts[0].load(Ordering::Relaxed), 10);
    assert_eq!(counts[1].load(Ordering::Relaxed), 4);
    let retries = gw
        .metric("floodgate_upstream_retries_total{upstream=\"pool\",kind=\"connect_error\"}")
        .await;
    // The rotation starts at a random place, and a retry's pick moves it on: so every
    // request tries the dead target first, but perhaps the very first one.
    assert!(retries == 14.0 || retries == 13.0, "{retries}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_status_is_retried_for_get_but_not_for_post() {
    let (failing, bad) = counting(StatusCode::SERVICE_UNAVAILABLE).await;
    let (working, good) = counting(StatusCode::OK).await;
    let gw = pool_gateway(&format!(
        "    targets: [ \"{failing}\", \"{working}\" ]\n    retries: {{ attempts: 1, retry_on: [ \"503\" ] }}"
    ));
    for _ in 0..20 {
        assert_eq!(get(&gw.url("/")).await.0, StatusCode::OK);
    }
    let mut refused = 0;
    for _ in 0..10 {
        if post(&gw.url("/"), "p").await.0 == StatusCode::SERVICE_UNAVAILABLE {
            refused += 1;
        }
    }
    // Each POST reached exactly one target, once: the failing one's answers went back.
    let posts_failing = bad[1].load(Ordering::Relaxed);
    assert_eq!(posts_failing + good[1].load(Ordering::Relaxed), 10);
    assert_eq!(posts_failing, refused);
    assert!(
        refused > 0,
        "round robin sent some POSTs to the failing target"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_caps_retries_while_everything_fails() {
    let (failing, counts) = counting(StatusCode::SERVICE_UNAVAILABLE).await;
    let gw = pool_gateway(&format!(
        "    targets: [ \"{failing}\" ]\n    retries: {{ attempts: 3, retry_on: [ 5xx ], budget: 20%, min_per_second: 0, backoff: 1ms, max_backoff: 2ms }}"
    ));
    for _ in 0..50 {
        assert_eq!(get(&gw.url("/")).await.0, StatusCode::SERVICE_UNAVAILABLE);
    }
    // 50 requests, so at most 10 retries: without the budget there would be 150.
    let arrivals = counts[0].load(Ordering::Relaxed);
    assert!((51..=60).contains(&arrivals), "{arrivals}");
    assert!(
        gw.metric("floodgate_upstream_retry_budget_exhausted_total{upstream=\"pool\"}")
            .await
            > 0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_body_is_sent_again_whole_and_a_streamed_one_never() {
    // Fails every other arrival; echoes the body it got.
    let arrivals = Arc::new(AtomicU64::new(0));
    let seen = arrivals.clone();
    let up = upstream(move |req| {
        let seen = seen.clone();
        async move {
            let n = seen.fetch_add(1, Ordering::Relaxed);
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let mut resp = Response::new(full(body));
            if n.is_multiple_of(2) {
                *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            resp
        }
    })
    .await;
    let gw = pool_gateway(&format!(
        "    targets: [ \"{up}\" ]\n    retries: {{ attempts: 1, retry_on: [ \"503\" ], methods: [ POST ], min_per_second: 10, replay_buffer: 1KiB }}"
    ));
    let (status, body) = post(&gw.url("/"), "hello, twice").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello, twice");
    assert_eq!(arrivals.load(Ordering::Relaxed), 2);
    // A body of unknown length streams through once and is not retried.
    let client = client_for_streams();
    let req = Request::post(gw.url("/"))
        .body(Generated::new(10_000, 1000))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(arrivals.load(Ordering::Relaxed), 3);
}

fn client_for_streams()
-> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Generated>
{
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_timeout_bounds_all_tries_together() {
    // A target that never answers, a per-try timeout of a minute: only `total` ends it.
    let never = Arc::new(tokio::sync::Notify::new());
    let up = upstream(move |_req| {
        let never = never.clone();
        async move {
            never.notified().await;
            Response::new(full("unreachable"))
        }
    })
    .await;
    let gw = pool_gateway(&format!(
        "    targets: [ \"{up}\" ]\n    timeouts: {{ request: 60s, total: 200ms }}"
    ));
    let answer = tokio::time::timeout(PATIENCE, get(&gw.url("/")))
        .await
        .expect("answered long before the per-try timeout");
    let (status, h, body) = answer;
    assert_problem(
        status,
        &h,
        &body,
        StatusCode::GATEWAY_TIMEOUT,
        "upstream-timeout",
    );
}
