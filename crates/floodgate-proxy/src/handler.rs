//! One request's way through the gateway: limits → route → redirect or proxy → response
//! headers, with completion (metrics, access log, in-flight count) attached to the response
//! body so it runs when the last byte is sent.
//!
//! Policies from later work (auth, rate limits, cache, breakers) slot in between routing and
//! proxying, in the phase order of docs/architecture.md.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::access_log::{Record, rfc3339};
use crate::admission::{Admission, Permit, Refused};
use crate::auth::Denied;
use crate::body::{BodyEnd, Completion, ResponseBody};
use crate::breaker::{Call, Outcome as CallOutcome, ScopedBreaker};
use crate::cache::{Lookup, Pending, surrogate};
use crate::client_body::{ClientBody, Inbound, read_whole};
use crate::conn::ConnInfo;
use crate::fallback::FallbackAction;
use crate::gateway::Gateway;
use crate::headers::{Forwarding, add_forwarding, remove_hop_by_hop};
use crate::idempotency::Begin;
use crate::metrics::RouteMetrics;
use crate::mirror::MirrorPlan;
use crate::problem::Problem;
use crate::ratelimit::key::RequestFacts;
use crate::ratelimit::{LimitHeaders, Outcome};
use crate::request_body::RequestBody;
use crate::request_id;
use crate::router::RequestView;
use crate::snapshot::{Action, Route, Snapshot};
use crate::upstream::{
    Allowance, ExchangeError, Failure, InFlight, Remake, RequestHead, RetryPolicy, Target,
    UpstreamBody, UpstreamConn, UpstreamSet,
};
use floodgate_config::resilience::Criticality;

const RATELIMIT_POLICY: header::HeaderName = header::HeaderName::from_static("ratelimit-policy");
const RATELIMIT: header::HeaderName = header::HeaderName::from_static("ratelimit");

/// Handles one request; never fails: errors become problem+json responses.
pub async fn handle(
    gw: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let snap = gw.snapshot();
    conn.state.begin();
    let req = req.map(|body| ClientBody::new(body, conn.body_read));
    let mut done = Done::new(
        gw.clone(),
        conn.clone(),
        request_id::from_headers(req.headers()).0,
        req.method().clone(),
        req.uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        req.version(),
        snap.unmatched.clone(),
    );
    let result = route_and_send(&snap, &conn, req, &mut done).await;
    let result = match result {
        Err(problem) => fall_back(problem, &conn, &mut done).await,
        ok => ok,
    };
    let mut resp = match result {
        Ok(resp) => resp,
        Err(problem) => {
            done.error = Some(problem.code());
            let mut resp = problem_response(problem, &done);
            let access = done.compiled_route.as_ref().and_then(|r| r.access.as_ref());
            let challenge = match (problem, access, done.auth_refusal) {
                (Problem::Unauthorized(_), Some(a), refusal) => {
                    Some(a.challenge_for(refusal.unwrap_or(crate::auth::Refusal::NONE)))
                }
                (Problem::Forbidden, Some(a), None) if done.scope_refused => a.scope_challenge(),
                _ => None,
            };
            if let Some(c) = challenge {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, c);
            }
            resp
        }
    };
    done.status = resp.status();
    learn(&resp, &mut done);
    mark_uncached(&mut resp, &done);
    resp.headers_mut()
        .insert(request_id::HEADER, done.request_id.clone());
    if let Some(route) = &done.compiled_route {
        for (name, value) in &route.security_headers {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
    }
    for (name, value) in std::mem::take(&mut done.cors_headers) {
        if name == header::VARY {
            resp.headers_mut().append(name, value);
        } else {
            resp.headers_mut().insert(name, value);
        }
    }
    if let Some(hsts) = snap
        .listeners
        .get(conn.listener)
        .and_then(|l| l.hsts.as_ref())
    {
        resp.headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    if let Some((policy, state)) = done
        .limit_headers
        .take()
        .and_then(LimitHeaders::into_values)
    {
        resp.headers_mut().insert(RATELIMIT_POLICY, policy);
        resp.headers_mut().insert(RATELIMIT, state);
    }
    resp.body_mut().on_done(Box::new(done));
    resp
}

/// Gives a response of a caching route that the cache did not mark its `Cache-Status`
/// (RFC 9211), so every response of such a route says what the cache did: the gateway's
/// own answer names its problem (`detail=rate-limited`), and a method the cache does not
/// serve was forwarded for it (`fwd=method`).
fn mark_uncached(resp: &mut Response<ResponseBody>, done: &Done) {
    let caching = done
        .compiled_route
        .as_ref()
        .is_some_and(|r| r.cache.is_some());
    if !caching || resp.headers().contains_key(crate::cache::CACHE_STATUS) {
        return;
    }
    let value = match done.error {
        Some(code) => format!("Floodgate; detail={code}"),
        None if !matches!(done.method, Method::GET | Method::HEAD) => {
            "Floodgate; fwd=method".into()
        }
        None => "Floodgate; detail=gateway".into(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(crate::cache::CACHE_STATUS, v);
    }
}

/// Teaches the route's existence filter the key of a successful upstream response, and
/// the id a 201 `Location` names.
fn learn(resp: &Response<ResponseBody>, done: &mut Done) {
    let Some(key) = done.learn_key.take() else {
        return;
    };
    let Some(ex) = done
        .compiled_route
        .as_ref()
        .and_then(|r| r.existence.as_ref())
    else {
        return;
    };
    if !resp.status().is_success() || done.fallback.is_some() {
        return;
    }
    if resp.status() == StatusCode::CREATED
        && let Some(id) = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::existence::location_key)
    {
        ex.insert(id.as_bytes());
    }
    if !key.is_empty() {
        ex.insert(&key);
    }
}

/// The route's fallback for `problem`, if it has one that covers it; else the problem.
async fn fall_back(
    problem: Problem,
    conn: &ConnInfo,
    done: &mut Done,
) -> Result<Response<ResponseBody>, Problem> {
    let Some(route) = done.compiled_route.clone() else {
        return Err(problem);
    };
    let Some(plan) = &route.fallback else {
        return Err(problem);
    };
    let Some((trigger, counter)) = plan.covers(problem) else {
        return Err(problem);
    };
    let mut resp = match &plan.action {
        FallbackAction::Static {
            status,
            headers,
            body,
        } => {
            let mut resp = Response::new(ResponseBody::full(body.clone()));
            *resp.status_mut() = *status;
            *resp.headers_mut() = headers.clone();
            route.response_headers.apply(resp.headers_mut());
            resp
        }
        FallbackAction::Upstream(upstream) => {
            // Only a request that can be sent again: one without a body.
            let Some(replay) = done.replay.take() else {
                return Err(problem);
            };
            let mut req = Request::new(Inbound::Empty);
            *req.method_mut() = replay.method;
            *req.uri_mut() = replay.uri;
            *req.version_mut() = replay.version;
            *req.headers_mut() = replay.headers;
            let plan = Forward {
                hash: None,
                call: admit_upstream(upstream, done)?,
                route: route.clone(),
                upstream: upstream.clone(),
                new_path: replay.new_path,
                host: replay.host,
                body_limit: replay.body_limit,
            };
            // The places held for the first upstream are not needed for the other one.
            done.permits.clear();
            Box::pin(proxy(req, conn, plan, done)).await?
        }
    };
    counter.inc();
    done.error = Some(problem.code());
    done.fallback = Some(trigger.as_str());
    resp.headers_mut().insert(
        crate::fallback::HEADER,
        HeaderValue::from_static(trigger.as_str()),
    );
    Ok(resp)
}

/// The same URL over HTTPS (the port left out when it is 443).
fn https_redirect(
    host: &str,
    port: u16,
    status: StatusCode,
    uri: &Uri,
) -> Result<Response<ResponseBody>, Problem> {
    let target = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let location = if port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{port}{target}")
    };
    let value = HeaderValue::from_str(&location)
        .map_err(|_| Problem::BadRequest("The redirect target is not a valid header value."))?;
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::LOCATION, value);
    Ok(resp)
}

