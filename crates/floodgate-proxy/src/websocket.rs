//! WebSocket tunnels (RFC 6455 over HTTP/1.1 `Upgrade`). The handshake is a request like
//! any other: routed, authenticated, rate-limited and checked by the WAF on its way, then
//! checked here against the route's WebSocket policy (tunnels on, the page's `Origin`
//! allowed, a free tunnel) and sent upstream once, never retried, cached or mirrored. If
//! the upstream answers `101`, both connections are handed over by the HTTP/1.1 engine
//! (its upgrade seam) and become one byte tunnel, pumped here with back-pressure until
//! either side closes, the tunnel idles too long or outlives its lifetime.
//!
//! The pump is written here rather than with `tokio::io::copy_bidirectional`: that one
//! keeps a buffer per direction for the tunnel's whole life, and knows no idle timeout. An
//! idle tunnel here holds no buffer: one is taken only once a side is readable, and given
//! back when its bytes are written on.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use floodgate_config::websocket::WebSocket;
use floodgate_http1::{OnUpgrade, Transport, Upgraded};
use http::HeaderMap;
use http::header::{CONNECTION, ORIGIN, UPGRADE};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::ReadBuf;

use crate::headers::lists_token;
use crate::problem::Problem;

/// The size of the per-thread buffer tunnels read into.
const CHUNK: usize = 16 * 1024;

/// A route's WebSocket policy, compiled.
pub struct TunnelPolicy {
    enabled: bool,
    /// Allowed origins, lowercased; empty or `*`: any.
    origins: Vec<String>,
    max_tunnels: Option<u32>,
    max_per_client: Option<u32>,
    idle_timeout: Duration,
    max_lifetime: Option<Duration>,
    /// Tunnels open now on the route, kept across reloads.
    counts: Arc<TunnelCounts>,
    metrics: TunnelSeries,
}

impl TunnelPolicy {
    /// The policy for a route (`None`: the defaults), its metric series from `metrics`.
    pub fn compile(
        cfg: Option<&WebSocket>,
        route: &str,
        metrics: &WebSocketMetrics,
        counts: Arc<TunnelCounts>,
    ) -> Self {
        let defaults = WebSocket::default();
        let cfg = cfg.unwrap_or(&defaults);
        TunnelPolicy {
            enabled: cfg.enabled,
            origins: cfg
                .origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            max_tunnels: cfg.max_tunnels,
            max_per_client: cfg.max_tunnels_per_client,
            idle_timeout: cfg.idle_timeout.0,
            max_lifetime: cfg.max_lifetime.map(|d| d.0),
            counts,
            metrics: metrics.series(route),
        }
    }

    /// Admits a handshake from `client` (the consumer, else the address): a tunnel slot,
    /// or the problem that refuses it.
    pub fn admit(&self, headers: &HeaderMap, client: &str) -> Result<Slot, Problem> {
        if !self.enabled {
            return Err(Problem::WebSocketRefused(
                "This route does not accept WebSocket connections.",
            ));
        }
        if !self.origin_allowed(headers) {
            self.metrics.refused_origin.inc();
            return Err(Problem::WebSocketRefused(
                "WebSocket connections from this page's origin are not allowed on this route.",
            ));
        }
        let max = self.max_tunnels.unwrap_or(u32::MAX);
        let taken = self
            .counts
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if taken.is_err() {
            self.metrics.refused_full.inc();
            return Err(Problem::TunnelsFull);
        }
        let route = RouteSlot(self.counts.clone());
        let Some(max) = self.max_per_client else {
            return Ok(Slot {
                route,
                client: None,
            });
        };
        let key: Arc<str> = Arc::from(client);
        {
            let mut by_client = self.counts.by_client.lock();
            let n = by_client.entry(key.clone()).or_insert(0);
            if *n >= max {
                self.metrics.refused_per_client.inc();
                return Err(Problem::TunnelsPerClient);
            }
            *n += 1;
        }
        Ok(Slot {
            route,
            client: Some((self.counts.clone(), key)),
        })
    }

