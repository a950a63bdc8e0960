//! The demo's upstream: a small product catalog service on a loopback port, with endpoints
//! that misbehave on purpose so the gateway's protections have something to show.
//!
//! - `GET /products?offset=&limit=` a page of products (limit ≤ 100)
//! - `GET /products/{id}` one product, or 404 problem+json (ids 1..=3000 exist)
//! - `GET /products/ids` every existing id, as a JSON array
//! - `GET /flaky` fails with 503 for a configured share of requests
//! - `GET /slow?delay=2s` answers after the delay (default 1s, at most 30s)
//! - `POST /orders` makes a new order each time (201, numbered), to show idempotency keys
//! - `GET /ws/echo` a WebSocket echo ([`super::echo`])
//! - `GET /healthz`
//!
//! The demo runs three instances; the third is degraded (half its product requests fail)
//! so that balancing, retries and outlier ejection have something to show.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// How many products exist.
pub(crate) const PRODUCTS: u32 = 3000;

const ADJECTIVES: [&str; 8] = [
    "Sturdy", "Compact", "Deluxe", "Classic", "Smart", "Quiet", "Rapid", "Eco",
];
const NOUNS: [&str; 10] = [
    "Kettle",
    "Lamp",
    "Backpack",
    "Keyboard",
    "Bottle",
    "Chair",
    "Headphones",
    "Umbrella",
    "Notebook",
    "Drill",
];
const CATEGORIES: [&str; 5] = ["kitchen", "home", "travel", "office", "tools"];

/// Settings of the catalog.
pub(crate) struct Catalog {
    /// Share of `/flaky` requests that fail.
    pub(crate) flaky_rate: f64,
    /// Which of the demo's instances this is (sent as `x-catalog-instance`).
    pub(crate) instance: u32,
    /// A degraded instance fails half of its product requests with 503 (its health check
    /// still passes: only outlier detection on live traffic notices).
    pub(crate) degraded: bool,
    /// Orders made so far.
    pub(crate) orders: std::sync::atomic::AtomicU64,
}

fn product(id: u32) -> serde_json::Value {
    let i = id as usize;
    serde_json::json!({
        "id": id,
        "name": format!("{} {}", ADJECTIVES[i % ADJECTIVES.len()], NOUNS[(i / ADJECTIVES.len()) % NOUNS.len()]),
        "category": CATEGORIES[i % CATEGORIES.len()],
        "price_cents": 499 + (id * 7919) % 20000,
        "in_stock": !id.is_multiple_of(7),
    })
}

/// Starts the catalog on `127.0.0.1:0` in its own thread and runtime; returns its address.
pub(crate) fn start(catalog: Catalog) -> std::io::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let catalog = Arc::new(catalog);
    std::thread::Builder::new()
        .name("demo-catalog".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("demo catalog: {e}");
                        return;
                    }
                };
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let catalog = catalog.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| {
                            let catalog = catalog.clone();
                            async move {
                                let mut resp = answer(&catalog, req).await;
                                resp.headers_mut().insert(
                                    "x-catalog-instance",
                                    header::HeaderValue::from(catalog.instance),
                                );
                                Ok::<_, Infallible>(resp)
                            }
                        });
                        let conn = auto::Builder::new(TokioExecutor::new());
                        if conn
                            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                            .await
                            .is_err()
                        {
                            // The client went away; nothing to do.
                        }
                    });
                }
            });
        })?;
    Ok(addr)
}

async fn answer(catalog: &Catalog, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() == "/ws/echo" {
        return super::echo::answer(req);
    }
    let path = req.uri().path();
    let query = req.uri().query();
    let param = |name: &str| floodgate_proxy::router::query_param(query, name);
    if catalog.degraded && path.starts_with("/products") && fastrand::bool() {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "This catalog instance is degraded on purpose.",
        );
    }
    match path {
        "/healthz" => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
        "/products" => {
            let offset: u32 = param("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
            let limit: u32 = param("limit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(20)
                .min(100);
            let items: Vec<_> = (offset + 1..=PRODUCTS)
                .take(limit as usize)
                .map(product)
                .collect();
            json(
                StatusCode::OK,
                serde_json::json!({"total": PRODUCTS, "offset": offset, "items": items}),
            )
        }
        "/orders" if req.method() == http::Method::POST => {
            let n = catalog
                .orders
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            let mut r = json(
                StatusCode::CREATED,
                serde_json::json!({"order": n, "instance": catalog.instance}),
            );
            if let Ok(v) = header::HeaderValue::from_str(&format!("/orders/{n}")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        "/products/ids" => json(
            StatusCode::OK,
            serde_json::json!((1..=PRODUCTS).collect::<Vec<_>>()),
        ),
        "/flaky" => {
            if fastrand::f64() < catalog.flaky_rate {
                problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The flaky endpoint failed on purpose.",
                )
            } else {
                json(StatusCode::OK, serde_json::json!({"status": "lucky"}))
            }
        }
        "/slow" => {
            let delay = param("delay")
                .and_then(|d| d.parse::<floodgate_config::value::Duration>().ok())
                .map_or(Duration::from_secs(1), |d| d.0)
                .min(Duration::from_secs(30));
            tokio::time::sleep(delay).await;
            json(
                StatusCode::OK,
                serde_json::json!({"waited_ms": delay.as_millis() as u64}),
            )
        }
        p => match p
            .strip_prefix("/products/")
            .and_then(|id| id.parse::<u32>().ok())
        {
            Some(id) if (1..=PRODUCTS).contains(&id) => {
                // Cacheable for 30s, with a validator and tags to purge by.
                let mut r = json(StatusCode::OK, product(id));
                for (name, value) in [
                    ("cache-control", "max-age=30".to_owned()),
                    ("etag", format!("\"p{id}\"")),
                    ("surrogate-key", format!("product-{id} products")),
                ] {
                    if let Ok(v) = header::HeaderValue::from_str(&value) {
                        r.headers_mut().insert(name, v);
                    }
                }
                r
            }
            Some(_) => problem(StatusCode::NOT_FOUND, "No product has this id."),
            None => problem(StatusCode::NOT_FOUND, "No such resource in the catalog."),
        },
    }
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn problem(status: StatusCode, detail: &str) -> Response<Full<Bytes>> {
    let mut r = json(
        status,
        serde_json::json!({"title": status.canonical_reason(), "status": status.as_u16(), "detail": detail}),
    );
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/problem+json"),
    );
    r
}
