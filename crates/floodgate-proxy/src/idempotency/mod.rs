//! Idempotency keys (draft-ietf-httpapi-idempotency-key-header): a POST or PATCH that
//! carries `Idempotency-Key` has its response kept, per client (the authenticated consumer,
//! or else the client address), for the route's TTL; a repeat gets that response again
//! with `Idempotent-Replayed: true` instead of reaching the upstream a second time. While
//! the first is in flight a repeat gets 409; the same key on a different request (method,
//! target or body, compared by SHA-256) gets 422.
//!
//! What is kept: responses the upstream finished with a status below 500, except 408, 425
//! and 429 (the request was not acted on, a retry should go through). Gateway errors, 5xx
//! and responses cut short leave no trace, so a retry goes upstream again (the key is
//! passed on, so an upstream that honours keys itself still sees a repeat). A response
//! larger than `max_response_size` is remembered as done but not kept: a repeat is refused
//! with 409 rather than done twice.
//!
//! Storage: one store per route, kept across reloads while the route's settings stay the
//! same: requests in flight in a map (one entry per request being forwarded), kept
//! responses in a moka cache bounded in bytes, each expiring after the TTL. With
//! `shared`, the cluster's Redis holds both instead ([`shared`]), and the memory store
//! stands in while Redis cannot be reached.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use moka::sync::Cache;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::body::{BoundedCopy, ResponseBody, Tap};
use crate::client_body::{ClientBody, Inbound};
use crate::problem::Problem;

pub mod shared;

/// The request field naming the key.
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The response field that marks a replay.
pub static REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The longest key accepted.
const MAX_KEY_LEN: usize = 255;

type Fingerprint = [u8; 32];

/// What was kept for a key.
enum Kept {
    /// The response, whole.
    Response {
        fingerprint: Fingerprint,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    /// Done, but the response was too large to keep.
    TooLarge { fingerprint: Fingerprint },
}

impl Kept {
    fn fingerprint(&self) -> &Fingerprint {
        match self {
            Kept::Response { fingerprint, .. } | Kept::TooLarge { fingerprint } => fingerprint,
        }
    }

