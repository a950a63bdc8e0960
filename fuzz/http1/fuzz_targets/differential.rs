//! The engine against hyper's HTTP/1.1 server on the same bytes: whatever the engine
//! accepts as a first request, hyper must read the same way (method, target and body).
//! The engine may refuse what hyper accepts (it is stricter on purpose), never the other
//! way round with a different reading.
#![no_main]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use floodgate_http1::{Connection, HeadError, IncomingBody, Plain, ServerConfig, Service};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a server read: method, target, body (`None`: the body could not be read).
type Reading = (String, String, Option<Bytes>);

struct Record(Arc<Mutex<Vec<Reading>>>);

impl Service for Record {
    type Body = Full<Bytes>;
    type Future = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

    fn call(&mut self, req: Request<IncomingBody>) -> Self::Future {
        let log = self.0.clone();
        Box::pin(async move {
            let (method, target) = (req.method().to_string(), req.uri().to_string());
            let body = req.into_body().collect().await.ok().map(|b| b.to_bytes());
            log.lock().expect("log").push((method, target, body));
            Response::new(Full::default())
        })
    }

    fn refuse(&mut self, error: HeadError) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::default());
        *r.status_mut() = error.status();
        r
    }
}

/// Feeds `data` to a server and lets it run to its end.
async fn feed<F: Future<Output = ()> + Send + 'static>(
    data: &[u8],
    client: tokio::io::DuplexStream,
    server: F,
) {
    let mut client = client;
    let task = tokio::spawn(server);
    let _ = client.write_all(data).await;
    let _ = client.shutdown().await;
    let mut out = Vec::new();
    let _ = client.read_to_end(&mut out).await;
    let _ = task.await;
}

/// `target` with every byte above ASCII written as `%XX`, as the engine writes it.
fn percent_encode_non_ascii(target: &str) -> String {
    let mut out = String::new();
    for &b in target.as_bytes() {
        if b.is_ascii() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ours = Arc::new(Mutex::new(Vec::new()));
        let (c, s) = tokio::io::duplex(64 * 1024);
        let conn = Connection::new(Plain(s), Record(ours.clone()), ServerConfig::default());
        feed(data, c, async move {
            let _ = conn.await;
        })
        .await;

        let theirs: Arc<Mutex<Vec<Reading>>> = Arc::new(Mutex::new(Vec::new()));
        let log = theirs.clone();
        let (c, s) = tokio::io::duplex(64 * 1024);
        let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let log = log.clone();
            async move {
                let (method, target) = (req.method().to_string(), req.uri().to_string());
                let body = req.into_body().collect().await.ok().map(|b| b.to_bytes());
                log.lock().expect("log").push((method, target, body));
                Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default()))
            }
        });
        feed(data, c, async move {
            // Half-close kept: the client's end of stream comes right after its bytes, and
            // hyper would otherwise drop a request it had read before answering it.
            let _ = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                .await;
        })
        .await;

        let ours = ours.lock().expect("log");
        let theirs = theirs.lock().expect("log");
        if let Some((method, target, Some(body))) = ours.first() {
            let Some((m, t, b)) = theirs.first() else {
                panic!("the engine read {method} {target}, hyper read nothing");
            };
            // The engine percent-encodes raw UTF-8 in a target (hyper passes it on as it
            // came): the same bytes either way.
            assert_eq!((method, target), (m, &percent_encode_non_ascii(t)));
            if let Some(b) = b {
                assert_eq!(body, b, "the body differs");
            }
        }
    });
});
