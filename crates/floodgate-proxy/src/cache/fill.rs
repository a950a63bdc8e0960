//! Storing a response while it streams to the client: a body [`Tap`] that copies the data
//! (up to the largest object stored) and, once the body has ended complete, stores the
//! entry and hands it to the requests coalesced behind this one. A body cut short, or one
//! that grew past the limit, is not stored; the waiters are told so.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};

use super::flight::{Leader, Outcome};
use super::policy::Freshness;
use super::store::{Entry, Store};
use crate::body::Tap;

/// What becomes of the copy.
pub(crate) enum Keep {
    /// Stored for `primary`, selected by the request's fields.
    Store {
        primary: Arc<str>,
        request: HeaderMap,
    },
    /// Only handed to the waiters (an error response: shared, never stored).
    ShareOnly,
}

/// A response being copied.
pub(crate) struct Fill {
    pub store: Arc<Store>,
    pub keep: Keep,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub freshness: Freshness,
    pub leader: Option<Leader>,
    pub started: Instant,
    buf: BytesMut,
    overflow: bool,
}

impl Fill {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: Arc<Store>,
        keep: Keep,
        status: StatusCode,
        headers: HeaderMap,
        freshness: Freshness,
        leader: Option<Leader>,
        started: Instant,
        expected_len: Option<u64>,
    ) -> Self {
        let capacity = expected_len.unwrap_or(0).min(store.max_object());
        Fill {
            buf: BytesMut::with_capacity(usize::try_from(capacity).unwrap_or(0)),
            store,
            keep,
            status,
            headers,
            freshness,
            leader,
            started,
            overflow: false,
        }
    }
}

impl Tap for Fill {
    fn data(&mut self, data: &Bytes) {
        if self.overflow {
            return;
        }
        if (self.buf.len() + data.len()) as u64 > self.store.max_object() {
            self.overflow = true;
            self.buf = BytesMut::new();
            return;
        }
        self.buf.extend_from_slice(data);
    }

    fn end(self: Box<Self>, complete: bool) {
        let this = *self;
        if !complete {
            // The leader, dropped with the rest, tells the waiters to lead in its place.
            return;
        }
        if this.overflow {
            if let Some(l) = this.leader {
                l.finish(Outcome::NotShareable);
            }
            return;
        }
        let now = SystemTime::now();
        let fetch_time = this.started.elapsed().max(Duration::from_millis(1));
        let entry = Entry::new(
            this.status,
            this.headers,
            this.buf.freeze(),
            this.freshness,
            fetch_time,
            now,
        );
        let entry = match this.keep {
            Keep::Store { primary, request } => this.store.insert(&primary, &request, entry),
            Keep::ShareOnly => Arc::new(entry),
        };
        if let Some(l) = this.leader {
            l.finish(Outcome::Serve(entry));
        }
    }
}
