//! HTTP/2 to upstreams, through the `h2` crate directly rather than hyper's client.
//!
//! A proxy must know, when an exchange fails, whether the upstream may have processed the
//! request: only then can it send it again without doing it twice. HTTP/2 answers that
//! precisely (RFC 9113 §8.7): a stream the server refused (RST_STREAM REFUSED_STREAM) or one
//! above the last stream id of its GOAWAY was not processed. hyper's client loses it: it
//! reports the GOAWAY with the same error whether the request never left (the connection had
//! already gone away) or its stream had been sent an instant before, and in the second case
//! it cancels a stream the server is answering. Here a failure to open a stream hands the
//! request back untouched, a stream error says exactly what the server said, and a stream
//! caught by a graceful GOAWAY below its last stream id is answered as usual.
//!
//! Each request gets a clone of the connection's [`h2::client::SendRequest`]; the request
//! body is piped to its stream by a task of its own (flow control can hold it while the
//! response is already arriving), and the response body is the stream's [`RecvStream`],
//! whose window is released as data is handed on.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use super::tls::MaybeTls;
use crate::request_body::RequestBody;

/// The handle new streams are opened through.
pub type Sender = SendRequest<Bytes>;

/// Per-stream receive window: as hyper's client (2 MiB), so one stream can fill a fast link.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// Connection receive window: as hyper's client (5 MiB).
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
/// Largest response header block accepted.
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// Opens HTTP/2 on `io` (prior knowledge, or `h2` chosen by ALPN) and runs the connection as
/// a task of its own, which ends when the connection does; `ended` is called then.
pub async fn handshake(
    io: MaybeTls,
    address: String,
    ended: impl FnOnce() + Send + 'static,
) -> Result<Sender, h2::Error> {
    let (sender, connection) = h2::client::Builder::new()
        .enable_push(false)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .handshake::<_, Bytes>(ReadOn {
            io,
            write_failed: false,
        })
        .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(address = %address, error = %e, "upstream HTTP/2 connection ended");
        }
        ended();
    });
    Ok(sender)
}

/// The connection's transport, which goes on reading after writing to it failed.
///
/// A server that ends a connection closes it as soon as its last stream is answered; what
/// the gateway writes after that (window updates, the rest of a request body) fails, often
/// before the gateway has read the answers, the final GOAWAY and the EOF already on their
/// way. h2 gives up the whole connection on the first failed write, so streams the server
/// answered, and streams it said it would not process, would all fail alike as "broken".
/// Here a write to a peer that is gone is dropped instead, and the connection ends when
/// reading does, once everything the server sent has been read.
struct ReadOn<T> {
    io: T,
    write_failed: bool,
}

