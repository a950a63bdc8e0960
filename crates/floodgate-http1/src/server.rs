//! The server side: one connection, its requests read and answered in order.
//!
//! The connection is one task. It waits for a head (holding no buffer while idle), parses
//! it strictly, hands the request to the [`Service`] and awaits its answer, then writes
//! the response head and body from a pooled write buffer, coalescing small pieces into one
//! write and writing large ones beside it in one vectored write. The request body is read
//! by whoever polls it, straight from the socket ([`crate::wire`]).
//!
//! Pipelined requests are answered in order, one at a time: the next head is parsed from
//! what is already buffered once the previous response has been written. A connection is
//! reused only when the request's body was read to its end (or its rest is already
//! buffered) and the response was written whole; otherwise it is closed, after a short
//! lingering read so the client sees the answer rather than a reset. A malformed head is
//! answered by [`Service::refuse`] and the connection closed.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::header::CONTENT_LENGTH;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use parking_lot::Mutex;

use crate::chunked::ChunkLimits;
use crate::encode::{self, Outgoing};
use crate::head::{ConnectionOptions, HeadError, HeadLimits, parse_request};
use crate::incoming::{IncomingBody, Source};
use crate::out::Out;
use crate::upgrade::{self, Upgraded};
use crate::wire::{Transport, Wire};

/// A connection's settings.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// Bounds on request heads.
    pub head: HeadLimits,
    /// Bounds on chunked request bodies.
    pub chunks: ChunkLimits,
    /// The size of a read buffer, lent while the connection reads.
    pub read_buffer: usize,
    /// The size of a write buffer, lent while the connection writes.
    pub write_buffer: usize,
    /// The longest a head may take to arrive once its first byte has.
    pub header_read_timeout: Duration,
    /// The longest the connection lingers reading (and dropping) what the client still
    /// sends after the gateway decided to close it.
    pub linger: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            head: HeadLimits::default(),
            chunks: ChunkLimits::default(),
            read_buffer: 8 * 1024,
            write_buffer: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
            linger: Duration::from_secs(2),
        }
    }
}

/// What answers the requests of a connection.
pub trait Service: Send + 'static {
    /// The response body.
    type Body: Body<Data = Bytes> + Send + Unpin + 'static;
    /// The answer to one request. (Kept in the connection's task while the request is in
    /// flight: a small, boxed future keeps idle connections small.)
    type Future: Future<Output = Response<Self::Body>> + Send;

    /// Answers a request.
    fn call(&mut self, req: Request<IncomingBody>) -> Self::Future;

    /// The answer to a head that is refused (malformed, too large, too slow); the
    /// connection closes after it.
    fn refuse(&mut self, error: HeadError) -> Response<Self::Body>;
}

/// A connection being served. Poll it to its end; [`Connection::graceful_shutdown`] asks
/// it to finish the request in flight and close.
pub struct Connection<I: Transport> {
    wire: Arc<Mutex<Wire<I>>>,
    run: Pin<Box<dyn Future<Output = io::Result<()>> + Send>>,
}

impl<I: Transport> Connection<I> {
    /// Serves `io` with `service`.
    pub fn new<S: Service>(io: I, service: S, config: ServerConfig) -> Self {
        let wire = Arc::new(Mutex::new(Wire::new(io, config.read_buffer)));
        let run = Box::pin(run(wire.clone(), service, config));
        Connection { wire, run }
    }

    /// Finishes the request in flight (if any), then closes. Poll the connection again
    /// after calling this: an idle connection ends on that poll.
    pub fn graceful_shutdown(&mut self) {
        self.wire.lock().closing = true;
    }
}

impl<I: Transport> Future for Connection<I> {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.run.as_mut().poll(cx)
    }
}

/// What the connection knows of the request whose response it writes.
#[derive(Debug, Clone, Copy)]
struct Asked {
    head: bool,
    http10: bool,
    keep_alive: bool,
    upgrade: bool,
}

