//! What a reload changes: routes, upstreams and consumers added, removed and changed (for
//! a changed route, which of its parts), and the other sections that changed, for the
//! reload's log line and `/status`.

use std::collections::BTreeMap;
use std::fmt::Debug;

use crate::model::{Config, Route};
use crate::validate::route_name;

/// The differences between two configurations, one phrase each, such as
/// `routes changed: api (rate_limits, cache)`; empty when nothing changed.
pub fn changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let named_routes = |c: &Config| -> BTreeMap<String, Route> {
        c.routes
            .iter()
            .enumerate()
            .map(|(i, r)| (route_name(r, i), r.clone()))
            .collect()
    };
    delta(
        "routes",
        &named_routes(old),
        &named_routes(new),
        route_parts,
        &mut out,
    );
    delta(
        "upstreams",
        &old.upstreams,
        &new.upstreams,
        |_, _| Vec::new(),
        &mut out,
    );
    let consumers = |c: &Config| -> BTreeMap<String, String> {
        c.consumers
            .iter()
            .map(|k| (k.name.clone(), format!("{k:?}")))
            .collect()
    };
    delta(
        "consumers",
        &consumers(old),
        &consumers(new),
        |_, _| Vec::new(),
        &mut out,
    );
    let sections: [(&str, String, String); 7] = [
        ("runtime", dbg(&old.runtime), dbg(&new.runtime)),
        ("listeners", dbg(&old.listeners), dbg(&new.listeners)),
        ("access_log", dbg(&old.access_log), dbg(&new.access_log)),
        ("dns", dbg(&old.dns), dbg(&new.dns)),
        ("cache", dbg(&old.cache), dbg(&new.cache)),
        ("oauth2", dbg(&old.oauth2), dbg(&new.oauth2)),
        ("admin", dbg(&old.admin), dbg(&new.admin)),
    ];
    let changed: Vec<&str> = sections
        .iter()
        .filter(|(_, a, b)| a != b)
        .map(|(name, _, _)| *name)
        .collect();
    if !changed.is_empty() {
        out.push(format!("sections changed: {}", changed.join(", ")));
    }
    out
}

fn dbg(v: &impl Debug) -> String {
    format!("{v:?}")
}

/// Adds `what added/removed/changed: ...` for two maps by name; `parts` names what changed
/// inside an entry.
fn delta<V: Debug>(
    what: &str,
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
    parts: impl Fn(&V, &V) -> Vec<&'static str>,
    out: &mut Vec<String>,
) {
    let added: Vec<&str> = new
        .keys()
        .filter(|k| !old.contains_key(*k))
        .map(String::as_str)
        .collect();
    let removed: Vec<&str> = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .map(String::as_str)
        .collect();
    let changed: Vec<String> = old
        .iter()
        .filter_map(|(k, a)| {
            let b = new.get(k)?;
            if dbg(a) == dbg(b) {
                return None;
            }
            let p = parts(a, b);
            Some(if p.is_empty() {
                k.clone()
            } else {
                format!("{k} ({})", p.join(", "))
            })
        })
        .collect();
    for (how, list) in [("added", added.join(", ")), ("removed", removed.join(", "))] {
        if !list.is_empty() {
            out.push(format!("{what} {how}: {list}"));
        }
    }
    if !changed.is_empty() {
        out.push(format!("{what} changed: {}", changed.join(", ")));
    }
}

/// Which parts of a route differ.
fn route_parts(a: &Route, b: &Route) -> Vec<&'static str> {
    let fields: [(&'static str, String, String); 24] = [
        ("match", dbg(&a.matches), dbg(&b.matches)),
        ("priority", dbg(&a.priority), dbg(&b.priority)),
        ("listeners", dbg(&a.listeners), dbg(&b.listeners)),
        ("upstream", dbg(&a.upstream), dbg(&b.upstream)),
        ("redirect", dbg(&a.redirect), dbg(&b.redirect)),
        ("split", dbg(&a.split), dbg(&b.split)),
        ("mirror", dbg(&a.mirror), dbg(&b.mirror)),
        ("rewrite", dbg(&a.rewrite), dbg(&b.rewrite)),
        (
            "request_headers",
            dbg(&a.request_headers),
            dbg(&b.request_headers),
        ),
        (
            "response_headers",
            dbg(&a.response_headers),
            dbg(&b.response_headers),
        ),
        ("rate_limits", dbg(&a.rate_limits), dbg(&b.rate_limits)),
        ("concurrency", dbg(&a.concurrency), dbg(&b.concurrency)),
        (
            "circuit_breaker",
            dbg(&a.circuit_breaker),
            dbg(&b.circuit_breaker),
        ),
        ("fallback", dbg(&a.fallback), dbg(&b.fallback)),
        ("fault", dbg(&a.fault), dbg(&b.fault)),
        ("criticality", dbg(&a.criticality), dbg(&b.criticality)),
        ("auth", dbg(&a.auth), dbg(&b.auth)),
        ("ip", dbg(&a.ip), dbg(&b.ip)),
        ("cors", dbg(&a.cors), dbg(&b.cors)),
        ("waf", dbg(&a.waf), dbg(&b.waf)),
        (
            "security_headers",
            dbg(&a.security_headers),
            dbg(&b.security_headers),
        ),
        (
            "existence_filter",
            dbg(&a.existence_filter),
            dbg(&b.existence_filter),
        ),
        ("cache", dbg(&a.cache), dbg(&b.cache)),
        ("idempotency", dbg(&a.idempotency), dbg(&b.idempotency)),
    ];
    fields
        .into_iter()
        .filter(|(_, x, y)| x != y)
        .map(|(name, _, _)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Config {
        (*crate::load_str("t", yaml, &|_| None).expect("valid")).clone()
    }

    #[test]
    fn names_what_a_reload_changes() {
        let old = load(
            "listeners: [ { name: p, address: \"127.0.0.1:0\" } ]
upstreams: { a: { targets: [ \"127.0.0.1:1\" ] }, b: { targets: [ \"127.0.0.1:2\" ] } }
routes:
  - { name: one, match: { path: /one }, upstream: a }
  - { name: two, match: { path: /two }, upstream: a }",
        );
        let new = load(
            "listeners: [ { name: p, address: \"127.0.0.1:0\" } ]
upstreams: { a: { targets: [ \"127.0.0.1:1\", \"127.0.0.1:3\" ] }, c: { targets: [ \"127.0.0.1:2\" ] } }
routes:
  - { name: one, match: { path: /one }, upstream: a, rate_limits: [ { algorithm: gcra, rate: 1/s } ] }
  - { name: three, match: { path: /three }, upstream: c }",
        );
        assert_eq!(
            changes(&old, &new),
            [
                "routes added: three",
                "routes removed: two",
                "routes changed: one (rate_limits)",
                "upstreams added: c",
                "upstreams removed: b",
                "upstreams changed: a",
            ]
        );
        assert!(changes(&old, &old).is_empty());
    }
}
