//! The server connection over real sockets, driven with raw bytes: keep-alive, pipelining,
//! framing both ways, `Expect: 100-continue`, refusals, timeouts and the upgrade seam.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use floodgate_http1::{Connection, HeadError, IncomingBody, ServerConfig, Service};
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Body = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// Answers `/echo` with the request body, `/stream` with a body of unknown length, `/up`
/// with 101 (then echoes through the tunnel), anything else with the method and path.
#[derive(Clone)]
struct Echo;

impl Service for Echo {
    type Body = Body;
    type Future = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

    fn call(&mut self, req: Request<IncomingBody>) -> Self::Future {
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            match path.as_str() {
                "/echo" => match req.into_body().collect().await {
                    Ok(b) => Response::new(full(b.to_bytes())),
                    Err(e) => Response::builder()
                        .status(400)
                        .body(full(e.to_string()))
                        .unwrap(),
                },
                "/ignore" => Response::new(full("ignored")),
                "/stream" => {
                    let pieces = ["one ", "two ", "three"]
                        .map(|p| Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(p))));
                    Response::new(StreamBody::new(futures_util::stream::iter(pieces)).boxed())
                }
                "/up" => {
                    let on = req
                        .extensions()
                        .get::<floodgate_http1::OnUpgrade>()
                        .cloned()
                        .expect("an upgrade request carries OnUpgrade");
                    tokio::spawn(async move {
                        let mut up = on.upgraded().await.expect("upgraded");
                        let mut got = up.read_ahead.to_vec();
                        let mut buf = [0u8; 64];
                        while got.len() < 4 {
                            let n = up.io.read(&mut buf).await.unwrap();
                            got.extend_from_slice(&buf[..n]);
                        }
                        up.io.write_all(&got).await.unwrap();
                    });
                    Response::builder()
                        .status(101)
                        .header("connection", "upgrade")
                        .header("upgrade", "echo")
                        .body(full(""))
                        .unwrap()
                }
                _ => Response::new(full(format!("{} {path}", req.method()))),
            }
        })
    }

    fn refuse(&mut self, error: HeadError) -> Response<Body> {
        Response::builder()
            .status(error.status())
            .body(full(error.reason()))
            .unwrap()
    }
}

async fn serve(config: ServerConfig) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(Connection::new(s, Echo, config));
        }
    });
    addr
}