#[allow(clippy::manual_async_fn)] // On purpose: see inside.
fn run<I: Transport, S: Service>(
    wire: Arc<Mutex<Wire<I>>>,
    mut service: S,
    config: ServerConfig,
) -> impl Future<Output = io::Result<()>> + Send {
    // An async block, not an `async fn`: the arguments are used where they are, not copied
    // into the future a second time (an idle connection keeps this future).
    async move {
        let source: Arc<dyn Source> = wire.clone();
        loop {
            // Each exchange is boxed: its state (the request, the answer, the writer) is
            // large, and the connection's own future then holds only the wait for a head.
            let go_on = match next_head(&wire, &config).await {
                Ok(Some(head)) => {
                    Box::pin(exchange(&wire, &source, &mut service, head, &config)).await?
                }
                Ok(None) => false,
                Err(error) => {
                    Box::pin(refuse(&wire, &mut service, error, &config)).await?;
                    false
                }
            };
            if !go_on {
                return Ok(());
            }
        }
    }
}

/// Answers a refused head and closes.
async fn refuse<I: Transport, S: Service>(
    wire: &Mutex<Wire<I>>,
    service: &mut S,
    error: HeadError,
    config: &ServerConfig,
) -> io::Result<()> {
    let asked = Asked {
        head: false,
        http10: false,
        keep_alive: false,
        upgrade: false,
    };
    let response = service.refuse(error);
    write_response(wire, response, asked, config).await?;
    close(wire, config, true).await;
    Ok(())
}

/// One request and its answer: whether the connection may carry another.
async fn exchange<I: Transport, S: Service>(
    wire: &Mutex<Wire<I>>,
    source: &Arc<dyn Source>,
    service: &mut S,
    head: crate::head::RequestHead,
    config: &ServerConfig,
) -> io::Result<bool> {
    let generation = {
        let mut w = wire.lock();
        w.expect_continue = head.expect_continue;
        w.continue_written = None;
        w.response_started = false;
        w.begin_body(head.framing, config.chunks)
    };
    let has_body = head.framing != crate::Framing::Empty;
    let body = IncomingBody::new(has_body.then(|| source.clone()), generation);
    let asked = Asked {
        head: head.method == Method::HEAD,
        http10: head.version == Version::HTTP_10,
        keep_alive: head.keep_alive,
        upgrade: head.upgrade,
    };
    let mut request = Request::new(body);
    *request.method_mut() = head.method;
    *request.uri_mut() = head.uri;
    *request.version_mut() = head.version;
    *request.headers_mut() = head.headers;
    let upgrade_to = asked.upgrade.then(|| {
        let (tx, on_upgrade) = upgrade::pair();
        request.extensions_mut().insert(on_upgrade);
        tx
    });
    let call = service.call(request);
    let Some(response) = answer_unless_gone(wire, call).await else {
        // The client left while its request was in flight: the answer is dropped (and
        // with it whatever it was waiting on), as nginx does on a client abort.
        return Ok(false);
    };
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let written = write_response(wire, response, asked, config).await?;
    if switching && let Some(tx) = upgrade_to {
        let mut w = wire.lock();
        if let Some(io) = w.io.take() {
            let read_ahead = std::mem::take(&mut w.rbuf).freeze();
            let _ = tx.send(Upgraded {
                io: Box::new(io),
                read_ahead,
            });
        }
        return Ok(false);
    }
    let body_done = wire.lock().finish_buffered();
    if !(written.keep_alive && body_done) {
        close(wire, config, !body_done).await;
        return Ok(false);
    }
    Ok(true)
}

