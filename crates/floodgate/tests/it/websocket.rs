//! WebSocket tunnels through the gateway, with peers written by others: the Python
//! `websockets` library as origin (tests/it/peers/ws_echo.py) and as client
//! (tests/it/peers/ws_client.py), and raw handshakes for the route's policies.

use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// The `websockets` echo origin.
struct EchoOrigin {
    _peer: PythonPeer,
    addr: SocketAddr,
}

fn echo_origin() -> EchoOrigin {
    let (peer, _lines) = python_peer("ws_echo.py");
    EchoOrigin {
        addr: format!("127.0.0.1:{}", peer.port).parse().unwrap(),
        _peer: peer,
    }
}

/// A gateway with one route to `up`, its `websocket` settings given (YAML, may be empty).
fn gateway(up: SocketAddr, websocket: &str) -> Gateway {
    Gateway::start(&config(
        up,
        &format!(
            "  - name: ws\n    match: {{ path_prefix: / }}\n    upstream: backend\n{websocket}"
        ),
        "",
    ))
}

/// Sends a handshake (with `extra` header lines) and reads the answer's head; the socket
/// stays open for what follows.
async fn handshake(gw: &Gateway, extra: &str) -> (String, TcpStream) {
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let req = format!(
        "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(PATIENCE, async {
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
    })
    .await
    .expect("an answer in time");
    (String::from_utf8_lossy(&head).into_owned(), s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_conversation_goes_through_the_gateway() {
    let origin = echo_origin();
    let gw = gateway(origin.addr, "");
    let url = format!("ws://{}/chat", gw.addr());
    let v = python_client("ws_client.py", &[&url])
        .unwrap_or_else(|e| panic!("{e}\ngateway log:\n{}", gw.log()));
    assert_eq!(v["text"], "hello");
    assert_eq!(v["binary"], serde_json::json!([0, 1, 254, 255]));
    assert_eq!(v["fragmented"], "fragmented");
    assert_eq!(v["pong"], true);
    assert_eq!(v["big"], true, "a 1 MiB message went both ways whole");
    assert_eq!(
        v["close_code"], 4001,
        "the origin's close code reached the client"
    );
    let seen = &v["headers"];
    assert_eq!(seen["upgrade"], "websocket");
    assert!(seen["x-forwarded-for"].is_string(), "{seen}");
    assert!(seen["x-request-id"].is_string(), "{seen}");
    until("the tunnel is counted closed", || async {
        gw.metric("floodgate_websocket_tunnels_closed_total{route=\"ws\",reason=\"closed\"}")
            .await
            == 1.0
    })
    .await;
    let to_client = gw
        .metric("floodgate_websocket_bytes_total{route=\"ws\",direction=\"to-client\"}")
        .await;
    assert!(to_client > 1_048_576.0, "{}", gw.metrics().await);
    assert_eq!(
        gw.metric("floodgate_websocket_tunnels_open{route=\"ws\"}")
            .await,
        0.0
    );
    // One log line, written when the tunnel closed: its bytes and how it ended.
    let line = &gw.access_lines("\"tunnel\"", 1).await[0];
    assert_eq!(line["status"], 101, "{line}");
    assert_eq!(line["tunnel"], "closed", "{line}");
    assert!(line["bytes_sent"].as_u64() > Some(1_048_576), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_from_another_origin_is_refused() {
    let origin = echo_origin();
    let gw = gateway(
        origin.addr,
        "    websocket: { origins: [ \"https://app.example\" ] }",
    );
    let (head, _s) = handshake(&gw, "Origin: https://evil.example\r\n").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(head.contains("application/problem+json"), "{head}");
    let (head, _s) = handshake(&gw, "Origin: https://app.example\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (head, _s) = handshake(&gw, "").await;
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "not from a browser: {head}"
    );
    assert_eq!(
        gw.metric("floodgate_websocket_handshakes_refused_total{route=\"ws\",reason=\"origin\"}")
            .await,
        1.0
    );
}

/// With `limit` (YAML) on the route: one tunnel opens, the next is refused with
/// `refused` (the status line's start), and once the first closes a tunnel opens again.
async fn refused_until_one_closes(limit: &str, refused: &str) {
    let origin = echo_origin();
    let gw = gateway(origin.addr, &format!("    websocket: {{ {limit} }}"));
    let (head, first) = handshake(&gw, "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (head, _s) = handshake(&gw, "").await;
    assert!(head.starts_with(refused), "{head}");
    assert!(head.contains("application/problem+json"), "{head}");
    drop(first);
    let gw = Arc::new(gw);
    let opened = Arc::new(Mutex::new(Vec::new()));
    until("a tunnel is free again", || {
        let (gw, opened) = (gw.clone(), opened.clone());
        async move {
            let (head, s) = handshake(&gw, "").await;
            opened.lock().push(s);
            head.starts_with("HTTP/1.1 101")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_beyond_the_limit_are_refused_until_one_closes() {
    refused_until_one_closes("max_tunnels: 1", "HTTP/1.1 503").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed_and_a_busy_one_kept_to_its_lifetime() {
    let origin = echo_origin();
    let gw = gateway(origin.addr, "    websocket: { idle_timeout: 300ms }");
    let (head, mut s) = handshake(&gw, "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the idle tunnel was closed");
    until("the tunnel is counted closed for idling", || async {
        gw.metric("floodgate_websocket_tunnels_closed_total{route=\"ws\",reason=\"idle-timeout\"}")
            .await
            == 1.0
    })
    .await;
    let line = &gw.access_lines("\"tunnel\"", 1).await[0];
    assert_eq!(line["tunnel"], "idle-timeout", "{line}");

    let gw = gateway(
        origin.addr,
        "    websocket: { idle_timeout: 1h, max_lifetime: 300ms }",
    );
    let (head, mut s) = handshake(&gw, "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the tunnel was closed at its lifetime");
    until("the tunnel is counted closed at its lifetime", || async {
        gw.metric("floodgate_websocket_tunnels_closed_total{route=\"ws\",reason=\"max-lifetime\"}")
            .await
            == 1.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_the_upstream_declines_leaves_the_connection_speaking_http() {
    // An origin that answers every request 200 (no switch): the bytes after the handshake
    // are the next HTTP request, never tunnelled.
    let up = echo_upstream().await;
    let gw = gateway(up, "");
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\
          GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut all))
        .await
        .expect("answers in time")
        .unwrap();
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert!(text.contains("\"uri\":\"/after\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_with_websockets_off_refuses_handshakes() {
    let origin = echo_origin();
    let gw = gateway(origin.addr, "    websocket: { enabled: false }");
    let (head, _s) = handshake(&gw, "").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_page_on_another_origin_cannot_open_a_socket() {
    // Cross-site WebSocket hijacking: a page on any site can open a socket to the API
    // with the user's cookies; the gateway lets only the allowed page origin through.
    let (allowed, denied) = (html_page().await, html_page().await);
    let origin = echo_origin();
    let gw = gateway(
        origin.addr,
        &format!("    websocket: {{ origins: [ \"http://{allowed}\" ] }}"),
    );
    let r = browser_compare(
        "ws_browser.js",
        allowed,
        denied,
        &format!("ws://{}/chat", gw.addr()),
    );
    assert_eq!(r["allowed"]["echo"], "hello from the page", "{r}");
    assert_eq!(r["denied"]["opened"], false, "{r}");
    assert_eq!(r["denied"]["closed"], 1006, "the handshake failed: {r}");
    assert_eq!(
        gw.metric("floodgate_websocket_handshakes_refused_total{route=\"ws\",reason=\"origin\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_http2_reaches_an_http1_origin() {
    // RFC 8441: an HTTP/2 client opens the socket with an extended CONNECT; the gateway
    // makes the HTTP/1.1 handshake to the origin itself (its own key, the answer checked)
    // and tunnels the stream's bytes.
    use bytes::Bytes;
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let origin = echo_origin();
    let gw = gateway(origin.addr, "");
    let tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let connect = || {
        let mut req = http::Request::connect(format!("http://{}/chat", gw.addr()))
            .header("sec-websocket-version", "13")
            .body(Empty::<Bytes>::new())
            .unwrap();
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        req
    };
    // The server's SETTINGS (which allow extended CONNECT) come first on the connection:
    // once a plain request has been answered, they have arrived.
    let plain = http::Request::get(format!("http://{}/", gw.addr()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let _answered = sender.send_request(plain).await;
    let resp = sender
        .send_request(connect())
        .await
        .expect("extended CONNECT");
    assert_eq!(resp.status(), 200, "{:?}", resp.headers());
    assert!(resp.headers().get("sec-websocket-accept").is_none());
    let mut io = TokioIo::new(hyper::upgrade::on(resp).await.expect("the stream"));
    // A masked text frame, "hello" (a client's frames are masked).
    let mask = [7u8, 1, 9, 3];
    let mut frame = vec![0x81, 0x80 | 5];
    frame.extend_from_slice(&mask);
    frame.extend(b"hello".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tokio::io::AsyncWriteExt::write_all(&mut io, &frame)
        .await
        .unwrap();
    let mut back = [0u8; 7];
    tokio::time::timeout(
        PATIENCE,
        tokio::io::AsyncReadExt::read_exact(&mut io, &mut back),
    )
    .await
    .expect("the echo in time")
    .unwrap();
    assert_eq!(&back, b"\x81\x05hello", "the origin's echo, unmasked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_leaves_open_tunnels_open() {
    let origin = echo_origin();
    let gw = gateway(origin.addr, "");
    let (head, mut s) = handshake(&gw, "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // A new configuration without the route: new handshakes find none, the open tunnel
    // stays on the one it started on.
    gw.write_config(&config(
        origin.addr,
        "  - name: other\n    match: { path: /other }\n    upstream: backend",
        "",
    ));
    gw.wait_log("\"configuration reloaded\"")
        .expect("the reload happens");
    let (head, _gone) = handshake(&gw, "").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let mask = [3u8, 1, 4, 1];
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend(b"ok".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut back))
        .await
        .expect("the echo in time")
        .unwrap();
    assert_eq!(&back, b"\x81\x02ok", "the tunnel outlived the reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_handshake_authenticates_with_a_token_in_the_query() {
    // Browsers cannot set headers on a WebSocket: the token comes as `?access_token=`,
    // is checked like a bearer token, kept out of the log and not passed on.
    let origin = echo_origin();
    let token = run_python(
        "import jwt, time; print(jwt.encode({'sub': 'alice', 'exp': int(time.time()) + 600}, \
         'a-shared-secret-of-at-least-32-bytes!', algorithm='HS256'))",
    );
    let gw = gateway(
        origin.addr,
        "    auth:
      hide_credentials: true
      jwt:
        query: access_token
        keys: [ { algorithm: HS256, secret: \"a-shared-secret-of-at-least-32-bytes!\" } ]",
    );
    let (head, _s) = handshake(&gw, "").await;
    assert!(head.starts_with("HTTP/1.1 401"), "no token: {head}");
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(
        format!(
            "GET /chat?room=1&access_token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "an answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Ask the origin what target it got: the token never reached it.
    let mask = [9u8, 8, 7, 6];
    let mut frame = vec![0x81, 0x80 | 4];
    frame.extend_from_slice(&mask);
    frame.extend(b"path".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).await.unwrap();
    let mut first = [0u8; 2];
    s.read_exact(&mut first).await.unwrap();
    let mut path = vec![0u8; usize::from(first[1] & 0x7f)];
    s.read_exact(&mut path).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&path), "/chat?room=1");
    drop(s);
    let line = &gw.access_lines("\"tunnel\"", 1).await[0];
    assert_eq!(line["path"], "/chat?room=1&access_token=REDACTED", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_beyond_its_tunnels_is_refused() {
    refused_until_one_closes("max_tunnels_per_client: 1", "HTTP/1.1 429").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_counting_the_tunnels_open() {
    let origin = echo_origin();
    let gw = gateway(origin.addr, "    websocket: { max_tunnels: 1 }");
    let (head, _first) = handshake(&gw, "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // The same route with another setting: the tunnel opened before still counts.
    gw.write_config(&config(
        origin.addr,
        "  - name: ws\n    match: { path_prefix: / }\n    upstream: backend\n    websocket: { max_tunnels: 1, idle_timeout: 10m }",
        "",
    ));
    gw.wait_log("\"configuration reloaded\"")
        .expect("the reload happens");
    let (head, _s) = handshake(&gw, "").await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
}
