//! Validation rules for the traffic policies of a route or upstream: rate limits,
//! concurrency limits, and the cluster settings they may depend on.

use std::collections::HashMap;

use http::HeaderName;

use super::common::{check_key_part, pem_certs, pem_key};
use super::problem::Problem;
use crate::error::FieldPath;
use crate::model::{Algorithm, Balance, Cluster, Concurrency, RateLimit, Retries, Scope, Upstream};

/// Largest `rate` count for `sliding_log`: its state is one timestamp per request.
pub(crate) const SLIDING_LOG_MAX: u64 = 10_000;

/// The name a limit is known by: its own, or `limit-N`.
pub fn limit_name(limit: &RateLimit, index: usize) -> String {
    limit
        .name
        .clone()
        .unwrap_or_else(|| format!("limit-{index}"))
}

/// Checks a route's rate limits; `params` are the route's path parameters.
pub(crate) fn check_rate_limits(
    limits: &[RateLimit],
    params: &[String],
    cluster: Option<&Cluster>,
    path: &FieldPath,
    out: &mut Vec<Problem>,
) {
    let mut names = HashMap::new();
    for (i, limit) in limits.iter().enumerate() {
        let p = path.index(i);
        let name = limit_name(limit, i);
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            out.push((
                p.key("name"),
                format!(
                    "{name:?}: a limit name may hold letters, digits, `-`, `_`, `.` and `:` \
                     (it is sent in the RateLimit fields)"
                ),
            ));
        }
        if let Some(prev) = names.insert(name.clone(), i) {
            out.push((
                p.key("name"),
                format!("duplicate limit name {name:?} (also rate_limits[{prev}])"),
            ));
        }
        check_rate_and_burst(limit.algorithm, limit.rate.count, limit.burst, &p, out);
        let leaky = limit.algorithm == Algorithm::LeakyBucket;
        for (field, given) in [
            ("delay", limit.delay.is_some()),
            ("nodelay", limit.nodelay),
            ("max_delay", limit.max_delay.is_some()),
        ] {
            if given && !leaky {
                out.push((
                    p.key(field),
                    format!("`{field}` applies only to `algorithm: leaky_bucket`"),
                ));
            }
        }
        if limit.nodelay && limit.delay.is_some() {
            out.push((
                p.key("nodelay"),
                "give either `delay` or `nodelay`, not both".into(),
            ));
        }
        if limit.algorithm == Algorithm::SlidingLog && limit.rate.count > SLIDING_LOG_MAX {
            out.push((
                p.key("rate"),
                format!(
                    "sliding_log keeps one timestamp per request, so its limit is at most \
                     {SLIDING_LOG_MAX} per window; use sliding_window for larger limits"
                ),
            ));
        }
        if limit.key.is_empty() {
            out.push((p.key("key"), "a key needs at least one part".into()));
        }
        for (k, part) in limit.key.iter().enumerate() {
            if let Err(msg) = check_key_part(part, params) {
                out.push((p.key("key").index(k), msg));
            }
        }
        let mut values = HashMap::new();
        for (k, o) in limit.overrides.iter().enumerate() {
            let op = p.key("overrides").index(k);
            if let Some(prev) = values.insert(o.value.as_str(), k) {
                out.push((
                    op.key("value"),
                    format!(
                        "duplicate override for {:?} (also overrides[{prev}])",
                        o.value
                    ),
                ));
            }
            check_rate_and_burst(limit.algorithm, o.rate.count, o.burst, &op, out);
        }
        if limit.max_keys == 0 {
            out.push((p.key("max_keys"), "must be at least 1".into()));
        }
        if limit.scope == Scope::Local && limit.on_redis_error.is_some() {
            out.push((
                p.key("on_redis_error"),
                "`on_redis_error` applies only to `scope: cluster` (a local limit never asks Redis)"
                    .into(),
            ));
        }
        if limit.scope == Scope::Cluster {
            if cluster.is_none() {
                out.push((
                    p.key("scope"),
                    "`scope: cluster` needs a top-level `cluster` section with a Redis URL".into(),
                ));
            }
            if matches!(
                limit.algorithm,
                Algorithm::LeakyBucket | Algorithm::SlidingLog
            ) {
                out.push((
                    p.key("scope"),
                    "cluster scope is available for token_bucket, gcra, fixed_window and \
                     sliding_window"
                        .into(),
                ));
            }
        }
    }
}

