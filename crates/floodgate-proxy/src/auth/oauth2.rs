//! The built-in OAuth2 authorization server for machine-to-machine traffic: the
//! client-credentials grant (RFC 6749 §4.4) at `token_path`, issuing JWTs signed with
//! the configured ES256 or EdDSA key, and the public key as a JWKS at `jwks_path`, so
//! routes (`jwt.local_issuer`) and other services can check the tokens.
//!
//! Clients authenticate with HTTP Basic (`client_id:client_secret`, form-urlencoded as
//! §2.3.1 asks) or with `client_id` and `client_secret` in the body; secrets are argon2id
//! hashes, checked by the same bounded verifier as Basic authentication. Errors are the
//! JSON of §5.2. Responses are never cached (`Cache-Control: no-store`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64ct::{Base64, Base64UrlUnpadded, Encoding};
use bytes::Bytes;
use floodgate_config::auth::OAuth2;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use ring::signature::KeyPair;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use super::BasicVerifier;

/// The largest token request body read.
const MAX_FORM: usize = 16 * 1024;

struct Client {
    secret_hash: Arc<str>,
    scopes: Vec<String>,
}

/// The token endpoint and its key.
pub struct TokenIssuer {
    /// Tokens' `iss`.
    pub issuer: String,
    /// Tokens' `aud`.
    pub audience: String,
    lifetime: Duration,
    /// The token endpoint's path.
    pub token_path: String,
    /// The JWKS path.
    pub jwks_path: String,
    clients: std::collections::HashMap<String, Client>,
    alg: Algorithm,
    /// The key id in tokens and the JWKS.
    pub kid: String,
    encoding: EncodingKey,
    /// The public key, to check tokens on routes.
    pub decoding: DecodingKey,
    /// The signing algorithm.
    pub algorithm: Algorithm,
    jwks: Bytes,
}

