//! A cache entry refreshed in the background (stale-while-revalidate, early refresh): a
//! GET like the client's goes upstream with the entry's validators, through the same
//! upstream exchange as any request, with a request id and access-log line of its own.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Uri, Version};
use http_body_util::BodyExt;

use super::admit::upstream_breaker;
use super::done::Done;
use super::forward::{Forward, proxy};
use super::notes::Notes;
use crate::body::{BodyEnd, Completion};
use crate::cache::Pending;
use crate::client_body::Inbound;
use crate::conn::ConnInfo;
use crate::gateway::Gateway;
use crate::request_id;
use crate::snapshot::Route;
use floodgate_config::resilience::Criticality;

pub(crate) struct Refresh {
    pub(crate) route: Arc<Route>,
    pub(crate) conn: Arc<ConnInfo>,
    pub(crate) gw: Arc<Gateway>,
    pub(crate) host: HeaderValue,
    pub(crate) uri: Uri,
    pub(crate) headers: http::HeaderMap,
    pub(crate) new_path: Option<String>,
    pub(crate) body_limit: u64,
    pub(crate) pending: Box<Pending>,
}

/// Refreshes a cache entry in the background (stale-while-revalidate, early refresh): a
/// GET like the client's goes upstream with the entry's validators; the answer is stored
/// (or merged, after a 304) as its body is read to the end. It has its own request id and
/// access-log line (`"cache": "refresh"`).
pub(crate) fn spawn_refresh(r: Refresh) {
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
        let notes = Notes {
            conditionals: pending.conditionals.clone(),
            ..Notes::default()
        };
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
        let result = match upstream_breaker(&upstream, &mut done) {
            Ok(call) => {
                let plan = Forward {
                    hash: None,
                    call,
                    route: route.clone(),
                    upstream,
                    new_path,
                    host,
                    body_limit,
                    criticality: Criticality::Normal,
                };
                proxy(req, &conn, plan, &notes, &mut done).await
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
