//! One connection's socket and read buffer, shared by the task that drives the connection
//! and the body of the request it is serving (which reads the socket itself, in whatever
//! task polls it: no channel between them). Both are polled from one task in the common
//! case, so the lock is never contended; it is held only inside a poll, never across one.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::chunked::{ChunkLimits, ChunkedDecoder, Decoded};
use crate::pool;

/// A byte stream HTTP/1.1 runs over: a TCP socket, a TLS session, anything that reads and
/// writes.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Ready once reading may make progress. Transports that can say so without a buffer
    /// (a socket's readiness) let an idle connection hold no read buffer at all; the
    /// default says "try a read".
    fn poll_read_ready(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Transport for tokio::net::TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::net::TcpStream::poll_read_ready(self, cx)
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        (**self).poll_read_ready(cx)
    }
}

/// Any byte stream as a [`Transport`] that learns it is readable only by reading (a TLS
/// session, whose socket may be readable with no whole record to give).
#[derive(Debug)]
pub struct Plain<T>(pub T);

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for Plain<T> {}

impl<T: AsyncRead + Unpin> AsyncRead for Plain<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Plain<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Why a message body could not be read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// The body's framing is broken (a bad chunk, a trailer section too large).
    Malformed(&'static str),
    /// The peer closed the connection (or it failed) before the body ended.
    Closed,
    /// The body was read after its exchange was over (the connection moved on).
    Stale,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Malformed(why) => write!(f, "malformed body: {why}"),
            BodyError::Closed => f.write_str("the connection closed before the body ended"),
            BodyError::Stale => f.write_str("the body's exchange is over"),
        }
    }
}

impl std::error::Error for BodyError {}

/// Where the body of the message being read stands.
#[derive(Debug)]
pub(crate) enum BodyState {
    /// Read to its end (or there was none).
    Done,
    /// This many bytes still to come.
    Length(u64),
    /// Chunked, mid-way.
    Chunked(ChunkedDecoder),
    /// Until the connection closes.
    UntilClose,
    /// Broken: the connection cannot be reused.
    Failed,
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A connection's socket, read buffer and the state of the body being read.
pub(crate) struct Wire<I> {
    /// The socket; `None` once handed over by an upgrade.
    pub io: Option<I>,
    /// Bytes read and not yet used; no capacity while the connection idles.
    pub rbuf: BytesMut,
    /// The size of a read buffer.
    pub read_size: usize,
    /// The body of the current message.
    pub body: BodyState,
    /// Counts messages, so a body kept past its exchange cannot read the next one's bytes.
    pub generation: u64,
    /// `Expect: 100-continue` still to honour on the body's first read.
    pub expect_continue: bool,
    /// How much of an interim `100 Continue` has been written.
    pub continue_written: Option<usize>,
    /// The response head has been written (too late for a `100 Continue`).
    pub response_started: bool,
    /// A graceful close was asked for.
    pub closing: bool,
    /// The peer closed its side.
    pub eof: bool,
}

impl<I: Transport> Wire<I> {
    pub(crate) fn new(io: I, read_size: usize) -> Self {
        Wire {
            io: Some(io),
            rbuf: BytesMut::new(),
            read_size,
            body: BodyState::Done,
            generation: 0,
            expect_continue: false,
            continue_written: None,
            response_started: false,
            closing: false,
            eof: false,
        }
    }

