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
                call.report(
                    result
                        .as_ref()
                        .map(|r| crate::grpc::effective_status(r, notes.grpc.is_some()))
                        .map_err(|p| *p),
                );
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
    let mut req = req;
    let tunnel = tunnel_asked(&mut req, route, conn, done)?;
    enter(upstream.concurrency.as_ref(), criticality, done).await?;
    let (mut parts, mut body) = req.into_parts();
    if let Some(t) = &tunnel {
        // The handshake toward the upstream is an HTTP/1.1 GET with no body, whatever the
        // client's side (an HTTP/2 extended CONNECT is made one).
        parts.method = http::Method::GET;
        body = Inbound::Empty;
        if let Some(key) = &t.key {
            parts.headers.insert("sec-websocket-key", key.clone());
            parts
                .headers
                .entry("sec-websocket-version")
                .or_insert(HeaderValue::from_static("13"));
        }
    }
    // A gRPC call's deadline bounds the wait for the upstream's answer as well.
    let deadline = match (
        upstream.total_timeout,
        notes
            .grpc
            .and_then(|_| crate::grpc::timeout(&parts.headers)),
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
    // gRPC-Web goes upstream as gRPC (the route's upstream speaks HTTP/2).
    let web = match notes.grpc {
        Some(crate::grpc::Call::Web { text }) => Some(text),
        _ => None,
    };
    if let Some(text) = web {
        crate::grpc::web_request_headers(&mut headers, text);
        if text {
            let encoded = match body {
                Inbound::Stream(b) => crate::client_body::read_whole(b, body_limit).await?,
                Inbound::Held(b) => b,
                Inbound::Empty => bytes::Bytes::new(),
            };
            body = Inbound::Held(
                crate::grpc::decode_text(&encoded).ok_or(Problem::BadRequest(
                    "The grpc-web-text request body is not base64.",
                ))?,
            );
        }
    }
    if let Some(t) = &tunnel {
        // The upgrade is this hop's and the next one's: asked for again.
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, t.protocol.clone());
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
        grpc: notes.grpc.is_some(),
    };
    let sent = exchange.send(head, body, &mut done.trace);
    let result = match deadline {
        None => sent.await,
        Some(total) => tokio::time::timeout(total, sent)
            .await
            .unwrap_or_else(|_| Err(exchange.timed_out())),
    };
    if let Some(call) = call {
        call.report(
            result
                .as_ref()
                .map(|a| crate::grpc::effective_status(&a.response, notes.grpc.is_some()))
                .map_err(|p| *p),
        );
    }
    let Answer {
        target,
        response,
        conn,
    } = result?;
    if let Some(t) = tunnel
        && response.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        return switch(response, conn, *t, route);
    }
    let (mut parts, mut body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    if let Some(text) = web {
        crate::grpc::web_response_headers(&mut parts.headers, text);
        body = crate::upstream::UpstreamBody::Mapped(Box::pin(crate::grpc::WebResponse::new(
            body, text,
        )));
    }
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

/// A WebSocket tunnel a request asks for: where the client's side comes from, its place
/// under the route's limit, the protocol to ask the upstream for, and the key the gateway
/// chose when the client's handshake had none (HTTP/2).
pub(crate) struct Tunnel {
    client: websocket::ClientSide,
    slot: websocket::Slot,
    protocol: HeaderValue,
    key: Option<HeaderValue>,
}

/// The tunnel `req` asks for, admitted by the route's policy: an HTTP/1.1 upgrade the
/// engine can hand over, or an HTTP/2 extended CONNECT (RFC 8441). `None` for any other
/// request.
/// (Boxed: it lives across the exchange's awaits, and most requests have none.)
fn tunnel_asked(
    req: &mut Request<Inbound>,
    route: &Route,
    conn: &ConnInfo,
    done: &Done,
) -> Result<Option<Box<Tunnel>>, Problem> {
    // Whose tunnel it is, for the per-client limit: the consumer, else the address.
    let client = || {
        done.consumer
            .as_deref()
            .unwrap_or(conn.client.ip.to_str().unwrap_or_default())
            .to_owned()
    };
    if let Some(on) = req.extensions().get::<OnUpgrade>()
        && websocket::is_handshake(req.method(), req.headers())
    {
        let on = on.clone();
        return Ok(Some(Box::new(Tunnel {
            slot: route.websocket.admit(req.headers(), &client())?,
            client: websocket::ClientSide::Http1(on),
            protocol: req
                .headers()
                .get(header::UPGRADE)
                .cloned()
                .unwrap_or(HeaderValue::from_static("websocket")),
            key: None,
        })));
    }
    if websocket::is_extended_connect(req.method(), req.extensions()) {
        let slot = route.websocket.admit(req.headers(), &client())?;
        return Ok(Some(Box::new(Tunnel {
            slot,
            client: websocket::ClientSide::Http2(hyper::upgrade::on(req)),
            protocol: HeaderValue::from_static("websocket"),
            key: Some(websocket::new_key()),
        })));
    }
    Ok(None)
}

/// The upstream switched protocols: the answer goes to the client (`101` on HTTP/1.1,
/// `200` on HTTP/2), and once it is written both sides become the route's tunnel.
fn switch(
    response: Response<crate::upstream::UpstreamBody>,
    conn: crate::upstream::UpstreamConn,
    tunnel: Tunnel,
    route: &Route,
) -> Result<Response<ResponseBody>, Problem> {
    let (mut parts, _empty) = response.into_parts();
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    if let Some(key) = &tunnel.key {
        // The gateway made this handshake: it checks the answer as a client would.
        let expected = websocket::accept_for(key.as_bytes());
        if parts
            .headers
            .get("sec-websocket-accept")
            .map(HeaderValue::as_bytes)
            != Some(expected.as_bytes())
        {
            return Err(Problem::UpstreamBroken);
        }
    }
    let upstream = conn.upgrade().ok_or(Problem::UpstreamBroken)?;
    remove_hop_by_hop(&mut parts.headers);
    match tunnel.client {
        websocket::ClientSide::Http1(_) => {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(
                header::UPGRADE,
                protocol.unwrap_or_else(|| HeaderValue::from_static("websocket")),
            );
            parts.version = Version::HTTP_11;
        }
        websocket::ClientSide::Http2(_) => {
            // RFC 8441 §5: a 2xx opens the stream; there is no key to accept.
            parts.status = StatusCode::OK;
            parts.headers.remove("sec-websocket-accept");
            parts.version = Version::HTTP_2;
        }
    }
    parts
        .headers
        .append(header::VIA, HeaderValue::from_static("1.1 floodgate"));
    route.response_headers.apply(&mut parts.headers);
    let closed = route.websocket.spawn(tunnel.client, upstream, tunnel.slot);
    parts.extensions.insert(closed);
    Ok(Response::from_parts(parts, ResponseBody::empty()))
}

/// Whether a request asks for a WebSocket tunnel its connection can hand over.
pub(crate) fn is_tunnel<B>(req: &Request<B>) -> bool {
    (req.extensions().get::<OnUpgrade>().is_some()
        && websocket::is_handshake(req.method(), req.headers()))
        || websocket::is_extended_connect(req.method(), req.extensions())
}

/// The upstream request's target (origin form: the connection is already to the target):
/// the path rewritten if the route rewrites, without a credential the gateway consumed
/// from the query.
fn upstream_target(route: &Route, uri: &Uri, new_path: Option<String>) -> Result<Uri, Problem> {
    let mut stripped: Option<String> = None;
    for name in route.access.iter().flat_map(|a| &a.hide_query) {
        let query = stripped.as_deref().or(uri.query());
        if let Some(q) = query.and_then(|q| crate::auth::without_param(q, name)) {
            stripped = Some(q);
        }
    }
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
