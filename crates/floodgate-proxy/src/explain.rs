//! `floodgate explain`: which route a given request meets on a snapshot and what would
//! happen to it, computed by the same router the data plane uses.

use std::fmt::Write;

use http::{HeaderMap, Method, Uri};

use crate::pipeline::front::{find_route, locate};
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

/// A circuit breaker's line: its scope and trip rules.
fn breaker(on: &str, cb: &floodgate_config::resilience::CircuitBreaker) -> String {
    let pct = |p: f64| (p * 1000.0).round() / 10.0;
    let mut rules = Vec::new();
    if let Some(n) = cb.consecutive_failures {
        rules.push(format!("{n} failures in a row"));
    }
    if let Some(r) = cb.failure_rate {
        rules.push(format!("failures ≥ {}%", pct(r.0)));
    }
    if let Some(r) = cb.slow_call_rate {
        rules.push(format!("calls over {} ≥ {}%", cb.slow_call, pct(r.0)));
    }
    let scope = crate::breaker::scope_of(cb, on == "route");
    let key = if cb.key.is_empty() {
        String::new()
    } else {
        format!(" per {}", cb.key.join("+"))
    };
    // The window and its minimum only concern the rates.
    let window = if cb.failure_rate.is_some() || cb.slow_call_rate.is_some() {
        format!(
            " (rates over {}, at least {} calls)",
            cb.window, cb.minimum_calls
        )
    } else {
        String::new()
    };
    format!(
        "circuit breaker ({scope}{key}): opens on {}{window}, open {} growing to {}, {} probes",
        rules.join(" or "),
        cb.open_for,
        cb.max_open_for,
        cb.half_open_calls
    )
}

