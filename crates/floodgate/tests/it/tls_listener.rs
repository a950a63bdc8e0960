//! HTTPS listeners, through the binary with rustls clients that trust the test CA
//! (tests/it/fixtures/listener): the certificate chosen by SNI, HTTP/2 and HTTP/1.1 by
//! ALPN, TLS 1.3 only when asked, client certificates required or optional (and the
//! verified identity in the access log), HSTS, the redirect from HTTP, and new certificates
//! taken on reload while an established connection keeps working.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::support::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/fixtures/listener");

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

/// How a test client connects.
struct Client<'a> {
    sni: &'a str,
    alpn: &'a [&'a [u8]],
    cert: Option<&'a str>,
    versions: &'a [&'static rustls::SupportedProtocolVersion],
}

const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

impl Default for Client<'_> {
    fn default() -> Self {
        Client {
            sni: "shop.test",
            alpn: &[b"http/1.1"],
            cert: None,
            versions: BOTH,
        }
    }
}

/// What the handshake gave: the leaf certificate's DER, the ALPN protocol and the version.
struct Session {
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
}

impl Session {
    fn leaf(&self) -> Vec<u8> {
        self.stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }
    fn alpn(&self) -> Option<Vec<u8>> {
        self.stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
    }
    fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.stream.get_ref().1.protocol_version()
    }
}

