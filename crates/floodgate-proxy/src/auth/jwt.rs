//! JWT validation for routes (RFC 7519), with the `jsonwebtoken` crate for signatures.
//!
//! The algorithm is fixed by the key, never taken from the token: every key (configured
//! or from a JWKS) carries the one algorithm it accepts, and a token is only checked
//! against keys whose algorithm equals its header's. So `alg: none` (not an algorithm the
//! crate parses), an HS256 token "signed" with an RSA public key, and tokens for any
//! algorithm a key does not name are all refused.
//!
//! A verified token is remembered for [`CACHE_FOR`], so a client that
//! sends the same token on every request pays for one signature check a minute; its
//! times are still checked on every request, and a token a JWKS key verified is
//! remembered only while that key is still in the set.
//!
//! JWKS keys are fetched on first use, again once `refresh` has passed (checked on every
//! request, fetched in the background, the old keys serving meanwhile), and when a token
//! names an unknown key id, at most once per `min_refetch`, so made-up ids cannot be used
//! to hammer the JWKS server. A key removed from the set is honoured until the next fetch
//! has completed: at most `refresh` after the previous one, plus the fetch.
//!
//! A token whose header has `crit` is refused: it names extensions (RFC 7515 §4.1.11)
//! that must be understood, and this verifier understands none.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use floodgate_config::auth::{JwtAlgorithm, JwtAuth};
use http::Uri;
use http::header::{HeaderName, HeaderValue};
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// How long a verified token is trusted without checking its signature again (its `exp`
/// and `nbf` are still checked on every request). A key removed from the JWKS stops
/// being honoured within this time.
pub const CACHE_FOR: Duration = Duration::from_secs(60);

/// Verified tokens remembered at most, per route.
const CACHE_MAX: usize = 10_000;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The largest JWKS document read.
const JWKS_MAX_BYTES: usize = 1 << 20;

/// A token's claims.
pub type Claims = serde_json::Map<String, serde_json::Value>;

/// Tokens verified lately: token → its claims, when it was verified, and the JWKS key
/// that verified it (`None` for a configured key, which cannot leave).
type VerifiedTokens =
    std::collections::HashMap<Box<str>, (Arc<Claims>, Instant, Option<Fingerprint>)>;

/// A digest of a JWKS entry, to tell whether the key is still in the set.
type Fingerprint = [u8; 32];

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
    /// For JWKS keys: the digest of the entry's JSON.
    fingerprint: Option<Fingerprint>,
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

fn jwk_algorithm(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// A configured key as a decoding key.
fn configured_key(k: &floodgate_config::auth::JwtKey) -> Result<Key, String> {
    let alg = algorithm(k.algorithm);
    let key = match (&k.secret, &k.public_key_file) {
        (Some(secret), _) => DecodingKey::from_secret(secret.as_bytes()),
        (None, Some(file)) => {
            let pem = std::fs::read(file).map_err(|e| format!("cannot read {file}: {e}"))?;
            match alg {
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
                Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
                _ => DecodingKey::from_rsa_pem(&pem),
            }
            .map_err(|e| format!("{file}: {e}"))?
        }
        (None, None) => return Err("a key needs `secret` or `public_key_file`".into()),
    };
    Ok(Key {
        kid: k.kid.clone(),
        alg,
        key,
        fingerprint: None,
    })
}

/// Keys from a JWK set document; keys without a usable algorithm are skipped.
fn jwks_keys(doc: &[u8], default_alg: Option<Algorithm>) -> Result<Vec<Key>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(doc).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
    let list = v
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or("the JWKS has no `keys` list")?;
    let mut keys = Vec::new();
    for item in list {
        let Ok(jwk) = serde_json::from_value::<Jwk>(item.clone()) else {
            continue;
        };
        let Some(alg) = jwk
            .common
            .key_algorithm
            .and_then(jwk_algorithm)
            .or(default_alg)
        else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, item.to_string().as_bytes());
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(digest.as_ref());
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
            fingerprint: Some(fingerprint),
        });
    }
    Ok(keys)
}

/// Where JWKS keys come from, and the keys last fetched.
struct JwksSource {
    url: Uri,
    refresh: Duration,
    min_refetch: Duration,
    default_alg: Option<Algorithm>,
    tls: Option<floodgate_config::model::UpstreamTls>,
    keys: ArcSwap<Vec<Key>>,
    fetched: Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
}

