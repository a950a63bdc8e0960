//! CORS through the binary: preflights answered by the gateway (allowed, and refused
//! for an origin, a method or a header not allowed), actual responses decorated for
//! allowed origins only (also the gateway's own 401s), credentials and exposed headers;
//! and a route's security response headers.

use http::{Method, Request, StatusCode};
use http_body_util::Full;

use crate::support::*;

async fn preflight(
    url: &str,
    origin: &str,
    method: &str,
    headers: Option<&str>,
) -> http::HeaderMap {
    let mut req = Request::builder()
        .method(Method::OPTIONS)
        .uri(url)
        .header("origin", origin)
        .header("access-control-request-method", method);
    if let Some(h) = headers {
        req = req.header("access-control-request-headers", h);
    }
    let (s, h, _) = send(req.body(Full::new(bytes::Bytes::new())).unwrap()).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_and_responses() {
    let up = echo_upstream().await;
    let gw = gateway_with(
        &format!("  echo:\n    targets: [ \"{up}\" ]"),
        "  - name: api
    match: { path_prefix: /api }
    upstream: echo
    auth: { api_key: {} }
    cors:
      allow_origins: [ \"https://app.test\", \"https://*.shop.test\" ]
      allow_methods: [ GET, PUT ]
      allow_headers: [ content-type, x-api-key ]
      expose_headers: [ x-request-id ]
      allow_credentials: true
      max_age: 5m
  - name: public
    match: { path_prefix: /public }
    upstream: echo
    cors: { allow_origins: [ \"*\" ] }
    security_headers: { content_security_policy: \"default-src 'self'\" }",
    );
    let api = gw.url("/api/items");
    // An allowed preflight, answered by the gateway before authentication.
    let h = preflight(
        &api,
        "https://eu.shop.test",
        "PUT",
        Some("Content-Type, X-Api-Key"),
    )
    .await;
    assert_eq!(h["access-control-allow-origin"], "https://eu.shop.test");
    assert_eq!(h["access-control-allow-methods"], "GET, PUT");
    assert_eq!(h["access-control-allow-headers"], "Content-Type, X-Api-Key");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "300");
    assert!(h["vary"].to_str().unwrap().contains("Origin"));
    // Refused: another origin, a method or a header not allowed — no CORS headers.
    for (origin, method, headers) in [
        ("https://evil.test", "GET", None),
        ("https://app.test", "DELETE", None),
        ("https://app.test", "GET", Some("x-secret")),
    ] {
        let h = preflight(&api, origin, method, headers).await;
        assert!(
            h.get("access-control-allow-origin").is_none(),
            "{origin} {method} {headers:?}"
        );
    }
    // Actual responses: decorated for an allowed origin, also on the gateway's own 401.
    let (s, h, _) = get_with(&api, &[("origin", "https://app.test")]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h["access-control-allow-origin"], "https://app.test");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-expose-headers"], "x-request-id");
    let (_, h, _) = get_with(&api, &[("origin", "https://evil.test")]).await;
    assert!(h.get("access-control-allow-origin").is_none());
    assert_eq!(h["vary"], "Origin");
    // `*` without credentials.
    let (s, h, _) = get_with(&gw.url("/public/x"), &[("origin", "https://any.test")]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(h.get("access-control-allow-credentials").is_none());
    // Security headers: the defaults and the CSP given.
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "strict-origin-when-cross-origin");
    assert_eq!(h["content-security-policy"], "default-src 'self'");
}
