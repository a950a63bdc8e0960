//! The avalanche drill: two routes on two upstreams under a bounded concurrent load; one
//! upstream turns slow, then dead, then heals. With a breaker, timeouts, a bulkhead and a
//! fallback, the healthy route never fails, the broken route answers its fallback instead
//! of errors, the dying upstream is spared most of the traffic, memory stays bounded, and
//! the breaker closes again through half-open. The same drill without those protections
//! shows the damage: every request reaches the dying upstream and its errors reach the
//! clients. Latencies are printed (docs/circuit-breaking.md records them), never asserted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Response;

use crate::support::*;

const WORKERS: usize = 16;
const HEALTHY: usize = 0;
const SLOW: usize = 1;
const DEAD: usize = 2;

/// An upstream that is healthy, slow (answers after `slow`), or dead (breaks every
/// exchange without answering), as `mode` says; counts arrivals.
async fn fragile(slow: Duration) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicU64>) {
    let mode = Arc::new(AtomicUsize::new(HEALTHY));
    let hits = Arc::new(AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (m, h) = (mode.clone(), hits.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (m, h) = (m.clone(), h.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let (m, h) = (m.clone(), h.clone());
                    async move {
                        h.fetch_add(1, Ordering::Relaxed);
                        match m.load(Ordering::Relaxed) {
                            SLOW => tokio::time::sleep(slow).await,
                            // An error from the service makes hyper drop the connection.
                            DEAD => return Err("dead"),
                            _ => {}
                        }
                        Ok::<_, &str>(Response::new(full("reviews")))
                    }
                });
                let _ended = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, mode, hits)
}

/// What one phase of the drill saw.
#[derive(Debug, Default)]
struct Phase {
    healthy_ok: usize,
    healthy_failed: usize,
    healthy_worst_ms: f64,
    broken_ok: usize,
    broken_fallback: usize,
    broken_failed: usize,
    broken_worst_ms: f64,
    upstream_hits: u64,
    seconds: f64,
}

/// Every worker does `rounds` rounds of one request to each route.
async fn load(gw: &Gateway, rounds: usize, hits: &AtomicU64) -> Phase {
    let before = hits.load(Ordering::Relaxed);
    let started = Instant::now();
    let tasks: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (healthy, broken) = (gw.url("/catalog"), gw.url("/reviews"));
            tokio::spawn(async move {
                let mut p = Phase::default();
                for _ in 0..rounds {
                    let t = Instant::now();
                    let (s, h, _) = get(&broken).await;
                    p.broken_worst_ms = p.broken_worst_ms.max(t.elapsed().as_secs_f64() * 1e3);
                    match (s.as_u16(), h.contains_key("floodgate-fallback")) {
                        (200, true) => p.broken_fallback += 1,
                        (200, false) => p.broken_ok += 1,
                        _ => p.broken_failed += 1,
                    }
                    let t = Instant::now();
                    let ok = get(&healthy).await.0 == 200;
                    p.healthy_worst_ms = p.healthy_worst_ms.max(t.elapsed().as_secs_f64() * 1e3);
                    if ok {
                        p.healthy_ok += 1;
                    } else {
                        p.healthy_failed += 1;
                    }
                }
                p
            })
        })
        .collect();
    let mut total = Phase::default();
    for t in tasks {
        let p = t.await.unwrap();
        total.healthy_ok += p.healthy_ok;
        total.healthy_failed += p.healthy_failed;
        total.healthy_worst_ms = total.healthy_worst_ms.max(p.healthy_worst_ms);
        total.broken_ok += p.broken_ok;
        total.broken_fallback += p.broken_fallback;
        total.broken_failed += p.broken_failed;
        total.broken_worst_ms = total.broken_worst_ms.max(p.broken_worst_ms);
    }
    total.upstream_hits = hits.load(Ordering::Relaxed) - before;
    total.seconds = started.elapsed().as_secs_f64();
    total
}

