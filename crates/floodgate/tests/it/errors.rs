//! Errors the gateway answers itself: 404 no route, 502 connect failure, 504 timeout, 400 bad
//! request; all problem+json with the request id, and none of them stops the process.

use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_connect_failure_and_timeout() {
    let slow = upstream(|_req| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        http::Response::new(full("late"))
    })
    .await;
    let dead = closed_port();
    let cfg = format!(
        "listeners: [ {{ name: public, address: 127.0.0.1:0 }} ]
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ output: \"{{dir}}/access.log\" }}
upstreams:
  dead: {{ targets: [ \"{dead}\" ], timeouts: {{ connect: 1s }} }}
  slow: {{ targets: [ \"{slow}\" ], timeouts: {{ request: 200ms }} }}
routes:
  - {{ name: dead, match: {{ path: /dead }}, upstream: dead }}
  - {{ name: slow, match: {{ path: /slow }}, upstream: slow }}
"
    );
    let gw = Gateway::start(&cfg);

    let (s, h, b) = get(&gw.url("/nowhere")).await;
    let v = assert_problem(s, &h, &b, StatusCode::NOT_FOUND, "no-route");
    assert_eq!(v["instance"], "/nowhere");

    let (s, h, b) = get(&gw.url("/dead")).await;
    assert_problem(
        s,
        &h,
        &b,
        StatusCode::BAD_GATEWAY,
        "upstream-connect-failed",
    );

    let (s, h, b) = get(&gw.url("/slow")).await;
    assert_problem(s, &h, &b, StatusCode::GATEWAY_TIMEOUT, "upstream-timeout");

    assert_eq!(
        gw.metric("floodgate_upstream_errors_total{upstream=\"dead\",kind=\"connect\"}")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric("floodgate_upstream_errors_total{upstream=\"slow\",kind=\"timeout\"}")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric("floodgate_requests_total{route=\"(none)\",class=\"4xx\"}")
            .await,
        1.0
    );

    // The access log has one JSON line per request, with the error named.
    let log_path = gw.dir.path().join("access.log");
    let read = || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    until("three access log lines", || {
        let n = read().len();
        async move { n >= 3 }
    })
    .await;
    let lines = read();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let slow_line: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    assert_eq!(slow_line["route"], "slow");
    assert_eq!(slow_line["status"], 504);
    assert_eq!(slow_line["error"], "upstream-timeout");
    assert_eq!(slow_line["upstream"], "slow");
    assert_eq!(slow_line["target"], slow.to_string());
    assert_eq!(slow_line["method"], "GET");
    assert_eq!(slow_line["path"], "/slow");
    assert!(slow_line["bytes_sent"].as_u64().unwrap() > 0);
    assert!(slow_line["duration_ms"].as_f64().unwrap() >= 200.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_and_the_gateway_keeps_serving() {
    let up = echo_upstream().await;
    let gw = Gateway::start(&config(
        up,
        "  - { name: all, match: { path_prefix: / }, upstream: backend }\n",
        "",
    ));
    // Each malformed input and the first line of its answer.
    let malformed: [(&[u8], &str); 5] = [
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
            "HTTP/1.1 400 Bad Request",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            "HTTP/1.1 400 Bad Request",
        ),
        (
            b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
            "HTTP/1.1 400 Bad Request",
        ),
        (
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 not http at all\r\n\r\n",
            "HTTP/1.1 400 Bad Request",
        ),
        (b"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request"),
    ];
    for (raw, answer) in malformed {
        let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        assert_eq!(
            text.lines().next().unwrap_or_default(),
            answer,
            "{:?}: {text:?}",
            String::from_utf8_lossy(raw)
        );
    }
    // Transfer-Encoding with Content-Length (a smuggling attempt): refused with 400 (RFC
    // 9112 §6.1 allows it, and two parsers cannot then disagree on where the body ends),
    // and the connection closes, so the request hidden behind it is never served.
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&all);
    assert_eq!(
        text.matches("HTTP/1.1 ").count(),
        1,
        "one answer only: {text}"
    );
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert!(!text.contains("/smuggled"), "{text}");
    // A request without Host on HTTP/1.1 is the gateway's own 400 with problem+json.
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let text = crate::headers::read_response(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("urn:floodgate:problem:bad-request"), "{text}");
    // Still serving.
    assert_eq!(get(&gw.url("/after")).await.0, StatusCode::OK);
    // The heads refused before a request existed are counted by their problem.
    assert_eq!(
        gw.metric("floodgate_requests_refused_total{listener=\"public\",code=\"bad-request\"}")
            .await,
        5.0
    );
}
