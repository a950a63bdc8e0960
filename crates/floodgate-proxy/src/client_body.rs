//! The client's request body as every part of the gateway reads it: hyper's frames, with a
//! limit on the wait for the next piece (the listener's `timeouts.body_read`), and every
//! error classified as the client's fault ([`ClientFault`]).
//!
//! A body can end badly for reasons that are the client's alone: a broken chunked framing,
//! a connection closed before the declared length, a client that stops sending. Such an
//! ending must never be taken for the upstream's failure (breakers, outlier detection,
//! retry budgets and upstream error metrics all count upstream failures), so the error
//! says whose fault it is wherever the body is read: streamed upstream
//! ([`crate::body::RequestBody`] records it for the exchange), or read whole
//! ([`read_whole`], for the WAF, retries and idempotency keys).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::problem::Problem;

/// Why a client's body could not be read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// The framing is broken (a bad chunk, data past the declared length on HTTP/2).
    Malformed,
    /// The client went away (closed or reset) before the body ended.
    Closed,
    /// The client sent nothing more for longer than the listener's `body_read` timeout.
    TimedOut,
    /// The body grew past the listener's (or the step's) size limit.
    TooLarge,
}

impl ClientFault {
    /// The answer to a request whose body ended this way.
    pub fn problem(self) -> Problem {
        match self {
            ClientFault::Malformed => {
                Problem::BadRequest("The request body is malformed: its framing is broken.")
            }
            ClientFault::Closed => Problem::ClientClosed,
            ClientFault::TimedOut => Problem::BodyTimeout,
            ClientFault::TooLarge => Problem::BodyTooLarge,
        }
    }

    /// A small number for an atomic cell (0 is "no fault").
    pub(crate) fn code(self) -> u8 {
        match self {
            ClientFault::Malformed => 1,
            ClientFault::Closed => 2,
            ClientFault::TimedOut => 3,
            ClientFault::TooLarge => 4,
        }
    }

    /// The fault a [`Self::code`] stands for.
    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(ClientFault::Malformed),
            2 => Some(ClientFault::Closed),
            3 => Some(ClientFault::TimedOut),
            4 => Some(ClientFault::TooLarge),
            _ => None,
        }
    }

    /// The fault behind an error of the HTTP/1.1 engine's body.
    fn of_engine(e: floodgate_http1::BodyError) -> Self {
        match e {
            floodgate_http1::BodyError::Malformed(_) => ClientFault::Malformed,
            floodgate_http1::BodyError::Closed | floodgate_http1::BodyError::Stale => {
                ClientFault::Closed
            }
        }
    }

    /// The fault behind an error of hyper's server-side body: a decoding error is the
    /// client's malformed framing; anything else (end of file, reset) means it went away.
    fn of(e: &hyper::Error) -> Self {
        let mut source = std::error::Error::source(e);
        while let Some(err) = source {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                return match io.kind() {
                    std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => {
                        ClientFault::Malformed
                    }
                    _ => ClientFault::Closed,
                };
            }
            if let Some(h2) = err.downcast_ref::<h2::Error>() {
                return match h2.reason() {
                    Some(h2::Reason::PROTOCOL_ERROR | h2::Reason::FRAME_SIZE_ERROR) => {
                        ClientFault::Malformed
                    }
                    _ => ClientFault::Closed,
                };
            }
            source = err.source();
        }
        if e.is_parse() {
            ClientFault::Malformed
        } else {
            ClientFault::Closed
        }
    }
}

impl std::fmt::Display for ClientFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientFault::Malformed => "the client's request body is malformed",
            ClientFault::Closed => "the client went away before its request body ended",
            ClientFault::TimedOut => "the client stopped sending its request body",
            ClientFault::TooLarge => "the client's request body exceeds the size limit",
        })
    }
}

impl std::error::Error for ClientFault {}

/// Where a client's body comes from.
enum Source {
    /// hyper's body of a request read from a connection.
    Wire(Incoming),
    /// The HTTP/1.1 engine's body of a request read from a connection.
    Engine(floodgate_http1::IncomingBody),
    /// Any other body: a request the gateway makes itself, or one a test hands to the
    /// pipeline without a socket. Its errors count as the client going away.
    Other(BoxBody<Bytes, ClientFault>),
}

/// A client's request body with a read timeout and classified errors.
pub struct ClientBody {
    /// Bytes read ahead and given back ([`Self::read_within`]), sent before the rest.
    prefix: Option<Bytes>,
    inner: Source,
    timeout: Duration,
    /// Made on the first wait (most bodies arrive without one), then reused.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer runs for the current wait.
    waiting: bool,
}

impl ClientBody {
    /// Wraps hyper's body; a wait of more than `timeout` for the next frame ends it.
    pub fn new(inner: Incoming, timeout: Duration) -> Self {
        ClientBody {
            prefix: None,
            inner: Source::Wire(inner),
            timeout,
            timer: None,
            waiting: false,
        }
    }

