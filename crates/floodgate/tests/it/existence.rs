//! Cache penetration, the drill: 10,000 requests for ids that do not exist reach the
//! upstream only at the existence filter's false-positive rate; existing ids pass; an id
//! created through the gateway (a PUT answered 201) is learned and passes at once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_ids_never_reach_the_upstream_but_at_the_false_positive_rate() {
    let known: Arc<Mutex<HashSet<u64>>> = Arc::new(Mutex::new((0..1000).collect()));
    let hits = Arc::new(AtomicU64::new(0));
    let (k, h) = (known.clone(), hits.clone());
    let up = upstream(move |req: Request<hyper::body::Incoming>| {
        let (k, h) = (k.clone(), h.clone());
        async move {
            let path = req.uri().path().to_owned();
            if path == "/ids" {
                let ids: Vec<u64> = k.lock().unwrap().iter().copied().collect();
                return Response::new(full(serde_json::to_string(&ids).unwrap()));
            }
            h.fetch_add(1, Ordering::Relaxed);
            if req.method() == Method::PUT {
                k.lock().unwrap().insert(5000);
                let mut r = Response::new(full("created"));
                *r.status_mut() = StatusCode::CREATED;
                r.headers_mut()
                    .insert("location", "/products/5000".parse().unwrap());
                return r;
            }
            let id: u64 = path.rsplit('/').next().unwrap().parse().unwrap_or(u64::MAX);
            let mut r = Response::new(full(format!("product {id}")));
            if !k.lock().unwrap().contains(&id) {
                *r.status_mut() = StatusCode::NOT_FOUND;
            }
            r
        }
    })
    .await;
    let gw = gateway_with(
        &format!("  catalog:\n    targets: [ \"{up}\" ]"),
        &format!(
            "  - name: product
    match: {{ path: \"/products/{{id}}\" }}
    upstream: catalog
    existence_filter:
      key: path:id
      expected_keys: 1000
      false_positive_rate: 1%
      source: \"http://{up}/ids\""
        ),
    );
    // Existing ids pass.
    for id in [0, 500, 999] {
        assert_eq!(
            get(&gw.url(&format!("/products/{id}"))).await.0,
            StatusCode::OK
        );
    }
    // The drill: 10,000 absent ids from 16 clients.
    let before = hits.load(Ordering::Relaxed);
    let tasks: Vec<_> = (0..16u64)
        .map(|w| {
            let base = gw.url("/products/");
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for i in 0..625u64 {
                    let id = 100_000 + w * 625 + i;
                    let (s, h, _) = get(&format!("{base}{id}")).await;
                    let filtered = h
                        .get("content-type")
                        .is_some_and(|v| v == "application/problem+json");
                    statuses.push((s, filtered));
                }
                statuses
            })
        })
        .collect();
    let (mut answered, mut filtered) = (0u64, 0u64);
    for t in tasks {
        for (s, f) in t.await.unwrap() {
            assert_eq!(s, StatusCode::NOT_FOUND);
            answered += 1;
            filtered += u64::from(f);
        }
    }
    assert_eq!(answered, 10_000);
    let reached = hits.load(Ordering::Relaxed) - before;
    eprintln!("penetration drill: {reached} of 10000 absent ids reached the upstream");
    // 1% expected (100); three times that is far outside chance.
    assert!(reached <= 300, "{reached} of 10000 reached the upstream");
    // Every other one was answered by the gateway (problem+json `absent`).
    assert_eq!(filtered + reached, 10_000);

    // A product created through the gateway (a PUT, never filtered) is learned from the
    // 201, and passes at once.
    assert_eq!(
        get(&gw.url("/products/5000")).await.0,
        StatusCode::NOT_FOUND
    );
    let (s, _, _) = send(
        Request::put(gw.url("/products/5000"))
            .body(Full::new(bytes::Bytes::from_static(b"{}")))
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(get(&gw.url("/products/5000")).await.0, StatusCode::OK);
}
