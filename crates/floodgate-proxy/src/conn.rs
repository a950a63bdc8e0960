//! What the data plane knows about one client connection: where it came from, on which
//! listener, what its TLS handshake established, and its activity (requests in flight,
//! when the last one began or ended) for the idle timeout and the drain.
//!
//! A leaf the server fills in when a connection is accepted and every request phase reads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::headers::ClientAddr;

/// What the pipeline knows about the connection a request came on.
pub struct ConnInfo {
    /// Index of the listener in the snapshot.
    pub listener: usize,
    /// The listener's name.
    pub listener_name: Arc<str>,
    /// The client's address.
    pub remote: SocketAddr,
    /// The client's address rendered for forwarding fields, once per connection.
    pub client: ClientAddr,
    /// In-flight and activity tracking for idle timeouts.
    pub state: Arc<ConnState>,
    /// What the TLS handshake established, on a TLS listener.
    pub tls: Option<crate::tls_server::TlsInfo>,
    /// The longest wait for the next piece of a request body (`timeouts.body_read`).
    pub body_read: Duration,
}

/// Per-connection activity: requests in flight and when the last one began or ended.
pub struct ConnState {
    inflight: AtomicUsize,
    /// Milliseconds since `opened` of the last activity.
    last_active_ms: AtomicU64,
    opened: Instant,
}

impl Default for ConnState {
    /// A connection that has just opened.
    fn default() -> Self {
        ConnState {
            inflight: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            opened: Instant::now(),
        }
    }
}

impl ConnState {
    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    /// A request started.
    pub fn begin(&self) {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        self.touch();
    }

    /// A request's response ended.
    pub fn end(&self) {
        self.inflight.fetch_sub(1, Ordering::AcqRel);
        self.touch();
    }

    pub(crate) fn idle_deadline(&self, idle: Duration) -> Instant {
        if self.inflight.load(Ordering::Acquire) > 0 {
            return Instant::now() + idle;
        }
        self.opened + Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed)) + idle
    }

    pub(crate) fn idle_for(&self, idle: Duration) -> bool {
        self.inflight.load(Ordering::Acquire) == 0 && Instant::now() >= self.idle_deadline(idle)
    }
}