/// Sends `raw` and reads until the server closes (or `PATIENCE`).
async fn exchange(addr: std::net::SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `raw` and reads what arrives until `until` appears.
async fn read_until(s: &mut TcpStream, until: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains(until) {
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .expect("in time")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let addr = serve(ServerConfig::default()).await;
    let got = exchange(
        addr,
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let answers: Vec<&str> = got.split("HTTP/1.1 200 OK").skip(1).collect();
    assert_eq!(answers.len(), 3, "{got}");
    assert!(answers[0].ends_with("\r\n\r\nGET /a"), "{got}");
    assert!(answers[1].ends_with("\r\n\r\nhello"), "{got}");
    assert!(answers[2].contains("connection: close\r\n"), "{got}");
    assert!(answers[2].ends_with("\r\n\r\nGET /c"), "{got}");
}

#[tokio::test]
async fn chunked_both_ways() {
    let addr = serve(ServerConfig::default()).await;
    let got = exchange(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
    )
    .await;
    assert!(
        got.ends_with("content-length: 11\r\nconnection: close\r\n\r\nhello world"),
        "{got}"
    );
    let got = exchange(
        addr,
        b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        got.ends_with("transfer-encoding: chunked\r\nconnection: close\r\n\r\n4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n"),
        "{got}"
    );
}

#[tokio::test]
async fn http10_clients_get_close_delimited_or_kept_connections() {
    let addr = serve(ServerConfig::default()).await;
    let got = exchange(addr, b"GET /stream HTTP/1.0\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(
        got.ends_with("connection: close\r\n\r\none two three"),
        "{got}"
    );
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let first = read_until(&mut s, "GET /a").await;
    assert!(first.contains("connection: keep-alive\r\n"), "{first}");
    s.write_all(b"GET /b HTTP/1.0\r\n\r\n").await.unwrap();
    read_until(&mut s, "GET /b").await;
}

#[tokio::test]
async fn expect_100_continue_is_answered_when_the_body_is_read() {
    let addr = serve(ServerConfig::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await
    .unwrap();
    read_until(&mut s, "HTTP/1.1 100 Continue\r\n\r\n").await;
    s.write_all(b"hello").await.unwrap();
    read_until(&mut s, "\r\n\r\nhello").await;
    // A handler that answers without reading: no 100, and the connection is not reused.
    let got = exchange(
        addr,
        b"POST /ignore HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await;
    assert!(!got.contains("100 Continue"), "{got}");
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    assert!(got.contains("connection: close"), "{got}");
}

#[tokio::test]
async fn unread_bodies_keep_the_connection_only_when_already_buffered() {
    let addr = serve(ServerConfig::default()).await;
    let got = exchange(
        addr,
        b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 2, "{got}");
    assert!(got.ends_with("GET /next"), "{got}");
    // The body's rest has not arrived: the answer comes, then the connection closes.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\nabc")
        .await
        .unwrap();
    let got = read_until(&mut s, "ignored").await;
    assert!(got.contains("connection: close"), "{got}");
}

#[tokio::test]
async fn head_and_bodiless_statuses_carry_no_body() {
    let addr = serve(ServerConfig::default()).await;
    let got = exchange(
        addr,
        b"HEAD /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(got.ends_with("\r\n\r\n"), "{got:?}");
    assert!(
        got.contains("content-length: 6\r\n") || !got.contains("content-length"),
        "{got}"
    );
}

#[tokio::test]
async fn malformed_heads_are_refused_and_the_connection_closed() {
    let addr = serve(ServerConfig::default()).await;
    for (raw, status) in [
        (&b"GET / HTTP/1.1\r\nHost: x\r\nA : b\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"[..], "400"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n", "400"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "501"),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", "505"),
    ] {
        let got = exchange(addr, raw).await;
        assert!(got.starts_with(&format!("HTTP/1.1 {status} ")), "{got}");
        assert!(got.contains("connection: close"), "{got}");
        let answers = got.lines().filter(|l| l.starts_with("HTTP/1.1 ")).count();
        assert_eq!(answers, 1, "{got}");
    }
    let got = exchange(
        addr,
        format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(20_000)).as_bytes(),
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 414 "), "{got}");
    let got = exchange(
        addr,
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
            "a".repeat(20_000)
        )
        .as_bytes(),
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 431 "), "{got}");
}

#[tokio::test]
async fn a_broken_chunked_body_is_the_readers_error() {
    let addr = serve(ServerConfig::default()).await;
    let got = exchange(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX0\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 400 "), "{got}");
    assert!(got.contains("malformed body"), "{got}");
    assert!(got.contains("connection: close"), "{got}");
}

#[tokio::test]
async fn a_slow_head_is_cut_off_with_408() {
    let addr = serve(ServerConfig {
        header_read_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    })
    .await;
    let got = exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\n").await;
    assert!(got.starts_with("HTTP/1.1 408 "), "{got}");
}

#[tokio::test]
async fn an_upgrade_hands_over_the_connection_with_what_was_read_ahead() {
    let addr = serve(ServerConfig::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\nab")
        .await
        .unwrap();
    let head = read_until(&mut s, "\r\n\r\n").await;
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(head.contains("upgrade: echo\r\n"), "{head}");
    s.write_all(b"cd").await.unwrap();
    let mut rest = head.split_once("\r\n\r\n").unwrap().1.to_owned();
    while rest.len() < 4 {
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        rest.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert_eq!(rest, "abcd");
}

#[tokio::test]
async fn a_request_without_upgrade_leaves_later_bytes_to_the_parser() {
    // Upgrade asked, but the answer is not 101: what follows is read as the next request.
    let addr = serve(ServerConfig::default()).await;
    let got = exchange(
        addr,
        b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 2, "{got}");
    assert!(got.ends_with("GET /b"), "{got}");
}

/// Never answers; says when its answer is dropped.
struct Hang(tokio::sync::mpsc::UnboundedSender<()>);

/// Sends on drop.
struct Dropped(tokio::sync::mpsc::UnboundedSender<()>);

impl Drop for Dropped {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl Service for Hang {
    type Body = Body;
    type Future = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

    fn call(&mut self, _req: Request<IncomingBody>) -> Self::Future {
        let guard = Dropped(self.0.clone());
        Box::pin(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Response::new(full(""))
        })
    }

    fn refuse(&mut self, error: HeadError) -> Response<Body> {
        Echo.refuse(error)
    }
}

#[tokio::test]
async fn a_client_that_leaves_mid_request_cancels_its_answer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut dropped) = tokio::sync::mpsc::unbounded_channel();
    let client = async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
            .await
            .unwrap();
        s
    };
    let (accepted, s) = tokio::join!(listener.accept(), client);
    let conn = tokio::spawn(Connection::new(
        accepted.unwrap().0,
        Hang(tx),
        ServerConfig::default(),
    ));
    drop(s);
    tokio::time::timeout(Duration::from_secs(20), dropped.recv())
        .await
        .expect("the answer is dropped when the client leaves");
    tokio::time::timeout(Duration::from_secs(20), conn)
        .await
        .expect("the connection ends")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn an_idle_connection_closes_on_graceful_shutdown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (answered_tx, answered) = tokio::sync::oneshot::channel();
    let client = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let got = read_until(&mut s, "GET /a").await;
        answered_tx.send(()).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        got
    });
    let (s, _) = listener.accept().await.unwrap();
    let mut conn = Connection::new(s, Echo, ServerConfig::default());
    // Serve the one request, then ask for the close.
    tokio::select! {
        _ = &mut conn => panic!("ended early"),
        _ = answered => {}
    }
    conn.graceful_shutdown();
    tokio::time::timeout(Duration::from_secs(20), conn)
        .await
        .expect("closes")
        .unwrap();
    assert!(client.await.unwrap().contains("GET /a"));
}
