//! Authentication and authorization on routes: who a request is (a consumer, by API key,
//! HTTP Basic or JWT), whether that consumer may use the route, and IP allow/deny rules.
//!
//! - API keys are stored as SHA-256 digests only. A presented key is hashed and looked up
//!   by digest; the found digest is then compared in constant time. Looking up by digest
//!   leaks nothing useful through timing: an attacker cannot choose inputs whose digests
//!   share a prefix with a stored one. (SHA-256 without a key is enough for long random
//!   keys: there is no dictionary to try.)
//! - Basic passwords are argon2id PHC strings, verified with the parameters inside each
//!   string, on the blocking thread pool and at most a few at a time ([`BasicVerifier`]), so
//!   a flood of logins cannot take the async workers; a success is remembered for a minute.
//! - JWTs are checked by [`jwt`]; the token's claim (`sub` by default) names the
//!   consumer, and a configured consumer of that name lends its groups.
//! - No credential is ever logged: the access log shows the consumer's name, and an API
//!   key passed in the query string is redacted from the logged path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use base64ct::{Base64, Encoding};
use floodgate_config::auth::{AuthCombine, Consumer, IpRules, RouteAuth};
use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};
use ipnet::IpNet;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

pub mod basic;
pub mod introspect;
pub mod jwt;
pub mod oauth2;

pub use basic::BasicVerifier;
use basic::{Digest, same, sha256};

use crate::router::query_param;

/// A consumer as routes see it.
#[derive(Debug)]
pub struct Identity {
    /// Its name.
    pub name: Arc<str>,
    /// Its groups.
    pub groups: Vec<String>,
}

/// Every consumer's credentials, built per configuration.
#[derive(Default)]
pub struct Identities {
    keys: HashMap<Digest, Arc<Identity>>,
    users: HashMap<String, (Arc<Identity>, Arc<str>)>,
    /// By name, for identities a token names.
    names: HashMap<String, Arc<Identity>>,
}

impl Identities {
    /// Indexes validated consumers.
    pub fn build(consumers: &[Consumer]) -> Self {
        let mut ids = Identities::default();
        for c in consumers {
            let id = Arc::new(Identity {
                name: Arc::from(c.name.as_str()),
                groups: c.groups.clone(),
            });
            ids.names.insert(c.name.clone(), id.clone());
            for key in &c.api_keys {
                if let Some(d) = key.strip_prefix("sha256:").and_then(hex_digest) {
                    ids.keys.insert(d, id.clone());
                }
            }
            if let Some(b) = &c.basic {
                ids.users.insert(
                    b.username.clone(),
                    (id.clone(), Arc::from(b.password_hash.as_str())),
                );
            }
        }
        ids
    }

    /// The consumer of that name, or a new identity without groups.
    fn named(&self, name: &str) -> Arc<Identity> {
        self.names.get(name).cloned().unwrap_or_else(|| {
            Arc::new(Identity {
                name: Arc::from(name),
                groups: Vec::new(),
            })
        })
    }

    fn by_key(&self, key: &[u8]) -> Option<Arc<Identity>> {
        let d = sha256(key);
        let (stored, id) = self.keys.get_key_value(&d)?;
        same(stored, &d).then(|| id.clone())
    }
}

fn hex_digest(hex: &str) -> Option<Digest> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Why a request may not pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No valid credentials (401), and why.
    Unauthenticated(Refusal),
    /// Valid credentials, but not for this route (403); the rule that refused:
    /// `consumer`, `group`, `scope` or `claims`.
    Forbidden(&'static str),
}

/// Why credentials were refused: for the client (RFC 6750's `error_description` on bearer
/// routes, and the problem's detail), the log and `floodgate_auth_refusals_total`. Never
/// anything about the keys or the credential itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Whose credentials: `api_key`, `basic`, `jwt`, `introspection`,
    /// `client_certificate`; `none` when the request carried none, `all` when `require:
    /// all` found them naming different consumers.
    pub method: &'static str,
    /// A stable label: `missing`, `unknown_key`, `malformed`, `unknown_user`,
    /// `wrong_password`, `expired`, `not_yet_valid`, `bad_signature`, `wrong_issuer`,
    /// `wrong_audience`, `missing_claim`, `algorithm_not_accepted`,
    /// `unsupported_extension`, `keys_unavailable`, `inactive`, `unavailable`,
    /// `different_consumers`.
    pub reason: &'static str,
}

