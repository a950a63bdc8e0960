//! `floodgate demo`, the README's first command: the embedded config in front of the
//! built-in catalog, driven as a user would from the printed banner, stopped with Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_the_catalog_and_stops_on_ctrl_c() {
    let mut child = Demo(
        Command::new(env!("CARGO_BIN_EXE_floodgate"))
            .args([
                "demo",
                "--port",
                "0",
                "--admin-port",
                "0",
                "--flaky-rate",
                "1.0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn demo"),
    );
    let child = &mut child.0;
    // The banner names the gateway and admin addresses; access log lines follow it.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut gateway, mut admin) = (String::new(), String::new());
    while gateway.is_empty() || admin.is_empty() {
        let line = rx.recv_timeout(PATIENCE).expect("demo banner");
        let addr = || {
            line.split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string()
        };
        if line.trim_start().starts_with("gateway") {
            gateway = addr();
        } else if line.trim_start().starts_with("admin") {
            admin = addr().trim_end_matches("/metrics").to_string();
        }
    }

    let (s, _, body) = get(&format!("{gateway}/api/products/42")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json(&body)["id"], 42);
    // Products are cached: the second ask is a hit, until a purge by tag.
    let (s, h, _) = get(&format!("{gateway}/api/products/42")).await;
    assert_eq!(s, StatusCode::OK);
    let status = |h: &http::HeaderMap| h["cache-status"].to_str().unwrap().to_owned();
    assert!(status(&h).starts_with("Floodgate; hit"), "{h:?}");
    let purge = http::Request::post(format!("{admin}/cache/purge"))
        .body(http_body_util::Full::from("{\"tag\": \"product-42\"}"))
        .unwrap();
    assert_eq!(send(purge).await.0, StatusCode::OK);
    let (_, h, _) = get(&format!("{gateway}/api/products/42")).await;
    assert!(status(&h).contains("fwd=uri-miss"), "{h:?}");
    // An order with an idempotency key is made once; the retry gets the same answer.
    let order = || {
        http::Request::post(format!("{gateway}/api/orders"))
            .header("idempotency-key", "\"demo-order-1\"")
            .body(http_body_util::Full::from("{\"product\": 42}"))
            .unwrap()
    };
    let (s, h, first) = send(order()).await;
    assert_eq!(s, StatusCode::CREATED, "{h:?}");
    assert!(!h.contains_key("idempotent-replayed"));
    let (s, h, again) = send(order()).await;
    assert_eq!((s, &again), (StatusCode::CREATED, &first));
    assert_eq!(h["idempotent-replayed"], "true");
    let (s, _, body) = get(&format!("{gateway}/api/products?limit=3")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json(&body)["items"].as_array().map(Vec::len), Some(3));
    // The existence filter answers (its false-positive rate is 0.001% in the demo).
    let (s, h, b) = get(&format!("{gateway}/api/products/99999")).await;
    assert_problem(s, &h, &b, StatusCode::NOT_FOUND, "absent");
    let (s, _, _) = get(&format!("{gateway}/api/flaky")).await;
    assert_eq!(
        s,
        StatusCode::SERVICE_UNAVAILABLE,
        "--flaky-rate 1.0 always fails"
    );
    // Two more failures open the breaker; the route then answers its fallback.
    for _ in 0..2 {
        assert_eq!(
            get(&format!("{gateway}/api/flaky")).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let (s, h, body) = get(&format!("{gateway}/api/flaky")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["floodgate-fallback"], "breaker_open");
    assert_eq!(json(&body)["degraded"], true);
    let (_, _, breakers) = get(&format!("{admin}/breakers")).await;
    assert_eq!(json(&breakers)["breakers"][0]["state"], "open");
    // The token endpoint and the route that checks its tokens.
    let (s, _, _) = get(&format!("{gateway}/secure/products/1")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, body) = send(
        http::Request::post(format!("{gateway}/oauth2/token"))
            .header("authorization", "Basic ZGVtby1jbGllbnQ6ZGVtby1zZWNyZXQ=")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"grant_type=client_credentials",
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let token = json(&body)["access_token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    let (s, _, body) = get_with(
        &format!("{gateway}/secure/products/1"),
        &[("authorization", bearer.as_str())],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json(&body)["id"], 1);
    let (s, h, _) = get(&format!("{gateway}/v1/products/7?x=1")).await;
    assert_eq!(s, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(h["location"], "/api/products/7?x=1");
    let (s, h, b) = get(&format!("{gateway}/nowhere")).await;
    assert_problem(s, &h, &b, StatusCode::NOT_FOUND, "no-route");
    let (s, _, metrics) = get(&format!("{admin}/metrics")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        String::from_utf8_lossy(&metrics)
            .contains("floodgate_requests_total{route=\"product\",class=\"2xx\"} 3")
    );
    // Access log lines arrive on stdout.
    let deadline = Instant::now() + PATIENCE;
    let mut saw_log = false;
    while !saw_log && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            saw_log = line.contains("\"route\":\"product\"");
        }
    }
    assert!(saw_log, "access log line for the product request");

    // Ctrl-C: a clean stop.
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "demo did not stop on SIGINT");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}

/// Stops the demo process (which this test started) if the test ends early.
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _killed = self.0.kill().is_ok();
            let _reaped = self.0.wait().is_ok();
        }
    }
}

