//! Request mirroring: a copy of a route's requests goes to a shadow upstream, fire and
//! forget. The copy runs in its own task; its answer is read and dropped; its failures are
//! only counted. At most [`MAX_IN_FLIGHT`] copies per route are outstanding: past that,
//! copies are dropped rather than queued, so a slow shadow costs memory that is bounded
//! and never delays the real exchange.
//!
//! Only requests whose body is known whole are copied: bodiless ones, and those held for
//! retries (up to the replay buffer). A streamed body goes to the real upstream only.
//! The copy's `Host` gets `-shadow` appended (as Envoy does), so the shadow can tell.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Uri};
use http_body_util::BodyExt;

use crate::body::ResponseBody;
use crate::request_body::RequestBody;
use crate::upstream::{RequestHead, UpstreamSet};

/// Copies outstanding per route before further copies are dropped.
pub const MAX_IN_FLIGHT: u32 = 64;

/// Where copies of a route's requests go.
pub struct MirrorPlan {
    upstream: Arc<UpstreamSet>,
    share: f64,
    in_flight: Arc<AtomicU32>,
}

impl MirrorPlan {
    /// Copies `share` (0..=1) of requests to `upstream`.
    pub fn new(upstream: Arc<UpstreamSet>, share: f64) -> Self {
        MirrorPlan {
            upstream,
            share,
            in_flight: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Sends a copy of the request (if this one is sampled and there is room); returns at
    /// once.
    pub fn send(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: Bytes) {
        if self.share < 1.0 && fastrand::f64() >= self.share {
            return;
        }
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!(upstream = %self.upstream.name, "mirror copy dropped: too many outstanding");
            return;
        }
        let mut head = RequestHead {
            method: method.clone(),
            uri: uri.clone(),
            headers: headers.clone(),
        };
        if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
            let (name, port) = match host.rsplit_once(':') {
                Some((n, p)) if !n.ends_with(']') || host.starts_with('[') => (n, Some(p)),
                _ => (host, None),
            };
            let shadow = match port {
                Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => format!("{name}-shadow:{p}"),
                _ => format!("{host}-shadow"),
            };
            if let Ok(v) = HeaderValue::from_str(&shadow) {
                head.headers.insert(header::HOST, v);
            }
        }
        let upstream = self.upstream.clone();
        let in_flight = self.in_flight.clone();
        tokio::spawn(async move {
            if let Some(target) = upstream.pick(None) {
                let pool = target.pool.clone();
                let req = head.request(RequestBody::buffered(body.clone()));
                let remake = || head.request(RequestBody::buffered(body.clone()));
                let sent =
                    tokio::time::timeout(upstream.request_timeout, pool.send(req, &remake)).await;
                if let Ok(Ok((resp, conn))) = sent {
                    // Read the answer to its end, so the connection goes back to the pool.
                    let mut body = ResponseBody::pooled(resp.into_body(), conn, pool);
                    while let Some(Ok(_)) = body.frame().await {}
                } else {
                    tracing::debug!(upstream = %upstream.name, "mirror copy failed");
                }
            }
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }
}
