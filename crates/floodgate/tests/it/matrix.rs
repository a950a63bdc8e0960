//! The core of proxying (routing and rewriting, forwarding fields, bodies both ways, the
//! gateway's own errors, the body limit) over every combination the gateway serves:
//! clients on HTTP/1.1, h2c or HTTP/2 over TLS, upstreams on HTTP/1.1 or HTTP/2, over IPv4
//! and IPv6 loopback. A redesign of the request path must keep all twelve green.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::support::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/fixtures/listener");

#[derive(Debug, Clone, Copy, PartialEq)]
enum Down {
    H1,
    H2c,
    H2Tls,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Up {
    H1,
    H2,
}

/// An upstream that says what it received: method, target, version, the forwarding
/// fields and the body's length.
async fn reporter(bind: &str) -> SocketAddr {
    upstream_on(bind, |req: Request<hyper::body::Incoming>| async move {
        let (parts, body) = req.into_parts();
        let len = body
            .collect()
            .await
            .map(|b| b.to_bytes().len())
            .unwrap_or(usize::MAX);
        let field = |name: &str| {
            parts
                .headers
                .get(name)
                .map(|v| v.to_str().unwrap_or("?").to_owned())
        };
        json_response(
            StatusCode::OK,
            &serde_json::json!({
                "method": parts.method.as_str(),
                "uri": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                "version": format!("{:?}", parts.version),
                "x-forwarded-for": field("x-forwarded-for"),
                "x-forwarded-proto": field("x-forwarded-proto"),
                "via": field("via"),
                "length": len,
            }),
        )
    })
    .await
}

/// One request on a new connection over `down`.
async fn send(
    addr: SocketAddr,
    down: Down,
    req: Request<Full<Bytes>>,
) -> (StatusCode, HeaderMap, Bytes) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let resp = match down {
        Down::H1 => {
            let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(conn);
            s.send_request(req).await.unwrap()
        }
        Down::H2c => {
            let (mut s, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            s.send_request(req).await.unwrap()
        }
        Down::H2Tls => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_file_iter(format!("{FIXTURES}/ca.pem")).unwrap() {
                roots.add(ca.unwrap()).unwrap();
            }
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            config.alpn_protocols = vec![b"h2".to_vec()];
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(ServerName::try_from("shop.test").unwrap(), tcp)
                .await
                .unwrap();
            let (mut s, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            s.send_request(req).await.unwrap()
        }
    };
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

/// A request for `path` (an absolute URI, as HTTP/2 carries it; HTTP/1.1 gets a Host).
fn request(down: Down, method: &str, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    let scheme = if down == Down::H2Tls { "https" } else { "http" };
    let mut b = Request::builder().method(method);
    b = match down {
        Down::H1 => b.uri(path).header("host", "shop.test"),
        _ => b.uri(format!("{scheme}://shop.test{path}")),
    };
    b.body(Full::new(body)).unwrap()
}

async fn combination(down: Down, up: Up, v6: bool) {
    let loopback = if v6 { "[::1]" } else { "127.0.0.1" };
    let backend = reporter(&format!("{loopback}:0")).await;
    let dead = if v6 {
        let socket = tokio::net::TcpSocket::new_v6().unwrap();
        socket.bind("[::1]:0".parse().unwrap()).unwrap();
        socket
    } else {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        socket
    };
    let dead_addr = dead.local_addr().unwrap();
    let tls = if down == Down::H2Tls {
        format!(
            "    tls: {{ certificates: [ {{ cert: \"{FIXTURES}/shop.pem\", key: \"{FIXTURES}/shop.key\" }} ] }}\n"
        )
    } else {
        String::new()
    };
    let protocol = if up == Up::H2 { "http2" } else { "http1" };
    let gw = Gateway::start(&format!(
        "listeners:
  - name: public
    address: \"{loopback}:0\"
    limits: {{ max_body_bytes: 64KiB }}
{tls}admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ enabled: false }}
upstreams:
  backend: {{ protocol: {protocol}, targets: [ \"{backend}\" ] }}
  dead: {{ protocol: {protocol}, targets: [ \"{dead_addr}\" ] }}
routes:
  - {{ match: {{ path_prefix: /api }}, upstream: backend, rewrite: {{ strip_prefix: /api }} }}
  - {{ match: {{ path_prefix: /dead }}, upstream: dead }}
"
    ));
    let addr = gw.addr();
    let what = format!("{down:?} to {up:?} over {loopback}");
    let client_ip = if v6 { "::1" } else { "127.0.0.1" };

    // Routed, rewritten, forwarded, with this hop's fields.
    let (s, _, body) = send(
        addr,
        down,
        request(down, "GET", "/api/items?x=1", Bytes::new()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{what}");
    let echo = json(&body);
    assert_eq!(echo["uri"], "/items?x=1", "{what}");
    let version = if up == Up::H2 { "HTTP/2.0" } else { "HTTP/1.1" };
    assert_eq!(echo["version"], version, "{what}");
    assert_eq!(echo["x-forwarded-for"], client_ip, "{what}");
    let proto = if down == Down::H2Tls { "https" } else { "http" };
    assert_eq!(echo["x-forwarded-proto"], proto, "{what}");
    let via = if down == Down::H1 {
        "1.1 floodgate"
    } else {
        "2 floodgate"
    };
    assert_eq!(echo["via"], via, "{what}");

    // A body both ways: 48 KiB up, its length back.
    let (s, _, body) = send(
        addr,
        down,
        request(
            down,
            "POST",
            "/api/upload",
            Bytes::from(vec![b'b'; 48 << 10]),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{what}");
    assert_eq!(json(&body)["length"], 48 << 10, "{what}");

    // The gateway's own answers.
    let (s, h, body) = send(addr, down, request(down, "GET", "/nowhere", Bytes::new())).await;
    assert_problem(s, &h, &body, StatusCode::NOT_FOUND, "no-route");
    let (s, h, body) = send(addr, down, request(down, "GET", "/dead", Bytes::new())).await;
    assert_problem(
        s,
        &h,
        &body,
        StatusCode::BAD_GATEWAY,
        "upstream-connect-failed",
    );
    let (s, h, body) = send(
        addr,
        down,
        request(
            down,
            "POST",
            "/api/upload",
            Bytes::from(vec![b'b'; 100 << 10]),
        ),
    )
    .await;
    assert_problem(
        s,
        &h,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
    );
    drop(dead);
}

macro_rules! matrix {
    ($($name:ident: $down:expr, $up:expr, $v6:expr;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                combination($down, $up, $v6).await;
            }
        )*
    };
}

matrix! {
    h1_to_h1_v4: Down::H1, Up::H1, false;
    h1_to_h2_v4: Down::H1, Up::H2, false;
    h2c_to_h1_v4: Down::H2c, Up::H1, false;
    h2c_to_h2_v4: Down::H2c, Up::H2, false;
    h2_tls_to_h1_v4: Down::H2Tls, Up::H1, false;
    h2_tls_to_h2_v4: Down::H2Tls, Up::H2, false;
    h1_to_h1_v6: Down::H1, Up::H1, true;
    h1_to_h2_v6: Down::H1, Up::H2, true;
    h2c_to_h1_v6: Down::H2c, Up::H1, true;
    h2c_to_h2_v6: Down::H2c, Up::H2, true;
    h2_tls_to_h1_v6: Down::H2Tls, Up::H1, true;
    h2_tls_to_h2_v6: Down::H2Tls, Up::H2, true;
}