/// Whether the WAF reads this request's body: one of known length within its limit, or
/// one of unknown length (chunked, or HTTP/2 without `Content-Length`), read up to the
/// limit to learn whether it fits.
fn wants_inspection(waf: &crate::waf::WafPolicy, req: &Request<Inbound>) -> bool {
    match req
        .headers()
        .get(header::CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|v| v.parse::<u64>().ok()))
    {
        Some(declared) => declared.is_some_and(|len| len > 0 && len <= waf.body_limit),
        None => waf.body_limit > 0 && !req.body().is_end_stream(),
    }
}

/// The answer to a request the route's `auth` refused: counted by method and reason,
/// logged at info with the request id (never the credential), and kept for the response's
/// challenge.
fn refused(denied: Denied, route: &Route, done: &mut Done) -> Problem {
    let (problem, method, reason) = match denied {
        Denied::Unauthenticated(r) => {
            done.auth_refusal = Some(r);
            (Problem::Unauthorized(r.description()), r.method, r.reason)
        }
        Denied::Forbidden(rule) => {
            done.scope_refused = rule == "scope";
            (Problem::Forbidden, "authorization", rule)
        }
    };
    done.gw.metrics.auth_refusal(&route.name, method, reason);
    tracing::info!(
        route = %route.name,
        method,
        reason,
        request_id = done.request_id.to_str().unwrap_or_default(),
        "authentication refused"
    );
    problem
}

/// Counts and logs a WAF match; in block mode, refuses the request.
fn waf_matched(
    waf: &crate::waf::WafPolicy,
    rule: &'static str,
    route: &Route,
    done: &Done,
) -> Result<(), Problem> {
    let block = waf.mode == floodgate_config::waf::WafMode::Block;
    let mode = if block { "block" } else { "monitor" };
    done.gw.metrics.waf_match(&route.name, rule, mode);
    tracing::warn!(
        route = %route.name,
        rule,
        mode,
        request_id = done.request_id.to_str().unwrap_or_default(),
        "WAF match"
    );
    if block {
        Err(Problem::WafBlocked)
    } else {
        Ok(())
    }
}

/// What is needed to send a bodiless request again, to a fallback upstream.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: http::HeaderMap,
    host: HeaderValue,
    new_path: Option<String>,
    body_limit: u64,
}

fn problem_response(problem: Problem, done: &Done) -> Response<ResponseBody> {
    let rid = done.request_id.to_str().unwrap_or_default();
    problem
        .to_response(done.target.as_str(), rid)
        .map(ResponseBody::full)
}

