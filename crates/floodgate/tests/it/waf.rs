//! The WAF through the binary: attacks in the query, a header and the body are refused in
//! block mode and only counted in monitor mode; benign requests, bodies included, pass
//! unchanged.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;

use crate::support::*;

async fn post(url: &str, body: &'static str) -> (StatusCode, http::HeaderMap, Bytes) {
    send(
        Request::post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_and_monitor() {
    let up = upstream(|req: http::Request<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt;
        let body = req.into_body().collect().await.unwrap().to_bytes();
        http::Response::new(full(body))
    })
    .await;
    let gw = gateway_with(
        &format!("  app:\n    targets: [ \"{up}\" ]"),
        "  - name: shop
    match: { path_prefix: /shop }
    upstream: app
    waf: {}
  - name: watched
    match: { path_prefix: /watched }
    upstream: app
    waf: { mode: monitor }",
    );
    let shop = gw.url("/shop/search");
    for (q, what) in [
        ("?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", "xss in the query"),
        ("?id=1%27%20OR%20%271%27%3D%271", "sqli in the query"),
    ] {
        let (s, h, b) = get(&format!("{shop}{q}")).await;
        assert_problem(s, &h, &b, StatusCode::FORBIDDEN, "waf-blocked");
        let _ = what;
    }
    let (s, h, b) = get_with(&shop, &[("user-agent", "sqlmap' UNION SELECT 1,2--")]).await;
    assert_problem(s, &h, &b, StatusCode::FORBIDDEN, "waf-blocked");
    let (s, h, b) = post(&shop, "name=x&bio=%3Cimg+src%3Dx+onerror%3Dalert%281%29%3E").await;
    assert_problem(s, &h, &b, StatusCode::FORBIDDEN, "waf-blocked");
    // Benign requests pass, the body unchanged.
    let (s, _, _) = get(&format!("{shop}?q=rock+and+roll&who=O%27Brien")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, b) = post(&shop, "comment=I+can%27t+select+more+than+one+option").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(&b[..], b"comment=I+can%27t+select+more+than+one+option");
    // Monitor mode: the attack passes, and is counted.
    let (s, _, _) = get(&gw.url("/watched?q=%3Cscript%3E")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        gw.metric("floodgate_waf_matches_total{route=\"watched\",rule=\"xss\",mode=\"monitor\"}")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric("floodgate_waf_matches_total{route=\"shop\",rule=\"sqli\",mode=\"block\"}")
            .await,
        2.0
    );
    gw.wait_log("\"WAF match\"").expect("matches are logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_json_and_chunked_bodies_are_inspected() {
    let up = upstream(|req: http::Request<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt;
        let body = req.into_body().collect().await.unwrap().to_bytes();
        http::Response::new(full(body))
    })
    .await;
    let gw = gateway_with(
        &format!("  app:\n    targets: [ \"{up}\" ]"),
        "  - name: shop
    match: { path_prefix: /shop }
    upstream: app
    waf: { inspect_body: 1KiB }",
    );
    let shop = gw.url("/shop/comments");
    // The classic tautology with empty strings, in the query.
    let (s, h, b) = get(&format!("{shop}?user=x%27%20OR%20%27%27%3D%27")).await;
    assert_problem(s, &h, &b, StatusCode::FORBIDDEN, "waf-blocked");
    // JSON string escapes hide nothing.
    let (s, h, b) = send(
        Request::post(&shop)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"comment":"\u003cscript\u003ealert(1)\u003c/script\u003e"}"#,
            )))
            .unwrap(),
    )
    .await;
    assert_problem(s, &h, &b, StatusCode::FORBIDDEN, "waf-blocked");
    // A chunked body (no Content-Length) is read within the same bound and inspected.
    let chunked = |text: &'static str| {
        let mut raw = String::from(
            "POST /shop/comments HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        for piece in text.as_bytes().chunks(7) {
            raw.push_str(&format!(
                "{:x}\r\n{}\r\n",
                piece.len(),
                String::from_utf8_lossy(piece)
            ));
        }
        raw.push_str("0\r\n\r\n");
        raw
    };
    let answer = raw_exchange(gw.addr(), chunked("q=<script>alert(1)</script>").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let answer = raw_exchange(gw.addr(), chunked("comment=rock and roll").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("comment=rock and roll"), "{answer}");
    // Past the bound it is not inspected, and reaches the upstream whole.
    let long: &'static str = Box::leak(format!("{}<script>", "a".repeat(2000)).into_boxed_str());
    let answer = raw_exchange(gw.addr(), chunked(long).as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{}",
        &answer[..100.min(answer.len())]
    );
    assert!(answer.ends_with(long), "the whole body, in order");
}
