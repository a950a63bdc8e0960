//! Validation rules for consumers and route access: unique names and credentials,
//! well-formed key digests and password hashes, and routes that name what exists.

use std::collections::{HashMap, HashSet};

use http::HeaderName;

use super::problem::Problem;
use crate::auth::{Consumer, IpRules, RouteAuth};
use crate::error::FieldPath;

/// Checks the consumers.
pub(crate) fn check_consumers(consumers: &[Consumer], p: &FieldPath, out: &mut Vec<Problem>) {
    let mut names = HashMap::new();
    let mut keys = HashMap::new();
    let mut users = HashMap::new();
    for (i, c) in consumers.iter().enumerate() {
        let cp = p.index(i);
        if c.name.is_empty() {
            out.push((cp.key("name"), "a consumer needs a name".into()));
        } else if let Some(prev) = names.insert(c.name.as_str(), i) {
            out.push((
                cp.key("name"),
                format!("duplicate consumer {:?} (also consumers[{prev}])", c.name),
            ));
        }
        for (k, key) in c.api_keys.iter().enumerate() {
            let kp = cp.key("api_keys").index(k);
            match key.strip_prefix("sha256:") {
                Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    if let Some(prev) = keys.insert(hex.to_ascii_lowercase(), i) {
                        let msg = if prev == i {
                            "this key is listed twice".to_owned()
                        } else {
                            format!("the same key is also given to consumers[{prev}]")
                        };
                        out.push((kp, msg));
                    }
                }
                _ => out.push((
                    kp,
                    "expected `sha256:` and the 64 hex digits of the key's SHA-256 \
                     (printf %s \"$KEY\" | sha256sum); never the key itself"
                        .into(),
                )),
            }
        }
        if let Some(b) = &c.basic {
            let bp = cp.key("basic");
            if b.username.is_empty() || b.username.contains(':') {
                out.push((
                    bp.key("username"),
                    "a username is not empty and has no `:`".into(),
                ));
            } else if let Some(prev) = users.insert(b.username.as_str(), i) {
                out.push((
                    bp.key("username"),
                    format!("username {:?} is also consumers[{prev}]'s", b.username),
                ));
            }
            if !is_argon2id_phc(&b.password_hash) {
                out.push((
                    bp.key("password_hash"),
                    "expected an argon2id PHC string: $argon2id$v=19$m=…,t=…,p=…$salt$hash".into(),
                ));
            }
        }
    }
}

/// An `https://` URL, or `http://` on loopback.
fn is_fetchable(url: &str) -> bool {
    let ok = url.starts_with("https://")
        || url.starts_with("http://127.")
        || url.starts_with("http://localhost")
        || url.starts_with("http://[::1]");
    ok && url.parse::<http::Uri>().is_ok()
}

/// Checks the `oauth2` section.
pub(crate) fn check_oauth2(o: &crate::auth::OAuth2, p: &FieldPath, out: &mut Vec<Problem>) {
    if std::fs::read_to_string(&o.signing_key_file)
        .map(|t| !t.contains("-----BEGIN PRIVATE KEY-----"))
        .unwrap_or(true)
    {
        out.push((
            p.key("signing_key_file"),
            format!(
                "{:?} holds no PKCS#8 PEM key (-----BEGIN PRIVATE KEY-----); make one with \
                 openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256",
                o.signing_key_file
            ),
        ));
    }
    for (field, path) in [("token_path", &o.token_path), ("jwks_path", &o.jwks_path)] {
        if !path.starts_with('/') {
            out.push((p.key(field), format!("{path:?} must start with `/`")));
        }
    }
    if o.token_lifetime.0.is_zero() {
        out.push((p.key("token_lifetime"), "must be greater than zero".into()));
    }
    let mut ids = HashMap::new();
    for (i, c) in o.clients.iter().enumerate() {
        let cp = p.key("clients").index(i);
        if c.id.is_empty() || c.id.contains(':') {
            out.push((
                cp.key("id"),
                "a client id is not empty and has no `:`".into(),
            ));
        } else if let Some(prev) = ids.insert(c.id.as_str(), i) {
            out.push((
                cp.key("id"),
                format!("duplicate client {:?} (also clients[{prev}])", c.id),
            ));
        }
        if !is_argon2id_phc(&c.secret_hash) {
            out.push((
                cp.key("secret_hash"),
                "expected an argon2id PHC string: $argon2id$v=19$m=…,t=…,p=…$salt$hash".into(),
            ));
        }
    }
}

/// `$argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash>` in shape (the runtime parses it fully).
fn is_argon2id_phc(s: &str) -> bool {
    let parts: Vec<&str> = s.split('$').collect();
    matches!(parts.as_slice(), ["", "argon2id", v, params, salt, hash]
        if v.starts_with("v=") && params.contains("m=") && params.contains("t=")
            && params.contains("p=") && !salt.is_empty() && !hash.is_empty())
}

