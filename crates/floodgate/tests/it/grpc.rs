//! gRPC through the gateway, with peers written by others: a grpcio server
//! (tests/it/peers/grpc_server.py) behind an `http2` upstream and a grpcio client
//! (tests/it/peers/grpc_client.py) on the h2c listener.

use crate::support::*;

/// A gateway with one route for the `test.Echo` service (`extra`: more of the route, YAML
/// flow mapping entries) to the grpcio server on `port`.
fn gateway(port: u16, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "listeners: [ {{ name: public, address: \"127.0.0.1:0\" }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ enabled: false }}
upstreams:
  grpc: {{ protocol: http2, targets: [ \"127.0.0.1:{port}\" ] }}
routes:
  - {{ name: echo, match: {{ path_prefix: /test.Echo/ }}, upstream: grpc{extra} }}
"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_of_every_kind_go_through_the_gateway() {
    let (server, _lines) = python_peer("grpc_server.py");
    let gw = gateway(server.port, "");
    let addr = gw.addr().to_string();
    let v = python_client("grpc_client.py", &[&addr])
        .unwrap_or_else(|e| panic!("{e}\ngateway log:\n{}", gw.log()));
    assert_eq!(v["unary"], "hello", "{v}");
    assert_eq!(v["big"], 3_000_000, "a 3 MB message each way: {v}");
    assert_eq!(v["server_stream"], serde_json::json!(["a", "b", "c"]));
    assert_eq!(v["client_stream"], "abc");
    assert_eq!(v["bidi"], serde_json::json!(["1", "2", "3"]));
    assert_eq!(
        v["fail"],
        serde_json::json!({"code": "NOT_FOUND", "message": "no such thing"}),
        "the server's status and message arrive in the trailers"
    );
    assert_eq!(v["trailers"]["x-trace"], "t1", "metadata both ways: {v}");
    assert!(v["trailers"]["x-request-id"].is_string(), "{v}");
    assert_eq!(v["deadline"]["code"], "DEADLINE_EXCEEDED");
    assert_eq!(v["unimplemented"]["code"], "UNIMPLEMENTED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_refusals_are_grpc_statuses() {
    let (server, _lines) = python_peer("grpc_server.py");
    let gw = gateway(
        server.port,
        ", rate_limits: [ { algorithm: fixed_window, rate: 1/1h, key: [ client_ip ] } ]",
    );
    let addr = gw.addr().to_string();
    let v = python_client("grpc_client.py", &[&addr, "unary,unary_again,no_route"])
        .unwrap_or_else(|e| panic!("{e}\ngateway log:\n{}", gw.log()));
    assert_eq!(v["unary"], "hello", "{v}");
    assert_eq!(v["unary_again"]["code"], "RESOURCE_EXHAUSTED", "{v}");
    assert!(
        v["unary_again"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("rate limit")),
        "{v}"
    );
    assert_eq!(v["no_route"]["code"], "UNIMPLEMENTED", "{v}");
    assert_eq!(v["no_route"]["message"], "No route matches this request.");
    // Counted as the refusals they are.
    assert_eq!(
        gw.metric("floodgate_requests_total{route=\"echo\",class=\"4xx\"}")
            .await,
        1.0,
        "{}",
        gw.metrics().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_grpc_timeout_is_the_gateways_deadline_too() {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    // An HTTP/2 server that takes calls and never answers (nor reads grpc-timeout).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let svc = hyper::service::service_fn(|_req| async {
                std::future::pending::<Result<http::Response<Full<Bytes>>, std::convert::Infallible>>()
                    .await
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc),
            );
        }
    });
    let gw = gateway(port, "");
    let h2: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let call = http::Request::post(gw.url("/test.Echo/Slow"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let resp = tokio::time::timeout(PATIENCE, h2.request(call))
        .await
        .expect("the gateway answers at the call's deadline")
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_grpc_server_trips_the_breaker_and_a_callers_mistakes_do_not() {
    // gRPC failures come as HTTP 200 with a grpc-status: the breaker reads the status.
    let (server, _lines) = python_peer("grpc_server.py");
    let gw = gateway(
        server.port,
        ", circuit_breaker: { consecutive_failures: 2, open_for: 60s }",
    );
    let addr = gw.addr().to_string();
    let calls = [
        // The caller's mistakes, as many as it likes: the server is fine.
        "Fail:NOT_FOUND:no",
        "Fail:INVALID_ARGUMENT:bad",
        "Fail:PERMISSION_DENIED:no",
        "Unary:still fine",
        // The server failing twice in a row.
        "Fail:UNAVAILABLE:down",
        "Fail:INTERNAL:broken",
        "Unary:after",
    ]
    .join(",");
    let v = python_client("grpc_client.py", &[&addr, "seq", &calls])
        .unwrap_or_else(|e| panic!("{e}\ngateway log:\n{}", gw.log()));
    let seq = v["seq"].as_array().expect("answers");
    let codes: Vec<&str> = seq
        .iter()
        .map(|a| a["code"].as_str().unwrap_or("OK"))
        .collect();
    assert_eq!(
        codes,
        [
            "NOT_FOUND",
            "INVALID_ARGUMENT",
            "PERMISSION_DENIED",
            "OK",
            "UNAVAILABLE",
            "INTERNAL",
            "UNAVAILABLE"
        ],
        "{v}"
    );
    assert!(
        seq[6]["message"]
            .as_str()
            .is_some_and(|m| m.contains("circuit breaker")),
        "the last call was refused by the open breaker: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_clients_reach_a_grpc_server() {
    let (server, _lines) = python_peer("grpc_server.py");
    let gw = gateway(server.port, "");
    let url = format!("http://{}", gw.addr());
    let v = python_client("grpc_web_client.py", &[&url])
        .unwrap_or_else(|e| panic!("{e}\ngateway log:\n{}", gw.log()));
    assert_eq!(v["unary"], "hello web", "{v}");
    assert_eq!(
        v["server_stream"],
        serde_json::json!(["x", "y", "z"]),
        "{v}"
    );
    assert_eq!(
        v["fail"],
        serde_json::json!({"code": "NOT_FOUND", "message": "nothing here"}),
        "{v}"
    );
    assert_eq!(v["no_route"]["code"], "UNIMPLEMENTED", "{v}");

    // The text form, by hand: base64 both ways, the trailers as the body's last frame.
    use base64ct::Encoding;
    let call = base64ct::Base64::encode_string(b"\x00\x00\x00\x00\x04ping");
    let answer = raw_exchange(
        gw.addr(),
        format!(
            "POST /test.Echo/Unary HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc-web-text\r\n\
             X-Grpc-Web: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{call}",
            call.len()
        )
        .as_bytes(),
    )
    .await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/grpc-web-text"),
        "{head}"
    );
    let body = chunked_payload(body);
    let decoded = {
        let mut out = Vec::new();
        for group in body.as_bytes().chunks(4) {
            let mut buf = [0u8; 3];
            out.extend_from_slice(base64ct::Base64::decode(group, &mut buf).expect("base64"));
        }
        out
    };
    assert_eq!(&decoded[..9], b"\x00\x00\x00\x00\x04ping", "the message");
    assert_eq!(decoded[9], 0x80, "then the trailers frame");
    assert!(
        String::from_utf8_lossy(&decoded[14..]).contains("grpc-status: 0"),
        "{:?}",
        String::from_utf8_lossy(&decoded)
    );
}

/// The payload of a chunked body as text (the chunks joined), or the body itself.
fn chunked_payload(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_owned();
        };
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_checks_take_a_not_serving_target_out() {
    let (server, lines) = python_peer("grpc_server.py");
    // The checks the server answered, by service.
    let checks = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let seen = checks.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                seen.lock()
                    .push(v["health"].as_str().unwrap_or("?").to_owned());
            }
        }
    });
    let gw = Gateway::start(&format!(
        "listeners: [ {{ name: public, address: \"127.0.0.1:0\" }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ enabled: false }}
upstreams:
  up:
    protocol: http2
    targets: [ \"127.0.0.1:{port}\" ]
    health_check: {{ kind: grpc, interval: 100ms, unhealthy_after: 1, healthy_after: 1 }}
  down:
    protocol: http2
    targets: [ \"127.0.0.1:{port}\" ]
    health_check: {{ kind: grpc, service: down, interval: 100ms, unhealthy_after: 1 }}
routes:
  - {{ match: {{ path_prefix: /test.Echo/ }}, upstream: up }}
",
        port = server.port
    ));
    let healthy = |upstream: &str| {
        format!(
            "floodgate_upstream_target_healthy{{upstream=\"{upstream}\",target=\"127.0.0.1:{}\"}}",
            server.port
        )
    };
    let (down, up) = (healthy("down"), healthy("up"));
    until("the NOT_SERVING service's target is out", || async {
        gw.metric(&down).await == 0.0
    })
    .await;
    // A second check of the whole server starts only once the first one's result was
    // applied (one check at a time per target).
    let counted = checks.clone();
    until("the whole server was checked twice", move || {
        let twice = counted.lock().iter().filter(|s| s.is_empty()).count() >= 2;
        async move { twice }
    })
    .await;
    assert_eq!(gw.metric(&up).await, 1.0, "the SERVING one stays in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_reaches_an_h2c_server() {
    // TLS on the listener (ALPN h2), h2c to the server.
    let (server, _lines) = python_peer("grpc_server.py");
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/fixtures/listener");
    let gw = Gateway::start(&format!(
        "listeners:
  - name: public
    address: 127.0.0.1:0
    tls: {{ certificates: [ {{ cert: {fixtures}/shop.pem, key: {fixtures}/shop.key }} ] }}
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ enabled: false }}
upstreams:
  grpc: {{ protocol: http2, targets: [ \"127.0.0.1:{}\" ] }}
routes:
  - {{ match: {{ path_prefix: /test.Echo/ }}, upstream: grpc }}
",
        server.port
    ));
    let target = format!("tls:{fixtures}/ca.pem@{}", gw.addr());
    let v = python_client(
        "grpc_client.py",
        &[&target, "unary,server_stream,bidi,fail"],
    )
    .unwrap_or_else(|e| panic!("{e}\ngateway log:\n{}", gw.log()));
    assert_eq!(v["unary"], "hello", "{v}");
    assert_eq!(
        v["server_stream"],
        serde_json::json!(["a", "b", "c"]),
        "{v}"
    );
    assert_eq!(v["bidi"], serde_json::json!(["1", "2", "3"]), "{v}");
    assert_eq!(v["fail"]["code"], "NOT_FOUND", "{v}");
}
