//! The admin listener: `/metrics` (OpenMetrics text), `/healthz` (the process is up),
//! `/readyz` (it accepts traffic: 503 while starting or draining), `/status` (the running
//! config's generation, listeners and routes, as JSON) and `/breakers` (every circuit
//! breaker's state, window counts and time until half-open, as JSON), `/cache` (the HTTP
//! cache's size) with `POST /cache/purge` (drop responses by URL, prefix or tag), and
//! `POST /existence/{route}` (add keys to a route's existence filter). The admin API issue
//! adds authentication, more writes and the dashboard here; until then the listener is
//! loopback only by default.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use floodgate_proxy::Gateway;

/// Serves the admin endpoints for the life of the process: during a drain `/readyz` says
/// 503 and `/metrics` still answers.
pub async fn serve(listener: TcpListener, gw: Arc<Gateway>, ready: Arc<AtomicBool>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let gw = gw.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (gw, ready) = (gw.clone(), ready.clone());
                async move { Ok::<_, Infallible>(answer(&gw, &ready, req).await) }
            });
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "admin connection error");
            }
        });
    }
}

/// The largest request body the admin endpoints read.
const BODY_LIMIT: usize = 1 << 20;

async fn answer(gw: &Gateway, ready: &AtomicBool, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() == Method::POST {
        let path = req.uri().path().to_owned();
        let body = match http_body_util::Limited::new(req.into_body(), BODY_LIMIT)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => return problem(StatusCode::PAYLOAD_TOO_LARGE, "the body is over 1 MiB"),
        };
        return match path.as_str() {
            "/cache/purge" => purge(gw, &body).await,
            p => match p.strip_prefix("/existence/") {
                Some(route) => existence_add(gw, route, &body),
                None => problem(
                    StatusCode::NOT_FOUND,
                    "POST to /cache/purge or /existence/{route}",
                ),
            },
        };
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET and HEAD\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            gw.metrics.encode(),
        ),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            if ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "text/plain", "ready\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready\n".into(),
                )
            }
        }
        "/status" => {
            let snap = gw.snapshot();
            let body = serde_json::json!({
                "generation": snap.generation,
                "listeners": snap.listeners.iter().map(|l| serde_json::json!({
                    "name": &*l.name,
                    "routes": l.router.len(),
                })).collect::<Vec<_>>(),
                "upstreams": upstreams_status(&snap),
                "routes": snap.config.routes.iter().enumerate().map(|(i, r)| route_status(r, i)).collect::<Vec<_>>(),
                "last_reload": gw.last_reload().map(|r| serde_json::json!({
                    "at": floodgate_proxy::access_log::rfc3339(r.at),
                    "cause": r.cause,
                    "ok": r.outcome.is_ok(),
                    "generation": r.outcome.as_ref().ok(),
                    "error": r.outcome.as_ref().err(),
                    "changes": r.changes,
                })),
            });
            text(StatusCode::OK, "application/json", body.to_string())
        }
        "/breakers" => text(
            StatusCode::OK,
            "application/json",
            breakers_status(gw).to_string(),
        ),
        "/cache" => {
            let store = gw.cache.store();
            store.sync();
            let (entries, bytes) = store.usage();
            let body = serde_json::json!({
                "entries": entries,
                "bytes": bytes,
                "in_flight": gw.cache.flights.len(),
                "shared_tier": gw.cache.tier().is_some(),
            });
            text(StatusCode::OK, "application/json", body.to_string())
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz, /readyz, /status, /breakers, /cache\n".into(),
        ),
    }
}

/// A route as configured: its match, what it does, and the policies it has.
fn route_status(r: &floodgate_config::model::Route, i: usize) -> serde_json::Value {
    let m = &r.matches;
    let mut matches = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        matches.insert(k.to_owned(), v);
    };
    if !m.hosts.is_empty() {
        put("hosts", m.hosts.clone().into());
    }
    for (k, v) in [
        ("path", &m.path),
        ("path_prefix", &m.path_prefix),
        ("path_regex", &m.path_regex),
    ] {
        if let Some(v) = v {
            put(k, v.clone().into());
        }
    }
    if !m.methods.is_empty() {
        put("methods", m.methods.clone().into());
    }
    if !m.headers.is_empty() {
        put(
            "headers",
            m.headers
                .iter()
                .map(|h| h.name.clone())
                .collect::<Vec<_>>()
                .into(),
        );
    }
    if !m.query.is_empty() {
        put(
            "query",
            m.query
                .iter()
                .map(|q| q.name.clone())
                .collect::<Vec<_>>()
                .into(),
        );
    }
    let policies: Vec<&str> = [
        ("rate_limits", !r.rate_limits.is_empty()),
        ("concurrency", r.concurrency.is_some()),
        ("circuit_breaker", r.circuit_breaker.is_some()),
        ("fallback", r.fallback.is_some()),
        ("fault", r.fault.is_some()),
        ("auth", r.auth.is_some()),
        ("ip", r.ip.is_some()),
        ("cors", r.cors.is_some()),
        ("waf", r.waf.is_some()),
        ("security_headers", r.security_headers.is_some()),
        ("existence_filter", r.existence_filter.is_some()),
        ("cache", r.cache.is_some()),
        ("idempotency", r.idempotency.is_some()),
        ("mirror", r.mirror.is_some()),
        ("rewrite", r.rewrite.is_some()),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(name, _)| name)
    .collect();
    serde_json::json!({
        "name": floodgate_config::route_name(r, i),
        "match": matches,
        "upstream": r.upstream,
        "split": (!r.split.is_empty()).then(|| r.split.iter().map(|t| t.upstream.clone()).collect::<Vec<_>>()),
        "redirect": r.redirect.as_ref().map(|d| d.location.clone()),
        "policies": policies,
    })
}

