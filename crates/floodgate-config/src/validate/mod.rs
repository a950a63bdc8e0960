//! Rules that span fields or need more than a type: unique names, references between
//! sections, mutually exclusive options, regexes that compile, templates whose parameters
//! exist. Every rule reports with the field path it concerns, and all rules run.

use std::collections::{HashMap, HashSet};

use http::{HeaderName, Method};

use crate::error::FieldPath;
use crate::model::{Config, HeaderOps, Route, ValueMatch};
use crate::template::{PathTemplate, TextTemplate};
mod auth;
mod cache;
mod common;
mod policies;
mod problem;
mod resilience;
mod tls;

pub use policies::limit_name;
pub(crate) use problem::Problem;

/// Runs every rule and returns all problems.
pub(crate) fn validate(cfg: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let root = FieldPath::root();
    validate_listeners(cfg, &root, &mut out);
    auth::check_consumers(&cfg.consumers, &root.key("consumers"), &mut out);
    cache::check_storage(
        &cfg.cache,
        cfg.cluster.as_ref(),
        &root.key("cache"),
        &mut out,
    );
    if let Some(o) = &cfg.oauth2 {
        auth::check_oauth2(o, &root.key("oauth2"), &mut out);
    }
    if let Some(c) = &cfg.cluster {
        policies::check_cluster(c, &root.key("cluster"), &mut out);
    }
    for (name, up) in &cfg.upstreams {
        let path = root.key("upstreams").key(name);
        if up.targets.is_empty() {
            out.push((
                path.key("targets"),
                "an upstream needs at least one target".into(),
            ));
        }
        for (i, t) in up.targets.iter().enumerate() {
            if let Err(msg) = check_host_port(t.address()) {
                out.push((path.key("targets").index(i), msg));
            }
            if !(1..=1000).contains(&t.weight()) {
                out.push((
                    path.key("targets").index(i).key("weight"),
                    "weight must be from 1 to 1000".into(),
                ));
            }
        }
        if let Some(c) = &up.concurrency {
            policies::check_concurrency(c, &path.key("concurrency"), &mut out);
        }
        policies::check_balance(up, &path, &mut out);
        policies::check_health(up, &path, &mut out);
        policies::check_upstream_tls(up, &path, &mut out);
        if let Some(r) = &up.retries {
            policies::check_retries(r, &path.key("retries"), &mut out);
        }
        if let Some(cb) = &up.circuit_breaker {
            resilience::check_breaker(cb, false, &[], &path.key("circuit_breaker"), &mut out);
        }
        if up.timeouts.connect.0.is_zero() || up.timeouts.request.0.is_zero() {
            out.push((
                path.key("timeouts"),
                "timeouts must be greater than zero".into(),
            ));
        }
    }
    let listener_names: HashSet<&str> = cfg.listeners.iter().map(|l| l.name.as_str()).collect();
    let mut route_names = HashMap::new();
    for (i, route) in cfg.routes.iter().enumerate() {
        let path = root.key("routes").index(i);
        let name = route_name(route, i);
        if let Some(prev) = route_names.insert(name.clone(), i) {
            out.push((
                path.key("name"),
                format!("duplicate route name {name:?} (also routes[{prev}])"),
            ));
        }
        validate_route(cfg, route, &path, &listener_names, &mut out);
    }
    out
}

/// The name a route is known by: its own, or `route-N`.
pub fn route_name(route: &Route, index: usize) -> String {
    route
        .name
        .clone()
        .unwrap_or_else(|| format!("route-{index}"))
}