async fn route_and_send(
    snap: &Snapshot,
    conn: &ConnInfo,
    mut req: Request<ClientBody>,
    done: &mut Done,
) -> Result<Response<ResponseBody>, Problem> {
    let Some(plan) = snap.listeners.get(conn.listener) else {
        return Err(Problem::NoRoute);
    };
    check_limits(&req, &plan.limits)?;
    if let Some(canonical) = canonical_target(req.uri(), &plan.paths)? {
        done.target = canonical
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = canonical;
    }
    let host_value = crate::host::of_request(req.uri(), req.version(), req.headers())
        .map_err(|e| Problem::BadRequest(e.detail()))?;
    let host_text = host_value
        .to_str()
        .map_err(|_| Problem::BadRequest("The Host header is not valid text."))?;
    let host = crate::host::routing_name(host_text);
    if let Some((port, status)) = plan.redirect_to_https {
        return https_redirect(&host, port, status, req.uri());
    }
    if let Some(issuer) = &snap.oauth2 {
        let path = req.uri().path();
        if path == issuer.token_path {
            done.route = Some(Arc::from("(oauth2 token)"));
            let gw = done.gw.clone();
            return Ok(issuer.token(req, &gw.basic).await.map(ResponseBody::full));
        }
        if path == issuer.jwks_path {
            done.route = Some(Arc::from("(oauth2 jwks)"));
            return Ok(issuer.jwks_response().map(ResponseBody::full));
        }
    }
    let path = req.uri().path();
    let view = RequestView {
        host: &host,
        path,
        query: req.uri().query(),
        method: req.method(),
        headers: req.headers(),
    };
    let m = plan.router.find(&view).ok_or(Problem::NoRoute)?;
    let route: &Arc<Route> = m.value;
    done.route = Some(route.name.clone());
    done.metrics = route.metrics.clone();
    done.compiled_route = Some(route.clone());
    done.criticality = plan
        .criticality_header
        .as_ref()
        .filter(|_| plan.trusted_proxies.trusts(conn.remote.ip()))
        .and_then(|h| req.headers().get(h)?.to_str().ok())
        .and_then(Criticality::parse)
        .unwrap_or(route.criticality);
    if let Some(cors) = &route.cors {
        if let Some(answer) = cors.preflight(req.method(), req.headers()) {
            return Ok(answer);
        }
        done.cors_headers = cors.response_headers(req.headers().get(header::ORIGIN));
    }
    if let Some(waf) = &route.waf
        && let Some(rule) = waf.check_head(path, req.uri().query(), req.headers())
    {
        waf_matched(waf, rule, route, done)?;
    }
    if let Some(ip) = &route.ip
        && !ip.permits(
            plan.trusted_proxies
                .client_ip(conn.remote.ip(), req.headers()),
        )
    {
        return Err(Problem::Forbidden);
    }
    if let Some(access) = &route.access {
        let gw = done.gw.clone();
        // Boxed (see `forward` below): checking credentials can fetch keys, a large future.
        let passed = Box::pin(access.check(
            &snap.identities,
            &gw.basic,
            req.headers(),
            req.uri().query(),
            conn.tls.as_ref().and_then(|t| t.client_identity.as_deref()),
        ))
        .await
        .map_err(|d| refused(d, route, done))?;
        done.consumer = Some(passed.identity.name.clone());
        done.claim_headers = passed.headers;
    }
    let consumer = done.consumer.clone();
    if let Some(ex) = &route.existence {
        let client_ip = plan
            .trusted_proxies
            .client_ip(conn.remote.ip(), req.headers());
        let facts = request_facts(&req, route, &m.params, client_ip, consumer.as_deref());
        let mut key = Vec::new();
        crate::ratelimit::key::render(std::slice::from_ref(&ex.key), &facts, &mut key);
        // Only reads are filtered: a PUT may create the key it names.
        let read = matches!(*req.method(), Method::GET | Method::HEAD);
        // Boxed (see `forward` below): a filter with a shared tier has a large future.
        if read && !Box::pin(ex.admits(&key)).await {
            return Err(Problem::Absent);
        }
        if ex.learn {
            done.learn_key = Some(key);
        }
    }
    if !route.limits.is_empty() {
        let client_ip = plan
            .trusted_proxies
            .client_ip(conn.remote.ip(), req.headers());
        let facts = request_facts(&req, route, &m.params, client_ip, consumer.as_deref());
        enforce(&route.limits, &facts, done).await?;
    }
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    let primary = route
        .cache
        .as_ref()
        .map(|_| format!("{host}{}", done.target.as_str()));
    let mut pending = None;
    if let (Some(cache), Some(primary)) = (&route.cache, &primary)
        && read
    {
        let head = req.method() == Method::HEAD;
        match cache.lookup(primary, req.headers(), head).await? {
            Lookup::Hit(resp) => {
                done.cache = Some("hit");
                return Ok(resp);
            }
            Lookup::HitAndRefresh(resp, refresh) => {
                done.cache = Some("stale");
                spawn_refresh(Refresh {
                    route: route.clone(),
                    conn: done.conn.clone(),
                    gw: done.gw.clone(),
                    host: host_value.clone(),
                    uri: req.uri().clone(),
                    headers: req.headers().clone(),
                    new_path: route.rewrite.as_ref().map(|rw| rw.apply(path, &m.params)),
                    body_limit: plan.limits.max_body_bytes.0,
                    pending: refresh,
                });
                return Ok(resp);
            }
            Lookup::Forward(p) => {
                done.cache = Some("miss");
                if !cache.miss_limits.is_empty() {
                    let client_ip = plan
                        .trusted_proxies
                        .client_ip(conn.remote.ip(), req.headers());
                    let facts =
                        request_facts(&req, route, &m.params, client_ip, consumer.as_deref());
                    enforce(&cache.miss_limits, &facts, done).await?;
                }
                done.conditionals = p.conditionals.clone();
                pending = Some(p);
            }
        }
    }
    let params: Vec<(String, String)> = m
        .params
        .iter()
        .map(|(k, v)| (k.clone(), (*v).to_owned()))
        .collect();
    drop(m);
    let (req, claim) = match &route.idempotency {
        Some(idem) => {
            let scope = match &consumer {
                Some(c) => format!("consumer:{c}"),
                None => format!(
                    "ip:{}",
                    plan.trusted_proxies
                        .client_ip(conn.remote.ip(), req.headers())
                ),
            };
            let target = done.target.as_str().to_owned();
            // Boxed (see `forward` below).
            let begun = Box::pin(idem.begin(req, &scope, &target)).await;
            done.idempotency = match &begun {
                Ok(Begin::Pass(_)) => None,
                Ok(Begin::Replay(_)) => Some("replayed"),
                Ok(Begin::Forward(..)) => Some("first"),
                Err(_) => Some("refused"),
            };
            match begun? {
                Begin::Pass(req) => (req.map(Inbound::Stream), None),
                Begin::Replay(resp) => return Ok(resp),
                Begin::Forward(req, claim) => (req, Some(claim)),
            }
        }
        None => (req.map(Inbound::Stream), None),
    };
    // Boxed, with the proxy step inside: hyper keeps each connection's request future
    // allocated while the connection idles, so the large state of forwarding lives only as
    // long as a request. The same goes for the other large steps below, which only routes
    // with those features take (each is a box per request there).
    let result = Box::pin(forward(
        req,
        &params,
        route,
        plan,
        conn,
        &host_value,
        consumer,
        done,
    ))
    .await;
    let result = match (&route.idempotency, claim) {
        (Some(idem), Some(claim)) => idem.complete(claim, result),
        _ => result,
    };
    match (&route.cache, pending, primary) {
        (Some(cache), Some(p), _) => p.complete(cache, result),
        (Some(cache), None, Some(primary)) if !read => {
            if let Ok(resp) = &result {
                cache.invalidate(&host, &primary, resp);
            }
            result
        }
        _ => result,
    }
}

/// What a background refresh of a cache entry needs from the request that started it.
struct Refresh {
    route: Arc<Route>,
    conn: Arc<ConnInfo>,
    gw: Arc<Gateway>,
    host: HeaderValue,
    uri: Uri,
    headers: http::HeaderMap,
    new_path: Option<String>,
    body_limit: u64,
    pending: Box<Pending>,
}

