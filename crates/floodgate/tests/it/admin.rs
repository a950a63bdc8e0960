//! The admin listener: metrics, health and readiness, status.

use http::StatusCode;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_status() {
    let up = echo_upstream().await;
    let gw = Gateway::start(&config(
        up,
        "  - { name: api, match: { path_prefix: /api }, upstream: backend }\n",
        "",
    ));
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/api/x")).await.0, StatusCode::OK);
    }
    assert_eq!(get(&gw.url("/other")).await.0, StatusCode::NOT_FOUND);

    let admin = format!("http://{}", gw.admin);
    assert_eq!(get(&format!("{admin}/healthz")).await.0, StatusCode::OK);
    assert_eq!(get(&format!("{admin}/readyz")).await.0, StatusCode::OK);
    let (_, _, status) = get(&format!("{admin}/status")).await;
    let status = json(&status);
    assert_eq!(status["generation"], 1);
    assert_eq!(status["routes"][0]["name"], "api");
    assert_eq!(status["routes"][0]["match"]["path_prefix"], "/api");
    assert_eq!(status["routes"][0]["upstream"], "backend");
    let target = &status["upstreams"]["backend"]["targets"][0];
    assert_eq!(target["healthy"], true);
    assert_eq!(target["ejected"], false);
    assert_eq!(target["draining"], false);
    assert_eq!(target["in_flight"], 0);

    let text = gw.metrics().await;
    assert!(
        text.contains("floodgate_requests_total{route=\"api\",class=\"2xx\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("floodgate_requests_total{route=\"(none)\",class=\"4xx\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("floodgate_request_duration_seconds_count{route=\"api\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("floodgate_connections_total{listener=\"public\"}"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE floodgate_open_connections gauge"),
        "{text}"
    );
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    // The process's own series, and the build.
    for series in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
        "floodgate_build_info{version=\"",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    // No series that cannot move for this config: no cluster, no informational answers.
    for absent in [
        "floodgate_redis_",
        "floodgate_cluster_nodes",
        "class=\"1xx\"",
    ] {
        assert!(!text.contains(absent), "{absent} exported:\n{text}");
    }
    assert_eq!(get(&format!("{admin}/nope")).await.0, StatusCode::NOT_FOUND);
}
