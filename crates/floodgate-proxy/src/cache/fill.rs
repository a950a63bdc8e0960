//! Storing a response while it streams to the client: a body [`Tap`] that copies the data
//! (up to the largest object stored) and, once the body has ended complete, stores the
//! entry and hands it to the requests coalesced behind this one. A body cut short, or one
//! that grew past the limit, is not stored; the waiters are told so.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::flight::{Leader, Outcome};
use super::policy::Freshness;
use super::shared::SharedTier;
use super::store::{Entry, Store};
use crate::body::{BoundedCopy, Tap};

/// What becomes of the copy.
pub(crate) enum Keep {
    /// Stored for `primary`, selected by the request's fields.
    Store {
        primary: Arc<str>,
        request: HeaderMap,
        /// The Redis tier it is copied to as well, with the purges it had seen when the
        /// miss was decided.
        tier: Option<(Arc<SharedTier>, u64)>,
        /// The purges the store had applied when the miss was decided.
        local_purges: u64,
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
    copy: BoundedCopy,
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
        Fill {
            copy: BoundedCopy::new(store.max_object(), expected_len),
            store,
            keep,
            status,
            headers,
            freshness,
            leader,
            started,
        }
    }
}

impl Tap for Fill {
    fn data(&mut self, data: &Bytes) {
        self.copy.push(data);
    }

    fn end(self: Box<Self>, complete: bool) {
        let this = *self;
        if !complete {
            // The leader, dropped with the rest, tells the waiters to lead in its place.
            return;
        }
        let Some(body) = this.copy.finish() else {
            if let Some(l) = this.leader {
                l.finish(Outcome::NotShareable);
            }
            return;
        };
        let now = SystemTime::now();
        let fetch_time = this.started.elapsed().max(Duration::from_millis(1));
        let entry = Entry::new(
            this.status,
            this.headers,
            body,
            this.freshness,
            fetch_time,
            now,
        );
        let entry = match this.keep {
            Keep::Store {
                primary,
                request,
                tier,
                local_purges,
            } => {
                let entry =
                    this.store
                        .insert_unless_purged(&primary, &request, entry, local_purges);
                if let Some((tier, purges_seen)) = tier {
                    tier.save(&primary, &request, &entry, purges_seen);
                }
                entry
            }
            Keep::ShareOnly => Arc::new(entry),
        };
        if let Some(l) = this.leader {
            l.finish(Outcome::Serve(entry));
        }
    }
}
