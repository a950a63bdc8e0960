//! The body of a message read from a connection. It reads the connection itself when
//! polled (see [`crate::wire`]): a request body streamed to an upstream moves from one
//! socket to the other in the task that polls it, at the pace the reader takes it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;

use crate::wire::{BodyError, Transport, Wire};

/// What a body reads from: a connection's shared wire, whatever its transport.
pub(crate) trait Source: Send + Sync {
    fn poll_body(
        &self,
        cx: &mut Context<'_>,
        generation: u64,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>>;
    fn remaining(&self, generation: u64) -> Option<u64>;
}

impl<I: Transport> Source for Mutex<Wire<I>> {
    fn poll_body(
        &self,
        cx: &mut Context<'_>,
        generation: u64,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.lock().poll_body(cx, generation)
    }

    fn remaining(&self, generation: u64) -> Option<u64> {
        self.lock().remaining(generation)
    }
}

/// A message body read from an HTTP/1.1 connection.
pub struct IncomingBody {
    source: Option<Arc<dyn Source>>,
    generation: u64,
    ended: bool,
}

impl IncomingBody {
    pub(crate) fn new(source: Option<Arc<dyn Source>>, generation: u64) -> Self {
        IncomingBody {
            ended: source.is_none(),
            source,
            generation,
        }
    }

    /// A body with nothing in it.
    pub fn empty() -> Self {
        IncomingBody::new(None, 0)
    }
}

impl std::fmt::Debug for IncomingBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingBody")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Body for IncomingBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let Some(source) = self.source.as_ref() else {
            return Poll::Ready(None);
        };
        let polled = source.poll_body(cx, self.generation);
        match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.ended = true,
            Poll::Ready(Some(Ok(f))) if f.is_trailers() => self.ended = true,
            _ => {}
        }
        if let Poll::Ready(Some(Ok(_))) = &polled
            && self
                .source
                .as_ref()
                .is_some_and(|s| s.remaining(self.generation) == Some(0))
        {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            _ if self.ended => SizeHint::with_exact(0),
            Some(s) => match s.remaining(self.generation) {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
            None => SizeHint::with_exact(0),
        }
    }
}
