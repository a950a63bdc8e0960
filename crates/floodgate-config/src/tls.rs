//! The configuration of TLS on listeners (docs/security.md): certificates chosen by SNI,
//! protocol versions, client certificates (mTLS), HSTS and the redirect from HTTP.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::value::Duration;

/// TLS on a listener.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificate chains with their keys. A client's SNI name picks the first whose
    /// certificate is valid for it (exact or wildcard names in its subjectAltName); the
    /// first one answers clients without SNI or with a name none covers. At least one.
    pub certificates: Vec<CertificatePair>,
    /// The oldest protocol version offered: `"1.2"` or `"1.3"`. Default `"1.2"`.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Ask clients for a certificate (mTLS). Absent: none is asked for.
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
}

/// A PEM certificate chain (leaf first) and its PEM private key.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificatePair {
    /// The chain's file.
    pub cert: String,
    /// The key's file (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum TlsVersion {
    /// TLS 1.2 (with TLS 1.3).
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V1_3,
}

/// Client certificates.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientAuth {
    /// PEM file of the authorities whose client certificates are accepted.
    pub ca_file: String,
    /// `required`: a connection without a valid certificate fails the handshake;
    /// `optional`: one without a certificate is accepted (an invalid one still fails).
    /// Default `required`.
    #[serde(default)]
    pub mode: ClientAuthMode,
}

/// Whether a client certificate is required.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMode {
    /// No certificate, no connection.
    #[default]
    Required,
    /// A certificate is checked if sent.
    Optional,
}

/// The redirect from a cleartext listener to HTTPS.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpsRedirect {
    /// The HTTPS port in the `Location` (omitted when 443). Default 443.
    #[serde(default = "default_https_port")]
    pub port: u16,
    /// 301, 302, 307 or 308. Default 308 (the method and body are kept).
    #[serde(default = "default_redirect_status")]
    pub status: u16,
}

/// HTTP Strict Transport Security (RFC 6797).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hsts {
    /// How long browsers remember to use HTTPS only. Default 365d.
    #[serde(default = "default_hsts_max_age")]
    pub max_age: Duration,
    /// Also for every subdomain. Default false.
    #[serde(default)]
    pub include_subdomains: bool,
    /// Ask to be put on browsers' preload lists. Default false.
    #[serde(default)]
    pub preload: bool,
}

impl Hsts {
    /// The header value.
    pub fn header_value(&self) -> String {
        let mut v = format!("max-age={}", self.max_age.0.as_secs());
        if self.include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if self.preload {
            v.push_str("; preload");
        }
        v
    }
}

fn default_https_port() -> u16 {
    443
}
fn default_redirect_status() -> u16 {
    308
}
fn default_hsts_max_age() -> Duration {
    Duration(std::time::Duration::from_secs(365 * 86_400))
}
