//! A route's caching rules: whether a response is stored, for how long it is fresh, and
//! how long it may be served stale. RFC 9111's rules (storability, `Expires`, `Age`,
//! heuristic freshness, revalidation, 304 merging) come from http-cache-semantics; this
//! module feeds it a view of each response with the operator's overrides applied
//! (`force_ttl`, `default_ttl`, negative TTLs, jitter) and adds what it does not know:
//! RFC 5861's stale windows and which responses must never be served stale.

use std::time::{Duration, SystemTime};

use floodgate_config::cache::RouteCache;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri};
use http_cache_semantics::{CacheOptions, CachePolicy, RequestLike, ResponseLike};

use super::directives as cc;
use super::surrogate;

/// The request fields the policy reads; the cache key already holds the URI, host and
/// `Vary` selection, so the policy is never asked about them.
const POLICY_REQUEST_FIELDS: [HeaderName; 2] = [header::CACHE_CONTROL, header::PRAGMA];

/// The conditional fields a revalidation may carry on.
const CONDITIONAL_FIELDS: [HeaderName; 5] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// A request as the policy sees it.
pub(crate) struct PolicyRequest {
    headers: HeaderMap,
}

impl PolicyRequest {
    /// The fields of `headers` the policy needs; with `ignore_client` the client's cache
    /// directives are left out.
    pub(crate) fn of(headers: &HeaderMap, ignore_client: bool) -> Self {
        let mut out = HeaderMap::new();
        if !ignore_client {
            for name in POLICY_REQUEST_FIELDS {
                for v in headers.get_all(&name) {
                    out.append(name.clone(), v.clone());
                }
            }
        }
        if let Some(v) = headers.get(header::AUTHORIZATION) {
            out.insert(header::AUTHORIZATION, v.clone());
        }
        cc::lowercase_names(&mut out);
        PolicyRequest { headers: out }
    }

    /// The same, with the client's conditional fields (for revalidating on its behalf).
    pub(crate) fn with_conditionals(mut self, headers: &HeaderMap) -> Self {
        for name in CONDITIONAL_FIELDS {
            if let Some(v) = headers.get(&name) {
                self.headers.insert(name, v.clone());
            }
        }
        self
    }

    /// Whether the client asked for a response only if one is stored.
    pub(crate) fn only_if_cached(&self) -> bool {
        cc::has(&cc::parse(&self.headers), "only-if-cached")
    }
}

impl RequestLike for PolicyRequest {
    fn uri(&self) -> Uri {
        Uri::from_static("/")
    }
    fn is_same_uri(&self, _: &Uri) -> bool {
        true
    }
    fn method(&self) -> &Method {
        &Method::GET
    }
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

struct PolicyResponse<'a> {
    status: StatusCode,
    headers: &'a HeaderMap,
}

impl ResponseLike for PolicyResponse<'_> {
    fn status(&self) -> StatusCode {
        self.status
    }
    fn headers(&self) -> &HeaderMap {
        self.headers
    }
}

/// How a stored response ages.
#[derive(Clone, Debug)]
pub(crate) struct Freshness {
    /// The policy over the response's view (overrides applied).
    pub policy: CachePolicy,
    /// When it stops being fresh.
    pub fresh_until: SystemTime,
    /// How long past that it may be served while refreshed in the background.
    pub stale_while_revalidate: Duration,
    /// How long past that it may be served when the upstream fails.
    pub stale_if_error: Duration,
    /// `must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache`: never served stale.
    pub strict: bool,
    /// Fields `no-cache="..."` or `private="..."` name: not kept with the stored response.
    pub omit: Vec<HeaderName>,
}

