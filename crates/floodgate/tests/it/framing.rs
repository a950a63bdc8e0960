//! Responses are framed anew for the client: an upstream response framed two ways
//! (`Content-Length` beside `Transfer-Encoding`, a repeated length, a bare LF) is refused
//! as the upstream's fault, and a response whose body broke off on the way is logged as
//! such, not as a success.

use http::StatusCode;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_framed_two_ways_is_the_upstreams_fault() {
    // Both framings: which one a client would follow is the desync; the response is
    // refused (502, as nginx does) and the upstream blamed, never forwarded either way.
    for response in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"[..],
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\nX: y\r\n\r\nhello"[..],
    ] {
        let up = raw_upstream(response).await;
        let gw = Gateway::start(&config(up, "  - match: { path_prefix: / }\n    upstream: backend", ""));
        let (status, headers, _) = get(&gw.url("/x")).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{}", String::from_utf8_lossy(response));
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(
            gw.metric("floodgate_upstream_errors_total{upstream=\"backend\",kind=\"broken\"}")
                .await,
            1.0
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_upstream_does_not_downgrade_the_client() {
    // As `python3 -m http.server` answers: HTTP/1.0, no length, the end marked by a close.
    let up = raw_upstream(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello").await;
    let gw = Gateway::start(&config(
        up,
        "  - match: { path_prefix: / }\n    upstream: backend",
        "",
    ));
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    for _ in 0..2 {
        use tokio::io::AsyncWriteExt;
        s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("via: 1.0 floodgate"),
            "{head}"
        );
        assert_eq!(read_chunked(&mut s).await, "hello");
    }
}

/// Reads a response head (through the blank line) from `s`.
async fn read_head(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, s.read(&mut byte))
            .await
            .expect("a head in time")
            .unwrap();
        assert_eq!(
            n,
            1,
            "the connection closed after {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Reads a chunked body from `s`, whole.
async fn read_chunked(s: &mut tokio::net::TcpStream) -> String {
    let mut body = String::new();
    loop {
        let line = read_line(s).await;
        let size = usize::from_str_radix(line.trim(), 16).unwrap();
        let mut data = vec![0u8; size + 2];
        tokio::io::AsyncReadExt::read_exact(s, &mut data)
            .await
            .unwrap();
        if size == 0 {
            return body;
        }
        body.push_str(std::str::from_utf8(&data[..size]).unwrap());
    }
}

async fn read_line(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}
