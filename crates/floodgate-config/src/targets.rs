//! How an upstream treats its targets: retries of failed tries under a budget, active
//! health checks, passive outlier detection, and what to do when no target is healthy.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::value::{ByteSize, Duration, Percent};

/// When and how often a failed try is retried (docs/configuration.md).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Retries after the first try. Default 1.
    #[serde(default = "default_retry_attempts")]
    pub attempts: u32,
    /// What is retried: `connect_error` (any method: nothing reached the target), `reset`
    /// (the exchange broke), `timeout` (no response head within `timeouts.request`), and
    /// statuses such as `503` or classes such as `5xx`. Default `[connect_error]`. (Not
    /// `on`: YAML reads a bare `on` as `true`.)
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<String>,
    /// Methods retried besides the idempotent ones (GET, HEAD, OPTIONS, TRACE, PUT,
    /// DELETE). Default none.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Retries may add at most this share of the upstream's requests (over 10 s).
    /// Default 20%.
    #[serde(default = "default_retry_budget")]
    pub budget: Percent,
    /// Retries allowed per second on top of `budget`, so a quiet upstream can still
    /// retry. Default 3.
    #[serde(default = "default_retry_floor")]
    pub min_per_second: u32,
    /// The first wait before a retry is drawn from [0, backoff]; it doubles per retry up
    /// to `max_backoff`. Default 25ms.
    #[serde(default = "default_backoff")]
    pub backoff: Duration,
    /// Default 250ms.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Duration,
    /// Request bodies up to this size (by Content-Length) are kept to be sent again;
    /// a larger one, or one of unknown length, is never retried. Default 64KiB.
    #[serde(default = "default_replay_buffer")]
    pub replay_buffer: ByteSize,
}

/// An active health check, run against every target of the upstream.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `http` (a GET of `path`), `tcp` (a connection is enough) or `grpc` (the gRPC
    /// health checking protocol, `grpc.health.v1.Health/Check`, over HTTP/2). Default
    /// `http`.
    #[serde(default)]
    pub kind: HealthCheckKind,
    /// gRPC: the service to ask about (`""`, the default: the server as a whole).
    #[serde(default)]
    pub service: String,
    /// HTTP: the path to GET. Default `/healthz`.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// HTTP: statuses that mean healthy. Default: 200 to 399.
    #[serde(default)]
    pub expect: Vec<u16>,
    /// Time between checks. Default 5s.
    #[serde(default = "default_health_interval")]
    pub interval: Duration,
    /// A check not answered within this fails. Default 1s.
    #[serde(default = "default_health_timeout")]
    pub timeout: Duration,
    /// Passed checks in a row that make an unhealthy target healthy. Default 2.
    #[serde(default = "default_healthy_after")]
    pub healthy_after: u32,
    /// Failed checks in a row that make a healthy target unhealthy. Default 3.
    #[serde(default = "default_unhealthy_after")]
    pub unhealthy_after: u32,
}

/// What a health check does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// GET `path`; healthy on an expected status.
    #[default]
    Http,
    /// Healthy when a TCP connection opens.
    Tcp,
    /// `grpc.health.v1.Health/Check` over HTTP/2 (h2c); healthy when the answer is
    /// `SERVING`.
    Grpc,
}

/// Passive outlier detection (docs/configuration.md).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// Eject after this many failures in a row (5xx, connect errors, resets, timeouts).
    /// Default 5 (when `failure_rate` is not given either).
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    /// Eject when this share of requests over `window` failed ...
    #[serde(default)]
    pub failure_rate: Option<Percent>,
    /// ... once at least this many were seen. Default 20.
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    /// The failure-rate window. Default 10s.
    #[serde(default = "default_outlier_window")]
    pub window: Duration,
    /// First ejection time; the n-th in a row lasts n times as long. Default 30s.
    #[serde(default = "default_base_ejection")]
    pub base_ejection: Duration,
    /// Longest ejection. Default 300s.
    #[serde(default = "default_max_ejection")]
    pub max_ejection: Duration,
    /// Never more than this share of the targets out at once (rounded down). Default 50%.
    #[serde(default = "default_max_ejected")]
    pub max_ejected: Percent,
}

/// What to do when no target is healthy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AllUnhealthy {
    /// Answer 503.
    #[default]
    Fail,
    /// Use every target anyway.
    Panic,
}

fn default_backoff() -> Duration {
    Duration(std::time::Duration::from_millis(25))
}
fn default_base_ejection() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}
fn default_health_interval() -> Duration {
    Duration(std::time::Duration::from_secs(5))
}
fn default_health_path() -> String {
    "/healthz".into()
}
fn default_health_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(1))
}
fn default_healthy_after() -> u32 {
    2
}
fn default_max_backoff() -> Duration {
    Duration(std::time::Duration::from_millis(250))
}
fn default_max_ejected() -> Percent {
    Percent(0.5)
}
fn default_max_ejection() -> Duration {
    Duration(std::time::Duration::from_secs(300))
}
fn default_min_requests() -> u32 {
    20
}
fn default_outlier_window() -> Duration {
    Duration(std::time::Duration::from_secs(10))
}
fn default_replay_buffer() -> ByteSize {
    ByteSize(64 * 1024)
}
fn default_retry_attempts() -> u32 {
    1
}
fn default_retry_budget() -> Percent {
    Percent(0.2)
}
fn default_retry_floor() -> u32 {
    3
}
fn default_retry_on() -> Vec<String> {
    vec!["connect_error".into()]
}
fn default_unhealthy_after() -> u32 {
    3
}