impl<T> ReadOn<T> {
    /// Turns a failure that means the peer is gone into a dropped write.
    fn absorb<R>(&mut self, r: Poll<std::io::Result<R>>, dropped: R) -> Poll<std::io::Result<R>> {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
        match r {
            Poll::Ready(Err(e))
                if matches!(e.kind(), BrokenPipe | ConnectionReset | ConnectionAborted) =>
            {
                tracing::debug!(error = %e, "upstream HTTP/2 connection: writing failed; reading on");
                self.write_failed = true;
                Poll::Ready(Ok(dropped))
            }
            r => r,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadOn<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadOn<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.write_failed {
            return Poll::Ready(Ok(buf.len()));
        }
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.absorb(r, buf.len())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.write_failed {
            return Poll::Ready(Ok(()));
        }
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.absorb(r, ())
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.write_failed {
            return Poll::Ready(Ok(()));
        }
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.absorb(r, ())
    }
}

/// Why an exchange failed, and what that says about the request.
pub enum Failed {
    /// No stream was opened (the connection is closed or going away): the request comes
    /// back as it was, body untouched, to go out on another connection.
    Unsent(Request<RequestBody>, h2::Error),
    /// The stream was opened, but the server certainly did not process it: it refused the
    /// stream, or it was above the last stream id of the server's graceful GOAWAY. The
    /// request comes back if its body could be copied (held in memory, or none).
    Unprocessed(Option<Request<RequestBody>>, h2::Error),
    /// The exchange failed after the server may have begun processing the request.
    Broken(h2::Error),
}

impl Failed {
    /// The error.
    pub fn error(&self) -> &h2::Error {
        match self {
            Failed::Unsent(_, e) | Failed::Unprocessed(_, e) | Failed::Broken(e) => e,
        }
    }
}

/// Sends `req` on a new stream of the connection `sender` belongs to and waits for the
/// response head.
pub async fn exchange(
    sender: Sender,
    req: Request<RequestBody>,
) -> Result<Response<ResponseStream>, Failed> {
    let mut sender = match sender.ready().await {
        Ok(s) => s,
        Err(e) => return Err(Failed::Unsent(req, e)),
    };
    let (mut parts, body) = req.into_parts();
    strip_connection_fields(&mut parts.headers);
    let end_of_stream = body.is_end_stream();
    let is_head = parts.method == http::Method::HEAD;
    // `send_request` takes the head; keep what makes the request again.
    let again = Again {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
    };
    let (response, stream) =
        match sender.send_request(Request::from_parts(parts, ()), end_of_stream) {
            Ok(r) => r,
            Err(e) => return Err(Failed::Unsent(again.request(body), e)),
        };
    if end_of_stream {
        return match response.await {
            Ok(resp) => Ok(response_stream(resp, is_head, Cancel(None))),
            Err(e) if unprocessed(&e) => Err(Failed::Unprocessed(Some(again.request(body)), e)),
            Err(e) => Err(Failed::Broken(e)),
        };
    }
    // A body held in memory is copied for a resend; a streamed one is kept as it is read.
    let copy = body.try_clone();
    let (head_tx, head_rx) = oneshot::channel();
    let (cancel_tx, cancel_rx) = oneshot::channel();
    let pipe = tokio::spawn(Pipe {
        kept: copy.is_none().then(BytesMut::new),
        body: Some(body),
        stream,
        sending: true,
        head: Some(head_rx),
        cancel: Some(cancel_rx),
    });
    match response.await {
        Ok(resp) => {
            let _ = head_tx.send(Head::Answered);
            Ok(response_stream(resp, is_head, Cancel(Some(cancel_tx))))
        }
        Err(e) if unprocessed(&e) => {
            let body = match copy {
                Some(copy) => Some(copy),
                None => {
                    let _ = head_tx.send(Head::GiveBack);
                    pipe.await.ok().flatten()
                }
            };
            Err(Failed::Unprocessed(body.map(|b| again.request(b)), e))
        }
        Err(e) => Err(Failed::Broken(e)),
    }
}

/// The response head with its body stream.
fn response_stream(
    resp: Response<RecvStream>,
    is_head: bool,
    cancel: Cancel,
) -> Response<ResponseStream> {
    let remaining = if is_head {
        Some(0)
    } else {
        content_length(resp.headers())
    };
    resp.map(|recv| ResponseStream {
        recv,
        data_done: false,
        remaining,
        cancel,
    })
}

/// A request's head, kept to make it again.
struct Again {
    method: http::Method,
    uri: http::Uri,
    headers: HeaderMap,
}

impl Again {
    fn request(self, body: RequestBody) -> Request<RequestBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = http::Version::HTTP_2;
        *req.headers_mut() = self.headers;
        req
    }
}

/// Whether a stream's error says the server certainly did not process its request.
fn unprocessed(e: &h2::Error) -> bool {
    let refused = e.is_reset() && e.is_remote() && e.reason() == Some(h2::Reason::REFUSED_STREAM);
    // h2 fails a stream with the peer's graceful GOAWAY only when the stream is above the
    // GOAWAY's last stream id; streams at or below it go on and are answered.
    let above_goaway = e.is_go_away() && e.is_remote() && e.reason() == Some(h2::Reason::NO_ERROR);
    refused || above_goaway
}

/// Removes the fields HTTP/2 forbids (RFC 9113 §8.2.2); `te` may only say `trailers`.
fn strip_connection_fields(headers: &mut HeaderMap) {
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
    if headers
        .get(http::header::TE)
        .is_some_and(|te| !te.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(http::header::TE);
    }
}

/// The declared length of a response body, if one was declared and is a plain number.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let first = values.next()?.to_str().ok()?.parse().ok()?;
    values.next().is_none().then_some(first)
}

/// Tells the request body's pipe to reset the stream when the exchange is abandoned (the
/// response future or body dropped before the end); disarmed once the response is whole.
struct Cancel(Option<oneshot::Sender<()>>);

impl Cancel {
    fn disarm(&mut self) {
        if let Some(tx) = self.0.take() {
            // Dropped without a send: the pipe goes on to the end of the request body.
            drop(tx);
        }
    }
}

impl Drop for Cancel {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// The most of a streamed request body kept while its stream's fate is unknown, so that
/// it can go out again if the server turns out not to have processed the stream.
const RESEND_LIMIT: usize = 64 * 1024;

/// What became of the response head, told to the request body's pipe.
enum Head {
    /// It arrived: nothing more to keep.
    Answered,
    /// The server did not process the stream: hand the body back for a resend.
    GiveBack,
}

/// Copies a request body to its stream, pulling the next piece only when the peer's
/// window has room, as hyper does. Until the response head arrives it keeps what it read
/// (up to [`RESEND_LIMIT`]), and hands the body back, that part first, if the server did
/// not process the stream; it resets the stream if the exchange is abandoned (the head
/// never awaited, or the response body dropped early) or the body fails.
struct Pipe {
    body: Option<RequestBody>,
    stream: SendStream<Bytes>,
    /// What was read so far, while it may be needed again; `None` when it cannot be.
    kept: Option<BytesMut>,
    /// Still sending (the body has not ended and the stream can take it).
    sending: bool,
    head: Option<oneshot::Receiver<Head>>,
    cancel: Option<oneshot::Receiver<()>>,
}

impl Pipe {
    fn keep(&mut self, data: &Bytes) {
        if let Some(k) = self.kept.as_mut() {
            if k.len() + data.len() <= RESEND_LIMIT {
                k.extend_from_slice(data);
            } else {
                self.kept = None;
            }
        }
    }

