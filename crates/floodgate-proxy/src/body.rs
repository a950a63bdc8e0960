//! The body of every response the gateway sends: the upstream's body (driving the upstream
//! connection as it goes, see [`crate::upstream::pool`]) or a body the gateway made. It
//! counts the bytes sent and runs the request's completion (metrics, access log, in-flight
//! count, returning the upstream connection to its pool) exactly once: at the end of the
//! stream, or when the client goes away mid-stream. A [`Tap`] may watch the frames go by
//! (the cache stores a copy of a body while it streams to the client). Nothing is buffered
//! beyond the frame in hand.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::request_body::BoxError;
use crate::upstream::{ConnPool, UpstreamBody, UpstreamConn};

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// Every byte was handed to the connection.
    Complete,
    /// The client went away (or its connection failed) before the end.
    ClientGone,
    /// The upstream's body broke off (closed early, bad framing).
    UpstreamBroke,
}

/// Runs once when a response is over.
pub trait Completion: Send + Sync {
    /// `bytes_sent` is the body length delivered; `end` says whether all of it was.
    fn done(self: Box<Self>, bytes_sent: u64, end: BodyEnd);
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
        body: UpstreamBody,
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
    pub fn pooled(body: UpstreamBody, conn: UpstreamConn, pool: Arc<ConnPool>) -> Self {
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
            self.finish(BodyEnd::Complete);
        }
    }

    fn finish(&mut self, end: BodyEnd) {
        let complete = end == BodyEnd::Complete;
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
            c.done(self.sent, end);
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
                    this.finish(BodyEnd::Complete);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(BodyEnd::UpstreamBroke),
            Poll::Ready(None) => this.finish(BodyEnd::Complete),
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
    body: &mut UpstreamBody,
    conn: &mut Option<UpstreamConn>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    for _ in 0..2 {
        if let Some(c) = conn.as_mut() {
            c.poll_driver(cx);
        }
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(Some(Ok(f))) => return Poll::Ready(Some(Ok(f))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
    }
    Poll::Pending
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // Dropped before its end: the connection to the client is gone.
        let end = if self.is_end_stream() {
            BodyEnd::Complete
        } else {
            BodyEnd::ClientGone
        };
        self.finish(end);
    }
}
