//! How long a message body is, decided from its head by the rules of RFC 9112 §6, strictly
//! and the same way for requests and responses.
//!
//! A proxy that reads a message's length one way while the next hop reads it another is the
//! root of request smuggling, so every head that two careful parsers could frame
//! differently is refused rather than guessed at: `Content-Length` beside
//! `Transfer-Encoding`, more than one `Content-Length` (even equal ones), a length that is
//! not plain digits, `Transfer-Encoding` on HTTP/1.0, a coding list that does not end in a
//! single `chunked`.

use http::HeaderMap;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes (more than zero).
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
}

/// Why a head's framing is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// Both `Content-Length` and `Transfer-Encoding`.
    LengthAndCoding,
    /// More than one `Content-Length` field or list member.
    RepeatedLength,
    /// A `Content-Length` that is not plain decimal digits, or too large.
    BadLength,
    /// `Transfer-Encoding` in an HTTP/1.0 message.
    CodingOnHttp10,
    /// A coding list that does not end in exactly one `chunked`.
    NotChunkedLast,
    /// A coding other than `chunked` (which this engine does not decode).
    UnknownCoding,
}

impl FramingError {
    /// A sentence for the client (or the log) saying what was wrong.
    pub fn reason(self) -> &'static str {
        match self {
            FramingError::LengthAndCoding => {
                "The message has both Content-Length and Transfer-Encoding."
            }
            FramingError::RepeatedLength => "The message has more than one Content-Length.",
            FramingError::BadLength => "The message's Content-Length is not a decimal number.",
            FramingError::CodingOnHttp10 => "An HTTP/1.0 message may not use Transfer-Encoding.",
            FramingError::NotChunkedLast => {
                "The message's Transfer-Encoding does not end in a single chunked."
            }
            FramingError::UnknownCoding => {
                "The message's Transfer-Encoding names a coding the gateway does not implement."
            }
        }
    }
}

/// The framing of a request (RFC 9112 §6.3, rules 3–6): no length means no body.
pub fn request(headers: &HeaderMap, http10: bool) -> Result<Framing, FramingError> {
    match declared(headers, http10)? {
        Some(f) => Ok(f),
        None => Ok(Framing::Empty),
    }
}

/// The framing of a response to a request made with `method_head`, with `status`
/// (RFC 9112 §6.3, rules 1–7): no length means the body runs until the connection closes.
pub fn response(
    headers: &HeaderMap,
    status: u16,
    http10: bool,
    method_head: bool,
) -> Result<Framing, FramingError> {
    if method_head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Framing::Empty);
    }
    match declared(headers, http10) {
        Ok(Some(f)) => Ok(f),
        Ok(None) => Ok(Framing::UntilClose),
        // RFC 9112 §6.3 rule 4: a response whose codings are all well formed and none is
        // chunked is read until the connection closes. Nothing can hide behind it: the
        // connection is never used again.
        Err(FramingError::NotChunkedLast) if only_other_codings(headers) => Ok(Framing::UntilClose),
        Err(e) => Err(e),
    }
}

/// Whether every `Transfer-Encoding` element is a token and none is `chunked`.
fn only_other_codings(headers: &HeaderMap) -> bool {
    headers.get_all(TRANSFER_ENCODING).iter().all(|value| {
        value.as_bytes().split(|&b| b == b',').all(|member| {
            let member = trim_ows(member);
            is_token(member) && !member.eq_ignore_ascii_case(b"chunked")
        })
    })
}

/// The framing the head declares, if any.
fn declared(headers: &HeaderMap, http10: bool) -> Result<Option<Framing>, FramingError> {
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter().peekable();
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    if codings.peek().is_some() {
        if lengths.next().is_some() {
            return Err(FramingError::LengthAndCoding);
        }
        if http10 {
            return Err(FramingError::CodingOnHttp10);
        }
        let mut members = 0usize;
        let mut chunked_at = None;
        for value in codings {
            for member in value.as_bytes().split(|&b| b == b',') {
                let member = trim_ows(member);
                // An empty element (an empty field, `chunked, ,`) is skipped by some
                // parsers and taken for a coding by others: refused (found by fuzzing).
                if member.is_empty() {
                    return Err(FramingError::NotChunkedLast);
                }
                if member.eq_ignore_ascii_case(b"chunked") {
                    if chunked_at.is_some() {
                        return Err(FramingError::NotChunkedLast);
                    }
                    chunked_at = Some(members);
                } else if !is_token(member) {
                    return Err(FramingError::NotChunkedLast);
                }
                members += 1;
            }
        }
        return match chunked_at {
            Some(at) if at + 1 == members && members == 1 => Ok(Some(Framing::Chunked)),
            // gzip, chunked: well formed, but this engine decodes only chunked.
            Some(at) if at + 1 == members => Err(FramingError::UnknownCoding),
            _ => Err(FramingError::NotChunkedLast),
        };
    }
    let Some(first) = lengths.next() else {
        return Ok(None);
    };
    if lengths.next().is_some() {
        return Err(FramingError::RepeatedLength);
    }
    let n = parse_length(first.as_bytes())?;
    Ok(Some(if n == 0 {
        Framing::Empty
    } else {
        Framing::Length(n)
    }))
}

