//! The body of a request on its way upstream: the client's stream under the listener's body
//! size limit, or bytes held whole (to be sent again on a retry). It keeps its [`Progress`]:
//! whether the client's fault (a limit, a broken or abandoned body, see
//! [`crate::client_body`]) ended the exchange, and how far the body got, so the upstream's
//! response timer starts once the body is sent and never runs while the gateway waits for
//! a slow client.
//!
//! Below the upstream client (which sends it) and above the client's body: it knows
//! nothing of responses.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::client_body::{ClientBody, ClientFault};

/// Errors carried through bodies.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// How far a streamed request body got, shared by the body (which hyper polls, in this
/// request's task or an HTTP/2 connection's) and the exchange that waits for the answer.
pub struct Progress {
    /// A [`ClientFault`] code once the client's side ended the body; 0 before.
    fault: AtomicU8,
    /// What the body waits for: [`WAITING_UPSTREAM`], [`WAITING_CLIENT`] or [`SENT`].
    phase: AtomicU8,
    /// When the phase began, in nanoseconds after `base`.
    since: AtomicU64,
    base: Instant,
}

const WAITING_UPSTREAM: u8 = 0;
const WAITING_CLIENT: u8 = 1;
const SENT: u8 = 2;

impl Progress {
    fn new() -> Self {
        Progress {
            fault: AtomicU8::new(0),
            phase: AtomicU8::new(WAITING_UPSTREAM),
            since: AtomicU64::new(0),
            base: Instant::now(),
        }
    }

    /// The client's fault that ended the body, if one did.
    pub fn fault(&self) -> Option<ClientFault> {
        ClientFault::from_code(self.fault.load(Ordering::Acquire))
    }

    fn set_fault(&self, f: ClientFault) {
        self.fault.store(f.code(), Ordering::Release);
    }

    fn enter(&self, phase: u8) {
        let nanos = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.since.store(nanos, Ordering::Relaxed);
        self.phase.store(phase, Ordering::Release);
    }

    /// When an upstream that takes `limit` to answer (or to take the next piece of the
    /// body) has run out of time, as of now: `limit` after the body was sent, or after
    /// the upstream was handed the last piece; while the body waits for the client, not
    /// before `limit` from now (the client's own timeout covers that wait).
    pub fn upstream_deadline(&self, limit: Duration) -> Instant {
        let phase = self.phase.load(Ordering::Acquire);
        if phase == WAITING_CLIENT {
            return Instant::now() + limit;
        }
        let since = Duration::from_nanos(self.since.load(Ordering::Relaxed));
        self.base + since + limit
    }
}

/// A client request body on its way upstream: streamed (cut off past `limit` bytes), or
/// held in memory so that it can be sent again on a retry.
pub struct RequestBody {
    source: Source,
    /// What was read of a streamed body before an HTTP/2 stream the upstream did not process
    /// (see [`Self::resend`]); sent first.
    read_before: Option<Bytes>,
    seen: u64,
    limit: u64,
}

enum Source {
    /// Streamed from the client.
    Stream(ClientBody, Arc<Progress>),
    /// Held whole (taken when sent); `None` once sent, or for an empty body.
    Buffered(Option<Bytes>),
}

impl RequestBody {
    /// Streams `inner`, at most `limit` bytes of it.
    pub fn new(inner: ClientBody, limit: u64) -> Self {
        RequestBody {
            source: Source::Stream(inner, Arc::new(Progress::new())),
            read_before: None,
            seen: 0,
            limit,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::buffered(Bytes::new())
    }

    /// How a streamed body is getting on (`None` for one held in memory, which is sent at
    /// once and cannot fail).
    pub fn progress(&self) -> Option<Arc<Progress>> {
        match &self.source {
            Source::Stream(b, p) if !b.is_end_stream() => Some(p.clone()),
            _ => None,
        }
    }

    /// A copy of a body held in memory or known to be empty (`None` for a streamed one,
    /// which cannot be copied).
    pub fn try_clone(&self) -> Option<Self> {
        match &self.source {
            Source::Buffered(b) => Some(Self::buffered(b.clone().unwrap_or_default())),
            Source::Stream(b, _) if b.is_end_stream() && self.seen == 0 => Some(Self::empty()),
            Source::Stream(..) if self.read_before.is_some() => None,
            Source::Stream(..) => None,
        }
    }

    /// A body held in memory (cheap to clone: `Bytes` shares it).
    pub fn buffered(bytes: Bytes) -> Self {
        RequestBody {
            source: Source::Buffered((!bytes.is_empty()).then_some(bytes)),
            read_before: None,
            seen: 0,
            limit: u64::MAX,
        }
    }

    /// The body again, for a request the upstream did not process, after `read` was taken
    /// from it: `read` first, then the rest (which may itself begin with what an earlier
    /// resend had not sent yet).
    pub fn resend(mut self, read: Bytes) -> Self {
        self.read_before = match (read.is_empty(), self.read_before.take()) {
            (true, before) => before,
            (false, None) => Some(read),
            (false, Some(before)) => {
                let mut both = bytes::BytesMut::with_capacity(read.len() + before.len());
                both.extend_from_slice(&read);
                both.extend_from_slice(&before);
                Some(both.freeze())
            }
        };
        self
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
        if let Some(read) = this.read_before.take() {
            return Poll::Ready(Some(Ok(Frame::data(read))));
        }
        let (inner, progress) = match &mut this.source {
            Source::Buffered(b) => return Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Source::Stream(inner, progress) => (inner, progress),
        };
        match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.limit {
                        progress.set_fault(ClientFault::TooLarge);
                        return Poll::Ready(Some(Err(Box::new(ClientFault::TooLarge))));
                    }
                }
                progress.enter(if inner.is_end_stream() {
                    SENT
                } else {
                    WAITING_UPSTREAM
                });
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(fault))) => {
                progress.set_fault(fault);
                Poll::Ready(Some(Err(Box::new(fault))))
            }
            Poll::Ready(None) => {
                progress.enter(SENT);
                Poll::Ready(None)
            }
            Poll::Pending => {
                progress.enter(WAITING_CLIENT);
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read_before.is_none()
            && match &self.source {
                Source::Stream(b, _) => b.is_end_stream(),
                Source::Buffered(b) => b.is_none(),
            }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Stream(b, _) if self.read_before.is_some() => {
                let read = self.read_before.as_ref().map_or(0, |r| r.len() as u64);
                let rest = b.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + read);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + read);
                }
                hint
            }
            Source::Stream(b, _) => b.size_hint(),
            Source::Buffered(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn text(body: RequestBody) -> String {
        let bytes = body.collect().await.expect("body").to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn a_resend_puts_what_was_read_first() {
        let body = RequestBody::buffered(Bytes::from_static(b"rest"));
        assert_eq!(
            text(body.resend(Bytes::from_static(b"read-"))).await,
            "read-rest"
        );
    }

    #[tokio::test]
    async fn a_resend_of_a_resend_loses_nothing() {
        // Sent again, and caught again before any of it was read: what the first resend
        // put first must stay first.
        let once =
            RequestBody::buffered(Bytes::from_static(b"rest")).resend(Bytes::from_static(b"a-"));
        assert!(!once.is_end_stream());
        let twice = once.resend(Bytes::new());
        assert_eq!(text(twice).await, "a-rest");
    }
}
