//! Fallbacks: when the route's answer is a problem its fallback covers (an open breaker,
//! the upstream down or timing out, shed load...), a static answer or the request sent to
//! a fallback upstream instead (only a bodiless request, which can be sent again). The
//! answer says which condition it stands in for.

use http::Request;
use http::header::HeaderValue;

use super::admit::upstream_breaker;
use super::done::Done;
use super::forward::{Forward, proxy};
use super::notes::Notes;
use crate::body::ResponseBody;
use crate::client_body::Inbound;
use crate::conn::ConnInfo;
use crate::fallback::FallbackAction;
use crate::problem::Problem;
use http::Response;

/// The route's fallback for `problem`, if it has one that covers it; else the problem.
pub(crate) async fn fall_back(
    problem: Problem,
    conn: &ConnInfo,
    notes: &mut Notes,
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
            let Some(replay) = notes.replay.take() else {
                return Err(problem);
            };
            let mut req = Request::new(Inbound::Empty);
            *req.method_mut() = replay.method;
            *req.uri_mut() = replay.uri;
            *req.version_mut() = replay.version;
            *req.headers_mut() = replay.headers;
            let plan = Forward {
                hash: None,
                call: upstream_breaker(upstream, done)?,
                route: route.clone(),
                upstream: upstream.clone(),
                new_path: replay.new_path,
                host: replay.host,
                body_limit: replay.body_limit,
                criticality: replay.criticality,
            };
            // The places held for the first upstream are not needed for the other one.
            done.permits.clear();
            Box::pin(proxy(req, conn, plan, notes, done)).await?
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
