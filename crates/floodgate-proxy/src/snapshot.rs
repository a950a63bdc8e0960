//! A snapshot is the whole runtime built from one validated config: per-listener routers with
//! compiled routes, upstream sets, and pre-resolved metric series. It is immutable; a reload
//! builds a new one and swaps it in (see [`crate::gateway`]), and each request keeps the
//! snapshot it started on until it ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use floodgate_config::ValidConfig;
use floodgate_config::model::{Limits, ListenerTimeouts, Rewrite};
use floodgate_config::template::TextTemplate;
use floodgate_core::balance::SmoothWeighted;
use http::StatusCode;

use crate::admission::{Admission, AdmissionRegistry};
use crate::breaker::{BreakerRegistry, ScopedBreaker};
use crate::client_ip::TrustedProxies;
use crate::fallback::FallbackPlan;
use crate::fault::FaultPlan;
use crate::headers::HeaderEdits;
use crate::metrics::{Metrics, RouteMetrics};
use crate::mirror::MirrorPlan;
use crate::ratelimit::cluster::ClusterClient;
use crate::ratelimit::{LimiterRegistry, RouteLimits};
use crate::router::{Conditions, RouteSpec, Router};
use crate::upstream::{Pools, Registries, UpstreamSet};
use floodgate_config::resilience::Criticality;

/// The long-lived state a snapshot is built against and reuses.
pub struct Shared<'a> {
    /// Upstream connection pools.
    pub pools: &'a Pools,
    /// Metric families.
    pub metrics: &'a Metrics,
    /// Local rate-limiter state.
    pub limiters: &'a LimiterRegistry,
    /// Bulkheads.
    pub admissions: &'a AdmissionRegistry,
    /// Circuit breakers.
    pub breakers: &'a BreakerRegistry,
    /// Existence filters.
    pub existence: &'a crate::kept::Kept<crate::existence::Existence>,
    /// The HTTP cache's store and flights.
    pub cache: &'a crate::cache::CacheState,
    /// Idempotency-key stores, by route.
    pub idempotency: &'a crate::kept::Kept<crate::idempotency::KeyStore>,
    /// Open WebSocket tunnels, by route.
    pub tunnels: &'a crate::kept::Kept<crate::websocket::TunnelCounts>,
    /// Each listener's TLS server configuration (by index; none for cleartext), built from
    /// its files beforehand because that can fail.
    pub listener_tls: &'a [Option<Arc<rustls::ServerConfig>>],
    /// The cluster's Redis client, if clustered.
    pub cluster: Option<&'a Arc<ClusterClient>>,
}

/// What a matched route does.
pub enum Action {
    /// Proxy to an upstream.
    Proxy(Arc<UpstreamSet>),
    /// Proxy to one of several upstreams, shared by weight (smooth weighted round robin,
    /// so the shares are exact over each cycle).
    Split(Split),
    /// Answer with a redirect.
    Redirect {
        /// The `Location` template.
        location: TextTemplate,
        /// 301, 302, 303, 307 or 308.
        status: StatusCode,
    },
}

impl Action {
    /// The upstream this request goes to, for proxying actions.
    pub fn upstream(&self) -> Option<Arc<UpstreamSet>> {
        match self {
            Action::Proxy(u) => Some(u.clone()),
            Action::Split(s) => s.pick(),
            Action::Redirect { .. } => None,
        }
    }
}

/// A weighted split between upstreams.
pub struct Split {
    /// The upstreams with their weights.
    pub sets: Vec<(Arc<UpstreamSet>, u32)>,
    cycle: SmoothWeighted,
    next: AtomicUsize,
}

impl Split {
    fn new(sets: Vec<(Arc<UpstreamSet>, u32)>) -> Self {
        let weights: Vec<u32> = sets.iter().map(|(_, w)| *w).collect();
        Split {
            cycle: SmoothWeighted::new(&weights),
            next: AtomicUsize::new(fastrand::usize(..usize::MAX / 2)),
            sets,
        }
    }

    fn pick(&self) -> Option<Arc<UpstreamSet>> {
        let i = self.cycle.pick(self.next.fetch_add(1, Ordering::Relaxed))?;
        self.sets.get(i).map(|(u, _)| u.clone())
    }
}

