//! The host a request names is checked before it is routed or forwarded (RFC 9112 §3.2,
//! RFC 9113 §8.3.1): one valid `Host` (a name or IP literal, an optional port), the
//! target's authority in its place when there is one, never userinfo. Anything else is
//! 400 and reaches no upstream.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::*;

/// A gateway in front of an echo upstream that counts what reaches it.
async fn counted() -> (Gateway, Arc<AtomicUsize>) {
    let arrivals = Arc::new(AtomicUsize::new(0));
    let seen = arrivals.clone();
    let counter = upstream(move |req: Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::Relaxed);
            let host = req
                .headers()
                .get("host")
                .map(|h| h.to_str().unwrap_or("?").to_owned());
            let forwarded = req
                .headers()
                .get("x-forwarded-host")
                .map(|h| h.to_str().unwrap_or("?").to_owned());
            json_response(
                StatusCode::OK,
                &serde_json::json!({ "host": host, "x-forwarded-host": forwarded }),
            )
        }
    })
    .await;
    let gw = Gateway::start(&config(
        counter,
        "  - match: { path_prefix: / }\n    upstream: backend",
        "",
    ));
    (gw, arrivals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_hosts_are_400_and_reach_no_upstream() {
    let (gw, arrivals) = counted().await;
    for host in [
        "e7-host.test/evil",
        "user@e7-host.test",
        "e7 host.test",
        ":abc",
        ":99999",
        "a:80:80",
        "\"quoted\".test",
        "a\"b.test",
    ] {
        let answer = raw_exchange(
            gw.addr(),
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{host:?}: {answer}");
        assert!(
            answer.contains("urn:floodgate:problem:bad-request"),
            "{answer}"
        );
    }
    let twice = raw_exchange(
        gw.addr(),
        b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(twice.starts_with("HTTP/1.1 400"), "{twice}");
    let userinfo = raw_exchange(
        gw.addr(),
        b"GET http://user@other.test/x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(userinfo.starts_with("HTTP/1.1 400"), "{userinfo}");
    assert_eq!(arrivals.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_target_names_the_host() {
    let (gw, _) = counted().await;
    let answer = raw_exchange(
        gw.addr(),
        b"GET http://Other.test:8080/x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = json(&Bytes::from(
        answer.split_once("\r\n\r\n").unwrap().1.to_owned(),
    ));
    assert_eq!(body["host"], "Other.test:8080");
    assert_eq!(body["x-forwarded-host"], "Other.test:8080");
}

/// Sends `uri` over HTTP/2 with prior knowledge, with `host` as a `Host` field too.
async fn h2_status(gw: &Gateway, uri: &str, host: Option<&str>) -> StatusCode {
    let stream = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = Request::get(uri);
    if let Some(h) = host {
        req = req.header("host", h);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_with_userinfo_or_another_host_is_400() {
    let (gw, arrivals) = counted().await;
    let port = gw.addr().port();
    assert_eq!(
        h2_status(&gw, &format!("http://user@127.0.0.1:{port}/x"), None).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        h2_status(
            &gw,
            &format!("http://127.0.0.1:{port}/x"),
            Some("other.test")
        )
        .await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(arrivals.load(Ordering::Relaxed), 0);
    assert_eq!(
        h2_status(&gw, &format!("http://127.0.0.1:{port}/x"), None).await,
        StatusCode::OK
    );
}
