//! What the runtime refuses in a configuration that passed floodgate-config's own checks:
//! a Redis URL its client library cannot use, TLS certificates and keys that do not load,
//! JWT keys and the token issuer's signing key that cannot be read. `floodgate validate`,
//! `run` and every reload load configurations through these checks
//! ([`floodgate_config::load_file_with`]), so each problem is reported with its file,
//! line, column and field before anything starts, never as a bare error at start-up.

use floodgate_config::{Config, FieldPath};

/// Every problem the runtime would meet building `cfg`, by the field at fault.
pub fn checks(cfg: &Config) -> Vec<(FieldPath, String)> {
    let root = FieldPath::root();
    let mut out = Vec::new();
    if let Some(c) = &cfg.cluster
        && let Err(e) = redis::Client::open(c.redis.url.as_str())
    {
        out.push((
            root.key("cluster").key("redis").key("url"),
            format!("not a usable Redis URL: {}", plain_redis_error(&e)),
        ));
    }
    for (i, l) in cfg.listeners.iter().enumerate() {
        if let Some(t) = &l.tls
            && let Err(e) = crate::tls_server::server_config(t)
        {
            out.push((root.key("listeners").index(i).key("tls"), e));
        }
    }
    for (name, up) in &cfg.upstreams {
        if let Some(t) = &up.tls {
            let server = t.server_name.as_deref().unwrap_or("localhost");
            if let Err(e) = crate::upstream::tls::TlsSetup::new(t, server, b"http/1.1") {
                out.push((root.key("upstreams").key(name).key("tls"), e));
            }
        }
    }
    let issuer = match &cfg.oauth2 {
        Some(o) => match crate::auth::oauth2::TokenIssuer::build(o) {
            Ok(issuer) => Some(issuer),
            Err(e) => {
                out.push((root.key("oauth2").key("signing_key_file"), e));
                None
            }
        },
        None => None,
    };
    for (i, r) in cfg.routes.iter().enumerate() {
        if let Some(j) = r.auth.as_ref().and_then(|a| a.jwt.as_ref())
            && (cfg.oauth2.is_none() || issuer.is_some())
            && let Err(e) = crate::auth::jwt::JwtVerifier::compile(j, issuer.as_ref())
        {
            out.push((root.key("routes").index(i).key("auth").key("jwt"), e));
        }
    }
    out
}

/// The redis crate's error without its kind's debug name (`... - InvalidClientConfig`).
fn plain_redis_error(e: &redis::RedisError) -> String {
    let text = e.to_string();
    match text.rsplit_once(" - ") {
        Some((what, kind)) if kind.chars().all(|c| c.is_ascii_alphanumeric()) => {
            what.to_lowercase()
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        floodgate_config::load_str("t.yaml", yaml, &|_| None)
            .map(|c| (*c).clone())
            .expect("valid")
    }

    #[test]
    fn a_redis_url_the_client_cannot_use_is_named() {
        let cfg = config(
            "listeners: [ { name: p, address: \"127.0.0.1:0\" } ]
cluster: { redis: { url: \"redis://127.0.0.1:20379/abc\" } }
routes: []",
        );
        let found = checks(&cfg);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0.to_string(), "cluster.redis.url");
        assert!(found[0].1.contains("database"), "{}", found[0].1);
    }
}
