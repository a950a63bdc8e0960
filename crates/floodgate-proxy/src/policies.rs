//! The registry: every route and upstream policy, in the order a request meets them. A new
//! policy is one line here (see "Adding a policy" in docs/architecture.md); `floodgate
//! explain` describes a route by walking these lists.

use crate::policy::{RoutePolicy, UpstreamPolicy};

/// Every route policy, in the order a request meets them.
pub const ROUTE_POLICIES: &[RoutePolicy] = &[
    crate::cors::POLICY,
    crate::waf::POLICY,
    crate::auth::IP_POLICY,
    crate::auth::POLICY,
    crate::existence::POLICY,
    crate::ratelimit::POLICY,
    crate::cache::POLICY,
    crate::idempotency::POLICY,
    crate::admission::CRITICALITY_POLICY,
    crate::admission::ROUTE_POLICY,
    crate::breaker::ROUTE_POLICY,
    crate::fault::POLICY,
    crate::fallback::POLICY,
    crate::cors::SECURITY_HEADERS_POLICY,
];

/// Every upstream policy, in the order a request meets them.
pub const UPSTREAM_POLICIES: &[UpstreamPolicy] = &[
    crate::admission::UPSTREAM_POLICY,
    crate::breaker::UPSTREAM_POLICY,
    crate::upstream::health::POLICY,
    crate::upstream::OUTLIER_POLICY,
    crate::upstream::retry::POLICY,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_are_in_the_order_a_request_meets_them() {
        let route: Vec<_> = ROUTE_POLICIES.iter().map(|p| p.phase).collect();
        assert!(route.is_sorted(), "{route:?}");
        let upstream: Vec<_> = UPSTREAM_POLICIES.iter().map(|p| p.phase).collect();
        assert!(upstream.is_sorted(), "{upstream:?}");
        let mut names: Vec<_> = ROUTE_POLICIES
            .iter()
            .map(|p| p.name)
            .chain(UPSTREAM_POLICIES.iter().map(|p| p.name))
            .collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "names are unique");
    }
}
