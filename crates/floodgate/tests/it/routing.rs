//! Routing through the binary: precedence, every matcher, rewrites, redirects, header edits.

use http::StatusCode;

use crate::support::*;

fn route(name: &str, matches: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    match: {matches}\n    upstream: backend\n    response_headers: {{ set: {{ x-route: {name} }} }}\n{extra}"
    )
}

async fn routed(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String, serde_json::Value) {
    let (status, h, body) = get_with(&gw.url(path), headers).await;
    let name = h
        .get("x-route")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let v = if h
        .get("content-type")
        .is_some_and(|c| c == "application/json")
    {
        json(&body)
    } else {
        serde_json::Value::Null
    };
    (status, name, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precedence_and_matchers() {
    let up = echo_upstream().await;
    let routes = [
        route("catch-all", "{ path_prefix: / }", ""),
        route("api", "{ path_prefix: /api }", ""),
        route("product", "{ path: \"/api/products/{id}\" }", ""),
        route("product-new", "{ path: /api/products/new }", ""),
        route(
            "product-post",
            "{ path: \"/api/products/{id}\", methods: [POST] }",
            "",
        ),
        route(
            "regex",
            "{ path_regex: \"/files/(?P<name>[a-z]+)\\\\.txt\" }",
            "    rewrite: { path: \"/raw/{name}\" }\n",
        ),
        route(
            "wild-host",
            "{ hosts: [\"*.example.test\"], path_prefix: / }",
            "",
        ),
        route(
            "exact-host",
            "{ hosts: [shop.example.test], path_prefix: / }",
            "",
        ),
        route(
            "beta-header",
            "{ path_prefix: /api, headers: [ { name: x-beta, exact: \"1\" } ] }",
            "",
        ),
        route(
            "debug-query",
            "{ path_prefix: /api, query: [ { name: debug, present: true } ] }",
            "",
        ),
        route("tie-low", "{ path: /tie }", ""),
        route("tie-high", "{ path: /tie }", "    priority: 10\n"),
    ]
    .join("");
    let gw = Gateway::start(&config(up, &routes, ""));

    assert_eq!(routed(&gw, "/anything", &[]).await.1, "catch-all");
    assert_eq!(routed(&gw, "/api/x", &[]).await.1, "api");
    assert_eq!(
        routed(&gw, "/apix", &[]).await.1,
        "catch-all",
        "prefix matches on segment boundaries"
    );
    assert_eq!(routed(&gw, "/api/products/42", &[]).await.1, "product");
    assert_eq!(
        routed(&gw, "/api/products/new", &[]).await.1,
        "product-new",
        "exact beats template"
    );
    assert_eq!(
        routed(&gw, "/api/x", &[("x-beta", "1")]).await.1,
        "beta-header"
    );
    assert_eq!(routed(&gw, "/api/x", &[("x-beta", "2")]).await.1, "api");
    assert_eq!(routed(&gw, "/api/x?debug", &[]).await.1, "debug-query");
    assert_eq!(
        routed(&gw, "/tie", &[]).await.1,
        "tie-high",
        "priority breaks ties"
    );
    assert_eq!(
        routed(&gw, "/x", &[("host", "a.example.test")]).await.1,
        "wild-host"
    );
    assert_eq!(
        routed(&gw, "/x", &[("host", "SHOP.example.test:8080")])
            .await
            .1,
        "exact-host"
    );
    assert_eq!(
        routed(&gw, "/x", &[("host", "example.test")]).await.1,
        "catch-all"
    );

    let (_, name, echo) = routed(&gw, "/files/readme.txt?v=2", &[]).await;
    assert_eq!(name, "regex");
    assert_eq!(
        echo["uri"], "/raw/readme?v=2",
        "regex groups feed the rewrite; the query is kept"
    );

    let post = http::Request::post(gw.url("/api/products/42"))
        .body(http_body_util::Full::new(bytes::Bytes::from("{}")))
        .unwrap();
    let (_, h, _) = send(post).await;
    assert_eq!(h["x-route"], "product-post", "method condition");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_redirects_and_header_edits() {
    let up = echo_upstream().await;
    let routes = "  - name: strip
    match: { path_prefix: /api }
    upstream: backend
    rewrite: { strip_prefix: /api, add_prefix: /v2 }
    request_headers:
      remove: [ x-internal ]
      set: { x-env: test }
      add: { x-tag: added }
    response_headers:
      set: { x-frame-options: DENY }
      remove: [ server ]
  - name: moved
    match: { path: \"/old/{*rest}\" }
    redirect: { location: \"https://new.example.test/{rest}{query}\", status: 308 }
";
    let gw = Gateway::start(&config(up, routes, ""));
    let (status, h, body) = get_with(
        &gw.url("/api/items/7?q=1"),
        &[("x-internal", "secret"), ("x-tag", "client")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let echo = json(&body);
    assert_eq!(echo["uri"], "/v2/items/7?q=1");
    assert!(echo["headers"].get("x-internal").is_none());
    assert_eq!(echo["headers"]["x-env"], serde_json::json!(["test"]));
    assert_eq!(
        echo["headers"]["x-tag"],
        serde_json::json!(["client", "added"])
    );
    assert_eq!(h["x-frame-options"], "DENY");

    let (_, _, body) = get(&gw.url("/api")).await;
    assert_eq!(
        json(&body)["uri"],
        "/v2",
        "stripping the whole path leaves the added prefix"
    );

    let (status, h, body) = get(&gw.url("/old/a/b?x=1")).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(h["location"], "https://new.example.test/a/b?x=1");
    assert!(body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_can_be_limited_to_listeners() {
    let up = echo_upstream().await;
    let cfg = format!(
        "listeners:
  - {{ name: public, address: 127.0.0.1:0 }}
  - {{ name: internal, address: 127.0.0.1:0 }}
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
upstreams:
  backend: {{ targets: [ \"{up}\" ] }}
routes:
  - {{ name: internal-only, match: {{ path_prefix: /admin }}, upstream: backend, listeners: [internal] }}
  - {{ name: everywhere, match: {{ path: /ping }}, upstream: backend }}
"
    );
    let gw = Gateway::start(&cfg);
    let internal = gw.listeners["internal"];
    assert_eq!(
        get(&format!("http://{internal}/admin/x")).await.0,
        StatusCode::OK
    );
    assert_eq!(get(&gw.url("/admin/x")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&format!("http://{internal}/ping")).await.0,
        StatusCode::OK
    );
    assert_eq!(get(&gw.url("/ping")).await.0, StatusCode::OK);
}
