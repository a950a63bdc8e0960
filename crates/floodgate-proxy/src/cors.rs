//! CORS (the Fetch standard's CORS protocol) on routes. A preflight (`OPTIONS` with
//! `Origin` and `Access-Control-Request-Method`) is answered by the gateway, before
//! authentication (browsers send preflights without credentials); other requests from an
//! allowed origin get `Access-Control-Allow-Origin` and the rest on their response,
//! whatever its status, so a page can read the gateway's own errors too. A disallowed
//! origin gets no CORS header at all, and every answer varies by `Origin`.
//!
//! Also here: a route's security response headers ([`security_headers`]).

use floodgate_config::cors::Cors;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};

use crate::body::ResponseBody;

enum OriginRule {
    Any,
    Exact(String),
    /// `scheme://` and `.domain`: any subdomain of it.
    Subdomains(String, String),
}

/// A route's compiled CORS policy.
pub struct CorsPolicy {
    origins: Vec<OriginRule>,
    methods: Vec<Method>,
    allow_methods: HeaderValue,
    /// Lower case.
    allow_headers: Vec<String>,
    expose_headers: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

impl CorsPolicy {
    /// Compiles validated config.
    pub fn compile(c: &Cors) -> Self {
        let origins = c
            .allow_origins
            .iter()
            .map(|o| {
                if o == "*" {
                    return OriginRule::Any;
                }
                match o.split_once("://*.") {
                    Some((scheme, domain)) => OriginRule::Subdomains(
                        format!("{scheme}://"),
                        format!(".{}", domain.to_ascii_lowercase()),
                    ),
                    None => OriginRule::Exact(o.to_ascii_lowercase()),
                }
            })
            .collect();
        let list = |v: &[String]| HeaderValue::from_str(&v.join(", ")).ok();
        CorsPolicy {
            origins,
            methods: c
                .allow_methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            allow_methods: list(&c.allow_methods).unwrap_or(HeaderValue::from_static("GET")),
            allow_headers: c
                .allow_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            expose_headers: (!c.expose_headers.is_empty())
                .then(|| list(&c.expose_headers))
                .flatten(),
            credentials: c.allow_credentials,
            max_age: HeaderValue::from(c.max_age.0.as_secs()),
        }
    }

    fn allows(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.origins.iter().any(|rule| match rule {
            OriginRule::Any => true,
            OriginRule::Exact(o) => *o == origin,
            OriginRule::Subdomains(scheme, domain) => {
                origin.strip_prefix(scheme.as_str()).is_some_and(|host| {
                    // The domain must follow at least one label, before any port.
                    let host = host.split(':').next().unwrap_or(host);
                    host.len() > domain.len() && host.ends_with(domain.as_str())
                })
            }
        })
    }

    /// `Access-Control-Allow-Origin`'s value for an allowed `origin`.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        let any = self.origins.iter().any(|o| matches!(o, OriginRule::Any));
        if any && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// The answer to a preflight, if `method`/`headers` make the request one.
    pub fn preflight(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<Response<ResponseBody>> {
        if method != Method::OPTIONS {
            return None;
        }
        let origin = headers.get(header::ORIGIN)?;
        let asked = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
        let mut resp = Response::new(ResponseBody::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        h.insert(
            header::VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        let method_ok =
            Method::from_bytes(asked.as_bytes()).is_ok_and(|m| self.methods.contains(&m));
        let headers_ok = headers
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|list| {
                list.split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| !s.is_empty())
                    .all(|s| self.allow_headers.contains(&s))
            });
        let origin_ok = origin.to_str().is_ok_and(|o| self.allows(o));
        if !(origin_ok && method_ok && headers_ok) {
            // No CORS headers: the browser refuses the actual request.
            return Some(resp);
        }
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin(origin),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone(),
        );
        if let Some(asked) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        Some(resp)
    }

    /// The headers for the response to an actual request with `origin`.
    pub fn response_headers(&self, origin: Option<&HeaderValue>) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = vec![(header::VARY, HeaderValue::from_static("Origin"))];
        let Some(origin) = origin.filter(|o| o.to_str().is_ok_and(|o| self.allows(o))) else {
            return out;
        };
        out.push((
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin(origin),
        ));
        if self.credentials {
            out.push((
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        if let Some(e) = &self.expose_headers {
            out.push((header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone()));
        }
        out
    }
}

/// A route's security response headers, compiled.
pub fn security_headers(
    h: &floodgate_config::cors::SecurityHeaders,
) -> Vec<(HeaderName, HeaderValue)> {
    use floodgate_config::cors::FrameOptions;
    let mut out = vec![(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static(match h.frame_options {
            FrameOptions::Deny => "DENY",
            FrameOptions::Sameorigin => "SAMEORIGIN",
        }),
    )];
    if let Ok(v) = HeaderValue::from_str(&h.referrer_policy) {
        out.push((header::REFERRER_POLICY, v));
    }
    if h.content_type_options {
        out.push((
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ));
    }
    if let Some(v) = h
        .content_security_policy
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        out.push((header::CONTENT_SECURITY_POLICY, v));
    }
    out
}

/// CORS, among the guards: a preflight is answered, other requests get the fields.
pub(crate) const POLICY: crate::policy::RoutePolicy = crate::policy::RoutePolicy {
    name: "cors",
    phase: crate::policy::Phase::Guards,
    describe: |r| {
        let Some(c) = &r.cors else { return Vec::new() };
        vec![format!(
            "cors: origins {}; methods {}{}",
            c.allow_origins.join(", "),
            c.allow_methods.join(", "),
            if c.allow_credentials {
                "; with credentials"
            } else {
                ""
            }
        )]
    },
};

/// Security headers, a response filter on every answer of the route.
pub(crate) const SECURITY_HEADERS_POLICY: crate::policy::RoutePolicy = crate::policy::RoutePolicy {
    name: "security headers",
    phase: crate::policy::Phase::Response,
    describe: |r| match r.security_headers {
        Some(_) => vec![
            "security headers: frame options, nosniff, referrer policy (and CSP if given)".into(),
        ],
        None => Vec::new(),
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str]) -> CorsPolicy {
        CorsPolicy::compile(&Cors {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: vec!["GET".into(), "PUT".into()],
            allow_headers: vec!["Content-Type".into()],
            expose_headers: vec![],
            allow_credentials: false,
            max_age: floodgate_config::value::Duration(std::time::Duration::from_secs(60)),
        })
    }

    #[test]
    fn origin_patterns() {
        let p = policy(&["https://app.test", "https://*.shop.test"]);
        assert!(p.allows("https://app.test"));
        assert!(p.allows("HTTPS://APP.TEST"));
        assert!(!p.allows("http://app.test"));
        assert!(p.allows("https://eu.shop.test"));
        assert!(p.allows("https://a.b.shop.test:8443"));
        assert!(
            !p.allows("https://shop.test"),
            "the bare domain is not a subdomain"
        );
        assert!(!p.allows("https://evilshop.test"));
        assert!(!p.allows("https://shop.test.evil"));
    }
}