impl JwksSource {
    async fn fetch(&self) -> Result<Vec<Key>, String> {
        let req = http::Request::get(self.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(bytes::Bytes::new())
            .map_err(|e| e.to_string())?;
        let (status, body) = crate::fetch::send(req, self.tls.as_ref(), JWKS_MAX_BYTES).await?;
        if !status.is_success() {
            return Err(format!("status {status}"));
        }
        jwks_keys(&body, self.default_alg)
    }

    /// Fetches now (one fetch at a time), keeping the old keys on failure.
    async fn update(&self) {
        let _one = self.fetching.lock().await;
        match self.fetch().await {
            Ok(keys) => {
                tracing::debug!(url = %self.url, keys = keys.len(), "JWKS fetched");
                self.keys.store(Arc::new(keys));
            }
            Err(e) => tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed"),
        }
        *self.fetched.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    fn fetched_within(&self, d: Duration) -> bool {
        self.fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < d)
    }
}

/// A route's JWT validation.
pub struct JwtVerifier {
    fixed: Vec<Key>,
    jwks: Option<Arc<JwksSource>>,
    issuer: Option<String>,
    audience: Vec<String>,
    leeway: u64,
    required: Vec<String>,
    /// The claim naming the consumer.
    pub consumer_claim: String,
    /// Claims forwarded as headers.
    pub to_headers: Vec<(String, HeaderName)>,
    /// Tokens verified lately → their claims and when they were verified. Keyed by the
    /// whole token (std's SipHash with a per-process key: not steerable into collisions).
    cache: Mutex<VerifiedTokens>,
}

impl JwtVerifier {
    /// Compiles validated config (reads key files); `local` is the built-in token
    /// endpoint, for `local_issuer`.
    pub fn compile(
        j: &JwtAuth,
        local: Option<&crate::auth::oauth2::TokenIssuer>,
    ) -> Result<Self, String> {
        let mut fixed = j
            .keys
            .iter()
            .map(configured_key)
            .collect::<Result<Vec<_>, _>>()?;
        let local = if j.local_issuer {
            let issuer = local.ok_or("`local_issuer` needs the `oauth2` section")?;
            fixed.push(Key {
                kid: Some(issuer.kid.clone()),
                alg: issuer.algorithm,
                key: issuer.decoding.clone(),
                fingerprint: None,
            });
            Some(issuer)
        } else {
            None
        };
        let jwks = match &j.jwks {
            None => None,
            Some(s) => Some(Arc::new(JwksSource {
                url: s
                    .url
                    .parse()
                    .map_err(|_| format!("bad JWKS URL {:?}", s.url))?,
                refresh: s.refresh.0,
                min_refetch: s.min_refetch.0,
                default_alg: s.algorithm.map(algorithm),
                tls: s
                    .ca_file
                    .as_ref()
                    .map(|ca| floodgate_config::model::UpstreamTls {
                        ca_file: Some(ca.clone()),
                        server_name: None,
                        client_cert: None,
                        client_key: None,
                    }),
                keys: ArcSwap::from_pointee(Vec::new()),
                fetched: Mutex::new(None),
                fetching: tokio::sync::Mutex::new(()),
            })),
        };
        Ok(JwtVerifier {
            fixed,
            jwks,
            issuer: j.issuer.clone().or_else(|| local.map(|l| l.issuer.clone())),
            audience: if j.audience.is_empty() {
                local.map(|l| vec![l.audience.clone()]).unwrap_or_default()
            } else {
                j.audience.clone()
            },
            leeway: j.leeway.0.as_secs(),
            required: j.required_claims.clone(),
            consumer_claim: j.consumer_claim.clone(),
            to_headers: j
                .claims_to_headers
                .iter()
                .filter_map(|(c, h)| Some((c.clone(), HeaderName::from_bytes(h.as_bytes()).ok()?)))
                .collect(),
            cache: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// The token's claims if it is valid now, or why not (a [`crate::auth::Refusal`]
    /// reason). A token verified in the last [`CACHE_FOR`] is not checked again, only its
    /// times.
    pub async fn verify(&self, token: &str) -> Result<Arc<Claims>, &'static str> {
        if let Some(src) = &self.jwks
            && !src.keys.load().is_empty()
            && !src.fetched_within(src.refresh)
        {
            let src = src.clone();
            tokio::spawn(async move { src.update().await });
        }
        if let Some(claims) = self.cached(token) {
            return Ok(claims);
        }
        let (claims, fingerprint) = self.verify_fresh(token).await?;
        let claims = Arc::new(claims);
        self.remember(token, &claims, fingerprint);
        Ok(claims)
    }

    fn cached(&self, token: &str) -> Option<Arc<Claims>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let (claims, at, fingerprint) = cache.get(token)?;
        if at.elapsed() >= CACHE_FOR {
            return None;
        }
        // A key the JWKS no longer lists verifies nothing, remembered or not.
        if let Some(fp) = fingerprint {
            let listed = self
                .jwks
                .as_ref()
                .is_some_and(|s| s.keys.load().iter().any(|k| k.fingerprint == Some(*fp)));
            if !listed {
                cache.remove(token);
                return None;
            }
        }
        let now = unix_now();
        let time = |name: &str| claims.get(name).and_then(serde_json::Value::as_u64);
        let live = time("exp").is_some_and(|exp| now < exp.saturating_add(self.leeway))
            && time("nbf").is_none_or(|nbf| nbf <= now.saturating_add(self.leeway));
        live.then(|| claims.clone())
    }

    fn remember(&self, token: &str, claims: &Arc<Claims>, fingerprint: Option<Fingerprint>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, at, _)| at.elapsed() < CACHE_FOR);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(
            Box::from(token),
            (claims.clone(), Instant::now(), fingerprint),
        );
    }

