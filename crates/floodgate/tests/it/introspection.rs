//! Opaque tokens checked by OAuth2 token introspection (RFC 7662) against an independent
//! server built with Authlib (tests/it/peers/introspection_server.py): active tokens pass
//! and name the consumer, scopes authorize, expired and unknown tokens get 401, and an
//! active answer is remembered instead of asked again.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use http::StatusCode;

use crate::support::*;

const PEERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/peers");

/// The introspection server, stopped (by its PID) when dropped.
struct Server(std::process::Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _killed = self.0.kill().is_ok();
        let _reaped = self.0.wait().is_ok();
    }
}

fn server() -> Server {
    let mut child = Command::new(python_peers())
        .arg(format!("{PEERS}/introspection_server.py"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the introspection server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("its port");
    let port = line.trim().parse().expect("a port");
    Server(child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tokens_are_introspected() {
    let idp = server();
    let echo = echo_upstream().await;
    let gw = Gateway::start(&config(
        echo,
        &format!(
            "  - name: api
    match: {{ path: /api }}
    upstream: backend
    auth:
      introspection: {{ url: \"http://127.0.0.1:{port}/introspect\", client_id: gw, client_secret: gw-secret }}
  - name: admin
    match: {{ path: /admin }}
    upstream: backend
    auth:
      scopes: [ admin ]
      introspection: {{ url: \"http://127.0.0.1:{port}/introspect\", client_id: gw, client_secret: gw-secret }}",
            port = idp.1
        ),
        "",
    ));
    let count = || async {
        let (_, _, b) = get(&format!("http://127.0.0.1:{}/count", idp.1)).await;
        String::from_utf8_lossy(&b).parse::<u32>().unwrap()
    };
    let bearer = |t: &str| format!("Bearer {t}");

    let read = bearer("opaque-read-token");
    let (s, _, b) = get_with(&gw.url("/api"), &[("authorization", &read)]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(json(&b)["headers"].get("authorization").is_none());
    let line = gw.access_line("\"route\":\"api\"").await;
    assert_eq!(line["consumer"], "erin");
    // Remembered: a second request does not ask again.
    let asked = count().await;
    assert_eq!(
        get_with(&gw.url("/api"), &[("authorization", &read)])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(count().await, asked);

    // Scopes: only the admin token opens /admin.
    let (s, h, b) = get_with(&gw.url("/admin"), &[("authorization", &read)]).await;
    assert_problem(s, &h, &b, StatusCode::FORBIDDEN, "forbidden");
    let admin = bearer("opaque-admin-token");
    assert_eq!(
        get_with(&gw.url("/admin"), &[("authorization", &admin)])
            .await
            .0,
        StatusCode::OK
    );

    // Inactive (expired, unknown) tokens: 401 saying why (RFC 6750 §3); no token: the
    // bare challenge.
    for t in ["opaque-expired-token", "no-such-token"] {
        let (s, h, b) = get_with(&gw.url("/api"), &[("authorization", &bearer(t))]).await;
        assert_problem(s, &h, &b, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(
            h["www-authenticate"],
            "Bearer realm=\"floodgate\", error=\"invalid_token\", error_description=\"The token is not active.\""
        );
    }
    let (s, h, _) = get(&gw.url("/api")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h["www-authenticate"], "Bearer realm=\"floodgate\"");
    let log = std::fs::read_to_string(gw.dir.path().join("access.log")).unwrap() + &gw.log();
    assert!(!log.contains("opaque-read-token"), "a token was logged");
}
