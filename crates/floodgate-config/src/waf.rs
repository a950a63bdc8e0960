//! The configuration of the basic WAF on routes (docs/security.md).

use schemars::JsonSchema;
use serde::Deserialize;

/// Inspection of a route's requests for SQL injection and XSS.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Waf {
    /// `block` (403) or `monitor` (log and count only). Default `block`.
    #[serde(default)]
    pub mode: WafMode,
    /// The rule sets: `sqli`, `xss`. Default both.
    #[serde(default = "default_rules")]
    pub rules: Vec<WafRule>,
    /// Bodies up to this size (by Content-Length) are inspected too; larger ones, and
    /// bodies of unknown length, are not. `0B`: bodies are never inspected. Default 64KiB.
    #[serde(default = "default_body")]
    pub inspect_body: crate::value::ByteSize,
}

/// What a match does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WafMode {
    /// Refuse with 403.
    #[default]
    Block,
    /// Log and count, let through.
    Monitor,
}

/// A rule set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WafRule {
    /// SQL injection.
    Sqli,
    /// Cross-site scripting.
    Xss,
}

fn default_rules() -> Vec<WafRule> {
    vec![WafRule::Sqli, WafRule::Xss]
}
fn default_body() -> crate::value::ByteSize {
    crate::value::ByteSize(64 * 1024)
}
