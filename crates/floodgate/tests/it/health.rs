//! Health through the binary: active checks take a failing target out and bring it back,
//! outlier detection ejects a target whose traffic fails (retries hide its failures from
//! clients) and lets it back in after the ejection time, and the all-unhealthy policy
//! either answers 503 or sends anyway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http::{Response, StatusCode};

use crate::support::*;

/// A server whose `/healthz` and traffic answers can be switched between 200 and 503
/// (`healthy`, `serving`); counts traffic (not health checks).
struct Switchable {
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    serving: Arc<AtomicBool>,
    traffic: Arc<AtomicU64>,
}

async fn switchable() -> Switchable {
    let healthy = Arc::new(AtomicBool::new(true));
    let serving = Arc::new(AtomicBool::new(true));
    let traffic = Arc::new(AtomicU64::new(0));
    let (h, s, t) = (healthy.clone(), serving.clone(), traffic.clone());
    let addr = upstream(move |req| {
        let (h, s, t) = (h.clone(), s.clone(), t.clone());
        async move {
            let ok = if req.uri().path() == "/healthz" {
                h.load(Ordering::Relaxed)
            } else {
                t.fetch_add(1, Ordering::Relaxed);
                s.load(Ordering::Relaxed)
            };
            let mut resp = Response::new(full("x"));
            if !ok {
                *resp.status_mut() = StatusCode::BAD_GATEWAY;
            }
            resp
        }
    })
    .await;
    Switchable {
        addr,
        healthy,
        serving,
        traffic,
    }
}

