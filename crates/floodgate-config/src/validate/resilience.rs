//! Validation rules for circuit breakers, fallbacks, fault injection and criticality.

use http::HeaderName;

use super::common::{check_key_part, is_condition};
use super::problem::Problem;
use crate::error::FieldPath;
use crate::model::Config;
use crate::resilience::{BreakerScope, CircuitBreaker, Fallback, Fault};

/// Checks a breaker on an upstream (`on_route` false) or a route with path parameters
/// `params`.
pub(crate) fn check_breaker(
    cb: &CircuitBreaker,
    on_route: bool,
    params: &[String],
    p: &FieldPath,
    out: &mut Vec<Problem>,
) {
    let scope = cb.scope.unwrap_or(if on_route {
        BreakerScope::Route
    } else {
        BreakerScope::Upstream
    });
    let allowed = if on_route {
        matches!(scope, BreakerScope::Route | BreakerScope::Key)
    } else {
        matches!(scope, BreakerScope::Upstream | BreakerScope::Target)
    };
    if !allowed {
        out.push((
            p.key("scope"),
            if on_route {
                "a route's breaker has scope `route` or `key`".into()
            } else {
                "an upstream's breaker has scope `upstream` or `target`".into()
            },
        ));
    }
    match (scope == BreakerScope::Key, cb.key.is_empty()) {
        (true, true) => out.push((
            p.key("key"),
            "`scope: key` needs `key` (such as [path:id])".into(),
        )),
        (false, false) => out.push((p.key("key"), "`key` applies only to `scope: key`".into())),
        _ => {}
    }
    for (i, part) in cb.key.iter().enumerate() {
        if let Err(msg) = check_key_part(part, params) {
            out.push((p.key("key").index(i), msg));
        }
    }
    if cb.consecutive_failures.is_none() && cb.failure_rate.is_none() && cb.slow_call_rate.is_none()
    {
        out.push((
            p.clone(),
            "give at least one trip rule: `consecutive_failures`, `failure_rate` or `slow_call_rate`"
                .into(),
        ));
    }
    if cb.consecutive_failures == Some(0) {
        out.push((p.key("consecutive_failures"), "must be at least 1".into()));
    }
    for (field, rate) in [
        ("failure_rate", cb.failure_rate),
        ("slow_call_rate", cb.slow_call_rate),
    ] {
        if rate.is_some_and(|r| r.0 <= 0.0) {
            out.push((p.key(field), "must be more than 0%".into()));
        }
    }
    if cb.minimum_calls == 0 {
        out.push((p.key("minimum_calls"), "must be at least 1".into()));
    }
    for (field, d) in [
        ("window", cb.window),
        ("open_for", cb.open_for),
        ("probe_timeout", cb.probe_timeout),
        ("slow_call", cb.slow_call),
    ] {
        if d.0.is_zero() {
            out.push((p.key(field), "must be greater than zero".into()));
        }
    }
    if !(cb.open_multiplier >= 1.0 && cb.open_multiplier.is_finite()) {
        out.push((
            p.key("open_multiplier"),
            "must be at least 1 (1: the open time stays the same)".into(),
        ));
    }
    if cb.max_open_for.0 < cb.open_for.0 {
        out.push((p.key("max_open_for"), "must be at least `open_for`".into()));
    }
    if cb.half_open_calls == 0 {
        out.push((p.key("half_open_calls"), "must be at least 1".into()));
    }
    if cb.close_ratio.0 <= 0.0 {
        out.push((p.key("close_ratio"), "must be more than 0%".into()));
    }
    match cb.max_keys {
        Some(0) => out.push((p.key("max_keys"), "must be at least 1".into())),
        Some(_) if scope != BreakerScope::Key => out.push((
            p.key("max_keys"),
            "`max_keys` applies only to `scope: key`".into(),
        )),
        _ => {}
    }
    for (i, cond) in cb.failure_on.iter().enumerate() {
        if !is_condition(cond) {
            out.push((
                p.key("failure_on").index(i),
                format!(
                    "unknown condition {cond:?}, expected `connect_error`, `reset`, `timeout`, \
                     a status such as `503` or a class such as `5xx`"
                ),
            ));
        }
    }
}

/// Checks a route's fallback.
pub(crate) fn check_fallback(cfg: &Config, fb: &Fallback, p: &FieldPath, out: &mut Vec<Problem>) {
    match (&fb.response, &fb.upstream) {
        (Some(_), Some(_)) => out.push((
            p.clone(),
            "give either `response` or `upstream`, not both".into(),
        )),
        (None, None) => out.push((
            p.clone(),
            "a fallback needs `response` (a fixed answer) or `upstream`".into(),
        )),
        _ => {}
    }
    if fb.when.is_empty() {
        out.push((p.key("when"), "list at least one condition".into()));
    }
    if let Some(u) = &fb.upstream
        && !cfg.upstreams.contains_key(u)
    {
        let known: Vec<&str> = cfg.upstreams.keys().map(String::as_str).collect();
        out.push((
            p.key("upstream"),
            format!("no upstream named {u:?} (defined: {})", known.join(", ")),
        ));
    }
    if let Some(r) = &fb.response {
        let rp = p.key("response");
        if !(200..=599).contains(&r.status) {
            out.push((rp.key("status"), "must be from 200 to 599".into()));
        }
        if r.body.is_some() && r.json.is_some() {
            out.push((rp.clone(), "give either `body` or `json`, not both".into()));
        }
        for (name, value) in &r.headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                out.push((
                    rp.key("headers").key(name),
                    format!("{name:?} is not a valid header name"),
                ));
            }
            if http::HeaderValue::from_str(value).is_err() {
                out.push((
                    rp.key("headers").key(name),
                    "not a valid header value".into(),
                ));
            }
        }
    }
}

/// Checks a route's fault injection.
pub(crate) fn check_fault(f: &Fault, p: &FieldPath, out: &mut Vec<Problem>) {
    if f.delay.is_none() && f.abort.is_none() {
        out.push((p.clone(), "give `delay`, `abort` or both".into()));
    }
    if let Some(a) = &f.abort
        && !(400..=599).contains(&a.status)
    {
        out.push((
            p.key("abort").key("status"),
            "must be from 400 to 599".into(),
        ));
    }
    if let Some(h) = &f.header
        && HeaderName::from_bytes(h.as_bytes()).is_err()
    {
        out.push((p.key("header"), format!("{h:?} is not a valid header name")));
    }
}