/// Refreshes a cache entry in the background (stale-while-revalidate, early refresh): a
/// GET like the client's goes upstream with the entry's validators; the answer is stored
/// (or merged, after a 304) as its body is read to the end. It has its own request id and
/// access-log line (`"cache": "refresh"`).
fn spawn_refresh(r: Refresh) {
    let Some(upstream) = r.route.action.upstream() else {
        return;
    };
    tokio::spawn(async move {
        let Refresh {
            route,
            conn,
            gw,
            host,
            uri,
            mut headers,
            new_path,
            body_limit,
            pending,
        } = r;
        let Some(cache) = route.cache.as_ref() else {
            return;
        };
        conn.state.begin();
        let target = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut done = Done::new(
            gw,
            conn.clone(),
            request_id::generate(),
            Method::GET,
            target,
            Version::HTTP_11,
            route.metrics.clone(),
        );
        done.route = Some(route.name.clone());
        done.compiled_route = Some(route.clone());
        done.cache = Some("refresh");
        done.conditionals = pending.conditionals.clone();
        for name in [
            header::CONTENT_LENGTH,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
        ] {
            headers.remove(name);
        }
        let mut req = Request::new(Inbound::Empty);
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        let result = match admit_upstream(&upstream, &mut done) {
            Ok(call) => {
                let plan = Forward {
                    hash: None,
                    call,
                    route: route.clone(),
                    upstream,
                    new_path,
                    host,
                    body_limit,
                };
                proxy(req, &conn, plan, &mut done).await
            }
            Err(p) => Err(p),
        };
        match pending.complete(cache, result) {
            Ok(resp) => {
                done.status = resp.status();
                let mut body = resp.into_body();
                body.on_done(Box::new(done));
                // Reading it to the end stores it.
                while let Some(frame) = body.frame().await {
                    if frame.is_err() {
                        break;
                    }
                }
            }
            Err(p) => {
                done.status = p.status();
                done.error = Some(p.code());
                Box::new(done).done(0, BodyEnd::Complete);
            }
        }
    });
}

/// Checks `limits`; a refusal is the problem that answers.
async fn enforce(
    limits: &crate::ratelimit::RouteLimits,
    facts: &RequestFacts<'_>,
    done: &mut Done,
) -> Result<(), Problem> {
    match limits.check(facts).await {
        Outcome::Admitted {
            delay,
            headers,
            dry_run_hit,
        } => {
            done.limit_headers = headers;
            if let Some(name) = dry_run_hit {
                done.rate_limit = Some(name);
                done.dry_run = true;
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(())
        }
        Outcome::Rejected {
            limit,
            retry_after,
            headers,
        } => {
            done.limit_headers = Some(headers);
            done.rate_limit = Some(limit);
            let nanos = u64::try_from(retry_after.as_nanos()).unwrap_or(u64::MAX);
            Err(Problem::RateLimited {
                retry_after_secs: nanos.div_ceil(1_000_000_000),
            })
        }
        Outcome::Unavailable { limit } => {
            done.rate_limit = Some(limit);
            Err(Problem::LimiterUnavailable)
        }
    }
}

/// A matched request past its policies: through the route's bulkhead, then redirected or
/// proxied (breaker, fault, WAF body inspection, upstream).
#[allow(clippy::too_many_arguments)]
async fn forward(
    req: Request<Inbound>,
    params: &[(String, String)],
    route: &Arc<Route>,
    plan: &crate::snapshot::ListenerPlan,
    conn: &ConnInfo,
    host_value: &HeaderValue,
    consumer: Option<Arc<str>>,
    done: &mut Done,
) -> Result<Response<ResponseBody>, Problem> {
    let path = req.uri().path();
    let params: Vec<(String, &str)> = params
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str()))
        .collect();
    enter(route.concurrency.as_ref(), done).await?;
    match &route.action {
        Action::Redirect { location, status } => {
            let query = req
                .uri()
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            let loc = location.render(|name| match name {
                "path" => Some(path),
                "query" => Some(query.as_str()),
                _ => params.iter().find(|(k, _)| k == name).map(|(_, v)| *v),
            });
            let value = HeaderValue::from_str(&loc).map_err(|_| {
                Problem::BadRequest("The redirect target is not a valid header value.")
            })?;
            let mut resp = Response::new(ResponseBody::empty());
            *resp.status_mut() = *status;
            resp.headers_mut().insert(header::LOCATION, value);
            route.response_headers.apply(resp.headers_mut());
            Ok(resp)
        }
        Action::Proxy(_) | Action::Split(_) => {
            let upstream = route.action.upstream().ok_or(Problem::NoTarget)?;
            let client_ip = || {
                plan.trusted_proxies
                    .client_ip(conn.remote.ip(), req.headers())
            };
            let hash = upstream
                .hash_on()
                .map(|on| on.hash(client_ip(), req.headers(), &params));
            let call = match &route.breaker {
                None => None,
                Some(b) => {
                    let mut key = Vec::new();
                    if let Some(parts) = b.key_parts() {
                        let facts =
                            request_facts(&req, route, &params, client_ip(), consumer.as_deref());
                        crate::ratelimit::key::render(parts, &facts, &mut key);
                    }
                    Some(admit(b, &key)?)
                }
            };
            let forward = Forward {
                hash,
                call: admit_upstream(&upstream, done)?,
                new_path: route.rewrite.as_ref().map(|rw| rw.apply(path, &params)),
                body_limit: plan.limits.max_body_bytes.0,
                route: route.clone(),
                upstream,
                host: host_value.clone(),
            };
            if let Some(fb) = &route.fallback
                && matches!(fb.action, FallbackAction::Upstream(_))
                && req.body().is_end_stream()
            {
                done.replay = Some(Replay {
                    method: req.method().clone(),
                    uri: req.uri().clone(),
                    version: req.version(),
                    headers: req.headers().clone(),
                    host: forward.host.clone(),
                    new_path: forward.new_path.clone(),
                    body_limit: forward.body_limit,
                });
            }
            if let Some(fault) = &route.fault {
                let injected = fault.draw(req.headers());
                if let Some(delay) = injected.delay {
                    fault.delays.inc();
                    tokio::time::sleep(delay).await;
                }
                if let Some(status) = injected.abort {
                    fault.aborts.inc();
                    if let Some(call) = call {
                        call.finish(CallOutcome::Status(status));
                    }
                    return Err(Problem::FaultAbort(status));
                }
            }
            let req = match &route.waf {
                Some(waf) if wants_inspection(waf, &req) => {
                    let (parts, body) = req.into_parts();
                    // A body longer than the limit is not inspected (nor held): it
                    // streams on whole, as one whose declared length is over the limit.
                    let body = match body {
                        Inbound::Stream(mut body) => {
                            match body.read_within(waf.body_limit).await? {
                                Some(bytes) => Inbound::Held(bytes),
                                None => Inbound::Stream(body),
                            }
                        }
                        other => other,
                    };
                    if let Inbound::Held(bytes) = &body
                        && let Some(rule) = waf.check_text(bytes)
                    {
                        waf_matched(waf, rule, route, done)?;
                    }
                    Request::from_parts(parts, body)
                }
                _ => req,
            };
            let result = proxy(req, conn, forward, done).await;
            if let Some(call) = call {
                finish(call, &result);
            }
            result
        }
    }
}

