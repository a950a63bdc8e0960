//! The configuration of CORS and security response headers on routes (docs/security.md).

use schemars::JsonSchema;
use serde::Deserialize;

/// Cross-origin resource sharing for a route: preflights answered by the gateway, actual
/// responses decorated for allowed origins.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Allowed origins: exact (`https://app.example.com`), a subdomain pattern
    /// (`https://*.example.com`, one or more labels), or `*` (any; not with credentials).
    pub allow_origins: Vec<String>,
    /// Methods allowed in preflights. Default `[GET, HEAD, POST]`.
    #[serde(default = "default_methods")]
    pub allow_methods: Vec<String>,
    /// Request headers allowed in preflights (case-insensitive). Default none.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers the page may read besides the safelisted ones. Default none.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Allow credentials (cookies, `Authorization`). Default false.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight's answer. Default 10m.
    #[serde(default = "default_max_age")]
    pub max_age: crate::value::Duration,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(String::from).to_vec()
}
fn default_max_age() -> crate::value::Duration {
    crate::value::Duration(std::time::Duration::from_secs(600))
}

/// Security response headers, set on every response of the route (replacing the
/// upstream's). An empty block gives the defaults.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityHeaders {
    /// `Content-Security-Policy`. Default: not set.
    #[serde(default)]
    pub content_security_policy: Option<String>,
    /// `X-Frame-Options`: `deny` or `sameorigin`. Default `deny`.
    #[serde(default)]
    pub frame_options: FrameOptions,
    /// `Referrer-Policy`. Default `strict-origin-when-cross-origin`.
    #[serde(default = "default_referrer_policy")]
    pub referrer_policy: String,
    /// `X-Content-Type-Options: nosniff`. Default true.
    #[serde(default = "default_true")]
    pub content_type_options: bool,
}

/// `X-Frame-Options`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FrameOptions {
    /// Never in a frame.
    #[default]
    Deny,
    /// Only in frames of the same origin.
    Sameorigin,
}

fn default_referrer_policy() -> String {
    "strict-origin-when-cross-origin".into()
}
fn default_true() -> bool {
    true
}
