//! WebSocket tunnels on a route: who may open them and how long they may live.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::value::Duration;

/// How a route treats WebSocket handshakes (`Upgrade: websocket` on HTTP/1.1). Absent:
/// handshakes are proxied with the defaults below.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebSocket {
    /// Proxy handshakes at all. `false`: a handshake is refused with 403. Default true.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Page origins allowed to open tunnels (`Origin`, e.g. `https://app.example.com`;
    /// `*` for any). A browser always sends `Origin` and WebSocket has no CORS, so this is
    /// where cross-site WebSocket hijacking is stopped: a handshake from another origin is
    /// refused with 403. A handshake without `Origin` (not from a browser) is allowed.
    /// Default: any origin.
    #[serde(default)]
    pub origins: Vec<String>,
    /// Tunnels open at once on the route; one more is refused with 503. Default: no limit.
    #[serde(default)]
    pub max_tunnels: Option<u32>,
    /// Tunnels open at once per client on the route (the authenticated consumer, else the
    /// client's address); one more is refused with 429. Default: no limit.
    #[serde(default)]
    pub max_tunnels_per_client: Option<u32>,
    /// A tunnel with no byte either way for this long is closed. Default 5m.
    #[serde(default = "default_idle")]
    pub idle_timeout: Duration,
    /// A tunnel is closed after this long, busy or not. Default: no limit.
    #[serde(default)]
    pub max_lifetime: Option<Duration>,
}

impl Default for WebSocket {
    fn default() -> Self {
        WebSocket {
            enabled: true,
            origins: Vec::new(),
            max_tunnels: None,
            max_tunnels_per_client: None,
            idle_timeout: default_idle(),
            max_lifetime: None,
        }
    }
}

fn default_enabled() -> bool {
    true
}

fn default_idle() -> Duration {
    Duration(std::time::Duration::from_secs(300))
}