async fn connect(gw: &Gateway, c: &Client<'_>) -> std::io::Result<Session> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(fixture("ca.pem")).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(c.versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match c.cert {
        Some(name) => {
            let chain = CertificateDer::pem_file_iter(fixture(&format!("{name}.pem")))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(fixture(&format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = c.alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(c.sni.to_owned()).unwrap(), tcp)
        .await?;
    Ok(Session { stream })
}

/// One GET over an established session, HTTP/1.1 or HTTP/2 by its ALPN.
async fn request(s: Session, path: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    let h2 = s.alpn().as_deref() == Some(b"h2");
    let io = TokioIo::new(s.stream);
    let req = Request::get(format!("https://shop.test{path}"))
        .header("host", "shop.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    };
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

/// The leaf certificate the gateway presents for `sni`, recorded by a client that accepts
/// whatever it is shown (to see what a refusing client was offered).
async fn shown_leaf(gw: &Gateway, sni: &str) -> Vec<u8> {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    #[derive(Debug)]
    struct Record(std::sync::Mutex<Option<Vec<u8>>>);
    impl ServerCertVerifier for Record {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            *self.0.lock().unwrap() = Some(end_entity.to_vec());
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let record = Arc::new(Record(std::sync::Mutex::new(None)));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(BOTH)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(record.clone())
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let _session = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
        .expect("a client that accepts anything completes the handshake");
    let leaf = record.0.lock().unwrap().clone();
    leaf.expect("a certificate was shown")
}

fn der(name: &str) -> Vec<u8> {
    CertificateDer::pem_file_iter(fixture(name))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

fn tls_config(upstream: std::net::SocketAddr, tls_extra: &str, listener_extra: &str) -> String {
    format!(
        "listeners:
  - name: public
    address: 127.0.0.1:0
    tls:
      certificates:
        - {{ cert: {shop}, key: {shop_key} }}
        - {{ cert: {api}, key: {api_key} }}
{tls_extra}
{listener_extra}
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ output: \"{{dir}}/access.log\" }}
consumers: [ {{ name: alice.clients.test, groups: [ partners ] }} ]
upstreams:
  backend:
    targets: [ \"{upstream}\" ]
routes:
  - match: {{ path_prefix: /only-alice }}
    upstream: backend
    auth: {{ client_certificate: true, consumers: [ alice.clients.test ] }}
  - match: {{ path_prefix: / }}
    upstream: backend
",
        shop = fixture("shop.pem"),
        shop_key = fixture("shop.key"),
        api = fixture("api.pem"),
        api_key = fixture("api.key"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_follows_sni_and_alpn_picks_the_protocol() {
    let up = echo_upstream().await;
    let gw = Gateway::start(&tls_config(
        up,
        "",
        "    hsts: { max_age: 1d, include_subdomains: true }",
    ));
    for (sni, cert) in [
        ("shop.test", "shop.pem"),
        ("api.test", "api.pem"),
        ("v2.api.test", "api.pem"),
        // A name no certificate covers gets the first (and the client refuses it).
        ("other.test", "shop.pem"),
    ] {
        let c = Client {
            sni,
            ..Client::default()
        };
        match connect(&gw, &c).await {
            Ok(s) => assert_eq!(s.leaf(), der(cert), "{sni}"),
            Err(e) => {
                assert_eq!(sni, "other.test", "{sni}: {e}");
                // The client refused it; the leaf it was shown is the first certificate.
                assert_eq!(shown_leaf(&gw, sni).await, der(cert), "{sni}");
            }
        }
    }
    // HTTP/2 by ALPN; the upstream hears it was HTTPS.
    let s = connect(
        &gw,
        &Client {
            alpn: &[b"h2", b"http/1.1"],
            ..Client::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(s.alpn().as_deref(), Some(&b"h2"[..]));
    let (status, headers, body) = request(s, "/x").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["strict-transport-security"],
        "max-age=86400; includeSubDomains"
    );
    let echo = json(&body);
    assert_eq!(echo["headers"]["x-forwarded-proto"][0], "https");
    // HTTP/1.1 by ALPN.
    let s = connect(&gw, &Client::default()).await.unwrap();
    assert_eq!(s.alpn().as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(request(s, "/y").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_1_3_refuses_tls_1_2() {
    let up = echo_upstream().await;
    let gw = Gateway::start(&tls_config(up, "      min_version: \"1.3\"", ""));
    let old = Client {
        versions: &[&rustls::version::TLS12],
        ..Client::default()
    };
    assert!(connect(&gw, &old).await.is_err(), "TLS 1.2 is refused");
    let s = connect(&gw, &Client::default()).await.unwrap();
    assert_eq!(s.version(), Some(rustls::ProtocolVersion::TLSv1_3));
    // Without min_version, TLS 1.2 is accepted.
    let gw = Gateway::start(&tls_config(up, "", ""));
    let s = connect(&gw, &old).await.unwrap();
    assert_eq!(s.version(), Some(rustls::ProtocolVersion::TLSv1_2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_required_or_optional() {
    let up = echo_upstream().await;
    let ca = fixture("ca.pem");
    let gw = Gateway::start(&tls_config(
        up,
        &format!("      client_auth: {{ ca_file: {ca} }}"),
        "",
    ));
    // Required: no certificate, or one from another authority, fails the handshake (TLS 1.3
    // reports it on the first read).
    for cert in [None, Some("mallory")] {
        let refused = match connect(
            &gw,
            &Client {
                cert,
                ..Client::default()
            },
        )
        .await
        {
            Err(_) => true,
            Ok(s) => {
                let io = TokioIo::new(s.stream);
                match hyper::client::conn::http1::handshake::<_, Full<Bytes>>(io).await {
                    Err(_) => true,
                    Ok((mut send, conn)) => {
                        tokio::spawn(conn);
                        let req = Request::get("/")
                            .header("host", "shop.test")
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        send.send_request(req).await.is_err()
                    }
                }
            }
        };
        assert!(refused, "{cert:?} must be refused");
    }
    // The verified identity is logged, and is a consumer for route authorization.
    let alice = Client {
        cert: Some("alice"),
        ..Client::default()
    };
    for (path, field) in [("/who", "tls_client"), ("/only-alice", "consumer")] {
        let s = connect(&gw, &alice).await.unwrap();
        assert_eq!(request(s, path).await.0, StatusCode::OK, "{path}");
        let line = gw.access_line(&format!("\"path\":\"{path}\"")).await;
        assert_eq!(line[field], "alice.clients.test", "{path}");
    }

    // Optional: no certificate is fine; a bad one is not.
    let gw = Gateway::start(&tls_config(
        up,
        &format!("      client_auth: {{ ca_file: {ca}, mode: optional }}"),
        "",
    ));
    let s = connect(&gw, &Client::default()).await.unwrap();
    assert_eq!(request(s, "/anon").await.0, StatusCode::OK);
    let s = connect(&gw, &Client::default()).await.unwrap();
    assert_eq!(
        request(s, "/only-alice").await.0,
        StatusCode::UNAUTHORIZED,
        "no certificate, no consumer"
    );
    let line = gw.access_line("\"path\":\"/anon\"").await;
    assert!(line.get("tls_client").is_none(), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleartext_listener_redirects_to_https() {
    let up = echo_upstream().await;
    let gw = Gateway::start(
        &config(
            up,
            "  - match: { path_prefix: / }\n    upstream: backend",
            "",
        )
        .replacen(
            "address: 127.0.0.1:0\n",
            "address: 127.0.0.1:0\n    redirect_to_https: { port: 8443 }\n",
            1,
        ),
    );
    let (s, h, _) = get_with(&gw.url("/a/b?c=1"), &[("host", "Shop.Test:8080")]).await;
    assert_eq!(s, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(h["location"], "https://shop.test:8443/a/b?c=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_certificates_and_keeps_connections() {
    let up = echo_upstream().await;
    // The listener's certificate files, swapped on disk.
    let gw = Gateway::start(&tls_config(up, "", ""));
    let dir = gw.dir.path().to_owned();
    for (from, to) in [("shop.pem", "cert.pem"), ("shop.key", "key.pem")] {
        std::fs::copy(fixture(from), dir.join(to)).unwrap();
    }
    let single = |cert: &str| {
        format!(
            "listeners:
  - name: public
    address: 127.0.0.1:0
    tls:
      certificates: [ {{ cert: {cert}, key: {key} }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ enabled: false }}
upstreams:
  backend:
    targets: [ \"{up}\" ]
routes:
  - match: {{ path_prefix: / }}
    upstream: backend
",
            cert = dir.join(cert).display(),
            key = dir.join("key.pem").display(),
        )
    };
    gw.write_config(&single("cert.pem"));
    gw.wait_log("\"configuration reloaded\"")
        .expect("first reload");
    let old_name = Client {
        alpn: &[b"h2"],
        ..Client::default()
    };
    let c = Client {
        sni: "api.test",
        alpn: &[b"h2"],
        ..Client::default()
    };
    // Only the shop certificate now.
    let before = connect(&gw, &old_name).await.unwrap();
    assert_eq!(before.leaf(), der("shop.pem"));
    let h2 = {
        let io = TokioIo::new(before.stream);
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        send
    };
    // Renewed certificate on disk (here: the api one), then a reload.
    std::fs::copy(fixture("api.pem"), dir.join("cert.pem")).unwrap();
    std::fs::copy(fixture("api.key"), dir.join("key.pem")).unwrap();
    gw.write_config(&format!("{}\n# renewed\n", single("cert.pem")));
    gw.wait_log_count("\"configuration reloaded\"", 2)
        .expect("second reload");
    let after = connect(&gw, &c).await.unwrap();
    assert_eq!(
        after.leaf(),
        der("api.pem"),
        "new connections get the new certificate"
    );
    // The connection made before the reload still works.
    let mut h2 = h2;
    let req = Request::get("https://shop.test/still")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(h2.send_request(req).await.unwrap().status(), StatusCode::OK);

    // A key that does not match its certificate is refused; the running config stays.
    std::fs::copy(fixture("shop.key"), dir.join("key.pem")).unwrap();
    gw.write_config(&format!("{}\n# broken\n", single("cert.pem")));
    gw.wait_log("does not match")
        .expect("refused with the reason");
    let again = connect(&gw, &c).await.unwrap();
    assert_eq!(again.leaf(), der("api.pem"));
}

/// security.md: "a client that opens connections and never finishes the handshake: the
/// handshake must finish within the listener's `timeouts.header_read`".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_finishes_is_cut_at_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = echo_upstream().await;
    let gw = Gateway::start(&tls_config(up, "", "    timeouts: { header_read: 1s }"));
    // Half a ClientHello's record header, then silence.
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
        .await
        .expect("the gateway closes the connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "not before the timeout"
    );
}
