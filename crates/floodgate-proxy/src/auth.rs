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
//! - JWTs are checked by [`crate::jwt`]; the token's claim (`sub` by default) names the
//!   consumer, and a configured consumer of that name lends its groups.
//! - No credential is ever logged: the access log shows the consumer's name, and an API
//!   key passed in the query string is redacted from the logged path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64ct::{Base64, Encoding};
use floodgate_config::auth::{AuthCombine, Consumer, IpRules, RouteAuth};
use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};
use ipnet::IpNet;
use std::sync::Mutex;
use tokio::sync::Semaphore;

use crate::router::query_param;

/// A consumer as routes see it.
#[derive(Debug)]
pub struct Identity {
    /// Its name.
    pub name: Arc<str>,
    /// Its groups.
    pub groups: Vec<String>,
}

type Digest = [u8; 32];

fn sha256(bytes: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Compares two digests in time independent of where they differ. (Written here: the
/// comparison is four lines, where a crate for it would be one more dependency.)
fn same(a: &Digest, b: &Digest) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

/// Verifies Basic passwords off the async workers, a bounded number at once, remembering
/// successes briefly.
pub struct BasicVerifier {
    permits: Semaphore,
    /// Digest of (password hash, password) → when the success expires.
    remembered: Mutex<HashMap<Digest, Instant>>,
    ttl: Duration,
    most: usize,
}

impl Default for BasicVerifier {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        BasicVerifier {
            permits: Semaphore::new(cores.max(2)),
            remembered: Mutex::new(HashMap::new()),
            ttl: Duration::from_secs(60),
            most: 10_000,
        }
    }
}

impl BasicVerifier {
    /// Whether `password` matches the argon2id PHC string `phc`.
    pub async fn verify(&self, phc: Arc<str>, password: Vec<u8>) -> bool {
        let mut material = Vec::with_capacity(phc.len() + 1 + password.len());
        material.extend_from_slice(phc.as_bytes());
        material.push(0);
        material.extend_from_slice(&password);
        let key = sha256(&material);
        let now = Instant::now();
        if self
            .remembered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .is_some_and(|until| now < *until)
        {
            return true;
        }
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&phc)
                .is_ok_and(|h| Argon2::default().verify_password(&password, &h).is_ok())
        })
        .await
        .unwrap_or(false);
        if ok {
            let mut m = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
            if m.len() >= self.most {
                m.retain(|_, until| now < *until);
                if m.len() >= self.most {
                    m.clear();
                }
            }
            m.insert(key, now + self.ttl);
        }
        ok
    }
}

/// Why a request may not pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No valid credentials (401).
    Unauthenticated,
    /// Valid credentials, but not for this route (403).
    Forbidden,
}