/// Each upstream's targets as the balancers see them now.
fn upstreams_status(snap: &floodgate_proxy::snapshot::Snapshot) -> serde_json::Value {
    let now = floodgate_proxy::ratelimit::now();
    snap.upstreams
        .iter()
        .map(|(name, set)| {
            let targets: Vec<_> = set
                .targets()
                .iter()
                .map(|t| {
                    let stats = &t.pool.stats;
                    serde_json::json!({
                        "address": &*t.address,
                        "healthy": stats.healthy(),
                        "ejected": stats.ejected(now),
                        "draining": t.draining,
                        "in_flight": stats.in_flight(),
                        "idle_connections": t.pool.idle_count(),
                    })
                })
                .collect();
            (name.clone(), serde_json::json!({ "targets": targets }))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Every circuit breaker (each key of a keyed one) with its state now.
fn breakers_status(gw: &Gateway) -> serde_json::Value {
    let ms = |nanos: u64| nanos as f64 / 1e6;
    let list: Vec<_> = gw
        .breakers
        .all()
        .iter()
        .flat_map(|b| {
            b.states().into_iter().map(move |(key, s)| {
                serde_json::json!({
                    "scope": b.scope,
                    "name": &*b.name,
                    "key": (b.scope == "key").then_some(&*key),
                    "state": s.state.as_str(),
                    "window": {
                        "calls": s.window.calls,
                        "failures": s.window.failures,
                        "slow": s.window.slow,
                    },
                    "consecutive_failures": s.consecutive_failures,
                    "half_open_in_ms": s.half_open_in.map(ms),
                    "trips": s.trips,
                    "probes_in_flight": s.probes_in_flight,
                })
            })
        })
        .collect();
    serde_json::json!({ "breakers": list })
}

/// `POST /cache/purge` with `{"url": ...}`, `{"prefix": ...}`, `{"tag": ...}` or
/// `{"all": true}`: drops the matching responses on this node, and on every node of the
/// fleet when clustered.
async fn purge(gw: &Gateway, body: &[u8]) -> Response<Full<Bytes>> {
    let order = match floodgate_proxy::cache::Purge::parse(body) {
        Ok(p) => p,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &e),
    };
    // Redis first: a node that misses in memory must not find there what was purged.
    let (shared, purges) = match gw.cache.tier() {
        Some(tier) => match tier.purge(&order).await {
            Some(count) => (Some("purged"), Some(count)),
            None => {
                tracing::warn!("cache purge did not reach the shared (Redis) tier");
                (
                    Some("failed: Redis did not answer; its copies expire on their own"),
                    None,
                )
            }
        },
        None => (None, None),
    };
    order.apply(&gw.cache.store());
    let fleet = match &gw.cluster {
        Some(c) => match floodgate_proxy::cache::broadcast::publish(c, &order, purges).await {
            Ok(()) => "broadcast",
            Err(e) => {
                tracing::warn!(error = %e, "cache purge not broadcast to the fleet");
                "this node only (the broadcast failed)"
            }
        },
        None => "this node",
    };
    let mut body = serde_json::json!({ "purged": order.describe(), "scope": fleet });
    if let Some(shared) = shared {
        body["shared_tier"] = shared.into();
    }
    text(StatusCode::OK, "application/json", body.to_string())
}

/// `POST /existence/{route}` with a JSON array of keys or one key per line: adds them to
/// the route's existence filter. They count as learned keys: carried into the filter built
/// at the next read of its source (which should list them by then). A Bloom filter cannot
/// forget a key.
fn existence_add(gw: &Gateway, route: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let Some(filter) = gw.existence.named("existence", route) else {
        return problem(
            StatusCode::NOT_FOUND,
            &format!("route {route:?} has no existence filter"),
        );
    };
    let mut added = 0u64;
    floodgate_proxy::existence::for_each_key(body, |k| {
        filter.insert(k);
        added += 1;
    });
    let body = serde_json::json!({ "route": route, "added": added });
    text(StatusCode::OK, "application/json", body.to_string())
}

/// An RFC 9457 problem answer.
fn problem(status: StatusCode, detail: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    text(status, "application/problem+json", body.to_string())
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}
