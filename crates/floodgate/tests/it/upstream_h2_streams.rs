//! HTTP/2 to upstreams, stream by stream: bodies larger than every flow-control window,
//! trailers, a refused stream, an upload the client abandons, and a response shorter than
//! it declared. The upstreams are written with the h2 crate, so each frame is chosen.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::*;

/// An HTTP/2 server on loopback: each request stream goes to `handle`, with the number of
/// its connection (from 0).
async fn h2_server<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(usize, Request<RecvStream>, SendResponse<Bytes>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        let mut number = 0;
        while let Ok((tcp, _)) = listener.accept().await {
            let (handle, n) = (handle.clone(), number);
            number += 1;
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((req, respond))) = conn.accept().await {
                    tokio::spawn(handle(n, req, respond));
                }
            });
        }
    });
    addr
}

/// Reads a request body to its end, giving the window back as it goes.
async fn read_all(body: &mut RecvStream) -> Result<Vec<u8>, h2::Error> {
    let mut all = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        all.extend_from_slice(&chunk);
    }
    Ok(all)
}

/// The byte at `i` of the test pattern (not periodic in any window size).
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

fn patterned(len: usize) -> Bytes {
    (0..len).map(pattern).collect::<Vec<u8>>().into()
}

/// A gateway routing everything to the HTTP/2 upstream `up`.
fn gateway(up: SocketAddr) -> Gateway {
    Gateway::start(&format!(
        "listeners:
  - {{ name: public, address: \"127.0.0.1:0\", limits: {{ max_body_bytes: 64MiB }} }}
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ output: \"{{dir}}/access.log\" }}
upstreams:
  backend: {{ protocol: http2, targets: [ \"{up}\" ] }}
routes:
  - {{ match: {{ path_prefix: / }}, upstream: backend }}
"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_larger_than_every_window_pass_both_ways_intact() {
    // 12 MiB each way: past the stream windows (64 KiB default, 2 MiB the gateway's) and
    // the gateway's 5 MiB connection window, so both sides must hand window back.
    const SIZE: usize = 12 << 20;
    let up = h2_server(|_, req, mut respond| async move {
        let mut body = req.into_body();
        let got = read_all(&mut body).await.unwrap();
        let intact = got.len() == SIZE && got.iter().enumerate().all(|(i, b)| *b == pattern(i));
        let resp = Response::builder()
            .header("x-upload-intact", intact.to_string())
            .header("content-length", SIZE.to_string())
            .body(())
            .unwrap();
        let mut stream = respond.send_response(resp, false).unwrap();
        // h2 sends it as the gateway's window allows.
        stream.send_data(patterned(SIZE), true).unwrap();
    })
    .await;
    let gw = gateway(up);
    // Bounded: a side that never hands its window back stalls the exchange for good.
    let (status, headers, body) = tokio::time::timeout(
        PATIENCE,
        send(
            Request::post(gw.url("/big"))
                .body(Full::new(patterned(SIZE)))
                .unwrap(),
        ),
    )
    .await
    .expect("the exchange stalled: a flow-control window was not handed back");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-upload-intact"], "true");
    assert_eq!(body.len(), SIZE);
    assert!(body.iter().enumerate().all(|(i, b)| *b == pattern(i)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_from_an_http2_upstream_reach_an_http2_client() {
    // What gRPC needs: the status comes in trailers after the data.
    let up = h2_server(|_, _req, mut respond| async move {
        let resp = Response::builder()
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let mut stream = respond.send_response(resp, false).unwrap();
        stream
            .send_data(Bytes::from_static(b"hello"), false)
            .unwrap();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers.insert("grpc-message", "fine".parse().unwrap());
        stream.send_trailers(trailers).unwrap();
    })
    .await;
    let gw = gateway(up);
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let (mut client, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = client
        .send_request(
            Request::post("http://grpc.test/svc/Method")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "fine");
    assert_eq!(collected.to_bytes(), "hello");
}

/// A server that refuses (RST_STREAM REFUSED_STREAM) the first stream it is sent, once it
/// has `read_first` bytes of its body (or all of a shorter one), and answers the others with
/// the length of their body and whether it was the pattern; counts the streams it answered.
async fn refusing_server(read_first: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let streams = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    let up = h2_server(move |_, req, mut respond| {
        let (streams, answered) = (streams.clone(), answered.clone());
        async move {
            let mut body = req.into_body();
            if streams.fetch_add(1, Ordering::SeqCst) == 0 {
                let mut read = 0;
                while read < read_first {
                    match body.data().await {
                        Some(Ok(chunk)) => {
                            read += chunk.len();
                            let _ = body.flow_control().release_capacity(chunk.len());
                        }
                        _ => break,
                    }
                }
                respond.send_reset(h2::Reason::REFUSED_STREAM);
                return;
            }
            let got = read_all(&mut body).await.unwrap_or_default();
            answered.fetch_add(1, Ordering::SeqCst);
            let intact = got.iter().enumerate().all(|(i, b)| *b == pattern(i));
            let resp = Response::builder()
                .header("x-length", got.len().to_string())
                .header("x-intact", intact.to_string())
                .body(())
                .unwrap();
            let _ = respond.send_response(resp, true);
        }
    })
    .await;
    (up, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_goes_out_again_even_for_a_streamed_post() {
    // The server certainly did not process a refused stream (RFC 9113 §8.7), so even a
    // POST whose body is streamed (not held for retries) goes again, its body whole.
    let (up, answered) = refusing_server(0).await;
    let gw = gateway(up);
    let (status, headers, _) = send(
        Request::post(gw.url("/once"))
            .body(Full::new(patterned(40_000)))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-length"], "40000");
    assert_eq!(headers["x-intact"], "true");
    assert_eq!(answered.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_with_a_streamed_body_past_the_resend_limit_fails_cleanly() {
    // Past the 64 KiB kept for a resend the body is gone once sent: refused after 100 KB
    // of it, the request fails with 502 and is not sent again half-empty.
    let (up, answered) = refusing_server(100_000).await;
    let gw = gateway(up);
    let (status, headers, body) = send(
        Request::post(gw.url("/large"))
            .body(Full::new(patterned(1 << 20)))
            .unwrap(),
    )
    .await;
    assert_problem(
        status,
        &headers,
        &body,
        StatusCode::BAD_GATEWAY,
        "upstream-broken",
    );
    assert_eq!(answered.load(Ordering::SeqCst), 0);
    // The connection is still good for the next request.
    let (status, headers, _) = send(
        Request::post(gw.url("/small"))
            .body(Full::new(patterned(10)))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-length"], "10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_the_client_abandons_resets_the_upstream_stream() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let up = h2_server(move |_, req, _respond| {
        let tx = tx.clone();
        async move {
            let _ = tx.send("started".into());
            let mut body = req.into_body();
            let outcome = match read_all(&mut body).await {
                Ok(all) => format!("whole body of {}", all.len()),
                Err(e) => format!("reset: {:?}", e.reason()),
            };
            let _ = tx.send(outcome);
        }
    })
    .await;
    let gw = gateway(up);
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n")
            .await
            .unwrap();
        s.write_all(&[b'x'; 10_000]).await.unwrap();
        // Once the upstream has the stream, go away mid-body.
        let started = tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .expect("stream");
        assert_eq!(started.as_deref(), Some("started"));
    }
    let outcome = tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("the upstream learns the upload ended")
        .expect("outcome");
    assert_eq!(outcome, "reset: Some(CANCEL)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_shorter_than_its_declared_length_is_logged_as_broken() {
    let up = h2_server(|_, _req, mut respond| async move {
        let resp = Response::builder()
            .header("content-length", "100")
            .body(())
            .unwrap();
        let mut stream = respond.send_response(resp, false).unwrap();
        let _ = stream.send_data(Bytes::from_static(b"only ten.."), true);
    })
    .await;
    let gw = gateway(up);
    let answer = raw_exchange(gw.addr(), b"GET /short HTTP/1.1\r\nHost: a\r\n\r\n").await;
    // Never passed off as whole: a 502, or the head with its length of 100 and the ten
    // bytes, then the connection ends (or nothing, if hyper had not flushed yet).
    let lower = answer.to_ascii_lowercase();
    assert!(
        answer.is_empty()
            || answer.starts_with("HTTP/1.1 502")
            || (answer.starts_with("HTTP/1.1 200") && lower.contains("content-length: 100")),
        "{answer}"
    );
    let line = gw.access_line("/short").await;
    assert_eq!(line["error"], "upstream-broken", "{line}");
}
