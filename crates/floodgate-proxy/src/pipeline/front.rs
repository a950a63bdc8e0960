//! The front door: what is checked and answered before a route is known. The head's size
//! limits, the path made canonical, the host the request names, the listener's redirect to
//! HTTPS, the gateway's own endpoints (the OAuth2 token issuer's), then routing: the route
//! that matches, with its parameters, the client's address and the request's criticality,
//! gathered once into the [`RequestCtx`] every later phase reads.
//!
//! [`locate`] and [`find_route`] are also what `floodgate explain` runs, so it names the
//! route the data plane picks.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::HeaderValue;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};

use super::context::{Params, RequestCtx};
use super::done::Done;
use crate::body::ResponseBody;
use crate::client_body::ClientBody;
use crate::conn::ConnInfo;
use crate::problem::Problem;
use crate::router::RequestView;
use crate::snapshot::{ListenerPlan, Route, Snapshot};
use floodgate_config::resilience::Criticality;

/// How the front door let a request through.
pub(crate) enum Entered<'s> {
    /// Answered here (a redirect to HTTPS, the gateway's own endpoint).
    Answered(Response<ResponseBody>),
    /// Routed (the request's path now canonical): what is known of it.
    Routed(RequestCtx<'s>),
}

/// Checks the head, makes the path canonical, answers what the gateway answers itself and
/// routes the rest.
pub(crate) async fn enter<'s>(
    snap: &'s Snapshot,
    conn: &'s Arc<ConnInfo>,
    req: &mut Request<ClientBody>,
    done: &mut Done,
) -> Result<Entered<'s>, Problem> {
    let Some(plan) = snap.listeners.get(conn.listener) else {
        return Err(Problem::NoRoute);
    };
    check_limits(req, &plan.limits)?;
    let (canonical, host_value) = locate(plan, req.uri(), req.version(), req.headers())?;
    if let Some(canonical) = canonical {
        done.target = canonical
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = canonical;
    }
    let host = crate::host::routing_name(host_value.to_str().unwrap_or_default());
    if let Some((port, status)) = plan.redirect_to_https {
        return https_redirect(&host, port, status, req.uri()).map(Entered::Answered);
    }
    if let Some(issuer) = &snap.oauth2 {
        let path = req.uri().path();
        if path == issuer.token_path {
            done.route = Some(Arc::from("(oauth2 token)"));
            let gw = done.gw.clone();
            // The endpoint reads the request's body: it takes the request, leaving an
            // empty one. Boxed: verifying a client's password is a large future.
            let empty = ClientBody::from_body(http_body_util::Empty::new(), conn.body_read);
            let req = std::mem::replace(req, Request::new(empty));
            let resp = Box::pin(issuer.token(req, &gw.basic))
                .await
                .map(ResponseBody::full);
            return Ok(Entered::Answered(resp));
        }
        if path == issuer.jwks_path {
            done.route = Some(Arc::from("(oauth2 jwks)"));
            return Ok(Entered::Answered(
                issuer.jwks_response().map(ResponseBody::full),
            ));
        }
    }
    let (route, params) =
        find_route(plan, &host, req.method(), req.uri(), req.headers()).ok_or(Problem::NoRoute)?;
    drop(host);
    done.route = Some(route.name.clone());
    done.metrics = route.metrics.clone();
    done.compiled_route = Some(route.clone());
    let client_ip = plan
        .trusted_proxies
        .client_ip(conn.remote.ip(), req.headers());
    let criticality = plan
        .criticality_header
        .as_ref()
        .filter(|_| plan.trusted_proxies.trusts(conn.remote.ip()))
        .and_then(|h| req.headers().get(h)?.to_str().ok())
        .and_then(Criticality::parse)
        .unwrap_or(route.criticality);
    let ctx = RequestCtx {
        snap,
        plan,
        conn,
        route,
        host_value,
        params,
        client_ip,
        criticality,
        consumer: None,
    };
    Ok(Entered::Routed(ctx))
}

/// The request's URI with its path made canonical (when that changed it) and the host it
/// names, or the problem with either.
pub(crate) fn locate(
    plan: &ListenerPlan,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
) -> Result<(Option<Uri>, HeaderValue), Problem> {
    let canonical = canonical_target(uri, &plan.paths)?;
    let host_value = crate::host::of_request(uri, version, headers)
        .map_err(|e| Problem::BadRequest(e.detail()))?;
    if host_value.to_str().is_err() {
        return Err(Problem::BadRequest("The Host header is not valid text."));
    }
    Ok((canonical, host_value))
}

/// The route of `plan` a request for `host` (its routing name) meets, with the path
/// parameters it binds.
pub(crate) fn find_route(
    plan: &ListenerPlan,
    host: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Option<(Arc<Route>, Params)> {
    let view = RequestView {
        host,
        path: uri.path(),
        query: uri.query(),
        method,
        headers,
    };
    let m = plan.router.find(&view)?;
    let params = m
        .params
        .into_iter()
        .map(|(k, v)| (k, v.to_owned()))
        .collect();
    Some((m.value.clone(), params))
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
    resp.headers_mut().insert(http::header::LOCATION, value);
    Ok(resp)
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
