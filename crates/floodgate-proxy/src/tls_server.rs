//! TLS on listeners, with rustls and its ring provider: TLS 1.2 and 1.3 only, rustls's
//! cipher suites (all AEAD with forward secrecy: nothing weak is offered), ALPN `h2` and
//! `http/1.1`, a certificate chosen by the client's SNI name, and client certificates
//! (mTLS) checked against configured authorities.
//!
//! The server configuration is built from files when a configuration is loaded, so a
//! reload with renewed certificates applies to new connections while established ones keep
//! theirs. The SNI choice is written here (rustls's own resolver needs every name listed in
//! the config): the first certificate valid for the name, as rustls's name check says.

use std::sync::Arc;

use floodgate_config::tls::{ClientAuthMode, ListenerTls, TlsVersion};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// What a connection's handshake established.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// The SNI name the client asked for.
    pub server_name: Option<Arc<str>>,
    /// The client certificate's identity (its first DNS name), when one was verified.
    pub client_identity: Option<Arc<str>>,
}

#[derive(Debug)]
struct SniResolver {
    certs: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name()
            && let Ok(name) = ServerName::try_from(name)
        {
            for ck in &self.certs {
                let Some(leaf) = ck.cert.first() else {
                    continue;
                };
                if let Ok(parsed) = ParsedCertificate::try_from(leaf)
                    && rustls::client::verify_server_name(&parsed, &name).is_ok()
                {
                    return Some(ck.clone());
                }
            }
        }
        self.certs.first().cloned()
    }
}

fn load_chain(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{path}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{path} holds no PEM certificate"));
    }
    Ok(chain)
}

/// Builds the server side of a listener's TLS from its files.
pub fn server_config(tls: &ListenerTls) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut certs = Vec::new();
    for pair in &tls.certificates {
        let chain = load_chain(&pair.cert)?;
        let key = PrivateKeyDer::from_pem_file(&pair.key)
            .map_err(|e| format!("cannot read the key {}: {e}", pair.key))?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("{}: unusable key: {e}", pair.key))?;
        let ck = CertifiedKey::new(chain, signing);
        ck.keys_match()
            .map_err(|e| format!("{} does not match {}: {e}", pair.key, pair.cert))?;
        certs.push(Arc::new(ck));
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?;
    let builder = match &tls.client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let mut roots = RootCertStore::empty();
            for cert in load_chain(&auth.ca_file)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: unusable certificate: {e}", auth.ca_file))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = match auth.mode {
                ClientAuthMode::Required => verifier,
                ClientAuthMode::Optional => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("client certificate authorities: {e}"))?,
            )
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver { certs }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The server's order of suites, not the client's: a client cannot steer the choice to
    // the weakest suite both support.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// What the handshake on `conn` established.
pub fn info(conn: &rustls::ServerConnection) -> TlsInfo {
    let client_identity = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|leaf| {
            let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
            let name = cert.valid_dns_names().next()?;
            Some(Arc::from(name))
        });
    TlsInfo {
        server_name: conn.server_name().map(Arc::from),
        client_identity,
    }
}
