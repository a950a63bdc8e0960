//! What every route and upstream policy declares about itself, next to its compiled form in
//! its own module: its name, the phase of the pipeline it runs in, and how
//! `floodgate explain` describes it. [`crate::policies`] lists them.

use floodgate_config::model::{Route, Upstream};

/// The phase of the pipeline a policy runs in (see [`crate::pipeline`]), in the order a
/// request meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Checks that may refuse a request before anything is spent on it.
    Guards,
    /// May answer instead of the upstream, and sees the upstream's answer.
    Around,
    /// Whether the gateway takes the request on now.
    Admission,
    /// The upstream exchange: target choice, tries, retries.
    Exchange,
    /// On the way out, or in place of a failed answer.
    Response,
}

/// A policy on routes.
pub struct RoutePolicy {
    /// Its name.
    pub name: &'static str,
    /// The phase it runs in.
    pub phase: Phase,
    /// Its lines for `floodgate explain`, when the route configures it (none otherwise).
    pub describe: fn(&Route) -> Vec<String>,
}

/// A policy on upstreams.
pub struct UpstreamPolicy {
    /// Its name.
    pub name: &'static str,
    /// The phase it runs in.
    pub phase: Phase,
    /// Its lines for `floodgate explain`, when the upstream configures it.
    pub describe: fn(&Upstream) -> Vec<String>,
}