fn validate_listeners(cfg: &Config, root: &FieldPath, out: &mut Vec<Problem>) {
    if cfg.listeners.is_empty() {
        out.push((
            root.key("listeners"),
            "at least one listener is required".into(),
        ));
    }
    let mut names = HashSet::new();
    let mut addrs = HashMap::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let path = root.key("listeners").index(i);
        common::check_trusted_proxies(&l.trusted_proxies, &path.key("trusted_proxies"), out);
        tls::check_listener_tls(l, &path, out);
        if let Some(h) = &l.criticality_header {
            if HeaderName::from_bytes(h.as_bytes()).is_err() {
                out.push((
                    path.key("criticality_header"),
                    format!("{h:?} is not a valid header name"),
                ));
            } else if l.trusted_proxies.is_empty() {
                out.push((
                    path.key("criticality_header"),
                    "believed only from `trusted_proxies`, and this listener lists none: \
                     it would never be read"
                        .into(),
                ));
            }
        }
        if l.name.is_empty() || !names.insert(l.name.as_str()) {
            out.push((
                path.key("name"),
                format!("listener names must be unique and non-empty: {:?}", l.name),
            ));
        }
        if l.address.port() != 0 {
            if let Some(prev) = addrs.insert(l.address, i) {
                out.push((
                    path.key("address"),
                    format!("address {} is also used by listeners[{prev}]", l.address),
                ));
            }
            if l.address == cfg.admin.address {
                out.push((
                    path.key("address"),
                    format!("address {} is also the admin address", l.address),
                ));
            }
        }
        if l.limits.max_header_bytes.0 < 1024 {
            out.push((
                path.key("limits").key("max_header_bytes"),
                "must be at least 1KiB".into(),
            ));
        }
        for (field, size) in [
            ("read_buffer", l.http1.read_buffer),
            ("write_buffer", l.http1.write_buffer),
        ] {
            if !(1024..=1024 * 1024).contains(&size.0) {
                out.push((
                    path.key("http1").key(field),
                    "must be between 1KiB and 1MiB".into(),
                ));
            }
        }
        if l.limits.max_uri_bytes.0 < 16 {
            out.push((
                path.key("limits").key("max_uri_bytes"),
                "must be at least 16B".into(),
            ));
        }
        if l.timeouts.header_read.0.is_zero()
            || l.timeouts.idle.0.is_zero()
            || l.timeouts.body_read.0.is_zero()
        {
            out.push((
                path.key("timeouts"),
                "timeouts must be greater than zero".into(),
            ));
        }
    }
    if cfg.runtime.workers == Some(0) {
        out.push((
            root.key("runtime").key("workers"),
            "must be at least 1 (leave it out for one per core)".into(),
        ));
    }
}

