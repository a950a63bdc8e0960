//! Upstream connections: a pool of idle HTTP/1.1 connections per target, and the exchange of
//! one request on a connection driven *inline*, by the task that serves the client request.
//!
//! hyper-util's pooled client runs every upstream connection as a task of its own and hands
//! the request, the response head and each body frame between tasks through channels: several
//! cross-task wake-ups per request, which made the upstream half of a proxied request cost
//! about twice what the client half did. Here the client request's task drives the
//! connection itself, with the gateway's own HTTP/1.1 engine ([`floodgate_http1::client`]:
//! strict framing, the same rules as toward clients), and the response body reads it until
//! the last byte; then the connection goes back to the pool. An idle pooled connection is polled by nobody, so a checkout first polls it once
//! to learn whether the upstream closed it meanwhile, and a periodic sweep
//! ([`ConnPool::sweep`]) drops the ones that expired or were closed while traffic was quiet.
//!
//! A target spoken to over HTTP/2 has one multiplexed connection instead, driven through the
//! `h2` crate ([`super::http2`], which says why not hyper's client).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use floodgate_http1::{ClientConfig, ClientConn, IncomingBody, SendError};
use http::{Request, Response};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::http2;
use super::tls::{MaybeTls, TlsSetup};
use crate::request_body::{BoxError, RequestBody};

type Conn = ClientConn<MaybeTls, RequestBody>;

/// Why an exchange failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// No connection could be made (refused, unreachable, timed out).
    Connect,
    /// The connection broke during the exchange.
    Broken(BoxError),
}

/// A response body from an upstream, over either protocol.
pub enum UpstreamBody {
    /// Read from an HTTP/1.1 connection.
    H1(IncomingBody),
    /// Read from an HTTP/2 stream.
    H2(http2::ResponseStream),
    /// Another body, translated on its way (gRPC to gRPC-Web).
    Mapped(Pin<Box<dyn http_body::Body<Data = bytes::Bytes, Error = BoxError> + Send>>),
}

impl http_body::Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::H1(b) => Pin::new(b).poll_frame(cx).map_err(BoxError::from),
            UpstreamBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(BoxError::from),
            UpstreamBody::Mapped(b) => b.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::H1(b) => b.is_end_stream(),
            UpstreamBody::H2(b) => b.is_end_stream(),
            UpstreamBody::Mapped(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            UpstreamBody::H1(b) => b.size_hint(),
            UpstreamBody::H2(b) => b.size_hint(),
            UpstreamBody::Mapped(b) => b.size_hint(),
        }
    }
}

/// One upstream connection as seen by an exchange and its response body. HTTP/1.1: the
/// connection, which whoever holds it must poll. HTTP/2: nothing, since the multiplexed
/// connection runs as a task of its own.
pub struct UpstreamConn {
    link: Link,
    /// Whether the last exchange ran on a connection that already existed (for the reuse
    /// ratio), rather than one opened for it.
    pub reused: bool,
}

enum Link {
    H1(H1Conn),
    H2,
}

impl UpstreamConn {
    /// After a `101 Switching Protocols` answer: the switched connection.
    pub fn upgrade(self) -> Option<floodgate_http1::Upgraded> {
        match self.link {
            Link::H1(c) => (*c.conn).upgrade(),
            Link::H2 => None,
        }
    }

    /// Polls the connection: reads and writes whatever is due. Returns true while it lives.
    pub fn poll_driver(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.link {
            Link::H1(c) => c.poll_driver(cx),
            Link::H2 => true,
        }
    }
}

/// An HTTP/1.1 connection.
struct H1Conn {
    /// Boxed: the connection's state moves in and out of the pool.
    conn: Box<Conn>,
}

impl H1Conn {
    fn poll_driver(&mut self, cx: &mut Context<'_>) -> bool {
        self.conn.poll_driver(cx)
    }

    /// Whether an idle connection can take a request: still open, nothing unasked for.
    fn usable(&mut self) -> bool {
        self.conn.is_usable()
    }

    /// Sends `req` and reads until the response head arrives. On failure before the
    /// request was written, the request comes back so it can go elsewhere.
    async fn exchange(
        &mut self,
        req: Request<RequestBody>,
    ) -> Result<Response<IncomingBody>, (BoxError, Option<Request<RequestBody>>)> {
        match self.conn.send(req).await {
            Ok(resp) => Ok(resp),
            Err(SendError::Unsent(req, e)) => Err((e.into(), Some(*req))),
            Err(SendError::Failed(e)) => Err((e.into(), None)),
        }
    }
}

