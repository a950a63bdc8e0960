//! Admission: whether the gateway takes this request on now, after the guards let it
//! through. The route's bulkhead (and, at the exchange, the upstream's), the circuit
//! breakers (the route's, keyed by the request if it is keyed, then the upstream's), and
//! fault injection (a delay, or an abort the route's breaker sees as the upstream's
//! answer). A place or call taken here is held until the response ends.

use std::sync::Arc;

use http::Request;

use super::context::RequestCtx;
use super::done::Done;
use crate::admission::{Admission, Refused};
use crate::breaker::{Call, Outcome};
use crate::client_body::Inbound;
use crate::problem::Problem;
use crate::snapshot::Route;
use crate::upstream::UpstreamSet;
use floodgate_config::resilience::Criticality;

/// Takes a place in `bulkhead`, if there is one, held until the response ends.
pub(crate) async fn enter(
    bulkhead: Option<&Arc<Admission>>,
    criticality: Criticality,
    done: &mut Done,
) -> Result<(), Problem> {
    if let Some(b) = bulkhead {
        let permit = b.acquire(criticality).await.map_err(|r| match r {
            Refused::Shed => Problem::Shed,
            Refused::QueueFull | Refused::TimedOut => Problem::ConcurrencyLimited,
        })?;
        done.permits.push(permit);
    }
    Ok(())
}

/// The route breaker's call for this request (keyed by it if the breaker is keyed), if
/// the route has a breaker.
pub(crate) fn route_breaker(
    ctx: &RequestCtx<'_>,
    req: &Request<Inbound>,
) -> Result<Option<Call>, Problem> {
    let Some(b) = &ctx.route.breaker else {
        return Ok(None);
    };
    let mut key = Vec::new();
    if let Some(parts) = b.key_parts() {
        crate::ratelimit::key::render(parts, &ctx.facts(req), &mut key);
    }
    b.admit(&key).map(Some)
}

/// A call through `upstream`'s breaker, if it has one (naming the upstream for the log).
pub(crate) fn upstream_breaker(
    upstream: &UpstreamSet,
    done: &mut Done,
) -> Result<Option<Call>, Problem> {
    done.upstream = Some(upstream.name.clone());
    upstream.breaker.as_ref().map(|b| b.admit(b"")).transpose()
}

/// Injects the route's fault, if it has one and the draw says so: a delay, then maybe an
/// abort, which the route's breaker counts as the upstream's answer.
pub(crate) async fn inject_fault(
    route: &Route,
    req: &Request<Inbound>,
    call: &mut Option<Call>,
) -> Result<(), Problem> {
    let Some(fault) = &route.fault else {
        return Ok(());
    };
    let injected = fault.draw(req.headers());
    if let Some(delay) = injected.delay {
        fault.delays.inc();
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = injected.abort {
        fault.aborts.inc();
        if let Some(call) = call.take() {
            call.finish(Outcome::Status(status));
        }
        return Err(Problem::FaultAbort(status));
    }
    Ok(())
}
