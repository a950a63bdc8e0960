//! Guards: the route's checks of who may send this request and how often, each able to
//! refuse it before anything is spent on it, in this order: CORS (a preflight is answered
//! here), the WAF on the head, IP rules, authentication and authorization, the existence
//! filter, and the rate limits. Each refusal is the problem that answers it.

use http::{Method, Request, Response, header};

use super::context::RequestCtx;
use super::done::Done;
use super::notes::Notes;
use crate::auth::Denied;
use crate::body::ResponseBody;
use crate::client_body::{ClientBody, Inbound};
use crate::problem::Problem;
use crate::ratelimit::key::RequestFacts;
use crate::ratelimit::{Outcome, RouteLimits};
use crate::snapshot::Route;

/// Whether the route has any guard.
pub(crate) fn apply_to(route: &Route) -> bool {
    route.cors.is_some()
        || route.waf.is_some()
        || route.ip.is_some()
        || route.access.is_some()
        || route.existence.is_some()
        || !route.limits.is_empty()
}

/// Runs the route's guards; `Some` is an answer given here (a CORS preflight).
pub(crate) async fn check(
    ctx: &mut RequestCtx<'_>,
    req: &Request<ClientBody>,
    notes: &mut Notes,
    done: &mut Done,
) -> Result<Option<Response<ResponseBody>>, Problem> {
    let route = ctx.route.clone();
    if let Some(cors) = &route.cors {
        if let Some(answer) = cors.preflight(req.method(), req.headers()) {
            return Ok(Some(answer));
        }
        notes.cors_headers = cors.response_headers(req.headers().get(header::ORIGIN));
    }
    if let Some(waf) = &route.waf
        && let Some(rule) = waf.check_head(req.uri().path(), req.uri().query(), req.headers())
    {
        waf_matched(waf, rule, &route, done)?;
    }
    if let Some(ip) = &route.ip
        && !ip.permits(ctx.client_ip)
    {
        return Err(Problem::Forbidden);
    }
    if let Some(access) = &route.access {
        let gw = done.gw.clone();
        // Boxed: checking credentials can fetch keys, a large future (see `super::handle`).
        let passed = Box::pin(
            access.check(
                &ctx.snap.identities,
                &gw.basic,
                req.headers(),
                req.uri().query(),
                ctx.conn
                    .tls
                    .as_ref()
                    .and_then(|t| t.client_identity.as_deref()),
            ),
        )
        .await
        .map_err(|d| refused(d, &route, notes, done))?;
        ctx.consumer = Some(passed.identity.name.clone());
        done.consumer = ctx.consumer.clone();
        notes.claim_headers = passed.headers;
    }
    if let Some(ex) = &route.existence {
        let mut key = Vec::new();
        crate::ratelimit::key::render(std::slice::from_ref(&ex.key), &ctx.facts(req), &mut key);
        // Only reads are filtered: a PUT may create the key it names.
        let read = matches!(*req.method(), Method::GET | Method::HEAD);
        // Boxed: a filter with a shared tier has a large future.
        if read && !Box::pin(ex.admits(&key)).await {
            return Err(Problem::Absent);
        }
        if ex.learn {
            notes.learn_key = Some(key);
        }
    }
    if !route.limits.is_empty() {
        enforce(&route.limits, &ctx.facts(req), notes, done).await?;
    }
    Ok(None)
}

/// Checks `limits`; a refusal is the problem that answers. Also the cache's limits on
/// misses (see [`super::around`]).
pub(crate) async fn enforce(
    limits: &RouteLimits,
    facts: &RequestFacts<'_>,
    notes: &mut Notes,
    done: &mut Done,
) -> Result<(), Problem> {
    match limits.check(facts).await {
        Outcome::Admitted {
            delay,
            headers,
            dry_run_hit,
        } => {
            notes.limit_headers = headers;
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
            notes.limit_headers = Some(headers);
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

/// The answer to a request the route's `auth` refused: counted by method and reason,
/// logged at info with the request id (never the credential), and kept for the response's
/// challenge.
fn refused(denied: Denied, route: &Route, notes: &mut Notes, done: &Done) -> Problem {
    let (problem, method, reason) = match denied {
        Denied::Unauthenticated(r) => {
            notes.auth_refusal = Some(r);
            (Problem::Unauthorized(r.description()), r.method, r.reason)
        }
        Denied::Forbidden(rule) => {
            notes.scope_refused = rule == "scope";
            (Problem::Forbidden, "authorization", rule)
        }
    };
    done.gw.metrics.auth.refused(&route.name, method, reason);
    tracing::info!(
        route = %route.name,
        method,
        reason,
        request_id = done.request_id.to_str().unwrap_or_default(),
        "authentication refused"
    );
    problem
}

/// Counts and logs a WAF match; in block mode, refuses the request. Also for the body
/// (see [`super::admit`]).
pub(crate) fn waf_matched(
    waf: &crate::waf::WafPolicy,
    rule: &'static str,
    route: &Route,
    done: &Done,
) -> Result<(), Problem> {
    let block = waf.mode == floodgate_config::waf::WafMode::Block;
    let mode = if block { "block" } else { "monitor" };
    done.gw.metrics.waf.matched(&route.name, rule, mode);
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

/// The WAF on the request body, if the route's WAF reads bodies and this one is within
/// its limit: the body is read whole (and sent on from memory) and inspected. A body
/// longer than the limit is not inspected (nor held): it streams on whole, as one whose
/// declared length is over the limit. Runs after admission, so a request the gateway
/// will not take on is not read.
pub(crate) async fn inspect_body(
    route: &Route,
    req: &mut Request<Inbound>,
    done: &Done,
) -> Result<(), Problem> {
    let Some(waf) = route.waf.as_ref().filter(|waf| wants_inspection(waf, req)) else {
        return Ok(());
    };
    if let Inbound::Stream(body) = req.body_mut()
        && let Some(bytes) = body.read_within(waf.body_limit).await?
    {
        *req.body_mut() = Inbound::Held(bytes);
    }
    if let Inbound::Held(bytes) = req.body()
        && let Some(rule) = waf.check_text(bytes)
    {
        waf_matched(waf, rule, route, done)?;
    }
    Ok(())
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