/// Whether a request may go out again after a connection broke under it without an answer:
/// an idempotent method (RFC 9110 §9.2.2) and no body.
fn replayable(req: &Request<RequestBody>) -> bool {
    use http::Method;
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) && http_body::Body::is_end_stream(req.body())
}

/// A request to send upstream, besides its body: what it is made from, and made again from
/// for another try.
pub struct RequestHead {
    /// The method.
    pub method: http::Method,
    /// The target in origin form (the connection is already to the target).
    pub uri: http::Uri,
    /// The fields, hop-by-hop ones removed and this hop's added.
    pub headers: http::HeaderMap,
}

impl RequestHead {
    /// An HTTP/1.1 request with this head and `body`.
    pub fn request(&self, body: RequestBody) -> Request<RequestBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = http::Version::HTTP_11;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Makes a request again for a second try; the caller keeps what it was made from, so the
/// common case (the first try answers) copies nothing.
pub type Remake<'a> = &'a (dyn Fn() -> Request<RequestBody> + Sync);

/// Tries of a request on HTTP/2 connections when it is known not to have been processed
/// (a new connection can itself be going away by the time the request reaches it).
const H2_ATTEMPTS: u32 = 5;

/// How a pool talks to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1, a pool of keep-alive connections.
    Http1,
    /// HTTP/2 with prior knowledge (h2c): one multiplexed connection.
    Http2,
}

/// Connections to one target: idle HTTP/1.1 ones, or the one HTTP/2 connection.
pub struct ConnPool {
    /// What the balancers know about this target (in flight, latency).
    pub stats: Arc<super::TargetStats>,
    address: String,
    protocol: Protocol,
    idle: Mutex<Vec<(H1Conn, Instant)>>,
    h2: tokio::sync::Mutex<Option<H2Link>>,
    /// Numbers HTTP/2 connections, so a failed one is forgotten only if still current.
    h2_made: std::sync::atomic::AtomicU64,
    /// TLS to the target, if configured (or why it could not be set up).
    tls: Option<Result<TlsSetup, String>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

/// The target's HTTP/2 connection: the handle to open streams on, its number, and whether
/// its task has ended.
struct H2Link {
    sender: http2::Sender,
    number: u64,
    ended: Arc<std::sync::atomic::AtomicBool>,
}

impl ConnPool {
    /// A pool for `address` (`host:port`).
    pub fn new(
        address: &str,
        protocol: Protocol,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        Self::with_tls(
            address,
            protocol,
            None,
            max_idle,
            idle_timeout,
            connect_timeout,
        )
    }

    /// A pool that opens TLS (`tls`: the settings and the server name) to `address`.
    pub fn with_tls(
        address: &str,
        protocol: Protocol,
        tls: Option<(&floodgate_config::model::UpstreamTls, &str)>,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        let alpn: &[u8] = match protocol {
            Protocol::Http1 => b"http/1.1",
            Protocol::Http2 => b"h2",
        };
        let tls = tls.map(|(settings, name)| {
            TlsSetup::new(settings, name, alpn).inspect_err(|e| {
                tracing::error!(address = address, error = %e, "upstream TLS cannot be set up; connections will fail");
            })
        });
        ConnPool {
            tls,
            stats: Arc::default(),
            address: address.to_owned(),
            protocol,
            idle: Mutex::new(Vec::new()),
            h2: tokio::sync::Mutex::new(None),
            h2_made: std::sync::atomic::AtomicU64::new(0),
            max_idle,
            idle_timeout,
            connect_timeout,
        }
    }

