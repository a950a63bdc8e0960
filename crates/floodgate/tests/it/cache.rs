//! The HTTP cache, black-box: each RFC 9111 behaviour against an origin that counts what
//! reaches it; negative caching, forced TTLs, stale-while-revalidate, stale-if-error (also
//! while a breaker is open), revalidation with 304 merging, invalidation by unsafe methods,
//! purges through the admin API; and the breakdown drill (a hot key expires under 100
//! concurrent clients: exactly one upstream fetch).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::support::*;

/// An origin whose answer depends on the path; it counts the requests for each path.
#[derive(Default)]
struct Origin {
    hits: Mutex<HashMap<String, u64>>,
    failing: AtomicBool,
    /// Requests to `/hot` wait until this is true.
    open: tokio::sync::watch::Sender<bool>,
    /// `If-None-Match` values seen.
    conditionals: Mutex<Vec<String>>,
}

impl Origin {
    fn hits(&self, path: &str) -> u64 {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let n = {
            let mut hits = self.hits.lock().unwrap();
            let n = hits.entry(path.clone()).or_default();
            *n += 1;
            *n
        };
        let inm = req
            .headers()
            .get("if-none-match")
            .map(|v| v.to_str().unwrap().to_owned());
        if let Some(v) = &inm {
            self.conditionals.lock().unwrap().push(v.clone());
        }
        let failing = self.failing.load(Ordering::SeqCst);
        let mut status = StatusCode::OK;
        let mut headers: Vec<(&str, String)> = Vec::new();
        let mut body = format!("{path} v{n}");
        if req.method() != Method::GET && req.method() != Method::HEAD {
            status = StatusCode::NO_CONTENT;
            body.clear();
        } else if path == "/max-age" || path.starts_with("/tree/") {
            headers.push(("cache-control", "max-age=60".into()));
        } else if path == "/validators" {
            headers.push(("cache-control", "max-age=60".into()));
            headers.push(("etag", "\"v1\"".into()));
            headers.push(("last-modified", "Fri, 20 Nov 2026 00:00:00 GMT".into()));
        } else if path == "/private" {
            headers.push(("cache-control", "private, max-age=60".into()));
        } else if path == "/no-store" {
            headers.push(("cache-control", "no-store".into()));
        } else if path == "/set-cookie" {
            headers.push(("cache-control", "max-age=60".into()));
            headers.push(("set-cookie", "session=secret".into()));
        } else if path == "/vary" {
            let ae = req
                .headers()
                .get("accept-encoding")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            headers.push(("cache-control", "max-age=60".into()));
            headers.push(("vary", "Accept-Encoding".into()));
            body = format!("{ae} v{n}");
        } else if path == "/etag" {
            headers.push(("cache-control", "max-age=0".into()));
            headers.push(("x-version", format!("{n}")));
            if inm.as_deref() == Some("\"e1\"") {
                // Without the ETag it should repeat, as many origins answer.
                status = StatusCode::NOT_MODIFIED;
                body.clear();
            } else {
                headers.push(("etag", "\"e1\"".into()));
            }
        } else if path == "/swr" {
            headers.push((
                "cache-control",
                "max-age=0, stale-while-revalidate=60".into(),
            ));
        } else if path == "/sie" || path == "/breaker" {
            headers.push(("cache-control", "max-age=0, stale-if-error=60".into()));
            if failing {
                status = StatusCode::INTERNAL_SERVER_ERROR;
                body = "origin down".into();
            }
        } else if path == "/must" {
            headers.push((
                "cache-control",
                "max-age=0, must-revalidate, stale-if-error=60".into(),
            ));
            if failing {
                status = StatusCode::INTERNAL_SERVER_ERROR;
            }
        } else if path == "/missing" {
            status = StatusCode::NOT_FOUND;
        } else if path == "/missing-max-age-0" {
            status = StatusCode::NOT_FOUND;
            headers.push(("cache-control", "max-age=0".into()));
        } else if path == "/missing-no-cache" {
            status = StatusCode::GONE;
            headers.push(("cache-control", "no-cache".into()));
            headers.push(("pragma", "no-cache".into()));
        } else if path == "/forced" {
            headers.push(("cache-control", "no-cache".into()));
        } else if let Some(tag) = path.strip_prefix("/tagged/") {
            headers.push(("cache-control", "max-age=60".into()));
            headers.push(("surrogate-key", format!("item-{tag} all-items")));
        } else if path == "/qualified" {
            headers.push(("cache-control", "max-age=60, no-cache=\"x-secret\"".into()));
            headers.push(("x-secret", "s".into()));
            headers.push(("x-public", "p".into()));
        } else if path == "/surrogate" {
            let capability = req.headers().get("surrogate-capability");
            headers.push(("cache-control", "no-store".into()));
            headers.push(("surrogate-control", "max-age=60".into()));
            body = format!("{:?} v{n}", capability);
        } else if path == "/hot" {
            headers.push(("cache-control", "max-age=0".into()));
            let mut rx = self.open.subscribe();
            let _ = rx.wait_for(|open| *open).await;
        }
        let mut resp = Response::new(full(body));
        *resp.status_mut() = status;
        for (k, v) in headers {
            resp.headers_mut().insert(k, v.parse().unwrap());
        }
        resp
    }
}