/// What policy keys (rate limits, keyed breakers) are made of, for one request.
fn request_facts<'a, B>(
    req: &'a Request<B>,
    route: &'a Route,
    params: &'a [(String, &'a str)],
    client_ip: std::net::IpAddr,
    consumer: Option<&'a str>,
) -> RequestFacts<'a> {
    RequestFacts {
        client_ip,
        route: &route.name,
        method: req.method(),
        headers: req.headers(),
        query: req.uri().query(),
        params,
        consumer,
    }
}

/// A call through `breaker`, or the problem that answers when it is open.
fn admit(breaker: &Arc<ScopedBreaker>, key: &[u8]) -> Result<Call, Problem> {
    breaker.acquire(key).map_err(|r| Problem::CircuitOpen {
        retry_after_secs: r.retry_after.div_ceil(1_000_000_000).max(1),
    })
}

/// A call through `upstream`'s breaker, if it has one (naming the upstream for the log).
fn admit_upstream(upstream: &UpstreamSet, done: &mut Done) -> Result<Option<Call>, Problem> {
    done.upstream = Some(upstream.name.clone());
    upstream.breaker.as_ref().map(|b| admit(b, b"")).transpose()
}

/// Reports a call by how the exchange ended; the gateway's own refusals and client
/// errors count as neither success nor failure.
fn finish(call: Call, result: &Result<Response<ResponseBody>, Problem>) {
    let outcome = match result {
        Ok(resp) => Some(CallOutcome::Status(resp.status())),
        Err(p) => outcome_of(*p),
    };
    if let Some(o) = outcome {
        call.finish(o);
    }
}

fn outcome_of(p: Problem) -> Option<CallOutcome> {
    match p {
        Problem::UpstreamTimeout => Some(CallOutcome::Timeout),
        Problem::UpstreamConnect | Problem::NoTarget => Some(CallOutcome::Connect),
        Problem::UpstreamBroken => Some(CallOutcome::Reset),
        Problem::FaultAbort(status) => Some(CallOutcome::Status(status)),
        _ => None,
    }
}

/// What routing decided for a request that is proxied.
struct Forward {
    /// The request's consistent-hash key hash, if the upstream hashes.
    hash: Option<u64>,
    /// The call through the upstream's breaker, admitted before anything else is spent on
    /// the request.
    call: Option<Call>,
    route: Arc<Route>,
    upstream: Arc<UpstreamSet>,
    /// The rewritten path, if the route rewrites.
    new_path: Option<String>,
    /// The host the client asked for, forwarded as `Host`.
    host: HeaderValue,
    /// The listener's request body limit.
    body_limit: u64,
}

async fn proxy(
    req: Request<Inbound>,
    conn: &ConnInfo,
    plan: Forward,
    done: &mut Done,
) -> Result<Response<ResponseBody>, Problem> {
    let Forward {
        hash,
        call,
        route,
        upstream,
        new_path,
        host,
        body_limit,
    } = plan;
    let (route, upstream, host) = (&*route, &*upstream, &host);
    enter(upstream.concurrency.as_ref(), done).await?;
    let (parts, body) = req.into_parts();
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > body_limit
    {
        return Err(Problem::BodyTooLarge);
    }
    // A credential the gateway consumed from the query goes no further.
    let stripped = route
        .access
        .as_ref()
        .and_then(|a| a.hide_query.as_deref())
        .zip(parts.uri.query())
        .and_then(|(name, query)| crate::auth::without_param(query, name));
    let pq = match (new_path, stripped) {
        (None, None) => parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        (path, stripped) => {
            let path = path.as_deref().unwrap_or(parts.uri.path());
            let query = match &stripped {
                Some(q) => Some(q.as_str()).filter(|q| !q.is_empty()),
                None => parts.uri.query(),
            };
            let s = match query {
                Some(q) => format!("{path}?{q}"),
                None => path.to_owned(),
            };
            PathAndQuery::try_from(s)
                .map_err(|_| Problem::BadRequest("The rewritten path is not valid."))?
        }
    };
    // Origin-form target: the connection is already to the target.
    let uri = Uri::from(pq);
    let mut headers = parts.headers;
    remove_hop_by_hop(&mut headers);
    if let Some(access) = &route.access {
        for name in access.hide.iter().chain(&access.strip) {
            headers.remove(name);
        }
        for (name, value) in &done.claim_headers {
            headers.insert(name.clone(), value.clone());
        }
    }
    add_forwarding(
        &mut headers,
        &Forwarding {
            client: &conn.client,
            host: Some(host),
            proto: if conn.tls.is_some() { "https" } else { "http" },
            via: via_for(parts.version),
        },
    );
    headers.insert(request_id::HEADER, done.request_id.clone());
    headers.insert(header::HOST, host.clone());
    route.request_headers.apply(&mut headers);
    if route.cache.is_some() {
        headers.append(&surrogate::SURROGATE_CAPABILITY, surrogate::capability());
    }
    if !done.conditionals.is_empty() {
        headers.remove(header::IF_NONE_MATCH);
        headers.remove(header::IF_MODIFIED_SINCE);
        for (name, value) in &done.conditionals {
            headers.insert(name.clone(), value.clone());
        }
    }
    let head = RequestHead {
        method: parts.method,
        uri,
        headers,
    };
    let exchange = send_with_retries(
        upstream,
        hash,
        head,
        body,
        body_limit,
        route.mirror.as_ref(),
        done,
    );
    let result = match upstream.total_timeout {
        None => exchange.await,
        Some(total) => match tokio::time::timeout(total, exchange).await {
            Ok(result) => result,
            Err(_) => Err(upstream_failure(
                done,
                upstream,
                Problem::UpstreamTimeout,
                "timeout",
            )),
        },
    };
    if let Some(call) = call {
        match &result {
            Ok((_, resp, _)) => call.finish(CallOutcome::Status(resp.status())),
            Err(p) => {
                if let Some(o) = outcome_of(*p) {
                    call.finish(o);
                }
            }
        }
    }
    let (target, resp, conn) = result?;
    let (mut parts, body) = resp.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    parts.headers.append(
        header::VIA,
        HeaderValue::from_static(via_for(parts.version)),
    );
    // The gateway answers with its own version (RFC 9110 §6.2): an HTTP/1.0 upstream
    // must not turn the client's connection into a 1.0 one that closes after each answer.
    parts.version = Version::HTTP_11;
    route.response_headers.apply(&mut parts.headers);
    Ok(Response::from_parts(
        parts,
        ResponseBody::pooled(body, conn, target.pool.clone()),
    ))
}

