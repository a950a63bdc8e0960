//! The framing corpus (crates/floodgate-http1/tests/corpus/) through the real gateway: for
//! each case, what the client gets and exactly what reaches the origin. The origin logs
//! the raw bytes it reads and parses them with a strict parser; a refused request must
//! leave it untouched, an ambiguous one must be refused or arrive with one reading only,
//! and nothing hidden behind a request may ever arrive as a request of its own.

use std::sync::Arc;

use bytes::Bytes;
use floodgate_http1::chunked::{ChunkLimits, decode_in_pieces};
use floodgate_http1::head::{HeadLimits, parse_request};
use floodgate_http1::{Connection, Framing, HeadError, IncomingBody, ServerConfig, Service};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// What the origin has seen: every byte read (per connection, in the order they were
/// accepted), the connections still open, and every request it parsed.
#[derive(Default)]
pub struct Seen {
    pub conns: Vec<Vec<u8>>,
    pub open: usize,
    /// Each request's target and body.
    pub requests: Vec<(String, Bytes)>,
}

/// A socket that copies what it reads into its connection's log.
struct Logged {
    inner: TcpStream,
    seen: Arc<Mutex<Seen>>,
    conn: usize,
}

impl AsyncRead for Logged {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = buf.filled()[before..].to_vec();
        let conn = self.conn;
        self.seen.lock().conns[conn].extend_from_slice(&new);
        polled
    }
}

impl AsyncWrite for Logged {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl floodgate_http1::Transport for Logged {}

/// Records each request it parsed (target and body) and answers `ok`.
struct Origin(Arc<Mutex<Seen>>);

impl Service for Origin {
    type Body = Full<Bytes>;
    type Future = std::pin::Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

    fn call(&mut self, req: Request<IncomingBody>) -> Self::Future {
        let seen = self.0.clone();
        Box::pin(async move {
            let target = req.uri().to_string();
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return Response::builder()
                        .status(400)
                        .body(Full::default())
                        .unwrap();
                }
            };
            seen.lock().requests.push((target, body));
            Response::new(Full::new(Bytes::from_static(b"ok")))
        })
    }

    fn refuse(&mut self, error: HeadError) -> Response<Full<Bytes>> {
        Response::builder()
            .status(error.status())
            .body(Full::default())
            .unwrap()
    }
}

/// An origin on the engine's own server that logs what it reads and records each request.
pub async fn origin() -> (std::net::SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            // Counted open as it is accepted, before its task runs.
            let conn = {
                let mut l = log.lock();
                l.conns.push(Vec::new());
                l.open += 1;
                l.conns.len() - 1
            };
            let io = Logged {
                inner: s,
                seen: log.clone(),
                conn,
            };
            let served = Connection::new(io, Origin(log.clone()), ServerConfig::default());
            let log = log.clone();
            tokio::spawn(async move {
                let _ended = served.await;
                log.lock().open -= 1;
            });
        }
    });
    (addr, seen)
}

