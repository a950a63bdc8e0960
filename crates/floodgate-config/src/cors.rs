//! The configuration of CORS on routes (docs/security.md).

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
