//! HTTP/2 to upstreams (prior knowledge): against a server that speaks only HTTP/2, many
//! concurrent requests share one multiplexed connection, the host goes as `:authority`,
//! and bodies pass both ways.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::*;

/// A server that speaks HTTP/2 only; counts connections; answers with the request's
/// version, authority and body length. Requests to `/held-*` are answered only once
/// `held` of them are in the server at the same time (503 if they never are).
async fn h2_only(held: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    let barrier = Arc::new(tokio::sync::Barrier::new(held.max(1)));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let barrier = barrier.clone();
                    async move {
                        if req.uri().path().starts_with("/held-")
                            && tokio::time::timeout(PATIENCE, barrier.wait())
                                .await
                                .is_err()
                        {
                            let mut resp = Response::new(Full::new(Bytes::from("never all held")));
                            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                            return Ok::<_, Infallible>(resp);
                        }
                        let version = format!("{:?}", req.version());
                        let authority = req
                            .uri()
                            .authority()
                            .map(|a| a.to_string())
                            .unwrap_or_default();
                        let len = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes().len())
                            .unwrap_or(0);
                        let mut resp = Response::new(Full::new(Bytes::from(format!("{len}"))));
                        resp.headers_mut()
                            .insert("x-version", version.parse().unwrap());
                        resp.headers_mut()
                            .insert("x-authority", authority.parse().unwrap());
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_share_one_multiplexed_http2_connection() {
    let (up, connections) = h2_only(20).await;
    let gw = Gateway::start(&format!(
        "listeners: [ {{ name: public, address: \"127.0.0.1:0\" }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ enabled: false }}
upstreams:
  grpcish: {{ protocol: http2, targets: [ \"{up}\" ] }}
routes:
  - {{ match: {{ path_prefix: / }}, upstream: grpcish }}
"
    ));
    // One request first, so the connection exists; then twenty at once, all of them held
    // in the upstream together before any is answered.
    let (status, h, _) = get_with(&gw.url("/warm"), &[("host", "api.test")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["x-version"], "HTTP/2.0");
    assert_eq!(h["x-authority"], "api.test");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let url = gw.url(&format!("/held-{i}"));
        tasks.push(tokio::spawn(async move { get(&url).await.0 }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let (status, _, body) = send(
        Request::post(gw.url("/upload"))
            .body(Full::new(Bytes::from(vec![b'x'; 100_000])))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "100000");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one multiplexed connection"
    );
}

/// What the GOAWAY server saw: connections made, and the path of every request it processed.
#[derive(Default)]
struct GoingAway {
    connections: AtomicUsize,
    processed: std::sync::Mutex<Vec<String>>,
}

impl GoingAway {
    /// How many times each path was processed.
    fn times(&self) -> std::collections::HashMap<String, usize> {
        let mut times = std::collections::HashMap::new();
        for path in self.processed.lock().unwrap().iter() {
            *times.entry(path.clone()).or_insert(0) += 1;
        }
        times
    }
}

/// A server that speaks HTTP/2 only and ends each connection gracefully (GOAWAY) after a
/// few requests, as nginx does after `keepalive_requests` and gRPC servers after their
/// maximum connection age.
async fn h2_going_away(per_connection: usize) -> (SocketAddr, Arc<GoingAway>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(GoingAway::default());
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            record.connections.fetch_add(1, Ordering::SeqCst);
            let record = record.clone();
            tokio::spawn(async move {
                let served = Arc::new(AtomicUsize::new(0));
                let enough = Arc::new(tokio::sync::Notify::new());
                let (s, e) = (served.clone(), enough.clone());
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (s, e, record) = (s.clone(), e.clone(), record.clone());
                    async move {
                        let path = req.uri().path().to_owned();
                        record.processed.lock().unwrap().push(path);
                        if s.fetch_add(1, Ordering::SeqCst) + 1 == per_connection {
                            e.notify_one();
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok"))))
                    }
                });
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc);
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = enough.notified() => conn.as_mut().graceful_shutdown(),
                }
                let _ended = conn.await;
            });
        }
    });
    (addr, seen)
}

/// A gateway in front of `up` over HTTP/2; `retries` (YAML) holds request bodies in memory.
fn h2_gateway(up: SocketAddr, retries: &str) -> Gateway {
    Gateway::start(&format!(
        "listeners: [ {{ name: public, address: \"127.0.0.1:0\" }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ enabled: false }}
upstreams:
  h2: {{ protocol: http2, targets: [ \"{up}\" ]{retries} }}
routes:
  - {{ match: {{ path_prefix: / }}, upstream: h2 }}
"
    ))
}

/// Sends 20 rounds of 20 concurrent requests (`method`, a path of their own each, `body`)
/// and returns each path with the status it got.
async fn rounds(
    gw: &Gateway,
    method: http::Method,
    body: &'static [u8],
) -> Vec<(String, StatusCode)> {
    let mut answers = Vec::new();
    for round in 0..20 {
        let mut tasks = Vec::new();
        for i in 0..20 {
            let path = format!("/r{round}-{i}");
            let req = Request::builder()
                .method(method.clone())
                .uri(gw.url(&path))
                .body(Full::new(Bytes::from_static(body)))
                .unwrap();
            tasks.push(tokio::spawn(async move { (path, send(req).await.0) }));
        }
        for t in tasks {
            answers.push(t.await.unwrap());
        }
    }
    answers
}

/// Every request was answered 200 and processed exactly once.
fn each_processed_once(answers: &[(String, StatusCode)], seen: &GoingAway) {
    let times = seen.times();
    for (path, status) in answers.iter().filter(|(_, s)| *s != StatusCode::OK) {
        eprintln!("{path}: {status}, processed {:?} times", times.get(path));
    }
    for (path, status) in answers {
        assert_eq!(*status, StatusCode::OK, "{path}");
        assert_eq!(times.get(path), Some(&1), "{path} processed");
    }
    assert_eq!(
        times.len(),
        answers.len(),
        "only the requests sent were processed"
    );
    let made = seen.connections.load(Ordering::SeqCst);
    assert!(
        made >= 3,
        "the server went away every few requests: {made} connections"
    );
}

/// Requests a GOAWAY caught before the server took them go out again on a new connection;
/// those it took are answered on the old one. None is lost and none is done twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_caught_by_a_goaway_go_out_again_on_a_new_connection() {
    let (up, seen) = h2_going_away(5).await;
    let gw = h2_gateway(up, "");
    let answers = rounds(&gw, http::Method::GET, b"").await;
    each_processed_once(&answers, &seen);
}

/// The same for requests that are not idempotent, whose body is streamed or (with
/// retries) held: whether to send one again is decided by what the server said about its
/// stream, never by guessing, so a POST is neither lost nor done twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_caught_by_a_goaway_are_processed_exactly_once() {
    for retries in ["", ", retries: { attempts: 2 }"] {
        let (up, seen) = h2_going_away(5).await;
        let gw = h2_gateway(up, retries);
        let answers = rounds(&gw, http::Method::POST, b"payload").await;
        if answers.iter().any(|(_, s)| *s != StatusCode::OK) {
            eprintln!("with retries {retries:?}, the gateway's log:\n{}", gw.log());
        }
        each_processed_once(&answers, &seen);
    }
}
