//! Every error the gateway itself answers, classified once: who is at fault, which status it
//! maps to, and its RFC 9457 problem+json body. Nothing else in the crate picks error statuses.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// nginx's status for a client that closed its connection before the answer.
const CLIENT_CLOSED: StatusCode = match StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => StatusCode::BAD_REQUEST,
};

/// A condition that ends a request with an error answered by the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The request is malformed (client fault).
    BadRequest(&'static str),
    /// No route matches (client fault).
    NoRoute,
    /// The request target is longer than the listener allows (client fault).
    UriTooLong,
    /// The request head is larger than the listener allows (client fault).
    HeadersTooLarge,
    /// The request head did not arrive within the listener's `header_read` (client fault).
    HeadTimeout,
    /// The request uses a feature of HTTP the gateway does not implement, such as a
    /// transfer coding other than chunked (client side).
    NotImplemented(&'static str),
    /// The request names an HTTP version other than 1.0 and 1.1 (client fault).
    VersionNotSupported,
    /// The request body is larger than the listener allows (client fault).
    BodyTooLarge,
    /// The client stopped sending its request body for longer than the listener allows
    /// (client fault).
    BodyTimeout,
    /// The client went away before its request was complete (client fault). Logged with
    /// nginx's 499, which no client sees.
    ClientClosed,
    /// No connection could be made to the upstream (upstream fault).
    UpstreamConnect,
    /// The upstream did not answer in time (upstream fault).
    UpstreamTimeout,
    /// The upstream closed or broke the exchange (upstream fault).
    UpstreamBroken,
    /// The upstream has no target to send to (gateway configuration).
    NoTarget,
    /// A rate limit refused the request; a retry after this many seconds may pass.
    RateLimited {
        /// `Retry-After`, in whole seconds (rounded up).
        retry_after_secs: u64,
    },
    /// A bulkhead had no place and its queue was full or the wait ran out.
    ConcurrencyLimited,
    /// A cluster rate limit that fails closed could not reach Redis.
    LimiterUnavailable,
    /// A circuit breaker is open; it lets probes through after this many seconds.
    CircuitOpen {
        /// `Retry-After`, in whole seconds (rounded up, at least 1).
        retry_after_secs: u64,
    },
    /// The gateway is overloaded and this request's criticality is among the first shed.
    Shed,
    /// A fault injected by the route's `fault.abort` (for drills).
    FaultAbort(StatusCode),
    /// The route requires authentication and the request has no valid credentials; why,
    /// in a sentence for the client.
    Unauthorized(&'static str),
    /// The request may not use the route (its consumer, group or address).
    Forbidden,
    /// A WebSocket handshake the route refuses: tunnels are off, or the page's `Origin`
    /// is not allowed.
    WebSocketRefused(&'static str),
    /// The route's WebSocket tunnels are all in use.
    TunnelsFull,
    /// This client has as many WebSocket tunnels open on the route as it may.
    TunnelsPerClient,
    /// The route's WAF found an attack pattern in the request.
    WafBlocked,
    /// The route's existence filter knows the requested key certainly does not exist.
    Absent,
    /// The client asked for a stored response only (`only-if-cached`) and none is usable.
    NotCached,
    /// The route requires an `Idempotency-Key` and the request has none.
    IdempotencyKeyMissing,
    /// The first request with this idempotency key is still in progress.
    IdempotencyKeyInFlight,
    /// The idempotency key was used for a different request (method, target or body).
    IdempotencyKeyReused,
    /// The first request with this key completed, but its response was too large to keep.
    IdempotentResponseNotKept,
}

impl Problem {
    /// The status sent to the client.
    pub fn status(self) -> StatusCode {
        match self {
            Problem::BadRequest(_) => StatusCode::BAD_REQUEST,
            Problem::NoRoute | Problem::Absent => StatusCode::NOT_FOUND,
            Problem::UriTooLong => StatusCode::URI_TOO_LONG,
            Problem::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Problem::HeadTimeout => StatusCode::REQUEST_TIMEOUT,
            Problem::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Problem::VersionNotSupported => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            Problem::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Problem::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Problem::ClientClosed => CLIENT_CLOSED,
            Problem::UpstreamConnect | Problem::UpstreamBroken => StatusCode::BAD_GATEWAY,
            Problem::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Problem::NoTarget
            | Problem::ConcurrencyLimited
            | Problem::LimiterUnavailable
            | Problem::CircuitOpen { .. }
            | Problem::TunnelsFull
            | Problem::Shed => StatusCode::SERVICE_UNAVAILABLE,
            Problem::NotCached => StatusCode::GATEWAY_TIMEOUT,
            Problem::IdempotencyKeyMissing => StatusCode::BAD_REQUEST,
            Problem::IdempotencyKeyInFlight | Problem::IdempotentResponseNotKept => {
                StatusCode::CONFLICT
            }
            Problem::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Problem::FaultAbort(status) => status,
            Problem::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Problem::Forbidden | Problem::WafBlocked | Problem::WebSocketRefused(_) => {
                StatusCode::FORBIDDEN
            }
            Problem::RateLimited { .. } | Problem::TunnelsPerClient => {
                StatusCode::TOO_MANY_REQUESTS
            }
        }
    }

    /// A short stable identifier, used in the problem type URI, logs and metrics.
    pub fn code(self) -> &'static str {
        match self {
            Problem::BadRequest(_) => "bad-request",
            Problem::NoRoute => "no-route",
            Problem::UriTooLong => "uri-too-long",
            Problem::HeadersTooLarge => "headers-too-large",
            Problem::HeadTimeout => "head-timeout",
            Problem::NotImplemented(_) => "not-implemented",
            Problem::VersionNotSupported => "version-not-supported",
            Problem::BodyTooLarge => "body-too-large",
            Problem::BodyTimeout => "body-timeout",
            Problem::ClientClosed => "client-closed",
            Problem::UpstreamConnect => "upstream-connect-failed",
            Problem::UpstreamTimeout => "upstream-timeout",
            Problem::UpstreamBroken => "upstream-broken",
            Problem::NoTarget => "no-target",
            Problem::RateLimited { .. } => "rate-limited",
            Problem::ConcurrencyLimited => "concurrency-limited",
            Problem::LimiterUnavailable => "rate-limiter-unavailable",
            Problem::CircuitOpen { .. } => "circuit-open",
            Problem::Shed => "load-shed",
            Problem::FaultAbort(_) => "fault-injected",
            Problem::Unauthorized(_) => "unauthorized",
            Problem::Forbidden => "forbidden",
            Problem::WebSocketRefused(_) => "websocket-refused",
            Problem::TunnelsFull => "tunnels-full",
            Problem::TunnelsPerClient => "too-many-tunnels",
            Problem::WafBlocked => "waf-blocked",
            Problem::Absent => "absent",
            Problem::NotCached => "not-cached",
            Problem::IdempotencyKeyMissing => "idempotency-key-missing",
            Problem::IdempotencyKeyInFlight => "idempotency-key-in-flight",
            Problem::IdempotencyKeyReused => "idempotency-key-reused",
            Problem::IdempotentResponseNotKept => "idempotent-response-not-kept",
        }
    }

    /// What went wrong, in a sentence for the client.
    pub fn detail(self) -> &'static str {
        match self {
            Problem::BadRequest(why) => why,
            Problem::NoRoute => "No route matches this request.",
            Problem::UriTooLong => "The request target is longer than this listener accepts.",
            Problem::HeadTimeout => "The request head did not arrive in time.",
            Problem::NotImplemented(why) => why,
            Problem::VersionNotSupported => "Only HTTP/1.0, HTTP/1.1 and HTTP/2 are spoken here.",
            Problem::HeadersTooLarge => {
                "The request headers are larger than this listener accepts."
            }
            Problem::BodyTooLarge => "The request body is larger than this listener accepts.",
            Problem::BodyTimeout => {
                "The client stopped sending the request body for longer than this listener waits."
            }
            Problem::ClientClosed => "The client went away before its request was complete.",
            Problem::UpstreamConnect => "The gateway could not connect to the upstream service.",
            Problem::UpstreamTimeout => "The upstream service did not answer in time.",
            Problem::UpstreamBroken => {
                "The upstream service closed the exchange before answering completely."
            }
            Problem::NoTarget => "The upstream service has no healthy target available.",
            Problem::RateLimited { .. } => {
                "Too many requests: a rate limit refused this one. Retry after the time in Retry-After."
            }
            Problem::ConcurrencyLimited => {
                "Too many requests are in progress for this service; retry shortly."
            }
            Problem::LimiterUnavailable => {
                "The shared rate-limit store is unavailable and this limit refuses requests until it is back."
            }
            Problem::CircuitOpen { .. } => {
                "The upstream service is failing and its circuit breaker is open; retry after the time in Retry-After."
            }
            Problem::Shed => {
                "The gateway is overloaded and sheds less critical requests first; retry shortly."
            }
            Problem::FaultAbort(_) => "A fault injected for a drill answered this request.",
            Problem::Unauthorized(why) => why,
            Problem::Forbidden => "These credentials or this address may not use this route.",
            Problem::WebSocketRefused(why) => why,
            Problem::TunnelsFull => {
                "This route's WebSocket connections are all in use; retry shortly."
            }
            Problem::TunnelsPerClient => {
                "This client has as many WebSocket connections open on this route as it may."
            }
            Problem::WafBlocked => "The request looks like an attack and was refused.",
            Problem::Absent => "No such item exists.",
            Problem::NotCached => {
                "The request allows only a stored response (only-if-cached), and none is usable."
            }
            Problem::IdempotencyKeyMissing => {
                "This route requires an Idempotency-Key header on this method."
            }
            Problem::IdempotencyKeyInFlight => {
                "A request with this Idempotency-Key is still in progress; retry after it completes."
            }
            Problem::IdempotencyKeyReused => {
                "This Idempotency-Key was already used for a different request; use a new key."
            }
            Problem::IdempotentResponseNotKept => {
                "The request with this Idempotency-Key was done, but its response was too large to keep; it is not done again."
            }
        }
    }

    /// Builds the problem+json response body and headers for this problem.
    pub fn to_response(self, instance: &str, request_id: &str) -> Response<Bytes> {
        let status = self.status();
        // Written out directly: every part but `instance` and `request_id` is a constant
        // without characters to escape, and gateways answer these at high rates (a flood
        // of 429s), where building a serde_json::Value first cost ~5% of the time.
        let mut body = String::with_capacity(200 + instance.len() + request_id.len());
        body.push_str("{\"type\":\"urn:floodgate:problem:");
        body.push_str(self.code());
        body.push_str("\",\"title\":\"");
        body.push_str(status.canonical_reason().unwrap_or("Error"));
        body.push_str("\",\"status\":");
        body.push_str(status.as_str());
        body.push_str(",\"detail\":\"");
        push_json_escaped(&mut body, self.detail());
        body.push_str("\",\"instance\":\"");
        push_json_escaped(&mut body, instance);
        body.push_str("\",\"request_id\":\"");
        push_json_escaped(&mut body, request_id);
        body.push_str("\"}");
        let mut resp = Response::new(Bytes::from(body));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let retry_after = match self {
            Problem::RateLimited { retry_after_secs }
            | Problem::CircuitOpen { retry_after_secs } => Some(retry_after_secs),
            Problem::ConcurrencyLimited
            | Problem::LimiterUnavailable
            | Problem::Shed
            | Problem::IdempotencyKeyInFlight => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// Appends `text` as the inside of a JSON string (RFC 8259 §7).
fn push_json_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = std::fmt::Write::write_fmt(out, format_args!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc9457_fields() {
        let r = Problem::UpstreamTimeout.to_response("/a?b", "rid-1");
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        let v: serde_json::Value = serde_json::from_slice(r.body()).expect("json");
        assert_eq!(v["status"], 504);
        assert_eq!(v["type"], "urn:floodgate:problem:upstream-timeout");
        assert_eq!(v["instance"], "/a?b");
        assert_eq!(v["request_id"], "rid-1");
    }

    #[test]
    fn escapes_what_json_needs() {
        let r = Problem::RateLimited {
            retry_after_secs: 3,
        }
        .to_response("/a\"b\\c\u{1}d\u{e9}", "r\"1");
        let v: serde_json::Value = serde_json::from_slice(r.body()).expect("json");
        assert_eq!(v["instance"], "/a\"b\\c\u{1}d\u{e9}");
        assert_eq!(v["request_id"], "r\"1");
        assert_eq!(v["status"], 429);
        assert_eq!(r.headers()["retry-after"], "3");
    }
}
