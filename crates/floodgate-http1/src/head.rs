//! Message heads: parsed with `httparse`, then held to the stricter rules a proxy needs
//! (RFC 9112 §2–5): CRLF line endings only, no obs-fold, no white space before a colon, no
//! control characters in values, one `Host`, and a framing both sides of the gateway read
//! the same way ([`crate::framing`]).
//!
//! A head is copied once out of the connection's read buffer into a buffer of its own, and
//! its header values are slices of that copy: the read buffer goes back to the pool while
//! the request lives on.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{CONNECTION, EXPECT, HOST, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};

use crate::framing::{self, Framing, FramingError};

/// The most header fields a head may have, whatever the configuration says.
pub const MAX_FIELDS: usize = 512;

/// Bounds on a head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// The largest head, request line and fields together.
    pub max_bytes: usize,
    /// The most fields.
    pub max_fields: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_bytes: 16 * 1024,
            max_fields: 100,
        }
    }
}

/// Why a head is refused, with the status that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// The head does not parse, or breaks a rule of RFC 9112.
    Malformed(&'static str),
    /// The head's framing is ambiguous or unsupported.
    Framing(FramingError),
    /// The request line alone is longer than the limit.
    UriTooLong,
    /// The head is longer than the limit, or has too many fields.
    TooLarge,
    /// Not HTTP/1.0 or HTTP/1.1.
    Version,
    /// The head did not arrive within the header timeout.
    Timeout,
}

