//! The pipeline's phases without a socket: requests with bodies made in the test go
//! through [`super::serve`] on a gateway built from a config string. The upstream is a
//! port nothing listens on, so a request that reaches the exchange is answered 502
//! `upstream-connect` and counted as an upstream error: what a test sees tells which
//! phase answered, and the metrics tell which phases ran.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::access_log::AccessLog;
use crate::body::ResponseBody;
use crate::client_body::ClientBody;
use crate::conn::{ConnInfo, ConnState};
use crate::gateway::Gateway;
use crate::headers::ClientAddr;
use crate::metrics::Metrics;

fn gateway(routes: &str) -> Arc<Gateway> {
    // Nothing listens on the discard port of loopback.
    let yaml = format!(
        "listeners: [ {{ name: public, address: \"127.0.0.1:0\" }} ]
consumers:
  - {{ name: alice, api_keys: [ \"sha256:{}\" ] }}
upstreams:
  closed: {{ targets: [ \"127.0.0.1:9\" ], timeouts: {{ connect: 2s }} }}
routes:
{routes}",
        alice_digest()
    );
    let cfg = floodgate_config::load_str("test.yaml", &yaml, &|_| None).expect("config");
    let metrics = Arc::new(Metrics::new());
    Gateway::new(cfg, metrics.clone(), AccessLog::disabled(metrics)).expect("gateway")
}

/// SHA-256 of alice's API key, `alice-key`, in hex.
fn alice_digest() -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, b"alice-key");
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn conn(ip: [u8; 4]) -> Arc<ConnInfo> {
    let remote = SocketAddr::from((ip, 40000));
    Arc::new(ConnInfo {
        listener: 0,
        listener_name: Arc::from("public"),
        remote,
        client: ClientAddr::new(IpAddr::from(ip)),
        state: Arc::new(ConnState::default()),
        tls: None,
        body_read: Duration::from_secs(5),
    })
}

fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Request<ClientBody> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "gw.test");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let body = ClientBody::from_body(
        Full::new(Bytes::from_static(body.as_bytes())),
        Duration::from_secs(5),
    );
    b.body(body).expect("request")
}

/// Serves `req` from `ip` and reads the whole answer (which finishes its record).
async fn serve(gw: &Arc<Gateway>, ip: [u8; 4], req: Request<ClientBody>) -> (Response<()>, Bytes) {
    let resp = super::serve(gw.clone(), conn(ip), req).await;
    let (parts, body) = resp.into_parts();
    let bytes = collect(body).await;
    (Response::from_parts(parts, ()), bytes)
}

async fn collect(body: ResponseBody) -> Bytes {
    body.collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default()
}

/// Request headers, as a test lists them.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// The sum of a metric family's series.
fn count(gw: &Gateway, family: &str) -> f64 {
    gw.metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with(family) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn problem_type(body: &Bytes) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).expect("problem+json");
    v["type"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_request_an_earlier_guard_refuses_never_reaches_a_later_phase() {
    let gw = gateway(
        "  - name: guarded
    match: { path_prefix: / }
    upstream: closed
    ip: { deny: [ 192.0.2.0/24 ] }
    auth: { api_key: {} }
    rate_limits: [ { name: once, algorithm: token_bucket, rate: 1/1h, burst: 1 } ]
",
    );
    // The IP rule refuses first: authentication never runs, no limit is spent, no
    // upstream is tried.
    let (resp, body) = serve(&gw, [192, 0, 2, 7], request("GET", "/a", &[], "")).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(problem_type(&body).ends_with("forbidden"), "{body:?}");
    assert_eq!(count(&gw, "floodgate_auth_refusals_total"), 0.0);
    assert_eq!(count(&gw, "floodgate_ratelimit_decisions_total"), 0.0);
    assert_eq!(count(&gw, "floodgate_upstream_errors_total"), 0.0);

    // Authentication refuses next, and the limit is still not spent: two refused
    // requests, then one with the key, which the limit admits and the exchange answers.
    for _ in 0..2 {
        let (resp, _) = serve(&gw, [198, 51, 100, 1], request("GET", "/a", &[], "")).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(count(&gw, "floodgate_auth_refusals_total"), 2.0);
    assert_eq!(count(&gw, "floodgate_ratelimit_decisions_total"), 0.0);
    let key = [("x-api-key", "alice-key")];
    let (resp, body) = serve(&gw, [198, 51, 100, 1], request("GET", "/a", &key, "")).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY, "{body:?}");
    assert!(
        problem_type(&body).ends_with("upstream-connect-failed"),
        "{body:?}"
    );
    assert_eq!(count(&gw, "floodgate_upstream_errors_total"), 1.0);

    // The limit refuses the next one: the exchange does not run again.
    let (resp, _) = serve(&gw, [198, 51, 100, 1], request("GET", "/a", &key, "")).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(count(&gw, "floodgate_upstream_errors_total"), 1.0);
}

#[tokio::test]
async fn a_waf_block_on_the_head_comes_before_authentication() {
    let gw = gateway(
        "  - name: waf
    match: { path_prefix: / }
    upstream: closed
    waf: { mode: block }
    auth: { api_key: {} }
",
    );
    let (resp, _) = serve(
        &gw,
        [198, 51, 100, 1],
        request("GET", "/a?q=%27%20OR%201%3D1--", &[], ""),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(count(&gw, "floodgate_auth_refusals_total"), 0.0);
    assert_eq!(count(&gw, "floodgate_upstream_errors_total"), 0.0);
}

#[tokio::test]
async fn the_response_filters_run_on_every_answer_the_gateways_own_included() {
    let gw = gateway(
        "  - name: api
    match: { path_prefix: /api }
    upstream: closed
    security_headers: {}
    cors: { allow_origins: [ \"https://app.test\" ] }
    auth: { api_key: {} }
    rate_limits: [ { name: once, algorithm: token_bucket, rate: 1/1h, burst: 1, headers: true, key: [ consumer ] } ]
",
    );
    let origin = ("origin", "https://app.test");
    let key = ("x-api-key", "alice-key");
    // The front door's own answer (no route): a request id, and nothing of a route.
    let (resp, _) = serve(
        &gw,
        [198, 51, 100, 1],
        request("GET", "/nowhere", &[origin], ""),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(resp.headers().contains_key("x-request-id"));
    assert!(!resp.headers().contains_key("x-content-type-options"));
    // A guard's refusal (401), the exchange's failure (502) and the limit's (429): each
    // has the request id, the route's security headers and its CORS fields, and the
    // limit's state once the limit has been asked.
    let cases: [(Headers<'_>, StatusCode, bool); 3] = [
        (&[origin], StatusCode::UNAUTHORIZED, false),
        (&[origin, key], StatusCode::BAD_GATEWAY, true),
        (&[origin, key], StatusCode::TOO_MANY_REQUESTS, true),
    ];
    for (headers, status, limited) in cases {
        let (resp, body) = serve(
            &gw,
            [198, 51, 100, 1],
            request("GET", "/api/x", headers, ""),
        )
        .await;
        assert_eq!(resp.status(), status, "{body:?}");
        let h = resp.headers();
        assert!(h.contains_key("x-request-id"), "{status}: {h:?}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{status}: {h:?}");
        assert_eq!(
            h["access-control-allow-origin"], "https://app.test",
            "{status}: {h:?}"
        );
        assert_eq!(h.contains_key("ratelimit"), limited, "{status}: {h:?}");
    }
}

#[tokio::test]
async fn a_body_the_client_sends_reaches_the_phases_that_read_it() {
    // The WAF reads a body within its limit: an attack in it is refused before the
    // exchange; a benign one goes on to it.
    let gw = gateway(
        "  - name: upload
    match: { path_prefix: / }
    upstream: closed
    waf: { mode: block }
",
    );
    let attack = request(
        "POST",
        "/a",
        &[("content-type", "text/plain"), ("content-length", "27")],
        "<script>alert(1)</script>!!",
    );
    let (resp, _) = serve(&gw, [198, 51, 100, 1], attack).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(count(&gw, "floodgate_upstream_errors_total"), 0.0);
    let benign = request("POST", "/a", &[("content-length", "5")], "hello");
    let (resp, _) = serve(&gw, [198, 51, 100, 1], benign).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(count(&gw, "floodgate_upstream_errors_total"), 1.0);
}