/// One line per policy that applies, in the order they run.
fn policies(snap: &Snapshot, cfg: &floodgate_config::model::Route, action: &Action) -> Vec<String> {
    use floodgate_config::model::{Algorithm, Concurrency, Scope};
    let mut out = Vec::new();
    for (i, l) in cfg.rate_limits.iter().enumerate() {
        let alg = match l.algorithm {
            Algorithm::TokenBucket => "token bucket",
            Algorithm::LeakyBucket => "leaky bucket",
            Algorithm::FixedWindow => "fixed window",
            Algorithm::SlidingLog => "sliding window log",
            Algorithm::SlidingWindow => "sliding window counter",
            Algorithm::Gcra => "GCRA",
        };
        let rate = format!(
            "{}/{}",
            l.rate.count,
            floodgate_config::value::Duration(l.rate.per)
        );
        let mut extra = Vec::new();
        if let Some(b) = l.burst {
            extra.push(format!("burst {b}"));
        }
        if l.nodelay {
            extra.push("nodelay".into());
        } else if let Some(d) = l.delay {
            extra.push(format!("delay {d}"));
        }
        if !l.overrides.is_empty() {
            extra.push(format!("{} override(s)", l.overrides.len()));
        }
        if l.scope == Scope::Cluster {
            extra.push(
                format!("cluster, {:?}", l.on_redis_error.unwrap_or_default()).to_lowercase(),
            );
        }
        if l.dry_run {
            extra.push("dry run".into());
        }
        out.push(format!(
            "rate limit {:?}: {alg} {rate} per {}{}",
            floodgate_config::limit_name(l, i),
            l.key.join("+"),
            if extra.is_empty() {
                String::new()
            } else {
                format!(" ({})", extra.join(", "))
            }
        ));
    }
    let bulkhead = |what: &str, c: &Concurrency| match (&c.max_in_flight, &c.adaptive) {
        (Some(n), _) => format!(
            "{what} bulkhead: {n} in flight, queue {} for {}",
            c.queue, c.queue_timeout
        ),
        (None, Some(a)) => format!(
            "{what} bulkhead: adaptive {}..{} (starts at {}), queue {} for {}",
            a.min_limit, a.max_limit, a.initial_limit, c.queue, c.queue_timeout
        ),
        (None, None) => format!("{what} bulkhead"),
    };
    if let Some(c) = &cfg.concurrency {
        out.push(bulkhead("route", c));
    }
    if let Some(c) = &cfg.cors {
        out.push(format!(
            "cors: origins {}; methods {}{}",
            c.allow_origins.join(", "),
            c.allow_methods.join(", "),
            if c.allow_credentials {
                "; with credentials"
            } else {
                ""
            }
        ));
    }
    if let Some(w) = &cfg.waf {
        let rules: Vec<&str> = w
            .rules
            .iter()
            .map(|r| match r {
                floodgate_config::waf::WafRule::Sqli => "sqli",
                floodgate_config::waf::WafRule::Xss => "xss",
            })
            .collect();
        out.push(format!(
            "waf: {} ({}), bodies up to {}",
            rules.join(", "),
            match w.mode {
                floodgate_config::waf::WafMode::Block => "block",
                floodgate_config::waf::WafMode::Monitor => "monitor",
            },
            w.inspect_body
        ));
    }
    if let Some(f) = &cfg.existence_filter {
        out.push(format!(
            "existence filter: {} among the keys from {} (false positives {}%)",
            f.key,
            f.source,
            (f.false_positive_rate.0 * 1000.0).round() / 10.0
        ));
    }
    if let Some(c) = &cfg.cache {
        let mut parts = vec![format!(
            "GET and HEAD cached; negative {:?} for {}",
            c.negative_statuses, c.negative_ttl
        )];
        if let Some(t) = c.force_ttl {
            parts.push(format!("TTL forced to {t}"));
        } else if let Some(t) = c.default_ttl {
            parts.push(format!("default TTL {t}"));
        }
        parts.push(format!(
            "TTLs shortened at random by up to {}%",
            (c.jitter.0 * 1000.0).round() / 10.0
        ));
        if !c.stale_while_revalidate.0.is_zero() {
            parts.push(format!(
                "stale-while-revalidate {}",
                c.stale_while_revalidate
            ));
        }
        if !c.stale_if_error.0.is_zero() {
            parts.push(format!("stale-if-error {}", c.stale_if_error));
        }
        if c.coalesce {
            parts.push(format!("coalesced (wait up to {})", c.coalesce_timeout));
        }
        if c.early_refresh > 0.0 {
            parts.push(format!("early refresh β={}", c.early_refresh));
        }
        if !c.miss_rate_limits.is_empty() {
            parts.push(format!("{} miss limit(s)", c.miss_rate_limits.len()));
        }
        out.push(format!("cache: {}", parts.join("; ")));
    }
    if cfg.security_headers.is_some() {
        out.push(
            "security headers: frame options, nosniff, referrer policy (and CSP if given)".into(),
        );
    }
    if let Some(ip) = &cfg.ip {
        out.push(format!(
            "ip: allow {}; deny {}",
            if ip.allow.is_empty() {
                "all".into()
            } else {
                ip.allow.join(", ")
            },
            if ip.deny.is_empty() {
                "none".into()
            } else {
                ip.deny.join(", ")
            }
        ));
    }
    if let Some(a) = &cfg.auth {
        let mut methods = Vec::new();
        if let Some(k) = &a.api_key {
            methods.push(match (&k.header, &k.query) {
                (Some(h), _) => format!("API key in {h}"),
                (None, Some(q)) => format!("API key in ?{q}"),
                (None, None) => "API key in x-api-key".into(),
            });
        }
        if a.basic.is_some() {
            methods.push("Basic".into());
        }
        if let Some(j) = &a.jwt {
            let mut from = Vec::new();
            if !j.keys.is_empty() {
                let algs: Vec<String> = j
                    .keys
                    .iter()
                    .map(|k| format!("{:?}", k.algorithm))
                    .collect();
                from.push(algs.join("/"));
            }
            if let Some(s) = &j.jwks {
                from.push(format!("JWKS {}", s.url));
            }
            methods.push(format!("JWT ({})", from.join(", ")));
        }
        let join = match a.require {
            floodgate_config::auth::AuthCombine::Any => " or ",
            floodgate_config::auth::AuthCombine::All => " and ",
        };
        let mut who = Vec::new();
        if !a.consumers.is_empty() {
            who.push(format!("consumers {}", a.consumers.join(", ")));
        }
        if !a.groups.is_empty() {
            who.push(format!("groups {}", a.groups.join(", ")));
        }
        if !a.scopes.is_empty() {
            who.push(format!("scopes {}", a.scopes.join(" ")));
        }
        out.push(format!(
            "auth: {}; allowed: {}",
            methods.join(join),
            if who.is_empty() {
                "any consumer".into()
            } else {
                who.join(" and ")
            }
        ));
    }
    if cfg.criticality != floodgate_config::resilience::Criticality::Normal {
        out.push(format!("criticality: {}", cfg.criticality.as_str()));
    }
    if let Some(cb) = &cfg.circuit_breaker {
        out.push(breaker("route", cb));
    }
    if let Some(f) = &cfg.fault {
        let share = |p: f64| (p * 1000.0).round() / 10.0;
        let mut parts = Vec::new();
        if let Some(d) = &f.delay {
            parts.push(format!("delay {} for {}%", d.duration, share(d.share.0)));
        }
        if let Some(a) = &f.abort {
            parts.push(format!("abort {} for {}%", a.status, share(a.share.0)));
        }
        let gate = f
            .header
            .as_ref()
            .map(|h| format!(" of requests with {h}"))
            .unwrap_or_default();
        out.push(format!("fault injection: {}{gate}", parts.join(", ")));
    }
    if let Some(fb) = &cfg.fallback {
        let when: Vec<&str> = fb.when.iter().map(|t| t.as_str()).collect();
        let what = match (&fb.response, &fb.upstream) {
            (_, Some(u)) => format!("upstream {u:?}"),
            (Some(r), None) => format!("a fixed {} response", r.status),
            (None, None) => "nothing".into(),
        };
        out.push(format!("fallback: {what} on {}", when.join(", ")));
    }
    if let Action::Proxy(up) = action
        && let Some(u) = snap.config.upstreams.get(&*up.name)
    {
        if let Some(c) = &u.concurrency {
            out.push(bulkhead("upstream", c));
        }
        if let Some(h) = &u.health_check {
            let what = match h.kind {
                floodgate_config::model::HealthCheckKind::Tcp => "a TCP connect".to_owned(),
                floodgate_config::model::HealthCheckKind::Http => format!("HTTP GET {}", h.path),
            };
            out.push(format!(
                "health check: {what} every {}, out after {} failures, back after {} passes",
                h.interval, h.unhealthy_after, h.healthy_after
            ));
        }
        if let Some(o) = &u.outlier_detection {
            // As the upstream applies it: 5 in a row unless only a failure rate is given.
            let consecutive = o
                .consecutive_failures
                .or(o.failure_rate.is_none().then_some(5));
            let mut rules = Vec::new();
            if let Some(n) = consecutive {
                rules.push(format!("{n} failures in a row"));
            }
            if let Some(r) = o.failure_rate {
                rules.push(format!(
                    "a failure rate of {}% over {} (at least {} requests)",
                    (r.0 * 100.0).round(),
                    o.window,
                    o.min_requests
                ));
            }
            out.push(format!(
                "outlier detection: eject after {}, for {} (growing, at most {})",
                rules.join(" or "),
                o.base_ejection,
                o.max_ejection
            ));
        }
        if let Some(cb) = &u.circuit_breaker {
            out.push(breaker("upstream", cb));
        }
        if let Some(r) = &u.retries {
            out.push(format!(
                "retries: up to {} on {} (budget {}% of requests + {}/s)",
                r.attempts,
                r.retry_on.join(", "),
                (r.budget.0 * 100.0).round(),
                r.min_per_second
            ));
        }
    }
    out
}