impl HeadError {
    /// The status to answer with.
    pub fn status(self) -> StatusCode {
        match self {
            HeadError::Malformed(_) => StatusCode::BAD_REQUEST,
            HeadError::Framing(FramingError::UnknownCoding) => StatusCode::NOT_IMPLEMENTED,
            HeadError::Framing(_) => StatusCode::BAD_REQUEST,
            HeadError::UriTooLong => StatusCode::URI_TOO_LONG,
            HeadError::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HeadError::Version => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            HeadError::Timeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// A sentence saying what was wrong.
    pub fn reason(self) -> &'static str {
        match self {
            HeadError::Malformed(why) => why,
            HeadError::Framing(f) => f.reason(),
            HeadError::UriTooLong => "The request line is longer than the gateway accepts.",
            HeadError::TooLarge => "The request head is larger than the gateway accepts.",
            HeadError::Version => "Only HTTP/1.0 and HTTP/1.1 are spoken here.",
            HeadError::Timeout => "The request head did not arrive in time.",
        }
    }
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The request target.
    pub uri: Uri,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The header fields, in order.
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the client wants the connection kept after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1.
    pub expect_continue: bool,
    /// The client asks to switch protocols (`Connection: upgrade` and `Upgrade`).
    pub upgrade: bool,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// The status.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The header fields, in order.
    pub headers: HeaderMap,
    /// Whether the server keeps the connection after this exchange.
    pub keep_alive: bool,
}

/// Whether some LF in `head` is not preceded by CR.
pub(crate) fn has_bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

/// One pass over `buf`'s line ends: where the head ends (just past its blank line), or an
/// error at the first bare LF; `Ok(None)` if neither has come yet.
fn scan_head(buf: &[u8]) -> Result<Option<usize>, HeadError> {
    for i in memchr::memchr_iter(b'\n', buf) {
        if i == 0 || buf[i - 1] != b'\r' {
            return Err(HeadError::Malformed(
                "A line of the head ends in a bare LF.",
            ));
        }
        if i >= 3 && buf[i - 3..i - 1] == *b"\r\n" {
            return Ok(Some(i + 1));
        }
    }
    Ok(None)
}

/// The head at the front of `buf`, once it has ended, copied out (one copy; the fields
/// are slices of it) with its length. Too long is 414 while a request line has not ended
/// (`request`), 431 after; a bare LF is refused as soon as it is seen, since it can end a
/// head for other parsers.
fn whole_head(
    buf: &[u8],
    limits: &HeadLimits,
    request: bool,
) -> Result<Option<(Bytes, usize)>, HeadError> {
    let scanned = &buf[..buf.len().min(limits.max_bytes.saturating_add(1))];
    let end = scan_head(scanned)?;
    let len = end.unwrap_or(buf.len());
    if len > limits.max_bytes || (end.is_none() && len >= limits.max_bytes) {
        let line_ended = memchr::memchr(b'\n', &buf[..limits.max_bytes.min(buf.len())]).is_some();
        return Err(if request && !line_ended {
            HeadError::UriTooLong
        } else {
            HeadError::TooLarge
        });
    }
    Ok(end.map(|len| (Bytes::copy_from_slice(&buf[..len]), len)))
}

/// Parses a request head from the front of `buf`: the head and its length, `Ok(None)` if it
/// is not complete yet.
pub fn parse_request(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let Some((head, len)) = whole_head(buf, limits, true)? else {
        return Ok(None);
    };
    let mut fields = FieldSlots::new(limits.max_fields);
    let mut req = httparse::Request::new(&mut []);
    match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        &head,
        fields.slots(),
    ) {
        Ok(httparse::Status::Complete(n)) if n == len => {}
        Ok(_) => return Err(HeadError::Malformed("The request head is malformed.")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => return Err(HeadError::Version),
        Err(httparse::Error::Token) => {
            return Err(HeadError::Malformed("The request line is malformed."));
        }
        Err(_) => return Err(HeadError::Malformed("The request head is malformed.")),
    }
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(HeadError::Version),
    };
    let method = req
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or(HeadError::Malformed("The request method is malformed."))?;
    let target = req.path.unwrap_or_default();
    let uri = if target.is_ascii() {
        Uri::from_maybe_shared(head.slice_ref(target.as_bytes()))
    } else {
        // Raw UTF-8 in a target (an "international" path some clients send as is) is not a
        // URI; percent-encoded, it is the same bytes to every origin that decodes it, and
        // an origin with a strict parser (h11) reads it instead of refusing it.
        Uri::try_from(percent_encode_non_ascii(target.as_bytes()))
    }
    .map_err(|_| HeadError::Malformed("The request target is malformed."))?;
    if !target_fits(&method, &uri, target) {
        return Err(HeadError::Malformed(
            "The request target's form does not fit the method.",
        ));
    }
    let headers = field_map(&head, req.headers)?;
    let mut hosts = headers.get_all(HOST).iter();
    if hosts.next().is_some() && hosts.next().is_some() {
        return Err(HeadError::Malformed("The request has more than one Host."));
    }
    let http10 = version == Version::HTTP_10;
    let framing = framing::request(&headers, http10).map_err(HeadError::Framing)?;
    let connection = ConnectionOptions::of(&headers);
    let keep_alive = if http10 {
        connection.keep_alive
    } else {
        !connection.close
    };
    let expect_continue = !http10
        && headers
            .get(EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let upgrade = !http10 && connection.upgrade && headers.contains_key(UPGRADE);
    Ok(Some((
        RequestHead {
            method,
            uri,
            version,
            headers,
            framing,
            keep_alive,
            expect_continue,
            upgrade,
        },
        len,
    )))
}

/// Parses a response head from the front of `buf`: the head and its length, `Ok(None)` if
/// it is not complete yet. 1xx heads are returned like any other.
pub fn parse_response(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let Some((head, len)) = whole_head(buf, limits, false)? else {
        return Ok(None);
    };
    let mut fields = FieldSlots::new(limits.max_fields);
    let mut resp = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        &head,
        fields.slots(),
    ) {
        Ok(httparse::Status::Complete(n)) if n == len => {}
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => return Err(HeadError::Version),
        _ => return Err(HeadError::Malformed("The response head is malformed.")),
    }
    let version = match resp.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(HeadError::Version),
    };
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(HeadError::Malformed("The response status is malformed."))?;
    let headers = field_map(&head, resp.headers)?;
    let connection = ConnectionOptions::of(&headers);
    let keep_alive = if version == Version::HTTP_10 {
        connection.keep_alive
    } else {
        !connection.close
    };
    Ok(Some((
        ResponseHead {
            status,
            version,
            headers,
            keep_alive,
        },
        len,
    )))
}

