//! One request's way through the gateway, as named phases. [`handle`] reads top to bottom
//! as the list; each phase is a module of its own:
//!
//! 1. [`front`]: the front door. Head limits, the canonical path, the host, the redirect to
//!    HTTPS and the gateway's own endpoints; then routing, which gathers what every later
//!    phase reads into one [`context::RequestCtx`].
//! 2. [`guards`]: CORS (a preflight is answered), the WAF on the head, IP rules,
//!    authentication, the existence filter, rate limits.
//! 3. [`around`]: the cache and idempotency keys, which may answer instead of the upstream
//!    and see its answer on the way back.
//! 4. [`forward`]: the route's action. A redirect, or [`admit`]ssion (bulkheads, breakers,
//!    fault injection), the WAF on the body, and the upstream exchange
//!    ([`crate::upstream::exchange`]).
//! 5. [`fallback`]: a problem the route's fallback covers is answered by it.
//! 6. [`respond`]: the response filters, on every answer including the gateway's own.
//! 7. [`done`]: when the response body ends, the metrics and the access-log line.
//!
//! A phase refuses a request by returning the problem that answers it, so no later phase
//! runs. What a phase leaves for a later one is in [`notes::Notes`]; what the log needs,
//! in [`done::Done`].
//!
//! Large steps are boxed where they begin: hyper keeps each connection's request future
//! allocated while the connection idles, so only what every request needs is in it.

pub(crate) mod admit;
pub(crate) mod around;
pub(crate) mod context;
pub(crate) mod done;
pub(crate) mod fallback;
pub(crate) mod forward;
pub(crate) mod front;
pub(crate) mod guards;
pub(crate) mod notes;
pub(crate) mod refresh;
pub(crate) mod respond;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use http::uri::PathAndQuery;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::ResponseBody;
use crate::client_body::{ClientBody, Inbound};
use crate::conn::ConnInfo;
use crate::gateway::Gateway;
use crate::problem::Problem;
use crate::request_id;
use crate::snapshot::Snapshot;
use done::Done;
use front::Entered;
use notes::Notes;

/// Handles one request read from a connection; never fails: errors become problem+json
/// responses. (Not itself async: the future is [`serve`]'s, not one more around it.)
pub fn handle(
    gw: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> impl Future<Output = Response<ResponseBody>> + Send {
    let body_read = conn.body_read;
    serve(gw, conn, req.map(|body| ClientBody::new(body, body_read)))
}

/// Handles one request, whatever its body came from (a connection, or a test).
pub(crate) async fn serve(
    gw: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    req: Request<ClientBody>,
) -> Response<ResponseBody> {
    let snap = gw.snapshot();
    conn.state.begin();
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
    let mut notes = Notes {
        grpc: crate::grpc::call_kind(&req),
        ..Notes::default()
    };
    let result = match answer(&snap, &conn, req, &mut notes, &mut done).await {
        Err(problem) => fallback::fall_back(problem, &conn, &mut notes, &mut done).await,
        ok => ok,
    };
    let listener = snap.listeners.get(conn.listener);
    let mut resp = respond::respond(result, listener, &mut notes, &mut done);
    // A tunnel's request is over when the tunnel is.
    match resp
        .extensions_mut()
        .remove::<crate::websocket::TunnelClosed>()
    {
        None => resp.body_mut().on_done(Box::new(done)),
        Some(closed) => resp.body_mut().on_done(Box::new(done::AfterTunnel {
            done: Box::new(done),
            closed,
        })),
    }
    resp
}

/// The answer to a request: from the front door, a guard, the cache or idempotency store,
/// or the route's action.
async fn answer(
    snap: &Snapshot,
    conn: &Arc<ConnInfo>,
    mut req: Request<ClientBody>,
    notes: &mut Notes,
    done: &mut Done,
) -> Result<Response<ResponseBody>, Problem> {
    let mut ctx = match front::enter(snap, conn, &mut req, done).await? {
        Entered::Answered(resp) => return Ok(resp),
        Entered::Routed(ctx) => ctx,
    };
    // A phase with nothing configured on the route is not entered at all (not even its
    // future made: that is a copy of its state on the plain path).
    if guards::apply_to(&ctx.route)
        && let Some(answered) = guards::check(&mut ctx, &req, notes, done).await?
    {
        return Ok(answered);
    }
    // (A WebSocket handshake is never answered from the cache or an idempotency key.)
    if around::apply_to(&ctx.route) && !forward::is_tunnel(&req) {
        // Boxed, with the exchange inside (see above).
        return Box::pin(around::run(&ctx, req, notes, done)).await;
    }
    // Boxed (see above).
    Box::pin(forward::forward(
        req.map(Inbound::Stream),
        &ctx,
        notes,
        done,
    ))
    .await
}