impl Refusal {
    /// No credentials of any accepted kind.
    pub const NONE: Refusal = Refusal {
        method: "none",
        reason: "missing",
    };

    /// A sentence for the client.
    pub fn description(self) -> &'static str {
        match (self.method, self.reason) {
            (_, "missing") => {
                "This route requires authentication: send valid credentials (see WWW-Authenticate)."
            }
            ("api_key", "unknown_key") => "The API key is not known.",
            ("basic", "malformed") => "The Basic credentials are malformed.",
            ("basic", _) => "The user name or password is wrong.",
            ("client_certificate", _) => "A valid client certificate is required.",
            ("jwt" | "introspection", "malformed") => "The token is malformed.",
            (_, "expired") => "The token has expired.",
            (_, "not_yet_valid") => "The token is not valid yet.",
            (_, "bad_signature") => "The token's signature does not verify.",
            (_, "unknown_key") => "The token names a key this route does not know.",
            (_, "algorithm_not_accepted") => {
                "The token's algorithm is not one this route's keys accept."
            }
            (_, "wrong_issuer") => "The token's issuer is not accepted.",
            (_, "wrong_audience") => "The token's audience is not accepted.",
            (_, "missing_claim") => "The token lacks a required claim.",
            (_, "unsupported_extension") => {
                "The token requires an extension (crit) that is not supported."
            }
            (_, "keys_unavailable") => "The keys to check the token are unavailable.",
            (_, "inactive") => "The token is not active.",
            (_, "unavailable") => "The token could not be checked; try again later.",
            (_, "different_consumers") => "The credentials name different consumers.",
            _ => "The credentials are malformed.",
        }
    }

    /// Whether the refused credential was a bearer token (RFC 6750 errors apply).
    pub fn bearer(self) -> bool {
        matches!(self.method, "jwt" | "introspection") && self.reason != "missing"
    }
}

/// What one method made of a request.
enum Found {
    /// Its credential is not in the request.
    Absent,
    /// Its credential names this consumer.
    Passed(Arc<Identity>),
    /// Its credential is there and refused, for this reason.
    Refused(&'static str),
}

/// Who passed, and what to tell the upstream about it.
pub struct Authenticated {
    /// The consumer.
    pub identity: Arc<Identity>,
    /// Headers from token claims (`claims_to_headers`), for the upstream request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The bearer challenge every bearer route sends.
const BEARER_CHALLENGE: &str = "Bearer realm=\"floodgate\"";

/// A route's compiled `auth`.
pub struct RouteAccess {
    combine: AuthCombine,
    key_header: Option<HeaderName>,
    key_query: Option<String>,
    basic: bool,
    /// JWT validation; an error (a key that could not be read) refuses every token.
    jwt: Option<Result<crate::auth::jwt::JwtVerifier, String>>,
    /// Token introspection; an error (a bad URL) refuses every token.
    introspection: Option<Result<crate::auth::introspect::Introspector, String>>,
    client_certificate: bool,
    consumers: Vec<String>,
    groups: Vec<String>,
    scopes: Vec<String>,
    claims: Vec<(String, Vec<String>)>,
    /// Headers always removed from the client's request (those claims are sent in).
    pub strip: Vec<HeaderName>,
    /// The `WWW-Authenticate` challenge for 401s.
    pub challenge: HeaderValue,
    /// Headers removed before proxying (the credentials), if `hide_credentials`.
    pub hide: Vec<HeaderName>,
    /// Query parameters removed before proxying (an API key, a token), if
    /// `hide_credentials`.
    pub hide_query: Vec<String>,
    /// The query parameter a bearer token may come in, if any.
    token_query: Option<String>,
    /// Query parameters that carry credentials: written `REDACTED` in the access log.
    query_credentials: Vec<String>,
}

impl RouteAccess {
    /// Compiles validated config; `local` is the built-in token endpoint, if any.
    pub fn compile(a: &RouteAuth, local: Option<&crate::auth::oauth2::TokenIssuer>) -> Self {
        let key_header = a
            .api_key
            .as_ref()
            .and_then(|k| match (&k.header, &k.query) {
                (Some(h), _) => HeaderName::from_bytes(h.as_bytes()).ok(),
                (None, None) => Some(HeaderName::from_static("x-api-key")),
                (None, Some(_)) => None,
            });
        let mut challenges = Vec::new();
        if let Some(b) = &a.basic {
            let realm = b.realm.replace(['"', '\\'], "");
            challenges.push(format!("Basic realm=\"{realm}\", charset=\"UTF-8\""));
        }
        if a.jwt.is_some() || a.introspection.is_some() {
            challenges.push(BEARER_CHALLENGE.to_owned());
        }
        if let Some(h) = &key_header {
            challenges.push(format!("ApiKey header=\"{h}\""));
        } else if let Some(q) = a.api_key.as_ref().and_then(|k| k.query.as_ref()) {
            challenges.push(format!("ApiKey query=\"{}\"", q.replace(['"', '\\'], "")));
        }
        let mut hide = Vec::new();
        if a.hide_credentials {
            if a.basic.is_some() || a.jwt.is_some() || a.introspection.is_some() {
                hide.push(header::AUTHORIZATION);
            }
            hide.extend(key_header.clone());
        }
        let token_query = a.jwt.as_ref().and_then(|j| j.query.clone());
        let query_credentials: Vec<String> = a
            .api_key
            .as_ref()
            .and_then(|k| k.query.clone())
            .into_iter()
            .chain(token_query.clone())
            .collect();
        RouteAccess {
            hide_query: if a.hide_credentials {
                query_credentials.clone()
            } else {
                Vec::new()
            },
            token_query,
            query_credentials,
            combine: a.require,
            key_query: a.api_key.as_ref().and_then(|k| k.query.clone()),
            key_header,
            basic: a.basic.is_some(),
            jwt: a.jwt.as_ref().map(|j| {
                crate::auth::jwt::JwtVerifier::compile(j, local).inspect_err(|e| {
                    tracing::error!(error = %e, "JWT keys unusable: this route refuses every token");
                })
            }),
            introspection: a
                .introspection
                .as_ref()
                .map(crate::auth::introspect::Introspector::compile),
            strip: a
                .jwt
                .iter()
                .flat_map(|j| j.claims_to_headers.values())
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            consumers: a.consumers.clone(),
            groups: a.groups.clone(),
            scopes: a.scopes.clone(),
            client_certificate: a.client_certificate,
            claims: a.claims.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            challenge: HeaderValue::from_str(&challenges.join(", "))
                .unwrap_or_else(|_| HeaderValue::from_static("Basic")),
            hide,
        }
    }

