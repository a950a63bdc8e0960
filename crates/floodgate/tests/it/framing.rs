//! Responses are framed anew for the client: an upstream's `Content-Length` beside
//! `Transfer-Encoding` never reaches the client (RFC 9112 §6.3), and a response whose body
//! broke off on the way is logged as such, not as a success.

use http::StatusCode;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_length_beside_chunked_framing_is_dropped() {
    // Both framings: the chunked one wins, and its length must not reach the client.
    for response in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
        &b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
    ] {
        let up = raw_upstream(response).await;
        let gw = Gateway::start(&config(up, "  - match: { path_prefix: / }\n    upstream: backend", ""));
        let (status, headers, body) = get(&gw.url("/x")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"hello");
        assert!(
            headers.get("content-length").is_none_or(|v| v == "5"),
            "{headers:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_breaks_off_is_logged_as_incomplete() {
    let up = raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nhello").await;
    let gw = Gateway::start(&config(
        up,
        "  - match: { path_prefix: / }\n    upstream: backend",
        "",
    ));
    // The client sees the connection close before the declared length (hyper drops what
    // it had not flushed yet, so it may see nothing at all).
    let answer = raw_exchange(gw.addr(), b"GET /short HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(
        !answer.contains("hello") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    let line = gw.access_line("/short").await;
    assert_eq!(line["bytes_sent"], 5, "{line}");
    assert_eq!(line["error"], "upstream-broken", "{line}");
    assert_eq!(
        gw.metric("floodgate_upstream_errors_total{upstream=\"backend\",kind=\"broken\"}")
            .await,
        1.0
    );
}