impl TokenIssuer {
    /// Reads the key and builds the issuer.
    pub fn build(o: &OAuth2) -> Result<Self, String> {
        let file = &o.signing_key_file;
        let der = match PrivateKeyDer::from_pem_file(file) {
            Ok(PrivateKeyDer::Pkcs8(k)) => k.secret_pkcs8_der().to_vec(),
            Ok(_) => {
                return Err(format!(
                    "{file}: the key must be PKCS#8 (BEGIN PRIVATE KEY)"
                ));
            }
            Err(e) => return Err(format!("cannot read {file}: {e}")),
        };
        let rng = ring::rand::SystemRandom::new();
        let (alg, public, jwk) = if let Ok(pair) = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &der,
            &rng,
        ) {
            // Uncompressed point: 0x04, x, y.
            let point = pair.public_key().as_ref().to_vec();
            let (x, y) = point.get(1..).ok_or("bad P-256 point")?.split_at(32);
            let jwk = serde_json::json!({
                "kty": "EC", "crv": "P-256",
                "x": Base64UrlUnpadded::encode_string(x),
                "y": Base64UrlUnpadded::encode_string(y),
            });
            (Algorithm::ES256, point, jwk)
        } else if let Ok(pair) = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der) {
            let public = pair.public_key().as_ref().to_vec();
            let jwk = serde_json::json!({
                "kty": "OKP", "crv": "Ed25519",
                "x": Base64UrlUnpadded::encode_string(&public),
            });
            (Algorithm::EdDSA, public, jwk)
        } else {
            return Err(format!("{file}: not a P-256 or Ed25519 key"));
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, &public);
        let kid = Base64UrlUnpadded::encode_string(&digest.as_ref()[..12]);
        let (encoding, decoding) = match alg {
            Algorithm::ES256 => (
                EncodingKey::from_ec_der(&der),
                DecodingKey::from_ec_components(
                    jwk["x"].as_str().unwrap_or_default(),
                    jwk["y"].as_str().unwrap_or_default(),
                )
                .map_err(|e| e.to_string())?,
            ),
            _ => (
                EncodingKey::from_ed_der(&der),
                DecodingKey::from_ed_der(&public),
            ),
        };
        let mut jwk = jwk;
        jwk["kid"] = kid.clone().into();
        jwk["alg"] = if alg == Algorithm::ES256 {
            "ES256"
        } else {
            "EdDSA"
        }
        .into();
        jwk["use"] = "sig".into();
        let jwks = Bytes::from(serde_json::json!({ "keys": [jwk] }).to_string());
        Ok(TokenIssuer {
            audience: o.audience.clone().unwrap_or_else(|| o.issuer.clone()),
            issuer: o.issuer.clone(),
            lifetime: o.token_lifetime.0,
            token_path: o.token_path.clone(),
            jwks_path: o.jwks_path.clone(),
            clients: o
                .clients
                .iter()
                .map(|c| {
                    (
                        c.id.clone(),
                        Client {
                            secret_hash: Arc::from(c.secret_hash.as_str()),
                            scopes: c.scopes.clone(),
                        },
                    )
                })
                .collect(),
            alg,
            algorithm: alg,
            kid,
            encoding,
            decoding,
            jwks,
        })
    }

    /// The JWKS response.
    pub fn jwks_response(&self) -> Response<Bytes> {
        let mut r = Response::new(self.jwks.clone());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        r
    }

    /// Answers a token request.
    pub async fn token(
        &self,
        req: Request<crate::client_body::ClientBody>,
        verifier: &BasicVerifier,
    ) -> Response<Bytes> {
        if req.method() != Method::POST {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                "use POST",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
        let basic = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(basic_credentials);
        let form_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().starts_with("application/x-www-form-urlencoded"));
        if !form_type {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be application/x-www-form-urlencoded",
            );
        }
        let Ok(body) = http_body_util::Limited::new(req.into_body(), MAX_FORM)
            .collect()
            .await
            .map(|b| b.to_bytes())
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "unreadable body",
            );
        };
        let form = parse_form(&body);
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        match field("grant_type") {
            Some("client_credentials") => {}
            Some(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    "only client_credentials is supported",
                );
            }
            None => return error(StatusCode::BAD_REQUEST, "invalid_request", "no grant_type"),
        }
        let (id, secret) = match (basic, field("client_id"), field("client_secret")) {
            (Some(pair), _, _) => pair,
            (None, Some(id), Some(secret)) => (id.to_owned(), secret.to_owned()),
            _ => return invalid_client(),
        };
        let Some(client) = self.clients.get(&id) else {
            return invalid_client();
        };
        if !verifier
            .verify(client.secret_hash.clone(), secret.into_bytes())
            .await
        {
            return invalid_client();
        }
        let scopes: Vec<String> = match field("scope") {
            None => client.scopes.clone(),
            Some(asked) => {
                let asked: Vec<String> = asked
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                if asked.iter().any(|s| !client.scopes.contains(s)) {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        "a scope asked for is not granted to this client",
                    );
                }
                asked
            }
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = serde_json::json!({
            "iss": self.issuer,
            "sub": id,
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime.as_secs(),
            "jti": format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
            "scope": scopes.join(" "),
            "client_id": id,
        });
        let mut head = Header::new(self.alg);
        head.kid = Some(self.kid.clone());
        head.typ = Some("at+jwt".into());
        let Ok(token) = jsonwebtoken::encode(&head, &claims, &self.encoding) else {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "signing failed",
            );
        };
        let body = serde_json::json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.lifetime.as_secs(),
            "scope": scopes.join(" "),
        });
        json_response(StatusCode::OK, body.to_string())
    }
}

/// A new P-256 signing key as PKCS#8 PEM (for the demo, and for trying the endpoint out).
pub fn generate_p256_pem() -> Result<String, String> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .map_err(|_| "key generation failed".to_owned())?;
    let b64 = Base64::encode_string(pkcs8.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
}

fn json_response(status: StatusCode, body: String) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// An RFC 6749 §5.2 error.
fn error(status: StatusCode, code: &str, description: &str) -> Response<Bytes> {
    json_response(
        status,
        serde_json::json!({ "error": code, "error_description": description }).to_string(),
    )
}

fn invalid_client() -> Response<Bytes> {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "client authentication failed",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"oauth2\""),
    );
    r
}

/// `Basic base64(urlencoded id : urlencoded secret)` (RFC 6749 §2.3.1).
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = Base64::decode_vec(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((url_decode(id)?, url_decode(secret)?))
}

/// `application/x-www-form-urlencoded` pairs.
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Vec::new();
    };
    text.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((url_decode(k)?, url_decode(v)?))
        })
        .collect()
}

/// Percent-decoding with `+` as space. (Form decoding is a dozen lines; a crate for it
/// would be one more dependency.)
fn url_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_basic_credentials_decode() {
        assert_eq!(
            parse_form(b"grant_type=client_credentials&scope=read+write&x=%2F%3A"),
            vec![
                ("grant_type".into(), "client_credentials".into()),
                ("scope".into(), "read write".into()),
                ("x".into(), "/:".into()),
            ]
        );
        assert_eq!(url_decode("%zz"), None);
        let v = format!("Basic {}", Base64::encode_string(b"my%3Aid:s%20ecret"));
        assert_eq!(
            basic_credentials(&v),
            Some(("my:id".into(), "s ecret".into()))
        );
    }
}