fn validate_route(
    cfg: &Config,
    route: &Route,
    path: &FieldPath,
    listener_names: &HashSet<&str>,
    out: &mut Vec<Problem>,
) {
    let m = &route.matches;
    let mpath = path.key("match");
    let given = [
        m.path.is_some(),
        m.path_prefix.is_some(),
        m.path_regex.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        out.push((
            mpath.clone(),
            "give at most one of `path`, `path_prefix` and `path_regex`".into(),
        ));
    }
    let mut params: Vec<String> = Vec::new();
    if let Some(p) = &m.path {
        match PathTemplate::parse(p) {
            Ok(t) => params.extend(t.param_names().map(String::from)),
            Err(msg) => out.push((mpath.key("path"), msg)),
        }
    }
    if let Some(p) = &m.path_prefix
        && !p.starts_with('/')
    {
        out.push((
            mpath.key("path_prefix"),
            format!("prefix {p:?} must start with `/`"),
        ));
    }
    if let Some(r) = &m.path_regex {
        match regex::Regex::new(r) {
            Ok(re) => params.extend(re.capture_names().flatten().map(String::from)),
            Err(e) => out.push((mpath.key("path_regex"), regex_error(&e))),
        }
    }
    for (i, h) in m.hosts.iter().enumerate() {
        if let Err(msg) = check_host_pattern(h) {
            out.push((mpath.key("hosts").index(i), msg));
        }
    }
    for (i, meth) in m.methods.iter().enumerate() {
        if Method::from_bytes(meth.as_bytes()).is_err() || meth.to_ascii_uppercase() != *meth {
            out.push((
                mpath.key("methods").index(i),
                format!("{meth:?} is not an HTTP method (use upper case, e.g. GET)"),
            ));
        }
    }
    for (i, vm) in m.headers.iter().enumerate() {
        let p = mpath.key("headers").index(i);
        if HeaderName::from_bytes(vm.name.as_bytes()).is_err() {
            out.push((
                p.key("name"),
                format!("{:?} is not a valid header name", vm.name),
            ));
        }
        check_value_match(vm, &p, out);
    }
    for (i, vm) in m.query.iter().enumerate() {
        check_value_match(vm, &mpath.key("query").index(i), out);
    }
    if let Some(ls) = &route.listeners {
        for (i, l) in ls.iter().enumerate() {
            if !listener_names.contains(l.as_str()) {
                out.push((
                    path.key("listeners").index(i),
                    format!("no listener named {l:?}"),
                ));
            }
        }
    }
    let known_upstream = |u: &str, p: FieldPath, out: &mut Vec<Problem>| {
        if !cfg.upstreams.contains_key(u) {
            let known: Vec<&str> = cfg.upstreams.keys().map(String::as_str).collect();
            out.push((
                p,
                format!("no upstream named {u:?} (defined: {})", list(&known)),
            ));
        }
    };
    for (i, s) in route.split.iter().enumerate() {
        let sp = path.key("split").index(i);
        known_upstream(&s.upstream, sp.key("upstream"), out);
        if !(1..=10_000).contains(&s.weight) {
            out.push((sp.key("weight"), "weight must be from 1 to 10000".into()));
        }
    }
    if let Some(m) = &route.mirror {
        known_upstream(&m.upstream, path.key("mirror").key("upstream"), out);
        if route.redirect.is_some() {
            out.push((
                path.key("mirror"),
                "`mirror` has no effect on a redirect route".into(),
            ));
        }
    }
    let split = !route.split.is_empty();
    if split && (route.upstream.is_some() || route.redirect.is_some()) {
        out.push((
            path.key("split"),
            "give `split` instead of `upstream` or `redirect`, not with them".into(),
        ));
    }
    match (&route.upstream, &route.redirect) {
        (None, None) if split => {}
        (Some(u), None) => {
            if !cfg.upstreams.contains_key(u) {
                let known: Vec<&str> = cfg.upstreams.keys().map(String::as_str).collect();
                out.push((
                    path.key("upstream"),
                    format!("no upstream named {u:?} (defined: {})", list(&known)),
                ));
            }
        }
        (None, Some(r)) => {
            if ![301, 302, 303, 307, 308].contains(&r.status) {
                out.push((
                    path.key("redirect").key("status"),
                    format!(
                        "{} is not a redirect status (301, 302, 303, 307, 308)",
                        r.status
                    ),
                ));
            }
            check_text_template(
                &r.location,
                &params,
                &["path", "query"],
                &path.key("redirect").key("location"),
                out,
            );
        }
        (Some(_), Some(_)) => out.push((
            path.clone(),
            "give either `upstream` or `redirect`, not both".into(),
        )),
        (None, None) => out.push((
            path.clone(),
            "a route needs `upstream`, `split` or `redirect`".into(),
        )),
    }
    if let Some(rw) = &route.rewrite {
        let p = path.key("rewrite");
        if route.redirect.is_some() {
            out.push((
                p.clone(),
                "`rewrite` has no effect on a redirect route".into(),
            ));
        }
        for (field, v) in [
            ("strip_prefix", &rw.strip_prefix),
            ("add_prefix", &rw.add_prefix),
        ] {
            if let Some(v) = v
                && !v.starts_with('/')
            {
                out.push((p.key(field), format!("{v:?} must start with `/`")));
            }
        }
        if let Some(t) = &rw.path {
            if !t.starts_with('/') {
                out.push((p.key("path"), format!("{t:?} must start with `/`")));
            }
            check_text_template(t, &params, &[], &p.key("path"), out);
        }
    }
    check_header_ops(&route.request_headers, &path.key("request_headers"), out);
    check_header_ops(&route.response_headers, &path.key("response_headers"), out);
    policies::check_rate_limits(
        &route.rate_limits,
        &params,
        cfg.cluster.as_ref(),
        &path.key("rate_limits"),
        out,
    );
    if route.auth.is_none() {
        // Without authentication there is no consumer: every request would share one key.
        let keys = route
            .rate_limits
            .iter()
            .enumerate()
            .map(|(i, l)| (path.key("rate_limits").index(i).key("key"), &l.key))
            .chain(
                route
                    .circuit_breaker
                    .iter()
                    .map(|cb| (path.key("circuit_breaker").key("key"), &cb.key)),
            );
        for (p, parts) in keys {
            if let Some(k) = parts.iter().position(|part| part == "consumer") {
                out.push((
                    p.index(k),
                    "`consumer` needs the route's `auth`: without it no request has a \
                     consumer, and all would share one key"
                        .into(),
                ));
            }
        }
    }
    if let Some(c) = &route.concurrency {
        policies::check_concurrency(c, &path.key("concurrency"), out);
    }
    let proxies = route.redirect.is_none();
    for (field, given) in [
        ("circuit_breaker", route.circuit_breaker.is_some()),
        ("fallback", route.fallback.is_some()),
        ("fault", route.fault.is_some()),
        ("websocket", route.websocket.is_some()),
    ] {
        if given && !proxies {
            out.push((
                path.key(field),
                format!("`{field}` has no effect on a redirect route"),
            ));
        }
    }
    if let Some(cb) = &route.circuit_breaker {
        resilience::check_breaker(cb, true, &params, &path.key("circuit_breaker"), out);
    }
    if let Some(fb) = &route.fallback {
        resilience::check_fallback(cfg, fb, &path.key("fallback"), out);
    }
    if let Some(f) = &route.fault {
        resilience::check_fault(f, &path.key("fault"), out);
    }
    if let Some(a) = &route.auth {
        auth::check_route_auth(
            a,
            &cfg.consumers,
            cfg.oauth2.is_some(),
            &path.key("auth"),
            out,
        );
    }
    if let Some(ip) = &route.ip {
        auth::check_ip_rules(ip, &path.key("ip"), out);
    }
    if let Some(c) = &route.cors {
        auth::check_cors(c, &path.key("cors"), out);
    }
    if let Some(w) = &route.websocket {
        auth::check_websocket(cfg, route, w, &path.key("websocket"), out);
    }
    if let Some(f) = &route.existence_filter {
        auth::check_existence_filter(f, &params, &path.key("existence_filter"), out);
    }
    if let Some(c) = &route.cache {
        if route.redirect.is_some() {
            out.push((
                path.key("cache"),
                "`cache` has no effect on a redirect route".into(),
            ));
        }
        cache::check_route_cache(c, &params, cfg.cluster.as_ref(), &path.key("cache"), out);
    }
    if let Some(i) = &route.idempotency {
        if route.redirect.is_some() {
            out.push((
                path.key("idempotency"),
                "`idempotency` has no effect on a redirect route".into(),
            ));
        }
        cache::check_idempotency(i, cfg.cluster.as_ref(), &path.key("idempotency"), out);
    }
    if let Some(h) = &route.security_headers {
        auth::check_security_headers(h, &path.key("security_headers"), out);
    }
}

