//! Bytes on their way out of a connection, for both sides: a pooled buffer gathers heads
//! and small pieces of body into one write; a large piece goes out beside it, without a
//! copy, in one vectored write.

use std::io::{self, IoSlice};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use parking_lot::Mutex;

use crate::pool;
use crate::wire::{Transport, Wire};

/// Bytes on their way out: a buffer for heads and small pieces, and at most one large
/// piece written beside it without a copy.
pub(crate) struct Out {
    pub(crate) buf: Vec<u8>,
    /// How much of `buf` is written.
    at: usize,
    /// A large piece of body to follow `buf`, and the chunk end to follow it.
    large: Option<Bytes>,
    large_tail: &'static [u8],
    pub(crate) trailers: Option<http::HeaderMap>,
    limit: usize,
}

/// Pieces at most this large are copied into the buffer; larger ones are written from
/// where they are.
const COPY_AT_MOST: usize = 4 * 1024;

impl Out {
    pub(crate) fn new(size: usize) -> Self {
        Out {
            buf: pool::take_write(size),
            at: 0,
            large: None,
            large_tail: b"",
            trailers: None,
            limit: size,
        }
    }

    /// Whether the buffer should be written before more is added.
    pub(crate) fn is_full(&self) -> bool {
        self.large.is_some() || self.buf.len() >= self.limit
    }

    /// Adds a piece of body (chunk-framed if `chunked`).
    pub(crate) fn push_data(&mut self, data: Bytes, chunked: bool) {
        if chunked {
            crate::chunked::size_line(&mut self.buf, data.len());
        }
        let tail: &'static [u8] = if chunked { b"\r\n" } else { b"" };
        if data.len() <= COPY_AT_MOST {
            self.buf.extend_from_slice(&data);
            self.buf.extend_from_slice(tail);
        } else {
            self.large = Some(data);
            self.large_tail = tail;
        }
    }

    /// Writes everything held, in as few writes as the socket takes.
    pub(crate) fn poll_drain<I: Transport>(
        &mut self,
        wire: &Mutex<Wire<I>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let mut w = wire.lock();
        loop {
            let head = &self.buf[self.at..];
            let large = self.large.as_deref().unwrap_or(&[]);
            if head.is_empty() && large.is_empty() {
                break;
            }
            let slices = [IoSlice::new(head), IoSlice::new(large)];
            let n = ready!(w.poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let from_head = n.min(head.len());
            self.at += from_head;
            if let Some(l) = self.large.as_mut() {
                l.advance(n - from_head);
                if l.is_empty() {
                    self.large = None;
                    self.buf.clear();
                    self.at = 0;
                    self.buf.extend_from_slice(self.large_tail);
                }
            }
        }
        self.buf.clear();
        self.at = 0;
        Poll::Ready(Ok(()))
    }

    /// Whether everything held has been written.
    pub(crate) fn is_empty(&self) -> bool {
        self.at >= self.buf.len() && self.large.is_none()
    }

    /// Writes until at least one byte has gone out (or the write failed).
    pub(crate) fn poll_drain_some<I: Transport>(
        &mut self,
        wire: &Mutex<Wire<I>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let mut w = wire.lock();
        let head = &self.buf[self.at..];
        if head.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let n = ready!(w.poll_write_vectored(cx, &[IoSlice::new(head)]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.at += n;
        Poll::Ready(Ok(()))
    }

    /// Gives the buffer back to the pool.
    pub(crate) fn give_back(self, size: usize) {
        pool::give_write(self.buf, size);
    }
}