    /// Whether the handshake's `Origin` may open a tunnel: any when no list is set, and
    /// always when there is no `Origin` (not a browser, so nothing to hijack).
    fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        if self.origins.is_empty() || self.origins.iter().any(|o| o == "*") {
            return true;
        }
        let mut values = headers.get_all(ORIGIN).iter();
        let (Some(origin), None) = (values.next(), values.next()) else {
            // None at all is allowed; more than one is not an origin.
            return headers.get(ORIGIN).is_none();
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        self.origins.contains(&origin)
    }

    /// Runs the tunnel between the client (once its connection is handed over) and the
    /// upstream's switched connection, as a task of its own; what it returns resolves
    /// when the tunnel closes.
    pub fn spawn(&self, client: ClientSide, upstream: Upgraded, slot: Slot) -> TunnelClosed {
        let limits = Limits {
            idle: self.idle_timeout,
            lifetime: self.max_lifetime,
        };
        let metrics = self.metrics.clone();
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let Some(client) = client.upgraded().await else {
                // The 101 never reached the client (it left): nothing to tunnel.
                drop(slot);
                return;
            };
            metrics.open.inc();
            let started = tokio::time::Instant::now();
            let (end, moved) = pump(client, upstream, limits).await;
            metrics.to_upstream.inc_by(moved.to_upstream);
            metrics.to_client.inc_by(moved.to_client);
            metrics.open.dec();
            metrics.closed(end).inc();
            tracing::debug!(
                reason = end.label(),
                to_upstream = moved.to_upstream,
                to_client = moved.to_client,
                seconds = started.elapsed().as_secs_f64(),
                "WebSocket tunnel closed"
            );
            drop(slot);
            let _ = closed_tx.send(Closed {
                reason: end.label(),
                to_client: moved.to_client,
            });
        });
        TunnelClosed(Arc::new(parking_lot::Mutex::new(Some(closed_rx))))
    }
}

/// How a tunnel closed, for its access-log line.
#[derive(Debug, Clone, Copy)]
pub struct Closed {
    /// `closed`, `error`, `idle-timeout` or `max-lifetime`.
    pub reason: &'static str,
    /// Bytes carried to the client.
    pub to_client: u64,
}

/// In the extensions of a `101` answer: resolves once its tunnel has closed (so the
/// request's log line is written then, with the tunnel's life in it).
#[derive(Clone)]
pub struct TunnelClosed(Arc<parking_lot::Mutex<Option<tokio::sync::oneshot::Receiver<Closed>>>>);

impl TunnelClosed {
    /// How the tunnel closed; `None` if it never opened (the client left before the 101).
    pub async fn wait(self) -> Option<Closed> {
        let rx = self.0.lock().take()?;
        rx.await.ok()
    }
}

/// The tunnels open on a route: in all, and per client where a per-client limit is set.
/// Kept across reloads, so a new configuration's limits count the tunnels already open.
#[derive(Default)]
pub struct TunnelCounts {
    open: AtomicU32,
    by_client: parking_lot::Mutex<std::collections::HashMap<Arc<str>, u32>>,
}

/// A tunnel's place under the route's limits, given back when dropped.
pub struct Slot {
    #[allow(dead_code)] // Held for its drop.
    route: RouteSlot,
    client: Option<(Arc<TunnelCounts>, Arc<str>)>,
}

/// The place under the route-wide limit.
struct RouteSlot(Arc<TunnelCounts>);

impl Drop for RouteSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((counts, key)) = self.client.take() {
            let mut counts = counts.by_client.lock();
            if let Some(n) = counts.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(&key);
                }
            }
        }
    }
}

/// Where the client's side of a tunnel comes from.
pub enum ClientSide {
    /// An HTTP/1.1 upgrade, handed over by the gateway's engine once the 101 is written.
    Http1(OnUpgrade),
    /// An HTTP/2 extended CONNECT stream (RFC 8441), handed over by hyper once the 200
    /// is sent.
    Http2(hyper::upgrade::OnUpgrade),
}

impl ClientSide {
    /// The client's connection (or stream) as a byte stream, once handed over.
    async fn upgraded(self) -> Option<Upgraded> {
        match self {
            ClientSide::Http1(on) => on.upgraded().await,
            ClientSide::Http2(on) => on.await.ok().map(|stream| Upgraded {
                io: Box::new(floodgate_http1::Plain(hyper_util::rt::TokioIo::new(stream))),
                read_ahead: Bytes::new(),
            }),
        }
    }
}

