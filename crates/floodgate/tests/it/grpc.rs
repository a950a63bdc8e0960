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
