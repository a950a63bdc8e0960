//! The configuration file's shape: plain serde structs whose doc comments are also the JSON
//! Schema descriptions. Values here are parsed but not yet cross-checked; see
//! [`crate::validate`] for the rules that span fields.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::value::{ByteSize, Duration};

/// A whole Floodgate configuration file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings: worker threads and shutdown.
    #[serde(default)]
    pub runtime: Runtime,
    /// Where clients connect. At least one.
    pub listeners: Vec<Listener>,
    /// The admin listener (metrics, health). Loopback by default; absent means
    /// `127.0.0.1:9901`.
    #[serde(default)]
    pub admin: Admin,
    /// The structured access log, one JSON line per request.
    #[serde(default)]
    pub access_log: AccessLog,
    /// Named groups of backend servers that routes send traffic to.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
    /// Which requests go where. The most specific match wins (see docs/configuration.md).
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// Process-wide settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// Data-plane worker threads; absent means one per CPU core. Read at start only.
    #[serde(default)]
    pub workers: Option<usize>,
    /// How long a shutdown (SIGTERM/SIGINT) waits for in-flight requests before closing the
    /// remaining connections. Default 30s.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: Duration,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            workers: None,
            shutdown_timeout: default_shutdown_timeout(),
        }
    }
}

/// A listening socket for client traffic; serves HTTP/1.1 and HTTP/2 (h2c prior knowledge).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Unique name, used by routes' `listeners` and in metrics.
    pub name: String,
    /// `ip:port` to bind; port 0 picks a free port (printed at start).
    pub address: SocketAddr,
    /// Request size limits.
    #[serde(default)]
    pub limits: Limits,
    /// Client-side timeouts.
    #[serde(default)]
    pub timeouts: ListenerTimeouts,
}

/// Request size limits of a listener; over a limit the request is refused with the status
/// named on each field and a problem+json body.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Total size of the request line's target plus all header names and values. Over it:
    /// 431. Default 32KiB.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: ByteSize,
    /// Number of header fields. Over it: 431. Default 100.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Length of the request target (path and query). Over it: 414. Default 8KiB.
    #[serde(default = "default_max_uri_bytes")]
    pub max_uri_bytes: ByteSize,
    /// Request body size, checked against Content-Length up front and while streaming.
    /// Over it: 413. Default 10MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: ByteSize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            max_uri_bytes: default_max_uri_bytes(),
            max_body_bytes: default_max_body_bytes(),
        }
    }
}

/// Client-side timeouts of a listener.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTimeouts {
    /// Time a client has to send a complete request head (HTTP/1.1); slower clients are
    /// disconnected (slowloris defence). Default 10s.
    #[serde(default = "default_header_read")]
    pub header_read: Duration,
    /// A connection with no request in flight for this long is closed. Default 60s.
    #[serde(default = "default_idle")]
    pub idle: Duration,
}

impl Default for ListenerTimeouts {
    fn default() -> Self {
        ListenerTimeouts {
            header_read: default_header_read(),
            idle: default_idle(),
        }
    }
}

/// The admin listener.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `ip:port` to bind. Default `127.0.0.1:9901`; keep it on loopback or a private network.
    #[serde(default = "default_admin_address")]
    pub address: SocketAddr,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            address: default_admin_address(),
        }
    }
}

/// The access log.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// Write one JSON line per request. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `stdout`, `stderr`, or a file path (appended to). Default `stdout`. Read at start only.
    #[serde(default = "default_log_output")]
    pub output: String,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            enabled: true,
            output: default_log_output(),
        }
    }
}

/// A named group of backend servers.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// The servers, as `host:port` or `{ address: host:port, weight: N }`. At least one.
    pub targets: Vec<Target>,
    /// Timeouts towards the servers.
    #[serde(default)]
    pub timeouts: UpstreamTimeouts,
    /// Idle connections kept open per target for reuse. Default 128.
    #[serde(default = "default_max_idle")]
    pub max_idle_per_target: usize,
}

/// One backend server.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Target {
    /// `host:port`, weight 1.
    Address(String),
    /// An address with a weight.
    Weighted {
        /// `host:port`.
        address: String,
        /// Relative share of traffic (1 to 1000). Default 1.
        #[serde(default = "default_weight")]
        weight: u32,
    },
}

impl Target {
    /// The `host:port` text.
    pub fn address(&self) -> &str {
        match self {
            Target::Address(a) => a,
            Target::Weighted { address, .. } => address,
        }
    }
    /// The weight (1 when not given).
    pub fn weight(&self) -> u32 {
        match self {
            Target::Address(_) => 1,
            Target::Weighted { weight, .. } => *weight,
        }
    }
}

