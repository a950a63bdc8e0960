//! The configuration of cache-penetration protection on routes (docs/caching.md).

use schemars::JsonSchema;
use serde::Deserialize;

/// An existence filter: requests whose key is certainly not among the known keys are
/// answered 404 at once, without reaching the upstream.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExistenceFilter {
    /// Where the key comes from: `path:PARAM`, `query:NAME` or `header:NAME`.
    pub key: String,
    /// The keys expected (sizes the filter). Default 1000000.
    #[serde(default = "default_expected")]
    pub expected_keys: u64,
    /// The false-positive rate wanted: the share of absent keys let through. Default 1%.
    #[serde(default = "default_rate")]
    pub false_positive_rate: crate::value::Percent,
    /// The known keys: a URL answering a JSON array of strings (or numbers), or one key per
    /// line. Until it has been read once, nothing is filtered.
    pub source: String,
    /// How often the source is read again. Default 5m.
    #[serde(default = "default_refresh")]
    pub refresh: crate::value::Duration,
    /// Add the key of every successful response (and the last segment of a 201's
    /// `Location`) to the filter, for keys created since the source was read. Default true.
    #[serde(default = "default_true")]
    pub learn: bool,
}

fn default_expected() -> u64 {
    1_000_000
}
fn default_rate() -> crate::value::Percent {
    crate::value::Percent(0.01)
}
fn default_refresh() -> crate::value::Duration {
    crate::value::Duration(std::time::Duration::from_secs(300))
}
fn default_true() -> bool {
    true
}
