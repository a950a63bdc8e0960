//! TLS to upstreams, against a rustls server in the test with a certificate from a test CA
//! (tests/it/fixtures): verified with the configured CA, refused with the built-in roots
//! (verification is on by default), and HTTP/2 chosen by ALPN.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::support::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/fixtures");

/// A TLS server (certificate for `api.test` and 127.0.0.1, from the test CA) answering
/// with the protocol version it saw and the SNI; with `client_auth`, it requires a client
/// certificate from the test CA.
async fn tls_server(client_auth: bool) -> SocketAddr {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(format!("{FIXTURES}/server.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_file(format!("{FIXTURES}/server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(format!("{FIXTURES}/ca.pem")).unwrap() {
            roots.add(ca.unwrap()).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(certs, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("").to_owned();
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let sni = sni.clone();
                    async move {
                        let mut resp = Response::new(Full::new(Bytes::from("secure")));
                        resp.headers_mut()
                            .insert("x-version", format!("{:?}", req.version()).parse().unwrap());
                        resp.headers_mut().insert("x-sni", sni.parse().unwrap());
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _served = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

/// A gateway with `upstreams` (YAML) and a route `/NAME` to each upstream in `names`.
fn gateway(upstreams: &str, names: &[&str]) -> Gateway {
    let routes: String = names
        .iter()
        .map(|n| format!("  - {{ match: {{ path: /{n} }}, upstream: {n} }}\n"))
        .collect();
    gateway_with(upstreams, &routes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_upstreams_is_verified_and_negotiates_the_protocol() {
    let up = tls_server(false).await;
    let gw = gateway(&format!(
        "  h1: {{ targets: [ \"{up}\" ], tls: {{ ca_file: \"{FIXTURES}/ca.pem\", server_name: api.test }} }}
  h2: {{ protocol: http2, targets: [ \"{up}\" ], tls: {{ ca_file: \"{FIXTURES}/ca.pem\" }} }}
  untrusted: {{ targets: [ \"{up}\" ], tls: {{ server_name: api.test }} }}"
    ), &["h1", "h2", "untrusted"]);
    let (status, h, body) = get(&gw.url("/h1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "secure");
    assert_eq!(h["x-version"], "HTTP/1.1");
    assert_eq!(h["x-sni"], "api.test");
    // No server name given: the target's IP address is checked against the certificate
    // (which has it); no SNI is sent for an IP.
    let (status, h, _) = get(&gw.url("/h2")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["x-version"], "HTTP/2.0");
    assert_eq!(h["x-sni"], "");
    // The test CA is not among the built-in roots: the handshake fails, the client gets 502.
    let (status, h, body) = get(&gw.url("/untrusted")).await;
    assert_problem(
        status,
        &h,
        &body,
        StatusCode::BAD_GATEWAY,
        "upstream-connect-failed",
    );
    gw.wait_log("upstream TLS handshake failed")
        .expect("the failed verification is logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_presented_when_configured() {
    let up = tls_server(true).await;
    let ca = format!("{FIXTURES}/ca.pem");
    let gw = gateway(&format!(
        "  mtls: {{ targets: [ \"{up}\" ], tls: {{ ca_file: \"{ca}\", server_name: api.test, client_cert: \"{FIXTURES}/client.pem\", client_key: \"{FIXTURES}/client.key\" }} }}
  anonymous: {{ targets: [ \"{up}\" ], tls: {{ ca_file: \"{ca}\", server_name: api.test }} }}"
    ), &["mtls", "anonymous"]);
    let (status, _, body) = get(&gw.url("/mtls")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "secure");
    // Without a client certificate the server ends the handshake.
    let (status, h, body) = get(&gw.url("/anonymous")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body:?} {h:?}");
}
