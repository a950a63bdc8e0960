//! What a phase leaves for a later one and for the response filters: headers for the
//! upstream request (claims, the cache's validators) and for the response (CORS, rate-limit
//! state, the authentication challenge), the existence filter's key to learn, and the
//! request kept for a fallback upstream. Dropped when the response head is made; what the
//! log needs lives in [`super::done::Done`].

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri, Version};

use crate::auth::Refusal;
use crate::ratelimit::LimitHeaders;

/// Notes between phases, for one request.
#[derive(Default)]
pub(crate) struct Notes {
    /// `RateLimit-Policy` / `RateLimit` for the response.
    pub(crate) limit_headers: Option<LimitHeaders>,
    /// Why authentication refused the request (for its challenge).
    pub(crate) auth_refusal: Option<Refusal>,
    /// Whether authorization refused it for a missing scope (a bearer challenge says so).
    pub(crate) scope_refused: bool,
    /// Headers for the upstream from the token's claims.
    pub(crate) claim_headers: Vec<(HeaderName, HeaderValue)>,
    /// CORS headers for the response.
    pub(crate) cors_headers: Vec<(HeaderName, HeaderValue)>,
    /// The existence filter's key, to learn if the response succeeds.
    pub(crate) learn_key: Option<Vec<u8>>,
    /// Validators the cache sends upstream to revalidate its entry, in place of the
    /// client's.
    pub(crate) conditionals: Vec<(HeaderName, HeaderValue)>,
    /// A bodiless request kept to be sent to a fallback upstream.
    pub(crate) replay: Option<Box<Replay>>,
    /// A gRPC (or gRPC-Web) call: the gateway's own refusals are gRPC answers.
    pub(crate) grpc: Option<crate::grpc::Call>,
}

/// What is needed to send a bodiless request again, to a fallback upstream.
pub(crate) struct Replay {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) host: HeaderValue,
    pub(crate) new_path: Option<String>,
    pub(crate) body_limit: u64,
    pub(crate) criticality: floodgate_config::resilience::Criticality,
}