/// Checks a route's `auth`.
pub(crate) fn check_route_auth(
    auth: &RouteAuth,
    consumers: &[Consumer],
    has_oauth2: bool,
    p: &FieldPath,
    out: &mut Vec<Problem>,
) {
    if auth.api_key.is_none()
        && auth.basic.is_none()
        && auth.jwt.is_none()
        && auth.introspection.is_none()
        && !auth.client_certificate
    {
        out.push((
            p.clone(),
            "give at least one method: `api_key`, `basic`, `jwt`, `introspection` or \
             `client_certificate`"
                .into(),
        ));
    }
    if let Some(i) = &auth.introspection
        && !is_fetchable(&i.url)
    {
        out.push((
            p.key("introspection").key("url"),
            "expected an https:// URL (http:// only on loopback)".into(),
        ));
    }
    if let Some(j) = &auth.jwt {
        check_jwt(j, &p.key("jwt"), out);
        if j.local_issuer && !has_oauth2 {
            out.push((
                p.key("jwt").key("local_issuer"),
                "needs a top-level `oauth2` section (the token endpoint)".into(),
            ));
        }
    }
    if let Some(k) = &auth.api_key
        && let Some(h) = &k.header
        && HeaderName::from_bytes(h.as_bytes()).is_err()
    {
        out.push((
            p.key("api_key").key("header"),
            format!("{h:?} is not a valid header name"),
        ));
    }
    let known: HashSet<&str> = consumers.iter().map(|c| c.name.as_str()).collect();
    for (i, c) in auth.consumers.iter().enumerate() {
        if !known.contains(c.as_str()) {
            out.push((
                p.key("consumers").index(i),
                format!("no consumer named {c:?}"),
            ));
        }
    }
    let groups: HashSet<&str> = consumers
        .iter()
        .flat_map(|c| c.groups.iter().map(String::as_str))
        .collect();
    for (i, g) in auth.groups.iter().enumerate() {
        if !groups.contains(g.as_str()) {
            out.push((
                p.key("groups").index(i),
                format!("no consumer is in group {g:?}"),
            ));
        }
    }
}

/// Checks a route's `ip` rules.
pub(crate) fn check_ip_rules(rules: &IpRules, p: &FieldPath, out: &mut Vec<Problem>) {
    super::common::check_trusted_proxies(&rules.allow, &p.key("allow"), out);
    super::common::check_trusted_proxies(&rules.deny, &p.key("deny"), out);
}

fn check_jwt(j: &crate::auth::JwtAuth, p: &FieldPath, out: &mut Vec<Problem>) {
    if j.keys.is_empty() && j.jwks.is_none() && !j.local_issuer {
        out.push((
            p.clone(),
            "give `keys`, `jwks` or `local_issuer: true`".into(),
        ));
    }
    for (i, k) in j.keys.iter().enumerate() {
        let kp = p.key("keys").index(i);
        match (k.algorithm.is_hmac(), &k.secret, &k.public_key_file) {
            (true, Some(s), None) => {
                if s.len() < 32 {
                    out.push((
                        kp.key("secret"),
                        "an HMAC secret needs at least 32 bytes".into(),
                    ));
                }
            }
            (true, _, _) => out.push((
                kp,
                "HS* keys take `secret` (and no `public_key_file`)".into(),
            )),
            (false, None, Some(file)) => {
                if std::fs::read_to_string(file)
                    .map(|t| !t.contains("-----BEGIN"))
                    .unwrap_or(true)
                {
                    out.push((
                        kp.key("public_key_file"),
                        format!("{file:?} holds no PEM key"),
                    ));
                }
            }
            (false, _, _) => out.push((
                kp,
                "RS*, PS*, ES* and EdDSA keys take `public_key_file` (and no `secret`)".into(),
            )),
        }
    }
    if let Some(jwks) = &j.jwks
        && !is_fetchable(&jwks.url)
    {
        out.push((
            p.key("jwks").key("url"),
            "expected an https:// URL (http:// only on loopback)".into(),
        ));
    }
    for (claim, header) in &j.claims_to_headers {
        if HeaderName::from_bytes(header.as_bytes()).is_err() {
            out.push((
                p.key("claims_to_headers").key(claim),
                format!("{header:?} is not a valid header name"),
            ));
        }
    }
}