fn check_rate_and_burst(
    alg: Algorithm,
    count: u64,
    burst: Option<u64>,
    p: &FieldPath,
    out: &mut Vec<Problem>,
) {
    if count == 0 {
        out.push((
            p.key("rate"),
            "a rate must allow at least 1 request per period".into(),
        ));
    }
    match alg {
        Algorithm::TokenBucket | Algorithm::Gcra => {
            if burst == Some(0) {
                out.push((p.key("burst"), "burst must be at least 1".into()));
            }
        }
        Algorithm::LeakyBucket => {}
        Algorithm::FixedWindow | Algorithm::SlidingWindow | Algorithm::SlidingLog => {
            if burst.is_some() {
                out.push((
                    p.key("burst"),
                    "windows have no burst: the limit per window is `rate`".into(),
                ));
            }
        }
    }
}

/// Checks a bulkhead.
pub(crate) fn check_concurrency(c: &Concurrency, p: &FieldPath, out: &mut Vec<Problem>) {
    match (&c.max_in_flight, &c.adaptive) {
        (Some(_), Some(_)) => out.push((
            p.clone(),
            "give either `max_in_flight` or `adaptive`, not both".into(),
        )),
        (None, None) => out.push((
            p.clone(),
            "give `max_in_flight` (a fixed limit) or `adaptive`".into(),
        )),
        (Some(0), None) => out.push((p.key("max_in_flight"), "must be at least 1".into())),
        _ => {}
    }
    if let Some(a) = &c.adaptive {
        let ap = p.key("adaptive");
        if a.min_limit == 0 {
            out.push((ap.key("min_limit"), "must be at least 1".into()));
        }
        if !(a.min_limit <= a.initial_limit && a.initial_limit <= a.max_limit) {
            out.push((
                ap.clone(),
                "needs min_limit ≤ initial_limit ≤ max_limit".into(),
            ));
        }
        if a.window.0.is_zero() {
            out.push((ap.key("window"), "must be greater than zero".into()));
        }
    }
}

/// Checks an upstream's balancing options.
pub(crate) fn check_balance(up: &Upstream, p: &FieldPath, out: &mut Vec<Problem>) {
    let hashing = up.balance == Balance::ConsistentHash;
    match (&up.hash_on, hashing) {
        (None, true) => out.push((
            p.key("hash_on"),
            "`balance: consistent_hash` needs `hash_on` (client_ip, header:NAME, cookie:NAME or path:PARAM)"
                .into(),
        )),
        (Some(_), false) => out.push((
            p.key("hash_on"),
            "`hash_on` applies only to `balance: consistent_hash`".into(),
        )),
        (Some(on), true) => {
            let ok = match on.split_once(':') {
                None => on == "client_ip",
                Some(("header", n)) => HeaderName::from_bytes(n.as_bytes()).is_ok(),
                Some(("cookie" | "path", n)) => !n.is_empty(),
                _ => false,
            };
            if !ok {
                out.push((
                    p.key("hash_on"),
                    format!(
                        "invalid {on:?}, expected `client_ip`, `header:NAME`, `cookie:NAME` or `path:PARAM`"
                    ),
                ));
            }
        }
        (None, false) => {}
    }
    if let Some(c) = up.hash_bounded_load {
        if !hashing {
            out.push((
                p.key("hash_bounded_load"),
                "`hash_bounded_load` applies only to `balance: consistent_hash`".into(),
            ));
        }
        if !(c >= 1.0 && c.is_finite()) {
            out.push((
                p.key("hash_bounded_load"),
                "the factor must be at least 1.0 (such as 1.25)".into(),
            ));
        }
    }
}

