//! The host a request names, checked before it is routed on or forwarded (RFC 9112 §3.2,
//! RFC 9113 §8.3.1): exactly one `Host` on HTTP/1.1, the authority of an absolute-form
//! target or HTTP/2's `:authority` in its place, no userinfo, and a value that is a host
//! name or IP literal with an optional port. Anything else is 400, so a client cannot
//! route on one string and have the origin (or `X-Forwarded-Host`) read another.
//!
//! Host names are checked more strictly than RFC 3986's `reg-name` allows: letters, digits,
//! `-`, `.`, `_` and `~`. The sub-delimiters the RFC also permits (`!$&'()*+,;=`) and
//! percent-escapes name no host that DNS can hold, and each is a way to smuggle a second
//! meaning into a header that origins and logs treat as a name.

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Uri, Version};

/// Why a request's host is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// No `Host` and no authority in the target.
    Missing,
    /// More than one `Host` field.
    Several,
    /// `user@` before the host.
    Userinfo,
    /// HTTP/2's `Host` names another host than `:authority`.
    Conflicting,
    /// Not a host name or IP literal with an optional port.
    Invalid,
}

impl HostError {
    /// The text of the 400 answer.
    pub fn detail(self) -> &'static str {
        match self {
            HostError::Missing => "The request has no Host header.",
            HostError::Several => "The request has more than one Host header.",
            HostError::Userinfo => "The request's host must not carry user information (user@).",
            HostError::Conflicting => "The Host header and :authority name different hosts.",
            HostError::Invalid => {
                "The request's host is not a valid host name or IP address with an optional port."
            }
        }
    }
}

/// The host a request asked for, checked, as it is forwarded in `Host`: the target's
/// authority when it has one (absolute-form, HTTP/2), else the one `Host` field.
pub fn of_request(
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
) -> Result<HeaderValue, HostError> {
    let mut fields = headers.get_all(header::HOST).iter();
    let field = fields.next();
    if fields.next().is_some() {
        return Err(HostError::Several);
    }
    let value = match uri.authority() {
        Some(authority) => {
            let text = authority.as_str();
            if text.contains('@') {
                return Err(HostError::Userinfo);
            }
            // HTTP/1.1 ignores `Host` beside an absolute-form target (RFC 9112 §3.2.2);
            // HTTP/2 treats a different one as malformed (RFC 9113 §8.3.1).
            if version == Version::HTTP_2
                && let Some(f) = field
                && !f.as_bytes().eq_ignore_ascii_case(text.as_bytes())
            {
                return Err(HostError::Conflicting);
            }
            HeaderValue::from_str(text).map_err(|_| HostError::Invalid)?
        }
        None => field.cloned().ok_or(HostError::Missing)?,
    };
    let text = value.to_str().map_err(|_| HostError::Invalid)?;
    if text.contains('@') {
        return Err(HostError::Userinfo);
    }
    check(text)?;
    Ok(value)
}

/// Whether `text` is `host [":" port]` with a host name, an IPv4 address or a bracketed
/// IPv6 address, and a port of 1 to 65535.
pub fn check(text: &str) -> Result<(), HostError> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (literal, after) = rest.split_once(']').ok_or(HostError::Invalid)?;
        literal
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| HostError::Invalid)?;
        match after {
            "" => (None, None),
            _ => (
                None,
                Some(after.strip_prefix(':').ok_or(HostError::Invalid)?),
            ),
        }
    } else {
        match text.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(text), None),
        }
    };
    if let Some(host) = host {
        // Labels of name characters; one trailing dot (the root) is allowed.
        let name_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~');
        let labels = host.strip_suffix('.').unwrap_or(host);
        if !labels
            .split('.')
            .all(|label| !label.is_empty() && label.bytes().all(name_char))
        {
            return Err(HostError::Invalid);
        }
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p > 0);
        if !valid {
            return Err(HostError::Invalid);
        }
    }
    Ok(())
}

/// The name routes match on: lower case, without the port or a trailing dot (IPv6
/// brackets kept); allocates only for upper case.
pub fn routing_name(host: &str) -> Cow<'_, str> {
    let h = if host.starts_with('[') {
        host.find(']').map_or(host, |i| &host[..=i])
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let h = h.trim_end_matches('.');
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(h.to_ascii_lowercase())
    } else {
        Cow::Borrowed(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(uri: &str, version: Version, hosts: &[&str]) -> Result<String, HostError> {
        let mut headers = HeaderMap::new();
        for h in hosts {
            headers.append(
                header::HOST,
                HeaderValue::from_bytes(h.as_bytes()).expect("value"),
            );
        }
        let uri: Uri = uri.parse().expect("uri");
        of_request(&uri, version, &headers).map(|v| v.to_str().expect("text").to_owned())
    }

    const H1: Version = Version::HTTP_11;

    #[test]
    fn valid_hosts_pass_as_sent() {
        for h in [
            "e7-host.test",
            "Shop.Example.COM:8080",
            "127.0.0.1",
            "127.0.0.1:65535",
            "[::1]",
            "[::1]:80",
            "example.com.",
            "under_score.test",
        ] {
            assert_eq!(host("/", H1, &[h]).as_deref(), Ok(h), "{h}");
        }
    }

    #[test]
    fn invalid_hosts_are_refused() {
        for h in [
            "e7-host.test/evil",
            "e7 host.test",
            ":abc",
            "a:abc",
            "a:99999",
            "a:0",
            "a:80:80",
            "a:",
            "\"a\"",
            "a\"b",
            "",
            "[::1",
            "[nope]",
            "[::1]x",
            "a%2eb",
            "a\\b",
            ".",
            "..",
            ".a",
            "a..b",
            "a.b..",
        ] {
            assert_eq!(host("/", H1, &[h]), Err(HostError::Invalid), "{h:?}");
        }
        assert_eq!(
            host("/", H1, &["user@e7-host.test"]),
            Err(HostError::Userinfo)
        );
        assert_eq!(host("/", H1, &[]), Err(HostError::Missing));
        assert_eq!(host("/", H1, &["a", "b"]), Err(HostError::Several));
        assert_eq!(host("/", H1, &["a", "a"]), Err(HostError::Several));
    }

    #[test]
    fn the_targets_authority_replaces_host() {
        assert_eq!(
            host("http://other.test/x", H1, &["a.test"]).as_deref(),
            Ok("other.test")
        );
        assert_eq!(
            host("http://user@other.test/x", H1, &["a.test"]),
            Err(HostError::Userinfo)
        );
        assert_eq!(
            host("http://other.test/x", Version::HTTP_2, &["a.test"]),
            Err(HostError::Conflicting)
        );
        assert_eq!(
            host("http://Other.test/x", Version::HTTP_2, &["other.TEST"]).as_deref(),
            Ok("Other.test")
        );
        assert_eq!(
            host("http://user@other.test/x", Version::HTTP_2, &[]),
            Err(HostError::Userinfo)
        );
    }

    #[test]
    fn routing_names_are_lower_case_without_port() {
        assert_eq!(routing_name("Shop.Example.COM:8080"), "shop.example.com");
        assert_eq!(routing_name("[::1]:80"), "[::1]");
        assert_eq!(routing_name("example.com."), "example.com");
    }
}
