//! Heads written straight from their fields into a connection's write buffer, with the
//! framing fields the engine decides (never the ones a caller left in the map).

use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode, Uri};

/// How the engine delimits a body it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outgoing {
    /// No body follows. `keep_length` passes the caller's `Content-Length` through (a
    /// response to HEAD, a 304: the length the full response would have).
    Empty { keep_length: bool },
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked coding.
    Chunked,
    /// Until the connection closes (a response to an HTTP/1.0 client of unknown length).
    UntilClose,
}

/// Whether `name` is a field the engine writes itself.
fn engine_owned(name: &http::HeaderName, keep_connection: bool) -> bool {
    name == TRANSFER_ENCODING
        || name == CONTENT_LENGTH
        || (!keep_connection && (name == CONNECTION || name.as_str() == "keep-alive"))
}

/// Writes a response head.
pub(crate) fn response_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    body: Outgoing,
    keep_alive: bool,
    client_http10: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let keep_length = matches!(body, Outgoing::Empty { keep_length: true });
    for (name, value) in headers {
        if engine_owned(name, switching) && !(keep_length && name == CONTENT_LENGTH) {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !headers.contains_key(DATE) {
        out.extend_from_slice(b"date: ");
        crate::date::append(out);
        out.extend_from_slice(b"\r\n");
    }
    framing_fields(out, body);
    if !switching {
        if !keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        } else if client_http10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a request head, the target in origin form (the connection is to the origin).
pub(crate) fn request_head(
    out: &mut Vec<u8>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Outgoing,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == TRANSFER_ENCODING || name == CONTENT_LENGTH {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    framing_fields(out, body);
    out.extend_from_slice(b"\r\n");
}

fn framing_fields(out: &mut Vec<u8>, body: Outgoing) {
    match body {
        Outgoing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            let mut digits = [0u8; 20];
            let mut i = digits.len();
            let mut n = n;
            loop {
                i -= 1;
                digits[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            out.extend_from_slice(&digits[i..]);
            out.extend_from_slice(b"\r\n");
        }
        Outgoing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Outgoing::Empty { .. } | Outgoing::UntilClose => {}
    }
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn text(out: &[u8]) -> String {
        String::from_utf8_lossy(out).into_owned()
    }

    #[test]
    fn framing_fields_are_the_engines() {
        let mut h = HeaderMap::new();
        h.insert("content-length", HeaderValue::from_static("99"));
        h.insert("transfer-encoding", HeaderValue::from_static("gzip"));
        h.insert("connection", HeaderValue::from_static("x-hop"));
        h.insert(
            "date",
            HeaderValue::from_static("Sat, 05 Dec 2026 07:00:00 GMT"),
        );
        h.insert("x-a", HeaderValue::from_static("1"));
        let mut out = Vec::new();
        response_head(
            &mut out,
            StatusCode::OK,
            &h,
            Outgoing::Length(5),
            true,
            false,
        );
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\ndate: Sat, 05 Dec 2026 07:00:00 GMT\r\nx-a: 1\r\ncontent-length: 5\r\n\r\n"
        );
        out.clear();
        response_head(
            &mut out,
            StatusCode::OK,
            &h,
            Outgoing::Chunked,
            false,
            false,
        );
        assert!(text(&out).ends_with("transfer-encoding: chunked\r\nconnection: close\r\n\r\n"));
        out.clear();
        response_head(
            &mut out,
            StatusCode::NOT_MODIFIED,
            &h,
            Outgoing::Empty { keep_length: true },
            true,
            true,
        );
        let t = text(&out);
        assert!(t.starts_with("HTTP/1.1 304 Not Modified\r\n"), "{t}");
        assert!(t.contains("content-length: 99\r\n"), "{t}");
        assert!(t.ends_with("connection: keep-alive\r\n\r\n"), "{t}");
    }

    #[test]
    fn a_date_is_added_when_missing() {
        let mut out = Vec::new();
        response_head(
            &mut out,
            StatusCode::NO_CONTENT,
            &HeaderMap::new(),
            Outgoing::Empty { keep_length: false },
            true,
            false,
        );
        assert!(text(&out).contains("\r\ndate: "), "{}", text(&out));
    }

    #[test]
    fn request_heads_in_origin_form() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("up"));
        h.insert("content-length", HeaderValue::from_static("99"));
        let mut out = Vec::new();
        let uri: Uri = "http://up/a?b".parse().unwrap();
        request_head(&mut out, &Method::POST, &uri, &h, Outgoing::Length(3));
        assert_eq!(
            text(&out),
            "POST /a?b HTTP/1.1\r\nhost: up\r\ncontent-length: 3\r\n\r\n"
        );
    }
}