fn check_value_match(vm: &ValueMatch, p: &FieldPath, out: &mut Vec<Problem>) {
    let n = [vm.exact.is_some(), vm.regex.is_some(), vm.present.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if n != 1 {
        out.push((
            p.clone(),
            "give exactly one of `exact`, `regex` and `present`".into(),
        ));
    }
    if let Some(r) = &vm.regex
        && let Err(e) = regex::Regex::new(r)
    {
        out.push((p.key("regex"), regex_error(&e)));
    }
}

fn check_text_template(
    t: &str,
    params: &[String],
    builtins: &[&str],
    p: &FieldPath,
    out: &mut Vec<Problem>,
) {
    match TextTemplate::parse(t) {
        Ok(tpl) => {
            for v in tpl.vars() {
                if !params.iter().any(|x| x == v) && !builtins.contains(&v) {
                    let mut known: Vec<&str> = params.iter().map(String::as_str).collect();
                    known.extend_from_slice(builtins);
                    out.push((
                        p.clone(),
                        format!(
                            "`{{{v}}}` is not a parameter of this route (known: {})",
                            list(&known)
                        ),
                    ));
                }
            }
        }
        Err(msg) => out.push((p.clone(), msg)),
    }
}

fn check_header_ops(ops: &HeaderOps, p: &FieldPath, out: &mut Vec<Problem>) {
    for (i, name) in ops.remove.iter().enumerate() {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            out.push((
                p.key("remove").index(i),
                format!("{name:?} is not a valid header name"),
            ));
        }
    }
    for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
        for (name, value) in map {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                out.push((
                    p.key(field).key(name),
                    format!("{name:?} is not a valid header name"),
                ));
            } else if http::HeaderValue::from_str(value).is_err() {
                out.push((
                    p.key(field).key(name),
                    "header values must be visible ASCII text".into(),
                ));
            }
        }
    }
}

fn check_host_port(s: &str) -> Result<(), String> {
    let bad = || {
        format!("{s:?} is not host:port (examples: 127.0.0.1:9000, [::1]:9000, api.internal:80)")
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(['/', ' ', '@']) {
        return Err(bad());
    }
    Ok(())
}

fn check_host_pattern(h: &str) -> Result<(), String> {
    let bare = h.strip_prefix("*.").unwrap_or(h);
    let ok = !bare.is_empty()
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{h:?} is not a host name or `*.domain` wildcard (no ports, no other wildcards)"
        ))
    }
}

fn list(items: &[&str]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// The regex crate's message without its multi-line caret diagram.
fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid");
    format!(
        "invalid regular expression: {}",
        last.trim().trim_start_matches("error: ")
    )
}