impl Freshness {
    /// For a response handed to coalesced requests but never stored: already stale.
    pub(crate) fn unstored(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Self {
        let request = PolicyRequest {
            headers: HeaderMap::new(),
        };
        let response = PolicyResponse { status, headers };
        Freshness {
            policy: CachePolicy::new_options(&request, &response, now, CacheOptions::default()),
            fresh_until: now,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            strict: true,
            omit: Vec::new(),
        }
    }

    /// How long ago it went stale (zero while fresh).
    pub(crate) fn staleness(&self, now: SystemTime) -> Duration {
        now.duration_since(self.fresh_until).unwrap_or_default()
    }

    /// How long it should stay in storage: fresh, then stale for as long as it can
    /// still be served or revalidated.
    pub(crate) fn keep(&self, now: SystemTime, has_validators: bool) -> Duration {
        let fresh = self.fresh_until.duration_since(now).unwrap_or_default();
        let stale = if self.strict {
            Duration::ZERO
        } else {
            self.stale_while_revalidate.max(self.stale_if_error)
        };
        let revalidate = if has_validators {
            Duration::from_secs(600)
        } else {
            Duration::ZERO
        };
        fresh + stale.max(revalidate)
    }
}

/// A route's caching rules, compiled.
#[derive(Debug)]
pub struct Rules {
    default_ttl: Option<Duration>,
    force_ttl: Option<Duration>,
    negative: Vec<u16>,
    negative_ttl: Duration,
    jitter: f64,
    stale_while_revalidate: Duration,
    stale_if_error: Duration,
    /// Clients' `no-cache`, `max-age` and `Pragma` are disregarded.
    pub ignore_client_no_cache: bool,
}

impl Rules {
    /// Compiles a route's `cache`.
    pub fn new(c: &RouteCache) -> Self {
        Rules {
            default_ttl: c.default_ttl.map(|d| d.0),
            force_ttl: c.force_ttl.map(|d| d.0),
            negative: c.negative_statuses.clone(),
            negative_ttl: c.negative_ttl.0,
            jitter: c.jitter.0,
            stale_while_revalidate: c.stale_while_revalidate.0,
            stale_if_error: c.stale_if_error.0,
            ignore_client_no_cache: c.ignore_client_no_cache,
        }
    }