    /// The claims of a token checked now, and the JWKS key that verified it; or why not.
    async fn verify_fresh(
        &self,
        token: &str,
    ) -> Result<(Claims, Option<Fingerprint>), &'static str> {
        if has_critical_extensions(token) {
            return Err("unsupported_extension");
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed")?;
        if let Some(src) = &self.jwks
            && src.keys.load().is_empty()
            && !src.fetched_within(src.min_refetch)
        {
            src.update().await;
        }
        let first = match self.try_keys(token, &header) {
            Ok(found) => return Ok(found),
            Err(reason) => reason,
        };
        // A key id not seen yet: the issuer may have rotated its keys.
        let (Some(src), Some(kid)) = (self.jwks.as_ref(), header.kid.as_deref()) else {
            return Err(first);
        };
        let known = self
            .fixed
            .iter()
            .chain(src.keys.load().iter())
            .any(|k| k.kid.as_deref() == Some(kid));
        if known || src.fetched_within(src.min_refetch) {
            return Err(first);
        }
        src.update().await;
        self.try_keys(token, &header)
    }

    fn try_keys(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
    ) -> Result<(Claims, Option<Fingerprint>), &'static str> {
        let jwks = self.jwks.as_ref().map(|s| s.keys.load_full());
        let all: Vec<&Key> = self
            .fixed
            .iter()
            .chain(jwks.iter().flat_map(|k| k.iter()))
            .collect();
        // A token naming a key id is checked with that key; failing such a key (or
        // naming none), with the keys that have no id.
        let named: Vec<&Key> = all
            .iter()
            .copied()
            .filter(|k| header.kid.is_some() && k.kid == header.kid)
            .collect();
        if all.is_empty() {
            return Err("keys_unavailable");
        }
        let candidates: Vec<&Key> = if named.is_empty() {
            all.into_iter()
                .filter(|k| header.kid.is_none() || k.kid.is_none())
                .collect()
        } else {
            named
        };
        if candidates.is_empty() {
            return Err("unknown_key");
        }
        // The key's algorithm decides, never the token's.
        let mut reason = "algorithm_not_accepted";
        for k in candidates.into_iter().filter(|k| k.alg == header.alg) {
            match self.check(token, k) {
                Ok(claims) => return Ok((claims, k.fingerprint)),
                // A key whose signature matched says more than one whose did not.
                Err(r) if reason == "algorithm_not_accepted" || reason == "bad_signature" => {
                    reason = r;
                }
                Err(_) => {}
            }
        }
        Err(reason)
    }

    fn check(&self, token: &str, key: &Key) -> Result<Claims, &'static str> {
        let mut v = Validation::new(key.alg);
        v.leeway = self.leeway;
        v.validate_nbf = true;
        let mut spec = vec!["exp"];
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            spec.push("iss");
        }
        if self.audience.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&self.audience);
            spec.push("aud");
        }
        v.set_required_spec_claims(&spec);
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => "bad_signature",
                ErrorKind::ExpiredSignature => "expired",
                ErrorKind::ImmatureSignature => "not_yet_valid",
                ErrorKind::InvalidIssuer => "wrong_issuer",
                ErrorKind::InvalidAudience => "wrong_audience",
                ErrorKind::MissingRequiredClaim(_) => "missing_claim",
                ErrorKind::InvalidAlgorithm => "algorithm_not_accepted",
                _ => "malformed",
            }
        })?;
        let claims = data.claims;
        if self.required.iter().all(|c| claims.contains_key(c)) {
            Ok(claims)
        } else {
            Err("missing_claim")
        }
    }

    /// The headers to send upstream for `claims` (strings as they are, other values as
    /// JSON).
    pub fn headers(&self, claims: &Claims) -> Vec<(HeaderName, HeaderValue)> {
        self.to_headers
            .iter()
            .filter_map(|(claim, name)| {
                let v = claims.get(claim)?;
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Some((name.clone(), HeaderValue::from_str(&text).ok()?))
            })
            .collect()
    }
}