/// Checks an upstream's retry policy.
pub(crate) fn check_retries(r: &Retries, p: &FieldPath, out: &mut Vec<Problem>) {
    for (i, cond) in r.retry_on.iter().enumerate() {
        if !super::common::is_condition(cond) {
            out.push((
                p.key("retry_on").index(i),
                format!(
                    "unknown condition {cond:?}, expected `connect_error`, `reset`, `timeout`, \
                     a status such as `503` or a class such as `5xx`"
                ),
            ));
        }
    }
    for (i, m) in r.methods.iter().enumerate() {
        if http::Method::from_bytes(m.as_bytes()).is_err() || m.to_ascii_uppercase() != *m {
            out.push((
                p.key("methods").index(i),
                format!("{m:?} is not an upper-case HTTP method"),
            ));
        }
    }
    if r.max_backoff.0 < r.backoff.0 {
        out.push((p.key("max_backoff"), "must be at least `backoff`".into()));
    }
}

/// Checks an upstream's health check and outlier detection.
pub(crate) fn check_health(up: &Upstream, p: &FieldPath, out: &mut Vec<Problem>) {
    if let Some(h) = &up.health_check {
        let hp = p.key("health_check");
        if !h.path.starts_with('/') {
            out.push((hp.key("path"), format!("{:?} must start with `/`", h.path)));
        }
        if !h.service.is_empty() && h.kind != crate::model::HealthCheckKind::Grpc {
            out.push((
                hp.key("service"),
                "`service` names what a `kind: grpc` check asks about".into(),
            ));
        }
        for (i, s) in h.expect.iter().enumerate() {
            if !(100..=599).contains(s) {
                out.push((
                    hp.key("expect").index(i),
                    "a status is from 100 to 599".into(),
                ));
            }
        }
        if h.interval.0.is_zero() || h.timeout.0.is_zero() {
            out.push((
                hp.clone(),
                "`interval` and `timeout` must be greater than zero".into(),
            ));
        }
        if h.healthy_after == 0 || h.unhealthy_after == 0 {
            out.push((
                hp,
                "`healthy_after` and `unhealthy_after` must be at least 1".into(),
            ));
        }
    }
    if let Some(o) = &up.outlier_detection {
        let op = p.key("outlier_detection");
        if o.consecutive_failures == Some(0) {
            out.push((op.key("consecutive_failures"), "must be at least 1".into()));
        }
        if o.base_ejection.0.is_zero() || o.max_ejection.0 < o.base_ejection.0 {
            out.push((op, "needs 0 < base_ejection ≤ max_ejection".into()));
        }
    }
}

/// Checks an upstream's TLS settings: the files exist and hold what they should.
pub(crate) fn check_upstream_tls(up: &Upstream, p: &FieldPath, out: &mut Vec<Problem>) {
    use rustls_pki_types::ServerName;
    let Some(tls) = &up.tls else { return };
    let tp = p.key("tls");
    let certs = pem_certs;
    if let Some(ca) = &tls.ca_file
        && let Err(msg) = certs(ca)
    {
        out.push((tp.key("ca_file"), msg));
    }
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            if let Err(msg) = certs(cert) {
                out.push((tp.key("client_cert"), msg));
            }
            if let Err(msg) = pem_key(key) {
                out.push((tp.key("client_key"), msg));
            }
        }
        (None, None) => {}
        _ => out.push((
            tp,
            "give both `client_cert` and `client_key`, or neither".into(),
        )),
    }
    if let Some(name) = &up.tls.as_ref().and_then(|t| t.server_name.clone())
        && ServerName::try_from(name.as_str()).is_err()
    {
        out.push((
            p.key("tls").key("server_name"),
            format!("{name:?} is not a valid server name"),
        ));
    }
}

/// Checks the cluster section.
pub(crate) fn check_cluster(c: &Cluster, p: &FieldPath, out: &mut Vec<Problem>) {
    let url = p.key("redis").key("url");
    if !c.redis.url.starts_with("redis://") {
        out.push((url, "expected a URL starting with `redis://`".into()));
    }
    if c.redis.timeout.0.is_zero() {
        out.push((
            p.key("redis").key("timeout"),
            "must be greater than zero".into(),
        ));
    }
    if c.heartbeat.0.is_zero() {
        out.push((p.key("heartbeat"), "must be greater than zero".into()));
    }
}