/// Who passed, and what to tell the upstream about it.
pub struct Authenticated {
    /// The consumer.
    pub identity: Arc<Identity>,
    /// Headers from token claims (`claims_to_headers`), for the upstream request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A route's compiled `auth`.
pub struct RouteAccess {
    combine: AuthCombine,
    key_header: Option<HeaderName>,
    key_query: Option<String>,
    basic: bool,
    /// JWT validation; an error (a key that could not be read) refuses every token.
    jwt: Option<Result<crate::jwt::JwtVerifier, String>>,
    /// Token introspection; an error (a bad URL) refuses every token.
    introspection: Option<Result<crate::introspect::Introspector, String>>,
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
    /// The query parameter removed before proxying (the API key), if `hide_credentials`.
    pub hide_query: Option<String>,
}

impl RouteAccess {
    /// Compiles validated config; `local` is the built-in token endpoint, if any.
    pub fn compile(a: &RouteAuth, local: Option<&crate::oauth2::TokenIssuer>) -> Self {
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
            challenges.push("Bearer realm=\"floodgate\"".to_owned());
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
        RouteAccess {
            hide_query: a
                .api_key
                .as_ref()
                .and_then(|k| k.query.clone())
                .filter(|_| a.hide_credentials),
            combine: a.require,
            key_query: a.api_key.as_ref().and_then(|k| k.query.clone()),
            key_header,
            basic: a.basic.is_some(),
            jwt: a.jwt.as_ref().map(|j| {
                crate::jwt::JwtVerifier::compile(j, local).inspect_err(|e| {
                    tracing::error!(error = %e, "JWT keys unusable: this route refuses every token");
                })
            }),
            introspection: a
                .introspection
                .as_ref()
                .map(crate::introspect::Introspector::compile),
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

    /// The query parameter that carries the API key (redacted in logs), if any.
    pub fn key_query(&self) -> Option<&str> {
        self.key_query.as_deref()
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
        let mut found: Vec<Option<Arc<Identity>>> = Vec::with_capacity(5);
        let mut claims = None;
        if self.client_certificate {
            found.push(client_certificate.map(|name| ids.named(name)));
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
            found.push(key.and_then(|k| ids.by_key(&k)));
        }
        if self.basic {
            found.push(self.basic_identity(ids, verifier, headers).await);
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        let mut introspected = None;
        if let Some(intro) = &self.introspection {
            let active = match (intro, bearer) {
                (Ok(i), Some(t)) => i.check(t).await,
                _ => None,
            };
            found.push(active.and_then(|c| {
                let name = ["sub", "username", "client_id"]
                    .iter()
                    .find_map(|k| c.get(*k)?.as_str())?
                    .to_owned();
                introspected = Some(c);
                Some(ids.named(&name))
            }));
        }
        if let Some(jwt) = &self.jwt {
            let token = bearer;
            let verified = match (jwt, token) {
                (Ok(v), Some(t)) => v.verify(t).await.map(|c| (v, c)),
                _ => None,
            };
            found.push(verified.and_then(|(v, c)| {
                let name = c.get(&v.consumer_claim)?.as_str()?.to_owned();
                claims = Some((v, c));
                Some(ids.named(&name))
            }));
        }
        let who = match self.combine {
            AuthCombine::Any => found.into_iter().flatten().next(),
            AuthCombine::All => {
                let all: Option<Vec<Arc<Identity>>> = found.into_iter().collect();
                all.and_then(|ids| {
                    let first = ids.first()?.clone();
                    ids.iter().all(|i| i.name == first.name).then_some(first)
                })
            }
        };
        let who = who.ok_or(Denied::Unauthenticated)?;
        let by_name = self.consumers.is_empty() || self.consumers.iter().any(|c| **c == *who.name);
        let by_group = self.groups.is_empty() || self.groups.iter().any(|g| who.groups.contains(g));
        let token_claims = claims.as_ref().map(|(_, c)| c).or(introspected.as_ref());
        let granted = token_claims
            .map(|c| crate::jwt::scopes(c))
            .unwrap_or_default();
        let by_scope = self.scopes.iter().all(|s| granted.contains(&s.as_str()));
        let by_claims = self.claims.iter().all(|(name, allowed)| {
            token_claims
                .and_then(|c| c.get(name))
                .is_some_and(|v| claim_matches(v, allowed))
        });
        if !(by_name && by_group && by_scope && by_claims) {
            return Err(Denied::Forbidden);
        }
        Ok(Authenticated {
            identity: who,
            headers: claims.map(|(v, c)| v.headers(&c)).unwrap_or_default(),
        })
    }

    async fn basic_identity(
        &self,
        ids: &Identities,
        verifier: &BasicVerifier,
        headers: &HeaderMap,
    ) -> Option<Arc<Identity>> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, encoded) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = Base64::decode_vec(encoded.trim()).ok()?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        let user = std::str::from_utf8(&decoded[..colon]).ok()?;
        let (id, phc) = ids.users.get(user)?;
        verifier
            .verify(phc.clone(), decoded[colon + 1..].to_vec())
            .await
            .then(|| id.clone())
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