    /// Sends `req` on a pooled or new connection and returns the response head with the
    /// connection, which the response body must keep driving.
    ///
    /// An upstream may close an idle keep-alive connection just as a request goes out on it.
    /// When nothing of the request was written, hyper hands it back and it goes out on
    /// another connection, whatever its method. When it was written but no answer came, a
    /// request that is idempotent (RFC 9110 §9.2.2) and has no body is sent once more on a
    /// new connection, as nginx does for keep-alive connections (`remake` makes it again);
    /// anything else fails.
    pub async fn send(
        &self,
        mut req: Request<RequestBody>,
        remake: Remake<'_>,
    ) -> Result<(Response<UpstreamBody>, UpstreamConn), ExchangeError> {
        // Boxed, as `connect` below: their futures are large and rarely run (HTTP/1.1
        // requests mostly go out on pooled connections), and every request's future would
        // otherwise carry their size, copied each time it is moved.
        if self.protocol == Protocol::Http2 {
            return Box::pin(self.send_h2(req)).await;
        }
        let mut replayed = false;
        loop {
            // A replay goes out on a new connection: the pool just gave us a stale one.
            let idle = if replayed { None } else { self.take_idle() };
            let (mut conn, reused) = match idle {
                Some(c) => (c, true),
                None => (Box::pin(self.connect()).await?, false),
            };
            // Only a reused connection can be stale, so only then may the request be replayed.
            let may_replay = reused && !replayed && replayable(&req);
            match conn.exchange(req).await {
                Ok(resp) => {
                    return Ok((
                        resp.map(UpstreamBody::H1),
                        UpstreamConn {
                            link: Link::H1(conn),
                            reused,
                        },
                    ));
                }
                Err((_, Some(unsent))) if reused => req = unsent,
                Err((e, _)) if may_replay => {
                    tracing::debug!(address = %self.address, error = %e, "reused connection failed; replaying on a new one");
                    req = remake();
                    replayed = true;
                }
                Err((e, _)) => return Err(ExchangeError::Broken(e)),
            }
        }
    }

