//! Listener limits (413, 414, 431 as problem+json) and client timeouts (slow clients cut off
//! by the header timeout, idle connections closed).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

const ROUTES: &str = "  - { name: all, match: { path_prefix: / }, upstream: backend }\n";

fn limited(up: std::net::SocketAddr) -> String {
    format!(
        "listeners:
  - name: public
    address: 127.0.0.1:0
    limits: {{ max_uri_bytes: 64, max_header_bytes: 2KiB, max_headers: 20, max_body_bytes: 1KiB }}
    timeouts: {{ header_read: 1s, idle: 1s }}
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
upstreams:
  backend: {{ targets: [ \"{up}\" ] }}
routes:
{ROUTES}"
    )
}

/// An upstream that reads the whole body and says how long it was.
async fn counting_upstream() -> std::net::SocketAddr {
    upstream(|req: Request<hyper::body::Incoming>| async move {
        match req.into_body().collect().await {
            Ok(b) => json_response(
                StatusCode::OK,
                &serde_json::json!({ "received": b.to_bytes().len() }),
            ),
            Err(_) => json_response(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": "body" }),
            ),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limits_answer_with_problem_json() {
    let up = counting_upstream().await;
    let gw = Gateway::start(&limited(up));

    let (s, h, b) = get(&gw.url(&format!("/{}", "a".repeat(100)))).await;
    assert_problem(s, &h, &b, StatusCode::URI_TOO_LONG, "uri-too-long");

    let big = "x".repeat(3000);
    let (s, h, b) = get_with(&gw.url("/"), &[("x-big", &big)]).await;
    assert_problem(
        s,
        &h,
        &b,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers-too-large",
    );

    let mut req = Request::get(gw.url("/"));
    for i in 0..25 {
        req = req.header(format!("x-h{i}"), "1");
    }
    let (s, h, b) = send(req.body(Full::new(Bytes::new())).unwrap()).await;
    assert_problem(
        s,
        &h,
        &b,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers-too-large",
    );

    // Declared too large: refused before anything is read or sent upstream.
    let req = Request::post(gw.url("/"))
        .body(Full::new(Bytes::from(vec![b'x'; 2048])))
        .unwrap();
    let (s, h, b) = send(req).await;
    assert_problem(s, &h, &b, StatusCode::PAYLOAD_TOO_LARGE, "body-too-large");

    // Within the limit: passes.
    let req = Request::post(gw.url("/"))
        .body(Full::new(Bytes::from(vec![b'x'; 1000])))
        .unwrap();
    let (s, _, b) = send(req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json(&b)["received"], 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_the_limit_is_cut_off_with_413() {
    let up = counting_upstream().await;
    let gw = Gateway::start(&limited(up));
    // 8 × 512 bytes, chunked (no Content-Length): the limit strikes mid-stream.
    let req = Request::post(gw.url("/"))
        .body(Generated::new(4096, 512))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_problem(
        status,
        &headers,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_is_cut_off_by_the_header_timeout() {
    let up = counting_upstream().await;
    let gw = Gateway::start(&limited(up));
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let started = Instant::now();
    // Half a request head, then silence (a slowloris client).
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
        .await
        .expect("the gateway must close the connection")
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(
        n == 0 || answer.starts_with("HTTP/1.1 408"),
        "closed or 408, got {answer:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before the timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed() {
    let up = counting_upstream().await;
    let gw = Gateway::start(&limited(up));
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let first = crate::headers::read_response(&mut s).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert_idles_out(&mut s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_outlasting_the_idle_timeout_is_not_cut() {
    // The idle timer (1 s) comes due while the request is in flight: it is put off, the
    // answer arrives, the connection takes another request, and only then idles out.
    let up = upstream(|_req: Request<hyper::body::Incoming>| async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        json_response(StatusCode::OK, &serde_json::json!({ "slow": true }))
    })
    .await;
    let gw = Gateway::start(&limited(up));
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = crate::headers::read_response(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert_idles_out(&mut s).await;
}

/// The gateway closes `s`, now idle, without another response.
async fn assert_idles_out(s: &mut tokio::net::TcpStream) {
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
        .await
        .expect("idle connection must be closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without another response");
}

/// CPU time the process has used (user and system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_an_http2_preface_costs_no_cpu_while_it_waits() {
    // A bound on work, not a timing: 300 connections that sent half the HTTP/2 preface and
    // wait. Polling for the rest every few milliseconds cost a core; waiting for the socket
    // costs nothing, so a second of it stays far below 0.1 CPU-seconds.
    let up = counting_upstream().await;
    let gw = Gateway::start(&limited(up).replace("header_read: 1s, idle: 1s", "header_read: 10s"));
    let mut waiting = Vec::new();
    for _ in 0..300 {
        let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        waiting.push(s);
    }
    // Every connection accepted and sniffing: a request on a new connection is served
    // after them (the accept queue is first in, first out).
    let (status, _, _) = get(&gw.url("/")).await;
    assert_eq!(status, StatusCode::OK);
    let before = cpu_ticks(gw.pid());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_ticks(gw.pid()) - before;
    assert!(used < 10, "{used} ticks of CPU in one second of waiting");
    // The rest of the preface still makes a working HTTP/2 connection.
    let mut s = waiting.pop().unwrap();
    s.write_all(b"\r\nSM\r\n\r\n").await.unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap(); // empty SETTINGS
    let mut head = [0u8; 9];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut head))
        .await
        .expect("the server's SETTINGS in time")
        .unwrap();
    assert_eq!(head[3], 4, "a SETTINGS frame first: {head:?}");
}