async fn setup(cache: &str) -> (Gateway, Arc<Origin>) {
    let origin = Arc::new(Origin::default());
    let o = origin.clone();
    let up = upstream(move |req| {
        let o = o.clone();
        async move { o.answer(req).await }
    })
    .await;
    let gw = gateway_with(
        &format!("  origin:\n    targets: [ \"{up}\" ]"),
        &format!(
            "  - name: forced
    match: {{ path: /forced }}
    upstream: origin
    cache: {{ force_ttl: 60s }}
  - name: breaker
    match: {{ path: /breaker }}
    upstream: origin
    circuit_breaker: {{ consecutive_failures: 1, open_for: 1h, max_open_for: 1h }}
    cache: {{ jitter: 0% }}
  - name: cached
    match: {{ path_prefix: / }}
    upstream: origin
    cache: {cache}"
        ),
    );
    (gw, origin)
}

fn cache_status(h: &HeaderMap) -> String {
    h.get("cache-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_responses_are_served_from_the_cache_with_age_and_cache_status() {
    let (gw, origin) = setup("{}").await;
    let (s, h, b) = get(&gw.url("/max-age")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(&b[..], b"/max-age v1");
    assert!(
        cache_status(&h).contains("fwd=uri-miss; fwd-status=200; stored"),
        "{h:?}"
    );
    for _ in 0..3 {
        let (s, h, b) = get(&gw.url("/max-age")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(&b[..], b"/max-age v1", "served from the cache");
        assert!(
            cache_status(&h).starts_with("Floodgate; hit; ttl="),
            "{h:?}"
        );
        assert!(h.contains_key("age"));
    }
    assert_eq!(origin.hits("/max-age"), 1);
    // Another query is another resource.
    get(&gw.url("/max-age?x=1")).await;
    assert_eq!(origin.hits("/max-age"), 2);
    // HEAD is answered from the GET's entry.
    let req = Request::head(gw.url("/max-age"))
        .body(Full::default())
        .unwrap();
    let (s, h, b) = send(req).await;
    assert_eq!((s, b.len()), (StatusCode::OK, 0));
    assert!(cache_status(&h).contains("hit"), "{h:?}");
    assert_eq!(origin.hits("/max-age"), 2);
    assert_eq!(
        gw.metric("floodgate_cache_lookups_total{route=\"cached\",kind=\"hit\"}")
            .await,
        4.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_shared_cache_must_not_store_reaches_the_origin_each_time() {
    let (gw, origin) = setup("{}").await;
    for path in ["/private", "/no-store", "/set-cookie"] {
        for _ in 0..2 {
            let (s, h, _) = get(&gw.url(path)).await;
            assert_eq!(s, StatusCode::OK);
            assert!(!cache_status(&h).contains("stored"), "{path}: {h:?}");
        }
        assert_eq!(origin.hits(path), 2, "{path}");
    }
    // A request with credentials is not answered from, nor stored into, the shared cache
    // unless the response says it may be.
    for _ in 0..2 {
        get_with(&gw.url("/max-age?auth"), &[("authorization", "Bearer x")]).await;
    }
    assert_eq!(origin.hits("/max-age"), 2);
    // Nor is a request that says no-store.
    get_with(&gw.url("/max-age?ns"), &[("cache-control", "no-store")]).await;
    get(&gw.url("/max-age?ns")).await;
    assert_eq!(origin.hits("/max-age"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_can_ask_for_a_fresh_copy_unless_the_route_ignores_them() {
    let (gw, origin) = setup("{}").await;
    get(&gw.url("/max-age")).await;
    let (_, h, b) = get_with(&gw.url("/max-age"), &[("cache-control", "no-cache")]).await;
    assert_eq!(&b[..], b"/max-age v2");
    assert!(cache_status(&h).contains("fwd=request"), "{h:?}");
    let (_, _, b) = get_with(&gw.url("/max-age"), &[("pragma", "no-cache")]).await;
    assert_eq!(&b[..], b"/max-age v3");
    assert_eq!(origin.hits("/max-age"), 3);

    let (gw, origin) = setup("{ ignore_client_no_cache: true }").await;
    get(&gw.url("/max-age")).await;
    let (_, h, _) = get_with(
        &gw.url("/max-age"),
        &[("cache-control", "no-cache, max-age=0")],
    )
    .await;
    assert!(cache_status(&h).contains("hit"), "{h:?}");
    assert_eq!(origin.hits("/max-age"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_if_cached_without_a_stored_response_is_504() {
    let (gw, origin) = setup("{}").await;
    let (s, h, b) = get_with(&gw.url("/max-age"), &[("cache-control", "only-if-cached")]).await;
    assert_problem(s, &h, &b, StatusCode::GATEWAY_TIMEOUT, "not-cached");
    assert_eq!(origin.hits("/max-age"), 0);
    get(&gw.url("/max-age")).await;
    let (s, _, _) = get_with(&gw.url("/max-age"), &[("cache-control", "only-if-cached")]).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_selects_among_variants_with_normalized_values() {
    let (gw, origin) = setup("{}").await;
    let (_, _, b) = get_with(&gw.url("/vary"), &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(&b[..], b"gzip, br v1");
    let (_, h, b) = get_with(&gw.url("/vary"), &[("accept-encoding", "BR,gzip")]).await;
    assert_eq!(
        &b[..],
        b"gzip, br v1",
        "an equivalent value shares the variant"
    );
    assert!(cache_status(&h).contains("hit"), "{h:?}");
    let (_, h, b) = get_with(&gw.url("/vary"), &[("accept-encoding", "identity")]).await;
    assert_eq!(&b[..], b"identity v2");
    assert!(cache_status(&h).contains("fwd=vary-miss"), "{h:?}");
    let (_, _, b) = get(&gw.url("/vary")).await;
    assert_eq!(&b[..], b" v3", "no Accept-Encoding is a variant of its own");
    let (_, _, b) = get_with(&gw.url("/vary"), &[("accept-encoding", "identity")]).await;
    assert_eq!(&b[..], b"identity v2");
    assert_eq!(origin.hits("/vary"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entries_are_revalidated_and_304s_merged() {
    let (gw, origin) = setup("{}").await;
    let (_, _, b) = get(&gw.url("/etag")).await;
    assert_eq!(&b[..], b"/etag v1");
    let (s, h, b) = get(&gw.url("/etag")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(&b[..], b"/etag v1", "the stored body, validated");
    assert!(
        cache_status(&h).contains("fwd=stale; fwd-status=304"),
        "{h:?}"
    );
    assert_eq!(
        h["x-version"], "2",
        "fields from the 304 replace the stored ones"
    );
    assert_eq!(origin.conditionals.lock().unwrap().as_slice(), ["\"e1\""]);
    // A client's own validator is answered by the gateway.
    let (s, h, b) = get_with(&gw.url("/etag"), &[("if-none-match", "W/\"e1\"")]).await;
    assert_eq!((s, b.len()), (StatusCode::NOT_MODIFIED, 0));
    assert_eq!(h["etag"], "\"e1\"");
    assert_eq!(
        origin.conditionals.lock().unwrap().as_slice(),
        ["\"e1\"", "\"e1\""],
        "the gateway revalidates with its own validator"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_named_by_a_qualified_no_cache_are_not_served_from_storage() {
    let (gw, origin) = setup("{}").await;
    let (_, h, _) = get(&gw.url("/qualified")).await;
    assert_eq!(
        (h["x-secret"].as_bytes(), h["x-public"].as_bytes()),
        (&b"s"[..], &b"p"[..])
    );
    let (_, h, _) = get(&gw.url("/qualified")).await;
    assert!(cache_status(&h).starts_with("Floodgate; hit"), "{h:?}");
    assert!(!h.contains_key("x-secret"), "{h:?}");
    assert_eq!(h["x-public"], "p");
    assert_eq!(origin.hits("/qualified"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surrogate_control_is_for_the_gateway_and_cache_control_for_the_client() {
    let (gw, origin) = setup("{}").await;
    let (_, h, b) = get(&gw.url("/surrogate")).await;
    assert_eq!(
        std::str::from_utf8(&b).unwrap(),
        "Some(\"floodgate=\\\"Surrogate/1.0\\\"\") v1",
        "the gateway announces itself upstream"
    );
    assert!(!h.contains_key("surrogate-control"), "{h:?}");
    let (_, h, b) = get(&gw.url("/surrogate")).await;
    assert!(
        b.ends_with(b" v1"),
        "stored despite no-store for the client"
    );
    assert!(cache_status(&h).starts_with("Floodgate; hit"), "{h:?}");
    assert_eq!(
        h["cache-control"], "no-store",
        "the client's caching is unchanged"
    );
    assert!(!h.contains_key("surrogate-control"), "{h:?}");
    assert_eq!(origin.hits("/surrogate"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_ranges_are_cut_from_the_stored_response() {
    let (gw, origin) = setup("{}").await;
    let url = gw.url("/validators");
    let (_, _, whole) = get(&url).await;
    assert_eq!(&whole[..], b"/validators v1");
    let (s, h, b) = get_with(&url, &[("range", "bytes=1-10")]).await;
    assert_eq!(
        (s, &b[..]),
        (StatusCode::PARTIAL_CONTENT, &b"validators"[..])
    );
    assert_eq!(h["content-range"], "bytes 1-10/14");
    assert_eq!(h["content-length"], "10");
    let (s, _, b) = get_with(&url, &[("range", "bytes=-2")]).await;
    assert_eq!((s, &b[..]), (StatusCode::PARTIAL_CONTENT, &b"v1"[..]));
    let (s, h, _) = get_with(&url, &[("range", "bytes=14-")]).await;
    assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h["content-range"], "bytes */14");
    // A stale validator in If-Range, or several ranges: the whole response.
    let (s, _, b) = get_with(&url, &[("range", "bytes=0-0"), ("if-range", "\"v0\"")]).await;
    assert_eq!((s, b.len()), (StatusCode::OK, 14));
    let (s, _, b) = get_with(&url, &[("range", "bytes=0-0"), ("if-range", "\"v1\"")]).await;
    assert_eq!((s, &b[..]), (StatusCode::PARTIAL_CONTENT, &b"/"[..]));
    let (s, _, b) = get_with(&url, &[("range", "bytes=0-0,2-3")]).await;
    assert_eq!((s, b.len()), (StatusCode::OK, 14));
    assert_eq!(
        origin.hits("/validators"),
        1,
        "every range from the one stored copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_requests_on_fresh_entries_get_304_from_the_cache() {
    let (gw, origin) = setup("{}").await;
    get(&gw.url("/validators")).await;
    let cases: [(&[(&str, &str)], StatusCode); 6] = [
        (&[("if-none-match", "\"v1\"")], StatusCode::NOT_MODIFIED),
        (
            &[("if-none-match", "\"x\", W/\"v1\"")],
            StatusCode::NOT_MODIFIED,
        ),
        (&[("if-none-match", "\"other\"")], StatusCode::OK),
        (
            &[("if-modified-since", "Tue, 01 Dec 2026 00:00:00 GMT")],
            StatusCode::NOT_MODIFIED,
        ),
        (
            &[("if-modified-since", "Sun, 01 Nov 2026 00:00:00 GMT")],
            StatusCode::OK,
        ),
        // If-None-Match wins over If-Modified-Since.
        (
            &[
                ("if-none-match", "\"other\""),
                ("if-modified-since", "Tue, 01 Dec 2026 00:00:00 GMT"),
            ],
            StatusCode::OK,
        ),
    ];
    for (headers, want) in cases {
        let (s, h, b) = get_with(&gw.url("/validators"), headers).await;
        assert_eq!(s, want, "{headers:?}");
        assert!(cache_status(&h).contains("hit"), "{h:?}");
        if s == StatusCode::NOT_MODIFIED {
            assert!(b.is_empty());
            assert_eq!(h["etag"], "\"v1\"");
            assert!(h.contains_key("cache-control"));
        }
    }
    assert_eq!(origin.hits("/validators"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background() {
    let (gw, origin) = setup("{}").await;
    get(&gw.url("/swr")).await;
    let (s, h, b) = get(&gw.url("/swr")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(&b[..], b"/swr v1", "the stale copy, at once");
    assert!(
        cache_status(&h).contains("detail=stale-while-revalidate"),
        "{h:?}"
    );
    // One background refresh reaches the origin and replaces the entry.
    until("the background refresh", || async {
        origin.hits("/swr") == 2
    })
    .await;
    // (With max-age=0 every answer is stale and starts a refresh of its own, so on a
    // loaded machine later refreshes may have replaced v2 too: any newer copy will do.)
    until("the refreshed entry", || async {
        let (_, _, b) = get(&gw.url("/swr")).await;
        b.starts_with(b"/swr v") && &b[..] != b"/swr v1"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_stands_in_for_a_failing_origin_but_not_past_must_revalidate() {
    let (gw, origin) = setup("{}").await;
    get(&gw.url("/sie")).await;
    get(&gw.url("/must")).await;
    origin.failing.store(true, Ordering::SeqCst);
    let (s, h, b) = get(&gw.url("/sie")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(&b[..], b"/sie v1");
    assert!(
        cache_status(&h).contains("fwd-status=500; detail=stale-if-error"),
        "{h:?}"
    );
    let (s, _, _) = get(&gw.url("/must")).await;
    assert_eq!(
        s,
        StatusCode::INTERNAL_SERVER_ERROR,
        "must-revalidate is never served stale"
    );
    origin.failing.store(false, Ordering::SeqCst);
    let (_, _, b) = get(&gw.url("/sie")).await;
    assert_eq!(&b[..], b"/sie v3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_content_is_served_while_the_breaker_is_open() {
    let (gw, origin) = setup("{}").await;
    get(&gw.url("/breaker")).await;
    origin.failing.store(true, Ordering::SeqCst);
    // The failure opens the breaker (one failure in a row); the stale copy answers it.
    let (s, _, b) = get(&gw.url("/breaker")).await;
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"/breaker v1"[..]));
    assert_eq!(origin.hits("/breaker"), 2);
    // Open: nothing reaches the origin, the stale copy answers.
    for _ in 0..5 {
        let (s, h, b) = get(&gw.url("/breaker")).await;
        assert_eq!((s, &b[..]), (StatusCode::OK, &b"/breaker v1"[..]));
        assert!(cache_status(&h).contains("detail=stale-if-error"), "{h:?}");
    }
    assert_eq!(origin.hits("/breaker"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_answers_and_forced_ttls_are_cached() {
    let (gw, origin) = setup("{}").await;
    for _ in 0..3 {
        let (s, _, _) = get(&gw.url("/missing")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    assert_eq!(origin.hits("/missing"), 1, "404 cached for negative_ttl");
    // Whatever the origin says about freshness (short of no-store or private).
    for path in ["/missing-max-age-0", "/missing-no-cache"] {
        for _ in 0..5 {
            let (s, _, _) = get(&gw.url(path)).await;
            assert!(s.is_client_error(), "{path}: {s}");
        }
        assert_eq!(origin.hits(path), 1, "{path} cached for negative_ttl");
    }
    for _ in 0..3 {
        let (_, h, _) = get(&gw.url("/forced")).await;
        assert_eq!(
            h["cache-control"], "no-cache",
            "the upstream's fields go to clients"
        );
    }
    assert_eq!(origin.hits("/forced"), 1, "force_ttl overrides no-cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_invalidate_the_uri() {
    let (gw, origin) = setup("{}").await;
    get(&gw.url("/max-age")).await;
    get(&gw.url("/max-age")).await;
    assert_eq!(origin.hits("/max-age"), 1);
    let req = Request::post(gw.url("/max-age"))
        .body(Full::default())
        .unwrap();
    assert_eq!(send(req).await.0, StatusCode::NO_CONTENT);
    let (_, _, b) = get(&gw.url("/max-age")).await;
    assert_eq!(&b[..], b"/max-age v3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_by_url_prefix_and_tag_through_the_admin_api() {
    let (gw, origin) = setup("{}").await;
    let host = gw.addr();
    let warm = |paths: &'static [&'static str]| {
        let gw = &gw;
        async move {
            for p in paths {
                get(&gw.url(p)).await;
            }
        }
    };
    let all: &[&str] = &["/tree/a", "/tree/b", "/max-age", "/tagged/1", "/tagged/2"];
    warm(all).await;
    warm(all).await;
    let counts = |o: &Origin| all.iter().map(|p| o.hits(p)).collect::<Vec<_>>();
    assert_eq!(counts(&origin), [1, 1, 1, 1, 1]);

    let (s, v) = admin_post(
        &gw,
        "/cache/purge",
        &format!("{{\"url\": \"http://{host}/max-age\"}}"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["scope"], "this node");
    warm(all).await;
    assert_eq!(counts(&origin), [1, 1, 2, 1, 1]);

    admin_post(
        &gw,
        "/cache/purge",
        &format!("{{\"prefix\": \"http://{host}/tree/\"}}"),
    )
    .await;
    warm(all).await;
    assert_eq!(counts(&origin), [2, 2, 2, 1, 1]);

    admin_post(&gw, "/cache/purge", "{\"tag\": \"item-2\"}").await;
    warm(all).await;
    assert_eq!(counts(&origin), [2, 2, 2, 1, 2]);

    admin_post(&gw, "/cache/purge", "{\"tag\": \"all-items\"}").await;
    warm(all).await;
    assert_eq!(counts(&origin), [2, 2, 2, 2, 3]);

    let (s, v) = admin_post(&gw, "/cache/purge", "{\"url\": \"/relative\"}").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("is not a URL"),
        "{v}"
    );
    let (s, _) = admin_post(&gw, "/cache/purge", "{\"everything\": 1}").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = admin_post(&gw, "/cache/purge", "{\"all\": true}").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    warm(all).await;
    assert_eq!(counts(&origin), [3, 3, 3, 3, 4]);
    let (_, _, b) = get(&format!("http://{}/cache", gw.admin)).await;
    assert_eq!(json(&b)["entries"], 5);
    assert_eq!(json(&b)["shared_tier"], false);
}

/// The breakdown drill: a hot key whose entry has expired, 100 clients at once: exactly
/// one request reaches the origin and every client gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_expiring_under_100_clients_is_fetched_once() {
    let (gw, origin) = setup("{}").await;
    origin.open.send_replace(true);
    get(&gw.url("/hot")).await;
    assert_eq!(origin.hits("/hot"), 1);
    // Expired (max-age=0, no validators): the next fetch is held at the origin until
    // every other client waits behind it.
    origin.open.send_replace(false);
    let clients: Vec<_> = (0..100)
        .map(|_| {
            let url = gw.url("/hot");
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let mut waited = 0;
    while gw.metric("floodgate_cache_waiting").await < 99.0 {
        waited += 1;
        assert!(waited < 3000, "the clients never queued behind one fetch");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(origin.hits("/hot"), 2);
    origin.open.send_replace(true);
    let mut collapsed = 0;
    for c in clients {
        let (s, h, b) = c.await.unwrap();
        assert_eq!((s, &b[..]), (StatusCode::OK, &b"/hot v2"[..]));
        collapsed += usize::from(cache_status(&h).contains("collapsed"));
    }
    assert_eq!(collapsed, 99);
    assert_eq!(origin.hits("/hot"), 2, "exactly one upstream fetch");
}

/// A leader whose client goes away does not fail the requests waiting behind it: one of
/// them fetches in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_hands_the_fetch_to_a_waiter() {
    let (gw, origin) = setup("{}").await;
    // The leader, over HTTP/2 so that going away cancels its stream at once.
    let leader = {
        let url = gw.url("/hot");
        tokio::spawn(async move {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .http2_only(true)
                    .build_http::<Full<bytes::Bytes>>();
            let _ = client.get(url.parse().unwrap()).await;
        })
    };
    until("the leader's fetch", || async { origin.hits("/hot") >= 1 }).await;
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let url = gw.url("/hot");
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    until("five waiters", || async {
        gw.metric("floodgate_cache_waiting").await >= 5.0
    })
    .await;
    leader.abort();
    // A waiter takes the lead: a second fetch reaches the origin.
    until("a waiter's fetch", || async { origin.hits("/hot") >= 2 }).await;
    origin.open.send_replace(true);
    for w in waiters {
        let (s, _, _) = w.await.unwrap();
        assert_eq!(s, StatusCode::OK);
    }
    assert_eq!(origin.hits("/hot"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_of_a_caching_route_says_what_the_cache_did() {
    let origin = Arc::new(Origin::default());
    let ids = upstream(|_req| async { Response::new(full("[\"1\", \"2\"]")) }).await;
    let o = origin.clone();
    let up = upstream(move |req| {
        let o = o.clone();
        async move { o.answer(req).await }
    })
    .await;
    let gw = gateway_with(
        &format!("  origin:\n    targets: [ \"{up}\" ]"),
        &"  - name: limited
    match: { path_prefix: /limited }
    upstream: origin
    cache: {}
    rate_limits: [ { algorithm: token_bucket, rate: 1/1m, burst: 1 } ]
  - name: products
    match: { path: \"/products/{id}\" }
    upstream: origin
    cache: {}
    existence_filter: { key: path:id, expected_keys: 100, source: \"http://IDS/\" }"
            .replace("IDS", &ids.to_string()),
    );
    let (s, h, _) = get(&gw.url("/limited/a")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(cache_status(&h).contains("fwd=uri-miss"), "{h:?}");
    // The gateway's own answers: a rate limit's 429, the existence filter's 404.
    let (s, h, _) = get(&gw.url("/limited/b")).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(cache_status(&h), "Floodgate; detail=rate-limited");
    // The filter refuses once its source has been read (it lets all through before).
    let deadline = std::time::Instant::now() + PATIENCE;
    let h = loop {
        let (s, h, _) = get(&gw.url("/products/7")).await;
        if s == StatusCode::NOT_FOUND && cache_status(&h).contains("detail=absent") {
            break h;
        }
        assert!(std::time::Instant::now() < deadline, "{s} {h:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(cache_status(&h), "Floodgate; detail=absent");
    // A method the cache does not serve is forwarded for it.
    let (s, h, _) = send(
        Request::post(gw.url("/products/7"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(cache_status(&h), "Floodgate; fwd=method");
}