/// A compiled route.
pub struct Route {
    /// The route's name.
    pub name: Arc<str>,
    /// What it does.
    pub action: Action,
    /// Path rewriting before proxying.
    pub rewrite: Option<CompiledRewrite>,
    /// Edits to the upstream request's headers.
    pub request_headers: HeaderEdits,
    /// Edits to the client response's headers.
    pub response_headers: HeaderEdits,
    /// The route's metric series.
    pub metrics: RouteMetrics,
    /// Rate limits, in order.
    pub limits: RouteLimits,
    /// The route's bulkhead.
    pub concurrency: Option<Arc<Admission>>,
    /// Where copies of its requests go.
    pub mirror: Option<MirrorPlan>,
    /// The route's circuit breaker (scope `route` or `key`).
    pub breaker: Option<Arc<ScopedBreaker>>,
    /// What to answer instead of an error.
    pub fallback: Option<FallbackPlan>,
    /// Faults to inject.
    pub fault: Option<FaultPlan>,
    /// How much its requests matter under overload.
    pub criticality: Criticality,
    /// The authentication it requires, and who may pass.
    pub access: Option<crate::auth::RouteAccess>,
    /// Client addresses allowed and denied.
    pub ip: Option<crate::auth::IpAccess>,
    /// Its CORS policy.
    pub cors: Option<crate::cors::CorsPolicy>,
    /// Its WAF.
    pub waf: Option<crate::waf::WafPolicy>,
    /// Security headers set on its responses.
    pub security_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Its existence filter.
    pub existence: Option<Arc<crate::existence::Existence>>,
    /// Its HTTP cache.
    pub cache: Option<crate::cache::RouteCache>,
    /// Its idempotency-key handling.
    pub idempotency: Option<crate::idempotency::RouteIdempotency>,
    /// Its WebSocket policy.
    pub websocket: crate::websocket::TunnelPolicy,
}

/// A route's path rewrite, compiled.
pub struct CompiledRewrite {
    strip_prefix: Option<String>,
    add_prefix: Option<String>,
    path: Option<TextTemplate>,
}

impl CompiledRewrite {
    fn compile(rw: &Rewrite) -> Self {
        CompiledRewrite {
            strip_prefix: rw
                .strip_prefix
                .as_ref()
                .map(|p| p.trim_end_matches('/').to_owned()),
            add_prefix: rw
                .add_prefix
                .as_ref()
                .map(|p| p.trim_end_matches('/').to_owned()),
            path: rw.path.as_deref().and_then(|p| TextTemplate::parse(p).ok()),
        }
    }

    /// The rewritten path for `path` with route parameters `params`.
    pub fn apply(&self, path: &str, params: &[(String, String)]) -> String {
        if let Some(t) = &self.path {
            return t.render(|name| {
                params
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            });
        }
        let mut out = path;
        if let Some(p) = &self.strip_prefix
            && out.starts_with(p.as_str())
            && matches!(out.as_bytes().get(p.len()), None | Some(b'/'))
        {
            out = &out[p.len()..];
        }
        let out = if out.is_empty() { "/" } else { out };
        match &self.add_prefix {
            Some(pre) if out == "/" && !pre.is_empty() => pre.clone(),
            Some(pre) => format!("{pre}{out}"),
            None => out.to_owned(),
        }
    }
}

/// One listener's part of the snapshot.
pub struct ListenerPlan {
    /// The listener's name.
    pub name: Arc<str>,
    /// Request size limits.
    pub limits: Limits,
    /// Client timeouts.
    pub timeouts: ListenerTimeouts,
    /// The routes that apply to this listener.
    pub router: Router<Arc<Route>>,
    /// Proxies whose forwarding fields are believed for the client address.
    pub trusted_proxies: TrustedProxies,
    /// The header that sets a request's criticality, believed from trusted proxies.
    pub criticality_header: Option<http::HeaderName>,
    /// TLS: the handshake's configuration.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// `Strict-Transport-Security` for every response.
    pub hsts: Option<http::HeaderValue>,
    /// Redirect every request to HTTPS: the port and the status.
    pub redirect_to_https: Option<(u16, StatusCode)>,
    /// How request paths are made canonical.
    pub paths: floodgate_config::model::PathHandling,
    /// How HTTP/1.1 is spoken: the engine and its buffers.
    pub http1: floodgate_config::model::Http1Settings,
}

/// A compiled route with the listener names it is limited to (`None`: all).
type ScopedRoute = (Option<Vec<String>>, RouteSpec<Arc<Route>>);

/// The runtime built from one config.
pub struct Snapshot {
    /// Increases by one per successful load.
    pub generation: u64,
    /// The config it was built from.
    pub config: ValidConfig,
    /// Listener plans, in config order.
    pub listeners: Vec<ListenerPlan>,
    /// Upstream sets by name.
    pub upstreams: BTreeMap<String, Arc<UpstreamSet>>,
    /// Series for requests that matched no route.
    pub unmatched: RouteMetrics,
    /// The consumers' credentials.
    pub identities: crate::auth::Identities,
    /// The built-in token endpoint.
    pub oauth2: Option<Arc<crate::auth::oauth2::TokenIssuer>>,
}

