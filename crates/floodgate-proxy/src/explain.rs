//! `floodgate explain`: which route a given request meets on a snapshot and what would
//! happen to it, computed by the same router the data plane uses.

use std::fmt::Write;

use http::{HeaderMap, Method, Uri};

use crate::pipeline::front::{find_route, locate};
use crate::policies::{ROUTE_POLICIES, UPSTREAM_POLICIES};
use crate::problem::Problem;
use crate::snapshot::{Action, Snapshot};

/// Describes what `snap` would do with the request, as text for a terminal. Credentials in
/// `headers` are checked as the route would (API keys, Basic, tokens with configured keys;
/// a JWKS or an introspection endpoint is asked), so the consumer and the rate-limit
/// overrides that apply are named.
pub async fn explain(
    snap: &Snapshot,
    listener: Option<&str>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<String, String> {
    let plan = match listener {
        Some(name) => snap
            .listeners
            .iter()
            .find(|l| &*l.name == name)
            .ok_or_else(|| format!("no listener named {name:?}"))?,
        None => snap.listeners.first().ok_or("the config has no listener")?,
    };
    let mut out = String::new();
    let _ = writeln!(out, "request:   {method} {uri}");
    let _ = writeln!(out, "listener:  {}", plan.name);
    // The data plane's own front door: the canonical path, the host, the route.
    let (canonical, host_value) = match locate(plan, uri, http::Version::HTTP_11, headers) {
        Ok(found) => found,
        Err(Problem::BadRequest(why)) if why == crate::host::HostError::Missing.detail() => {
            return Err("give an absolute URL (http://host/path) or a Host header".into());
        }
        Err(p) => {
            let _ = writeln!(
                out,
                "refused:   {} problem+json (urn:floodgate:problem:{}): {}",
                p.status().as_u16(),
                p.code(),
                p.detail()
            );
            return Ok(out);
        }
    };
    let uri = canonical.as_ref().unwrap_or(uri);
    if canonical.is_some() {
        let _ = writeln!(
            out,
            "path:      {} (canonical form, used from here on)",
            uri.path()
        );
    }
    let path = uri.path();
    let host = crate::host::routing_name(host_value.to_str().unwrap_or_default());
    let Some((route, params)) = find_route(plan, &host, method, uri, headers) else {
        let _ = writeln!(
            out,
            "route:     none matches -> 404 problem+json (urn:floodgate:problem:no-route)"
        );
        // A route the method alone kept out is the likely intent.
        for other in [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            if other == *method {
                continue;
            }
            if let Some((route, _)) = find_route(plan, &host, &other, uri, headers) {
                let _ = writeln!(
                    out,
                    "  route {:?} matches this request except its method: it takes {other}, not {method}",
                    &*route.name
                );
                break;
            }
        }
        return Ok(out);
    };
    let index = snap
        .config
        .routes
        .iter()
        .enumerate()
        .position(|(i, r)| floodgate_config::route_name(r, i) == *route.name)
        .unwrap_or(0);
    let cfg = &snap.config.routes[index];
    let _ = writeln!(out, "route:     {} (routes[{index}])", route.name);
    let mut conds = Vec::new();
    if !cfg.matches.hosts.is_empty() {
        conds.push(format!("hosts {}", cfg.matches.hosts.join(", ")));
    }
    if let Some(p) = &cfg.matches.path {
        conds.push(format!("path {p}"));
    }
    if let Some(p) = &cfg.matches.path_prefix {
        conds.push(format!("path prefix {p}"));
    }
    if let Some(p) = &cfg.matches.path_regex {
        conds.push(format!("path regex {p}"));
    }
    if !cfg.matches.methods.is_empty() {
        conds.push(format!("methods {}", cfg.matches.methods.join(", ")));
    }
    for h in &cfg.matches.headers {
        conds.push(format!("header {}", h.name));
    }
    for q in &cfg.matches.query {
        conds.push(format!("query {}", q.name));
    }
    let _ = writeln!(
        out,
        "  matched: {}",
        if conds.is_empty() {
            "everything".into()
        } else {
            conds.join("; ")
        }
    );
    if cfg.priority != 0 {
        let _ = writeln!(out, "  priority: {}", cfg.priority);
    }
    if !params.is_empty() {
        let params: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "  params:  {}", params.join(", "));
    }
    match &route.action {
        Action::Redirect { location, status } => {
            let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
            let loc = location.render(|n| match n {
                "path" => Some(path),
                "query" => Some(query.as_str()),
                _ => params.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()),
            });
            let _ = writeln!(out, "action:    redirect {} to {loc}", status.as_u16());
        }
        Action::Split(split) => {
            let shares: Vec<String> = split
                .sets
                .iter()
                .map(|(u, w)| format!("{:?} weight {w}", &*u.name))
                .collect();
            let _ = writeln!(
                out,
                "action:    split between upstreams {}",
                shares.join(", ")
            );
        }
        Action::Proxy(up) => {
            let targets: Vec<String> = up.targets().iter().map(|t| t.address.to_string()).collect();
            let balance = snap.config.upstreams.get(&*up.name).map_or_else(
                || "round robin".to_owned(),
                |u| {
                    let name = match u.balance {
                        floodgate_config::model::Balance::RoundRobin => "round robin",
                        floodgate_config::model::Balance::LeastRequest => "least request",
                        floodgate_config::model::Balance::PeakEwma => "peak EWMA",
                        floodgate_config::model::Balance::ConsistentHash => "consistent hash",
                    };
                    match &u.hash_on {
                        Some(on) => format!("{name} on {on}"),
                        None => name.to_owned(),
                    }
                },
            );
            let _ = writeln!(
                out,
                "action:    proxy to upstream {:?} ({balance} over {})",
                &*up.name,
                targets.join(", ")
            );
            let new_path = route
                .rewrite
                .as_ref()
                .map_or_else(|| path.to_owned(), |rw| rw.apply(path, &params));
            let _ = writeln!(
                out,
                "  upstream path: {new_path}{}",
                uri.query().map(|q| format!("?{q}")).unwrap_or_default()
            );
            if let Some(u) = snap.config.upstreams.get(&*up.name) {
                let t = &u.timeouts;
                let _ = writeln!(
                    out,
                    "  timeouts: connect {}, response head {}, pooled idle {}",
                    t.connect, t.request, t.idle
                );
            }
        }
    }
    for (label, ops) in [
        ("request headers", &cfg.request_headers),
        ("response headers", &cfg.response_headers),
    ] {
        if !ops.is_empty() {
            let mut parts = Vec::new();
            if !ops.remove.is_empty() {
                parts.push(format!("remove {}", ops.remove.join(", ")));
            }
            if !ops.set.is_empty() {
                parts.push(format!(
                    "set {}",
                    ops.set.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            if !ops.add.is_empty() {
                parts.push(format!(
                    "add {}",
                    ops.add.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            let _ = writeln!(out, "{label}: {}", parts.join("; "));
        }
    }
    let l = &plan.limits;
    let _ = writeln!(
        out,
        "limits:    uri {}, head {} / {} fields, body {}",
        l.max_uri_bytes, l.max_header_bytes, l.max_headers, l.max_body_bytes
    );
    if let Some(m) = &cfg.mirror {
        let _ = writeln!(
            out,
            "  mirror:  a copy of {}% of requests to upstream {:?}",
            (m.share.0 * 1000.0).round() / 10.0,
            m.upstream
        );
    }
    let consumer = match &route.access {
        Some(access) => {
            let basic = crate::auth::BasicVerifier::default();
            match access
                .check(&snap.identities, &basic, headers, uri.query(), None)
                .await
            {
                Ok(passed) => {
                    let _ = writeln!(out, "consumer:  {}", passed.identity.name);
                    Some(passed.identity.name.clone())
                }
                Err(crate::auth::Denied::Unauthenticated(r)) => {
                    let _ = writeln!(
                        out,
                        "consumer:  none -> 401 ({} {}: {})",
                        r.method,
                        r.reason,
                        r.description()
                    );
                    None
                }
                Err(crate::auth::Denied::Forbidden(rule)) => {
                    let _ = writeln!(out, "consumer:  refused by its {rule} rule -> 403");
                    None
                }
            }
        }
        None => None,
    };
    let policies = policies(snap, cfg, &route.action);
    if policies.is_empty() {
        let _ = writeln!(out, "policies:  none configured on this route");
    } else {
        let _ = writeln!(out, "policies:");
        for p in policies {
            let _ = writeln!(out, "  {p}");
        }
    }
    // Which of a limit's values applies to this request (client address 127.0.0.1).
    let facts = crate::ratelimit::key::RequestFacts {
        client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        route: &route.name,
        method,
        headers,
        query: uri.query(),
        params: &params,
        consumer: consumer.as_deref(),
    };
    for (i, l) in cfg.rate_limits.iter().enumerate() {
        if l.overrides.is_empty() {
            continue;
        }
        let parts: Vec<_> = l
            .key
            .iter()
            .filter_map(|p| crate::ratelimit::key::KeyPart::parse(p))
            .collect();
        let mut key = Vec::new();
        crate::ratelimit::key::render(&parts, &facts, &mut key);
        let key = String::from_utf8_lossy(&key);
        let applies = l.overrides.iter().find(|o| o.value == key).map_or_else(
            || "the default".to_owned(),
            |o| {
                format!(
                    "the override {}/{}",
                    o.rate.count,
                    floodgate_config::value::Duration(o.rate.per)
                )
            },
        );
        let _ = writeln!(
            out,
            "  rate limit {:?} keys this request as {key:?}: {applies} applies",
            floodgate_config::limit_name(l, i)
        );
    }
    Ok(out)
}

/// One line per policy that applies, in the order they run.
/// What the route's policies (and its upstream's) do, in the order a request meets them.
fn policies(snap: &Snapshot, cfg: &floodgate_config::model::Route, action: &Action) -> Vec<String> {
    let mut out: Vec<String> = ROUTE_POLICIES
        .iter()
        .flat_map(|p| (p.describe)(cfg))
        .collect();
    if let Action::Proxy(up) = action
        && let Some(u) = snap.config.upstreams.get(&*up.name)
    {
        out.extend(UPSTREAM_POLICIES.iter().flat_map(|p| (p.describe)(u)));
    }
    out
}