/// A `Content-Length` value: one to nineteen decimal digits, nothing else (no sign, no
/// spaces, no list).
pub fn parse_length(value: &[u8]) -> Result<u64, FramingError> {
    if value.is_empty() || value.len() > 19 {
        return Err(if value.contains(&b',') {
            FramingError::RepeatedLength
        } else {
            FramingError::BadLength
        });
    }
    let mut n: u64 = 0;
    for &b in value {
        if b == b',' {
            return Err(FramingError::RepeatedLength);
        }
        if !b.is_ascii_digit() {
            return Err(FramingError::BadLength);
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Ok(n)
}

/// `value` without optional white space (spaces and tabs) at either end.
pub(crate) fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// Whether `b` is a token character (RFC 9110 §5.6.2).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `s` is a non-empty token.
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn head(fields: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn lengths_are_plain_digits_only() {
        assert_eq!(parse_length(b"0"), Ok(0));
        assert_eq!(parse_length(b"0042"), Ok(42));
        assert_eq!(
            parse_length(b"9999999999999999999"),
            Ok(9_999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"+5",
            b"-1",
            b" 5",
            b"5 ",
            b"0x10",
            b"1e3",
            b"5\t",
        ] {
            assert_eq!(parse_length(bad), Err(FramingError::BadLength), "{bad:?}");
        }
        assert_eq!(
            parse_length(b"99999999999999999999"),
            Err(FramingError::BadLength)
        );
        assert_eq!(parse_length(b"5,5"), Err(FramingError::RepeatedLength));
    }

    #[test]
    fn request_framing_follows_rfc_9112_strictly() {
        type Case<'a> = (
            &'a [(&'a str, &'a str)],
            bool,
            Result<Framing, FramingError>,
        );
        let cases: &[Case<'_>] = &[
            (&[], false, Ok(Framing::Empty)),
            (&[("content-length", "0")], false, Ok(Framing::Empty)),
            (&[("content-length", "5")], false, Ok(Framing::Length(5))),
            (
                &[("transfer-encoding", "chunked")],
                false,
                Ok(Framing::Chunked),
            ),
            (
                &[("transfer-encoding", "CHUNKED")],
                false,
                Ok(Framing::Chunked),
            ),
            (
                &[("transfer-encoding", " chunked ")],
                false,
                Ok(Framing::Chunked),
            ),
            (
                &[("transfer-encoding", "chunked"), ("content-length", "5")],
                false,
                Err(FramingError::LengthAndCoding),
            ),
            (
                &[("content-length", "5"), ("content-length", "5")],
                false,
                Err(FramingError::RepeatedLength),
            ),
            (
                &[("content-length", "5"), ("content-length", "6")],
                false,
                Err(FramingError::RepeatedLength),
            ),
            (
                &[("transfer-encoding", "chunked")],
                true,
                Err(FramingError::CodingOnHttp10),
            ),
            (
                &[("transfer-encoding", "chunked, gzip")],
                false,
                Err(FramingError::NotChunkedLast),
            ),
            (
                &[
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
                false,
                Err(FramingError::NotChunkedLast),
            ),
            (
                &[("transfer-encoding", "gzip, chunked")],
                false,
                Err(FramingError::UnknownCoding),
            ),
            (
                &[("transfer-encoding", "identity")],
                false,
                Err(FramingError::NotChunkedLast),
            ),
            (
                &[("transfer-encoding", "xchunked")],
                false,
                Err(FramingError::NotChunkedLast),
            ),
            (
                &[("transfer-encoding", "chunked;q=1")],
                false,
                Err(FramingError::NotChunkedLast),
            ),
            (
                &[("transfer-encoding", "")],
                false,
                Err(FramingError::NotChunkedLast),
            ),
        ];
        for (fields, http10, want) in cases {
            assert_eq!(request(&head(fields), *http10), *want, "{fields:?}");
        }
    }

    #[test]
    fn responses_without_a_body_by_status_or_method() {
        let h = head(&[("content-length", "5")]);
        for status in [101, 204, 304] {
            assert_eq!(response(&h, status, false, false), Ok(Framing::Empty));
        }
        assert_eq!(response(&h, 200, false, true), Ok(Framing::Empty));
        assert_eq!(response(&h, 200, false, false), Ok(Framing::Length(5)));
        assert_eq!(
            response(&HeaderMap::new(), 200, true, false),
            Ok(Framing::UntilClose)
        );
        // Codings without chunked: read until close (RFC 9112 §6.3 rule 4); anything
        // ambiguous is still refused.
        let gzip = head(&[("transfer-encoding", "gzip")]);
        assert_eq!(response(&gzip, 200, false, false), Ok(Framing::UntilClose));
        for bad in [
            &[("transfer-encoding", "chunked, gzip")][..],
            &[("transfer-encoding", "gzip"), ("content-length", "5")],
            &[("transfer-encoding", "gzip, ")],
            &[("transfer-encoding", "chunked, chunked")],
        ] {
            assert!(response(&head(bad), 200, false, false).is_err(), "{bad:?}");
        }
    }
}
