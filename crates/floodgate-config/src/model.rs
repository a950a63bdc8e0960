//! The configuration file's shape: plain serde structs whose doc comments are also the JSON
//! Schema descriptions. Values here are parsed but not yet cross-checked; see
//! [`crate::validate`] for the rules that span fields.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::Deserialize;

pub use crate::admission::{Adaptive, Concurrency};
pub use crate::ratelimit::{Algorithm, FailMode, LimitOverride, RateLimit, Scope};
use crate::resilience::{CircuitBreaker, Criticality, Fallback, Fault};
pub use crate::targets::{AllUnhealthy, HealthCheck, HealthCheckKind, OutlierDetection, Retries};
use crate::value::{ByteSize, Duration, Percent};

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
    /// State shared by a fleet of gateways (cluster-wide rate limits). Absent: every node
    /// keeps its own state.
    #[serde(default)]
    pub cluster: Option<Cluster>,
    /// How target host names are resolved.
    #[serde(default)]
    pub dns: Dns,
    /// Identities requests can authenticate as (docs/security.md).
    #[serde(default)]
    pub consumers: Vec<crate::auth::Consumer>,
    /// The built-in OAuth2 token endpoint (client credentials). Absent: none.
    #[serde(default)]
    pub oauth2: Option<crate::auth::OAuth2>,
    /// The shared HTTP cache's storage. Routes opt in with their own `cache`.
    #[serde(default)]
    pub cache: crate::cache::CacheStorage,
}

/// Name resolution for upstream targets given as `name:port`: each address a name resolves
/// to becomes a target of its own, re-resolved on an interval and after a connect failure.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// How often names are resolved again. Default 30s.
    #[serde(default = "default_dns_refresh")]
    pub refresh: Duration,
    /// A hosts-format file (`address name...` per line) consulted before the system
    /// resolver, read afresh at each resolution. Default: none.
    #[serde(default)]
    pub hosts_file: Option<String>,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            refresh: default_dns_refresh(),
            hosts_file: None,
        }
    }
}

/// How the nodes of a fleet share state.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// The Redis server holding shared limiter state.
    pub redis: Redis,
    /// This node's name in the fleet. Default: host name and process id.
    #[serde(default)]
    pub node_id: Option<String>,
    /// How often this node announces itself in Redis; a node not heard from for three
    /// intervals is no longer counted. Default 1s.
    #[serde(default = "default_heartbeat")]
    pub heartbeat: Duration,
}

/// A Redis connection.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Longest wait for one Redis call; past it the limit follows its `on_redis_error`.
    /// Default 50ms.
    #[serde(default = "default_redis_timeout")]
    pub timeout: Duration,
    /// Put in front of every key Floodgate writes. Default `floodgate:`.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
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
    /// Proxies (IP addresses or CIDR blocks) whose `X-Forwarded-For` / `Forwarded` are
    /// believed: the client address is the last one in those fields that is not a trusted
    /// proxy. Default: none, the client address is the connection's peer.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// A request header (such as `x-criticality`) whose value (`sheddable`, `normal`,
    /// `high`, `critical`) overrides the route's criticality, believed only from a trusted
    /// proxy. Default: none.
    #[serde(default)]
    pub criticality_header: Option<String>,
    /// TLS (HTTPS) on this listener: HTTP/1.1 and HTTP/2 chosen by ALPN. Absent:
    /// cleartext HTTP/1.1 and h2c.
    #[serde(default)]
    pub tls: Option<crate::tls::ListenerTls>,
    /// Answer every request on this listener with a redirect to the same URL over HTTPS
    /// (for a cleartext listener next to a TLS one). Absent: requests are routed.
    #[serde(default)]
    pub redirect_to_https: Option<crate::tls::HttpsRedirect>,
    /// `Strict-Transport-Security` on every response (TLS listeners only).
    #[serde(default)]
    pub hsts: Option<crate::tls::Hsts>,
    /// How request paths are made canonical before routing (dot segments are always
    /// removed and percent-encoded unreserved characters always decoded).
    #[serde(default)]
    pub paths: PathHandling,
    /// How the listener speaks HTTP/1.1: the engine and its buffers.
    #[serde(default)]
    pub http1: Http1Settings,
}

/// How a listener speaks HTTP/1.1.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Http1Settings {
    /// `floodgate`, the gateway's own engine (strict framing, buffers lent only while a
    /// connection reads or writes), or `hyper`, the engine before it, kept selectable
    /// while the new one matures. Default `floodgate`.
    #[serde(default)]
    pub engine: Http1Engine,
    /// The read buffer lent to a connection while it reads (heads longer than it grow
    /// it, up to the head limits). Default 8KiB.
    #[serde(default = "default_read_buffer")]
    pub read_buffer: ByteSize,
    /// The write buffer lent to a connection while it writes: small pieces of a response
    /// are gathered in it into one write. Default 16KiB.
    #[serde(default = "default_write_buffer")]
    pub write_buffer: ByteSize,
}

impl Default for Http1Settings {
    fn default() -> Self {
        Http1Settings {
            engine: Http1Engine::default(),
            read_buffer: default_read_buffer(),
            write_buffer: default_write_buffer(),
        }
    }
}