/// What each command the banner prints must show, by a piece of its text; every command
/// must have exactly one. (With `--flaky-rate 1.0`: /api/flaky always fails.)
const EXPECTED: &[(&str, &[&str])] = &[
    ("# proxied, rewritten", &["HTTP/1.1 200"]),
    ("limit=3", &["HTTP/1.1 200", "\"items\""]),
    ("99999", &["HTTP/1.1 404"]),
    ("grep -i cache-status", &["Floodgate; hit"]),
    ("cache/purge", &["\"purged\""]),
    ("# 201: order made", &["HTTP/1.1 201"]),
    (
        "# again: replayed",
        &["HTTP/1.1 201", "idempotent-replayed: true"],
    ),
    ("api/flaky ", &["HTTP/1.1 503"]),
    ("# upstream slower", &["HTTP/1.1 504"]),
    (
        "v1/products/7",
        &["HTTP/1.1 301", "location: /api/products/7"],
    ),
    ("nowhere", &["HTTP/1.1 404", "no-route"]),
    (
        "ws/echo",
        &[
            "HTTP/1.1 101",
            "sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
        ],
    ),
    ("grep floodgate_requests", &["floodgate_requests_total"]),
    ("seq 60", &["200 from instance 1", "200 from instance 2"]),
    (
        "upstream_(responses",
        &["floodgate_upstream_responses_total"],
    ),
    (
        "limited/token-bucket",
        &["HTTP/1.1 200", "HTTP/1.1 429", "ratelimit-policy"],
    ),
    ("limited/leaky-bucket", &["200 after", "429 after"]),
    ("limited/slow", &["200", "503"]),
    (
        "ratelimit_decisions",
        &["floodgate_ratelimit_decisions_total"],
    ),
    (
        "seq 6); do curl -s -o /dev/null -D - 'http",
        &["HTTP/1.1 504", "floodgate-fallback: breaker_open"],
    ),
    ("/breakers", &["\"state\":\"open\""]),
    ("sleep 5", &["waited_ms"]),
    ("grep circuit_breaker", &["floodgate_circuit_breaker_state"]),
    (
        "# 401: no token",
        &["HTTP/1.1 401", "www-authenticate: Bearer"],
    ),
    ("TOKEN=$(", &[]),
    ("Bearer $TOKEN", &["HTTP/1.1 200", "\"id\":1"]),
    ("jwks.json", &["\"keys\""]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_the_banner_prints_does_what_it_says() {
    let mut child = Demo(
        Command::new(env!("CARGO_BIN_EXE_floodgate"))
            .args([
                "demo",
                "--port",
                "0",
                "--admin-port",
                "0",
                "--flaky-rate",
                "1.0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn demo"),
    );
    // The commands: after "Try:", lines indented two spaces, continued by lines indented four.
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut commands: Vec<String> = Vec::new();
    let mut started = false;
    for line in lines.by_ref() {
        let line = line.expect("banner line");
        if line.starts_with("Access log lines follow") {
            break;
        }
        if line == "Try:" {
            started = true;
        } else if started && line.starts_with("    ") {
            let last = commands
                .last_mut()
                .expect("a continuation follows a command");
            last.push('\n');
            last.push_str(&line);
        } else if started && line.starts_with("  ") {
            commands.push(line.trim_start().to_owned());
        }
    }
    // Keep reading (and dropping) the access log so the demo never blocks on its pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let mut matched = vec![0usize; EXPECTED.len()];
    let mut script = String::from("set -u\n");
    for (k, c) in commands.iter().enumerate() {
        let hits: Vec<usize> = EXPECTED
            .iter()
            .enumerate()
            .filter(|(_, (key, _))| c.contains(key))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "command {k} needs exactly one expectation:\n{c}"
        );
        matched[hits[0]] += 1;
        script.push_str(&format!("echo '@@@ {k}'\n{c}\n"));
    }
    for (i, n) in matched.iter().enumerate() {
        assert_eq!(
            *n, 1,
            "expectation {:?} matched {n} commands",
            EXPECTED[i].0
        );
    }
    let run = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .args(["-c", &script])
            .output()
            .expect("bash")
    });
    let out = tokio::time::timeout(PATIENCE * 3, run)
        .await
        .expect("the banner's commands finish")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (k, c) in commands.iter().enumerate() {
        let start = text
            .find(&format!("@@@ {k}\n"))
            .unwrap_or_else(|| panic!("no output section for command {k}"));
        let rest = &text[start..];
        let section = match rest[1..].find("@@@ ") {
            Some(end) => &rest[..end + 1],
            None => rest,
        };
        let (_, wanted) = EXPECTED.iter().find(|(key, _)| c.contains(key)).unwrap();
        for w in *wanted {
            assert!(
                section
                    .to_ascii_lowercase()
                    .contains(&w.to_ascii_lowercase()),
                "command {k}:\n{c}\nshould show {w:?}; it printed:\n{section}"
            );
        }
    }
    // The balancing loop's answers are all 200s: retries hide the degraded instance.
    let balancing = commands.iter().position(|c| c.contains("seq 60")).unwrap();
    let start = text.find(&format!("@@@ {balancing}\n")).unwrap();
    let end = text.find(&format!("@@@ {}\n", balancing + 1)).unwrap();
    for line in text[start..end].lines().skip(1) {
        assert!(line.contains(" 200 from instance "), "{line}");
    }
}
