//! Floodgate's HTTP/1.1 engine: a server connection and the pieces an upstream client is
//! built from, with strict framing and buffers lent only while a connection has something
//! to read or write. It knows nothing of routes or policies; the gateway plugs its request
//! pipeline in as a [`Service`].
//!
//! Why not hyper here: hyper's HTTP/1.1 server keeps an 8 KiB read and an 8 KiB write
//! buffer per connection for the connection's life, runs a general state machine per
//! message and frames more leniently than a proxy that must never disagree with its next
//! hop can afford (see `docs/architecture.md`). HTTP/2 stays on hyper and h2.
//!
//! - [`head`]: request and response heads, parsed with `httparse` and held to RFC 9112.
//! - [`framing`]: how long a body is, refusing every ambiguous case.
//! - [`chunked`]: the chunked coding, decoded incrementally and bounded.
//! - [`server`]: one connection's requests, answered in order.
//! - [`client`]: one connection to an upstream, driven by the request that uses it.
//! - [`upgrade`]: the connection handed over after `101 Switching Protocols`.

pub mod chunked;
pub mod client;
pub mod corpus;
mod date;
mod encode;
pub mod framing;
pub mod head;
mod incoming;
mod out;
mod pool;
pub mod server;
pub mod upgrade;
mod wire;

pub use client::{ClientConfig, ClientConn, ClientError, SendError};
pub use framing::Framing;
pub use head::{HeadError, HeadLimits};
pub use incoming::IncomingBody;
pub use server::{Connection, ServerConfig, Service};
pub use upgrade::{OnUpgrade, Upgraded};
pub use wire::{BodyError, Plain, Transport};
