//! Byte ranges served from a stored response (RFC 9110 §14): a GET with one `Range` on a
//! stored 200 gets a 206 with that slice, or 416 when it lies past the end. Several ranges
//! in one request (multipart answers), a malformed `Range`, or an `If-Range` that does not
//! match the stored validator get the whole response, which RFC 9110 allows. On a miss the
//! `Range` goes upstream as it came and the 206 is not stored.

use std::ops::Range;

use http::HeaderMap;
use http::header;

/// What a request's `Range` asks of a stored body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Selected {
    /// The whole body, as a 200.
    Whole,
    /// This slice, as a 206.
    Part(Range<usize>),
    /// Nothing the body holds: 416.
    Unsatisfiable,
}

/// What `request` asks of a body of `len` bytes stored with `stored` fields.
pub(crate) fn select(request: &HeaderMap, stored: &HeaderMap, len: usize) -> Selected {
    let Some(spec) = request.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Selected::Whole;
    };
    if !if_range_holds(request, stored) {
        return Selected::Whole;
    }
    parse(spec, len)
}

/// `If-Range` (RFC 9110 §13.1.5): absent, or a strong `ETag` or the exact `Last-Modified`
/// of the stored response.
fn if_range_holds(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(condition) = request.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let condition = condition.trim();
    if condition.starts_with('"') || condition.starts_with("W/") {
        let etag = stored.get(header::ETAG).and_then(|v| v.to_str().ok());
        return !condition.starts_with("W/") && etag.is_some_and(|e| e.trim() == condition);
    }
    let modified = stored
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok());
    modified.is_some_and(|m| m.trim() == condition)
}

/// One `bytes=` range of a body of `len` bytes.
fn parse(spec: &str, len: usize) -> Selected {
    let Some((unit, set)) = spec.split_once('=') else {
        return Selected::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return Selected::Whole;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return Selected::Whole;
    };
    let number = |s: &str| -> Option<Option<usize>> {
        if s.is_empty() {
            return Some(None);
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Beyond usize: past any body's end.
        Some(Some(s.parse::<usize>().unwrap_or(usize::MAX)))
    };
    let (Some(first), Some(last)) = (number(first.trim()), number(last.trim())) else {
        return Selected::Whole;
    };
    match (first, last) {
        (Some(a), Some(b)) if b < a => Selected::Whole,
        (Some(a), _) if a >= len => Selected::Unsatisfiable,
        (Some(a), Some(b)) => Selected::Part(a..b.min(len - 1) + 1),
        (Some(a), None) => Selected::Part(a..len),
        (None, Some(0)) => Selected::Unsatisfiable,
        (None, Some(_)) if len == 0 => Selected::Unsatisfiable,
        (None, Some(n)) => Selected::Part(len.saturating_sub(n)..len),
        (None, None) => Selected::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn single_ranges_in_each_form() {
        use Selected::*;
        for (spec, want) in [
            ("bytes=0-4", Part(0..5)),
            ("bytes=5-", Part(5..10)),
            ("bytes=-3", Part(7..10)),
            ("bytes=-30", Part(0..10)),
            ("bytes=8-99", Part(8..10)),
            ("Bytes = 2-2", Part(2..3)),
            ("bytes=10-", Unsatisfiable),
            ("bytes=99999999999999999999999-", Unsatisfiable),
            ("bytes=-0", Unsatisfiable),
            ("bytes=4-2", Whole),
            ("bytes=12-5", Whole),
            ("bytes=0-1,4-5", Whole),
            ("items=0-1", Whole),
            ("bytes=a-b", Whole),
            ("bytes=-", Whole),
        ] {
            assert_eq!(parse(spec, 10), want, "{spec}");
        }
        assert_eq!(parse("bytes=-5", 0), Unsatisfiable);
    }

    #[test]
    fn if_range_needs_the_strong_etag_or_the_exact_date() {
        let stored = fields(&[
            ("etag", "\"v1\""),
            ("last-modified", "Fri, 20 Nov 2026 00:00:00 GMT"),
        ]);
        let ask = |if_range: &str| {
            let mut r = fields(&[("range", "bytes=0-0")]);
            if !if_range.is_empty() {
                r.insert(header::IF_RANGE, if_range.parse().unwrap());
            }
            select(&r, &stored, 10)
        };
        assert_eq!(ask(""), Selected::Part(0..1));
        assert_eq!(ask("\"v1\""), Selected::Part(0..1));
        assert_eq!(ask("Fri, 20 Nov 2026 00:00:00 GMT"), Selected::Part(0..1));
        assert_eq!(ask("\"v2\""), Selected::Whole);
        assert_eq!(ask("W/\"v1\""), Selected::Whole);
        assert_eq!(ask("Sat, 21 Nov 2026 00:00:00 GMT"), Selected::Whole);
    }

    proptest::proptest! {
        /// Any Range value against any length: no panic, and a part is always inside the
        /// body and not empty.
        #[test]
        fn any_range_selects_inside_the_body(spec in "[ -~]{0,40}", len in 0usize..10_000) {
            if let Selected::Part(r) = parse(&spec, len) {
                proptest::prop_assert!(r.start < r.end && r.end <= len, "{spec} {len} {r:?}");
            }
        }

        #[test]
        fn byte_ranges_of_digits_select_inside_the_body(
            a in 0usize..20_000,
            b in 0usize..20_000,
            len in 0usize..10_000,
        ) {
            for spec in [format!("bytes={a}-{b}"), format!("bytes={a}-"), format!("bytes=-{b}")] {
                if let Selected::Part(r) = parse(&spec, len) {
                    proptest::prop_assert!(r.start < r.end && r.end <= len, "{spec} {len} {r:?}");
                }
            }
        }
    }
}
