//! Cluster-wide rate limits against the real Redis (FLOODGATE_TEST_REDIS_URL, set by
//! .ci/run): several gateway processes sharing one Redis admit exactly the limit, and a
//! Redis outage is met by each limit's declared mode, with automatic recovery.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::StatusCode;

use crate::support::*;

fn cluster_section(url: &str, prefix: &str) -> String {
    format!(
        "cluster:\n  redis: {{ url: \"{url}\", key_prefix: \"{prefix}\", timeout: 5s }}\n  heartbeat: 100ms\n"
    )
}

fn route(name: &str, limit: &str) -> String {
    format!(
        "  - name: {name}\n    match: {{ path: /{name} }}\n    upstream: backend\n    rate_limits:\n      - {{ {limit}, key: [ route ], scope: cluster }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_sharing_redis_admit_exactly_the_limit() {
    let Some(url) = redis_url() else { return };
    let up = echo_upstream().await;
    let routes = [
        route("tb", "algorithm: token_bucket, rate: 1/1h, burst: 20"),
        route("gcra", "algorithm: gcra, rate: 1/1h, burst: 20"),
        route("fixed", "algorithm: fixed_window, rate: 20/1h"),
        route("sliding", "algorithm: sliding_window, rate: 20/1h"),
    ]
    .concat();
    let cfg = config(up, &routes, &cluster_section(&url, &unique_prefix()));
    let nodes = [
        Gateway::start(&cfg),
        Gateway::start(&cfg),
        Gateway::start(&cfg),
    ];
    for path in ["/tb", "/gcra", "/fixed", "/sliding"] {
        // 60 requests at once, 20 through each gateway.
        let mut tasks = Vec::new();
        for _ in 0..20 {
            for gw in &nodes {
                let u = gw.url(path);
                tasks.push(tokio::spawn(async move { get(&u).await.0 }));
            }
        }
        let mut admitted = 0;
        for t in tasks {
            match t.await.unwrap() {
                StatusCode::OK => admitted += 1,
                StatusCode::TOO_MANY_REQUESTS => {}
                other => panic!("{path}: unexpected {other}"),
            }
        }
        assert_eq!(admitted, 20, "{path}");
    }
    for gw in &nodes {
        // Every decision came from Redis: no call failed over to the local fallback.
        assert_eq!(gw.metric("floodgate_redis_errors_total").await, 0.0);
    }
    // The nodes find each other through their heartbeats.
    let mut seen = 0.0;
    for _ in 0..200 {
        seen = nodes[0].metric("floodgate_cluster_nodes").await;
        if seen == 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, 3.0);
}

/// A Redis server of the test's own on a free port, to stop and start at will.
struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    async fn start(port: u16) -> OwnRedis {
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) on PATH");
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return OwnRedis { child, port };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _killed = child.kill().is_ok();
        let _reaped = child.wait().is_ok();
        panic!("redis-server did not start on port {port}");
    }

    fn stop(&mut self) {
        let _killed = self.child.kill().is_ok();
        let _reaped = self.child.wait().is_ok();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_follows_each_limits_mode_and_recovers() {
    // Gated like the other Redis tests, though it runs a Redis of its own.
    if redis_url().is_none() {
        return;
    }
    let port = free_port();
    let mut redis = OwnRedis::start(port).await;
    let up = echo_upstream().await;
    let routes = [
        route(
            "open",
            "algorithm: token_bucket, rate: 1/1h, burst: 2, on_redis_error: fail_open",
        ),
        route(
            "closed",
            "algorithm: fixed_window, rate: 100/1h, on_redis_error: fail_closed",
        ),
    ]
    .concat();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let gw = Gateway::start(&config(up, &routes, &cluster_section(&url, "fg:")));
    assert_eq!(statuses(&gw.url("/open"), &[], 3).await, [200, 200, 429]);
    assert_eq!(statuses(&gw.url("/closed"), &[], 1).await, [200]);

    redis.stop();
    // Fail closed: 503 while Redis is away.
    let (status, h, body) = get(&gw.url("/closed")).await;
    assert_problem(
        status,
        &h,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "rate-limiter-unavailable",
    );
    // Fail open: a local bucket of the same size (one live node) takes over.
    assert_eq!(statuses(&gw.url("/open"), &[], 3).await, [200, 200, 429]);
    assert!(gw.metric("floodgate_redis_errors_total").await >= 1.0);
    // Several back-off cycles (500 ms) of the same outage: logged once, not per cycle.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            get(&gw.url("/closed")).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    // Redis comes back (empty): decisions go to it again by themselves. The local
    // fallback is spent, so the first 200 on /open can only come from Redis.
    let _redis = OwnRedis::start(port).await;
    let mut recovered = false;
    for _ in 0..200 {
        if get(&gw.url("/open")).await.0 == StatusCode::OK {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "cluster limit did not go back to Redis");
    assert_eq!(statuses(&gw.url("/closed"), &[], 1).await, [200]);
    let back = gw
        .wait_log("redis available again")
        .expect("the end of the outage is logged");
    assert!(back.contains("\"down_for_ms\""), "{back}");
    let log = gw.log();
    let downs = log
        .lines()
        .filter(|l| l.contains("\"redis unavailable"))
        .count();
    assert_eq!(downs, 1, "one outage, one line:\n{log}");
}
