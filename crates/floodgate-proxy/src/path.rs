//! Request paths made canonical before anything looks at them (RFC 3986 §6.2.2): percent-
//! encoded unreserved characters decoded, the hex of the other escapes upper-cased, dot
//! segments removed (a path that climbs above the root is refused), and, by the
//! listener's choice, encoded slashes kept, decoded or refused and runs of slashes merged.
//!
//! Routing, policies, cache and rate-limit keys, the access log and the request sent
//! upstream all use the canonical form, so `/public/../admin` cannot pass a route for
//! `/public` and reach `/admin` at an origin that normalizes paths itself.
//!
//! Written here rather than taken from a URL crate: those parse whole URLs for browsers
//! (WHATWG), which decode and re-encode differently from what an origin server sees; this
//! is the one RFC 3986 algorithm over the path alone, with the choices Envoy also offers.

use std::borrow::Cow;

use floodgate_config::model::{EscapedSlashes, PathHandling};

/// Why a path cannot be made canonical.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// An encoded slash where the listener refuses them.
    EscapedSlash,
    /// More `..` segments than there are segments to remove.
    AboveRoot,
}

impl PathError {
    /// The text of the 400 answer.
    pub fn detail(self) -> &'static str {
        match self {
            PathError::BadEscape => "The request path has a '%' not followed by two hex digits.",
            PathError::EscapedSlash => {
                "The request path has an encoded slash (%2F or %5C), which this listener refuses."
            }
            PathError::AboveRoot => "The request path climbs above the root with '..'.",
        }
    }
}

/// RFC 3986 §2.3: characters that mean the same encoded or not.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `path` may already be canonical: no escapes, no segment starting with a dot,
/// and no empty segment when slashes are merged. The common case costs this one pass.
fn plain(path: &[u8], merge: bool) -> bool {
    let mut prev = 0u8;
    for &b in path {
        if b == b'%' || (prev == b'/' && (b == b'.' || (merge && b == b'/'))) {
            return false;
        }
        prev = b;
    }
    true
}

/// The canonical form of `path` (an origin-form path, starting with `/`; anything else,
/// such as `*`, is returned as it is).
pub fn normalize<'a>(path: &'a str, how: &PathHandling) -> Result<Cow<'a, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') || plain(bytes, how.merge_slashes) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_escapes(bytes, how.escaped_slashes)?;
    let out = remove_dot_segments(&decoded, how.merge_slashes)?;
    // Only ASCII went in (escapes of other bytes stay escaped), so this cannot fail.
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| PathError::BadEscape)
}

/// Pass 1: escapes of unreserved characters decoded, others upper-cased (or, for slashes,
/// what `slashes` says).
fn decode_escapes(path: &[u8], slashes: EscapedSlashes) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            path.get(i + 1).copied().and_then(hex),
            path.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::BadEscape);
        };
        let v = hi << 4 | lo;
        i += 3;
        if unreserved(v) {
            out.push(v);
        } else if v == b'/' || v == b'\\' {
            match slashes {
                EscapedSlashes::Keep => push_escape(&mut out, v),
                EscapedSlashes::Decode => out.push(b'/'),
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
            }
        } else {
            push_escape(&mut out, v);
        }
    }
    Ok(out)
}

fn push_escape(out: &mut Vec<u8>, v: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(v >> 4)], HEX[usize::from(v & 15)]]);
}