/// Checks a route's `cors`.
pub(crate) fn check_cors(c: &crate::cors::Cors, p: &FieldPath, out: &mut Vec<Problem>) {
    if c.allow_origins.is_empty() {
        out.push((p.key("allow_origins"), "list at least one origin".into()));
    }
    for (i, o) in c.allow_origins.iter().enumerate() {
        let ok = o == "*"
            || ["http://", "https://"].iter().any(|scheme| {
                o.strip_prefix(scheme).is_some_and(|rest| {
                    let host = rest.strip_prefix("*.").unwrap_or(rest);
                    !host.is_empty() && !host.contains(['/', '*', '?', '#'])
                })
            });
        if !ok {
            out.push((
                p.key("allow_origins").index(i),
                format!(
                    "{o:?} is not an origin: expected `https://host[:port]`, `https://*.domain` or `*`"
                ),
            ));
        }
        if o == "*" && c.allow_credentials {
            out.push((
                p.key("allow_origins").index(i),
                "`*` cannot be used with `allow_credentials: true` (browsers refuse it): list the origins".into(),
            ));
        }
    }
    for (i, m) in c.allow_methods.iter().enumerate() {
        if http::Method::from_bytes(m.as_bytes()).is_err() || m.to_ascii_uppercase() != *m {
            out.push((
                p.key("allow_methods").index(i),
                format!("{m:?} is not an upper-case HTTP method"),
            ));
        }
    }
    for (field, list) in [
        ("allow_headers", &c.allow_headers),
        ("expose_headers", &c.expose_headers),
    ] {
        for (i, h) in list.iter().enumerate() {
            if HeaderName::from_bytes(h.as_bytes()).is_err() {
                out.push((
                    p.key(field).index(i),
                    format!("{h:?} is not a valid header name"),
                ));
            }
        }
    }
}

/// Checks a route's `websocket`: origins spelled as origins, limits that can let a tunnel
/// open, and upstreams that can carry one (an HTTP/1.1 upgrade).
pub(crate) fn check_websocket(
    cfg: &crate::model::Config,
    route: &crate::model::Route,
    w: &crate::websocket::WebSocket,
    p: &FieldPath,
    out: &mut Vec<Problem>,
) {
    for (i, o) in w.origins.iter().enumerate() {
        let ok = o == "*"
            || ["http://", "https://"].iter().any(|scheme| {
                o.strip_prefix(scheme).is_some_and(|rest| {
                    let host = rest.strip_suffix('/').unwrap_or(rest);
                    !host.is_empty() && !host.contains(['/', '*', '?', '#', ' '])
                })
            });
        if !ok {
            out.push((
                p.key("origins").index(i),
                format!("{o:?} is not an origin: expected `https://host[:port]` or `*`"),
            ));
        }
    }
    if w.max_tunnels == Some(0) {
        out.push((
            p.key("max_tunnels"),
            "0 lets no tunnel open: use `enabled: false` to refuse handshakes".into(),
        ));
    }
    if w.idle_timeout.0.is_zero() {
        out.push((p.key("idle_timeout"), "must be more than 0".into()));
    }
    if w.max_lifetime.is_some_and(|d| d.0.is_zero()) {
        out.push((p.key("max_lifetime"), "must be more than 0".into()));
    }
    let upstreams = route
        .upstream
        .iter()
        .chain(route.split.iter().map(|s| &s.upstream));
    for name in upstreams {
        if w.enabled
            && cfg
                .upstreams
                .get(name)
                .is_some_and(|u| u.protocol == crate::model::UpstreamProtocol::Http2)
        {
            out.push((
                p.clone(),
                format!(
                    "upstream {name:?} speaks HTTP/2, which cannot carry a WebSocket upgrade: \
                     use an `http1` upstream for this route"
                ),
            ));
        }
    }
}

/// Checks a route's `security_headers`.
pub(crate) fn check_security_headers(
    h: &crate::cors::SecurityHeaders,
    p: &FieldPath,
    out: &mut Vec<Problem>,
) {
    for (field, value) in [
        (
            "content_security_policy",
            h.content_security_policy.as_deref(),
        ),
        ("referrer_policy", Some(h.referrer_policy.as_str())),
    ] {
        if let Some(v) = value
            && http::HeaderValue::from_str(v).is_err()
        {
            out.push((p.key(field), "not a valid header value".into()));
        }
    }
}

/// Checks a route's `existence_filter`; `params` are the route's path parameters.
pub(crate) fn check_existence_filter(
    f: &crate::cache::ExistenceFilter,
    params: &[String],
    p: &FieldPath,
    out: &mut Vec<Problem>,
) {
    let key_ok = match f.key.split_once(':') {
        Some(("path", _) | ("query", _) | ("header", _)) => {
            super::common::check_key_part(&f.key, params)
        }
        _ => Err(format!(
            "invalid key {:?}, expected `path:PARAM`, `query:NAME` or `header:NAME`",
            f.key
        )),
    };
    if let Err(msg) = key_ok {
        out.push((p.key("key"), msg));
    }
    if !(f.false_positive_rate.0 > 0.0 && f.false_positive_rate.0 < 0.5) {
        out.push((
            p.key("false_positive_rate"),
            "must be more than 0% and less than 50%".into(),
        ));
    }
    if f.expected_keys == 0 || f.expected_keys > 1_000_000_000 {
        out.push((
            p.key("expected_keys"),
            "must be from 1 to 1000000000".into(),
        ));
    }
    if !is_fetchable(&f.source) {
        out.push((
            p.key("source"),
            "expected an https:// URL (http:// only on loopback)".into(),
        ));
    }
    if f.refresh.0.is_zero() {
        out.push((p.key("refresh"), "must be greater than zero".into()));
    }
}
