//! A client's fault is the client's: a request body the client breaks, abandons or stops
//! sending is answered as the client's error (400, 408, or logged as client-closed) and
//! never counted against the upstream: not by its breaker, outlier detection, retries or
//! error metrics. And a slow upload is not the upstream's time: its response timer starts
//! when the body has been sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use crate::support::*;

/// An upstream that reads each request's body and answers with its length, counting
/// the requests that reached it.
async fn reading_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let arrivals = Arc::new(AtomicUsize::new(0));
    let seen = arrivals.clone();
    let addr = upstream(move |req: Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::Relaxed);
            match req.into_body().collect().await {
                Ok(b) => json_response(
                    StatusCode::OK,
                    &serde_json::json!({ "received": b.to_bytes().len() }),
                ),
                Err(_) => Response::new(full("broken body")),
            }
        }
    })
    .await;
    (addr, arrivals)
}

/// A gateway whose upstream `shop` has a breaker that opens after 3 failures for a
/// minute, retries on resets, outlier detection after 3 failures, and `extra` upstream
/// fields; the listener's `listener` fields; an access log.
fn guarded(addr: SocketAddr, extra: &str, listener: &str) -> Gateway {
    Gateway::start(&format!(
        "listeners: [ {{ name: public, address: \"127.0.0.1:0\"{listener} }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ output: \"{{dir}}/access.log\" }}
upstreams:
  shop:
    targets: [ \"{addr}\" ]
    circuit_breaker: {{ consecutive_failures: 3, open_for: 60s }}
    retries: {{ attempts: 2, retry_on: [reset, timeout], methods: [POST] }}
    outlier_detection: {{ consecutive_failures: 3 }}
{extra}
routes:
  - match: {{ path_prefix: / }}
    upstream: shop
"
    ))
}

/// No upstream failure was counted, and the breaker still lets requests through.
async fn assert_upstream_unblamed(gw: &Gateway) {
    let metrics = gw.metrics().await;
    assert!(
        !metrics.contains("floodgate_upstream_errors_total{"),
        "no upstream error counted:\n{metrics}"
    );
    assert!(
        !metrics.contains("floodgate_upstream_retries_total{"),
        "nothing retried:\n{metrics}"
    );
    let (status, _, body) = get(&gw.url("/after")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the breaker is closed: {}",
        String::from_utf8_lossy(&body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_chunked_bodies_are_400_and_cannot_open_the_breaker() {
    let (addr, _) = reading_upstream().await;
    let gw = guarded(addr, "", "");
    for _ in 0..4 {
        let answer = raw_exchange(
            gw.addr(),
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(
            answer.contains("urn:floodgate:problem:bad-request"),
            "{answer}"
        );
    }
    assert_upstream_unblamed(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_abandoned_mid_way_are_logged_as_client_closed_and_cannot_open_the_breaker() {
    let (addr, _) = reading_upstream().await;
    let gw = guarded(addr, "", "");
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        s.write_all(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n0123456789")
            .await
            .unwrap();
        drop(s);
    }
    let lines = gw.access_lines("\"client-closed\"", 4).await;
    assert!(lines.iter().all(|l| l["status"] == 499), "{lines:?}");
    assert_upstream_unblamed(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_sending_its_body_gets_408_and_the_upstream_is_not_blamed() {
    let (addr, _) = reading_upstream().await;
    let gw = guarded(addr, "", ", timeouts: { body_read: 300ms }");
    for _ in 0..4 {
        // Ten bytes of a thousand, then silence with the connection open.
        let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        s.write_all(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n0123456789")
            .await
            .unwrap();
        let answer = tokio::time::timeout(PATIENCE, crate::headers::read_response(&mut s))
            .await
            .expect("answered in time");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            answer.contains("urn:floodgate:problem:body-timeout"),
            "{answer}"
        );
    }
    assert_upstream_unblamed(&gw).await;
}

/// A body sent in pieces of 100 bytes, `gap` apart, with no declared length.
struct SlowBody {
    left: usize,
    gap: Duration,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for SlowBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        if let Some(t) = self.timer.as_mut() {
            std::task::ready!(t.as_mut().poll(cx));
        }
        let gap = self.gap;
        self.timer = Some(Box::pin(tokio::time::sleep(gap)));
        self.left -= 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![
            b'u';
            100
        ])))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_slower_than_the_upstream_timeout_is_answered() {
    // The upstream answers at once when the body ends; the upload takes 1.2 s, longer than
    // the upstream's 1 s request timeout, which therefore must start when the body is sent.
    let (addr, _) = reading_upstream().await;
    let gw = guarded(addr, "    timeouts: { request: 1s }", "");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<SlowBody>();
    let req = Request::post(gw.url("/upload"))
        .body(SlowBody {
            left: 4,
            gap: Duration::from_millis(400),
            timer: None,
        })
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["received"], 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_reads_the_body_times_out() {
    // A server that accepts and then neither reads nor answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            keep.lock().unwrap().push(s);
        }
    });
    let gw = guarded(addr, "    timeouts: { request: 500ms }", "");
    let req = Request::post(gw.url("/upload"))
        .body(Generated::new(8 << 20, 64 << 10))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Generated>();
    let resp = tokio::time::timeout(PATIENCE, client.request(req))
        .await
        .expect("answered in time")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
}
