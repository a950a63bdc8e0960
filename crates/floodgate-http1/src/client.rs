//! The client side: one connection to an upstream, driven by the task of the request that
//! uses it (no task of its own, no channel). [`ClientConn::send`] writes the request head
//! and as much of the body as is ready in one write, then reads the response head while it
//! keeps writing the body; the response body reads the socket itself, and whoever holds the
//! connection calls [`ClientConn::poll_driver`] before each read of it, to write what is
//! left of a request body the upstream answered before it ended.
//!
//! Responses are held to the same framing rules as requests ([`crate::framing`]): a
//! response with both `Content-Length` and `Transfer-Encoding`, a repeated or malformed
//! length, a bare LF, an obs-fold is the upstream's error, and its connection is not used
//! again. A connection is reused only when the response said so, its body was read to its
//! end, the request went out whole, and nothing arrived past the response.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use parking_lot::Mutex;

use crate::chunked::ChunkLimits;
use crate::encode::{self, Outgoing};
use crate::head::{HeadError, HeadLimits, parse_response};
use crate::incoming::{IncomingBody, Source};
use crate::out::Out;
use crate::wire::{BodyState, Transport, Wire};

/// Errors carried through bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection's settings.
#[derive(Debug, Clone, Copy)]
pub struct ClientConfig {
    /// Bounds on response heads.
    pub head: HeadLimits,
    /// Bounds on chunked response bodies.
    pub chunks: ChunkLimits,
    /// The size of a read buffer, lent while the connection reads.
    pub read_buffer: usize,
    /// The size of a write buffer, lent while the connection writes.
    pub write_buffer: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            head: HeadLimits {
                max_bytes: 64 * 1024,
                max_fields: 256,
            },
            chunks: ChunkLimits::default(),
            read_buffer: 8 * 1024,
            write_buffer: 16 * 1024,
        }
    }
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum SendError<B> {
    /// Nothing of the request was written: it comes back, to go out elsewhere.
    /// (Boxed: a request is large beside the other variant.)
    Unsent(Box<Request<B>>, io::Error),
    /// The request was (at least partly) written and no usable response came.
    Failed(ClientError),
}