    fn reset(&mut self) {
        self.stream.send_reset(h2::Reason::CANCEL);
    }

    /// Sends what the body has ready while the peer's window has room.
    fn poll_send(&mut self, cx: &mut Context<'_>) {
        while self.sending {
            let Some(body) = self.body.as_mut() else {
                return;
            };
            // Reserve a byte to learn when the window has room; h2 buffers a larger piece
            // and sends it as the window opens.
            self.stream.reserve_capacity(1);
            if self.stream.capacity() == 0 {
                match self.stream.poll_capacity(cx) {
                    Poll::Pending => {
                        if self.stream.poll_reset(cx).is_ready() {
                            self.sending = false;
                        }
                        return;
                    }
                    Poll::Ready(Some(Ok(0))) => continue,
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(Some(Err(_)) | None) => {
                        self.sending = false;
                        return;
                    }
                }
            }
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => return,
                Poll::Ready(None) => {
                    let _ = self.stream.send_data(Bytes::new(), true);
                    self.sending = false;
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(error = %e, "request body failed; resetting the upstream stream");
                    self.kept = None;
                    self.reset();
                    self.sending = false;
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let last = body.is_end_stream();
                        self.keep(&data);
                        if self.stream.send_data(data, last).is_err() || last {
                            self.sending = false;
                        }
                    }
                    Err(frame) => {
                        self.kept = None;
                        if let Ok(trailers) = frame.into_trailers() {
                            let _ = self.stream.send_trailers(trailers);
                        }
                        self.sending = false;
                    }
                },
            }
        }
    }
}

impl std::future::Future for Pipe {
    /// The body, for a resend, when the server did not process the stream.
    type Output = Option<RequestBody>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RequestBody>> {
        let this = &mut *self;
        if let Some(head) = this.head.as_mut()
            && let Poll::Ready(told) = Pin::new(head).poll(cx)
        {
            this.head = None;
            match told {
                Ok(Head::Answered) => this.kept = None,
                Ok(Head::GiveBack) => {
                    this.reset();
                    let body = this.body.take();
                    return Poll::Ready(match (body, this.kept.take()) {
                        (Some(body), Some(kept)) => Some(body.resend(kept.freeze())),
                        _ => None,
                    });
                }
                // The exchange was abandoned before its head came.
                Err(_) => {
                    this.reset();
                    return Poll::Ready(None);
                }
            }
        }
        if this.head.is_none()
            && let Some(cancel) = this.cancel.as_mut()
            && let Poll::Ready(told) = Pin::new(cancel).poll(cx)
        {
            this.cancel = None;
            if told.is_ok() {
                this.reset();
                return Poll::Ready(None);
            }
        }
        this.poll_send(cx);
        if !this.sending && this.head.is_none() {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

/// A response body read from an HTTP/2 stream.
pub struct ResponseStream {
    recv: RecvStream,
    data_done: bool,
    /// What is left of the declared length (h2 itself refuses a body that differs from it).
    remaining: Option<u64>,
    cancel: Cancel,
}

impl Body for ResponseStream {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match this.recv.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(data))) => {
                    // Let the server send as much again.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(r) = this.remaining.as_mut() {
                        *r = r.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => this.data_done = true,
            }
        }
        match this.recv.poll_trailers(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(trailers)) => {
                this.cancel.disarm();
                Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_fields_are_removed_and_te_kept_only_for_trailers() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        h.insert("te", "gzip".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_connection_fields(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        let mut h = HeaderMap::new();
        h.insert("te", "Trailers".parse().unwrap());
        strip_connection_fields(&mut h);
        assert!(h.contains_key("te"));
    }

    #[test]
    fn a_declared_length_counts_only_when_single_and_numeric() {
        let mut h = HeaderMap::new();
        assert_eq!(content_length(&h), None);
        h.insert("content-length", "12".parse().unwrap());
        assert_eq!(content_length(&h), Some(12));
        h.append("content-length", "12".parse().unwrap());
        assert_eq!(content_length(&h), None);
        h.insert("content-length", "x".parse().unwrap());
        assert_eq!(content_length(&h), None);
    }
}
