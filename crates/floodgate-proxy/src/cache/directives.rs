//! Reading `Cache-Control`-style fields: directive names are case-insensitive, values may
//! be quoted. http-cache-semantics reads freshness itself but matches names exactly, so the
//! policy it sees gets fields rewritten in lower case here ([`lowercase_names`]); the
//! directives it does not know (RFC 5861's `stale-while-revalidate` and `stale-if-error`)
//! are read here too.

use std::time::Duration;

use http::HeaderMap;
use http::header::{self, HeaderValue};

/// Every directive of every `Cache-Control` field, as (lower-case name, unquoted value).
/// A quoted value may hold commas (`no-cache="a, b"`) and backslash escapes.
pub(crate) fn parse(headers: &HeaderMap) -> Vec<(String, Option<String>)> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(split_list)
        .filter_map(|part| {
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n, Some(unquote(v.trim()))),
                None => (part, None),
            };
            let name = name.trim().to_ascii_lowercase();
            // A directive's name is a token (RFC 9111 §5.2); anything else is noise.
            (!name.is_empty() && name.bytes().all(tchar)).then_some((name, value))
        })
        .collect()
}

/// RFC 9110 §5.6.2: the characters of a token.
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The elements of a comma-separated list, commas inside quoted strings kept.
fn split_list(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

/// A directive's value: a quoted string's content (escapes undone), or the token.
fn unquote(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"') else {
        return v.to_owned();
    };
    let inner = inner.strip_suffix('"').unwrap_or(inner);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// Whether a directive is present.
pub(crate) fn has(directives: &[(String, Option<String>)], name: &str) -> bool {
    directives.iter().any(|(n, _)| n == name)
}

/// A delta-seconds directive's value; an unreadable one counts as absent.
pub(crate) fn seconds(directives: &[(String, Option<String>)], name: &str) -> Option<Duration> {
    directives
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.as_deref()?.parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Renders directives back into one field value.
pub(crate) fn render(directives: &[(String, Option<String>)]) -> Option<HeaderValue> {
    let text = directives
        .iter()
        .map(|(n, v)| match v {
            Some(v) if v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {
                format!("{n}={v}")
            }
            Some(v) => format!("{n}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")),
            None => n.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    HeaderValue::from_str(&text).ok()
}

/// `headers` with `Cache-Control` rewritten as `directives` (removed when empty).
pub(crate) fn replace(headers: &mut HeaderMap, directives: &[(String, Option<String>)]) {
    headers.remove(header::CACHE_CONTROL);
    if let Some(v) = render(directives).filter(|v| !v.is_empty()) {
        headers.insert(header::CACHE_CONTROL, v);
    }
}

/// Rewrites `Cache-Control` with lower-case directive names, so that the policy sees
/// `Max-Age` as `max-age`.
pub(crate) fn lowercase_names(headers: &mut HeaderMap) {
    let needs = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .any(|v| v.as_bytes().iter().any(u8::is_ascii_uppercase));
    if needs {
        let d = parse(headers);
        replace(headers, &d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cc: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_str(cc).unwrap());
        h
    }

    #[test]
    fn names_are_case_insensitive_and_values_unquoted() {
        let d = parse(&headers("Max-Age=\"60\", PUBLIC, stale-if-error=300"));
        assert_eq!(seconds(&d, "max-age"), Some(Duration::from_secs(60)));
        assert!(has(&d, "public"));
        assert_eq!(
            seconds(&d, "stale-if-error"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(seconds(&d, "stale-while-revalidate"), None);
    }

    #[test]
    fn quoted_values_keep_their_commas_and_escapes() {
        let d = parse(&headers(
            r#"no-cache="set-cookie, x-a", max-age=5, ext="a\"b""#,
        ));
        assert_eq!(
            d,
            [
                ("no-cache".to_owned(), Some("set-cookie, x-a".to_owned())),
                ("max-age".to_owned(), Some("5".to_owned())),
                ("ext".to_owned(), Some("a\"b".to_owned())),
            ]
        );
        let v = render(&d).unwrap();
        assert_eq!(v, r#"no-cache="set-cookie, x-a", max-age=5, ext="a\"b""#);
    }

    #[test]
    fn unreadable_seconds_count_as_absent() {
        let d = parse(&headers("max-age=soon, s-maxage=-1"));
        assert_eq!(seconds(&d, "max-age"), None);
        assert_eq!(seconds(&d, "s-maxage"), None);
    }

    #[test]
    fn lowercasing_rewrites_only_when_needed() {
        let mut h = headers("Max-Age=60, Must-Revalidate");
        lowercase_names(&mut h);
        assert_eq!(h[header::CACHE_CONTROL], "max-age=60, must-revalidate");
        let mut h = headers("private, community=\"UCI\"");
        lowercase_names(&mut h);
        assert_eq!(h[header::CACHE_CONTROL], "private, community=UCI");
        let mut h = headers("public, max-age=5");
        lowercase_names(&mut h);
        assert_eq!(h[header::CACHE_CONTROL], "public, max-age=5");
    }

    proptest::proptest! {
        /// Any field value: no panic, and what is rendered parses back to the same
        /// directives (the renderer quotes what needs quoting).
        #[test]
        fn parsing_any_value_round_trips_through_the_renderer(value in "[ -~]{0,60}") {
            let Ok(v) = HeaderValue::from_str(&value) else { return Ok(()); };
            let mut h = HeaderMap::new();
            h.insert(http::header::CACHE_CONTROL, v);
            let d = parse(&h);
            if let Some(rendered) = render(&d) {
                let mut again = HeaderMap::new();
                again.insert(http::header::CACHE_CONTROL, rendered);
                proptest::prop_assert_eq!(parse(&again), d);
            }
        }
    }
}
