//! The route's action for a request past its guards: a redirect, or the way to the
//! upstream: admission (bulkhead, breakers, fault injection), the WAF on the body, then
//! the upstream request made from the client's (the path rewritten, consumed credentials
//! removed, forwarding fields, the route's header edits), the exchange (see
//! [`crate::upstream::exchange`]) and the response head made the gateway's own.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};

use super::admit::{enter, inject_fault, route_breaker, upstream_breaker};
use super::context::RequestCtx;
use super::done::Done;
use super::guards::inspect_body;
use super::notes::{Notes, Replay};
use crate::body::ResponseBody;
use crate::cache::surrogate;
use crate::client_body::Inbound;
use crate::conn::ConnInfo;
use crate::fallback::FallbackAction;
use crate::headers::{Forwarding, add_forwarding, lists_token, remove_hop_by_hop};
use crate::problem::Problem;
use crate::request_id;
use crate::snapshot::{Action, Route};
use crate::upstream::exchange::{Answer, Exchange};
use crate::upstream::{RequestHead, UpstreamSet};
use crate::websocket;
use floodgate_config::resilience::Criticality;
use floodgate_http1::OnUpgrade;

/// Takes the route's action: through its bulkhead, then redirected or proxied.
pub(crate) async fn forward(
    req: Request<Inbound>,
    ctx: &RequestCtx<'_>,
    notes: &mut Notes,
    done: &mut Done,
) -> Result<Response<ResponseBody>, Problem> {
    let route = &ctx.route;
    enter(route.concurrency.as_ref(), ctx.criticality, done).await?;
    match &route.action {
        Action::Redirect { location, status } => redirect(ctx, &req, location, *status),
        Action::Proxy(_) | Action::Split(_) => {
            let upstream = route.action.upstream().ok_or(Problem::NoTarget)?;
            let hash = upstream
                .hash_on()
                .map(|on| on.hash(ctx.client_ip, req.headers(), &ctx.params));
            let mut call = route_breaker(ctx, &req)?;
            let plan = Forward {
                hash,
                call: upstream_breaker(&upstream, done)?,
                new_path: route
                    .rewrite
                    .as_ref()
                    .map(|rw| rw.apply(req.uri().path(), &ctx.params)),
                body_limit: ctx.plan.limits.max_body_bytes.0,
                route: route.clone(),
                upstream,
                host: ctx.host_value.clone(),
                criticality: ctx.criticality,
            };
            if let Some(fb) = &route.fallback
                && matches!(fb.action, FallbackAction::Upstream(_))
                && req.body().is_end_stream()
                && !is_tunnel(&req)
            {
                notes.replay = Some(Box::new(Replay {
                    method: req.method().clone(),
                    uri: req.uri().clone(),
                    version: req.version(),
                    headers: req.headers().clone(),
                    host: plan.host.clone(),
                    new_path: plan.new_path.clone(),
                    body_limit: plan.body_limit,
                    criticality: plan.criticality,
                }));
            }
            // (Each step only where the route has it: the plain path makes no future of
            // theirs.)
            if route.fault.is_some() {
                inject_fault(route, &req, &mut call).await?;
            }
            let mut req = req;
            if route.waf.is_some() {
                inspect_body(route, &mut req, done).await?;
            }
            let result = proxy(req, ctx.conn, plan, notes, done).await;
            if let Some(call) = call {
                call.report(result.as_ref().map(Response::status).map_err(|p| *p));
            }
            result
        }
    }
}

/// The route's redirect, its location rendered from the request.
fn redirect(
    ctx: &RequestCtx<'_>,
    req: &Request<Inbound>,
    location: &floodgate_config::template::TextTemplate,
    status: StatusCode,
) -> Result<Response<ResponseBody>, Problem> {
    let path = req.uri().path();
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let loc = location.render(|name| match name {
        "path" => Some(path),
        "query" => Some(query.as_str()),
        _ => ctx
            .params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str()),
    });
    let value = HeaderValue::from_str(&loc)
        .map_err(|_| Problem::BadRequest("The redirect target is not a valid header value."))?;
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::LOCATION, value);
    ctx.route.response_headers.apply(resp.headers_mut());
    Ok(resp)
}

/// What routing decided for a request that is proxied (to its upstream, a fallback
/// upstream, or a cache refresh's).
pub(crate) struct Forward {
    /// The request's consistent-hash key hash, if the upstream hashes.
    pub(crate) hash: Option<u64>,
    /// The call through the upstream's breaker, admitted before anything else is spent on
    /// the request.
    pub(crate) call: Option<crate::breaker::Call>,
    pub(crate) route: Arc<Route>,
    pub(crate) upstream: Arc<UpstreamSet>,
    /// The rewritten path, if the route rewrites.
    pub(crate) new_path: Option<String>,
    /// The host the client asked for, forwarded as `Host`.
    pub(crate) host: HeaderValue,
    /// The listener's request body limit.
    pub(crate) body_limit: u64,
    /// How much the request matters, for the upstream's bulkhead.
    pub(crate) criticality: Criticality,
}

