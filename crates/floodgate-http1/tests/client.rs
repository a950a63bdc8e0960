//! The client connection against scripted origins over real sockets: what goes out, how
//! each response framing is read, and when a connection may be reused.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use floodgate_http1::{ClientConfig, ClientConn, ClientError, SendError};
use http::{Request, StatusCode};
use http_body::Body as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Body = BoxBody<Bytes, Infallible>;

/// An origin that, for each scripted answer, reads a request up to `until` and writes the
/// answer; it hands back everything it read.
async fn origin(
    script: Vec<(&'static str, &'static [u8])>,
) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut at = 0;
        for (until, answer) in script {
            loop {
                if let Some(i) = find(&seen[at..], until.as_bytes()) {
                    at += i + until.len();
                    break;
                }
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                assert!(
                    n > 0,
                    "the client closed: {}",
                    String::from_utf8_lossy(&seen)
                );
                seen.extend_from_slice(&buf[..n]);
            }
            s.write_all(answer).await.unwrap();
        }
        seen
    });
    (addr, task)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn conn(addr: &str) -> ClientConn<TcpStream, Body> {
    ClientConn::new(
        TcpStream::connect(addr).await.unwrap(),
        ClientConfig::default(),
    )
}

fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header("host", "origin")
        .body(Empty::new().boxed())
        .unwrap()
}

async fn body_of(resp: http::Response<floodgate_http1::IncomingBody>) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn a_keep_alive_connection_carries_exchanges_in_turn() {
    let (addr, seen) = origin(vec![
        (
            "\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        ),
        (
            "\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ),
    ])
    .await;
    let mut c = conn(&addr).await;
    let resp = c.send(get("/a")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(&body_of(resp).await[..], b"hello");
    assert!(c.is_reusable() && c.is_usable());
    let resp = c.send(get("/b?x=1")).await.unwrap();
    assert_eq!(&body_of(resp).await[..], b"abc");
    assert!(c.is_reusable());
    let seen = String::from_utf8(seen.await.unwrap()).unwrap();
    assert_eq!(
        seen,
        "GET /a HTTP/1.1\r\nhost: origin\r\n\r\nGET /b?x=1 HTTP/1.1\r\nhost: origin\r\n\r\n"
    );
}

#[tokio::test]
async fn request_bodies_are_framed_by_what_is_known_of_them() {
    let (addr, seen) = origin(vec![
        ("hello", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("0\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n"),
    ])
    .await;
    let mut c = conn(&addr).await;
    let full = Request::post("/f")
        .header("host", "o")
        .body(Full::new(Bytes::from_static(b"hello")).boxed())
        .unwrap();
    assert_eq!(c.send(full).await.unwrap().status(), 204);
    let pieces =
        ["one", "two"].map(|p| Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(p))));
    let streamed = Request::post("/s")
        .header("host", "o")
        .body(StreamBody::new(futures_util::stream::iter(pieces)).boxed())
        .unwrap();
    assert_eq!(c.send(streamed).await.unwrap().status(), 204);
    let empty_post = Request::post("/e")
        .header("host", "o")
        .body(Empty::new().boxed())
        .unwrap();
    assert_eq!(c.send(empty_post).await.unwrap().status(), 204);
    let seen = String::from_utf8(seen.await.unwrap()).unwrap();
    assert_eq!(
        seen,
        "POST /f HTTP/1.1\r\nhost: o\r\ncontent-length: 5\r\n\r\nhello\
         POST /s HTTP/1.1\r\nhost: o\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n\
         POST /e HTTP/1.1\r\nhost: o\r\ncontent-length: 0\r\n\r\n"
    );
}

#[tokio::test]
async fn interim_heads_are_skipped_and_bodiless_answers_read_no_body() {
    let (addr, _seen) = origin(vec![
        (
            "\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ),
        ("\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"),
        (
            "\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
        ),
    ])
    .await;
    let mut c = conn(&addr).await;
    assert_eq!(&body_of(c.send(get("/")).await.unwrap()).await[..], b"ok");
    let head = Request::head("/")
        .header("host", "o")
        .body(Empty::new().boxed())
        .unwrap();
    let resp = c.send(head).await.unwrap();
    assert_eq!(resp.headers()["content-length"], "99");
    assert!(body_of(resp).await.is_empty());
    assert!(c.is_reusable());
    let resp = c.send(get("/")).await.unwrap();
    assert_eq!(resp.status(), 304);
    assert!(body_of(resp).await.is_empty());
    assert!(c.is_reusable());
}

#[tokio::test]
async fn a_close_delimited_answer_is_read_to_the_end_and_the_connection_not_kept() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await.unwrap();
        s.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
            .await
            .unwrap();
    });
    let mut c = conn(&addr).await;
    let resp = c.send(get("/")).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_10);
    assert_eq!(&body_of(resp).await[..], b"until the end");
    assert!(!c.is_reusable());
}