/// Awaits the service's answer, watching the connection meanwhile: `None` if the client
/// closed it first.
async fn answer_unless_gone<I: Transport, F: Future>(
    wire: &Mutex<Wire<I>>,
    call: F,
) -> Option<F::Output> {
    let mut call = std::pin::pin!(call);
    poll_fn(|cx| {
        if let Poll::Ready(answer) = call.as_mut().poll(cx) {
            return Poll::Ready(Some(answer));
        }
        if wire.lock().poll_client_gone(cx) {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// Waits for the next request head: `None` when the connection ends (closed by the client,
/// or asked to close while idle).
async fn next_head<I: Transport>(
    wire: &Mutex<Wire<I>>,
    config: &ServerConfig,
) -> Result<Option<crate::head::RequestHead>, HeadError> {
    let mut deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
    poll_fn(|cx| {
        let mut w = wire.lock();
        loop {
            if !w.rbuf.is_empty() {
                match parse_request(&w.rbuf, &config.head) {
                    Ok(Some((head, len))) => {
                        w.rbuf.advance(len);
                        return Poll::Ready(Ok(Some(head)));
                    }
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
                // The head has begun: it must end within the header timeout.
                if deadline.is_none() {
                    deadline = Some(Box::pin(tokio::time::sleep(config.header_read_timeout)));
                }
            } else if w.closing {
                return Poll::Ready(Ok(None));
            }
            match w.poll_fill(cx) {
                Poll::Pending => {
                    if let Some(d) = deadline.as_mut()
                        && d.as_mut().poll(cx).is_ready()
                    {
                        return Poll::Ready(Err(HeadError::Timeout));
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Ok(None)),
                Poll::Ready(Ok(_)) => {}
            }
        }
    })
    .await
}

/// How a response went out.
struct Written {
    /// The connection may carry another exchange.
    keep_alive: bool,
}

/// Writes a response: its head, then its body, framed for the client.
async fn write_response<I: Transport, B>(
    wire: &Mutex<Wire<I>>,
    response: Response<B>,
    asked: Asked,
    config: &ServerConfig,
) -> io::Result<Written>
where
    B: Body<Data = Bytes> + Unpin,
{
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    let declared = {
        let mut lengths = parts.headers.get_all(CONTENT_LENGTH).iter();
        match (lengths.next(), lengths.next()) {
            (Some(v), None) => crate::framing::parse_length(v.as_bytes()).ok(),
            _ => None,
        }
    };
    let switching = status == StatusCode::SWITCHING_PROTOCOLS && asked.upgrade;
    let mut keep_alive = asked.keep_alive && !ConnectionOptions::of(&parts.headers).close;
    let outgoing = if switching {
        Outgoing::Empty { keep_length: false }
    } else if asked.head || status == StatusCode::NOT_MODIFIED {
        Outgoing::Empty { keep_length: true }
    } else if status.is_informational() || status == StatusCode::NO_CONTENT {
        Outgoing::Empty { keep_length: false }
    } else if let Some(n) = declared.or(body.size_hint().exact()) {
        Outgoing::Length(n)
    } else if asked.http10 {
        keep_alive = false;
        Outgoing::UntilClose
    } else {
        Outgoing::Chunked
    };
    let mut out = Out::new(config.write_buffer);
    {
        let mut w = wire.lock();
        // A request body not read to its end by now (the rest not even buffered) means the
        // connection cannot be trusted with another request: say so in this head.
        keep_alive &= !w.closing && w.body_buffered();
        w.response_started = true;
    }
    encode::response_head(
        &mut out.buf,
        status,
        &parts.headers,
        outgoing,
        keep_alive,
        asked.http10,
    );
    drop(parts);
    let complete = match outgoing {
        Outgoing::Empty { .. } => {
            // Nothing goes out; the body is still run to its end so whatever waits on it
            // (an access log, a pooled connection) sees the response finish.
            let drained = poll_fn(|cx| out.poll_drain(wire, cx)).await;
            drained?;
            discard(&mut body).await;
            true
        }
        Outgoing::Length(n) => send_body(wire, &mut out, &mut body, Some(n), false).await?,
        Outgoing::Chunked => send_body(wire, &mut out, &mut body, None, true).await?,
        Outgoing::UntilClose => send_body(wire, &mut out, &mut body, None, false).await?,
    };
    out.give_back(config.write_buffer);
    poll_fn(|cx| wire.lock().poll_flush(cx)).await?;
    Ok(Written {
        keep_alive: keep_alive && complete,
    })
}

/// Polls a body to its end, dropping what it yields.
async fn discard<B: Body<Data = Bytes> + Unpin>(body: &mut B) {
    while !body.is_end_stream() {
        let frame = poll_fn(|cx| {
            Pin::new(&mut *body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map(drop).map_err(drop)))
        })
        .await;
        match frame {
            Some(Ok(())) => {}
            Some(Err(_)) | None => break,
        }
    }
}

/// Sends a body: exactly `length` bytes if given (a body that ends short or runs long
/// leaves the connection unusable), chunk-framed if `chunked`, else as it comes. Whether
/// it went out whole.
async fn send_body<I: Transport, B>(
    wire: &Mutex<Wire<I>>,
    out: &mut Out,
    body: &mut B,
    length: Option<u64>,
    chunked: bool,
) -> io::Result<bool>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut left = length;
    loop {
        if body.is_end_stream() {
            break;
        }
        let frame = poll_fn(|cx| {
            // The body has nothing yet: send what is buffered meanwhile.
            match Pin::new(&mut *body).poll_frame(cx) {
                // The error says nothing the connection acts on: dropped here.
                Poll::Ready(frame) => Poll::Ready(Ok(frame.map(|r| r.map_err(drop)))),
                Poll::Pending => match out.poll_drain(wire, cx) {
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    _ => Poll::Pending,
                },
            }
        })
        .await?;
        let frame = match frame {
            None => break,
            Some(Err(_)) => {
                // The body broke off: what was sent stays sent, the rest cannot be framed.
                poll_fn(|cx| out.poll_drain(wire, cx)).await?;
                return Ok(false);
            }
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(mut data) => {
                if data.is_empty() {
                    continue;
                }
                if let Some(left) = left.as_mut() {
                    if data.len() as u64 > *left {
                        // Longer than declared: send what was declared, then close.
                        data.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
                        out.push_data(data, false);
                        poll_fn(|cx| out.poll_drain(wire, cx)).await?;
                        return Ok(false);
                    }
                    *left -= data.len() as u64;
                }
                out.push_data(data, chunked);
            }
            Err(frame) => {
                if chunked && let Ok(trailers) = frame.into_trailers() {
                    out.trailers = Some(trailers);
                }
            }
        }
        if out.is_full() {
            poll_fn(|cx| out.poll_drain(wire, cx)).await?;
        }
    }
    if chunked {
        out.buf.extend_from_slice(b"0\r\n");
        if let Some(trailers) = out.trailers.take() {
            for (name, value) in &trailers {
                out.buf.extend_from_slice(name.as_str().as_bytes());
                out.buf.extend_from_slice(b": ");
                out.buf.extend_from_slice(value.as_bytes());
                out.buf.extend_from_slice(b"\r\n");
            }
        }
        out.buf.extend_from_slice(b"\r\n");
    }
    poll_fn(|cx| out.poll_drain(wire, cx)).await?;
    Ok(left.is_none_or(|n| n == 0))
}

/// Closes the connection: shuts the write side, and when the client may still be sending
/// (`linger`), reads and drops what it sends for a moment, so its answer is not lost to a
/// reset.
async fn close<I: Transport>(wire: &Mutex<Wire<I>>, config: &ServerConfig, linger: bool) {
    let _ = poll_fn(|cx| wire.lock().poll_shutdown(cx)).await;
    if !linger {
        return;
    }
    let mut dropped = 0usize;
    let drain = poll_fn(|cx| {
        let mut w = wire.lock();
        loop {
            w.rbuf.clear();
            match ready!(w.poll_fill(cx)) {
                Ok(0) | Err(_) => return Poll::Ready(()),
                Ok(n) => {
                    dropped += n;
                    if dropped > 1 << 20 {
                        return Poll::Ready(());
                    }
                }
            }
        }
    });
    let _ = tokio::time::timeout(config.linger, drain).await;
    let mut w = wire.lock();
    w.rbuf.clear();
    w.release_if_empty();
}