fn default_read_buffer() -> ByteSize {
    ByteSize(8 * 1024)
}
fn default_write_buffer() -> ByteSize {
    ByteSize(16 * 1024)
}

/// Which HTTP/1.1 implementation serves a listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Http1Engine {
    /// The gateway's own engine.
    #[default]
    Floodgate,
    /// hyper's HTTP/1.1 server.
    Hyper,
}

/// How a listener makes request paths canonical beyond RFC 3986 §6's normalization.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathHandling {
    /// Merge runs of slashes into one (`/a//b` is `/a/b`), as most origins do, so `//admin`
    /// cannot pass where `/admin` is refused. Default true; turn it off for APIs whose
    /// paths hold empty segments.
    #[serde(default = "default_true")]
    pub merge_slashes: bool,
    /// What to do with `%2F` and `%5C` (encoded `/` and `\`), which origins disagree on.
    /// Default `keep`.
    #[serde(default)]
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathHandling {
    fn default() -> Self {
        PathHandling {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::default(),
        }
    }
}

/// The handling of encoded slashes in request paths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Leave them encoded: they are not path separators for routing (the origin may think
    /// otherwise).
    #[default]
    Keep,
    /// Decode both to `/`, before dot segments are removed, so they separate segments for
    /// routing as they would at an origin that decodes them.
    Decode,
    /// Refuse the request with 400.
    Reject,
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
    /// Longest wait for the next piece of a request body; past it the client gets 408 and
    /// the upstream (if the body was streaming to one) is not blamed. Default 60s.
    #[serde(default = "default_idle")]
    pub body_read: Duration,
}

impl Default for ListenerTimeouts {
    fn default() -> Self {
        ListenerTimeouts {
            header_read: default_header_read(),
            idle: default_idle(),
            body_read: default_idle(),
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
    /// The servers, as `host:port` or `{ address: host:port, weight: N, drain: bool }`. At
    /// least one.
    pub targets: Vec<Target>,
    /// Timeouts towards the servers.
    #[serde(default)]
    pub timeouts: UpstreamTimeouts,
    /// Idle connections kept open per target for reuse. Default 128.
    #[serde(default = "default_max_idle")]
    pub max_idle_per_target: usize,
    /// Requests in flight to this upstream, over all routes (a bulkhead). Default: no limit.
    #[serde(default)]
    pub concurrency: Option<Concurrency>,
    /// How requests are spread over the targets. Default `round_robin`.
    #[serde(default)]
    pub balance: Balance,
    /// `http1` (a pool of keep-alive connections per target) or `http2` (one multiplexed
    /// connection per target, HTTP/2 with prior knowledge). Default `http1`.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// TLS to the targets (certificates verified; ALPN offers `h2` or `http/1.1` by
    /// `protocol`). Absent: cleartext.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// `consistent_hash` only: what a request's key is: `client_ip`, `header:NAME`,
    /// `cookie:NAME` or `path:PARAM` (a route path parameter). A request without it hashes
    /// the empty key.
    #[serde(default)]
    pub hash_on: Option<String>,
    /// Active health checks of each target. Absent: none.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Passive outlier detection: targets whose live traffic fails are taken out for a
    /// while. Absent: none.
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    /// When no target is healthy (health checks, ejections): `fail` answers 503, `panic`
    /// sends to all targets anyway (Envoy's panic mode). Default `fail`.
    #[serde(default)]
    pub on_all_unhealthy: AllUnhealthy,
    /// Retrying failed tries on another target. Absent: no retries (a request is only
    /// replayed when a reused pooled connection turns out to be closed).
    #[serde(default)]
    pub retries: Option<Retries>,
    /// `consistent_hash` only: bounded load factor `c` (at least 1.0, such as 1.25): no target
    /// takes more than `c` × the average requests in flight (rounded up); a key whose target
    /// is full goes to the next one on the ring. Default: unbounded.
    #[serde(default)]
    pub hash_bounded_load: Option<f64>,
    /// A circuit breaker over the upstream (`scope: upstream`, the default) or each of its
    /// targets (`scope: target`). Absent: none.
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreaker>,
}

/// TLS towards an upstream's targets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM file of the certificate authorities to trust. Default: the Mozilla root set
    /// built in (webpki-roots).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// The name sent as SNI and checked against the certificate. Default: the target's
    /// host as configured (an IP address is checked as one).
    #[serde(default)]
    pub server_name: Option<String>,
    /// PEM certificate chain presented to the target (mTLS); needs `client_key`.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<String>,
}

/// The protocol spoken to an upstream's targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (cleartext).
    Http2,
}

/// A load-balancing algorithm (docs/configuration.md states each rule).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// Power of two choices: of two random targets, the one with fewer requests in flight.
    LeastRequest,
    /// Power of two choices on peak-EWMA latency × (requests in flight + 1).
    PeakEwma,
    /// Maglev consistent hashing on `hash_on`, optionally with bounded load.
    ConsistentHash,
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
        /// Draining: no new requests go to the target; those in flight finish. Default
        /// false.
        #[serde(default)]
        drain: bool,
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
    /// Whether the target is draining.
    pub fn draining(&self) -> bool {
        matches!(self, Target::Weighted { drain: true, .. })
    }
}

