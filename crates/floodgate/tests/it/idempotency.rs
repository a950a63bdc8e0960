//! Idempotency keys through the binary: a repeat is answered with the kept response and
//! never reaches the origin; a concurrent duplicate gets 409, a reused key 422, a missing
//! required key 400; keys are per client; failures and oversized answers are handled as
//! docs/caching.md says.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::support::*;

/// An origin that counts the requests for each path and answers with the count; `/slow`
/// waits until `open` is true, `/fail` answers 503 the first time, `/big` 4 KiB.
#[derive(Default)]
struct Origin {
    hits: Mutex<HashMap<String, u64>>,
    open: tokio::sync::watch::Sender<bool>,
    /// `Idempotency-Key` values seen.
    keys: Mutex<Vec<String>>,
}

impl Origin {
    fn hits(&self, path: &str) -> u64 {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// The origin, listening.
async fn start_origin() -> (std::net::SocketAddr, Arc<Origin>) {
    let origin = Arc::new(Origin::default());
    let o = origin.clone();
    let up = upstream(move |req: Request<hyper::body::Incoming>| {
        let o = o.clone();
        async move {
            let path = req.uri().path().to_owned();
            if let Some(k) = req.headers().get("idempotency-key") {
                o.keys.lock().unwrap().push(k.to_str().unwrap().to_owned());
            }
            let n = {
                let mut hits = o.hits.lock().unwrap();
                let n = hits.entry(path.clone()).or_default();
                *n += 1;
                *n
            };
            if path == "/slow" {
                let mut rx = o.open.subscribe();
                let _ = rx.wait_for(|open| *open).await;
            }
            let (status, body) = match path.as_str() {
                "/fail" if n == 1 => (StatusCode::SERVICE_UNAVAILABLE, "try again".to_owned()),
                "/big" => (StatusCode::CREATED, "x".repeat(4096)),
                _ => (StatusCode::CREATED, format!("order {n}")),
            };
            let mut resp = Response::new(full(body));
            *resp.status_mut() = status;
            resp.headers_mut()
                .insert("x-order", n.to_string().parse().unwrap());
            resp
        }
    })
    .await;
    (up, origin)
}

/// Sends ALICE's `POST /slow` with `key` through `gw` in a task, and waits until the
/// origin holds it.
async fn first_in_flight(
    gw: &Gateway,
    origin: &Origin,
    key: &'static str,
) -> tokio::task::JoinHandle<(StatusCode, http::HeaderMap, Bytes)> {
    let url = gw.url("/slow");
    let first = tokio::spawn(async move {
        let req = Request::post(url)
            .header("idempotency-key", key)
            .header("x-forwarded-for", ALICE)
            .body(Full::new(Bytes::from_static(b"pay")))
            .unwrap();
        send(req).await
    });
    until("the first request reaches the origin", || async {
        origin.hits("/slow") > 0
    })
    .await;
    first
}

async fn setup() -> (Gateway, Arc<Origin>) {
    let (up, origin) = start_origin().await;
    let gw = Gateway::start(&format!(
        "listeners: [ {{ name: public, address: \"127.0.0.1:0\", trusted_proxies: [ 127.0.0.1 ] }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ output: \"{{dir}}/access.log\" }}
upstreams:
  origin:
    targets: [ \"{up}\" ]
routes:
  - name: strict
    match: {{ path_prefix: /strict }}
    upstream: origin
    idempotency: {{ required: true }}
  - name: orders
    match: {{ path_prefix: / }}
    upstream: origin
    idempotency: {{ ttl: 1h, max_response_size: 1KiB }}
"
    ));
    (gw, origin)
}

async fn post(
    gw: &Gateway,
    path: &str,
    key: Option<&str>,
    body: &'static str,
    client: &str,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(gw.url(path))
        .header("x-forwarded-for", client);
    if let Some(k) = key {
        b = b.header("idempotency-key", k);
    }
    send(
        b.body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap(),
    )
    .await
}

const ALICE: &str = "192.0.2.1";
const BOB: &str = "192.0.2.2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_gets_the_kept_response_and_never_reaches_the_origin() {
    let (gw, origin) = setup().await;
    let key = Some("\"8e03978e-40d5-43e8-bc93-6894a57f9324\"");
    let (s, h, b) = post(&gw, "/orders", key, "{\"qty\":1}", ALICE).await;
    assert_eq!((s, &b[..]), (StatusCode::CREATED, &b"order 1"[..]));
    assert!(!h.contains_key("idempotent-replayed"));
    for _ in 0..3 {
        let (s, h, b) = post(&gw, "/orders", key, "{\"qty\":1}", ALICE).await;
        assert_eq!((s, &b[..]), (StatusCode::CREATED, &b"order 1"[..]));
        assert_eq!(h["idempotent-replayed"], "true");
        assert_eq!(h["x-order"], "1", "the kept fields too");
    }
    assert_eq!(origin.hits("/orders"), 1);
    assert_eq!(
        origin.keys.lock().unwrap().as_slice(),
        ["\"8e03978e-40d5-43e8-bc93-6894a57f9324\""],
        "the key is passed on"
    );
    let line = gw.access_line("\"idempotency\":\"replayed\"").await;
    assert_eq!(
        (line["route"].as_str(), line["status"].as_u64()),
        (Some("orders"), Some(201))
    );
    assert_eq!(
        gw.access_line("\"idempotency\":\"first\"").await["upstream"],
        "origin"
    );
    // Without a key, or with another one, each request goes through.
    post(&gw, "/orders", None, "{\"qty\":1}", ALICE).await;
    post(&gw, "/orders", Some("other"), "{\"qty\":1}", ALICE).await;
    assert_eq!(origin.hits("/orders"), 3);
    assert_eq!(
        gw.metric("floodgate_idempotency_requests_total{route=\"orders\",kind=\"replayed\"}")
            .await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_for_another_request_is_422() {
    let (gw, origin) = setup().await;
    post(&gw, "/orders", Some("k1"), "{\"qty\":1}", ALICE).await;
    let (s, h, b) = post(&gw, "/orders", Some("k1"), "{\"qty\":2}", ALICE).await;
    assert_problem(
        s,
        &h,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
    );
    let (s, h, b) = post(&gw, "/orders/other", Some("k1"), "{\"qty\":1}", ALICE).await;
    assert_problem(
        s,
        &h,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
    );
    assert_eq!(origin.hits("/orders"), 1);
    assert_eq!(origin.hits("/orders/other"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_while_the_first_is_in_flight_is_409_then_replayed() {
    let (gw, origin) = setup().await;
    let first = first_in_flight(&gw, &origin, "slow-1").await;
    let (s, h, b) = post(&gw, "/slow", Some("slow-1"), "pay", ALICE).await;
    let v = assert_problem(s, &h, &b, StatusCode::CONFLICT, "idempotency-key-in-flight");
    assert!(v["detail"].as_str().unwrap().contains("in progress"));
    assert_eq!(h["retry-after"], "1");
    origin.open.send_replace(true);
    let (s, _, b) = first.await.unwrap();
    assert_eq!((s, &b[..]), (StatusCode::CREATED, &b"order 1"[..]));
    let (s, h, b) = post(&gw, "/slow", Some("slow-1"), "pay", ALICE).await;
    assert_eq!((s, &b[..]), (StatusCode::CREATED, &b"order 1"[..]));
    assert_eq!(h["idempotent-replayed"], "true");
    assert_eq!(origin.hits("/slow"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_belong_to_one_client() {
    let (gw, origin) = setup().await;
    let (_, _, a) = post(&gw, "/orders", Some("shared"), "x", ALICE).await;
    let (_, h, b) = post(&gw, "/orders", Some("shared"), "x", BOB).await;
    assert_eq!((&a[..], &b[..]), (&b"order 1"[..], &b"order 2"[..]));
    assert!(!h.contains_key("idempotent-replayed"));
    assert_eq!(origin.hits("/orders"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_not_kept_and_oversized_answers_are_not_done_twice() {
    let (gw, origin) = setup().await;
    let (s, _, _) = post(&gw, "/fail", Some("f1"), "x", ALICE).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let (s, h, _) = post(&gw, "/fail", Some("f1"), "x", ALICE).await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "a 503 is not kept: the retry goes through"
    );
    assert!(!h.contains_key("idempotent-replayed"));
    assert_eq!(origin.hits("/fail"), 2);

    let (s, _, b) = post(&gw, "/big", Some("b1"), "x", ALICE).await;
    assert_eq!((s, b.len()), (StatusCode::CREATED, 4096));
    let (s, h, b) = post(&gw, "/big", Some("b1"), "x", ALICE).await;
    assert_problem(
        s,
        &h,
        &b,
        StatusCode::CONFLICT,
        "idempotent-response-not-kept",
    );
    assert_eq!(origin.hits("/big"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_malformed_keys_are_400() {
    let (gw, origin) = setup().await;
    let (s, h, b) = post(&gw, "/strict", None, "x", ALICE).await;
    assert_problem(
        s,
        &h,
        &b,
        StatusCode::BAD_REQUEST,
        "idempotency-key-missing",
    );
    for bad in ["\"unterminated", "\"\""] {
        let (s, h, b) = post(&gw, "/orders", Some(bad), "x", ALICE).await;
        let v = assert_problem(s, &h, &b, StatusCode::BAD_REQUEST, "bad-request");
        assert!(v["detail"].as_str().unwrap().contains("Idempotency-Key"));
    }
    // Methods keys do not apply to pass untouched.
    let (s, _, _) = get_with(&gw.url("/strict"), &[("idempotency-key", "g1")]).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(origin.hits("/orders"), 0);
    assert_eq!(origin.hits("/strict"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_shared_keys_a_retry_on_another_gateway_is_still_a_repeat() {
    let Some(url) = redis_url() else { return };
    let (up, origin) = start_origin().await;
    let cfg = format!(
        "listeners: [ {{ name: public, address: \"127.0.0.1:0\", trusted_proxies: [ 127.0.0.1 ] }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ enabled: false }}
cluster:
  redis: {{ url: \"{url}\", key_prefix: \"{prefix}\", timeout: 5s }}
upstreams:
  origin:
    targets: [ \"{up}\" ]
routes:
  - name: orders
    match: {{ path_prefix: / }}
    upstream: origin
    idempotency: {{ shared: true }}
",
        prefix = unique_prefix()
    );
    let a = Gateway::start(&cfg);
    let b = Gateway::start(&cfg);
    let (s, _, first) = post(&a, "/orders", Some("fleet-1"), "x", ALICE).await;
    assert_eq!((s, &first[..]), (StatusCode::CREATED, &b"order 1"[..]));
    // The kept response is written in the background: the other gateway answers 409
    // until it lands, then the replay.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (s, h, b2) = post(&b, "/orders", Some("fleet-1"), "x", ALICE).await;
        if s == StatusCode::CREATED {
            assert_eq!(&b2[..], b"order 1");
            assert_eq!(h["idempotent-replayed"], "true");
            break;
        }
        assert_problem(
            s,
            &h,
            &b2,
            StatusCode::CONFLICT,
            "idempotency-key-in-flight",
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the kept response never reached Redis"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (s, h, b3) = post(&b, "/orders", Some("fleet-1"), "y", ALICE).await;
    assert_problem(
        s,
        &h,
        &b3,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
    );
    assert_eq!(origin.hits("/orders"), 1, "one order for the fleet");

    // While one gateway's first request is in flight, the other answers 409.
    let first = first_in_flight(&a, &origin, "fleet-2").await;
    let (s, h, body) = post(&b, "/slow", Some("fleet-2"), "pay", ALICE).await;
    assert_problem(
        s,
        &h,
        &body,
        StatusCode::CONFLICT,
        "idempotency-key-in-flight",
    );
    origin.open.send_replace(true);
    assert_eq!(first.await.unwrap().0, StatusCode::CREATED);
    assert_eq!(origin.hits("/slow"), 1);
}