/// Room for the parser's field slots: on the stack for up to 128 fields (uninitialised, so
/// a parse does not pay to clear them), on the heap for a larger configured limit.
#[allow(clippy::large_enum_variant)] // On the stack on purpose: no allocation per head.
enum FieldSlots<'b> {
    Stack([MaybeUninit<httparse::Header<'b>>; 128], usize),
    Heap(Vec<MaybeUninit<httparse::Header<'b>>>),
}

impl<'b> FieldSlots<'b> {
    fn new(max_fields: usize) -> Self {
        let n = max_fields.clamp(1, MAX_FIELDS);
        if n <= 128 {
            FieldSlots::Stack([const { MaybeUninit::uninit() }; 128], n)
        } else {
            FieldSlots::Heap((0..n).map(|_| MaybeUninit::uninit()).collect())
        }
    }

    fn slots(&mut self) -> &mut [MaybeUninit<httparse::Header<'b>>] {
        match self {
            FieldSlots::Stack(a, n) => &mut a[..*n],
            FieldSlots::Heap(v) => v,
        }
    }
}

/// The header fields as a map whose values are slices of `head`.
fn field_map(head: &Bytes, fields: &[httparse::Header<'_>]) -> Result<HeaderMap, HeadError> {
    // Room for the fields a proxy adds on the way (forwarding, request id, via).
    let mut map = HeaderMap::with_capacity(fields.len() + 8);
    for f in fields {
        let name = HeaderName::from_bytes(f.name.as_bytes())
            .map_err(|_| HeadError::Malformed("A header field name is malformed."))?;
        if looks_like_framing(f.name.as_bytes()) {
            return Err(HeadError::Malformed(
                "A header field name could be read as Content-Length or Transfer-Encoding.",
            ));
        }
        // httparse takes obs-text and HTAB in values; `HeaderValue` refuses every other
        // control character (NUL, CR, LF, DEL), so a value is checked once, here.
        let value = HeaderValue::from_maybe_shared(head.slice_ref(f.value))
            .map_err(|_| HeadError::Malformed("A header field value holds a control character."))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Whether `name` is not a framing field but spells one with other punctuation
/// (`Transfer_Encoding`, `Content--Length`): a next hop that maps `_` to `-` (CGI, WSGI)
/// or ignores punctuation would take it for the real one.
fn looks_like_framing(name: &[u8]) -> bool {
    if !(14..=40).contains(&name.len())
        || name.eq_ignore_ascii_case(b"content-length")
        || name.eq_ignore_ascii_case(b"transfer-encoding")
    {
        return false;
    }
    let letters = name.iter().filter(|b| b.is_ascii_alphabetic());
    [&b"contentlength"[..], b"transferencoding"]
        .iter()
        .any(|f| {
            let mut l = letters.clone();
            f.iter()
                .all(|a| l.next().is_some_and(|b| b.eq_ignore_ascii_case(a)))
                && l.next().is_none()
        })
}

/// `target` with every byte above ASCII written as `%XX`.
fn percent_encode_non_ascii(target: &[u8]) -> String {
    let mut out = String::with_capacity(target.len() * 3);
    for &b in target {
        if b.is_ascii() {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// Whether the request target's form fits the method (RFC 9112 §3.2): authority-form only
/// with CONNECT, asterisk-form only with OPTIONS, origin- or absolute-form otherwise.
fn target_fits(method: &Method, uri: &Uri, raw: &str) -> bool {
    if *method == Method::CONNECT {
        return uri.scheme().is_none() && uri.authority().is_some() && !raw.starts_with('/');
    }
    if raw == "*" {
        return *method == Method::OPTIONS;
    }
    raw.starts_with('/') || uri.scheme().is_some()
}

/// The options of the `Connection` field that the engine acts on.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConnectionOptions {
    /// `close`.
    pub close: bool,
    /// `keep-alive`.
    pub keep_alive: bool,
    /// `upgrade`.
    pub upgrade: bool,
}

impl ConnectionOptions {
    /// The options of every `Connection` field in `headers`.
    pub fn of(headers: &HeaderMap) -> Self {
        let mut o = ConnectionOptions::default();
        for value in headers.get_all(CONNECTION) {
            for option in value.as_bytes().split(|&b| b == b',') {
                let option = framing::trim_ows(option);
                if option.eq_ignore_ascii_case(b"close") {
                    o.close = true;
                } else if option.eq_ignore_ascii_case(b"keep-alive") {
                    o.keep_alive = true;
                } else if option.eq_ignore_ascii_case(b"upgrade") {
                    o.upgrade = true;
                }
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
        parse_request(raw, &HeadLimits::default())
    }

    #[test]
    fn a_plain_request_parses() {
        let raw = b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\nNEXT";
        let (h, len) = parse(raw).unwrap().unwrap();
        assert_eq!(len, raw.len() - 4);
        assert_eq!(h.method, Method::GET);
        assert_eq!(h.uri, "/a?b=c");
        assert_eq!(h.version, Version::HTTP_11);
        assert_eq!(h.headers["host"], "x");
        assert_eq!(h.framing, Framing::Empty);
        assert!(h.keep_alive && !h.expect_continue && !h.upgrade);
    }

    #[test]
    fn partial_heads_wait_for_more() {
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 0..raw.len() {
            assert!(parse(&raw[..cut]).unwrap().is_none(), "{cut}");
        }
    }

    #[test]
    fn connection_options_decide_keep_alive() {
        let cases: &[(&[u8], bool)] = &[
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", true),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, CLOSE\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\nHost: x\r\n\r\n", false),
            (
                b"GET / HTTP/1.0\r\nHost: x\r\nConnection: Keep-Alive\r\n\r\n",
                true,
            ),
        ];
        for (raw, keep) in cases {
            let (h, _) = parse(raw).unwrap().unwrap();
            assert_eq!(h.keep_alive, *keep, "{}", String::from_utf8_lossy(raw));
        }
        let (h, _) = parse(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(h.upgrade);
        let (h, _) = parse(
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(h.expect_continue);
        assert_eq!(h.framing, Framing::Length(1));
    }

    #[test]
    fn malformed_heads_are_refused() {
        let bad: &[&[u8]] = &[
            b"GET / HTTP/1.1\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nA : b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nA\t: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nA: b\x00c\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nA: b\rc\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET x HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
            b"CONNECT /x HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 not http at all\r\n\r\n",
            b"GET / HTTP/1.1\r\n: empty-name\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer_Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\ncontent_length: 5\r\n\r\n",
        ];
        for raw in bad {
            let got = parse(raw);
            assert!(
                matches!(got, Err(HeadError::Malformed(_))),
                "{:?}: {got:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn raw_utf8_in_a_target_is_percent_encoded() {
        let (h, _) = parse("GET /\u{441}\u{442}?q=\u{43F} HTTP/1.1\r\nHost: x\r\n\r\n".as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(h.uri, "/%D1%81%D1%82?q=%D0%BF");
    }

    #[test]
    fn versions_other_than_1x_are_505() {
        for raw in [
            &b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.2\r\nHost: x\r\n\r\n",
            b"GET / HTTP/0.9\r\nHost: x\r\n\r\n",
        ] {
            let e = parse(raw).unwrap_err();
            assert_eq!(e.status(), StatusCode::HTTP_VERSION_NOT_SUPPORTED, "{e:?}");
        }
    }

    #[test]
    fn framing_errors_are_refused_with_their_status() {
        let (e, status) = (
            parse(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n")
                .unwrap_err(),
            400,
        );
        assert_eq!(
            (e, e.status().as_u16()),
            (HeadError::Framing(FramingError::LengthAndCoding), status)
        );
        let e = parse(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::NOT_IMPLEMENTED);
        let e =
            parse(b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap_err();
        assert_eq!(e, HeadError::Framing(FramingError::CodingOnHttp10));
    }

    #[test]
    fn oversized_heads_are_414_or_431() {
        let limits = HeadLimits {
            max_bytes: 64,
            max_fields: 3,
        };
        let long_line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(100));
        assert_eq!(
            parse_request(long_line.as_bytes(), &limits).unwrap_err(),
            HeadError::UriTooLong
        );
        let long_field = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(100));
        assert_eq!(
            parse_request(long_field.as_bytes(), &limits).unwrap_err(),
            HeadError::TooLarge
        );
        let many = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        assert_eq!(
            parse_request(many, &limits).unwrap_err(),
            HeadError::TooLarge
        );
    }

    #[test]
    fn response_heads_parse() {
        let (h, len) = parse_response(
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nbody",
            &HeadLimits::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(len, 45);
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.version, Version::HTTP_10);
        assert!(!h.keep_alive);
        assert!(parse_response(b"HTTP/1.1 200 OK\nA: b\r\n\r\n", &HeadLimits::default()).is_err());
    }
}
