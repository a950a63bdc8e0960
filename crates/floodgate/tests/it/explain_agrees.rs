//! `floodgate explain` names the route the data plane picks: a table of requests (hosts in
//! every spelling, paths that are made canonical, methods, headers, absolute-form targets)
//! each sent to the running gateway and explained from the same file, the two answers
//! compared.

use crate::support::*;

/// Request headers, as the table lists them.
type Headers<'a> = &'a [(&'a str, &'a str)];

fn route(name: &str, matches: &str) -> String {
    format!(
        "  - name: {name}\n    match: {matches}\n    upstream: backend\n    response_headers: {{ set: {{ x-route: {name} }} }}\n"
    )
}

/// The route `floodgate explain` names for this request, or `none`.
fn explained(
    config: &std::path::Path,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> String {
    let mut args = vec![
        "explain".to_owned(),
        "-c".to_owned(),
        config.to_str().unwrap().to_owned(),
        method.to_owned(),
        target.to_owned(),
    ];
    for (k, v) in headers {
        args.push("-H".to_owned());
        args.push(format!("{k}: {v}"));
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .args(&args)
        .output()
        .expect("run floodgate explain");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("route:"))
        .unwrap_or_else(|| panic!("no route line: {text}"));
    if line.contains("none matches") {
        return "none".into();
    }
    line.trim_start_matches("route:")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The route the running gateway answered this request from (its `x-route` header), or
/// `none` for its 404 no-route answer.
async fn served(gw: &Gateway, method: &str, target: &str, headers: &[(&str, &str)]) -> String {
    let mut raw = format!("{method} {target} HTTP/1.1\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("Connection: close\r\n\r\n");
    let answer = raw_exchange(gw.addr(), raw.as_bytes()).await;
    let head = answer
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    if let Some(line) = head.lines().find(|l| l.starts_with("x-route:")) {
        return line["x-route:".len()..].trim().to_owned();
    }
    assert!(head.starts_with("http/1.1 404"), "{answer}");
    assert!(answer.contains("no-route"), "{answer}");
    "none".into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_route_the_data_plane_picks() {
    let up = echo_upstream().await;
    let routes = [
        route("exact-host", "{ hosts: [api.test], path_prefix: / }"),
        route("wild-host", "{ hosts: [\"*.shop.test\"], path_prefix: / }"),
        route("item", "{ path: \"/items/{id}\", methods: [GET] }"),
        route(
            "beta",
            "{ path_prefix: /h, headers: [ { name: x-beta, exact: \"1\" } ] }",
        ),
        route("docs", "{ path_prefix: /docs }"),
    ]
    .join("");
    let cfg = config(up, &routes, "");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("floodgate.yaml");
    // (Gateway::start fills in `{dir}`, the folder of its own access log.)
    std::fs::write(&file, cfg.replace("{dir}", dir.path().to_str().unwrap())).unwrap();
    let gw = Gateway::start(&cfg);

    let table: &[(&str, &str, Headers<'_>, &str)] = &[
        ("GET", "/x", &[("Host", "api.test")], "exact-host"),
        // Case, a trailing dot and a port do not change the name routed on.
        ("GET", "/x", &[("Host", "API.Test.")], "exact-host"),
        ("GET", "/x", &[("Host", "api.test:8080")], "exact-host"),
        ("GET", "/x", &[("Host", "a.shop.test")], "wild-host"),
        ("GET", "/x", &[("Host", "A.B.Shop.Test:1")], "wild-host"),
        ("GET", "/x", &[("Host", "shop.test")], "none"),
        // IPv6 literals, with and without a port.
        ("GET", "/docs/a", &[("Host", "[::1]:8080")], "docs"),
        ("GET", "/docs/a", &[("Host", "[::1]")], "docs"),
        ("GET", "/items/7", &[("Host", "other.test")], "item"),
        ("POST", "/items/7", &[("Host", "other.test")], "none"),
        // Paths are routed in their canonical form.
        ("GET", "/a/../items/9", &[("Host", "other.test")], "item"),
        ("GET", "//docs//x", &[("Host", "other.test")], "docs"),
        ("GET", "/%64ocs/x", &[("Host", "other.test")], "docs"),
        (
            "GET",
            "/h/1",
            &[("Host", "other.test"), ("x-beta", "1")],
            "beta",
        ),
        (
            "GET",
            "/h/1",
            &[("Host", "other.test"), ("x-beta", "2")],
            "none",
        ),
        // An absolute-form target names the host; the Host field is then ignored.
        (
            "GET",
            "http://api.test/x",
            &[("Host", "other.test")],
            "exact-host",
        ),
    ];
    for (method, target, headers, expected) in table {
        let data_plane = served(&gw, method, target, headers).await;
        let explain = explained(&file, method, target, headers);
        assert_eq!(
            (data_plane.as_str(), explain.as_str()),
            (*expected, *expected),
            "{method} {target} {headers:?}: the data plane, then explain"
        );
    }
}
