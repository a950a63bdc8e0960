//! Opaque bearer tokens checked by OAuth2 token introspection (RFC 7662): the token is
//! POSTed to the authorization server's endpoint, the gateway authenticating with HTTP
//! Basic; `active: false` (or any failure) refuses it. An active answer is remembered for
//! `cache_for`, never past the token's `exp`; refusals are not remembered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64ct::{Base64, Encoding};
use bytes::Bytes;
use floodgate_config::auth::Introspection;
use floodgate_config::model::UpstreamTls;
use http::{HeaderValue, Request, Uri, header};

use crate::auth::jwt::Claims;

/// Active tokens remembered at most, per route.
const CACHE_MAX: usize = 10_000;

/// The largest introspection answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// Active tokens lately: token → claims, until when.
type Remembered = HashMap<Box<str>, (Arc<Claims>, Instant)>;

/// A route's introspection client.
pub struct Introspector {
    url: Uri,
    authorization: HeaderValue,
    tls: Option<UpstreamTls>,
    cache_for: Duration,
    remembered: Mutex<Remembered>,
}

/// `application/x-www-form-urlencoded` escaping of one value.
fn form_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Introspector {
    /// Builds the client from validated config.
    pub fn compile(c: &Introspection) -> Result<Self, String> {
        // RFC 6749 §2.3.1: the id and secret are form-encoded before Basic.
        let credentials = format!(
            "{}:{}",
            form_escape(&c.client_id),
            form_escape(&c.client_secret)
        );
        Ok(Introspector {
            url: c.url.parse().map_err(|_| format!("bad URL {:?}", c.url))?,
            authorization: HeaderValue::from_str(&format!(
                "Basic {}",
                Base64::encode_string(credentials.as_bytes())
            ))
            .map_err(|e| e.to_string())?,
            tls: c.ca_file.as_ref().map(|ca| UpstreamTls {
                ca_file: Some(ca.clone()),
                server_name: None,
                client_cert: None,
                client_key: None,
            }),
            cache_for: c.cache_for.0,
            remembered: Mutex::new(HashMap::new()),
        })
    }

    /// The token's claims if the authorization server says it is active, or why not
    /// (`inactive`, or `unavailable` when the server could not be asked or answered
    /// nonsense).
    pub async fn check(&self, token: &str) -> Result<Arc<Claims>, &'static str> {
        let now = Instant::now();
        if let Some((claims, until)) = self
            .remembered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            && now < *until
        {
            return Ok(claims.clone());
        }
        let req = Request::post(self.url.clone())
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Bytes::from(format!(
                "token={}&token_type_hint=access_token",
                form_escape(token)
            )))
            .map_err(|_| "unavailable")?;
        let (status, body) = match crate::fetch::send(req, self.tls.as_ref(), MAX_ANSWER).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "token introspection failed");
                return Err("unavailable");
            }
        };
        if !status.is_success() {
            tracing::warn!(url = %self.url, %status, "token introspection refused the gateway");
            return Err("unavailable");
        }
        let claims: Claims = serde_json::from_slice(&body).map_err(|_| "unavailable")?;
        if claims.get("active") != Some(&serde_json::Value::Bool(true)) {
            return Err("inactive");
        }
        let mut until = now + self.cache_for;
        if let Some(exp) = claims.get("exp").and_then(serde_json::Value::as_u64) {
            let unix = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            if exp <= unix {
                return Err("expired");
            }
            until = until.min(now + Duration::from_secs(exp - unix));
        }
        let claims = Arc::new(claims);
        let mut m = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= CACHE_MAX {
            m.retain(|_, (_, u)| now < *u);
            if m.len() >= CACHE_MAX {
                m.clear();
            }
        }
        m.insert(Box::from(token), (claims.clone(), until));
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_escaped() {
        assert_eq!(form_escape("a b+c/d=é"), "a%20b%2Bc%2Fd%3D%C3%A9");
        assert_eq!(form_escape("abc-._~"), "abc-._~");
    }
}
