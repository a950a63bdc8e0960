//! Around the exchange: the phases that may answer instead of the upstream, and that see
//! the upstream's answer on its way back. The cache (a hit is answered here, a stale hit
//! too while a background refresh runs, a miss is limited by the cache's own rate limits
//! and revalidates with the entry's validators; the answer is stored, or a write
//! invalidates) and idempotency keys (a repeated request is answered from the first one's
//! response; the first one's is kept).

use http::{Method, Request, Response};

use super::context::RequestCtx;
use super::done::Done;
use super::guards::enforce;
use super::notes::Notes;
use super::refresh::{Refresh, spawn_refresh};
use crate::body::ResponseBody;
use crate::cache::Lookup;
use crate::client_body::{ClientBody, Inbound};
use crate::idempotency::Begin;
use crate::problem::Problem;
use crate::snapshot::Route;

/// Whether the route caches or keeps idempotency keys.
pub(crate) fn apply_to(route: &Route) -> bool {
    route.cache.is_some() || route.idempotency.is_some()
}

/// Answers from the cache or the idempotency store, or forwards the request (through
/// admission to the upstream) and lets both see the answer.
pub(crate) async fn run(
    ctx: &RequestCtx<'_>,
    req: Request<ClientBody>,
    notes: &mut Notes,
    done: &mut Done,
) -> Result<Response<ResponseBody>, Problem> {
    let route = &*ctx.route;
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    let primary = route
        .cache
        .as_ref()
        .map(|_| format!("{}{}", ctx.host(), done.target.as_str()));
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
                    route: ctx.route.clone(),
                    conn: ctx.conn.clone(),
                    gw: done.gw.clone(),
                    host: ctx.host_value.clone(),
                    uri: req.uri().clone(),
                    headers: req.headers().clone(),
                    new_path: route
                        .rewrite
                        .as_ref()
                        .map(|rw| rw.apply(req.uri().path(), &ctx.params)),
                    body_limit: ctx.plan.limits.max_body_bytes.0,
                    pending: refresh,
                });
                return Ok(resp);
            }
            Lookup::Forward(p) => {
                done.cache = Some("miss");
                if !cache.miss_limits.is_empty() {
                    enforce(&cache.miss_limits, &ctx.facts(&req), notes, done).await?;
                }
                notes.conditionals = p.conditionals.clone();
                pending = Some(p);
            }
        }
    }
    let (req, claim) = match &route.idempotency {
        Some(idem) => {
            let scope = match &ctx.consumer {
                Some(c) => format!("consumer:{c}"),
                None => format!("ip:{}", ctx.client_ip),
            };
            let target = done.target.as_str().to_owned();
            // Boxed (see `super::handle`).
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
    // (This phase is boxed where it begins, the exchange with it.)
    let result = super::forward::forward(req, ctx, notes, done).await;
    let result = match (&route.idempotency, claim) {
        (Some(idem), Some(claim)) => idem.complete(claim, result),
        _ => result,
    };
    match (&route.cache, pending, primary) {
        (Some(cache), Some(p), _) => p.complete(cache, result),
        (Some(cache), None, Some(primary)) if !read => {
            if let Ok(resp) = &result {
                cache.invalidate(&ctx.host(), &primary, resp);
            }
            result
        }
        _ => result,
    }
}