/// Whether the token's header names critical extensions (`crit`, RFC 7515 §4.1.11), none
/// of which this verifier implements; an unreadable header is left to the decoder.
fn has_critical_extensions(token: &str) -> bool {
    use base64ct::{Base64UrlUnpadded, Encoding};
    let Some(head) = token.split('.').next() else {
        return false;
    };
    Base64UrlUnpadded::decode_vec(head)
        .ok()
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
        .is_some_and(|h| h.get("crit").is_some())
}

/// The scopes a token grants: `scope` (space-separated) or `scp` (a list).
pub fn scopes(claims: &Claims) -> Vec<&str> {
    match (claims.get("scope"), claims.get("scp")) {
        (Some(serde_json::Value::String(s)), _) => s.split(' ').filter(|s| !s.is_empty()).collect(),
        (_, Some(serde_json::Value::Array(list))) => {
            list.iter().filter_map(|v| v.as_str()).collect()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7515 appendix A.1: the HS256 example, its key given as a JWK. Its `exp` (2011) is
    /// long past, so only the signature is checked here.
    #[test]
    fn rfc7515_a1_hs256_example_verifies() {
        let jwk = r#"{"keys":[{"kty":"oct","alg":"HS256","kid":"a1",
            "k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}]}"#;
        let keys = jwks_keys(jwk.as_bytes(), None).unwrap();
        assert_eq!(keys.len(), 1);
        let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9\
            .eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ\
            .dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false;
        v.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Claims>(token, &keys[0].key, &v).unwrap();
        assert_eq!(data.claims["iss"], "joe");
        assert_eq!(data.claims["http://example.com/is_root"], true);
        // One changed signature byte fails.
        let bad = token.replace("dBjftJeZ4CVP", "dBjftJeZ4CVQ");
        assert!(jsonwebtoken::decode::<Claims>(&bad, &keys[0].key, &v).is_err());
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let v = JwtVerifier::compile(
            &serde_json::from_value(serde_json::json!({
                "keys": [{ "algorithm": "HS256", "secret": "a-shared-secret-of-at-least-32-bytes!" }],
                "leeway": "1s",
            }))
            .unwrap(),
            None,
        )
        .unwrap();
        let now = unix_now();
        let live: Claims = serde_json::from_value(serde_json::json!({ "exp": now + 100 })).unwrap();
        let dead: Claims = serde_json::from_value(serde_json::json!({ "exp": now - 5 })).unwrap();
        let early: Claims =
            serde_json::from_value(serde_json::json!({ "exp": now + 100, "nbf": now + 50 }))
                .unwrap();
        for (t, c) in [("live", live), ("dead", dead), ("early", early)] {
            v.remember(t, &Arc::new(c), None);
        }
        assert!(v.cached("live").is_some());
        assert!(v.cached("dead").is_none(), "expired since it was verified");
        assert!(v.cached("early").is_none(), "not valid yet");
        assert!(v.cached("other").is_none());
    }

    #[test]
    fn critical_extensions_are_seen() {
        use base64ct::{Base64UrlUnpadded, Encoding};
        let token = |header: &str| {
            format!(
                "{}.e30.sig",
                Base64UrlUnpadded::encode_string(header.as_bytes())
            )
        };
        assert!(has_critical_extensions(&token(
            r#"{"alg":"ES256","crit":["b64"],"b64":false}"#
        )));
        assert!(has_critical_extensions(&token(
            r#"{"alg":"ES256","crit":[]}"#
        )));
        assert!(!has_critical_extensions(&token(
            r#"{"alg":"ES256","kid":"k"}"#
        )));
        assert!(!has_critical_extensions("not a token"));
    }

    #[test]
    fn scopes_from_either_claim() {
        let c: Claims = serde_json::from_str(r#"{"scope":"read write"}"#).unwrap();
        assert_eq!(scopes(&c), ["read", "write"]);
        let c: Claims = serde_json::from_str(r#"{"scp":["admin"]}"#).unwrap();
        assert_eq!(scopes(&c), ["admin"]);
    }
}
