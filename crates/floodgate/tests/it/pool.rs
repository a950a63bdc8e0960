//! Upstream connection pooling: keep-alive reuse, and what happens when an upstream closes a
//! pooled connection just as a request goes out on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const ROUTES: &str = "  - { name: all, match: { path_prefix: / }, upstream: backend }\n";

/// Reads one request head (these tests send no bodies) into `heads`; false when the peer
/// closed.
async fn read_head(s: &mut TcpStream, heads: &Heads) -> bool {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&byte[..n]),
        }
    }
    heads
        .lock()
        .unwrap()
        .push(String::from_utf8_lossy(&buf).into_owned());
    true
}

/// The request heads an upstream received, in order.
type Heads = Arc<std::sync::Mutex<Vec<String>>>;

/// A raw HTTP/1.1 upstream: the first connection answers one request ("first"), then reads
/// the next request and closes without answering, as a server whose keep-alive timeout fires
/// at that moment. Later connections answer every request ("fresh"). Counts connections.
async fn closing_upstream() -> (SocketAddr, Arc<AtomicUsize>, Heads) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let accepted = count.clone();
    let heads = Heads::default();
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let n = accepted.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            tokio::spawn(async move {
                if n == 0 {
                    if read_head(&mut s, &seen).await {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst")
                            .await;
                    }
                    read_head(&mut s, &seen).await;
                    return; // closes without answering
                }
                while read_head(&mut s, &seen).await {
                    if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfresh")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, count, heads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_are_reused() {
    let (up, count, _) = closing_upstream().await;
    let gw = Gateway::start(&config(up, ROUTES, ""));
    assert_eq!(&get(&gw.url("/a")).await.2[..], b"first");
    // The first connection is now spent; every later request reuses the second one.
    let (status, _, body) = get(&gw.url("/b")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"fresh"[..]));
    for i in 0..20 {
        let (status, _, body) = get(&gw.url(&format!("/c{i}"))).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"fresh"[..]));
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        2,
        "twenty sequential requests share one pooled connection"
    );
    // The reuse ratio's counters: /a and /b's replay opened connections, the rest reused.
    let series = |c: &str| {
        format!(
            "floodgate_upstream_exchanges_total{{upstream=\"backend\",target=\"{up}\",connection=\"{c}\"}}"
        )
    };
    assert_eq!(gw.metric(&series("new")).await, 2.0);
    assert_eq!(gw.metric(&series("reused")).await, 20.0);
    assert_eq!(
        gw.metric(&format!(
            "floodgate_upstream_responses_total{{upstream=\"backend\",target=\"{up}\",class=\"2xx\"}}"
        ))
        .await,
        22.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_connection_is_replayed_for_idempotent_requests_only() {
    // GET: the upstream closes the pooled connection on receipt; the gateway sends it again
    // on a new connection and the client never notices.
    let (up, count, heads) = closing_upstream().await;
    let gw = Gateway::start(&config(up, ROUTES, ""));
    assert_eq!(&get(&gw.url("/a")).await.2[..], b"first");
    let (status, _, body) = get_with(&gw.url("/b?q=1"), &[("x-trace", "t-7")]).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(&body[..], b"fresh");
    assert_eq!(count.load(Ordering::SeqCst), 2);
    // The replay is the same request, byte for byte: target, fields and request id.
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 3, "{heads:?}");
    assert!(
        heads[1].starts_with("GET /b?q=1 HTTP/1.1\r\n"),
        "{}",
        heads[1]
    );
    assert!(heads[1].contains("x-trace: t-7\r\n"), "{}", heads[1]);
    assert_eq!(heads[1], heads[2]);

    // POST: not idempotent, so it is not sent twice; the client gets 502.
    let (up, _, _) = closing_upstream().await;
    let gw = Gateway::start(&config(up, ROUTES, ""));
    assert_eq!(&get(&gw.url("/a")).await.2[..], b"first");
    let (s, h, b) = send(
        Request::post(gw.url("/b"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_problem(s, &h, &b, StatusCode::BAD_GATEWAY, "upstream-broken");
}
