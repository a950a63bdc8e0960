//! Request paths are made canonical before routing (RFC 3986 §6), and the canonical form
//! is what policies see and what the upstream receives: a route refused at `/admin`
//! cannot be reached through `/public/../admin`, `/%61dmin` or `//admin`.

use crate::support::*;

/// `/admin` refused to everyone, `/public` stripped of its prefix, and a catch-all, all
/// to an echo upstream; `paths` are the listener's path settings.
async fn guarded(paths: &str) -> Gateway {
    let echo = echo_upstream().await;
    Gateway::start(&format!(
        "listeners: [ {{ name: public, address: \"127.0.0.1:0\"{paths} }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ output: \"{{dir}}/access.log\" }}
upstreams:
  echo: {{ targets: [ \"{echo}\" ] }}
routes:
  - name: admin
    match: {{ path_prefix: /admin }}
    upstream: echo
    ip: {{ deny: [ \"0.0.0.0/0\", \"::/0\" ] }}
  - name: public
    match: {{ path_prefix: /public }}
    upstream: echo
    rewrite: {{ strip_prefix: /public }}
  - name: rest
    match: {{ path_prefix: / }}
    upstream: echo
"
    ))
}

/// The status and, for a proxied answer, the path the upstream received.
async fn ask(gw: &Gateway, target: &str) -> (u16, Option<String>) {
    let answer = raw_exchange(
        gw.addr(),
        format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    let uri = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(body).ok())
        .and_then(|v| v["uri"].as_str().map(str::to_owned));
    (status, uri)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_and_escapes_cannot_reach_a_refused_route() {
    let gw = guarded("").await;
    for target in [
        "/admin/secret",
        "/public/../admin/secret",
        "/public/%2e%2e/admin/secret",
        "/public/%2E%2E/admin/secret",
        "/x/../admin/secret",
        "/./admin/secret",
        "/%61dmin/secret",
        "//admin//secret",
    ] {
        assert_eq!(ask(&gw, target).await.0, 403, "{target}");
    }
    let line = gw.access_line("\"route\":\"admin\"").await;
    assert_eq!(
        line["path"], "/admin/secret",
        "the log shows the canonical path"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_receives_the_canonical_path() {
    let gw = guarded("").await;
    assert_eq!(
        ask(&gw, "/public/a/./b/../c/%7euser?q=%2e%2e").await,
        (200, Some("/a/c/~user?q=%2e%2e".to_owned())),
        "the query is left as it came"
    );
    assert_eq!(
        ask(&gw, "/docs/a%c3%a9").await,
        (200, Some("/docs/a%C3%A9".to_owned()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_above_the_root_and_broken_escapes_are_400() {
    let gw = guarded("").await;
    for target in [
        "/../admin",
        "/public/../../admin",
        "/%2e%2e/x",
        "/a%zz",
        "/a%2",
    ] {
        assert_eq!(ask(&gw, target).await.0, 400, "{target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_slashes_are_kept_decoded_or_refused_as_configured() {
    // Kept (the default): one segment, not a separator; it reaches the upstream as sent.
    let keep = guarded("").await;
    assert_eq!(
        ask(&keep, "/public/..%2fadmin").await,
        (200, Some("/..%2Fadmin".to_owned()))
    );
    let decode = guarded(", paths: { escaped_slashes: decode }").await;
    assert_eq!(ask(&decode, "/public/..%2fadmin/x").await.0, 403);
    assert_eq!(ask(&decode, "/public/..%5cadmin/x").await.0, 403);
    let reject = guarded(", paths: { escaped_slashes: reject }").await;
    assert_eq!(ask(&reject, "/public/..%2fadmin").await.0, 400);
    assert_eq!(ask(&reject, "/public/ok").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slashes_are_kept_apart_when_merging_is_off() {
    let gw = guarded(", paths: { merge_slashes: false }").await;
    assert_eq!(ask(&gw, "/public//a").await, (200, Some("//a".to_owned())));
}
