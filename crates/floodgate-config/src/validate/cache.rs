//! Validation rules for the HTTP cache: storage sizes and each route's cache options.

use super::problem::Problem;
use crate::cache::{CacheStorage, Idempotency, RouteCache};
use crate::error::FieldPath;
use crate::model::Cluster;

/// The statuses a negative answer may have: those RFC 9111 lets a shared cache store.
pub(crate) const NEGATIVE_STATUSES: [u16; 5] = [404, 405, 410, 414, 501];

/// Checks the top-level `cache` section.
pub(crate) fn check_storage(
    s: &CacheStorage,
    cluster: Option<&Cluster>,
    p: &FieldPath,
    out: &mut Vec<Problem>,
) {
    if s.shared && cluster.is_none() {
        out.push((
            p.key("shared"),
            "a shared cache lives in the cluster's Redis: configure `cluster` too".into(),
        ));
    }
    if s.memory.0 < 1 << 20 {
        out.push((p.key("memory"), "must be at least 1MiB".into()));
    }
    if s.max_object_size.0 == 0 {
        out.push((p.key("max_object_size"), "must be greater than zero".into()));
    } else if s.max_object_size.0 > s.memory.0 / 4 {
        out.push((
            p.key("max_object_size"),
            "must be at most a quarter of `memory`".into(),
        ));
    }
}

/// Checks a route's `cache`; `params` are the route's path parameters.
pub(crate) fn check_route_cache(
    c: &RouteCache,
    params: &[String],
    cluster: Option<&Cluster>,
    p: &FieldPath,
    out: &mut Vec<Problem>,
) {
    for (i, s) in c.negative_statuses.iter().enumerate() {
        if !NEGATIVE_STATUSES.contains(s) {
            out.push((
                p.key("negative_statuses").index(i),
                format!("{s} cannot be cached; expected one of 404, 405, 410, 414, 501"),
            ));
        }
    }
    if c.jitter.0 > 0.5 {
        out.push((p.key("jitter"), "must be at most 50%".into()));
    }
    if !(0.0..=10.0).contains(&c.early_refresh) {
        out.push((p.key("early_refresh"), "must be from 0 to 10".into()));
    }
    if c.coalesce_timeout.0.is_zero() {
        out.push((
            p.key("coalesce_timeout"),
            "must be greater than zero".into(),
        ));
    }
    for (field, ttl) in [("default_ttl", c.default_ttl), ("force_ttl", c.force_ttl)] {
        if ttl.is_some_and(|t| t.0.is_zero()) {
            out.push((p.key(field), "must be greater than zero".into()));
        }
    }
    super::policies::check_rate_limits(
        &c.miss_rate_limits,
        params,
        cluster,
        &p.key("miss_rate_limits"),
        out,
    );
}

/// The methods idempotency keys make sense for: those that are not idempotent already.
const KEYED_METHODS: [&str; 2] = ["POST", "PATCH"];

/// Checks a route's `idempotency`.
pub(crate) fn check_idempotency(
    i: &Idempotency,
    cluster: Option<&Cluster>,
    p: &FieldPath,
    out: &mut Vec<Problem>,
) {
    if i.shared && cluster.is_none() {
        out.push((
            p.key("shared"),
            "shared keys live in the cluster's Redis: configure `cluster` too".into(),
        ));
    }
    if i.methods.is_empty() {
        out.push((p.key("methods"), "must name at least one method".into()));
    }
    for (n, m) in i.methods.iter().enumerate() {
        if !KEYED_METHODS.contains(&m.as_str()) {
            out.push((
                p.key("methods").index(n),
                format!("{m:?} is not a method idempotency keys apply to; expected POST or PATCH"),
            ));
        }
    }
    if i.ttl.0.is_zero() {
        out.push((p.key("ttl"), "must be greater than zero".into()));
    }
    if i.memory.0 < 1 << 20 {
        out.push((p.key("memory"), "must be at least 1MiB".into()));
    }
    for (field, size) in [
        ("max_body_size", i.max_body_size),
        ("max_response_size", i.max_response_size),
    ] {
        if size.0 == 0 {
            out.push((p.key(field), "must be greater than zero".into()));
        }
    }
    if i.max_response_size.0 > i.memory.0 / 4 {
        out.push((
            p.key("max_response_size"),
            "must be at most a quarter of `memory`".into(),
        ));
    }
}