/// Timeouts towards an upstream's servers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTimeouts {
    /// Time to establish a TCP connection; past it the client gets 502. Default 2s.
    #[serde(default = "default_connect")]
    pub connect: Duration,
    /// Time from the end of the request (its body sent) until the response head arrives,
    /// and the longest the upstream may leave a request body unread while the client has
    /// more to send; past it the client gets 504. Time spent waiting for a slow client's
    /// body does not count (the listener's `timeouts.body_read` bounds that). Default 30s.
    #[serde(default = "default_request")]
    pub request: Duration,
    /// How long an unused pooled connection is kept. Default 90s.
    #[serde(default = "default_pool_idle")]
    pub idle: Duration,
    /// Time for the whole exchange, all tries and waits between them included, until the
    /// response head; past it the client gets 504. Default: no limit beyond the tries'.
    #[serde(default)]
    pub total: Option<Duration>,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        UpstreamTimeouts {
            connect: default_connect(),
            request: default_request(),
            idle: default_pool_idle(),
            total: None,
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
    /// Share the route's traffic between upstreams by weight (a canary), instead of
    /// `upstream`: `[{ upstream: v1, weight: 95 }, { upstream: v2, weight: 5 }]`.
    #[serde(default)]
    pub split: Vec<SplitTarget>,
    /// Send a copy of requests to another upstream as well (fire and forget: its answers
    /// are dropped and it never delays or changes the real response).
    #[serde(default)]
    pub mirror: Option<Mirror>,
    /// Path changes applied before proxying.
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
    /// Header changes on the request sent upstream.
    #[serde(default)]
    pub request_headers: HeaderOps,
    /// Header changes on the response sent to the client.
    #[serde(default)]
    pub response_headers: HeaderOps,
    /// Rate limits, checked in order; a request must pass all of them.
    #[serde(default)]
    pub rate_limits: Vec<RateLimit>,
    /// Requests in flight on this route (a bulkhead, fixed or adaptive). Default: no limit.
    #[serde(default)]
    pub concurrency: Option<Concurrency>,
    /// A circuit breaker over the route (`scope: route`, the default) or each value of a
    /// key (`scope: key`). Absent: none.
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// What to answer instead of an error, and when.
    #[serde(default)]
    pub fallback: Option<Fallback>,
    /// Faults to inject (delays, errors), for drills.
    #[serde(default)]
    pub fault: Option<Fault>,
    /// How much the route's requests matter under overload: `sheddable`, `normal`,
    /// `high` or `critical`. Default `normal`.
    #[serde(default)]
    pub criticality: Criticality,
    /// The authentication the route requires, and who may pass. Absent: anyone.
    #[serde(default)]
    pub auth: Option<crate::auth::RouteAuth>,
    /// Client addresses allowed and denied. Absent: all.
    #[serde(default)]
    pub ip: Option<crate::auth::IpRules>,
    /// Cross-origin resource sharing. Absent: no CORS headers, preflights go upstream.
    #[serde(default)]
    pub cors: Option<crate::cors::Cors>,
    /// Inspect requests for SQL injection and XSS. Absent: none.
    #[serde(default)]
    pub waf: Option<crate::waf::Waf>,
    /// Security response headers (CSP, frame options, referrer policy, nosniff).
    /// Absent: none added.
    #[serde(default)]
    pub security_headers: Option<crate::cors::SecurityHeaders>,
    /// Answer requests for keys that certainly do not exist with 404, without the
    /// upstream (cache-penetration protection). Absent: none.
    #[serde(default)]
    pub existence_filter: Option<crate::cache::ExistenceFilter>,
    /// Cache the route's responses (GET and HEAD) in the shared HTTP cache. Absent: none.
    #[serde(default)]
    pub cache: Option<crate::cache::RouteCache>,
    /// Keep the responses to requests with an `Idempotency-Key` and answer repeats with
    /// them. Absent: keys are passed through untouched.
    #[serde(default)]
    pub idempotency: Option<crate::cache::Idempotency>,
    /// WebSocket handshakes: allowed origins, tunnel limits and timeouts. Absent:
    /// handshakes are proxied with the defaults.
    #[serde(default)]
    pub websocket: Option<crate::websocket::WebSocket>,
}

/// One upstream of a weighted split.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitTarget {
    /// The upstream.
    pub upstream: String,
    /// Its relative share (1 to 10000).
    pub weight: u32,
}

/// Request mirroring.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// The shadow upstream.
    pub upstream: String,
    /// Share of requests copied. Default 100%.
    #[serde(default = "default_mirror_share")]
    pub share: Percent,
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
fn default_dns_refresh() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}
fn default_mirror_share() -> Percent {
    Percent(1.0)
}
fn default_heartbeat() -> Duration {
    Duration(std::time::Duration::from_secs(1))
}
fn default_redis_timeout() -> Duration {
    Duration(std::time::Duration::from_millis(50))
}
fn default_key_prefix() -> String {
    "floodgate:".into()
}