    /// Sends `req` on the target's HTTP/2 connection (made if there is none or it closed).
    /// HTTP/2 carries the host as `:authority`, so the `Host` field becomes the URI's
    /// authority (the target's address when there is none).
    async fn send_h2(
        &self,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<UpstreamBody>, UpstreamConn), ExchangeError> {
        let host = req.headers_mut().remove(http::header::HOST);
        let authority = host
            .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
            .or_else(|| http::uri::Authority::try_from(self.address.as_str()).ok());
        let mut parts = req.uri().clone().into_parts();
        parts.scheme = Some(if self.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        });
        parts.authority = authority;
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        *req.version_mut() = http::Version::HTTP_2;
        // A request the server certainly did not process goes out again on a new
        // connection, whatever its method: one whose stream could not be opened (it comes
        // back untouched), or one whose stream the server refused or left above its GOAWAY's
        // last stream id (again only if its body could be copied; see `http2`). At most
        // `H2_ATTEMPTS` tries.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (sender, number, reused) = self.h2_sender().await?;
            let failed = match http2::exchange(sender, req).await {
                Ok(resp) => {
                    return Ok((
                        resp.map(UpstreamBody::H2),
                        UpstreamConn {
                            link: Link::H2,
                            reused,
                        },
                    ));
                }
                Err(failed) => failed,
            };
            // Forget a connection that failed as a whole (gone, going away), so the next
            // request makes a new one; a reset of one stream leaves the others be.
            if !failed.error().is_reset() {
                self.forget_h2(number).await;
            }
            let (again, error) = match failed {
                http2::Failed::Unsent(req, e) => (Some(req), e),
                http2::Failed::Unprocessed(req, e) => (req, e),
                http2::Failed::Broken(e) => (None, e),
            };
            match again {
                Some(again) if attempt < H2_ATTEMPTS => {
                    tracing::debug!(address = %self.address, error = %error, "HTTP/2 request not processed; sending it on a new connection");
                    req = again;
                }
                _ => {
                    tracing::debug!(address = %self.address, error = ?error, "HTTP/2 exchange failed");
                    return Err(ExchangeError::Broken(error.into()));
                }
            }
        }
    }

    /// The live HTTP/2 connection's handle, or a new connection's; its number, and whether
    /// it existed.
    async fn h2_sender(&self) -> Result<(http2::Sender, u64, bool), ExchangeError> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let mut slot = self.h2.lock().await;
        if let Some(link) = slot.as_ref()
            && !link.ended.load(Ordering::Acquire)
        {
            return Ok((link.sender.clone(), link.number, true));
        }
        let stream = self.tcp().await?;
        let ended = Arc::new(AtomicBool::new(false));
        let flag = ended.clone();
        let sender = http2::handshake(stream, self.address.clone(), move || {
            flag.store(true, Ordering::Release);
        })
        .await
        .map_err(|e| ExchangeError::Broken(e.into()))?;
        let number = self.h2_made.fetch_add(1, Ordering::Relaxed);
        *slot = Some(H2Link {
            sender: sender.clone(),
            number,
            ended,
        });
        Ok((sender, number, false))
    }

    /// Forgets HTTP/2 connection `number` if it is still the current one.
    async fn forget_h2(&self, number: u64) {
        let mut slot = self.h2.lock().await;
        if slot.as_ref().is_some_and(|l| l.number == number) {
            *slot = None;
        }
    }

    /// Puts a connection whose exchange finished back for reuse.
    pub fn put(&self, conn: UpstreamConn) {
        let Link::H1(conn) = conn.link else {
            return;
        };
        if !conn.conn.is_reusable() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push((conn, Instant::now()));
        }
    }

    /// The most recently used live connection, dropping expired and closed ones on the way.
    fn take_idle(&self) -> Option<H1Conn> {
        loop {
            let (mut conn, since) = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                // Oldest first: drop the ones idle for too long.
                let expired = idle
                    .iter()
                    .take_while(|(_, t)| now.duration_since(*t) >= self.idle_timeout)
                    .count();
                idle.drain(..expired);
                idle.pop()?
            };
            if since.elapsed() < self.idle_timeout && conn.usable() {
                return Some(conn);
            }
        }
    }

    /// A connection to the target (TCP, and TLS if configured), within the connect timeout.
    async fn tcp(&self) -> Result<MaybeTls, ExchangeError> {
        let tcp = self.tcp_only().await?;
        match &self.tls {
            None => Ok(MaybeTls::Plain(tcp)),
            Some(Err(_)) => Err(ExchangeError::Connect),
            Some(Ok(setup)) => {
                match tokio::time::timeout(self.connect_timeout, setup.connect(tcp)).await {
                    Ok(Ok(stream)) => Ok(stream),
                    Ok(Err(e)) => {
                        tracing::warn!(address = %self.address, error = %e, "upstream TLS handshake failed");
                        Err(ExchangeError::Connect)
                    }
                    Err(_) => {
                        tracing::debug!(address = %self.address, "upstream TLS handshake timed out");
                        Err(ExchangeError::Connect)
                    }
                }
            }
        }
    }

    /// A TCP connection to the target, within the connect timeout.
    async fn tcp_only(&self) -> Result<TcpStream, ExchangeError> {
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(self.address.as_str()),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(address = %self.address, error = %e, "upstream connect failed");
                return Err(ExchangeError::Connect);
            }
            Err(_) => {
                tracing::debug!(address = %self.address, "upstream connect timed out");
                return Err(ExchangeError::Connect);
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        Ok(stream)
    }

    async fn connect(&self) -> Result<H1Conn, ExchangeError> {
        let stream = self.tcp().await?;
        Ok(H1Conn {
            conn: Box::new(ClientConn::new(stream, ClientConfig::default())),
        })
    }

    /// Drops idle connections that expired or that the upstream closed, so closed sockets
    /// do not wait in CLOSE_WAIT for the next request to notice them.
    pub fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let timeout = self.idle_timeout;
        idle.retain_mut(|(conn, since)| since.elapsed() < timeout && conn.usable());
    }

    /// Number of idle connections (for tests and metrics).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map_or(0, |i| i.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn sweep_drops_connections_the_upstream_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 1024];
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.expect("read");
                head.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .expect("write");
            s // closed when the caller drops it
        });
        let pool = ConnPool::new(
            &addr,
            Protocol::Http1,
            8,
            Duration::from_secs(60),
            Duration::from_secs(2),
        );
        let req = Request::get("/")
            .header("host", "t")
            .body(RequestBody::empty())
            .expect("request");
        let (resp, conn) = pool
            .send(req, &|| Request::new(RequestBody::empty()))
            .await
            .expect("exchange");
        assert_eq!(resp.status(), 204);
        pool.put(conn);
        pool.sweep();
        assert_eq!(pool.idle_count(), 1, "a live connection stays");

        drop(server.await.expect("server"));
        // The FIN arrives asynchronously: sweep until it is seen (bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.idle_count() > 0 {
            assert!(Instant::now() < deadline, "closed connection still pooled");
            tokio::task::yield_now().await;
            pool.sweep();
        }
    }
}
