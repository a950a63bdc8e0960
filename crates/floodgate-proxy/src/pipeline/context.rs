//! What the pipeline knows about a request once it is routed, computed once and read by
//! every later phase: the listener and route, the host it asked for, the route's path
//! parameters, the client's address (behind trusted proxies) and, once authenticated, the
//! consumer. Policy keys (rate limits, keyed breakers, the existence filter, consistent
//! hashing) are all rendered from [`RequestCtx::facts`].

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use http::header::HeaderValue;
use http::{HeaderMap, Method, Request, Uri};

use crate::conn::ConnInfo;
use crate::ratelimit::key::RequestFacts;
use crate::snapshot::{ListenerPlan, Route, Snapshot};
use floodgate_config::resilience::Criticality;

/// A route's path parameters: name and value, in the order of the path.
pub(crate) type Params = Vec<(String, String)>;

/// A routed request's facts.
pub(crate) struct RequestCtx<'s> {
    /// The configuration in force when the request arrived.
    pub(crate) snap: &'s Snapshot,
    /// The listener the request came on.
    pub(crate) plan: &'s ListenerPlan,
    /// The connection the request came on.
    pub(crate) conn: &'s Arc<ConnInfo>,
    /// The route that matched.
    pub(crate) route: Arc<Route>,
    /// The host the client asked for, as sent (forwarded upstream as `Host`).
    pub(crate) host_value: HeaderValue,
    /// The route's path parameters.
    pub(crate) params: Params,
    /// The client's address: the peer, or the address trusted proxies forwarded for.
    pub(crate) client_ip: IpAddr,
    /// How much the request matters under overload (the route's, or a trusted proxy's
    /// header).
    pub(crate) criticality: Criticality,
    /// The authenticated consumer, once the route's authentication passed.
    pub(crate) consumer: Option<Arc<str>>,
}

impl RequestCtx<'_> {
    /// The name routes match on (see [`crate::host::routing_name`]).
    pub(crate) fn host(&self) -> Cow<'_, str> {
        crate::host::routing_name(self.host_value.to_str().unwrap_or_default())
    }

    /// What policy keys are made of, for `req`.
    pub(crate) fn facts<'a, B>(&'a self, req: &'a Request<B>) -> RequestFacts<'a> {
        self.facts_of(req.method(), req.uri(), req.headers())
    }

    /// What policy keys are made of, for a request with this head.
    pub(crate) fn facts_of<'a>(
        &'a self,
        method: &'a Method,
        uri: &'a Uri,
        headers: &'a HeaderMap,
    ) -> RequestFacts<'a> {
        RequestFacts {
            client_ip: self.client_ip,
            route: &self.route.name,
            method,
            headers,
            query: uri.query(),
            params: &self.params,
            consumer: self.consumer.as_deref(),
        }
    }
}