/// Whether a request is WebSocket over HTTP/2 (RFC 8441: CONNECT with the `:protocol`
/// pseudo-header `websocket`).
pub fn is_extended_connect(method: &http::Method, extensions: &http::Extensions) -> bool {
    *method == http::Method::CONNECT
        && extensions
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// A fresh `Sec-WebSocket-Key` (16 random bytes, base64), for a handshake the gateway
/// makes itself toward an HTTP/1.1 upstream on behalf of an HTTP/2 client.
pub fn new_key() -> http::HeaderValue {
    use base64ct::Encoding;
    let key = base64ct::Base64::encode_string(&fastrand::u128(..).to_le_bytes());
    http::HeaderValue::from_str(&key)
        .unwrap_or(http::HeaderValue::from_static("AAAAAAAAAAAAAAAAAAAAAA=="))
}

/// The `Sec-WebSocket-Accept` an upstream must answer a key with (RFC 6455 §4.2.2).
pub fn accept_for(key: &[u8]) -> String {
    use base64ct::Encoding;
    let mut input = key.to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64ct::Base64::encode_string(digest.as_ref())
}

/// Whether a request is a WebSocket handshake (RFC 6455 §4.1: GET, `Upgrade: websocket`,
/// `Connection: upgrade`).
pub fn is_handshake(method: &http::Method, headers: &HeaderMap) -> bool {
    *method == http::Method::GET
        && lists_token(headers, &UPGRADE, "websocket")
        && lists_token(headers, &CONNECTION, "upgrade")
}

/// How long a tunnel may idle and live.
#[derive(Clone, Copy)]
struct Limits {
    idle: Duration,
    lifetime: Option<Duration>,
}

/// Why a tunnel ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Both sides closed.
    Closed,
    /// Reading or writing failed on a side.
    Error,
    /// Nothing moved for the idle timeout.
    Idle,
    /// The tunnel reached its maximum lifetime.
    Lifetime,
}

impl End {
    fn label(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Error => "error",
            End::Idle => "idle-timeout",
            End::Lifetime => "max-lifetime",
        }
    }
}

/// Bytes moved each way.
#[derive(Default, Clone, Copy)]
struct Moved {
    to_upstream: u64,
    to_client: u64,
}

/// Moves bytes both ways until the tunnel ends.
async fn pump(client: Upgraded, upstream: Upgraded, limits: Limits) -> (End, Moved) {
    let Upgraded {
        io: mut client_io,
        read_ahead: client_ahead,
    } = client;
    let Upgraded {
        io: mut upstream_io,
        read_ahead: upstream_ahead,
    } = upstream;
    let mut up = Direction::new(client_ahead);
    let mut down = Direction::new(upstream_ahead);
    let mut idle = Box::pin(tokio::time::sleep(limits.idle));
    let mut lifetime = limits.lifetime.map(|d| Box::pin(tokio::time::sleep(d)));
    let end = std::future::poll_fn(|cx| {
        let before = up.moved + down.moved;
        let a = up.poll(cx, &mut *client_io, &mut *upstream_io);
        let b = down.poll(cx, &mut *upstream_io, &mut *client_io);
        match (a, b) {
            (Poll::Ready(Err(_)), _) | (_, Poll::Ready(Err(_))) => {
                return Poll::Ready(End::Error);
            }
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => return Poll::Ready(End::Closed),
            _ => {}
        }
        if up.moved + down.moved != before {
            idle.as_mut()
                .reset(tokio::time::Instant::now() + limits.idle);
        }
        if idle.as_mut().poll(cx).is_ready() {
            return Poll::Ready(End::Idle);
        }
        if let Some(l) = lifetime.as_mut()
            && l.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(End::Lifetime);
        }
        Poll::Pending
    })
    .await;
    let moved = Moved {
        to_upstream: up.moved,
        to_client: down.moved,
    };
    (end, moved)
}

/// One direction of a tunnel: bytes read from one side, written to the other.
struct Direction {
    /// Bytes read and not yet written on; no buffer while there are none.
    pending: Bytes,
    /// The reading side has closed.
    read_done: bool,
    /// The writing side has been shut down after that.
    shut: bool,
    /// Bytes written on so far.
    moved: u64,
}