/// Sends the request upstream as `plan` says and makes the answer's head the gateway's.
pub(crate) async fn proxy(
    req: Request<Inbound>,
    conn: &ConnInfo,
    plan: Forward,
    notes: &Notes,
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
        criticality,
    } = plan;
    let (route, upstream, host) = (&*route, &*upstream, &host);
    // A WebSocket handshake the connection can hand over: the route's policy first.
    let tunnel = match req.extensions().get::<OnUpgrade>() {
        Some(on) if websocket::is_handshake(req.method(), req.headers()) => {
            let slot = route.websocket.admit(req.headers())?;
            Some((
                on.clone(),
                slot,
                req.headers().get(header::UPGRADE).cloned(),
            ))
        }
        _ => None,
    };
    enter(upstream.concurrency.as_ref(), criticality, done).await?;
    let (parts, body) = req.into_parts();
    // A gRPC call's deadline bounds the wait for the upstream's answer as well.
    let deadline = match (
        upstream.total_timeout,
        notes
            .grpc
            .then(|| crate::grpc::timeout(&parts.headers))
            .flatten(),
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > body_limit
    {
        return Err(Problem::BodyTooLarge);
    }
    let uri = upstream_target(route, &parts.uri, new_path)?;
    let mut headers = parts.headers;
    // On HTTP/2, `te: trailers` says the client takes trailers, which gRPC needs end to
    // end: kept, as Envoy and nginx's grpc_pass do. Anything else in TE, and TE on
    // HTTP/1.1 (where it must be named in Connection), stays this hop's.
    let takes_trailers =
        parts.version == Version::HTTP_2 && lists_token(&headers, &header::TE, "trailers");
    remove_hop_by_hop(&mut headers);
    if takes_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some((_, _, Some(protocol))) = &tunnel {
        // The upgrade is this hop's and the next one's: asked for again.
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    if let Some(access) = &route.access {
        for name in access.hide.iter().chain(&access.strip) {
            headers.remove(name);
        }
        for (name, value) in &notes.claim_headers {
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
    if !notes.conditionals.is_empty() {
        headers.remove(header::IF_NONE_MATCH);
        headers.remove(header::IF_MODIFIED_SINCE);
        for (name, value) in &notes.conditionals {
            headers.insert(name.clone(), value.clone());
        }
    }
    let head = RequestHead {
        method: parts.method,
        uri,
        headers,
    };
    let exchange = Exchange {
        upstream,
        hash,
        body_limit,
        // A handshake is sent once, and never copied elsewhere.
        mirror: route.mirror.as_ref().filter(|_| tunnel.is_none()),
        metrics: &done.gw.metrics.upstreams,
        once: tunnel.is_some(),
    };
    let sent = exchange.send(head, body, &mut done.trace);
    let result = match deadline {
        None => sent.await,
        Some(total) => tokio::time::timeout(total, sent)
            .await
            .unwrap_or_else(|_| Err(exchange.timed_out())),
    };
    if let Some(call) = call {
        call.report(result.as_ref().map(|a| a.response.status()).map_err(|p| *p));
    }
    let Answer {
        target,
        response,
        conn,
    } = result?;
    if let Some((client, slot, _)) = tunnel
        && response.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        return switch(response, conn, client, slot, route);
    }
    let (mut parts, body) = response.into_parts();
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

/// The upstream switched protocols: the `101` goes to the client, and once the engine has
/// written it, both connections become the route's tunnel.
fn switch(
    response: Response<crate::upstream::UpstreamBody>,
    conn: crate::upstream::UpstreamConn,
    client: OnUpgrade,
    slot: websocket::Slot,
    route: &Route,
) -> Result<Response<ResponseBody>, Problem> {
    let (mut parts, _empty) = response.into_parts();
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    let upstream = conn.upgrade().ok_or(Problem::UpstreamBroken)?;
    remove_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.insert(
        header::UPGRADE,
        protocol.unwrap_or_else(|| HeaderValue::from_static("websocket")),
    );
    parts
        .headers
        .append(header::VIA, HeaderValue::from_static("1.1 floodgate"));
    parts.version = Version::HTTP_11;
    route.response_headers.apply(&mut parts.headers);
    let closed = route.websocket.spawn(client, upstream, slot);
    parts.extensions.insert(closed);
    Ok(Response::from_parts(parts, ResponseBody::empty()))
}

/// Whether a request asks for a WebSocket tunnel its connection can hand over.
pub(crate) fn is_tunnel<B>(req: &Request<B>) -> bool {
    req.extensions().get::<OnUpgrade>().is_some()
        && websocket::is_handshake(req.method(), req.headers())
}

/// The upstream request's target (origin form: the connection is already to the target):
/// the path rewritten if the route rewrites, without a credential the gateway consumed
/// from the query.
fn upstream_target(route: &Route, uri: &Uri, new_path: Option<String>) -> Result<Uri, Problem> {
    let stripped = route
        .access
        .as_ref()
        .and_then(|a| a.hide_query.as_deref())
        .zip(uri.query())
        .and_then(|(name, query)| crate::auth::without_param(query, name));
    let pq = match (new_path, stripped) {
        (None, None) => uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        (path, stripped) => {
            let path = path.as_deref().unwrap_or(uri.path());
            let query = match &stripped {
                Some(q) => Some(q.as_str()).filter(|q| !q.is_empty()),
                None => uri.query(),
            };
            let s = match query {
                Some(q) => format!("{path}?{q}"),
                None => path.to_owned(),
            };
            PathAndQuery::try_from(s)
                .map_err(|_| Problem::BadRequest("The rewritten path is not valid."))?
        }
    };
    Ok(Uri::from(pq))
}

fn via_for(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "2 floodgate",
        Version::HTTP_10 => "1.0 floodgate",
        _ => "1.1 floodgate",
    }
}
