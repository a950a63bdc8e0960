//! Header handling on the proxy path: hop-by-hop fields, forwarding fields, request ids,
//! and HTTP/2 (h2c prior knowledge) on the same port.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

const ROUTES: &str = "  - { name: all, match: { path_prefix: / }, upstream: backend }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_are_removed_and_forwarding_fields_added() {
    let up = echo_upstream().await;
    let gw = Gateway::start(&config(up, ROUTES, ""));
    // A raw request, so the client library adds nothing of its own.
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let req = "GET /h HTTP/1.1\r\nHost: shop.test\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
               TE: trailers\r\nProxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\n\
               X-Forwarded-For: 203.0.113.7\r\nVia: 1.0 edge\r\nX-Request-Id: trace-abc\r\nX-Keep: yes\r\n\r\n";
    s.write_all(req.as_bytes()).await.unwrap();
    let text = read_response(&mut s).await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-request-id: trace-abc"),
        "request id echoed to the client: {head}"
    );
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    let h = &echo["headers"];
    for gone in [
        "x-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(h.get(gone).is_none(), "{gone} must not be forwarded: {h}");
    }
    assert_eq!(h["x-keep"], serde_json::json!(["yes"]));
    assert_eq!(
        h["host"],
        serde_json::json!(["shop.test"]),
        "the client's Host is kept"
    );
    assert_eq!(
        h["x-forwarded-for"],
        serde_json::json!(["203.0.113.7, 127.0.0.1"])
    );
    assert_eq!(h["x-forwarded-proto"], serde_json::json!(["http"]));
    assert_eq!(h["x-forwarded-host"], serde_json::json!(["shop.test"]));
    assert_eq!(
        h["forwarded"],
        serde_json::json!(["for=127.0.0.1;proto=http;host=\"shop.test\""])
    );
    assert_eq!(h["via"], serde_json::json!(["1.0 edge, 1.1 floodgate"]));
    assert_eq!(h["x-request-id"], serde_json::json!(["trace-abc"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_hop_by_hop_fields_are_removed() {
    let up = upstream(|_req| async {
        let mut r = http::Response::new(full("ok"));
        r.headers_mut()
            .insert("connection", "x-secret".parse().unwrap());
        r.headers_mut().insert("x-secret", "1".parse().unwrap());
        r.headers_mut()
            .insert("keep-alive", "timeout=9".parse().unwrap());
        r.headers_mut().insert("x-kept", "1".parse().unwrap());
        r
    })
    .await;
    let gw = Gateway::start(&config(up, ROUTES, ""));
    let (status, h, _) = get(&gw.url("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        h.get("x-secret").is_none() && h.get("keep-alive").is_none(),
        "{h:?}"
    );
    assert_eq!(h["x-kept"], "1");
    assert_eq!(h["via"], "1.1 floodgate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_generated_when_absent_or_malformed() {
    let up = echo_upstream().await;
    let gw = Gateway::start(&config(up, ROUTES, ""));
    let (_, h1, b1) = get(&gw.url("/")).await;
    let (_, h2, _) = get_with(&gw.url("/"), &[("x-request-id", "has space")]).await;
    let id1 = h1["x-request-id"].to_str().unwrap().to_string();
    let id2 = h2["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id1.len(), 32);
    assert_ne!(id1, id2);
    assert_ne!(id2, "has space");
    assert_eq!(
        json(&b1)["headers"]["x-request-id"],
        serde_json::json!([id1]),
        "upstream sees the same id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_on_the_same_port() {
    let up = echo_upstream().await;
    let gw = Gateway::start(&config(up, ROUTES, ""));
    let h2: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let resp = h2
        .request(
            Request::get(gw.url("/two?x=1"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echo = json(&body);
    assert_eq!(echo["uri"], "/two?x=1");
    assert_eq!(echo["version"], "HTTP/1.1", "upstream side speaks HTTP/1.1");
    assert_eq!(
        echo["headers"]["host"],
        serde_json::json!([gw.addr().to_string()]),
        ":authority becomes Host"
    );
    assert_eq!(echo["headers"]["via"], serde_json::json!(["2 floodgate"]));
}

/// Reads one response with a Content-Length body from a raw stream.
pub async fn read_response(s: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).to_string()
}
