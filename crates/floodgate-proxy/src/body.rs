//! Body wrappers on the proxy path. Both stream: nothing is buffered beyond the frame in hand.
//!
//! - [`RequestBody`] enforces the listener's body size limit while the client's body streams
//!   upstream, and remembers that the limit (not the upstream) ended the exchange.
//! - [`ResponseBody`] carries either the upstream's body (driving the upstream connection as
//!   it goes, see [`crate::upstream::pool`]) or a body the gateway made, counts the bytes
//!   sent, and runs the request's completion (metrics, access log, in-flight count, returning
//!   the upstream connection to its pool) exactly once: at the end of the stream, or when the
//!   client goes away mid-stream. A [`Tap`] may watch the frames go by (the cache stores a
//!   copy of a body while it streams to the client).

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::upstream::{ConnPool, UpstreamConn};

/// Errors carried through bodies.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The client's body became larger than the listener allows.
#[derive(Debug)]
pub struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body exceeds the size limit")
    }
}
impl StdError for BodyTooLarge {}

/// A client request body on its way upstream: streamed (cut off past `limit` bytes), or
/// held in memory so that it can be sent again on a retry.
pub struct RequestBody {
    source: Source,
    seen: u64,
    limit: u64,
    exceeded: Arc<AtomicBool>,
}

enum Source {
    /// Streamed from the client.
    Stream(Incoming),
    /// Held whole (taken when sent); `None` once sent, or for an empty body.
    Buffered(Option<Bytes>),
}

impl RequestBody {
    /// Wraps `inner`; `exceeded` is set if the limit ends the body.
    pub fn new(inner: Incoming, limit: u64, exceeded: Arc<AtomicBool>) -> Self {
        RequestBody {
            source: Source::Stream(inner),
            seen: 0,
            limit,
            exceeded,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::buffered(Bytes::new())
    }

    /// A copy of a body held in memory or known to be empty (`None` for a streamed one,
    /// which cannot be copied).
    pub fn try_clone(&self) -> Option<Self> {
        match &self.source {
            Source::Buffered(b) => Some(Self::buffered(b.clone().unwrap_or_default())),
            Source::Stream(b) if b.is_end_stream() && self.seen == 0 => Some(Self::empty()),
            Source::Stream(_) => None,
        }
    }

    /// A body held in memory (cheap to clone: `Bytes` shares it).
    pub fn buffered(bytes: Bytes) -> Self {
        RequestBody {
            source: Source::Buffered((!bytes.is_empty()).then_some(bytes)),
            seen: 0,
            limit: u64::MAX,
            exceeded: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let inner = match &mut this.source {
            Source::Buffered(b) => return Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Source::Stream(inner) => inner,
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.limit {
                        this.exceeded.store(true, Ordering::Release);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Stream(b) => b.is_end_stream(),
            Source::Buffered(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Stream(b) => b.size_hint(),
            Source::Buffered(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// Runs once when a response is over.
pub trait Completion: Send + Sync {
    /// `bytes_sent` is the body length delivered; `complete` is false when the stream ended
    /// early (client gone or upstream broke off).
    fn done(self: Box<Self>, bytes_sent: u64, complete: bool);
}

/// Sees a response body's data as it is sent, then how it ended.
pub trait Tap: Send + Sync {
    /// A data frame on its way to the client.
    fn data(&mut self, data: &Bytes);
    /// The body ended: `complete` is false when it was cut short.
    fn end(self: Box<Self>, complete: bool);
}

/// A copy of a body up to a size limit, for taps that keep what they see.
pub struct BoundedCopy {
    buf: bytes::BytesMut,
    limit: u64,
    overflow: bool,
}

impl BoundedCopy {
    /// A copy of at most `limit` bytes, with room for `expected` (a declared length; one
    /// over the limit overflows at once).
    pub fn new(limit: u64, expected: Option<u64>) -> Self {
        let capacity = expected.unwrap_or(0).min(limit);
        BoundedCopy {
            buf: bytes::BytesMut::with_capacity(usize::try_from(capacity).unwrap_or(0)),
            limit,
            overflow: expected.is_some_and(|n| n > limit),
        }
    }

    /// Appends `data`, or gives up (keeping nothing) once past the limit.
    pub fn push(&mut self, data: &Bytes) {
        if self.overflow {
            return;
        }
        if (self.buf.len() + data.len()) as u64 > self.limit {
            self.overflow = true;
            self.buf = bytes::BytesMut::new();
            return;
        }
        self.buf.extend_from_slice(data);
    }

    /// The copy, or `None` if the body went past the limit.
    pub fn finish(self) -> Option<Bytes> {
        (!self.overflow).then(|| self.buf.freeze())
    }
}

enum Inner {
    /// An upstream body whose connection this body drives, returned to its pool at the end.
    Pooled {
        body: Incoming,
        conn: Option<UpstreamConn>,
        pool: Arc<ConnPool>,
    },
    Full(Option<Bytes>),
}

/// The body of every response the gateway sends.
pub struct ResponseBody {
    inner: Inner,
    sent: u64,
    completion: Option<Box<dyn Completion>>,
    tap: Option<Box<dyn Tap>>,
}

impl ResponseBody {
    /// Streams an upstream body while driving its connection; the connection goes back to
    /// `pool` once the body has ended.
    pub fn pooled(body: Incoming, conn: UpstreamConn, pool: Arc<ConnPool>) -> Self {
        ResponseBody {
            inner: Inner::Pooled {
                body,
                conn: Some(conn),
                pool,
            },
            sent: 0,
            completion: None,
            tap: None,
        }
    }

    /// A body the gateway made.
    pub fn full(bytes: Bytes) -> Self {
        let inner = Inner::Full(if bytes.is_empty() { None } else { Some(bytes) });
        ResponseBody {
            inner,
            sent: 0,
            completion: None,
            tap: None,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        ResponseBody {
            inner: Inner::Full(None),
            sent: 0,
            completion: None,
            tap: None,
        }
    }

    /// Sets what watches the data go by; set before [`Self::on_done`].
    pub fn tap(&mut self, t: Box<dyn Tap>) {
        self.tap = Some(t);
    }

    /// Sets what runs when the response is over.
    pub fn on_done(&mut self, c: Box<dyn Completion>) {
        self.completion = Some(c);
        if self.is_end_stream() {
            self.finish(true);
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(t) = self.tap.take() {
            t.end(complete);
        }
        if let Inner::Pooled { conn, pool, .. } = &mut self.inner
            && let Some(conn) = conn.take()
            && complete
        {
            pool.put(conn);
        }
        if let Some(c) = self.completion.take() {
            c.done(self.sent, complete);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Pooled { body, conn, .. } => poll_pooled(body, conn, cx),
            Inner::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.sent += d.len() as u64;
                    if let Some(t) = &mut this.tap {
                        t.data(d);
                    }
                }
                if this.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Ready(None) => this.finish(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Pooled { body: b, .. } => b.is_end_stream(),
            Inner::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Pooled { body: b, .. } => b.size_hint(),
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// Polls the body, driving its connection first so that buffered data reaches the body; twice,
/// because asking the body for data can make the connection read more.
fn poll_pooled(
    body: &mut Incoming,
    conn: &mut Option<UpstreamConn>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    for _ in 0..2 {
        if let Some(c) = conn.as_mut() {
            c.poll_driver(cx);
        }
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(Some(Ok(f))) => return Poll::Ready(Some(Ok(f))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
    }
    Poll::Pending
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let complete = self.is_end_stream();
        self.finish(complete);
    }
}
