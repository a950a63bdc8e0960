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
    /// Accept JWTs (`Authorization: Bearer`), verified with configured keys or a JWKS.
    #[serde(default)]
    pub jwt: Option<JwtAuth>,
    /// Accept opaque bearer tokens, checked by OAuth2 token introspection (RFC 7662).
    #[serde(default)]
    pub introspection: Option<Introspection>,
    /// Accept the client certificate verified on a TLS listener (`client_auth`): its first
    /// DNS name is the consumer. Default false.
    #[serde(default)]
    pub client_certificate: bool,
    /// Only tokens whose `scope` claim (space-separated) holds all of these pass (403
    /// for others). Default: none required.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Only tokens (JWT or introspected) whose claims match pass: `{ claim: [values] }`,
    /// each claim equal to one of its values (a string, or for a list claim, containing
    /// one). Default: none.
    #[serde(default)]
    pub claims: std::collections::BTreeMap<String, Vec<String>>,
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

/// JWT validation. At least one of `keys` and `jwks`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtAuth {
    /// Keys given here. Each fixes the one algorithm it accepts.
    #[serde(default)]
    pub keys: Vec<JwtKey>,
    /// Accept tokens from the built-in token endpoint (`oauth2`): its key, and its issuer
    /// and audience unless `issuer`/`audience` are given. Default false.
    #[serde(default)]
    pub local_issuer: bool,
    /// Keys from a JWKS URL, fetched on first use, every `refresh`, and when a token
    /// names a key id not seen yet (at most once per `min_refetch`).
    #[serde(default)]
    pub jwks: Option<Jwks>,
    /// The `iss` a token must have. Default: any.
    #[serde(default)]
    pub issuer: Option<String>,
    /// A token's `aud` must include one of these. Default: any.
    #[serde(default)]
    pub audience: Vec<String>,
    /// Clock skew allowed for `exp` and `nbf`. Default 60s.
    #[serde(default = "default_leeway")]
    pub leeway: crate::value::Duration,
    /// Claims every token must carry (`exp` is always required).
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// The claim naming the consumer (a configured consumer of that name lends its
    /// groups). Default `sub`.
    #[serde(default = "default_consumer_claim")]
    pub consumer_claim: String,
    /// Also take the token from this query parameter when there is no `Authorization`
    /// header (a browser's WebSocket handshake cannot set headers: `wss://…?access_token=…`).
    /// It is written `REDACTED` in the access log and removed before proxying when
    /// `hide_credentials` is set. Default: the header only.
    #[serde(default)]
    pub query: Option<String>,
    /// Claims forwarded to the upstream as request headers: `{ claim: header }`. Such
    /// headers sent by the client are removed first.
    #[serde(default)]
    pub claims_to_headers: std::collections::BTreeMap<String, String>,
}

/// An RFC 7662 introspection endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Introspection {
    /// `https://…` (or `http://` on loopback).
    pub url: String,
    /// The gateway's client id at the authorization server (sent with HTTP Basic).
    pub client_id: String,
    /// Its secret (use `${ENV}`).
    pub client_secret: String,
    /// An active token's answer is remembered for at most this long (and never past its
    /// `exp`). Default 5m.
    #[serde(default = "default_introspection_cache")]
    pub cache_for: crate::value::Duration,
    /// PEM file of the authorities for an `https` URL. Default: the Mozilla roots.
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// One verification key.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtKey {
    /// The key id (`kid`) tokens name it by. Default: tried for tokens without `kid`.
    #[serde(default)]
    pub kid: Option<String>,
    /// The only algorithm this key accepts.
    pub algorithm: JwtAlgorithm,
    /// HS*: the shared secret (use `${ENV}`).
    #[serde(default)]
    pub secret: Option<String>,
    /// RS*, PS*, ES*, EdDSA: the public key's PEM file.
    #[serde(default)]
    pub public_key_file: Option<String>,
}

/// A JWT signature algorithm (RFC 7518, RFC 8037).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[allow(missing_docs)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwtAlgorithm {
    /// Whether the algorithm is an HMAC (a shared secret).
    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512
        )
    }
}

/// A JWKS source.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Jwks {
    /// `https://…` (or `http://` on loopback) serving `{"keys": [...]}`.
    pub url: String,
    /// How often it is fetched again. Default 5m.
    #[serde(default = "default_jwks_refresh")]
    pub refresh: crate::value::Duration,
    /// The shortest time between fetches for unknown key ids (so made-up ids cannot
    /// hammer the JWKS server). Default 10s.
    #[serde(default = "default_min_refetch")]
    pub min_refetch: crate::value::Duration,
    /// The algorithm of keys that do not name one (`alg`). Default: such keys are skipped.
    #[serde(default)]
    pub algorithm: Option<JwtAlgorithm>,
    /// PEM file of the authorities for an `https` URL. Default: the Mozilla roots.
    #[serde(default)]
    pub ca_file: Option<String>,
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

fn default_leeway() -> crate::value::Duration {
    crate::value::Duration(std::time::Duration::from_secs(60))
}
fn default_consumer_claim() -> String {
    "sub".into()
}
fn default_jwks_refresh() -> crate::value::Duration {
    crate::value::Duration(std::time::Duration::from_secs(300))
}
fn default_introspection_cache() -> crate::value::Duration {
    crate::value::Duration(std::time::Duration::from_secs(300))
}
fn default_min_refetch() -> crate::value::Duration {
    crate::value::Duration(std::time::Duration::from_secs(10))
}
fn default_true() -> bool {
    true
}
fn default_realm() -> String {
    "floodgate".into()
}

/// The built-in OAuth2 authorization server for machine-to-machine clients: a token
/// endpoint for the client-credentials grant (RFC 6749 §4.4) issuing signed JWTs, and the
/// JWKS to check them, served on every listener.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2 {
    /// The `iss` of issued tokens (a URL naming this gateway).
    pub issuer: String,
    /// The `aud` of issued tokens. Default: the issuer.
    #[serde(default)]
    pub audience: Option<String>,
    /// The signing key: a PKCS#8 PEM file of a P-256 (ES256) or Ed25519 (EdDSA) key.
    pub signing_key_file: String,
    /// How long tokens are valid. Default 15m.
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime: crate::value::Duration,
    /// The token endpoint's path. Default `/oauth2/token`.
    #[serde(default = "default_token_path")]
    pub token_path: String,
    /// The JWKS path. Default `/.well-known/jwks.json`.
    #[serde(default = "default_jwks_path")]
    pub jwks_path: String,
    /// The clients allowed to get tokens.
    pub clients: Vec<OAuth2Client>,
}

/// A client of the token endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Client {
    /// The `client_id` (and the tokens' `sub`).
    pub id: String,
    /// The client secret as an argon2id PHC string.
    pub secret_hash: String,
    /// Scopes it may ask for; a request without `scope` gets all of them.
    #[serde(default)]
    pub scopes: Vec<String>,
}

fn default_token_lifetime() -> crate::value::Duration {
    crate::value::Duration(std::time::Duration::from_secs(900))
}
fn default_token_path() -> String {
    "/oauth2/token".into()
}
fn default_jwks_path() -> String {
    "/.well-known/jwks.json".into()
}