    /// The query parameters that carry credentials (redacted in logs).
    pub fn query_credentials(&self) -> &[String] {
        &self.query_credentials
    }

    /// The `WWW-Authenticate` challenges for a 401 with `refusal`: the route's, with RFC
    /// 6750's `error="invalid_token"` and its description on the bearer challenge when a
    /// token was refused (none when the request carried no credentials, §3.1).
    pub fn challenge_for(&self, refusal: Refusal) -> HeaderValue {
        if !refusal.bearer() {
            return self.challenge.clone();
        }
        self.with_bearer_error(&format!(
            "error=\"invalid_token\", error_description=\"{}\"",
            refusal.description()
        ))
    }

    /// The challenge for a 403 of a bearer route whose token lacks a scope (RFC 6750
    /// §3.1: `insufficient_scope` with the scopes needed); `None` elsewhere.
    pub fn scope_challenge(&self) -> Option<HeaderValue> {
        let bearer = self.jwt.is_some() || self.introspection.is_some();
        (bearer && !self.scopes.is_empty()).then(|| {
            let scopes = self.scopes.join(" ").replace(['"', '\\'], "");
            self.with_bearer_error(&format!("error=\"insufficient_scope\", scope=\"{scopes}\""))
        })
    }

    fn with_bearer_error(&self, params: &str) -> HeaderValue {
        let text = self.challenge.to_str().unwrap_or_default();
        let with = text.replacen(
            BEARER_CHALLENGE,
            &format!("{BEARER_CHALLENGE}, {params}"),
            1,
        );
        HeaderValue::from_str(&with).unwrap_or_else(|_| self.challenge.clone())
    }

