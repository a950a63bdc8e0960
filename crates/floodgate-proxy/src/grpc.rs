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

/// What kind of gRPC call a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// gRPC: HTTP/2 with an `application/grpc` content type.
    Grpc,
    /// gRPC-Web (binary `application/grpc-web`, or `application/grpc-web-text` when
    /// `text`), on any HTTP version: translated to gRPC toward the upstream.
    Web {
        /// The text form (base64 bodies).
        text: bool,
    },
}

/// The kind of gRPC call a request is, if any (`application/grpc+proto` and the like
/// included). Only POSTs are looked at: every call is one.
pub fn call_kind<B>(req: &Request<B>) -> Option<Call> {
    if req.method() != http::Method::POST {
        return None;
    }
    let ct = req.headers().get(CONTENT_TYPE)?.as_bytes();
    if ct.starts_with(b"application/grpc-web-text") {
        Some(Call::Web { text: true })
    } else if ct.starts_with(b"application/grpc-web") {
        Some(Call::Web { text: false })
    } else if ct.starts_with(b"application/grpc") && req.version() == Version::HTTP_2 {
        Some(Call::Grpc)
    } else {
        None
    }
}

/// The gRPC status code that says what a refusal says (the gRPC status codes document's
/// mapping, and Envoy's for the gateway's own cases).
pub fn status_for(problem: Problem) -> u8 {
    match problem {
        // RESOURCE_EXHAUSTED
        Problem::RateLimited { .. }
        | Problem::BodyTooLarge
        | Problem::HeadersTooLarge
        | Problem::TunnelsPerClient => 8,
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
/// `grpc` says the request was a gRPC call; for any other, the HTTP status is taken as it
/// is, without a look at the head.
pub fn effective_status<B>(resp: &Response<B>, grpc: bool) -> http::StatusCode {
    let status = resp.status();
    if !grpc
        || status != http::StatusCode::OK
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
pub fn refusal(problem: Problem, call: Call) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::empty());
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(match call {
            Call::Grpc => "application/grpc",
            Call::Web { text: false } => "application/grpc-web+proto",
            Call::Web { text: true } => "application/grpc-web-text+proto",
        }),
    );
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

/// The gRPC request a gRPC-Web one becomes: `content-type` with `application/grpc` for
/// the web type (the `+proto` kind of suffix kept), `te: trailers`, and for the text form
/// no `content-length` (the body shrinks when decoded).
pub fn web_request_headers(headers: &mut http::HeaderMap, text: bool) {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let web = if text {
        "application/grpc-web-text"
    } else {
        "application/grpc-web"
    };
    let grpc = format!(
        "application/grpc{}",
        ct.strip_prefix(web).unwrap_or_default()
    );
    if let Ok(v) = HeaderValue::from_str(&grpc) {
        headers.insert(CONTENT_TYPE, v);
    }
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    if text {
        headers.remove(http::header::CONTENT_LENGTH);
    }
}

/// A `grpc-web-text` body decoded: base64, possibly in several padded pieces (a client
/// may send each message encoded on its own), so decoded four characters at a time.
pub fn decode_text(body: &[u8]) -> Option<bytes::Bytes> {
    use base64ct::Encoding;
    let clean: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if !clean.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for group in clean.chunks(4) {
        let mut buf = [0u8; 3];
        out.extend_from_slice(base64ct::Base64::decode(group, &mut buf).ok()?);
    }
    Some(out.into())
}

/// The gRPC-Web answer's head from the upstream's gRPC one: the web content type (text
/// or binary, as the client asked), no `content-length` (the trailers join the body).
pub fn web_response_headers(headers: &mut http::HeaderMap, text: bool) {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/grpc");
    let suffix = ct.strip_prefix("application/grpc").unwrap_or_default();
    let web = if text {
        "application/grpc-web-text"
    } else {
        "application/grpc-web"
    };
    if let Ok(v) = HeaderValue::from_str(&format!("{web}{suffix}")) {
        headers.insert(CONTENT_TYPE, v);
    }
    headers.remove(http::header::CONTENT_LENGTH);
    headers.remove(http::header::TRAILER);
}

/// A gRPC answer's body as gRPC-Web's: the messages as they come, then the trailers as a
/// last frame of the body (flag 0x80, then `name: value` lines), all in base64 for the
/// text form. HTTP/1.1 has no trailers a browser can read; this is how gRPC-Web carries
/// them.
pub struct WebResponse<B> {
    inner: B,
    text: bool,
    ended: bool,
}

impl<B> WebResponse<B> {
    /// The web form of `inner`.
    pub fn new(inner: B, text: bool) -> Self {
        WebResponse {
            inner,
            text,
            ended: false,
        }
    }

    fn out(&self, bytes: bytes::Bytes) -> bytes::Bytes {
        if self.text {
            use base64ct::Encoding;
            bytes::Bytes::from(base64ct::Base64::encode_string(&bytes))
        } else {
            bytes
        }
    }
}

/// The trailers as gRPC-Web's last frame.
fn trailer_frame(trailers: &http::HeaderMap) -> bytes::Bytes {
    let mut block = Vec::new();
    for (name, value) in trailers {
        block.extend_from_slice(name.as_str().as_bytes());
        block.extend_from_slice(b": ");
        block.extend_from_slice(value.as_bytes());
        block.extend_from_slice(b"\r\n");
    }
    let mut frame = Vec::with_capacity(5 + block.len());
    frame.push(0x80);
    frame.extend_from_slice(&u32::try_from(block.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&block);
    frame.into()
}

impl<B> http_body::Body for WebResponse<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, B::Error>>> {
        use std::task::Poll;
        if self.ended {
            return Poll::Ready(None);
        }
        match std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_frame(cx)) {
            None => {
                self.ended = true;
                Poll::Ready(None)
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => Poll::Ready(Some(Ok(http_body::Frame::data(self.out(data))))),
                Err(frame) => {
                    let Ok(trailers) = frame.into_trailers() else {
                        return Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::new()))));
                    };
                    self.ended = true;
                    let last = self.out(trailer_frame(&trailers));
                    Poll::Ready(Some(Ok(http_body::Frame::data(last))))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
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
    fn calls_are_told_by_content_type_and_version() {
        let call = |v, ct: &str| {
            call_kind(
                &Request::post("/s/m")
                    .version(v)
                    .header(CONTENT_TYPE, ct)
                    .body(())
                    .unwrap(),
            )
        };
        assert_eq!(call(Version::HTTP_2, "application/grpc"), Some(Call::Grpc));
        assert_eq!(
            call(Version::HTTP_2, "application/grpc+proto"),
            Some(Call::Grpc)
        );
        assert_eq!(call(Version::HTTP_11, "application/grpc"), None);
        assert_eq!(call(Version::HTTP_2, "application/json"), None);
        assert_eq!(
            call(Version::HTTP_11, "application/grpc-web+proto"),
            Some(Call::Web { text: false })
        );
        assert_eq!(
            call(Version::HTTP_11, "application/grpc-web-text"),
            Some(Call::Web { text: true })
        );
    }

    #[test]
    fn a_refusal_is_trailers_only_with_the_status_it_stands_for() {
        let resp = refusal(
            Problem::RateLimited {
                retry_after_secs: 7,
            },
            Call::Grpc,
        );
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
            effective_status(&answer("application/grpc", Some("14")), true),
            503
        );
        assert_eq!(
            effective_status(&answer("application/grpc", Some("4")), true),
            504
        );
        assert_eq!(
            effective_status(&answer("application/grpc", Some("3")), true),
            400
        );
        assert_eq!(
            effective_status(&answer("application/grpc", Some("0")), true),
            200
        );
        assert_eq!(
            effective_status(&answer("application/grpc", None), true),
            200
        );
        assert_eq!(
            effective_status(&answer("text/plain", Some("14")), true),
            200
        );
        assert_eq!(
            effective_status(&answer("application/grpc", Some("x")), true),
            200
        );
    }

    #[test]
    fn web_text_bodies_decode_in_padded_pieces_and_bad_ones_are_refused() {
        use base64ct::Encoding;
        let one = base64ct::Base64::encode_string(b"\x00\x00\x00\x00\x01a");
        let two = format!("{one}{one}");
        assert_eq!(decode_text(two.as_bytes()).unwrap().len(), 12);
        assert!(decode_text(b"abc").is_none());
        assert!(decode_text(b"ab!d").is_none());
    }

    #[test]
    fn trailers_become_the_last_frame_of_the_body() {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        let f = trailer_frame(&t);
        assert_eq!(f[0], 0x80);
        assert_eq!(&f[5..], b"grpc-status: 0\r\n");
        assert_eq!(
            u32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize,
            f.len() - 5
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
