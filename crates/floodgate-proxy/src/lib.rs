//! Floodgate's data plane: listeners, the router, the per-request pipeline and the pooled
//! upstream client.
//!
//! Layout: `server` (bind, accept, serve connections, drain) and `conn` (what is known of
//! a connection); `pipeline` (one request's way through, as named phases); `router` (route
//! choice); `snapshot` (the runtime compiled from a config) and `gateway` (the current
//! snapshot and reload); `upstream` (targets, connection pools, the exchange behind one
//! call, health checks and DNS); `policy` and `policies` (what each policy declares, and
//! the list of them); the policies' own modules (`auth`, `waf`, `cors`, `existence`,
//! `ratelimit`, `cache`, `idempotency`, `admission`, `breaker`, `fault`, `fallback`,
//! `mirror`); `client_body`, `request_body` and `body` (the bodies of a request and its
//! response); `headers`, `host`, `path`, `client_ip`; `problem` (every gateway-made error
//! and its status), `request_id`, `metrics`, `access_log`; `explain` (which route a
//! request would meet and what would happen, for the CLI).

pub mod access_log;
pub mod admission;
pub mod auth;
pub mod body;
pub mod breaker;
pub mod cache;
pub mod client_body;
pub mod client_ip;
pub mod conn;
pub mod cors;
pub mod existence;
pub mod explain;
pub mod fallback;
pub mod fault;
pub mod fetch;
pub mod gateway;
pub mod grpc;
pub mod headers;
pub mod host;
mod http1;
pub mod idempotency;
pub mod kept;
pub mod metrics;
pub mod mirror;
pub mod path;
pub mod pipeline;
pub mod policies;
pub mod policy;
pub mod problem;
pub mod process_metrics;
pub mod ratelimit;
mod record;
pub mod request_body;
pub mod request_id;
pub mod router;
pub mod server;
pub mod snapshot;
pub mod sniff;
pub mod startup;
pub mod tls_server;
pub mod upstream;
pub mod waf;
pub mod websocket;

pub use gateway::{BuildError, Gateway};
pub use metrics::Metrics;