    fn weight(&self, key: &str) -> u32 {
        let fields: usize = match self {
            Kept::Response { headers, body, .. } => {
                body.len()
                    + headers
                        .iter()
                        .map(|(n, v)| n.as_str().len() + v.len() + 32)
                        .sum::<usize>()
            }
            Kept::TooLarge { .. } => 0,
        };
        u32::try_from(key.len() + fields + 128).unwrap_or(u32::MAX)
    }
}

/// One route's keys: those in flight and the kept responses.
pub struct KeyStore {
    in_flight: parking_lot::Mutex<HashMap<Arc<str>, Fingerprint>>,
    kept: Cache<Arc<str>, Arc<Kept>>,
}

impl KeyStore {
    /// A store of up to `memory` bytes whose entries last `ttl`.
    pub fn new(memory: u64, ttl: Duration) -> Self {
        KeyStore {
            in_flight: parking_lot::Mutex::default(),
            kept: Cache::builder()
                .max_capacity(memory)
                .weigher(|k: &Arc<str>, v: &Arc<Kept>| v.weight(k))
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Claims `key` for a request with `fingerprint`, or says why not.
    fn claim(self: &Arc<Self>, key: Arc<str>, fingerprint: Fingerprint) -> Claimed {
        let mut in_flight = self.in_flight.lock();
        if let Some(first) = in_flight.get(&key) {
            return if *first == fingerprint {
                Claimed::InFlight
            } else {
                Claimed::Mismatch
            };
        }
        if let Some(kept) = self.kept.get(&key) {
            return if *kept.fingerprint() == fingerprint {
                Claimed::Kept(kept)
            } else {
                Claimed::Mismatch
            };
        }
        in_flight.insert(key.clone(), fingerprint);
        Claimed::New(Claim {
            place: Place::Memory(self.clone()),
            key,
            fingerprint,
            kept: false,
        })
    }
}

enum Claimed {
    New(Claim),
    Kept(Arc<Kept>),
    InFlight,
    Mismatch,
}

/// A key held by the request in flight with it; released when dropped, after its response
/// is kept if it is.
pub(crate) struct Claim {
    place: Place,
    key: Arc<str>,
    fingerprint: Fingerprint,
    kept: bool,
}

/// Where a claim is held.
enum Place {
    /// In this node's memory.
    Memory(Arc<KeyStore>),
    /// In the cluster's Redis.
    Redis(Arc<shared::SharedKeys>),
}

impl Claim {
    fn keep(&mut self, kept: Kept) {
        self.kept = true;
        match &self.place {
            // Kept before the in-flight mark goes (on drop), so a repeat sees one or the
            // other.
            Place::Memory(store) => store.kept.insert(self.key.clone(), Arc::new(kept)),
            Place::Redis(keys) => keys.keep(&self.key, &self.fingerprint, &kept),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        match &self.place {
            Place::Memory(store) => {
                store.in_flight.lock().remove(&self.key);
            }
            Place::Redis(keys) if !self.kept => keys.release(&self.key, &self.fingerprint),
            Place::Redis(_) => {}
        }
    }
}

/// A route's idempotency-key handling.
pub struct RouteIdempotency {
    store: Arc<KeyStore>,
    /// The cluster's Redis, when keys are shared; `store` stands in while it is down.
    shared: Option<Arc<shared::SharedKeys>>,
    methods: Vec<Method>,
    required: bool,
    max_body: u64,
    max_response: u64,
    metrics: Metrics,
}

/// A route's counters by outcome.
pub struct Metrics {
    /// Forwarded: the first request with its key.
    pub first: Counter,
    /// Answered with the kept response.
    pub replayed: Counter,
    /// 409 while the first was in flight.
    pub in_flight: Counter,
    /// 422: the key was used for another request.
    pub mismatch: Counter,
    /// 409: the first response was too large to keep.
    pub not_kept: Counter,
}

impl Metrics {
    /// The counters of `route`.
    pub fn new(families: &IdempotencyFamilies, route: &str) -> Self {
        let get = |kind| {
            families
                .requests
                .get_or_create(&RouteKind {
                    route: route.to_owned(),
                    kind,
                })
                .clone()
        };
        Metrics {
            first: get("first"),
            replayed: get("replayed"),
            in_flight: get("in_flight"),
            mismatch: get("mismatch"),
            not_kept: get("not_kept"),
        }
    }
}

/// Idempotency keys' metric family: requests with a key, by route and outcome.
pub struct IdempotencyFamilies {
    requests: Family<RouteKind, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteKind {
    route: String,
    kind: &'static str,
}

impl IdempotencyFamilies {
    /// Registers the family.
    pub(crate) fn register(reg: &mut Registry) -> Self {
        let m = IdempotencyFamilies {
            requests: Family::default(),
        };
        reg.register(
            "idempotency_requests",
            "Requests with an idempotency key by route and outcome: first (forwarded), \
             replayed (answered with the kept response), in_flight (409: the first is still \
             in progress), mismatch (422: the key was used for another request), not_kept \
             (409: the first response was too large to keep)",
            m.requests.clone(),
        );
        m
    }
}

/// What to do with a request on a route with idempotency keys.
pub(crate) enum Begin {
    /// Not concerned (another method, or no key where none is required): as it came.
    Pass(Request<ClientBody>),
    /// A repeat: the kept response.
    Replay(Response<ResponseBody>),
    /// The first with its key: forward the request (its body read), then hand the result
    /// to [`Claim::complete`].
    Forward(Request<Inbound>, Claim),
}

impl RouteIdempotency {
    /// The handling `c` describes, over `store` (kept across reloads).
    pub fn new(
        c: &floodgate_config::cache::Idempotency,
        store: Arc<KeyStore>,
        shared: Option<Arc<shared::SharedKeys>>,
        metrics: Metrics,
    ) -> Self {
        RouteIdempotency {
            store,
            shared,
            methods: c
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            required: c.required,
            max_body: c.max_body_size.0,
            max_response: c.max_response_size.0,
            metrics,
        }
    }

    /// Looks `req` up under `scope` (who sends it) and `target` (its path and query).
    pub(crate) async fn begin(
        &self,
        req: Request<ClientBody>,
        scope: &str,
        target: &str,
    ) -> Result<Begin, Problem> {
        if !self.methods.contains(req.method()) {
            return Ok(Begin::Pass(req));
        }
        let Some(value) = req.headers().get(&IDEMPOTENCY_KEY) else {
            return if self.required {
                Err(Problem::IdempotencyKeyMissing)
            } else {
                Ok(Begin::Pass(req))
            };
        };
        let key = parse_key(value).ok_or(Problem::BadRequest(
            "The Idempotency-Key header must be a string of 1 to 255 visible characters, such as \"8e03978e-40d5-43e8-bc93-6894a57f9324\".",
        ))?;
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body) {
            return Err(Problem::BodyTooLarge);
        }
        let (parts, body) = req.into_parts();
        let body = crate::client_body::read_whole(body, self.max_body).await?;
        let fingerprint = fingerprint(&parts.method, target, &body);
        let full_key: Arc<str> = format!("{scope}\u{0}{key}").into();
        let claimed = match &self.shared {
            Some(keys) => match keys.claim(&full_key, fingerprint).await {
                Some(c) => c,
                None => self.store.claim(full_key, fingerprint),
            },
            None => self.store.claim(full_key, fingerprint),
        };
        match claimed {
            Claimed::New(claim) => {
                self.metrics.first.inc();
                Ok(Begin::Forward(
                    Request::from_parts(parts, Inbound::Held(body)),
                    claim,
                ))
            }
            Claimed::Kept(kept) => match &*kept {
                Kept::Response {
                    status,
                    headers,
                    body,
                    ..
                } => {
                    self.metrics.replayed.inc();
                    let mut resp = Response::new(ResponseBody::full(body.clone()));
                    *resp.status_mut() = *status;
                    *resp.headers_mut() = headers.clone();
                    resp.headers_mut()
                        .insert(&REPLAYED, HeaderValue::from_static("true"));
                    Ok(Begin::Replay(resp))
                }
                Kept::TooLarge { .. } => {
                    self.metrics.not_kept.inc();
                    Err(Problem::IdempotentResponseNotKept)
                }
            },
            Claimed::InFlight => {
                self.metrics.in_flight.inc();
                Err(Problem::IdempotencyKeyInFlight)
            }
            Claimed::Mismatch => {
                self.metrics.mismatch.inc();
                Err(Problem::IdempotencyKeyReused)
            }
        }
    }

    /// Keeps the response to the first request with `claim`'s key, as it streams to the
    /// client, if it is one to keep.
    pub(crate) fn complete(
        &self,
        claim: Claim,
        result: Result<Response<ResponseBody>, Problem>,
    ) -> Result<Response<ResponseBody>, Problem> {
        let mut resp = result?;
        if !keepable(resp.status()) {
            return Ok(resp);
        }
        let declared = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let copy = Copy {
            status: resp.status(),
            headers: resp.headers().clone(),
            copy: BoundedCopy::new(self.max_response, declared),
            claim,
        };
        resp.body_mut().tap(Box::new(copy));
        Ok(resp)
    }
}

/// Whether a response to the first request is kept: the upstream acted on the request.
fn keepable(status: StatusCode) -> bool {
    status.as_u16() < 500
        && !matches!(
            status,
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_EARLY | StatusCode::TOO_MANY_REQUESTS
        )
}

/// Copies the first response as it streams; keeps it once it has ended complete.
struct Copy {
    status: StatusCode,
    headers: HeaderMap,
    copy: BoundedCopy,
    claim: Claim,
}

impl Tap for Copy {
    fn data(&mut self, data: &Bytes) {
        self.copy.push(data);
    }

    fn end(self: Box<Self>, complete: bool) {
        let this = *self;
        if !complete {
            // Cut short: forgotten (the claim's drop), so a retry goes upstream again.
            return;
        }
        let fingerprint = this.claim.fingerprint;
        let mut claim = this.claim;
        claim.keep(match this.copy.finish() {
            None => Kept::TooLarge { fingerprint },
            Some(body) => Kept::Response {
                fingerprint,
                status: this.status,
                headers: this.headers,
                body,
            },
        });
    }
}

/// The key in an `Idempotency-Key` value: a Structured Fields string (RFC 8941 §3.3.3),
/// or, leniently, a bare run of visible characters as many clients send.
fn parse_key(value: &HeaderValue) -> Option<String> {
    let raw = value.as_bytes();
    let key = if let Some(inner) = raw.strip_prefix(b"\"") {
        let inner = inner.strip_suffix(b"\"")?;
        let mut out = Vec::with_capacity(inner.len());
        let mut bytes = inner.iter();
        while let Some(&b) = bytes.next() {
            match b {
                b'\\' => match bytes.next() {
                    Some(&e @ (b'"' | b'\\')) => out.push(e),
                    _ => return None,
                },
                b'"' => return None,
                0x20..=0x7e => out.push(b),
                _ => return None,
            }
        }
        out
    } else {
        if !raw.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return None;
        }
        raw.to_vec()
    };
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return None;
    }
    String::from_utf8(key).ok()
}

/// What tells one request from another under the same key: method, target and body.
fn fingerprint(method: &Method, target: &str, body: &[u8]) -> Fingerprint {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(method.as_str().as_bytes());
    ctx.update(b"\0");
    ctx.update(target.as_bytes());
    ctx.update(b"\0");
    ctx.update(body);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Idempotency keys, around the exchange.
pub(crate) const POLICY: crate::policy::RoutePolicy = crate::policy::RoutePolicy {
    name: "idempotency keys",
    phase: crate::policy::Phase::Around,
    describe: |r| {
        let Some(c) = &r.idempotency else {
            return Vec::new();
        };
        vec![format!(
            "idempotency keys: Idempotency-Key on {} ({}), responses kept {} up to {}{}",
            c.methods.join(", "),
            if c.required { "required" } else { "optional" },
            c.ttl,
            c.max_response_size,
            if c.shared {
                ", shared by the fleet"
            } else {
                ""
            }
        )]
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    fn key(v: &str) -> Option<String> {
        parse_key(&HeaderValue::from_str(v).unwrap())
    }

    #[test]
    fn keys_are_sf_strings_or_bare_tokens() {
        assert_eq!(key("\"8e03978e-40d5\"").as_deref(), Some("8e03978e-40d5"));
        assert_eq!(
            key(r#""a \"quoted\" key""#).as_deref(),
            Some("a \"quoted\" key")
        );
        assert_eq!(key("order-42").as_deref(), Some("order-42"));
        for bad in ["\"\"", "\"open", "two words", r#""bad \x escape""#, ""] {
            assert_eq!(key(bad), None, "{bad}");
        }
        assert_eq!(key(&"k".repeat(255)).map(|k| k.len()), Some(255));
        assert_eq!(key(&"k".repeat(256)), None);
    }

    #[test]
    fn fingerprints_differ_by_method_target_and_body() {
        let a = fingerprint(&Method::POST, "/orders", b"{}");
        assert_eq!(a, fingerprint(&Method::POST, "/orders", b"{}"));
        assert_ne!(a, fingerprint(&Method::PATCH, "/orders", b"{}"));
        assert_ne!(a, fingerprint(&Method::POST, "/orders?x", b"{}"));
        assert_ne!(a, fingerprint(&Method::POST, "/orders", b"{ }"));
    }

    #[test]
    fn a_key_is_claimed_once_then_replayed_or_refused() {
        let store = Arc::new(KeyStore::new(1 << 20, Duration::from_secs(60)));
        let k: Arc<str> = "client\u{0}k1".into();
        let fp = fingerprint(&Method::POST, "/a", b"1");
        let other = fingerprint(&Method::POST, "/a", b"2");
        let Claimed::New(mut claim) = store.claim(k.clone(), fp) else {
            panic!("first claim")
        };
        assert!(matches!(store.claim(k.clone(), fp), Claimed::InFlight));
        assert!(matches!(store.claim(k.clone(), other), Claimed::Mismatch));
        claim.keep(Kept::Response {
            fingerprint: fp,
            status: StatusCode::CREATED,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"made"),
        });
        drop(claim);
        assert!(matches!(store.claim(k.clone(), fp), Claimed::Kept(_)));
        assert!(matches!(store.claim(k.clone(), other), Claimed::Mismatch));
        // A claim dropped without keeping anything leaves no trace.
        let k2: Arc<str> = "client\u{0}k2".into();
        drop(store.claim(k2.clone(), fp));
        assert!(matches!(store.claim(k2, fp), Claimed::New(_)));
    }

    #[test]
    fn only_answers_the_upstream_acted_on_are_kept() {
        for s in [200, 201, 204, 301, 400, 404, 409, 422] {
            assert!(keepable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [408, 425, 429, 500, 502, 503, 504] {
            assert!(!keepable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }
}