/// Waits until `series` reads `value` (bounded).
async fn wait_metric(gw: &Gateway, series: &str, value: f64) {
    for _ in 0..1000 {
        if gw.metric(series).await == value {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{series} never became {value}:\n{}", gw.metrics().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_check_takes_a_failing_target_out_and_brings_it_back() {
    let (a, b) = (switchable().await, switchable().await);
    let gw = gateway_with(
        &format!(
            "  pool:\n    targets: [ \"{}\", \"{}\" ]\n    health_check: {{ path: /healthz, interval: 20ms, timeout: 500ms, healthy_after: 1, unhealthy_after: 2 }}",
            a.addr, b.addr
        ),
        "  - { match: { path_prefix: / }, upstream: pool }",
    );
    let gauge = |addr: SocketAddr| {
        format!("floodgate_upstream_target_healthy{{upstream=\"pool\",target=\"{addr}\"}}")
    };
    wait_metric(&gw, &gauge(a.addr), 1.0).await;
    a.healthy.store(false, Ordering::Relaxed);
    wait_metric(&gw, &gauge(a.addr), 0.0).await;
    let before = a.traffic.load(Ordering::Relaxed);
    assert_eq!(statuses(&gw.url("/"), &[], 10).await, [200; 10]);
    assert_eq!(
        a.traffic.load(Ordering::Relaxed),
        before,
        "no traffic to the unhealthy target"
    );
    a.healthy.store(true, Ordering::Relaxed);
    wait_metric(&gw, &gauge(a.addr), 1.0).await;
    statuses(&gw.url("/"), &[], 10).await;
    assert!(
        a.traffic.load(Ordering::Relaxed) > before,
        "back in rotation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_is_ejected_clients_see_no_error_and_it_returns() {
    let (a, b) = (switchable().await, switchable().await);
    a.serving.store(false, Ordering::Relaxed);
    let gw = gateway_with(
        &format!(
            "  pool:\n    targets: [ \"{}\", \"{}\" ]\n    outlier_detection: {{ consecutive_failures: 2, base_ejection: 3s, max_ejection: 10s }}\n    retries: {{ attempts: 1, retry_on: [ \"502\" ] }}",
            a.addr, b.addr
        ),
        "  - { match: { path_prefix: / }, upstream: pool }",
    );
    // Every request succeeds: A's failures are retried on B, until A is ejected.
    assert_eq!(statuses(&gw.url("/"), &[], 20).await, [200; 20]);
    assert_eq!(
        a.traffic.load(Ordering::Relaxed),
        2,
        "ejected after two failures"
    );
    assert_eq!(
        gw.metric(&format!(
            "floodgate_upstream_ejections_total{{upstream=\"pool\",target=\"{}\"}}",
            a.addr
        ))
        .await,
        1.0
    );
    // Healed, A comes back by itself once the ejection time is over.
    a.serving.store(true, Ordering::Relaxed);
    let mut back = false;
    for _ in 0..500 {
        assert_eq!(get(&gw.url("/")).await.0, StatusCode::OK);
        if a.traffic.load(Ordering::Relaxed) > 2 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(back, "the ejected target never came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_healthy_target_fail_answers_503_and_panic_sends_anyway() {
    let a = switchable().await;
    a.healthy.store(false, Ordering::Relaxed);
    let check = "health_check: { interval: 20ms, unhealthy_after: 1 }";
    let gw = gateway_with(
        &format!(
            "  strict:\n    targets: [ \"{0}\" ]\n    {check}\n  lenient:\n    targets: [ \"{0}\" ]\n    {check}\n    on_all_unhealthy: panic",
            a.addr
        ),
        "  - { match: { path: /strict }, upstream: strict }\n  - { match: { path: /lenient }, upstream: lenient }",
    );
    wait_metric(
        &gw,
        &format!(
            "floodgate_upstream_target_healthy{{upstream=\"strict\",target=\"{}\"}}",
            a.addr
        ),
        0.0,
    )
    .await;
    let (status, h, body) = get(&gw.url("/strict")).await;
    assert_problem(
        status,
        &h,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "no-target",
    );
    assert_eq!(get(&gw.url("/lenient")).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_target_takes_no_new_requests_and_finishes_its_own() {
    let (tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Notify::new());
    let held = {
        let release = release.clone();
        upstream(move |_req| {
            let (tx, release) = (tx.clone(), release.clone());
            async move {
                let _sent = tx.send(());
                release.notified().await;
                Response::new(full("held"))
            }
        })
        .await
    };
    let fast = switchable().await;
    let config = |drain: bool| {
        format!(
            "listeners: [ {{ name: public, address: \"127.0.0.1:0\" }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ enabled: false }}
upstreams:
  pool:
    targets: [ {{ address: \"{held}\", drain: {drain} }}, \"{}\" ]
routes:
  - {{ match: {{ path_prefix: / }}, upstream: pool }}
",
            fast.addr
        )
    };
    let gw = Gateway::start(&config(false));
    // Round robin: one of the first two requests lands on the holding target and stays.
    let url = gw.url("/");
    let u = url.clone();
    let first = tokio::spawn(async move { get(&u).await.0 });
    let u = url.clone();
    let second = tokio::spawn(async move { get(&u).await.0 });
    arrived
        .recv()
        .await
        .expect("a request reached the holding target");
    gw.write_config(&config(true));
    gw.wait_log("\"generation\":2").expect("reloaded");
    let before = fast.traffic.load(Ordering::Relaxed);
    assert_eq!(statuses(&url, &[], 10).await, [200; 10]);
    assert_eq!(fast.traffic.load(Ordering::Relaxed), before + 10);
    assert!(
        arrived.try_recv().is_err(),
        "nothing new reached the draining target"
    );
    // The request in flight there finishes normally.
    for h in [first, second] {
        until("the request in flight finishes", || {
            release.notify_waiters();
            let done = h.is_finished();
            async move { done }
        })
        .await;
        assert_eq!(h.await.unwrap(), StatusCode::OK);
    }
}

/// A server that can be killed (listener and every connection dropped at once) and
/// started again on the same address. Counts the requests it answered.
struct Killable {
    addr: SocketAddr,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Killable {
    async fn start(addr: SocketAddr, served: Arc<AtomicU64>) -> Killable {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (t, s) = (tasks.clone(), served.clone());
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                let conn = tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        s.fetch_add(1, Ordering::Relaxed);
                        async { Ok::<_, std::convert::Infallible>(Response::new(full("k"))) }
                    });
                    let _served = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
                t.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        Killable { addr, tasks }
    }

    fn kill(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_killed_under_load_is_ejected_without_client_errors_and_returns() {
    let served = Arc::new(AtomicU64::new(0));
    let a = Killable::start("127.0.0.1:0".parse().unwrap(), served.clone()).await;
    let b = switchable().await;
    let gw = pool_gateway(&format!(
        "    targets: [ \"{}\", \"{}\" ]\n    retries: {{ attempts: 2, retry_on: [ connect_error, reset ] }}\n    outlier_detection: {{ consecutive_failures: 2, base_ejection: 3s, max_ejection: 10s }}",
        a.addr, b.addr
    ));
    let url = gw.url("/");
    assert_eq!(statuses(&url, &[], 20).await, [200; 20]);
    assert!(
        served.load(Ordering::Relaxed) > 0,
        "A took its share before"
    );
    a.kill();
    // Under the same load, every request still succeeds: failures on A are retried on B
    // until A is ejected.
    assert_eq!(statuses(&url, &[], 40).await, [200; 40]);
    let ejections = gw
        .metric(&format!(
            "floodgate_upstream_ejections_total{{upstream=\"pool\",target=\"{}\"}}",
            a.addr
        ))
        .await;
    assert_eq!(ejections, 1.0, "A was ejected once, for the whole run");
    // A heals (starts again on its address) and comes back by itself.
    let before = served.load(Ordering::Relaxed);
    let _a = Killable::start(a.addr, served.clone()).await;
    let mut back = false;
    for _ in 0..500 {
        assert_eq!(get(&url).await.0, StatusCode::OK);
        if served.load(Ordering::Relaxed) > before {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(back, "the healed target never came back");
}
