//! `Surrogate-Control` (W3C Edge Architecture 1.0): an origin's word to the gateway's cache
//! alone, ahead of `Cache-Control`, which it leaves to browsers and caches further down.
//! Floodgate announces itself upstream in `Surrogate-Capability` as the device
//! [`DEVICE`]; directives with no `;target`, or targeted at it, apply. The field is removed
//! from what the client gets: it was meant for the gateway.
//!
//! Of the directives, `no-store` and `max-age` (its `+stale` part ignored) are used;
//! others are extensions and ignored. Parsing is strict where `Cache-Control`'s is
//! lenient: `max-age =60` is not a `max-age`.

use std::time::Duration;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// The device token Floodgate answers to in `Surrogate-Control` targets.
pub(crate) const DEVICE: &str = "floodgate";

pub(crate) static SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");
pub(crate) static SURROGATE_CAPABILITY: HeaderName =
    HeaderName::from_static("surrogate-capability");

/// What Floodgate tells the upstream it understands.
pub(crate) fn capability() -> HeaderValue {
    HeaderValue::from_static("floodgate=\"Surrogate/1.0\"")
}

/// Longer lifetimes are cut to this (about 68 years), as `Cache-Control`'s are.
const MAX_LIFETIME: u64 = 2_147_483_648;

/// What a response's `Surrogate-Control` says to this cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Do not store.
    NoStore,
    /// Fresh for this long, whatever `Cache-Control` and `Expires` say.
    MaxAge(Duration),
}

/// The directives of `headers`' `Surrogate-Control` that apply to Floodgate (`no-store`
/// wins over `max-age`), or `None`.
pub(crate) fn control(headers: &HeaderMap) -> Option<Control> {
    let mut max_age = None;
    for value in headers.get_all(&SURROGATE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let (directive, target) = match directive.split_once(';') {
                Some((d, t)) => (d, Some(t.trim())),
                None => (directive, None),
            };
            if target.is_some_and(|t| !t.eq_ignore_ascii_case(DEVICE)) {
                continue;
            }
            let directive = directive.trim();
            if directive.eq_ignore_ascii_case("no-store") {
                return Some(Control::NoStore);
            }
            if let Some((name, value)) = directive.split_once('=')
                && name.eq_ignore_ascii_case("max-age")
                && max_age.is_none()
            {
                let seconds = value.split('+').next().unwrap_or_default();
                if !seconds.is_empty() && seconds.bytes().all(|b| b.is_ascii_digit()) {
                    let n = seconds.parse::<u64>().unwrap_or(u64::MAX);
                    max_age = Some(Duration::from_secs(n.min(MAX_LIFETIME)));
                }
            }
        }
    }
    max_age.map(Control::MaxAge)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(values: &[&str]) -> Option<Control> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(&SURROGATE_CONTROL, HeaderValue::from_str(v).unwrap());
        }
        control(&h)
    }

    fn secs(n: u64) -> Option<Control> {
        Some(Control::MaxAge(Duration::from_secs(n)))
    }

    #[test]
    fn directives_for_floodgate_or_everyone_apply() {
        assert_eq!(of(&["max-age=60"]), secs(60));
        assert_eq!(of(&["MaX-aGe=60"]), secs(60));
        assert_eq!(of(&["foo, max-age=60+30"]), secs(60));
        assert_eq!(of(&["max-age=60;floodgate"]), secs(60));
        assert_eq!(of(&["max-age=60;other, max-age=5"]), secs(5));
        assert_eq!(of(&["max-age=60;other"]), None);
        assert_eq!(of(&["max-age=99999999999"]), secs(MAX_LIFETIME));
    }

    #[test]
    fn no_store_wins_and_malformed_ages_are_ignored() {
        assert_eq!(of(&["max-age=60", "no-store"]), Some(Control::NoStore));
        assert_eq!(of(&["no-store;other, max-age=60"]), secs(60));
        for bad in [
            "max-age =60",
            "max-age= 60",
            "max-age=-1",
            "max-age=1.5",
            "max-age=",
        ] {
            assert_eq!(of(&[bad]), None, "{bad}");
        }
    }
}
