//! Black-box tests of the `floodgate` binary: each test starts the real binary on port 0 in
//! front of upstream servers written in the test and talks to it over real sockets.

#![allow(unreachable_pub, missing_docs, clippy::unwrap_used)]

mod support;

mod admin;
mod auth;
mod avalanche;
mod balance;
mod breaker;
mod cache;
mod cache_cluster;
mod claims;
mod cli;
mod client_faults;
mod cluster;
mod cors;
mod cors_browser;
mod demo;
mod desync;
mod differential;
mod dns;
mod errors;
mod existence;
mod explain_agrees;
mod framing;
mod grpc;
mod headers;
mod health;
mod hosts;
mod idempotency;
mod introspection;
mod jwt;
mod limits;
mod logs;
mod matrix;
mod oauth2;
mod paths;
mod pool;
mod ratelimit;
mod readme;
mod reload;
mod retries;
mod routing;
mod shutdown;
mod streaming;
mod tls_listener;
mod traffic;
mod upstream_h2;
mod upstream_h2_streams;
mod upstream_tls;
mod waf;
mod websocket;
