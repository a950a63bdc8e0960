//! Upstream connections: a pool of idle HTTP/1.1 connections per target, and the exchange of
//! one request on a connection driven *inline*, by the task that serves the client request.
//!
//! hyper-util's pooled client runs every upstream connection as a task of its own and hands
//! the request, the response head and each body frame between tasks through channels: several
//! cross-task wake-ups per request, which made the upstream half of a proxied request cost
//! about twice what the client half did. Here the client request's task polls hyper's HTTP/1
//! connection itself (hyper still does all framing: lengths, chunking, keep-alive rules), and
//! the response body keeps polling it until the last byte; then the connection goes back to
//! the pool. An idle pooled connection is polled by nobody, so a checkout first polls it once
//! to learn whether the upstream closed it meanwhile.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::RequestBody;

type Sender = http1::SendRequest<RequestBody>;
type Driver = http1::Connection<TokioIo<TcpStream>, RequestBody>;

/// Why an exchange failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// No connection could be made (refused, unreachable, timed out).
    Connect,
    /// The connection broke during the exchange.
    Broken(hyper::Error),
}

/// One upstream HTTP/1.1 connection: the handle to send on and the connection state machine,
/// which whoever holds it must poll.
pub struct UpstreamConn {
    sender: Sender,
    /// Boxed: hyper's connection state is large, and the handle moves in and out of the pool.
    driver: Box<Driver>,
    /// The driver finished (connection closed or failed); it must not be polled again.
    done: bool,
}

impl UpstreamConn {
    /// Polls the connection: reads and writes whatever is due. Returns true while it lives.
    pub fn poll_driver(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.done && Pin::new(&mut *self.driver).poll(cx).is_ready() {
            self.done = true;
        }
        !self.done
    }

    /// Whether an idle connection can take a request: still open, and hyper ready to send.
    fn usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.poll_driver(&mut cx) && self.sender.is_ready()
    }

    /// Sends `req` and drives the connection until the response head arrives. On failure
    /// before the request was written, the request comes back so it can go elsewhere.
    async fn exchange(
        &mut self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, (hyper::Error, Option<Request<RequestBody>>)> {
        let mut response = std::pin::pin!(self.sender.try_send_request(req));
        let driver = &mut *self.driver;
        let done = &mut self.done;
        std::future::poll_fn(|cx| {
            // Twice: driving the connection can complete the response, and polling the
            // response can ask the connection for more.
            for _ in 0..2 {
                if !*done && Pin::new(&mut *driver).poll(cx).is_ready() {
                    *done = true;
                }
                if let Poll::Ready(r) = response.as_mut().poll(cx) {
                    return Poll::Ready(r.map_err(|mut e| {
                        let req = e.take_message();
                        (e.into_error(), req)
                    }));
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// Idle connections to one target.
pub struct ConnPool {
    address: String,
    idle: Mutex<Vec<(UpstreamConn, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

impl ConnPool {
    /// A pool for `address` (`host:port`).
    pub fn new(
        address: &str,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        ConnPool {
            address: address.to_owned(),
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            connect_timeout,
        }
    }

    /// Sends `req` on a pooled or new connection and returns the response head with the
    /// connection, which the response body must keep driving. A pooled connection found dead
    /// before the request was written is replaced once by a new connection.
    pub async fn send(
        &self,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, UpstreamConn), ExchangeError> {
        loop {
            let (mut conn, fresh) = match self.take_idle() {
                Some(c) => (c, false),
                None => (self.connect().await?, true),
            };
            match conn.exchange(req).await {
                Ok(resp) => return Ok((resp, conn)),
                Err((_, Some(unsent))) if !fresh => req = unsent,
                Err((e, _)) => return Err(ExchangeError::Broken(e)),
            }
        }
    }

    /// Puts a connection whose exchange finished back for reuse.
    pub fn put(&self, mut conn: UpstreamConn) {
        let mut cx = Context::from_waker(Waker::noop());
        if !conn.poll_driver(&mut cx) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push((conn, Instant::now()));
        }
    }

    /// The most recently used live connection, dropping expired and closed ones on the way.
    fn take_idle(&self) -> Option<UpstreamConn> {
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

    async fn connect(&self) -> Result<UpstreamConn, ExchangeError> {
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(self.address.as_str()),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(target = %self.address, error = %e, "upstream connect failed");
                return Err(ExchangeError::Connect);
            }
            Err(_) => {
                tracing::debug!(target = %self.address, "upstream connect timed out");
                return Err(ExchangeError::Connect);
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        let (sender, driver) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ExchangeError::Broken)?;
        Ok(UpstreamConn {
            sender,
            driver: Box::new(driver),
            done: false,
        })
    }

    /// Number of idle connections (for tests and metrics).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map_or(0, |i| i.len())
    }
}
