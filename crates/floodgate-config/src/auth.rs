//! The configuration of identities and access (docs/security.md): consumers with their
//! credentials, and per route the authentication it requires, who may pass, and IP rules.

use schemars::JsonSchema;
use serde::Deserialize;

/// A named identity that requests can authenticate as.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// Unique name: in access logs, rate-limit keys (`consumer`) and route rules.
    pub name: String,
    /// Groups the consumer belongs to, for route rules.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The consumer's API keys, each stored as `sha256:` and the 64 hex digits of the
    /// key's SHA-256 (`printf %s "$KEY" | sha256sum`). Keys must be long random strings.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// A username and password for HTTP Basic authentication.
    #[serde(default)]
    pub basic: Option<BasicCredential>,
}

/// A Basic authentication credential.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicCredential {
    /// The username (unique among consumers).
    pub username: String,
    /// The password as an argon2id PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`),
    /// as argon2 tools make them; its own parameters are honoured.
    pub password_hash: String,
}

/// What a route requires of a request's identity.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteAuth {
    /// `any` (one accepted method suffices) or `all` (every method given must pass, for
    /// the same consumer). Default `any`.
    #[serde(default)]
    pub require: AuthCombine,
    /// Accept API keys.
    #[serde(default)]
    pub api_key: Option<ApiKeyAuth>,
    /// Accept HTTP Basic authentication.
    #[serde(default)]
    pub basic: Option<BasicAuth>,
    /// Only these consumers may pass (403 for others). Default: any consumer.
    #[serde(default)]
    pub consumers: Vec<String>,
    /// Only members of one of these groups may pass (403 for others). Default: any.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Remove the credentials (the API key header, `Authorization`) before proxying.
    /// Default true.
    #[serde(default = "default_true")]
    pub hide_credentials: bool,
}

/// How accepted methods combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthCombine {
    /// One suffices.
    #[default]
    Any,
    /// All must pass.
    All,
}

/// Where an API key is read from.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyAuth {
    /// The header that carries it. Default `x-api-key` (unless `query` is given).
    #[serde(default)]
    pub header: Option<String>,
    /// The query parameter that carries it (redacted in the access log).
    #[serde(default)]
    pub query: Option<String>,
}

/// HTTP Basic authentication.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// The realm in the `WWW-Authenticate` challenge. Default `floodgate`.
    #[serde(default = "default_realm")]
    pub realm: String,
}

/// Client addresses allowed and denied on a route (after `trusted_proxies`).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpRules {
    /// If given, only these addresses or CIDR blocks may pass.
    #[serde(default)]
    pub allow: Vec<String>,
    /// These never pass (checked first).
    #[serde(default)]
    pub deny: Vec<String>,
}

fn default_true() -> bool {
    true
}
fn default_realm() -> String {
    "floodgate".into()
}