#[tokio::test]
async fn responses_framed_two_ways_are_refused() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
    ] {
        let (addr, _seen) = origin(vec![("\r\n\r\n", answer)]).await;
        let mut c = conn(&addr).await;
        let outcome = match c.send(get("/")).await {
            Ok(resp) => resp
                .into_body()
                .collect()
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(SendError::Failed(ClientError::Head(e))) => Err(e.reason().to_owned()),
            Err(e) => panic!("{e:?}"),
        };
        assert!(outcome.is_err(), "{}", String::from_utf8_lossy(answer));
        assert!(!c.is_reusable());
    }
}

#[tokio::test]
async fn a_connection_the_origin_closed_is_not_usable() {
    let (addr, seen) = origin(vec![(
        "\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )])
    .await;
    let mut c = conn(&addr).await;
    assert_eq!(&body_of(c.send(get("/")).await.unwrap()).await[..], b"ok");
    drop(seen.await.unwrap());
    // The FIN arrives on its own time: bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while c.is_usable() {
        assert!(tokio::time::Instant::now() < deadline, "still usable");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn an_early_answer_leaves_the_body_to_the_driver() {
    // The origin answers after the head, then reads the body: the driver writes it while
    // the response body is read.
    let (addr, seen) = origin(vec![
        (
            "\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone",
        ),
        ("0\r\n\r\n", b""),
    ])
    .await;
    let mut c = conn(&addr).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Infallible>>(1);
    let body = StreamBody::new(tokio_stream_from(rx)).boxed();
    let req = Request::post("/up").header("host", "o").body(body).unwrap();
    let resp = c.send(req).await.unwrap();
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"late"))))
        .await
        .unwrap();
    drop(tx);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    loop {
        let frame = std::future::poll_fn(|cx| {
            c.poll_driver(cx);
            std::pin::Pin::new(&mut body).poll_frame(cx)
        })
        .await;
        match frame {
            Some(Ok(f)) => got.extend_from_slice(&f.into_data().unwrap()),
            Some(Err(e)) => panic!("{e}"),
            None => break,
        }
    }
    assert_eq!(got, b"done");
    // The rest of the request goes out as the connection is driven.
    std::future::poll_fn(|cx| {
        c.poll_driver(cx);
        if c.is_reusable() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    let seen = String::from_utf8(seen.await.unwrap()).unwrap();
    assert!(seen.ends_with("4\r\nlate\r\n0\r\n\r\n"), "{seen}");
}

/// A receiver as a stream (no extra crate for one test).
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn a_switch_hands_over_the_connection_with_what_followed_the_head() {
    let (addr, origin) = origin(vec![
        (
            "\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nfirst",
        ),
        ("ping", b"pong"),
    ])
    .await;
    let mut c = conn(&addr).await;
    let req = Request::get("/ws")
        .header("host", "origin")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(Empty::new().boxed())
        .unwrap();
    let resp = c.send(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(
        !c.is_reusable(),
        "a switched connection never goes back to a pool"
    );
    let mut up = c.upgrade().expect("the connection after a 101");
    let mut seen = up.read_ahead.to_vec();
    up.io.write_all(b"ping").await.unwrap();
    while seen.len() < b"firstpong".len() {
        let mut buf = [0u8; 16];
        let n = up.io.read(&mut buf).await.unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    assert_eq!(seen, b"firstpong");
    drop(up);
    origin.await.unwrap();
}

#[tokio::test]
async fn a_switch_nobody_asked_for_is_the_upstreams_error() {
    let (addr, _origin) = origin(vec![(
        "\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    )])
    .await;
    let mut c = conn(&addr).await;
    match c.send(get("/")).await {
        Err(SendError::Failed(ClientError::Head(_))) => {}
        other => panic!("{:?}", other.map(|r| r.status())),
    }
    assert!(c.upgrade().is_none());
}