/// What went wrong on a connection.
#[derive(Debug)]
pub enum ClientError {
    /// Reading or writing failed, or the upstream closed before its response.
    Io(io::Error),
    /// The response head is malformed or its framing ambiguous.
    Head(HeadError),
    /// The request body failed (the client's side).
    Body(BoxError),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "upstream connection: {e}"),
            ClientError::Head(e) => write!(f, "upstream response: {}", e.reason()),
            ClientError::Body(e) => write!(f, "request body: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// What is left of a request body being written.
struct Sending<B> {
    body: B,
    chunked: bool,
    /// Bytes still owed under a declared length.
    left: Option<u64>,
}

/// One HTTP/1.1 connection to an upstream.
pub struct ClientConn<I: Transport, B> {
    wire: Arc<Mutex<Wire<I>>>,
    config: ClientConfig,
    out: Option<Out>,
    sending: Option<Sending<B>>,
    /// The last response allows another exchange.
    keep_alive: bool,
    /// Something broke: never reuse.
    broken: bool,
    /// The last response switched protocols: the connection is the caller's to take
    /// ([`Self::upgrade`]).
    switched: bool,
}

impl<I, B> ClientConn<I, B>
where
    I: Transport,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    /// A connection over `io`, ready for a request.
    pub fn new(io: I, config: ClientConfig) -> Self {
        ClientConn {
            wire: Arc::new(Mutex::new(Wire::new(io, config.read_buffer))),
            config,
            out: None,
            sending: None,
            keep_alive: true,
            broken: false,
            switched: false,
        }
    }

    /// Whether an idle connection can take a request: nothing left of the last exchange,
    /// and the upstream has neither closed it nor sent anything unasked.
    pub fn is_usable(&mut self) -> bool {
        if self.broken || !self.keep_alive || self.sending.is_some() || self.out.is_some() {
            return false;
        }
        let mut w = self.wire.lock();
        if !matches!(w.body, BodyState::Done) || !w.rbuf.is_empty() || w.eof {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match w.poll_fill(&mut cx) {
            Poll::Pending => true,
            // Closed, failed, or bytes nobody asked for: all the same here.
            Poll::Ready(_) => {
                drop(w);
                self.broken = true;
                false
            }
        }
    }

    /// Whether the connection may carry another exchange now (after a response body ended).
    pub fn is_reusable(&self) -> bool {
        if self.broken || !self.keep_alive || self.sending.is_some() || self.out.is_some() {
            return false;
        }
        let w = self.wire.lock();
        matches!(w.body, BodyState::Done) && w.rbuf.is_empty() && !w.eof
    }

    /// After a `101 Switching Protocols` answer: the connection as a byte stream, with
    /// what the upstream sent past the response head. `None` for any other answer.
    pub fn upgrade(self) -> Option<crate::Upgraded> {
        if !self.switched {
            return None;
        }
        let mut w = self.wire.lock();
        let io = w.io.take()?;
        let read_ahead = std::mem::take(&mut w.rbuf).freeze();
        Some(crate::Upgraded {
            io: Box::new(io),
            read_ahead,
        })
    }

    /// Writes what is due of a request body still being sent. Returns false once the
    /// connection is broken.
    pub fn poll_driver(&mut self, cx: &mut Context<'_>) -> bool {
        if self.sending.is_some() || self.out.is_some() {
            // A failure here is seen by the response body's reader: its read fails.
            if let Poll::Ready(Err(_)) = self.poll_send(cx) {
                self.fail();
            }
        }
        !self.broken
    }

    /// Marks the connection broken, and the response body with it.
    fn fail(&mut self) {
        self.broken = true;
        self.sending = None;
        if let Some(out) = self.out.take() {
            out.give_back(self.config.write_buffer);
        }
        let mut w = self.wire.lock();
        if !matches!(w.body, BodyState::Done) {
            w.body = BodyState::Failed;
        }
    }

    /// Sends `req` and reads the response head; the response body reads from this
    /// connection, and the request body (if the answer came first) is written on by
    /// [`Self::poll_driver`].
    pub async fn send(&mut self, req: Request<B>) -> Result<Response<IncomingBody>, SendError<B>> {
        let (parts, body) = req.into_parts();
        let is_head = parts.method == Method::HEAD;
        // (A walk over the few names costs less than hashing one for a lookup.)
        let asks_upgrade = parts.headers.keys().any(|k| k == http::header::UPGRADE);
        let framing = if body.is_end_stream() {
            if needs_length(&parts.method) {
                Outgoing::Length(0)
            } else {
                Outgoing::Empty { keep_length: false }
            }
        } else if let Some(n) = body.size_hint().exact() {
            Outgoing::Length(n)
        } else {
            Outgoing::Chunked
        };
        let mut out = Out::new(self.config.write_buffer);
        encode::request_head(
            &mut out.buf,
            &parts.method,
            &parts.uri,
            &parts.headers,
            framing,
        );
        {
            let mut w = self.wire.lock();
            // The response to come is read fresh: whatever body state was left is over.
            w.body = BodyState::Done;
            w.expect_continue = false;
            w.continue_written = None;
        }
        // The head goes out first; until a byte of it is written the request can go back.
        let first = poll_fn(|cx| out.poll_drain_some(&self.wire, cx)).await;
        if let Err(e) = first {
            out.give_back(self.config.write_buffer);
            self.broken = true;
            return Err(SendError::Unsent(
                Box::new(Request::from_parts(parts, body)),
                e,
            ));
        }
        self.out = Some(out);
        self.sending = match framing {
            Outgoing::Length(0) | Outgoing::Empty { .. } => None,
            Outgoing::Length(n) => Some(Sending {
                body,
                chunked: false,
                left: Some(n),
            }),
            _ => Some(Sending {
                body,
                chunked: true,
                left: None,
            }),
        };
        drop(parts.headers);
        let head = poll_fn(|cx| {
            // Send what is due, then look for the answer.
            match self.poll_send(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
            self.poll_head(cx)
        })
        .await;
        let head = match head {
            Ok(head) => head,
            Err(e) => {
                self.fail();
                return Err(SendError::Failed(e));
            }
        };
        let framing = match crate::framing::response(
            &head.headers,
            head.status.as_u16(),
            head.version == Version::HTTP_10,
            is_head,
        ) {
            Ok(f) => f,
            Err(e) => {
                self.fail();
                return Err(SendError::Failed(ClientError::Head(HeadError::Framing(e))));
            }
        };
        if head.status == StatusCode::SWITCHING_PROTOCOLS {
            // Only an answer to a request that asked may switch: anything else after a
            // 101 would be bytes of a protocol nobody agreed on.
            if !asks_upgrade || self.sending.is_some() {
                self.fail();
                return Err(SendError::Failed(ClientError::Head(HeadError::Malformed(
                    "The upstream switched protocols unasked.",
                ))));
            }
            self.switched = true;
        }
        self.keep_alive =
            head.keep_alive && framing != crate::Framing::UntilClose && !self.switched;
        let generation = self.wire.lock().begin_body(framing, self.config.chunks);
        let source: Option<Arc<dyn Source>> =
            (framing != crate::Framing::Empty).then(|| self.wire.clone() as Arc<dyn Source>);
        let mut resp = Response::new(IncomingBody::new(source, generation));
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        Ok(resp)
    }

    /// Writes what is buffered and what the request body has ready, until the body is
    /// sent (ready) or waits for the socket or the body (pending).
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ClientError>> {
        loop {
            if let Some(out) = self.out.as_mut() {
                match out.poll_drain(&self.wire, cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(ClientError::Io(e))),
                    Poll::Pending => return Poll::Pending,
                }
            }
            let Some(sending) = self.sending.as_mut() else {
                if let Some(out) = self.out.take() {
                    out.give_back(self.config.write_buffer);
                }
                return Poll::Ready(Ok(()));
            };
            let Some(out) = self.out.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            // Gather what the body has ready into one write.
            let mut ended = sending.body.is_end_stream();
            while !ended {
                match Pin::new(&mut sending.body).poll_frame(cx) {
                    Poll::Pending => break,
                    Poll::Ready(None) => ended = true,
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(ClientError::Body(e.into())));
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            if data.is_empty() {
                                continue;
                            }
                            if let Some(left) = sending.left.as_mut() {
                                if data.len() as u64 > *left {
                                    return Poll::Ready(Err(ClientError::Body(
                                        "the request body is longer than its length".into(),
                                    )));
                                }
                                *left -= data.len() as u64;
                            }
                            out.push_data(data, sending.chunked);
                            ended = sending.body.is_end_stream();
                            if out.is_full() {
                                break;
                            }
                        }
                    }
                }
            }
            if ended {
                if sending.left.is_some_and(|n| n > 0) {
                    return Poll::Ready(Err(ClientError::Body(
                        "the request body is shorter than its length".into(),
                    )));
                }
                if sending.chunked {
                    out.buf.extend_from_slice(b"0\r\n\r\n");
                }
                self.sending = None;
                continue;
            }
            if out.is_empty() {
                return Poll::Pending;
            }
        }
    }

    /// Reads until a final response head has arrived (interim 1xx heads are skipped).
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<crate::head::ResponseHead, ClientError>> {
        let mut w = self.wire.lock();
        loop {
            if !w.rbuf.is_empty() {
                match parse_response(&w.rbuf, &self.config.head) {
                    Ok(Some((head, len))) => {
                        w.rbuf.advance(len);
                        let interim = head.status.is_informational()
                            && head.status != StatusCode::SWITCHING_PROTOCOLS;
                        if interim {
                            continue;
                        }
                        return Poll::Ready(Ok(head));
                    }
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(ClientError::Head(e))),
                }
            }
            match w.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(ClientError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upstream closed the connection before a response",
                    ))));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(ClientError::Io(e))),
            }
        }
    }
}

/// Whether a request with this method and no body says so with `Content-Length: 0`
/// (methods whose requests usually carry one).
fn needs_length(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}