/// A body for a guardian case (its heads come without one): what the framing asks for.
pub fn body_for(raw: &[u8]) -> Vec<u8> {
    let limits = HeadLimits {
        max_bytes: 64 * 1024,
        max_fields: 100,
    };
    match parse_request(raw, &limits) {
        Ok(Some((head, _))) => match head.framing {
            Framing::Length(n) => vec![b'a'; usize::try_from(n).unwrap()],
            Framing::Chunked => b"0\r\n\r\n".to_vec(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Whether a strict parser reads `raw` (what the origin got for one case) as exactly one
/// request, with no field another parser could take for a framing field.
fn one_clean_request(raw: &[u8]) -> bool {
    let limits = HeadLimits::default();
    let Ok(Some((head, len))) = parse_request(raw, &limits) else {
        return false;
    };
    let rest = &raw[len..];
    let used = match head.framing {
        Framing::Empty => 0,
        Framing::Length(n) => usize::try_from(n).unwrap(),
        Framing::Chunked => match decode_in_pieces(rest, rest.len(), ChunkLimits::default()).used {
            Some(used) => used,
            None => return false,
        },
        Framing::UntilClose => return false,
    };
    used == rest.len()
}

/// Sends one case on a fresh connection; the status the client got (0: none).
async fn send(gw: &Gateway, raw: &[u8], name: &str) -> u16 {
    status_of(&answer(gw, raw, name).await)
}

/// The status of an answer (0: none).
pub fn status_of(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Sends one case on a fresh connection; what the client got (empty: nothing).
pub async fn answer(gw: &Gateway, raw: &[u8], name: &str) -> String {
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let _ = s.write_all(raw).await;
    // The answer to a HEAD is its head alone, whatever its Content-Length says.
    if raw.starts_with(b"HEAD ") {
        tokio::time::timeout(PATIENCE, read_head(&mut s)).await
    } else {
        tokio::time::timeout(PATIENCE, crate::headers::read_response(&mut s)).await
    }
    .unwrap_or_else(|_| panic!("{name}: no answer in time"))
}

/// Reads a response head (through its blank line), or what came before the close.
async fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match tokio::io::AsyncReadExt::read(s, &mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The cases of a corpus file (crates/floodgate-http1/tests/corpus/).
pub fn corpus(file: &str) -> Vec<floodgate_http1::corpus::Case> {
    let path = format!(
        "{}/../floodgate-http1/tests/corpus/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    floodgate_http1::corpus::parse(&std::fs::read_to_string(path).unwrap())
}

/// A gateway in front of `up` that keeps no idle upstream connections: each exchange has
/// a connection of its own, which the gateway closes when it is done with it, so the
/// origin can tell when a case is over.
fn unpooled_gateway(up: std::net::SocketAddr) -> Gateway {
    Gateway::start(
        &config(
            up,
            "  - match: { path_prefix: / }\n    upstream: backend",
            "",
        )
        .replace("    targets:", "    max_idle_per_target: 0\n    targets:"),
    )
}

/// Runs every case of a corpus file through the gateway and checks each verdict.
async fn run(file: &str) -> usize {
    let (up, seen) = origin().await;
    let gw = unpooled_gateway(up);
    let mut count = 0;
    for (i, case) in corpus(file).iter().enumerate() {
        let (label, name) = (case.label.as_str(), case.name.as_str());
        let mut raw = case.raw.clone();
        if file == "desync-guardian.txt" {
            raw.extend(body_for(&raw));
        }
        let (conns_before, requests_before) = {
            let s = seen.lock();
            (s.conns.len(), s.requests.len())
        };
        let status = send(&gw, &raw, name).await;
        // The case is over at the origin once a marker sent after it has been answered
        // and every connection is closed: a connection the gateway opened for the case
        // (even one it gave up on when the client's body broke) was accepted before the
        // marker's (the accept queue is in order), and closes only after its last byte
        // was read.
        let marker = format!("/marker-{i}");
        let answer = raw_exchange(
            gw.addr(),
            format!("GET {marker} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "{name}: marker: {answer}"
        );
        let settled = seen.clone();
        let marker_seen = marker.clone();
        until("the case is over at the origin", move || {
            let s = settled.lock();
            let over = s.open == 0 && s.requests.iter().any(|(t, _)| *t == marker_seen);
            async move { over }
        })
        .await;
        let s = seen.lock();
        let got: Vec<u8> = s.conns[conns_before..]
            .iter()
            .filter(|c| !c.windows(marker.len()).any(|w| w == marker.as_bytes()))
            .flatten()
            .copied()
            .collect();
        let got = &got[..];
        let requests: Vec<&(String, Bytes)> = s.requests[requests_before..]
            .iter()
            .filter(|(t, _)| *t != marker)
            .collect();
        let refused = (400..600).contains(&status) && got.is_empty();
        assert!(
            !String::from_utf8_lossy(got).contains("/smuggled"),
            "{name}: a hidden request reached the origin: {:?}",
            String::from_utf8_lossy(got)
        );
        match label {
            "severe" | "refuse" => assert!(
                refused,
                "{name}: must be refused; client got {status}, origin got {:?}",
                String::from_utf8_lossy(got)
            ),
            "ambiguous" | "acceptable" => assert!(
                refused || (status == 200 && requests.len() == 1 && one_clean_request(got)),
                "{name}: refused or one clean request; client got {status}, origin got {:?}",
                String::from_utf8_lossy(got)
            ),
            "compliant" => assert!(
                refused || (status == 200 && requests.len() == 1 && one_clean_request(got)),
                "{name}: client got {status}, origin got {:?}",
                String::from_utf8_lossy(got)
            ),
            "bad-body" => assert_eq!(status, 400, "{name}"),
            "pass" => {
                assert_eq!(status, 200, "{name}");
                assert_eq!(requests.len(), 1, "{name}");
                let want = case.body.clone().unwrap_or_default();
                assert_eq!(&requests[0].1[..], &want[..], "{name}");
                assert!(
                    one_clean_request(got),
                    "{name}: {:?}",
                    String::from_utf8_lossy(got)
                );
            }
            other => panic!("unknown label {other}"),
        }
        count += 1;
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desync_guardian_corpus_through_the_gateway() {
    assert_eq!(run("desync-guardian.txt").await, 159);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_payloads_through_the_gateway() {
    assert!(run("smuggling.txt").await >= 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_behind_a_cache_hit_is_not_read_as_a_request() {
    // Pingora's CVE-2025-4366: a request answered from the cache without reading its body
    // left the body to be parsed as the next request.
    let (up, seen) = origin().await;
    let gw = Gateway::start(&config(
        up,
        "  - match: { path_prefix: / }\n    upstream: backend\n    cache: { force_ttl: 60s }",
        "",
    ));
    assert_eq!(
        send(&gw, b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n", "fill").await,
        200
    );
    let hidden = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let mut raw = format!(
        "GET /c HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        hidden.len()
    )
    .into_bytes();
    raw.extend_from_slice(hidden);
    raw.extend_from_slice(b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(&raw).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(
        PATIENCE,
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut all),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    let s = seen.lock();
    let targets: Vec<&str> = s.requests.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(targets, ["/c", "/after"], "the body was never a request");
}

/// The h11 origin (tests/it/peers/h11_origin.py), and the records it printed so far.
struct H11 {
    peer: PythonPeer,
    records: Arc<Mutex<Vec<serde_json::Value>>>,
}

fn h11_origin() -> H11 {
    let (peer, lines) = python_peer("h11_origin.py");
    let records = Arc::new(Mutex::new(Vec::new()));
    let sink = records.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock()
                .push(serde_json::from_str(&line).expect("a JSON record"));
        }
    });
    H11 { peer, records }
}

/// The corpus through the gateway to an origin whose parser is not ours (h11): whatever
/// the gateway forwards, h11 reads as the request the gateway read (one request, the
/// body it had), never as a parse error, never as a request hidden behind another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_parser_behind_the_gateway_reads_what_it_read() {
    let origin = h11_origin();
    let up: std::net::SocketAddr = format!("127.0.0.1:{}", origin.peer.port).parse().unwrap();
    // A case is over once every connection the origin accepted has closed.
    let gw = unpooled_gateway(up);
    let mut compared = 0;
    for (n, file) in ["desync-guardian.txt", "smuggling.txt"].iter().enumerate() {
        let path = format!(
            "{}/../floodgate-http1/tests/corpus/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let cases = floodgate_http1::corpus::parse(&std::fs::read_to_string(path).unwrap());
        for (i, case) in cases.iter().enumerate() {
            let mut raw = case.raw.clone();
            if *file == "desync-guardian.txt" {
                raw.extend(body_for(&raw));
            }
            let before = origin.records.lock().len();
            let status = send(&gw, &raw, &case.name).await;
            // A marker request after each case: every record before its own is this case's.
            let marker = format!("/marker-{n}-{i}");
            let answer = raw_exchange(
                gw.addr(),
                format!("GET {marker} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            let records = origin.records.clone();
            let marker_seen = marker.clone();
            until("the case is over at the h11 origin", move || {
                let records = records.lock();
                let seen = records
                    .iter()
                    .skip(before)
                    .any(|v| v["target"] == marker_seen.as_str());
                let accepted = records
                    .iter()
                    .filter(|v| v.get("accepted").is_some())
                    .count();
                let closed = records.iter().filter(|v| v.get("closed").is_some()).count();
                let over = seen && accepted == closed;
                async move { over }
            })
            .await;
            let records = origin.records.lock();
            let seen: Vec<&serde_json::Value> = records
                .iter()
                .skip(before)
                .filter(|v| v["target"] != marker.as_str())
                .filter(|v| v.get("accepted").is_none() && v.get("closed").is_none())
                .collect();
            for v in &seen {
                // A body whose framing broke on the client's side was being streamed: the
                // origin sees that request cut off (its connection closed), nothing more.
                let cut_off = case.label == "bad-body"
                    && v["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("incomplete"));
                assert!(
                    v.get("error").is_none() || cut_off,
                    "{}: h11 could not parse what it got: {v}",
                    case.name
                );
                assert!(
                    !v["target"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("smuggled"),
                    "{}: {v}",
                    case.name
                );
            }
            match case.label.as_str() {
                "severe" | "refuse" => assert!(seen.is_empty(), "{}: {seen:?}", case.name),
                "bad-body" => assert!(
                    seen.iter().all(|v| v.get("error").is_some()),
                    "{}: a broken body reached the origin whole: {seen:?}",
                    case.name
                ),
                "pass" => {
                    assert_eq!(seen.len(), 1, "{}", case.name);
                    let want = String::from_utf8(case.body.clone().unwrap_or_default()).unwrap();
                    assert_eq!(seen[0]["body"], want.as_str(), "{}", case.name);
                }
                _ => assert!(
                    seen.len() <= 1 && (seen.len() == 1) == (status == 200),
                    "{}: status {status}, h11 saw {seen:?}",
                    case.name
                ),
            }
            compared += 1;
        }
    }
    assert!(compared > 200, "{compared}");
}