async fn gateway(protected: bool, slow: Duration) -> (Gateway, Arc<AtomicUsize>, Arc<AtomicU64>) {
    let healthy = named_upstream("catalog").await;
    let (broken, mode, hits) = fragile(slow).await;
    let protections = if protected {
        "    timeouts: { request: 250ms }
    concurrency: { max_in_flight: 12, queue: 4, queue_timeout: 100ms }
    circuit_breaker:
      failure_rate: 50%
      minimum_calls: 10
      window: 5s
      open_for: 2s
      max_open_for: 4s
      half_open_calls: 2"
    } else {
        ""
    };
    let fallback = if protected {
        "    fallback:
      when: [ breaker_open, timeout, upstream_error, bulkhead_full ]
      response: { json: { reviews: [], degraded: true } }"
    } else {
        ""
    };
    let gw = gateway_with(
        &format!(
            "  catalog:\n    targets: [ \"{healthy}\" ]\n  reviews:\n    targets: [ \"{broken}\" ]\n{protections}"
        ),
        &format!(
            "  - name: catalog
    match: {{ path_prefix: /catalog }}
    upstream: catalog
  - name: reviews
    match: {{ path_prefix: /reviews }}
    upstream: reviews
{fallback}"
        ),
    );
    (gw, mode, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_protections_the_failure_stays_contained() {
    let (gw, mode, hits) = gateway(true, Duration::from_secs(3)).await;
    let warm = load(&gw, 2, &hits).await;
    mode.store(SLOW, Ordering::Relaxed);
    let slow = load(&gw, 10, &hits).await;
    mode.store(DEAD, Ordering::Relaxed);
    let dead = load(&gw, 10, &hits).await;
    let rss_kib = gw.rss_kib();
    eprintln!(
        "protected drill:\n  warm {warm:?}\n  slow {slow:?}\n  dead {dead:?}\n  rss {rss_kib} KiB"
    );
    for (name, p) in [("warm", &warm), ("slow", &slow), ("dead", &dead)] {
        let requests = WORKERS * if name == "warm" { 2 } else { 10 };
        assert_eq!(
            p.healthy_ok, requests,
            "{name}: the healthy route never fails: {p:?}"
        );
        assert_eq!(
            p.broken_failed, 0,
            "{name}: no error reaches a client: {p:?}"
        );
        assert_eq!(p.broken_ok + p.broken_fallback, requests, "{name}");
    }
    assert!(slow.broken_fallback > 0 && dead.broken_fallback > 0);
    // The breaker spares the dying upstream most of the traffic.
    let broken_requests = 2 * WORKERS as u64 * 10;
    assert!(
        slow.upstream_hits + dead.upstream_hits < broken_requests / 2,
        "{} of {broken_requests} requests reached the failing upstream",
        slow.upstream_hits + dead.upstream_hits
    );
    assert!(
        rss_kib < 200 * 1024,
        "gateway memory stays bounded: {rss_kib} KiB"
    );
    let opened = "floodgate_circuit_breaker_transitions_total{scope=\"upstream\",name=\"reviews\",to=\"open\"}";
    assert!(gw.metric(opened).await >= 1.0);

    // Healed: the breaker closes through half-open, and the real answers come back.
    mode.store(HEALTHY, Ordering::Relaxed);
    let closed = "floodgate_circuit_breaker_transitions_total{scope=\"upstream\",name=\"reviews\",to=\"closed\"}";
    let deadline = Instant::now() + PATIENCE;
    while gw.metric(closed).await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the breaker did not close:\n{}",
            gw.log()
        );
        // Probes are let through once the open time is over.
        let (_, h, _) = get(&gw.url("/reviews")).await;
        if h.contains_key("floodgate-fallback") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let healed = load(&gw, 2, &hits).await;
    assert_eq!(healed.broken_ok, WORKERS * 2, "{healed:?}");
    let half_open = "floodgate_circuit_breaker_transitions_total{scope=\"upstream\",name=\"reviews\",to=\"half_open\"}";
    assert!(gw.metric(half_open).await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_protections_the_failure_reaches_every_client() {
    // Slow for a shorter time than above: nothing cuts these requests short.
    let (gw, mode, hits) = gateway(false, Duration::from_millis(1500)).await;
    mode.store(SLOW, Ordering::Relaxed);
    let slow = load(&gw, 2, &hits).await;
    mode.store(DEAD, Ordering::Relaxed);
    let dead = load(&gw, 10, &hits).await;
    eprintln!(
        "unprotected drill:\n  slow {slow:?}\n  dead {dead:?}\n  rss {} KiB",
        gw.rss_kib()
    );
    // Every request reached the failing upstream, and while dead every one failed.
    assert_eq!(slow.upstream_hits, WORKERS as u64 * 2);
    assert_eq!(slow.broken_ok, WORKERS * 2, "slow answers arrive, late");
    assert_eq!(dead.broken_failed, WORKERS * 10);
    assert!(dead.upstream_hits >= WORKERS as u64 * 10);
    // The healthy route is still served: the gateway isolates routes even unprotected;
    // the damage is the broken route's clients waiting and failing.
    assert_eq!(slow.healthy_ok + dead.healthy_ok, WORKERS * 12);
}