    /// How a response to a GET would be stored, or `None` if it may not be.
    pub(crate) fn admit(
        &self,
        request: &PolicyRequest,
        status: StatusCode,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Option<Freshness> {
        let mut view = headers.clone();
        view.remove(header::VARY);
        cc::lowercase_names(&mut view);
        let mut d = cc::parse(&view);
        // `no-cache="f"` and `private="f"` (RFC 9111 §5.2.2.4, §5.2.2.7): the response may
        // be stored and reused, only without those fields. The policy would read them as
        // the unqualified directives, so it does not see them.
        let omit = qualified_fields(&mut d);
        if !omit.is_empty() {
            cc::replace(&mut view, &d);
            for name in &omit {
                view.remove(name);
            }
        }
        // A stored cookie would be handed to every client.
        if view.contains_key(header::SET_COOKIE) || vary_any(headers) {
            return None;
        }
        // For a shared cache `proxy-revalidate` is `must-revalidate`; the policy would
        // instead never count such a response fresh.
        if cc::has(&d, "proxy-revalidate") {
            d.retain(|(n, _)| n != "proxy-revalidate");
            if !cc::has(&d, "must-revalidate") {
                d.push(("must-revalidate".into(), None));
            }
            cc::replace(&mut view, &d);
        }
        // `Surrogate-Control` speaks to this cache over `Cache-Control`'s head.
        match surrogate::control(&view) {
            Some(surrogate::Control::NoStore) => return None,
            Some(surrogate::Control::MaxAge(lifetime)) => {
                d.retain(|(n, _)| {
                    !matches!(n.as_str(), "max-age" | "s-maxage" | "no-cache" | "no-store")
                });
                d.push(("max-age".into(), Some(lifetime.as_secs().to_string())));
                cc::replace(&mut view, &d);
                view.remove(header::EXPIRES);
                view.remove(header::PRAGMA);
            }
            None => {}
        }
        // An `Age` that cannot be read says nothing to trust about the response's age:
        // counted as older than any lifetime, so it is revalidated before it is reused.
        if !age_is_readable(&view) {
            view.insert(header::AGE, HeaderValue::from_static("2147483648"));
        }
        let options = CacheOptions {
            shared: true,
            ..CacheOptions::default()
        };
        let response = PolicyResponse {
            status,
            headers: &view,
        };
        let first = CachePolicy::new_options(request, &response, now, options);
        if !first.is_storable() {
            return None;
        }
        let mut directives = cc::parse(&view);
        // The upstream said something about freshness (even "none").
        let explicit = cc::has(&directives, "max-age")
            || cc::has(&directives, "s-maxage")
            || cc::has(&directives, "no-cache")
            || view.contains_key(header::EXPIRES)
            || view.contains_key(header::PRAGMA);
        let negative = self.negative.contains(&status.as_u16());
        // `force_ttl` overrides the upstream's word, `no-cache` included; so does
        // `negative_ttl` for negative answers: many origins send `max-age=0` or `no-cache`
        // with a 404, and the defence against cache penetration must hold for them too.
        let overriding = self.force_ttl.is_some() || negative;
        let forced = if negative {
            Some(self.negative_ttl)
        } else if self.force_ttl.is_some() {
            self.force_ttl
        } else if explicit {
            None
        } else {
            self.default_ttl
        };
        let age = first.age(now);
        let ttl = forced.unwrap_or_else(|| first.time_to_live(now));
        let jittered = self.jitter(ttl);
        let strict = cc::has(&directives, "must-revalidate")
            || cc::has(&directives, "proxy-revalidate")
            || cc::has(&directives, "s-maxage")
            || (!overriding && cc::has(&directives, "no-cache"));
        let policy = if forced.is_some() || jittered != ttl {
            let authenticated_ok = cc::has(&directives, "s-maxage");
            directives.retain(|(n, _)| {
                !matches!(n.as_str(), "max-age" | "s-maxage") && (!overriding || n != "no-cache")
            });
            let lifetime = (age + jittered).as_secs_f64().round() as u64;
            directives.push(("max-age".into(), Some(lifetime.to_string())));
            if authenticated_ok && !cc::has(&directives, "public") {
                directives.push(("public".into(), None));
            }
            cc::replace(&mut view, &directives);
            if overriding {
                view.remove(header::PRAGMA);
            }
            let response = PolicyResponse {
                status,
                headers: &view,
            };
            CachePolicy::new_options(request, &response, now, options)
        } else {
            first
        };
        let fresh_for = policy.time_to_live(now);
        Some(Freshness {
            fresh_until: now + fresh_for,
            stale_while_revalidate: cc::seconds(&directives, "stale-while-revalidate")
                .unwrap_or(self.stale_while_revalidate),
            stale_if_error: cc::seconds(&directives, "stale-if-error")
                .unwrap_or(self.stale_if_error),
            strict,
            policy,
            omit,
        })
    }

    /// `ttl` shortened at random by up to the jitter share (never lengthened: that would
    /// serve a response the upstream considers stale).
    fn jitter(&self, ttl: Duration) -> Duration {
        if self.jitter <= 0.0 || ttl.is_zero() {
            return ttl;
        }
        ttl.mul_f64(1.0 - self.jitter * fastrand::f64())
    }
}

/// Takes the field-qualified `no-cache` and `private` directives out of `d`; the fields
/// they name.
fn qualified_fields(d: &mut Vec<(String, Option<String>)>) -> Vec<HeaderName> {
    let mut fields = Vec::new();
    d.retain(|(name, value)| {
        let qualified = matches!(name.as_str(), "no-cache" | "private")
            && value.as_deref().is_some_and(|v| !v.trim().is_empty());
        if qualified {
            fields.extend(
                value
                    .iter()
                    .flat_map(|v| v.split(','))
                    .filter_map(|f| HeaderName::from_bytes(f.trim().as_bytes()).ok()),
            );
        }
        !qualified
    });
    fields
}

/// No `Age`, or one field line of digits (RFC 9111 §5.1: a non-negative integer).
fn age_is_readable(headers: &HeaderMap) -> bool {
    let mut lines = headers.get_all(header::AGE).iter();
    match (lines.next(), lines.next()) {
        (None, _) => true,
        (Some(v), None) => {
            let v = v.as_bytes().trim_ascii();
            !v.is_empty() && v.iter().all(u8::is_ascii_digit)
        }
        (Some(_), Some(_)) => false,
    }
}

/// `Vary: *`: no later request can be matched with it.
fn vary_any(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|n| n.trim() == "*")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn rules(f: impl FnOnce(&mut RouteCache)) -> Rules {
        let mut c: RouteCache = serde_json::from_str("{}").unwrap();
        c.jitter = floodgate_config::value::Percent(0.0);
        f(&mut c);
        Rules::new(&c)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn admit(
        r: &Rules,
        req: &[(&str, &str)],
        status: u16,
        resp: &[(&str, &str)],
    ) -> Option<Freshness> {
        let now = SystemTime::now();
        r.admit(
            &PolicyRequest::of(&headers(req), false),
            StatusCode::from_u16(status).unwrap(),
            &headers(resp),
            now,
        )
    }

    fn ttl(f: &Freshness) -> u64 {
        f.fresh_until
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .as_secs_f64()
            .round() as u64
    }

    #[test]
    fn max_age_and_s_maxage_set_freshness() {
        let r = rules(|_| {});
        assert_eq!(
            ttl(&admit(&r, &[], 200, &[("cache-control", "max-age=60")]).unwrap()),
            60
        );
        let f = admit(&r, &[], 200, &[("cache-control", "max-age=60, s-maxage=5")]).unwrap();
        assert_eq!(ttl(&f), 5);
        assert!(f.strict, "s-maxage implies proxy-revalidate");
        let f = admit(
            &r,
            &[],
            200,
            &[("cache-control", "max-age=60, proxy-revalidate")],
        )
        .unwrap();
        assert_eq!(ttl(&f), 60);
        assert!(f.strict);
        assert_eq!(
            ttl(&admit(&r, &[], 200, &[("cache-control", "Max-Age=30")]).unwrap()),
            30
        );
    }

    #[test]
    fn what_a_shared_cache_may_not_store() {
        let r = rules(|_| {});
        for resp in [
            &[("cache-control", "max-age=60, private")][..],
            &[("cache-control", "no-store, max-age=60")],
            &[("cache-control", "max-age=60"), ("set-cookie", "a=b")],
            &[("cache-control", "max-age=60"), ("vary", "accept, *")],
        ] {
            assert!(admit(&r, &[], 200, resp).is_none(), "{resp:?}");
        }
        let bearer = ("authorization", "Bearer x");
        for (req, resp, stored) in [
            (("cache-control", "no-store"), "max-age=60", false),
            (bearer, "max-age=60", false),
            (bearer, "public, max-age=60", true),
        ] {
            let got = admit(&r, &[req], 200, &[("cache-control", resp)]).is_some();
            assert_eq!(got, stored, "{req:?} {resp}");
        }
        assert!(admit(&r, &[], 500, &[("cache-control", "max-age=60")]).is_none());
    }

    #[test]
    fn default_ttl_only_where_the_upstream_says_nothing() {
        let r = rules(|c| {
            c.default_ttl = Some(floodgate_config::value::Duration(Duration::from_secs(30)))
        });
        assert_eq!(ttl(&admit(&r, &[], 200, &[]).unwrap()), 30);
        assert_eq!(
            ttl(&admit(&r, &[], 200, &[("cache-control", "max-age=5")]).unwrap()),
            5
        );
        assert_eq!(
            ttl(&admit(&r, &[], 200, &[("cache-control", "no-cache")]).unwrap()),
            0
        );
    }

    #[test]
    fn force_ttl_overrides_no_cache_but_not_private() {
        let r = rules(|c| {
            c.force_ttl = Some(floodgate_config::value::Duration(Duration::from_secs(30)))
        });
        let f = admit(&r, &[], 200, &[("cache-control", "no-cache, max-age=0")]).unwrap();
        assert_eq!(ttl(&f), 30);
        assert!(!f.strict);
        assert!(admit(&r, &[], 200, &[("cache-control", "private")]).is_none());
    }

    #[test]
    fn negative_answers_get_their_own_ttl() {
        let r = rules(|_| {});
        assert_eq!(ttl(&admit(&r, &[], 404, &[]).unwrap()), 10);
        assert_eq!(
            ttl(&admit(&r, &[], 410, &[("cache-control", "max-age=3600")]).unwrap()),
            10
        );
        assert!(admit(&r, &[], 404, &[("cache-control", "no-store")]).is_none());
        assert!(admit(&r, &[], 404, &[("cache-control", "private")]).is_none());
        for cc in [
            "max-age=0",
            "no-cache",
            "no-cache, max-age=0, must-revalidate",
        ] {
            let f = admit(&r, &[], 404, &[("cache-control", cc)]).unwrap();
            assert_eq!(ttl(&f), 10, "{cc}");
        }
        let f = admit(&r, &[], 404, &[("cache-control", "no-cache")]).unwrap();
        assert!(!f.strict, "no-cache is overridden, not revalidated");
    }

    #[test]
    fn jitter_spreads_within_bounds() {
        let r = rules(|c| c.jitter = floodgate_config::value::Percent(0.2));
        let ttls: Vec<u64> = (0..200)
            .map(|_| ttl(&admit(&r, &[], 200, &[("cache-control", "max-age=1000")]).unwrap()))
            .collect();
        assert!(ttls.iter().all(|t| (800..=1000).contains(t)), "{ttls:?}");
        assert!(ttls.iter().any(|t| *t < 850) && ttls.iter().any(|t| *t > 950));
    }

    #[test]
    fn stale_windows_from_the_response_or_the_route() {
        let r = rules(|c| {
            c.stale_if_error = floodgate_config::value::Duration(Duration::from_secs(60))
        });
        let f = admit(
            &r,
            &[],
            200,
            &[("cache-control", "max-age=1, stale-while-revalidate=30")],
        )
        .unwrap();
        assert_eq!(f.stale_while_revalidate, Duration::from_secs(30));
        assert_eq!(f.stale_if_error, Duration::from_secs(60));
        let f = admit(
            &r,
            &[],
            200,
            &[("cache-control", "max-age=1, stale-if-error=5")],
        )
        .unwrap();
        assert_eq!(f.stale_if_error, Duration::from_secs(5));
    }

    #[test]
    fn age_from_upstream_counts() {
        let r = rules(|_| {});
        let f = admit(
            &r,
            &[],
            200,
            &[("cache-control", "max-age=60"), ("age", "50")],
        )
        .unwrap();
        assert_eq!(ttl(&f), 10);
    }

    #[test]
    fn field_qualified_no_cache_and_private_store_without_those_fields() {
        let r = rules(|_| {});
        let f = admit(
            &r,
            &[],
            200,
            &[
                ("cache-control", "max-age=60, no-cache=\"x-a, x-b\""),
                ("x-a", "1"),
            ],
        )
        .unwrap();
        assert_eq!((ttl(&f), f.strict), (60, false));
        assert_eq!(f.omit, ["x-a", "x-b"]);
        let f = admit(
            &r,
            &[],
            200,
            &[
                ("cache-control", "max-age=60, private=\"set-cookie\""),
                ("set-cookie", "a=b"),
            ],
        )
        .unwrap();
        assert_eq!(
            f.omit,
            ["set-cookie"],
            "the cookie is not kept, the rest is"
        );
        // Unqualified, they mean what they always do.
        assert!(admit(&r, &[], 200, &[("cache-control", "max-age=60, private")]).is_none());
        assert!(
            admit(&r, &[], 200, &[("cache-control", "max-age=60, no-cache")])
                .unwrap()
                .strict
        );
    }

    #[test]
    fn an_unreadable_age_makes_the_response_stale() {
        let r = rules(|_| {});
        for age in ["abc", "-5", "7200.0", "0, 0", "5;foo=bar"] {
            let f = admit(
                &r,
                &[],
                200,
                &[("cache-control", "max-age=3600"), ("age", age)],
            );
            assert_eq!(ttl(&f.unwrap()), 0, "Age: {age}");
        }
        let twice = [
            ("cache-control", "max-age=3600"),
            ("age", "0"),
            ("age", "0"),
        ];
        assert_eq!(ttl(&admit(&r, &[], 200, &twice).unwrap()), 0);
        let read = [("cache-control", "max-age=3600"), ("age", "600")];
        assert_eq!(ttl(&admit(&r, &[], 200, &read).unwrap()), 3000);
    }

    #[test]
    fn surrogate_control_speaks_over_cache_control() {
        let r = rules(|_| {});
        type Fields<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Fields, Option<u64>); 6] = [
            (
                &[
                    ("cache-control", "no-store"),
                    ("surrogate-control", "max-age=60"),
                ],
                Some(60),
            ),
            (
                &[
                    ("cache-control", "max-age=5, no-cache"),
                    ("surrogate-control", "max-age=60"),
                ],
                Some(60),
            ),
            (
                &[
                    ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
                    ("surrogate-control", "max-age=0"),
                ],
                Some(0),
            ),
            (
                &[
                    ("cache-control", "max-age=60"),
                    ("surrogate-control", "no-store"),
                ],
                None,
            ),
            (
                &[
                    ("cache-control", "max-age=60"),
                    ("surrogate-control", "no-store;other-cdn"),
                ],
                Some(60),
            ),
            // `private` content is for one user, whoever asks to share it.
            (
                &[
                    ("cache-control", "private"),
                    ("surrogate-control", "max-age=60"),
                ],
                None,
            ),
        ];
        for (resp, want) in cases {
            assert_eq!(
                admit(&r, &[], 200, resp).as_ref().map(ttl),
                want,
                "{resp:?}"
            );
        }
    }
}
