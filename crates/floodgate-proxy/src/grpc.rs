//! gRPC on the gateway's side: telling a call from other requests, and answering the
//! gateway's own refusals the way a gRPC client reads them. A gRPC client takes an HTTP
//! error status as a transport failure (`UNAVAILABLE` or `UNKNOWN`, whatever went wrong),
//! so a refusal is a "trailers-only" answer instead (gRPC over HTTP/2, PROTOCOL-HTTP2.md):
//! HTTP 200 whose only headers carry `grpc-status` and `grpc-message`, with no body.

use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Request, Response, Version};

use crate::body::ResponseBody;
use crate::problem::Problem;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Whether a request is a gRPC call: HTTP/2 with an `application/grpc` content type
/// (`application/grpc+proto` and the like included).
pub fn is_call<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_2
        && req
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The gRPC status code that says what a refusal says (the gRPC status codes document's
/// mapping, and Envoy's for the gateway's own cases).
pub fn status_for(problem: Problem) -> u8 {
    match problem {
        // RESOURCE_EXHAUSTED
        Problem::RateLimited { .. } | Problem::BodyTooLarge | Problem::HeadersTooLarge => 8,
        // UNAVAILABLE
        Problem::CircuitOpen { .. }
        | Problem::NoTarget
        | Problem::ConcurrencyLimited
        | Problem::LimiterUnavailable
        | Problem::Shed
        | Problem::TunnelsFull
        | Problem::UpstreamConnect
        | Problem::UpstreamBroken => 14,
        // DEADLINE_EXCEEDED
        Problem::UpstreamTimeout | Problem::BodyTimeout | Problem::HeadTimeout => 4,
        // UNAUTHENTICATED
        Problem::Unauthorized(_) => 16,
        // PERMISSION_DENIED
        Problem::Forbidden | Problem::WafBlocked | Problem::WebSocketRefused(_) => 7,
        // UNIMPLEMENTED
        Problem::NoRoute | Problem::NotImplemented(_) => 12,
        // NOT_FOUND
        Problem::Absent => 5,
        // CANCELLED
        Problem::ClientClosed => 1,
        // INVALID_ARGUMENT
        Problem::BadRequest(_) | Problem::UriTooLong | Problem::IdempotencyKeyMissing => 3,
        // ABORTED
        Problem::IdempotencyKeyInFlight | Problem::IdempotencyKeyReused => 10,
        // FAILED_PRECONDITION
        Problem::NotCached | Problem::IdempotentResponseNotKept => 9,
        // UNKNOWN
        Problem::FaultAbort(_) | Problem::VersionNotSupported => 2,
    }
}

/// The status an upstream's answer stands for, for breakers, outlier detection, retries
/// and metrics: its HTTP status, except for a gRPC answer that carries its `grpc-status`
/// in its head (a trailers-only answer, which is how servers fail a call before any
/// message), whose gRPC status is mapped to the HTTP status that means the same
/// (UNAVAILABLE 503, DEADLINE_EXCEEDED 504, INTERNAL 500, INVALID_ARGUMENT 400...). So
/// a failing gRPC server trips breakers like a failing HTTP one, and a call the client
/// got wrong never counts against the server. (A status in the trailers after messages
/// comes too late for these decisions and is not read.)
pub fn effective_status<B>(resp: &Response<B>) -> http::StatusCode {
    let status = resp.status();
    if status != http::StatusCode::OK
        || !resp
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
    {
        return status;
    }
    let Some(code) = resp
        .headers()
        .get(GRPC_STATUS)
        .and_then(|v| v.to_str().ok()?.parse::<u8>().ok())
    else {
        return status;
    };
    let mapped: u16 = match code {
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    };
    http::StatusCode::from_u16(mapped).unwrap_or(status)
}

/// The call's deadline from `grpc-timeout` (1 to 8 digits and a unit: `H`, `M`, `S`, `m`,
/// `u`, `n`); `None` when absent or malformed (a malformed one is the server's to judge).
pub fn timeout(headers: &http::HeaderMap) -> Option<std::time::Duration> {
    use std::time::Duration;
    let value = headers.get("grpc-timeout")?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n.saturating_mul(3600)),
        b'M' => Duration::from_secs(n.saturating_mul(60)),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The trailers-only answer for a refusal: `grpc-status`, and the problem's sentence as
/// `grpc-message` (percent-encoded where the spec asks).
pub fn refusal(problem: Problem) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::empty());
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(
        GRPC_STATUS,
        HeaderValue::from(u16::from(status_for(problem))),
    );
    if let Ok(v) = HeaderValue::from_str(&percent_encode(problem.detail())) {
        h.insert(GRPC_MESSAGE, v);
    }
    if let Problem::RateLimited { retry_after_secs } | Problem::CircuitOpen { retry_after_secs } =
        problem
    {
        h.insert(
            http::header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs),
        );
    }
    resp
}

/// `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_http2_with_a_grpc_content_type() {
        let call = |v, ct: &str| {
            Request::builder()
                .version(v)
                .header(CONTENT_TYPE, ct)
                .body(())
                .unwrap()
        };
        assert!(is_call(&call(Version::HTTP_2, "application/grpc")));
        assert!(is_call(&call(Version::HTTP_2, "application/grpc+proto")));
        assert!(!is_call(&call(Version::HTTP_11, "application/grpc")));
        assert!(!is_call(&call(Version::HTTP_2, "application/json")));
    }

    #[test]
    fn a_refusal_is_trailers_only_with_the_status_it_stands_for() {
        let resp = refusal(Problem::RateLimited {
            retry_after_secs: 7,
        });
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["grpc-status"], "8");
        assert_eq!(resp.headers()["retry-after"], "7");
        assert!(
            resp.headers()["grpc-message"]
                .to_str()
                .unwrap()
                .contains("rate limit")
        );
        assert_eq!(status_for(Problem::NoRoute), 12);
        assert_eq!(status_for(Problem::UpstreamTimeout), 4);
        assert_eq!(percent_encode("50% off é"), "50%25 off %C3%A9");
    }

    #[test]
    fn a_trailers_only_grpc_failure_stands_for_its_http_status() {
        let answer = |ct: &str, grpc: Option<&str>| {
            let mut r = Response::builder().header(CONTENT_TYPE, ct);
            if let Some(g) = grpc {
                r = r.header("grpc-status", g);
            }
            r.body(()).unwrap()
        };
        assert_eq!(
            effective_status(&answer("application/grpc", Some("14"))),
            503
        );
        assert_eq!(
            effective_status(&answer("application/grpc", Some("4"))),
            504
        );
        assert_eq!(
            effective_status(&answer("application/grpc", Some("3"))),
            400
        );
        assert_eq!(
            effective_status(&answer("application/grpc", Some("0"))),
            200
        );
        assert_eq!(effective_status(&answer("application/grpc", None)), 200);
        assert_eq!(effective_status(&answer("text/plain", Some("14"))), 200);
        assert_eq!(
            effective_status(&answer("application/grpc", Some("x"))),
            200
        );
    }

    #[test]
    fn grpc_timeouts_are_read_in_every_unit_and_bad_ones_ignored() {
        use std::time::Duration;
        let t = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_str(v).unwrap());
            timeout(&h)
        };
        assert_eq!(t("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(t("3M"), Some(Duration::from_secs(180)));
        assert_eq!(t("10S"), Some(Duration::from_secs(10)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("7u"), Some(Duration::from_micros(7)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "123456789S", "1s", "-1S", "1.5S", "10"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }
}