    /// Who the request is, if it may pass.
    pub async fn check(
        &self,
        ids: &Identities,
        verifier: &BasicVerifier,
        headers: &HeaderMap,
        query: Option<&str>,
        client_certificate: Option<&str>,
    ) -> Result<Authenticated, Denied> {
        let mut found: Vec<(&'static str, Found)> = Vec::with_capacity(5);
        let mut claims = None;
        if self.client_certificate {
            found.push((
                "client_certificate",
                match client_certificate {
                    Some(name) => Found::Passed(ids.named(name)),
                    None => Found::Absent,
                },
            ));
        }
        if self.key_header.is_some() || self.key_query.is_some() {
            let key = self
                .key_header
                .as_ref()
                .and_then(|h| headers.get(h))
                .map(|v| v.as_bytes().to_vec())
                .or_else(|| {
                    let q = self.key_query.as_deref()?;
                    query_param(query, q).map(|v| v.as_bytes().to_vec())
                });
            found.push((
                "api_key",
                match key {
                    None => Found::Absent,
                    Some(k) => ids
                        .by_key(&k)
                        .map_or(Found::Refused("unknown_key"), Found::Passed),
                },
            ));
        }
        if self.basic {
            found.push(("basic", self.basic_identity(ids, verifier, headers).await));
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .or_else(|| {
                // A token in the query only when no Authorization header says otherwise.
                if headers.contains_key(header::AUTHORIZATION) {
                    return None;
                }
                query_param(query, self.token_query.as_deref()?)
            });
        let mut introspected = None;
        if let Some(intro) = &self.introspection {
            let outcome = match (intro, bearer) {
                (_, None) => Found::Absent,
                (Err(_), Some(_)) => Found::Refused("unavailable"),
                (Ok(i), Some(t)) => match i.check(t).await {
                    Err(reason) => Found::Refused(reason),
                    Ok(c) => {
                        let name = ["sub", "username", "client_id"]
                            .iter()
                            .find_map(|k| c.get(*k)?.as_str())
                            .map(str::to_owned);
                        match name {
                            Some(name) => {
                                introspected = Some(c);
                                Found::Passed(ids.named(&name))
                            }
                            None => Found::Refused("missing_claim"),
                        }
                    }
                },
            };
            found.push(("introspection", outcome));
        }
        if let Some(jwt) = &self.jwt {
            let outcome = match (jwt, bearer) {
                (_, None) => Found::Absent,
                (Err(_), Some(_)) => Found::Refused("keys_unavailable"),
                (Ok(v), Some(t)) => match v.verify(t).await {
                    Err(reason) => Found::Refused(reason),
                    Ok(c) => match c.get(&v.consumer_claim).and_then(|n| n.as_str()) {
                        Some(name) => {
                            let id = ids.named(name);
                            claims = Some((v, c));
                            Found::Passed(id)
                        }
                        None => Found::Refused("missing_claim"),
                    },
                },
            };
            found.push(("jwt", outcome));
        }
        let who = self.decide(&found)?;
        let by_name = self.consumers.is_empty() || self.consumers.iter().any(|c| **c == *who.name);
        let by_group = self.groups.is_empty() || self.groups.iter().any(|g| who.groups.contains(g));
        let token_claims = claims.as_ref().map(|(_, c)| c).or(introspected.as_ref());
        let granted = token_claims
            .map(|c| crate::auth::jwt::scopes(c))
            .unwrap_or_default();
        let by_scope = self.scopes.iter().all(|s| granted.contains(&s.as_str()));
        let by_claims = self.claims.iter().all(|(name, allowed)| {
            token_claims
                .and_then(|c| c.get(name))
                .is_some_and(|v| claim_matches(v, allowed))
        });
        for (passed, rule) in [
            (by_name, "consumer"),
            (by_group, "group"),
            (by_scope, "scope"),
            (by_claims, "claims"),
        ] {
            if !passed {
                return Err(Denied::Forbidden(rule));
            }
        }
        Ok(Authenticated {
            identity: who,
            headers: claims.map(|(v, c)| v.headers(&c)).unwrap_or_default(),
        })
    }

    /// The consumer the methods' findings name together, or why there is none: with
    /// `require: any` the first that passed; with `require: all` every one, naming the
    /// same consumer. A refusal reported is the first method whose credential was refused
    /// (or missing, for `all`); a request with no credential at all is [`Refusal::NONE`].
    fn decide(&self, found: &[(&'static str, Found)]) -> Result<Arc<Identity>, Denied> {
        let refused = found.iter().find_map(|(method, f)| match f {
            Found::Refused(reason) => Some(Refusal { method, reason }),
            _ => None,
        });
        let denied = |r: Option<Refusal>| Denied::Unauthenticated(r.unwrap_or(Refusal::NONE));
        match self.combine {
            AuthCombine::Any => found
                .iter()
                .find_map(|(_, f)| match f {
                    Found::Passed(id) => Some(id.clone()),
                    _ => None,
                })
                .ok_or_else(|| denied(refused)),
            AuthCombine::All => {
                let mut first: Option<&Arc<Identity>> = None;
                for (method, f) in found {
                    match f {
                        Found::Passed(id) => match first {
                            Some(one) if one.name != id.name => {
                                return Err(Denied::Unauthenticated(Refusal {
                                    method: "all",
                                    reason: "different_consumers",
                                }));
                            }
                            Some(_) => {}
                            None => first = Some(id),
                        },
                        Found::Refused(reason) => {
                            return Err(Denied::Unauthenticated(Refusal { method, reason }));
                        }
                        Found::Absent => {
                            return Err(denied(refused.or(Some(Refusal {
                                method,
                                reason: "missing",
                            }))));
                        }
                    }
                }
                first.cloned().ok_or_else(|| denied(refused))
            }
        }
    }

    async fn basic_identity(
        &self,
        ids: &Identities,
        verifier: &BasicVerifier,
        headers: &HeaderMap,
    ) -> Found {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Found::Absent;
        };
        let Some((scheme, encoded)) = value.trim().split_once(' ') else {
            return Found::Absent;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return Found::Absent;
        }
        let Some((user, password)) = Base64::decode_vec(encoded.trim()).ok().and_then(|d| {
            let colon = d.iter().position(|&b| b == b':')?;
            let user = String::from_utf8(d[..colon].to_vec()).ok()?;
            Some((user, d[colon + 1..].to_vec()))
        }) else {
            return Found::Refused("malformed");
        };
        let Some((id, phc)) = ids.users.get(&user) else {
            return Found::Refused("unknown_user");
        };
        if verifier.verify(phc.clone(), password).await {
            Found::Passed(id.clone())
        } else {
            Found::Refused("wrong_password")
        }
    }
}

/// Whether a claim's value is one of `allowed` (for a list, whether it holds one).
fn claim_matches(v: &serde_json::Value, allowed: &[String]) -> bool {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match v {
        serde_json::Value::Array(items) => {
            items.iter().filter_map(text).any(|t| allowed.contains(&t))
        }
        other => text(other).is_some_and(|t| allowed.contains(&t)),
    }
}

/// A route's compiled `ip` rules.
pub struct IpAccess {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

fn nets(list: &[String]) -> Vec<IpNet> {
    list.iter()
        .filter_map(|s| {
            s.parse::<IpNet>()
                .ok()
                .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect()
}

impl IpAccess {
    /// Compiles validated config.
    pub fn compile(r: &IpRules) -> Self {
        IpAccess {
            allow: nets(&r.allow),
            deny: nets(&r.deny),
        }
    }

    /// Whether a client at `ip` may pass.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        !self.deny.iter().any(|n| n.contains(&ip))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip)))
    }
}

/// `query` without any parameter called `name` (by its raw or its percent-decoded name,
/// since an origin may decode names), or `None` when it has none.
pub fn without_param(query: &str, name: &str) -> Option<String> {
    let named = |pair: &str| {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        key == name || (key.contains('%') && decoded(key).as_deref() == Some(name))
    };
    if !query.split('&').any(named) {
        return None;
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !named(p)).collect();
    Some(kept.join("&"))
}

/// A percent-decoded query name (`None` if it is not valid UTF-8 or a `%` is broken).
fn decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `path` with the value of query parameter `name` replaced by `REDACTED`.
pub fn redact_query(path: &str, name: &str) -> String {
    let Some((p, q)) = path.split_once('?') else {
        return path.to_owned();
    };
    let parts: Vec<String> = q
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k == name => format!("{k}=REDACTED"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{p}?{}", parts.join("&"))
}

/// IP rules, among the guards.
pub(crate) const IP_POLICY: crate::policy::RoutePolicy = crate::policy::RoutePolicy {
    name: "ip",
    phase: crate::policy::Phase::Guards,
    describe: |r| {
        let Some(ip) = &r.ip else { return Vec::new() };
        let list = |l: &[String], empty: &str| {
            if l.is_empty() {
                empty.to_owned()
            } else {
                l.join(", ")
            }
        };
        vec![format!(
            "ip: allow {}; deny {}",
            list(&ip.allow, "all"),
            list(&ip.deny, "none")
        )]
    },
};

/// Authentication and authorization, among the guards.
pub(crate) const POLICY: crate::policy::RoutePolicy = crate::policy::RoutePolicy {
    name: "auth",
    phase: crate::policy::Phase::Guards,
    describe: |r| r.auth.as_ref().map(describe).into_iter().collect(),
};

/// The route's `auth`, in a line.
fn describe(a: &RouteAuth) -> String {
    let mut methods = Vec::new();
    if let Some(k) = &a.api_key {
        methods.push(match (&k.header, &k.query) {
            (Some(h), _) => format!("API key in {h}"),
            (None, Some(q)) => format!("API key in ?{q}"),
            (None, None) => "API key in x-api-key".into(),
        });
    }
    if a.basic.is_some() {
        methods.push("Basic".into());
    }
    if let Some(j) = &a.jwt {
        let mut from = Vec::new();
        if !j.keys.is_empty() {
            let algs: Vec<String> = j
                .keys
                .iter()
                .map(|k| format!("{:?}", k.algorithm))
                .collect();
            from.push(algs.join("/"));
        }
        if let Some(s) = &j.jwks {
            from.push(format!("JWKS {}", s.url));
        }
        methods.push(format!("JWT ({})", from.join(", ")));
    }
    let join = match a.require {
        AuthCombine::Any => " or ",
        AuthCombine::All => " and ",
    };
    let mut who = Vec::new();
    if !a.consumers.is_empty() {
        who.push(format!("consumers {}", a.consumers.join(", ")));
    }
    if !a.groups.is_empty() {
        who.push(format!("groups {}", a.groups.join(", ")));
    }
    if !a.scopes.is_empty() {
        who.push(format!("scopes {}", a.scopes.join(" ")));
    }
    format!(
        "auth: {}; allowed: {}",
        methods.join(join),
        if who.is_empty() {
            "any consumer".into()
        } else {
            who.join(" and ")
        }
    )
}

/// Authentication's metric family: refusals, by route, method and reason.
pub struct AuthMetrics {
    refusals: Family<AuthRefusal, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthRefusal {
    route: String,
    method: &'static str,
    reason: &'static str,
}

impl AuthMetrics {
    /// Registers the family.
    pub(crate) fn register(reg: &mut Registry) -> Self {
        let m = AuthMetrics {
            refusals: Family::default(),
        };
        reg.register(
            "auth_refusals",
            "Requests a route's auth refused, by method (api_key, basic, jwt, introspection, \
             client_certificate, none, or authorization for a 403) and reason",
            m.refusals.clone(),
        );
        m
    }

    /// Counts a request a route's auth refused.
    pub fn refused(&self, route: &str, method: &'static str, reason: &'static str) {
        self.refusals
            .get_or_create(&AuthRefusal {
                route: route.to_owned(),
                method,
                reason,
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_rules_deny_first_then_allow() {
        let r = IpAccess::compile(&IpRules {
            allow: vec!["10.0.0.0/8".into()],
            deny: vec!["10.0.0.13".into()],
        });
        assert!(r.permits("10.1.2.3".parse().unwrap()));
        assert!(!r.permits("10.0.0.13".parse().unwrap()));
        assert!(!r.permits("192.0.2.1".parse().unwrap()));
        assert!(r.permits("::ffff:10.1.2.3".parse().unwrap()), "IPv4-mapped");
    }

    #[test]
    fn claims_match_values_or_list_members() {
        let allowed = vec!["eu".to_string(), "1".to_string()];
        assert!(claim_matches(&serde_json::json!("eu"), &allowed));
        assert!(claim_matches(&serde_json::json!(["us", "eu"]), &allowed));
        assert!(claim_matches(&serde_json::json!(1), &allowed));
        assert!(!claim_matches(&serde_json::json!("us"), &allowed));
        assert!(!claim_matches(&serde_json::json!({"eu": true}), &allowed));
    }

    #[test]
    fn query_keys_are_redacted() {
        assert_eq!(
            redact_query("/a?x=1&key=s3cret&y", "key"),
            "/a?x=1&key=REDACTED&y"
        );
        assert_eq!(redact_query("/a", "key"), "/a");
    }

    #[test]
    fn consumed_query_keys_are_removed() {
        assert_eq!(
            without_param("a=1&key=s3cret&b=2&key=again", "key").as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(without_param("%6Bey=s3cret&b", "key").as_deref(), Some("b"));
        assert_eq!(without_param("key", "key").as_deref(), Some(""));
        assert_eq!(without_param("keys=1&akey=2", "key"), None);
        assert_eq!(without_param("%zz=1", "key"), None);
    }

    #[test]
    fn digests_compare() {
        let a = sha256(b"k");
        let mut b = a;
        assert!(same(&a, &b));
        b[31] ^= 1;
        assert!(!same(&a, &b));
        assert_eq!(hex_digest(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(hex_digest("zz"), None);
    }
}