    /// Reads more into the buffer: the bytes read, 0 at end of stream. With nothing
    /// buffered, the buffer is taken from the pool only once the socket is readable, and
    /// given back if the read finds nothing after all.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        if self.eof {
            return Poll::Ready(Ok(0));
        }
        if self.rbuf.is_empty() && self.rbuf.capacity() == 0 {
            ready!(io.poll_read_ready(cx))?;
            self.rbuf = pool::take_read(self.read_size);
        } else if self.rbuf.capacity() - self.rbuf.len() < 512 {
            self.rbuf.reserve(self.read_size);
        }
        let before = self.rbuf.len();
        let mut spare = self.rbuf.split_off(before);
        let polled = read_into(Pin::new(io), cx, &mut spare);
        self.rbuf.unsplit(spare);
        match polled {
            Poll::Pending => {
                self.release_if_empty();
                Poll::Pending
            }
            Poll::Ready(Ok(0)) => {
                self.eof = true;
                self.release_if_empty();
                Poll::Ready(Ok(0))
            }
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) => {
                self.eof = true;
                Poll::Ready(Err(e))
            }
        }
    }

    /// Whether the peer has closed the connection, learnt by reading ahead (into the buffer,
    /// at most one buffer's worth: pipelined requests wait there). Only once the current
    /// body has been read or is whole in the buffer: until then its reader reads the
    /// socket, perhaps from another task, and a socket wakes only its last reader.
    pub(crate) fn poll_client_gone(&mut self, cx: &mut Context<'_>) -> bool {
        let body_in_hand = match self.body {
            BodyState::Done => true,
            BodyState::Length(n) => self.rbuf.len() as u64 >= n,
            _ => false,
        };
        if !body_in_hand || self.continue_written.is_some() || self.expect_continue {
            return false;
        }
        loop {
            if self.eof {
                return true;
            }
            if self.rbuf.len() >= self.read_size {
                return false;
            }
            match self.poll_fill(cx) {
                Poll::Pending => return false,
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return true,
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    /// Gives the read buffer back to the pool if it holds nothing.
    pub(crate) fn release_if_empty(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            pool::give_read(std::mem::take(&mut self.rbuf), self.read_size);
        }
    }

    /// Writes some of `bufs` (a vectored write where the transport does them).
    pub(crate) fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    /// Flushes the transport (a TLS session's buffered records).
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Shuts the write side down (a TLS session's close_notify, a TCP FIN).
    pub(crate) fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Starts reading a message body of `framing`.
    pub(crate) fn begin_body(&mut self, framing: crate::Framing, chunks: ChunkLimits) -> u64 {
        self.generation += 1;
        self.body = match framing {
            crate::Framing::Empty => BodyState::Done,
            crate::Framing::Length(n) => BodyState::Length(n),
            crate::Framing::Chunked => BodyState::Chunked(ChunkedDecoder::new(chunks)),
            crate::Framing::UntilClose => BodyState::UntilClose,
        };
        self.generation
    }

    /// Takes the next piece of the body from what is buffered, without reading: `None`
    /// when more bytes are needed.
    fn next_buffered(&mut self) -> Option<Result<Option<Frame<Bytes>>, BodyError>> {
        match &mut self.body {
            BodyState::Done => Some(Ok(None)),
            BodyState::Failed => Some(Err(BodyError::Closed)),
            BodyState::Length(remaining) => {
                if self.rbuf.is_empty() {
                    return None;
                }
                let n = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(self.rbuf.len());
                *remaining -= n as u64;
                if *remaining == 0 {
                    self.body = BodyState::Done;
                }
                Some(Ok(Some(Frame::data(self.rbuf.split_to(n).freeze()))))
            }
            BodyState::UntilClose => {
                if self.rbuf.is_empty() {
                    return self.eof.then(|| {
                        self.body = BodyState::Done;
                        Ok(None)
                    });
                }
                let n = self.rbuf.len();
                Some(Ok(Some(Frame::data(self.rbuf.split_to(n).freeze()))))
            }
            BodyState::Chunked(decoder) => match decoder.decode(&mut self.rbuf) {
                Ok(None) => None,
                Ok(Some(Decoded::Data(data))) => Some(Ok(Some(Frame::data(data)))),
                Ok(Some(Decoded::End(trailers))) => {
                    self.body = BodyState::Done;
                    Some(Ok(trailers.map(Frame::trailers)))
                }
                Err(e) => {
                    self.body = BodyState::Failed;
                    Some(Err(BodyError::Malformed(e.reason())))
                }
            },
        }
    }

    /// The next piece of the body of message `generation`.
    pub(crate) fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
        generation: u64,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if generation != self.generation {
            return Poll::Ready(Some(Err(BodyError::Stale)));
        }
        if self.expect_continue {
            self.expect_continue = false;
            if self.rbuf.is_empty() && !self.response_started {
                self.continue_written = Some(0);
            }
        }
        loop {
            if let Some(written) = self.continue_written {
                let mut written = written;
                while written < CONTINUE.len() {
                    match self.poll_write_vectored(cx, &[io::IoSlice::new(&CONTINUE[written..])]) {
                        Poll::Pending => {
                            self.continue_written = Some(written);
                            return Poll::Pending;
                        }
                        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                            self.continue_written = None;
                            self.body = BodyState::Failed;
                            return Poll::Ready(Some(Err(BodyError::Closed)));
                        }
                        Poll::Ready(Ok(n)) => written += n,
                    }
                }
                self.continue_written = None;
                // Flushed at once: a TLS session could otherwise hold it back.
                if let Poll::Ready(Err(_)) = self.poll_flush(cx) {
                    self.body = BodyState::Failed;
                    return Poll::Ready(Some(Err(BodyError::Closed)));
                }
            }
            if let Some(next) = self.next_buffered() {
                return Poll::Ready(next.transpose());
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) if matches!(self.body, BodyState::UntilClose) => {}
                Ok(0) | Err(_) => {
                    self.body = BodyState::Failed;
                    return Poll::Ready(Some(Err(BodyError::Closed)));
                }
                Ok(_) => {}
            }
        }
    }

    /// Reads what is left of the body from the buffer only: whether it has ended.
    pub(crate) fn finish_buffered(&mut self) -> bool {
        loop {
            match self.next_buffered() {
                Some(Ok(None)) => return true,
                Some(Ok(Some(_))) => {}
                Some(Err(_)) | None => return false,
            }
        }
    }

    /// Whether the rest of the body is already buffered (or read), without consuming it:
    /// the reader may still want it.
    pub(crate) fn body_buffered(&self) -> bool {
        match &self.body {
            BodyState::Done => true,
            BodyState::Failed | BodyState::UntilClose => false,
            BodyState::Length(n) => self.rbuf.len() as u64 >= *n,
            BodyState::Chunked(decoder) => {
                // A trial run on copies (rare: only when a response starts before its
                // request's body was read).
                let mut decoder = decoder.clone();
                let mut rest = self.rbuf.clone();
                loop {
                    match decoder.decode(&mut rest) {
                        Ok(Some(Decoded::End(_))) => return true,
                        Ok(Some(Decoded::Data(_))) => {}
                        Ok(None) | Err(_) => return false,
                    }
                }
            }
        }
    }

    /// The exact length still to come, where known.
    pub(crate) fn remaining(&self, generation: u64) -> Option<u64> {
        if generation != self.generation {
            return Some(0);
        }
        match self.body {
            BodyState::Done => Some(0),
            BodyState::Length(n) => Some(n),
            _ => None,
        }
    }
}

/// Reads into the spare capacity of `buf` (an empty `BytesMut` with capacity).
fn read_into<I: AsyncRead + Unpin>(
    io: Pin<&mut I>,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    tokio_util::io::poll_read_buf(io, cx, buf)
}