/// Pass 2 (RFC 3986 §5.2.4 over an absolute path): `.` segments dropped, `..` removes the
/// segment before it; a `..` with nothing before it is refused rather than ignored, since
/// it can only be an attempt to leave the root. A path ending in `.` or `..` keeps its
/// trailing slash, as the RFC's algorithm does.
fn remove_dot_segments(path: &[u8], merge: bool) -> Result<Vec<u8>, PathError> {
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut trailing = false;
    // The path starts with '/': skip it, then each piece is one segment.
    let pieces: Vec<&[u8]> = path[1..].split(|&b| b == b'/').collect();
    let last = pieces.len() - 1;
    for (i, seg) in pieces.into_iter().enumerate() {
        match seg {
            b"." => trailing = i == last,
            b".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing = i == last;
            }
            b"" if merge && i != last => {}
            _ => {
                segments.push(seg);
                trailing = false;
            }
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for seg in &segments {
        out.push(b'/');
        out.extend_from_slice(seg);
    }
    if trailing || out.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With slashes kept apart, to see the RFC's algorithm alone.
    fn norm(path: &str) -> Result<String, PathError> {
        with(path, false, EscapedSlashes::Keep)
    }

    fn with(path: &str, merge: bool, slashes: EscapedSlashes) -> Result<String, PathError> {
        let how = PathHandling {
            merge_slashes: merge,
            escaped_slashes: slashes,
        };
        normalize(path, &how).map(Cow::into_owned)
    }

    #[test]
    fn canonical_paths_are_left_alone() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "/a.b/c.d",
            "/a//b",
            "*",
            "/.well",
            "/a/.well/x",
        ] {
            assert_eq!(norm(p).as_deref(), Ok(p));
        }
        assert!(matches!(
            normalize("/a/b", &PathHandling::default()),
            Ok(Cow::Borrowed(_))
        ));
        assert_eq!(
            normalize("/a//b", &PathHandling::default()).as_deref(),
            Ok("/a/b"),
            "slashes merge by default"
        );
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(norm("/public/../admin/secret").unwrap(), "/admin/secret");
        assert_eq!(norm("/./admin/secret").unwrap(), "/admin/secret");
        assert_eq!(norm("/x/../admin/secret").unwrap(), "/admin/secret");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
        assert_eq!(norm("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(norm("/a/./b/../c").unwrap(), "/a/c");
        assert_eq!(norm("/a/..").unwrap(), "/");
        assert_eq!(norm("/.").unwrap(), "/");
        assert_eq!(norm("/a/...").unwrap(), "/a/...", "three dots is a name");
        assert_eq!(norm("/a/.b/..c").unwrap(), "/a/.b/..c");
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        assert_eq!(norm("/.."), Err(PathError::AboveRoot));
        assert_eq!(norm("/../admin"), Err(PathError::AboveRoot));
        assert_eq!(norm("/a/../../admin"), Err(PathError::AboveRoot));
        assert_eq!(norm("/%2e%2e/admin"), Err(PathError::AboveRoot));
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        assert_eq!(norm("/%61dmin/secret").unwrap(), "/admin/secret");
        assert_eq!(norm("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(norm("/public/%2E./admin").unwrap(), "/admin");
        assert_eq!(norm("/a%7e%2d%5F").unwrap(), "/a~-_");
        assert_eq!(norm("/a%20b%3f").unwrap(), "/a%20b%3F");
        assert_eq!(norm("/a%c3%a9").unwrap(), "/a%C3%A9");
        assert_eq!(norm("/%25%32%65").unwrap(), "/%252e", "no double decoding");
    }

    #[test]
    fn broken_escapes_are_refused() {
        assert_eq!(norm("/a%"), Err(PathError::BadEscape));
        assert_eq!(norm("/a%2"), Err(PathError::BadEscape));
        assert_eq!(norm("/a%zz"), Err(PathError::BadEscape));
    }

    #[test]
    fn encoded_slashes_follow_the_listener() {
        use EscapedSlashes::*;
        assert_eq!(with("/a%2fb", false, Keep).unwrap(), "/a%2Fb");
        assert_eq!(
            with("/public/..%2Fadmin", false, Keep).unwrap(),
            "/public/..%2Fadmin",
            "kept: one segment, not a dot segment"
        );
        assert_eq!(with("/a%2fb", false, Decode).unwrap(), "/a/b");
        assert_eq!(with("/a%5cb", false, Decode).unwrap(), "/a/b");
        assert_eq!(with("/public/..%2Fadmin", false, Decode).unwrap(), "/admin");
        assert_eq!(with("/a%2fb", false, Reject), Err(PathError::EscapedSlash));
        assert_eq!(with("/a%5Cb", false, Reject), Err(PathError::EscapedSlash));
    }

    #[test]
    fn slashes_merge_when_asked() {
        use EscapedSlashes::Keep;
        assert_eq!(with("/a//b///c", true, Keep).unwrap(), "/a/b/c");
        assert_eq!(with("//a", true, Keep).unwrap(), "/a");
        assert_eq!(with("/a//", true, Keep).unwrap(), "/a/");
        assert_eq!(with("/a//b", false, Keep).unwrap(), "/a//b");
        assert_eq!(with("/a//../b", false, Keep).unwrap(), "/a/b");
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        use EscapedSlashes::*;
        let samples = [
            "/a/./b/../c/%2e%2E/d%2fe//f/.",
            "/%41%42%43/%7e/%2F%5c",
            "/x/y/z/../../w//v/",
            "//../a",
            "/a/b/c/..%2f..%2f",
        ];
        for p in samples {
            for merge in [false, true] {
                for slashes in [Keep, Decode, Reject] {
                    if let Ok(once) = with(p, merge, slashes) {
                        assert_eq!(with(&once, merge, slashes).as_deref(), Ok(once.as_str()));
                    }
                }
            }
        }
    }

    /// What any canonical path satisfies.
    fn canonical(out: &str, merge: bool) {
        assert!(out.starts_with('/'), "{out:?}");
        assert!(
            out.split('/').all(|seg| seg != "." && seg != ".."),
            "dot segment left in {out:?}"
        );
        assert!(!merge || !out.contains("//"), "{out:?}");
        let bytes = out.as_bytes();
        for (i, _) in out.match_indices('%') {
            let (hi, lo) = (bytes[i + 1], bytes[i + 2]);
            assert!(
                hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit(),
                "broken escape in {out:?}"
            );
            assert!(
                !hi.is_ascii_lowercase() && !lo.is_ascii_lowercase(),
                "lower-case escape in {out:?}"
            );
            let v = hex(hi).unwrap_or(0) << 4 | hex(lo).unwrap_or(0);
            assert!(!unreserved(v), "escaped unreserved character in {out:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_path_comes_out_canonical_or_refused(
            path in "/(/|\\.|%|2|e|E|f|F|5|c|C|a|~|x|%2e|%2E|%2f|%5c|%41|%7e)*",
            merge in proptest::bool::ANY,
            slashes in proptest::sample::select(vec![
                EscapedSlashes::Keep,
                EscapedSlashes::Decode,
                EscapedSlashes::Reject,
            ]),
        ) {
            if let Ok(once) = with(&path, merge, slashes) {
                canonical(&once, merge);
                proptest::prop_assert_eq!(with(&once, merge, slashes), Ok(once.clone()));
            }
        }
    }
}
