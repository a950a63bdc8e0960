//! Request ids: an incoming `X-Request-Id` that looks sane is kept (so a trace crosses hops),
//! otherwise the gateway makes one, 128 random bits in hex.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header carrying the id, both ways.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Returns the id to use for this request and whether it came from the client.
pub fn from_headers(headers: &HeaderMap) -> (HeaderValue, bool) {
    if let Some(v) = headers.get(HEADER)
        && acceptable(v.as_bytes())
    {
        return (v.clone(), true);
    }
    (generate(), false)
}

fn acceptable(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 200 && v.iter().all(|b| b.is_ascii_graphic())
}

/// A fresh random id.
pub fn generate() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u128(..);
    let mut out = [0u8; 32];
    for b in out.iter_mut().rev() {
        *b = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("abc-123"));
        assert_eq!(
            from_headers(&h),
            (HeaderValue::from_static("abc-123"), true)
        );
        h.insert(HEADER, HeaderValue::from_static("has space"));
        let (id, kept) = from_headers(&h);
        assert!(!kept);
        assert_eq!(id.len(), 32);
        assert_ne!(generate(), generate());
    }
}