impl Snapshot {
    /// Builds the runtime for `config`, reusing pools, limiter state and bulkheads from
    /// `shared`.
    pub fn build(config: ValidConfig, generation: u64, shared: &Shared<'_>) -> Self {
        let metrics = shared.metrics;
        let oauth2 = config.oauth2.as_ref().and_then(|o| {
            crate::auth::oauth2::TokenIssuer::build(o)
                .inspect_err(|e| tracing::error!(error = %e, "the token endpoint is off"))
                .ok()
                .map(Arc::new)
        });
        let upstreams: BTreeMap<String, Arc<UpstreamSet>> = config
            .upstreams
            .iter()
            .map(|(name, u)| {
                let registries = Registries {
                    pools: shared.pools,
                    metrics: &metrics.upstreams,
                    breaker_metrics: &metrics.breakers,
                    breakers: shared.breakers,
                };
                let mut set = UpstreamSet::build(name, u, &registries);
                set.concurrency = u.concurrency.as_ref().map(|c| {
                    shared
                        .admissions
                        .get_or_build("upstream", name, c, &metrics.bulkheads)
                });
                (name.clone(), Arc::new(set))
            })
            .collect();
        let tier = shared.cache.tier_for(&config.cache, shared.cluster);
        let routes: Vec<ScopedRoute> = config
            .routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let name: Arc<str> = Arc::from(floodgate_config::route_name(r, i));
                let action = match (&r.upstream, &r.redirect) {
                    (None, None) if !r.split.is_empty() => Action::Split(Split::new(
                        r.split
                            .iter()
                            .filter_map(|s| Some((upstreams.get(&s.upstream)?.clone(), s.weight)))
                            .collect(),
                    )),
                    (Some(u), _) => Action::Proxy(upstreams.get(u)?.clone()),
                    (None, Some(rd)) => Action::Redirect {
                        location: TextTemplate::parse(&rd.location).ok()?,
                        status: StatusCode::from_u16(rd.status).ok()?,
                    },
                    (None, None) => return None,
                };
                let route = Route {
                    breaker: r.circuit_breaker.as_ref().map(|c| {
                        let scope = crate::breaker::scope_of(c, true);
                        shared
                            .breakers
                            .get_or_build(scope, &name, c, &metrics.breakers)
                    }),
                    fallback: r.fallback.as_ref().and_then(|f| {
                        FallbackPlan::compile(f, &name, &upstreams, &metrics.fallbacks)
                    }),
                    websocket: crate::websocket::TunnelPolicy::compile(
                        r.websocket.as_ref(),
                        &name,
                        &metrics.websocket,
                        // Counts survive reloads and limit changes: open tunnels stay open.
                        shared
                            .tunnels
                            .get_or_build("tunnels", &name, &"counts", Default::default),
                    ),
                    fault: r.fault.as_ref().map(|f| {
                        FaultPlan::compile(
                            f,
                            metrics.faults.counter(&name, "delay"),
                            metrics.faults.counter(&name, "abort"),
                        )
                    }),
                    criticality: r.criticality,
                    access: r
                        .auth
                        .as_ref()
                        .map(|a| crate::auth::RouteAccess::compile(a, oauth2.as_deref())),
                    ip: r.ip.as_ref().map(crate::auth::IpAccess::compile),
                    cors: r.cors.as_ref().map(crate::cors::CorsPolicy::compile),
                    waf: r.waf.as_ref().map(crate::waf::WafPolicy::compile),
                    existence: r.existence_filter.as_ref().map(|f| {
                        shared.existence.get_or_build("existence", &name, f, || {
                            crate::existence::Existence::new(f)
                        })
                    }),
                    cache: r.cache.as_ref().map(|c| {
                        crate::cache::RouteCache::new(
                            c,
                            shared.cache.store_for(&config.cache),
                            tier.clone(),
                            shared.cache.flights.clone(),
                            RouteLimits::compile(
                                &format!("{name}/cache-misses"),
                                &c.miss_rate_limits,
                                shared.limiters,
                                shared.cluster,
                                &metrics.limits,
                            ),
                            metrics.cache.series(&name),
                        )
                    }),
                    idempotency: r.idempotency.as_ref().map(|c| {
                        // Kept while the sizes stay: methods and limits may change.
                        let store = shared.idempotency.get_or_build(
                            "idempotency",
                            &name,
                            &(c.memory, c.ttl),
                            || crate::idempotency::KeyStore::new(c.memory.0, c.ttl.0),
                        );
                        let keys = shared.cluster.filter(|_| c.shared).map(|cluster| {
                            Arc::new(crate::idempotency::shared::SharedKeys::new(
                                cluster.clone(),
                                &name,
                                c.ttl.0,
                            ))
                        });
                        crate::idempotency::RouteIdempotency::new(
                            c,
                            store,
                            keys,
                            crate::idempotency::Metrics::new(&metrics.idempotency, &name),
                        )
                    }),
                    security_headers: r
                        .security_headers
                        .as_ref()
                        .map(crate::cors::security_headers)
                        .unwrap_or_default(),
                    metrics: metrics.route(&name),
                    limits: RouteLimits::compile(
                        &name,
                        &r.rate_limits,
                        shared.limiters,
                        shared.cluster,
                        &metrics.limits,
                    ),
                    mirror: r.mirror.as_ref().and_then(|m| {
                        Some(MirrorPlan::new(
                            upstreams.get(&m.upstream)?.clone(),
                            m.share.0,
                        ))
                    }),
                    concurrency: r.concurrency.as_ref().map(|c| {
                        shared
                            .admissions
                            .get_or_build("route", &name, c, &metrics.bulkheads)
                    }),
                    name,
                    action,
                    rewrite: r.rewrite.as_ref().map(CompiledRewrite::compile),
                    request_headers: HeaderEdits::compile(&r.request_headers),
                    response_headers: HeaderEdits::compile(&r.response_headers),
                };
                let spec = RouteSpec {
                    hosts: r.matches.hosts.clone(),
                    conditions: Conditions::compile(&r.matches),
                    priority: r.priority,
                    value: Arc::new(route),
                };
                Some((r.listeners.clone(), spec))
            })
            .collect();
        let listeners = config
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let specs = routes
                    .iter()
                    .filter(|(only, _)| only.as_ref().is_none_or(|names| names.contains(&l.name)))
                    .map(|(_, s)| s.clone())
                    .collect();
                ListenerPlan {
                    name: Arc::from(l.name.as_str()),
                    limits: l.limits.clone(),
                    timeouts: l.timeouts.clone(),
                    paths: l.paths.clone(),
                    http1: l.http1.clone(),
                    router: Router::new(specs),
                    trusted_proxies: TrustedProxies::new(&l.trusted_proxies),
                    criticality_header: l
                        .criticality_header
                        .as_ref()
                        .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
                    tls: shared
                        .listener_tls
                        .get(i)
                        .cloned()
                        .flatten()
                        .map(tokio_rustls::TlsAcceptor::from),
                    hsts: l
                        .hsts
                        .as_ref()
                        .and_then(|h| http::HeaderValue::from_str(&h.header_value()).ok()),
                    redirect_to_https: l
                        .redirect_to_https
                        .as_ref()
                        .and_then(|r| Some((r.port, StatusCode::from_u16(r.status).ok()?))),
                }
            })
            .collect();
        shared.limiters.retain_built();
        shared.admissions.retain_built();
        shared.breakers.retain_built();
        shared.existence.retain_built();
        shared.idempotency.retain_built();
        shared.tunnels.retain_built();
        Snapshot {
            generation,
            listeners,
            upstreams,
            unmatched: metrics.route("(none)"),
            identities: crate::auth::Identities::build(&config.consumers),
            oauth2,
            config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(strip: Option<&str>, add: Option<&str>, path: Option<&str>) -> CompiledRewrite {
        CompiledRewrite::compile(&Rewrite {
            strip_prefix: strip.map(String::from),
            add_prefix: add.map(String::from),
            path: path.map(String::from),
        })
    }

    #[test]
    fn rewrites() {
        assert_eq!(rw(Some("/api"), None, None).apply("/api/x", &[]), "/x");
        assert_eq!(rw(Some("/api"), None, None).apply("/api", &[]), "/");
        assert_eq!(rw(Some("/api"), None, None).apply("/apix", &[]), "/apix");
        assert_eq!(
            rw(Some("/api/"), Some("/v2"), None).apply("/api/x", &[]),
            "/v2/x"
        );
        assert_eq!(rw(None, Some("/v2"), None).apply("/", &[]), "/v2");
        let params = [("id".to_string(), "42".to_string())];
        assert_eq!(
            rw(None, None, Some("/items/{id}")).apply("/p/42", &params),
            "/items/42"
        );
    }
}