/// Sends the request to a target of `upstream`, and on a failure the retry policy covers,
/// to another, within the attempts and the budget. A body is only sent again if it could
/// be held whole (no longer than the policy's replay buffer); otherwise it streams through
/// once and is never retried.
async fn send_with_retries(
    upstream: &UpstreamSet,
    hash: Option<u64>,
    head: RequestHead,
    body: Inbound,
    body_limit: u64,
    mirror: Option<&MirrorPlan>,
    done: &mut Done,
) -> Result<(Arc<Target>, Response<UpstreamBody>, UpstreamConn), Problem> {
    let policy = upstream.retry.as_ref();
    if let Some(p) = policy {
        p.record_request();
    }
    let declared = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let body = match body {
        Inbound::Stream(b) => b,
        Inbound::Empty => {
            return send_again(upstream, hash, head, Bytes::new(), mirror, done).await;
        }
        Inbound::Held(bytes) => {
            return send_again(upstream, hash, head, bytes, mirror, done).await;
        }
    };
    // A body kept for replay, or the stream (sent once).
    let replay: Option<Bytes> = match policy {
        Some(_) if http_body::Body::is_end_stream(&body) => Some(Bytes::new()),
        Some(p) if declared.is_some_and(|len| len <= p.replay_limit.min(body_limit)) => {
            Some(read_whole(body, p.replay_limit.min(body_limit)).await?)
        }
        _ => {
            if let Some(m) = mirror
                && http_body::Body::is_end_stream(&body)
            {
                m.send(&head.method, &head.uri, &head.headers, Bytes::new());
            }
            let req = head.request(RequestBody::new(body, body_limit));
            let (target, call) = pick_target(upstream, hash, &[])?;
            // Only a stream that turned out empty can be made again.
            let remake = || head.request(RequestBody::empty());
            return match try_once(upstream, &target, call, req, &remake, done).await {
                Ok((resp, conn)) => Ok((target, resp, conn)),
                Err(e) => Err(e.problem(done, upstream)),
            };
        }
    };
    send_again(
        upstream,
        hash,
        head,
        replay.unwrap_or_default(),
        mirror,
        done,
    )
    .await
}

/// Sends a request whose whole body is held (`replay`), retrying as the policy allows.
async fn send_again(
    upstream: &UpstreamSet,
    hash: Option<u64>,
    head: RequestHead,
    replay: Bytes,
    mirror: Option<&MirrorPlan>,
    done: &mut Done,
) -> Result<(Arc<Target>, Response<UpstreamBody>, UpstreamConn), Problem> {
    let policy = upstream.retry.as_ref();
    if let Some(m) = mirror {
        m.send(&head.method, &head.uri, &head.headers, replay.clone());
    }
    let remake = || head.request(RequestBody::buffered(replay.clone()));
    let Some(policy) = policy else {
        // One try: no list of tried targets to keep.
        let (target, call) = pick_target(upstream, hash, &[])?;
        return match try_once(upstream, &target, call, remake(), &remake, done).await {
            Ok((resp, conn)) => Ok((target, resp, conn)),
            Err(e) => Err(e.problem(done, upstream)),
        };
    };
    let mut tried: Vec<Arc<str>> = Vec::new();
    let mut retry = 0;
    loop {
        let (target, call) = pick_target(upstream, hash, &tried)?;
        tried.push(target.address.clone());
        let failure = match try_once(upstream, &target, call, remake(), &remake, done).await {
            Ok((resp, conn)) if policy.retries_status(resp.status()) => {
                // Kept in case no retry happens; dropped (with its connection) if one does.
                let status = resp.status();
                let failure = Failure::Status(status);
                match retry_decision(policy, failure, &head.method, retry, upstream, done) {
                    true => {
                        drop((resp, conn));
                        failure
                    }
                    false => return Ok((target, resp, conn)),
                }
            }
            Ok((resp, conn)) => return Ok((target, resp, conn)),
            Err(TryError::Client(p)) => return Err(p),
            Err(TryError::Upstream(f)) => {
                if !retry_decision(policy, f, &head.method, retry, upstream, done) {
                    return Err(failure_problem(done, upstream, f));
                }
                f
            }
        };
        done.gw
            .metrics
            .upstream_retry(&upstream.name, failure.label());
        tokio::time::sleep(policy.backoff(retry)).await;
        retry += 1;
    }
}

/// The target for the next try, with a call through its breaker if it has one: a target
/// whose breaker refuses (open, or every half-open probe out) is passed over for another.
fn pick_target(
    upstream: &UpstreamSet,
    hash: Option<u64>,
    tried: &[Arc<str>],
) -> Result<(Arc<Target>, Option<Call>), Problem> {
    let mut refused = None;
    let mut skipped: Vec<Arc<str>> = tried.to_vec();
    for _ in 0..=upstream.target_count() {
        let Some(target) = upstream.pick_untried(hash, &skipped) else {
            break;
        };
        match target.breaker.as_ref().map(|b| admit(b, b"")) {
            None => return Ok((target, None)),
            Some(Ok(call)) => return Ok((target, Some(call))),
            Some(Err(p)) => {
                refused = Some(p);
                skipped.push(target.address.clone());
            }
        }
    }
    // No target: if breakers hold them, say so.
    Err(refused.unwrap_or_else(|| {
        if upstream.has_open_target_breaker() {
            Problem::CircuitOpen {
                retry_after_secs: 1,
            }
        } else {
            Problem::NoTarget
        }
    }))
}

