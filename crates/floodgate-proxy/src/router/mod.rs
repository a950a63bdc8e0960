//! The router: picks the route for a request, most specific first.
//!
//! Routes are grouped by host condition (exact names in a hash map, wildcard suffixes
//! longest first, then routes for any host); inside each group they are sorted once by
//! [`Specificity`] and scanned in order, so the first match is the answer. A linear scan per
//! host group is simple, predictable and fast for the tens to hundreds of routes a gateway
//! holds; a path trie can replace it behind the same API if route counts grow.
//!
//! The router is generic over what a route carries, so it knows nothing of upstreams.

mod matcher;

use std::collections::HashMap;

pub use matcher::{Conditions, PathMatch, RequestView, Specificity, query_param};

/// A route given to the router: its host patterns, conditions and payload.
#[derive(Clone)]
pub struct RouteSpec<T> {
    /// Host patterns: exact names or `*.suffix`; empty means any host.
    pub hosts: Vec<String>,
    /// The other conditions.
    pub conditions: Conditions,
    /// Breaks ties between equally specific routes.
    pub priority: i32,
    /// What the caller gets back on a match.
    pub value: T,
}

struct Entry<T> {
    conditions: Conditions,
    value: T,
}

/// Routes of one listener, ready to match.
pub struct Router<T> {
    entries: Vec<Entry<T>>,
    exact: HashMap<String, Vec<usize>>,
    /// `(".example.com", routes)`, longest suffix first.
    wildcard: Vec<(String, Vec<usize>)>,
    any: Vec<usize>,
}

/// The outcome of a successful match.
pub struct Match<'r, 'q, T> {
    /// The route's payload.
    pub value: &'r T,
    /// Path parameters bound by the route.
    pub params: Vec<(String, &'q str)>,
}

impl<T> Router<T> {
    /// Builds the router; `specs` are in declaration order, which breaks the last ties.
    pub fn new(specs: Vec<RouteSpec<T>>) -> Self {
        let mut order: Vec<(Specificity, usize)> = Vec::with_capacity(specs.len());
        let mut entries = Vec::with_capacity(specs.len());
        let mut hosts = Vec::with_capacity(specs.len());
        for (i, spec) in specs.into_iter().enumerate() {
            order.push((spec.conditions.specificity(spec.priority), i));
            hosts.push(spec.hosts);
            entries.push(Entry {
                conditions: spec.conditions,
                value: spec.value,
            });
        }
        // Most specific first; equal specificity keeps declaration order.
        order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcard: Vec<(String, Vec<usize>)> = Vec::new();
        let mut any = Vec::new();
        for (_, i) in order {
            if hosts[i].is_empty() {
                any.push(i);
            }
            for h in &hosts[i] {
                let h = h.to_ascii_lowercase();
                match h.strip_prefix('*') {
                    Some(suffix) => match wildcard.iter_mut().find(|(s, _)| s == suffix) {
                        Some((_, list)) => list.push(i),
                        None => wildcard.push((suffix.to_owned(), vec![i])),
                    },
                    None => exact.entry(h).or_default().push(i),
                }
            }
        }
        wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        Router {
            entries,
            exact,
            wildcard,
            any,
        }
    }

    /// Finds the route for a request: exact host routes, then wildcard host routes (longest
    /// suffix first), then any-host routes; within each group the most specific first.
    pub fn find<'r, 'q>(&'r self, req: &RequestView<'q>) -> Option<Match<'r, 'q, T>> {
        let mut params = Vec::new();
        let exact = self
            .exact
            .get(req.host)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let wild = self
            .wildcard
            .iter()
            .filter(|(suffix, _)| {
                req.host.len() > suffix.len() && req.host.ends_with(suffix.as_str())
            })
            .flat_map(|(_, list)| list.iter());
        for &i in exact.iter().chain(wild).chain(self.any.iter()) {
            let e = &self.entries[i];
            if e.conditions.matches(req, &mut params) {
                return Some(Match {
                    value: &e.value,
                    params,
                });
            }
        }
        None
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodgate_config::model::RouteMatch;
    use http::{HeaderMap, Method};

    fn spec(
        name: &'static str,
        hosts: &[&str],
        m: RouteMatch,
        priority: i32,
    ) -> RouteSpec<&'static str> {
        RouteSpec {
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            conditions: Conditions::compile(&m),
            priority,
            value: name,
        }
    }