impl Direction {
    fn new(first: Bytes) -> Self {
        Direction {
            pending: first,
            read_done: false,
            shut: false,
            moved: 0,
        }
    }

    /// Moves what it can; ready once the reading side closed and the writing side was
    /// shut down after the last byte.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut dyn Transport,
        to: &mut dyn Transport,
    ) -> Poll<std::io::Result<()>> {
        loop {
            while !self.pending.is_empty() {
                let n = std::task::ready!(Pin::new(&mut *to).poll_write(cx, &self.pending))?;
                if n == 0 {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                self.moved += n as u64;
                let _written = self.pending.split_to(n);
            }
            if self.read_done {
                if !self.shut {
                    std::task::ready!(Pin::new(&mut *to).poll_flush(cx))?;
                    // The other side may already be gone; the tunnel ends either way.
                    let _ = std::task::ready!(Pin::new(&mut *to).poll_shutdown(cx));
                    self.shut = true;
                }
                return Poll::Ready(Ok(()));
            }
            // Read only once the side is readable, into the thread's scratch buffer, and
            // write on at once: an idle tunnel holds no buffer, and only what the other
            // side does not take now is copied out to wait.
            std::task::ready!(from.poll_read_ready(cx))?;
            let step = SCRATCH.with(|scratch| {
                let mut buf = scratch.borrow_mut();
                let mut read = ReadBuf::new(&mut buf[..]);
                match Pin::new(&mut *from).poll_read(cx, &mut read) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {}
                }
                let n = read.filled().len();
                if n == 0 {
                    self.read_done = true;
                    return Poll::Ready(Ok(()));
                }
                let mut written = 0;
                while written < n {
                    match Pin::new(&mut *to).poll_write(cx, &buf[written..n]) {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                        }
                        Poll::Ready(Ok(k)) => written += k,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => break,
                    }
                }
                self.moved += written as u64;
                if written < n {
                    self.pending = Bytes::copy_from_slice(&buf[written..n]);
                }
                Poll::Ready(Ok(()))
            });
            std::task::ready!(step)?;
        }
    }
}

thread_local! {
    /// Where tunnels on this thread read into before writing on.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; CHUNK].into_boxed_slice());
}

