//! Response filters: what every answer gets on its way out, the upstream's and the
//! gateway's own alike. A problem becomes its problem+json response (with the
//! authentication challenge a 401 or a scope refusal calls for); the existence filter
//! learns from a success; a caching route's answer says what the cache did; then the
//! request id, the route's security headers, CORS, HSTS and the rate-limit state.

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

use super::done::Done;
use super::notes::Notes;
use crate::body::ResponseBody;
use crate::problem::Problem;
use crate::ratelimit::LimitHeaders;
use crate::request_id;
use crate::snapshot::ListenerPlan;

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The response for `result`, with every filter applied.
pub(crate) fn respond(
    result: Result<Response<ResponseBody>, Problem>,
    listener: Option<&ListenerPlan>,
    notes: &mut Notes,
    done: &mut Done,
) -> Response<ResponseBody> {
    let mut resp = match result {
        Ok(resp) => {
            done.status = resp.status();
            resp
        }
        // A gRPC client reads a status in the trailers, not an HTTP error; the log and
        // metrics keep the HTTP status the refusal stands for.
        Err(problem) => match notes.grpc {
            Some(call) => {
                done.error = Some(problem.code());
                done.status = problem.status();
                crate::grpc::refusal(problem, call)
            }
            None => {
                let resp = problem_response(problem, notes, done);
                done.status = resp.status();
                resp
            }
        },
    };
    learn(&resp, notes, done);
    mark_uncached(&mut resp, done);
    let headers = resp.headers_mut();
    headers.insert(request_id::HEADER, done.request_id.clone());
    if let Some(route) = &done.compiled_route {
        for (name, value) in &route.security_headers {
            headers.insert(name.clone(), value.clone());
        }
    }
    for (name, value) in std::mem::take(&mut notes.cors_headers) {
        if name == header::VARY {
            headers.append(name, value);
        } else {
            headers.insert(name, value);
        }
    }
    if let Some(hsts) = listener.and_then(|l| l.hsts.as_ref()) {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    if let Some((policy, state)) = notes
        .limit_headers
        .take()
        .and_then(LimitHeaders::into_values)
    {
        headers.insert(RATELIMIT_POLICY, policy);
        headers.insert(RATELIMIT, state);
    }
    resp
}

/// The problem+json answer for `problem`, with its authentication challenge.
fn problem_response(problem: Problem, notes: &Notes, done: &mut Done) -> Response<ResponseBody> {
    done.error = Some(problem.code());
    let rid = done.request_id.to_str().unwrap_or_default();
    let mut resp = problem
        .to_response(done.target.as_str(), rid)
        .map(ResponseBody::full);
    let access = done.compiled_route.as_ref().and_then(|r| r.access.as_ref());
    let challenge = match (problem, access, notes.auth_refusal) {
        (Problem::Unauthorized(_), Some(a), refusal) => {
            Some(a.challenge_for(refusal.unwrap_or(crate::auth::Refusal::NONE)))
        }
        (Problem::Forbidden, Some(a), None) if notes.scope_refused => a.scope_challenge(),
        _ => None,
    };
    if let Some(c) = challenge {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, c);
    }
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
fn learn(resp: &Response<ResponseBody>, notes: &mut Notes, done: &Done) {
    let Some(key) = notes.learn_key.take() else {
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