/// Whether to retry after `failure`; counts a retry the budget refused.
fn retry_decision(
    p: &RetryPolicy,
    failure: Failure,
    method: &Method,
    retry: u32,
    upstream: &UpstreamSet,
    done: &Done,
) -> bool {
    if !p.covers(failure, method) {
        return false;
    }
    match p.allow(retry) {
        Allowance::Retry => true,
        Allowance::AttemptsUsed => false,
        Allowance::BudgetSpent => {
            done.gw.metrics.retry_budget_exhausted(&upstream.name);
            false
        }
    }
}

/// Why a try failed: the upstream's failure (counted against it, maybe retried), or the
/// client's (its body broke off, stopped or grew too large), which is answered as the
/// client's and counted nowhere against the upstream.
enum TryError {
    Upstream(Failure),
    Client(Problem),
}

impl TryError {
    /// The answer when the try is not retried (an upstream failure is counted).
    fn problem(self, done: &Done, upstream: &UpstreamSet) -> Problem {
        match self {
            TryError::Upstream(f) => failure_problem(done, upstream, f),
            TryError::Client(p) => p,
        }
    }
}

/// One try at `target`, within the per-try timeout; counts the request in flight there
/// and its latency. The timeout runs from the end of the request body (a slow client's
/// upload is not the upstream's time) and while the upstream leaves the body unread.
async fn try_once(
    upstream: &UpstreamSet,
    target: &Target,
    call: Option<Call>,
    req: Request<RequestBody>,
    remake: Remake<'_>,
    done: &mut Done,
) -> Result<(Response<UpstreamBody>, UpstreamConn), TryError> {
    done.in_flight = Some(target.pool.stats.begin());
    done.target_addr = Some(target.address.clone());
    let sent_at = Instant::now();
    let progress = req.body().progress();
    let send = target.pool.send(req, remake);
    let answered = match &progress {
        None => tokio::time::timeout(upstream.request_timeout, send)
            .await
            .ok(),
        Some(p) => answered_within(upstream.request_timeout, p, send).await,
    };
    if let Some(fault) = progress.as_ref().and_then(|p| p.fault()) {
        // The client's body ended the exchange: nothing here is the upstream's doing.
        return Err(TryError::Client(fault.problem()));
    }
    let result = match answered {
        None => Err(Failure::Timeout),
        Some(Err(ExchangeError::Connect)) => {
            if upstream.has_names {
                // The name may point elsewhere now.
                upstream.resolve_now.notify_one();
            }
            Err(Failure::Connect)
        }
        Some(Err(ExchangeError::Broken(_))) => Err(Failure::Reset),
        Some(Ok(exchange)) => {
            let took = sent_at.elapsed();
            target.pool.stats.observe(took);
            target.metrics.response(
                exchange.0.status().as_u16(),
                took.as_secs_f64(),
                exchange.1.reused,
            );
            Ok(exchange)
        }
    };
    if let Some(call) = call {
        call.finish(match &result {
            Ok((resp, _)) => CallOutcome::Status(resp.status()),
            Err(Failure::Timeout) => CallOutcome::Timeout,
            Err(Failure::Connect) => CallOutcome::Connect,
            Err(Failure::Reset | Failure::Status(_)) => CallOutcome::Reset,
        });
    }
    // Outlier detection counts 5xx, connect errors, resets and timeouts as failures.
    let ok = result
        .as_ref()
        .is_ok_and(|(resp, _)| !resp.status().is_server_error());
    if let Some(time) = upstream.record_outcome(target, ok) {
        done.gw.metrics.ejection(&upstream.name, &target.address);
        tracing::warn!(
            upstream = %upstream.name,
            address = %target.address,
            seconds = time.as_secs(),
            "target ejected: its requests are failing"
        );
    }
    result.map_err(TryError::Upstream)
}

/// `exchange`'s result, or `None` once the upstream has taken longer than `limit` by
/// `progress`'s clock (see [`crate::request_body::Progress::upstream_deadline`]). The timer is
/// checked only when it fires: the body's phases move its deadline without touching it.
async fn answered_within<F: std::future::Future>(
    limit: std::time::Duration,
    progress: &crate::request_body::Progress,
    exchange: F,
) -> Option<F::Output> {
    let mut exchange = std::pin::pin!(exchange);
    let mut timer = std::pin::pin!(tokio::time::sleep(limit));
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(out) = exchange.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(out));
        }
        while timer.as_mut().poll(cx).is_ready() {
            let deadline = progress.upstream_deadline(limit);
            if deadline <= tokio::time::Instant::now() {
                return std::task::Poll::Ready(None);
            }
            timer.as_mut().reset(deadline);
        }
        std::task::Poll::Pending
    })
    .await
}

/// The answer for a failure that is not retried, counted as an upstream error.
fn failure_problem(done: &Done, upstream: &UpstreamSet, f: Failure) -> Problem {
    let (problem, kind) = match f {
        Failure::Timeout => (Problem::UpstreamTimeout, "timeout"),
        Failure::Connect => (Problem::UpstreamConnect, "connect"),
        Failure::Reset | Failure::Status(_) => (Problem::UpstreamBroken, "broken"),
    };
    upstream_failure(done, upstream, problem, kind)
}

/// Takes a place in `bulkhead`, if there is one, held until the response ends.
async fn enter(bulkhead: Option<&Arc<Admission>>, done: &mut Done) -> Result<(), Problem> {
    if let Some(b) = bulkhead {
        let permit = b.acquire(done.criticality).await.map_err(|r| match r {
            Refused::Shed => Problem::Shed,
            Refused::QueueFull | Refused::TimedOut => Problem::ConcurrencyLimited,
        })?;
        done.permits.push(permit);
    }
    Ok(())
}

fn upstream_failure(
    done: &Done,
    upstream: &UpstreamSet,
    p: Problem,
    kind: &'static str,
) -> Problem {
    done.gw.metrics.upstream_error(&upstream.name, kind);
    p
}

fn via_for(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "2 floodgate",
        Version::HTTP_10 => "1.0 floodgate",
        _ => "1.1 floodgate",
    }
}

fn check_limits<B>(
    req: &Request<B>,
    limits: &floodgate_config::model::Limits,
) -> Result<(), Problem> {
    let target_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len()) as u64;
    if target_len > limits.max_uri_bytes.0 {
        return Err(Problem::UriTooLong);
    }
    if req.headers().len() > limits.max_headers {
        return Err(Problem::HeadersTooLarge);
    }
    let head: u64 = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64)
        .sum();
    if head + target_len > limits.max_header_bytes.0 {
        return Err(Problem::HeadersTooLarge);
    }
    Ok(())
}

