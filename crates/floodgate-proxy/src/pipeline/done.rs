//! The record of one request, finished when its response is over (the last byte sent, or
//! the client gone): the metrics and the access-log line, and what the request held until
//! then (bulkhead places, its count in flight at the target, its connection's activity).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::HeaderValue;
use http::uri::PathAndQuery;
use http::{Method, StatusCode, Version};

use crate::access_log::{Record, rfc3339};
use crate::admission::Permit;
use crate::body::{BodyEnd, Completion};
use crate::conn::ConnInfo;
use crate::gateway::Gateway;
use crate::metrics::RouteMetrics;
use crate::problem::Problem;
use crate::snapshot::Route;
use crate::upstream::exchange::Trace;

/// Everything needed to finish a request's bookkeeping once its response is over.
pub(crate) struct Done {
    pub(crate) gw: Arc<Gateway>,
    pub(crate) conn: Arc<ConnInfo>,
    pub(crate) started: Instant,
    pub(crate) request_id: HeaderValue,
    pub(crate) method: Method,
    /// The request target as received (cheap to clone: shares the request's buffer).
    pub(crate) target: PathAndQuery,
    pub(crate) version: Version,
    pub(crate) status: StatusCode,
    /// The route's name (or the gateway's own endpoint's), for the log.
    pub(crate) route: Option<Arc<str>>,
    pub(crate) upstream: Option<Arc<str>>,
    pub(crate) error: Option<&'static str>,
    pub(crate) metrics: RouteMetrics,
    /// The limit that refused the request (or, dry run, would have).
    pub(crate) rate_limit: Option<Arc<str>>,
    pub(crate) dry_run: bool,
    /// Bulkhead places, released when the response ends.
    pub(crate) permits: Vec<Permit>,
    /// The request counted in flight at its target and the target's address, until the
    /// response ends.
    pub(crate) trace: Trace,
    /// The matched route (its fallback, response headers and what the log redacts).
    pub(crate) compiled_route: Option<Arc<Route>>,
    /// The condition a fallback answered.
    pub(crate) fallback: Option<&'static str>,
    /// The authenticated consumer.
    pub(crate) consumer: Option<Arc<str>>,
    /// What the cache did, for the log.
    pub(crate) cache: Option<&'static str>,
    /// What idempotency-key handling did, for the log.
    pub(crate) idempotency: Option<&'static str>,
}

impl Done {
    /// The record of a request that has just arrived.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        gw: Arc<Gateway>,
        conn: Arc<ConnInfo>,
        request_id: HeaderValue,
        method: Method,
        target: PathAndQuery,
        version: Version,
        metrics: RouteMetrics,
    ) -> Self {
        Done {
            gw,
            conn,
            started: Instant::now(),
            request_id,
            method,
            target,
            version,
            status: StatusCode::OK,
            route: None,
            upstream: None,
            error: None,
            metrics,
            rate_limit: None,
            dry_run: false,
            permits: Vec::new(),
            trace: Trace::default(),
            compiled_route: None,
            fallback: None,
            consumer: None,
            cache: None,
            idempotency: None,
        }
    }
}

/// Completes a request whose answer opened a WebSocket tunnel once the tunnel closes: its
/// log line then has the tunnel's duration, the bytes carried to the client and how it
/// closed. (Its latency for the metrics is the handshake's.)
pub(crate) struct AfterTunnel {
    pub(crate) done: Box<Done>,
    pub(crate) closed: crate::websocket::TunnelClosed,
}

impl Completion for AfterTunnel {
    fn done(self: Box<Self>, _head_only: u64, end: BodyEnd) {
        let AfterTunnel { done, closed } = *self;
        let answered = done.started.elapsed();
        tokio::spawn(async move {
            let closed = closed.wait().await;
            let tunnel = TunnelEnd {
                how: closed.map_or("never-opened", |c| c.reason),
                answered,
            };
            let sent = closed.map_or(0, |c| c.to_client);
            done.finish(sent, end, Some(tunnel));
        });
    }
}

/// How a request's tunnel ended, for its log line, and when its answer was made (the
/// latency the metrics record).
struct TunnelEnd {
    how: &'static str,
    answered: std::time::Duration,
}

impl Completion for Done {
    fn done(self: Box<Self>, bytes_sent: u64, end: BodyEnd) {
        self.finish(bytes_sent, end, None);
    }
}

impl Done {
    /// Records the request: metrics, then its access-log line.
    fn finish(mut self: Box<Self>, bytes_sent: u64, end: BodyEnd, tunnel: Option<TunnelEnd>) {
        let elapsed = self.started.elapsed();
        // A response that did not reach the client whole says so in the log.
        match end {
            BodyEnd::Complete => {}
            BodyEnd::ClientGone => {
                self.error = self.error.or(Some(Problem::ClientClosed.code()));
            }
            BodyEnd::UpstreamBroke => {
                self.error = self.error.or(Some(Problem::UpstreamBroken.code()));
                if let Some(upstream) = &self.upstream {
                    self.gw.metrics.upstreams.error(upstream, "broken");
                }
            }
        }
        self.metrics.record(
            self.status.as_u16(),
            tunnel
                .as_ref()
                .map_or(elapsed, |t| t.answered)
                .as_secs_f64(),
        );
        if self.gw.access_log.enabled() {
            // An API key in the query string is not written to the log.
            let redacted = self
                .compiled_route
                .as_ref()
                .and_then(|r| r.access.as_ref())
                .filter(|a| !a.query_credentials().is_empty())
                .map(|a| {
                    a.query_credentials()
                        .iter()
                        .fold(self.target.as_str().to_owned(), |t, q| {
                            crate::auth::redact_query(&t, q)
                        })
                });
            let record = Record {
                time: rfc3339(SystemTime::now() - elapsed),
                request_id: self.request_id.to_str().unwrap_or_default(),
                client: self.conn.client.ip.to_str().unwrap_or_default(),
                listener: &self.conn.listener_name,
                route: self.route.as_deref(),
                method: self.method.as_str(),
                path: redacted.as_deref().unwrap_or(self.target.as_str()),
                consumer: self.consumer.as_deref(),
                protocol: match self.version {
                    Version::HTTP_2 => "HTTP/2.0",
                    Version::HTTP_10 => "HTTP/1.0",
                    _ => "HTTP/1.1",
                },
                status: self.status.as_u16(),
                duration_ms: (elapsed.as_secs_f64() * 1e6).round() / 1e3,
                upstream: self.upstream.as_deref(),
                target: self.trace.target.as_deref(),
                bytes_sent,
                error: self.error,
                fallback: self.fallback,
                tls_client: self
                    .conn
                    .tls
                    .as_ref()
                    .and_then(|t| t.client_identity.as_deref()),
                rate_limit: self.rate_limit.as_deref(),
                dry_run: self.dry_run,
                cache: self.cache,
                idempotency: self.idempotency,
                tunnel: tunnel.as_ref().map(|t| t.how),
            };
            self.gw.access_log.log(&record);
        }
        self.conn.state.end();
    }
}
