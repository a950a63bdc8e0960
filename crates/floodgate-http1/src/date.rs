//! The `Date` field every response carries (RFC 9110 §6.6.1), formatted once a second per
//! thread rather than once per response.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static CACHED: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
}

/// Appends the current date as an IMF-fixdate (29 bytes).
pub(crate) fn append(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs || c.1[0] == 0 {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                c.1.copy_from_slice(text.as_bytes());
                c.0 = secs;
            }
        }
        out.extend_from_slice(&c.1);
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_imf_fixdates() {
        let mut out = Vec::new();
        super::append(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(httpdate::parse_http_date(&text).is_ok(), "{text}");
        assert!(text.ends_with(" GMT"), "{text}");
    }
}