/// The request's URI with its path made canonical (see [`crate::path`]), or `None` when
/// it already was; the query is kept as it came.
fn canonical_target(
    uri: &Uri,
    how: &floodgate_config::model::PathHandling,
) -> Result<Option<Uri>, Problem> {
    let path = uri.path();
    let canonical =
        crate::path::normalize(path, how).map_err(|e| Problem::BadRequest(e.detail()))?;
    let Cow::Owned(canonical) = canonical else {
        return Ok(None);
    };
    let target = match uri.query() {
        Some(q) => format!("{canonical}?{q}"),
        None => canonical,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(target)
            .map_err(|_| Problem::BadRequest("The request path is not valid."))?,
    );
    Uri::from_parts(parts)
        .map(Some)
        .map_err(|_| Problem::BadRequest("The request path is not valid."))
}

/// Everything needed to finish a request's bookkeeping once its response is over.
struct Done {
    gw: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    started: Instant,
    request_id: HeaderValue,
    method: Method,
    /// The request target as received (cheap to clone: shares the request's buffer).
    target: PathAndQuery,
    version: Version,
    status: StatusCode,
    route: Option<Arc<str>>,
    upstream: Option<Arc<str>>,
    target_addr: Option<Arc<str>>,
    error: Option<&'static str>,
    metrics: RouteMetrics,
    /// `RateLimit-Policy` / `RateLimit` for the response.
    limit_headers: Option<LimitHeaders>,
    /// The limit that refused the request (or, dry run, would have).
    rate_limit: Option<Arc<str>>,
    dry_run: bool,
    /// Bulkhead places, released when the response ends.
    permits: Vec<Permit>,
    /// The request counted in flight at its target, until the response ends.
    in_flight: Option<InFlight>,
    /// How much the request matters under overload.
    criticality: Criticality,
    /// The matched route, for its fallback.
    compiled_route: Option<Arc<Route>>,
    /// A bodiless request kept to be sent to a fallback upstream.
    replay: Option<Replay>,
    /// The condition a fallback answered.
    fallback: Option<&'static str>,
    /// The authenticated consumer.
    consumer: Option<Arc<str>>,
    /// Why authentication refused the request (for its challenge).
    auth_refusal: Option<crate::auth::Refusal>,
    /// Whether authorization refused it for a missing scope (a bearer challenge says so).
    scope_refused: bool,
    /// Headers for the upstream from the token's claims.
    claim_headers: Vec<(header::HeaderName, HeaderValue)>,
    /// CORS headers for the response.
    cors_headers: Vec<(header::HeaderName, HeaderValue)>,
    /// The existence filter's key, to learn if the response succeeds.
    learn_key: Option<Vec<u8>>,
    /// What the cache did, for the log.
    cache: Option<&'static str>,
    /// What idempotency-key handling did, for the log.
    idempotency: Option<&'static str>,
    /// Validators the cache sends upstream to revalidate its entry, in place of the
    /// client's.
    conditionals: Vec<(header::HeaderName, HeaderValue)>,
}

impl Done {
    fn new(
        gw: Arc<Gateway>,
        conn: Arc<ConnInfo>,
        request_id: HeaderValue,
        method: Method,
        target: PathAndQuery,
        version: Version,
        metrics: RouteMetrics,
    ) -> Self {
        Done {
            gw,
            conn,
            started: Instant::now(),
            request_id,
            method,
            target,
            version,
            status: StatusCode::OK,
            route: None,
            upstream: None,
            target_addr: None,
            error: None,
            metrics,
            limit_headers: None,
            rate_limit: None,
            dry_run: false,
            permits: Vec::new(),
            in_flight: None,
            criticality: Criticality::Normal,
            compiled_route: None,
            replay: None,
            fallback: None,
            consumer: None,
            auth_refusal: None,
            scope_refused: false,
            claim_headers: Vec::new(),
            cors_headers: Vec::new(),
            learn_key: None,
            cache: None,
            idempotency: None,
            conditionals: Vec::new(),
        }
    }
}

impl Completion for Done {
    fn done(mut self: Box<Self>, bytes_sent: u64, end: BodyEnd) {
        let elapsed = self.started.elapsed();
        // A response that did not reach the client whole says so in the log.
        match end {
            BodyEnd::Complete => {}
            BodyEnd::ClientGone => {
                self.error = self.error.or(Some(Problem::ClientClosed.code()));
            }
            BodyEnd::UpstreamBroke => {
                self.error = self.error.or(Some(Problem::UpstreamBroken.code()));
                if let Some(upstream) = &self.upstream {
                    self.gw.metrics.upstream_error(upstream, "broken");
                }
            }
        }
        self.metrics
            .record(self.status.as_u16(), elapsed.as_secs_f64());
        if self.gw.access_log.enabled() {
            // An API key in the query string is not written to the log.
            let redacted = self
                .compiled_route
                .as_ref()
                .and_then(|r| r.access.as_ref()?.key_query())
                .map(|q| crate::auth::redact_query(self.target.as_str(), q));
            let record = Record {
                time: rfc3339(SystemTime::now() - elapsed),
                request_id: self.request_id.to_str().unwrap_or_default(),
                client: self.conn.client.ip.to_str().unwrap_or_default(),
                listener: &self.conn.listener_name,
                route: self.route.as_deref(),
                method: self.method.as_str(),
                path: redacted.as_deref().unwrap_or(self.target.as_str()),
                consumer: self.consumer.as_deref(),
                protocol: match self.version {
                    Version::HTTP_2 => "HTTP/2.0",
                    Version::HTTP_10 => "HTTP/1.0",
                    _ => "HTTP/1.1",
                },
                status: self.status.as_u16(),
                duration_ms: (elapsed.as_secs_f64() * 1e6).round() / 1e3,
                upstream: self.upstream.as_deref(),
                target: self.target_addr.as_deref(),
                bytes_sent,
                error: self.error,
                fallback: self.fallback,
                tls_client: self
                    .conn
                    .tls
                    .as_ref()
                    .and_then(|t| t.client_identity.as_deref()),
                rate_limit: self.rate_limit.as_deref(),
                dry_run: self.dry_run,
                cache: self.cache,
                idempotency: self.idempotency,
            };
            self.gw.access_log.log(&record);
        }
        self.conn.state.end();
    }
}