/// Timeouts towards an upstream's servers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTimeouts {
    /// Time to establish a TCP connection; past it the client gets 502. Default 2s.
    #[serde(default = "default_connect")]
    pub connect: Duration,
    /// Time from sending the request until the response head arrives; past it the client
    /// gets 504. Default 30s.
    #[serde(default = "default_request")]
    pub request: Duration,
    /// How long an unused pooled connection is kept. Default 90s.
    #[serde(default = "default_pool_idle")]
    pub idle: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        UpstreamTimeouts {
            connect: default_connect(),
            request: default_request(),
            idle: default_pool_idle(),
        }
    }
}

/// One routing rule: what it matches and what it does with a match.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique name, used in metrics and logs. Default `route-N` (N = position in the list).
    #[serde(default)]
    pub name: Option<String>,
    /// What the request must look like. An empty match takes every request.
    #[serde(rename = "match", default)]
    pub matches: RouteMatch,
    /// Breaks ties between equally specific routes: higher first. Default 0.
    #[serde(default)]
    pub priority: i32,
    /// Listener names this route applies to. Default: all listeners.
    #[serde(default)]
    pub listeners: Option<Vec<String>>,
    /// The upstream to proxy to. Exactly one of `upstream` and `redirect`.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Answer with a redirect instead of proxying.
    #[serde(default)]
    pub redirect: Option<Redirect>,
    /// Path changes applied before proxying.
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
    /// Header changes on the request sent upstream.
    #[serde(default)]
    pub request_headers: HeaderOps,
    /// Header changes on the response sent to the client.
    #[serde(default)]
    pub response_headers: HeaderOps,
}

/// The conditions of a route; all given conditions must hold.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Host names (port ignored, case-insensitive): exact (`api.example.com`) or a leading
    /// wildcard (`*.example.com`, one or more labels). Default: any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// An exact path (`/healthz`) or a template with `{name}` segments and an optional
    /// final `{*rest}` (`/products/{id}`). At most one of `path`, `path_prefix`,
    /// `path_regex`.
    #[serde(default)]
    pub path: Option<String>,
    /// A path prefix matched on segment boundaries: `/api` matches `/api` and `/api/x`, not
    /// `/apix`.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// A regular expression the whole path must match (anchored). Named groups become
    /// route parameters.
    #[serde(default)]
    pub path_regex: Option<String>,
    /// HTTP methods (`GET`, `POST`, ...). Default: any method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header conditions.
    #[serde(default)]
    pub headers: Vec<ValueMatch>,
    /// Query parameter conditions.
    #[serde(default)]
    pub query: Vec<ValueMatch>,
}

/// A condition on a header or query parameter: exactly one of `exact`, `regex`, `present`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueMatch {
    /// Header name (case-insensitive) or query parameter name (case-sensitive).
    pub name: String,
    /// The value must equal this.
    #[serde(default)]
    pub exact: Option<String>,
    /// The value must match this regular expression (anchored).
    #[serde(default)]
    pub regex: Option<String>,
    /// `true`: must be present with any value; `false`: must be absent.
    #[serde(default)]
    pub present: Option<bool>,
}

/// A redirect answer.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// The `Location`: a template where `{name}` is a route parameter, `{path}` the request
    /// path and `{query}` the query string with its `?` (empty when none). Example:
    /// `https://new.example.com{path}{query}`.
    pub location: String,
    /// 301, 302, 303, 307 or 308. Default 302.
    #[serde(default = "default_redirect_status")]
    pub status: u16,
}

/// Path changes before proxying, applied in the order listed.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Remove this prefix (on a segment boundary) from the path, keeping at least `/`.
    #[serde(default)]
    pub strip_prefix: Option<String>,
    /// Put this in front of the path.
    #[serde(default)]
    pub add_prefix: Option<String>,
    /// Replace the whole path with this template (`{name}` = route parameter). The query
    /// string is kept.
    #[serde(default)]
    pub path: Option<String>,
}

/// Header edits, applied as remove, then set (replace), then add (append).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    /// Header names to remove.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Headers to set, replacing any existing values.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Headers to append, keeping existing values.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
}

impl HeaderOps {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

fn default_shutdown_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}
fn default_max_header_bytes() -> ByteSize {
    ByteSize(32 * 1024)
}
fn default_max_headers() -> usize {
    100
}
fn default_max_uri_bytes() -> ByteSize {
    ByteSize(8 * 1024)
}
fn default_max_body_bytes() -> ByteSize {
    ByteSize(10 * 1024 * 1024)
}
fn default_header_read() -> Duration {
    Duration(std::time::Duration::from_secs(10))
}
fn default_idle() -> Duration {
    Duration(std::time::Duration::from_secs(60))
}
fn default_admin_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9901))
}
fn default_true() -> bool {
    true
}
fn default_log_output() -> String {
    "stdout".into()
}
fn default_max_idle() -> usize {
    128
}
fn default_weight() -> u32 {
    1
}
fn default_connect() -> Duration {
    Duration(std::time::Duration::from_secs(2))
}
fn default_request() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}
fn default_pool_idle() -> Duration {
    Duration(std::time::Duration::from_secs(90))
}
fn default_redirect_status() -> u16 {
    302
}
