//! Documented behaviours that no other test held: each test names the document and the
//! claim (docs/claims.md maps every claim to its test).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;

use crate::support::*;

/// An upstream that counts requests by path; `/slow*` takes a second, `/xfetch` carries
/// `max-age=5`, everything else `max-age=60`; `X-Frame-Options: SAMEORIGIN` always.
async fn counting_origin() -> (std::net::SocketAddr, Arc<Mutex<HashMap<String, usize>>>) {
    let hits = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let h = hits.clone();
    let addr = upstream(move |req: Request<hyper::body::Incoming>| {
        let path = req.uri().path().to_owned();
        *h.lock().unwrap().entry(path.clone()).or_default() += 1;
        async move {
            if path.starts_with("/slow") || path == "/xfetch" {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let mut r = Response::new(full(path.clone()));
            let cc = if path == "/xfetch" {
                "max-age=5"
            } else {
                "max-age=60"
            };
            r.headers_mut().insert("cache-control", cc.parse().unwrap());
            r.headers_mut()
                .insert("x-frame-options", "SAMEORIGIN".parse().unwrap());
            r
        }
    })
    .await;
    (addr, hits)
}

fn hits(map: &Arc<Mutex<HashMap<String, usize>>>, path: &str) -> usize {
    map.lock().unwrap().get(path).copied().unwrap_or(0)
}

/// security.md: "an unknown `kid` triggers a fetch at most once per `min_refetch`, so
/// made-up key ids cannot be used to flood the JWKS server".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_key_ids_cannot_flood_the_jwks_server() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let f = fetches.clone();
    let jwks = upstream(move |_req| {
        f.fetch_add(1, Ordering::SeqCst);
        async {
            Response::new(full(
                r#"{"keys":[{"kty":"oct","alg":"HS256","kid":"real","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}]}"#,
            ))
        }
    })
    .await;
    let up = echo_upstream().await;
    let gw = gateway_with(
        &format!("  echo:\n    targets: [ \"{up}\" ]"),
        &format!(
            "  - match: {{ path_prefix: / }}
    upstream: echo
    auth: {{ jwt: {{ jwks: {{ url: \"http://{jwks}/keys\", min_refetch: 1m }} }} }}"
        ),
    );
    for i in 0..10 {
        let head = base64url(format!(r#"{{"alg":"HS256","kid":"made-up-{i}"}}"#).as_bytes());
        let token = format!("{head}.e30.c2ln");
        let (s, _, _) = get_with(
            &gw.url("/"),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    // The first use fetched the set; ten unknown ids within a minute fetched nothing more.
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

/// Base64url without padding (RFC 4648 §5).
fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// security.md: security headers are set "on every response, the gateway's own errors
/// included, replacing what the upstream sent".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_replace_the_upstreams_and_mark_the_gateways_own_errors() {
    let (origin, _) = counting_origin().await;
    let gw = gateway_with(
        &format!("  origin:\n    targets: [ \"{origin}\" ]"),
        "  - match: { path_prefix: / }
    upstream: origin
    security_headers: {}
    rate_limits: [ { algorithm: token_bucket, rate: 1/1m, burst: 1 } ]",
    );
    let (s, h, _) = get(&gw.url("/page")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        h["x-frame-options"], "DENY",
        "the upstream's SAMEORIGIN replaced"
    );
    assert_eq!(h.get_all("x-frame-options").iter().count(), 1);
    let (s, h, _) = get(&gw.url("/page")).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "strict-origin-when-cross-origin");
}

/// configuration.md, cache: `early_refresh` "a fresh hit refreshes the entry in the
/// background with a probability that grows as expiry nears"; `miss_rate_limits` "counted
/// only on requests that go upstream".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xfetch_refreshes_a_fresh_entry_early_and_miss_limits_count_only_misses() {
    let (origin, counts) = counting_origin().await;
    let gw = gateway_with(
        &format!("  origin:\n    targets: [ \"{origin}\" ]"),
        "  - match: { path: /xfetch }
    upstream: origin
    cache: { jitter: 0%, early_refresh: 10 }
  - match: { path_prefix: /misses }
    upstream: origin
    cache: { jitter: 0%, miss_rate_limits: [ { algorithm: token_bucket, rate: 1/1h, burst: 2 } ] }",
    );
    // A fetch of a second for five seconds of freshness: with β = 10 each hit refreshes
    // early with probability e^(-0.5) at first, more as expiry nears.
    assert_eq!(get(&gw.url("/xfetch")).await.0, StatusCode::OK);
    until("an early refresh", || async {
        let (s, h, _) = get(&gw.url("/xfetch")).await;
        assert_eq!(s, StatusCode::OK);
        let status = h["cache-status"].to_str().unwrap().to_owned();
        assert!(
            status.contains("hit"),
            "clients are served from the cache: {status}"
        );
        hits(&counts, "/xfetch") == 2
    })
    .await;
    // Misses are limited (two), hits are not.
    assert_eq!(get(&gw.url("/misses/a")).await.0, StatusCode::OK);
    assert_eq!(get(&gw.url("/misses/b")).await.0, StatusCode::OK);
    assert_eq!(
        get(&gw.url("/misses/c")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    for _ in 0..5 {
        assert_eq!(get(&gw.url("/misses/a")).await.0, StatusCode::OK);
    }
    assert_eq!(hits(&counts, "/misses/a"), 1);
    assert_eq!(hits(&counts, "/misses/c"), 0);
}

/// configuration.md, fallback: "only requests without a body can be sent again (others get
/// the error)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_upstream_takes_only_requests_without_a_body() {
    let spare = named_upstream("spare").await;
    let dead = closed_port();
    let gw = gateway_with(
        &format!("  dead:\n    targets: [ \"{dead}\" ]\n  spare:\n    targets: [ \"{spare}\" ]"),
        "  - match: { path_prefix: / }
    upstream: dead
    fallback: { when: [ upstream_error ], upstream: spare }",
    );
    let (s, _, body) = get(&gw.url("/x")).await;
    assert_eq!((s, &body[..]), (StatusCode::OK, &b"spare"[..]));
    let (s, h, body) = send(
        Request::post(gw.url("/x"))
            .body(Full::new(Bytes::from_static(b"an order")))
            .unwrap(),
    )
    .await;
    assert_problem(
        s,
        &h,
        &body,
        StatusCode::BAD_GATEWAY,
        "upstream-connect-failed",
    );
}

/// operations.md: SIGTERM "finish requests in flight up to `runtime.shutdown_timeout`".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_ends_at_the_shutdown_timeout() {
    let (origin, counts) = counting_origin().await;
    let never = upstream(|_req| async {
        tokio::time::sleep(Duration::from_secs(600)).await;
        Response::new(full("late"))
    })
    .await;
    let _ = origin;
    let mut gw = Gateway::start(&format!(
        "runtime: {{ shutdown_timeout: 1s }}
listeners: [ {{ name: public, address: \"127.0.0.1:0\" }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ enabled: false }}
upstreams:
  never: {{ targets: [ \"{never}\" ], timeouts: {{ request: 10m }} }}
routes:
  - {{ match: {{ path_prefix: / }}, upstream: never }}
"
    ));
    let url = gw.url("/held");
    let held = tokio::spawn(async move {
        let client = client();
        client
            .request(Request::get(url).body(Full::new(Bytes::new())).unwrap())
            .await
            .map(|r| r.status())
    });
    until("the request is in flight", || async {
        gw.metric("floodgate_open_connections{listener=\"public\"}")
            .await
            >= 1.0
    })
    .await;
    let started = std::time::Instant::now();
    gw.signal("TERM");
    let status = tokio::task::spawn_blocking(move || gw.wait_exit())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    // Gone after the drain timeout, not after the request (ten minutes away).
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(held.await.unwrap().is_err(), "the held request was cut");
    assert_eq!(hits(&counts, "/held"), 0);
}

/// operations.md: "when it falls behind (a blocked disk or pipe) lines are dropped and
/// counted in `floodgate_access_log_dropped_total` rather than slowing traffic".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_are_dropped_and_counted_when_the_output_blocks() {
    let up = echo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("access.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // A reader that opens the pipe (so the gateway can) and never reads: once the pipe's
    // buffer is full, every write blocks.
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags_nonblocking()
        .open(&fifo)
        .unwrap();
    let gw = Gateway::start(&format!(
        "listeners: [ {{ name: public, address: \"127.0.0.1:0\" }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ output: \"{}\" }}
upstreams:
  backend: {{ targets: [ \"{up}\" ] }}
routes:
  - {{ match: {{ path_prefix: /api }}, upstream: backend }}
",
        fifo.display()
    ));
    // The pipe and the writer's buffer take a few hundred lines, its queue 16,384 more:
    // 20,000 requests (answered by the gateway itself, 404) overflow it.
    let mut tasks = Vec::new();
    for t in 0..4 {
        let url = gw.url(&format!("/nowhere/{t}"));
        tasks.push(tokio::spawn(async move {
            let client = client();
            for _ in 0..5_000 {
                let resp = client
                    .request(Request::get(&url).body(Full::new(Bytes::new())).unwrap())
                    .await
                    .unwrap();
                assert_eq!(
                    resp.status(),
                    StatusCode::NOT_FOUND,
                    "traffic is not slowed"
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(gw.metric("floodgate_access_log_dropped_total").await > 0.0);
}

/// Opening a FIFO for reading without waiting for a writer.
trait NonBlocking {
    fn custom_flags_nonblocking(&mut self) -> &mut Self;
}

impl NonBlocking for std::fs::OpenOptions {
    fn custom_flags_nonblocking(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK
        self.custom_flags(0o4000)
    }
}

/// architecture.md: "What outlives snapshots: ... the upstream connection pools (... so a
/// reload keeps warm connections)"; and a reload that changes the admin address is refused
/// ("needs a restart").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_pooled_connections_and_refuses_a_new_admin_address() {
    let connections = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(full("ok")))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let config_with_route = |extra: &str| {
        format!(
            "listeners: [ {{ name: public, address: \"127.0.0.1:0\" }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ enabled: false }}
upstreams:
  backend: {{ targets: [ \"{addr}\" ] }}
routes:
  - {{ name: main, match: {{ path_prefix: / }}, upstream: backend }}
{extra}"
        )
    };
    let gw = Gateway::start(&config_with_route(""));
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/a")).await.0, StatusCode::OK);
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    gw.write_config(&config_with_route(
        "  - { name: other, match: { path: /other }, upstream: backend }\n",
    ));
    gw.wait_log("\"configuration reloaded\"").expect("reloaded");
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/a")).await.0, StatusCode::OK);
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the warm connection outlived the reload"
    );
    // The admin address is bound once: a reload that moves it is refused.
    let moved = config_with_route("").replace(
        "admin: { address: \"127.0.0.1:0\" }",
        "admin: { address: \"127.0.0.1:1\" }",
    );
    gw.write_config(&moved);
    gw.wait_log("the admin address changed")
        .unwrap_or_else(|| panic!("refusal not logged:\n{}", gw.log()));
    assert_eq!(
        get(&gw.url("/other")).await.0,
        StatusCode::OK,
        "still running"
    );
}

/// caching.md, the shared tier: with Redis unreachable the memory tier goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_tier_serves_while_the_shared_tier_is_unreachable() {
    let (origin, counts) = counting_origin().await;
    let redis = closed_port();
    let gw = Gateway::start(&format!(
        "listeners: [ {{ name: public, address: \"127.0.0.1:0\" }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ enabled: false }}
cluster: {{ redis: {{ url: \"redis://{redis}\", timeout: 1s }} }}
cache: {{ shared: true }}
upstreams:
  origin: {{ targets: [ \"{origin}\" ] }}
routes:
  - {{ match: {{ path_prefix: / }}, upstream: origin, cache: {{}} }}
"
    ));
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/page")).await.0, StatusCode::OK);
    }
    assert_eq!(hits(&counts, "/page"), 1, "served from memory");
}