/// The WebSocket metric families.
pub struct WebSocketMetrics {
    open: Family<RouteLabel, Gauge>,
    closed: Family<RouteReason, Counter>,
    refused: Family<RouteReason, Counter>,
    bytes: Family<RouteDirection, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteReason {
    route: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteDirection {
    route: String,
    direction: &'static str,
}

impl WebSocketMetrics {
    /// Registers the families.
    pub(crate) fn register(reg: &mut Registry) -> Self {
        let m = WebSocketMetrics {
            open: Family::default(),
            closed: Family::default(),
            refused: Family::default(),
            bytes: Family::default(),
        };
        reg.register(
            "websocket_tunnels_open",
            "WebSocket tunnels open now, by route",
            m.open.clone(),
        );
        reg.register(
            "websocket_tunnels_closed",
            "WebSocket tunnels closed, by route and reason (closed, error, idle-timeout, max-lifetime)",
            m.closed.clone(),
        );
        reg.register(
            "websocket_handshakes_refused",
            "WebSocket handshakes refused by the route's policy, by route and reason (origin, tunnels-full, too-many-tunnels)",
            m.refused.clone(),
        );
        reg.register(
            "websocket_bytes",
            "Bytes carried by WebSocket tunnels, by route and direction (to-upstream, to-client)",
            m.bytes.clone(),
        );
        m
    }

    fn series(&self, route: &str) -> TunnelSeries {
        let reason = |reason| RouteReason {
            route: route.to_owned(),
            reason,
        };
        let direction = |direction| RouteDirection {
            route: route.to_owned(),
            direction,
        };
        // One statement each: a family's read guard lives to the end of its statement,
        // and a second lookup in the same family would wait on it for ever.
        let open = self
            .open
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .clone();
        let closed = [End::Closed, End::Error, End::Idle, End::Lifetime]
            .map(|e| self.closed.get_or_create(&reason(e.label())).clone());
        let refused_origin = self.refused.get_or_create(&reason("origin")).clone();
        let refused_full = self.refused.get_or_create(&reason("tunnels-full")).clone();
        let refused_per_client = self
            .refused
            .get_or_create(&reason("too-many-tunnels"))
            .clone();
        let to_upstream = self.bytes.get_or_create(&direction("to-upstream")).clone();
        let to_client = self.bytes.get_or_create(&direction("to-client")).clone();
        TunnelSeries {
            open,
            closed,
            refused_origin,
            refused_full,
            refused_per_client,
            to_upstream,
            to_client,
        }
    }
}

/// One route's WebSocket series.
#[derive(Clone)]
struct TunnelSeries {
    open: Gauge,
    closed: [Counter; 4],
    refused_origin: Counter,
    refused_full: Counter,
    refused_per_client: Counter,
    to_upstream: Counter,
    to_client: Counter,
}

impl TunnelSeries {
    fn closed(&self, end: End) -> &Counter {
        &self.closed[end as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn policy(origins: &[&str], max: Option<u32>) -> TunnelPolicy {
        let mut reg = Registry::default();
        let metrics = WebSocketMetrics::register(&mut reg);
        TunnelPolicy::compile(
            Some(&WebSocket {
                origins: origins.iter().map(|s| (*s).to_owned()).collect(),
                max_tunnels: max,
                ..WebSocket::default()
            }),
            "r",
            &metrics,
            Arc::default(),
        )
    }

    fn with_origin(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, HeaderValue::from_str(origin).unwrap());
        h
    }

    #[test]
    fn the_accept_value_is_the_rfcs_example() {
        assert_eq!(
            accept_for(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(new_key().len(), 24);
    }

    #[test]
    fn a_handshake_needs_get_and_both_tokens() {
        let mut h = HeaderMap::new();
        h.insert(UPGRADE, HeaderValue::from_static("WebSocket"));
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(is_handshake(&http::Method::GET, &h));
        assert!(!is_handshake(&http::Method::POST, &h));
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
        assert!(!is_handshake(&http::Method::GET, &h));
        h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!is_handshake(&http::Method::GET, &h));
    }

    #[test]
    fn origins_are_matched_exactly_and_absent_ones_pass() {
        let p = policy(&["https://app.example.com/"], None);
        assert!(
            p.admit(&with_origin("https://APP.example.com"), "c")
                .is_ok()
        );
        assert!(p.admit(&HeaderMap::new(), "c").is_ok());
        for other in [
            "https://evil.example",
            "https://app.example.com.evil.example",
            "http://app.example.com",
            "null",
        ] {
            assert!(
                matches!(
                    p.admit(&with_origin(other), "c"),
                    Err(Problem::WebSocketRefused(_))
                ),
                "{other}"
            );
        }
        let mut two = with_origin("https://app.example.com");
        two.append(ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(p.admit(&two, "c").is_err(), "two origins are not an origin");
        assert!(
            policy(&["*"], None)
                .admit(&with_origin("null"), "c")
                .is_ok()
        );
    }

    #[test]
    fn each_client_has_its_own_allowance() {
        let mut reg = Registry::default();
        let metrics = WebSocketMetrics::register(&mut reg);
        let p = TunnelPolicy::compile(
            Some(&WebSocket {
                max_tunnels_per_client: Some(1),
                ..WebSocket::default()
            }),
            "r",
            &metrics,
            Arc::default(),
        );
        let a = p.admit(&HeaderMap::new(), "alice").unwrap();
        assert!(matches!(
            p.admit(&HeaderMap::new(), "alice"),
            Err(Problem::TunnelsPerClient)
        ));
        let _b = p.admit(&HeaderMap::new(), "bob").unwrap();
        drop(a);
        assert!(p.admit(&HeaderMap::new(), "alice").is_ok());
        assert_eq!(
            p.counts.by_client.lock().len(),
            1,
            "closed clients are forgotten"
        );
    }

    #[test]
    fn tunnels_beyond_the_limit_are_refused_until_one_closes() {
        let p = policy(&[], Some(2));
        let a = p.admit(&HeaderMap::new(), "c").unwrap();
        let _b = p.admit(&HeaderMap::new(), "c").unwrap();
        assert!(matches!(
            p.admit(&HeaderMap::new(), "c"),
            Err(Problem::TunnelsFull)
        ));
        drop(a);
        assert!(p.admit(&HeaderMap::new(), "c").is_ok());
    }
}