    fn path(p: &str) -> RouteMatch {
        RouteMatch {
            path: Some(p.into()),
            ..Default::default()
        }
    }
    fn prefix(p: &str) -> RouteMatch {
        RouteMatch {
            path_prefix: Some(p.into()),
            ..Default::default()
        }
    }

    fn find(r: &Router<&'static str>, host: &str, p: &str, method: Method) -> Option<&'static str> {
        let h = HeaderMap::new();
        let req = RequestView {
            host,
            path: p,
            query: None,
            method: &method,
            headers: &h,
        };
        r.find(&req).map(|m| *m.value)
    }

    #[test]
    fn precedence() {
        let r = Router::new(vec![
            spec("catch-all", &[], prefix("/"), 0),
            spec("api-prefix", &[], prefix("/api"), 0),
            spec("api-v1-prefix", &[], prefix("/api/v1"), 0),
            spec("product", &[], path("/api/v1/products/{id}"), 0),
            spec("product-special", &[], path("/api/v1/products/special"), 0),
            spec(
                "regex",
                &[],
                RouteMatch {
                    path_regex: Some("/api/v1/.*".into()),
                    ..Default::default()
                },
                0,
            ),
            spec("host-wild", &["*.example.com"], prefix("/"), 0),
            spec("host-exact", &["shop.example.com"], prefix("/"), 0),
            spec(
                "post-only",
                &[],
                RouteMatch {
                    methods: vec!["POST".into()],
                    ..path("/api/v1/products/{id}")
                },
                0,
            ),
            spec("low", &[], path("/tie"), 0),
            spec("high", &[], path("/tie"), 5),
        ]);
        let any = "other.test";
        assert_eq!(find(&r, any, "/x", Method::GET), Some("catch-all"));
        assert_eq!(find(&r, any, "/api/x", Method::GET), Some("api-prefix"));
        // A regex is tried before any prefix (as nginx tries regex locations first).
        assert_eq!(find(&r, any, "/api/v1/x", Method::GET), Some("regex"));
        assert_eq!(find(&r, any, "/api/v1", Method::GET), Some("api-v1-prefix"));
        assert_eq!(
            find(&r, any, "/api/v1/products/7", Method::GET),
            Some("product")
        );
        assert_eq!(
            find(&r, any, "/api/v1/products/7", Method::POST),
            Some("post-only")
        );
        assert_eq!(
            find(&r, any, "/api/v1/products/special", Method::GET),
            Some("product-special")
        );
        assert_eq!(
            find(&r, "a.example.com", "/api/x", Method::GET),
            Some("host-wild")
        );
        assert_eq!(
            find(&r, "shop.example.com", "/x", Method::GET),
            Some("host-exact")
        );
        assert_eq!(
            find(&r, "example.com", "/x", Method::GET),
            Some("catch-all")
        );
        assert_eq!(find(&r, any, "/tie", Method::GET), Some("high"));
    }

    #[test]
    fn template_with_more_literals_wins() {
        let r = Router::new(vec![
            spec("two-params", &[], path("/a/{x}/{y}"), 0),
            spec("one-param", &[], path("/a/b/{y}"), 0),
            spec("rest", &[], path("/a/{*rest}"), 0),
        ]);
        assert_eq!(find(&r, "h", "/a/b/c", Method::GET), Some("one-param"));
        assert_eq!(find(&r, "h", "/a/q/c", Method::GET), Some("two-params"));
        assert_eq!(find(&r, "h", "/a/q/c/d", Method::GET), Some("rest"));
        assert_eq!(find(&r, "h", "/b", Method::GET), None);
    }
}
