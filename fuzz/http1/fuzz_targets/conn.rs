//! The server connection (crates/floodgate-http1/src/server.rs) over any bytes a client
//! sends: never a panic, always an end (timers run on a paused clock), and every answer
//! a well-formed HTTP/1.1 response.
#![no_main]

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use floodgate_http1::{Connection, HeadError, IncomingBody, Plain, ServerConfig, Service};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Echoes the body it reads.
struct Echo;

impl Service for Echo {
    type Body = Full<Bytes>;
    type Future = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

    fn call(&mut self, req: Request<IncomingBody>) -> Self::Future {
        Box::pin(async move {
            match req.into_body().collect().await {
                Ok(b) => Response::new(Full::new(b.to_bytes())),
                Err(_) => {
                    let mut r = Response::new(Full::default());
                    *r.status_mut() = http::StatusCode::BAD_REQUEST;
                    r
                }
            }
        })
    }

    fn refuse(&mut self, error: HeadError) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::default());
        *r.status_mut() = error.status();
        r
    }
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let conn = tokio::spawn(Connection::new(Plain(server), Echo, ServerConfig::default()));
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut out = Vec::new();
        let _ = client.read_to_end(&mut out).await;
        let _ = conn.await.expect("no panic");
        assert!(out.is_empty() || out.starts_with(b"HTTP/1.1 "), "{out:?}");
    });
});