    /// Wraps the HTTP/1.1 engine's body; a wait of more than `timeout` for the next frame
    /// ends it.
    pub fn engine(inner: floodgate_http1::IncomingBody, timeout: Duration) -> Self {
        ClientBody {
            prefix: None,
            inner: Source::Engine(inner),
            timeout,
            timer: None,
            waiting: false,
        }
    }

    /// Wraps any body (one not read from a connection); its errors count as the client
    /// going away.
    pub fn from_body<B>(body: B, timeout: Duration) -> Self
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
    {
        ClientBody {
            prefix: None,
            inner: Source::Other(BoxBody::new(body.map_err(|_| ClientFault::Closed))),
            timeout,
            timer: None,
            waiting: false,
        }
    }

    /// The whole body if it ends within `limit` bytes; otherwise `None`, with what was read
    /// given back so the body still streams whole. (For inspecting bodies of unknown
    /// length, such as chunked ones, without holding large ones.)
    pub async fn read_within(&mut self, limit: u64) -> Result<Option<Bytes>, Problem> {
        let mut read = bytes::BytesMut::new();
        loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx)).await;
            match frame {
                None => return Ok(Some(read.freeze())),
                Some(Err(fault)) => return Err(fault.problem()),
                Some(Ok(frame)) => {
                    // Trailers are not kept: a body read whole is sent without them.
                    if let Ok(data) = frame.into_data() {
                        read.extend_from_slice(&data);
                    }
                    if read.len() as u64 > limit {
                        self.prefix = Some(read.freeze());
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Starts (or keeps) the timer for a wait on the client; ready when it ran out.
    fn wait_elapsed(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = Instant::now() + self.timeout;
        let timer = match &mut self.timer {
            Some(t) => {
                if !self.waiting {
                    t.as_mut().reset(deadline);
                }
                t
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.waiting = true;
        timer.as_mut().poll(cx).is_ready()
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientFault;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientFault>>> {
        let this = &mut *self;
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        let polled = match &mut this.inner {
            Source::Wire(b) => match Pin::new(b).poll_frame(cx) {
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(ClientFault::of(&e)))),
                other => other.map(|f| f.map(|f| f.map_err(|_| ClientFault::Closed))),
            },
            Source::Engine(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(ClientFault::of_engine))),
            Source::Other(b) => Pin::new(b).poll_frame(cx),
        };
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(fault))) => {
                this.waiting = false;
                Poll::Ready(Some(Err(fault)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.wait_elapsed(cx) {
                    this.waiting = false;
                    return Poll::Ready(Some(Err(ClientFault::TimedOut)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none()
            && match &self.inner {
                Source::Wire(b) => b.is_end_stream(),
                Source::Engine(b) => b.is_end_stream(),
                Source::Other(b) => b.is_end_stream(),
            }
    }

    fn size_hint(&self) -> SizeHint {
        let inner = match &self.inner {
            Source::Wire(b) => b.size_hint(),
            Source::Engine(b) => b.size_hint(),
            Source::Other(b) => b.size_hint(),
        };
        let Some(prefix) = &self.prefix else {
            return inner;
        };
        let len = prefix.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(len));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(len));
        }
        hint
    }
}

/// Reads a client's body whole, up to `limit` bytes; a longer one is 413, and a body that
/// cannot be read is answered by whose fault it is.
pub async fn read_whole<B>(body: B, limit: u64) -> Result<Bytes, Problem>
where
    B: Body<Data = Bytes, Error = ClientFault>,
{
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(match e.downcast_ref::<ClientFault>() {
            Some(fault) => fault.problem(),
            None => Problem::BodyTooLarge,
        }),
    }
}

/// A request body on its way upstream: the client's stream, or none at all.
pub enum Inbound {
    /// The client's body.
    Stream(ClientBody),
    /// No body (a request sent again to a fallback upstream).
    Empty,
    /// A body read whole (to be inspected by the WAF, or fingerprinted for an idempotency
    /// key).
    Held(Bytes),
}

impl Inbound {
    /// Whether there is no body to send.
    pub fn is_end_stream(&self) -> bool {
        match self {
            Inbound::Stream(b) => http_body::Body::is_end_stream(b),
            Inbound::Empty => true,
            Inbound::Held(b) => b.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_codes_round_trip() {
        for f in [
            ClientFault::Malformed,
            ClientFault::Closed,
            ClientFault::TimedOut,
            ClientFault::TooLarge,
        ] {
            assert_eq!(ClientFault::from_code(f.code()), Some(f));
        }
        assert_eq!(ClientFault::from_code(0), None);
    }

    #[test]
    fn faults_answer_as_the_clients() {
        assert_eq!(ClientFault::Malformed.problem().status(), 400);
        assert_eq!(ClientFault::TimedOut.problem().status(), 408);
        assert_eq!(ClientFault::TooLarge.problem().status(), 413);
        assert_eq!(ClientFault::Closed.problem().code(), "client-closed");
    }
}
