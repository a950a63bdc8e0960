//! One route's conditions, compiled: host, path (exact, template, prefix, regex), methods,
//! headers and query parameters; and the specificity that orders routes.

use floodgate_config::model::{RouteMatch, ValueMatch};
use floodgate_config::template::{PathTemplate, Segment};
use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

/// How a route's path is matched.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// Any path.
    Any,
    /// Exactly this path.
    Exact(String),
    /// A `{param}` template.
    Template(PathTemplate),
    /// A prefix on a segment boundary.
    Prefix(String),
    /// An anchored regular expression; named groups are parameters.
    Regex(Regex),
}

#[derive(Debug, Clone)]
enum ValueCond {
    Exact(String),
    Regex(Regex),
    Present(bool),
}

impl ValueCond {
    fn compile(vm: &ValueMatch) -> Option<Self> {
        if let Some(e) = &vm.exact {
            return Some(ValueCond::Exact(e.clone()));
        }
        if let Some(r) = &vm.regex {
            return anchored(r).map(ValueCond::Regex);
        }
        vm.present.map(ValueCond::Present)
    }

    fn holds(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (ValueCond::Present(p), v) => *p == v.is_some(),
            (ValueCond::Exact(e), Some(v)) => e == v,
            (ValueCond::Regex(r), Some(v)) => r.is_match(v),
            (_, None) => false,
        }
    }
}

fn anchored(re: &str) -> Option<Regex> {
    Regex::new(&format!("^(?:{re})$")).ok()
}

/// A request as the router sees it.
pub struct RequestView<'a> {
    /// Lower-case host without port.
    pub host: &'a str,
    /// The path, starting with `/`.
    pub path: &'a str,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    /// The method.
    pub method: &'a Method,
    /// The headers.
    pub headers: &'a HeaderMap,
}

/// The non-host conditions of a route.
#[derive(Debug, Clone)]
pub struct Conditions {
    /// The path condition.
    pub path: PathMatch,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, ValueCond)>,
    query: Vec<(String, ValueCond)>,
}

/// Orders routes: greater is more specific and is tried first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Specificity {
    path_kind: u8,
    path_literals: u32,
    path_len: u32,
    conditions: u32,
    priority: i32,
}

impl Conditions {
    /// Compiles validated config conditions.
    pub fn compile(m: &RouteMatch) -> Self {
        let path = if let Some(p) = &m.path {
            match PathTemplate::parse(p) {
                Ok(t) if t.is_exact() => PathMatch::Exact(p.clone()),
                Ok(t) => PathMatch::Template(t),
                Err(_) => PathMatch::Exact(p.clone()),
            }
        } else if let Some(p) = &m.path_prefix {
            PathMatch::Prefix(p.trim_end_matches('/').to_owned())
        } else if let Some(r) = m.path_regex.as_deref().and_then(anchored) {
            PathMatch::Regex(r)
        } else {
            PathMatch::Any
        };
        Conditions {
            path,
            methods: m
                .methods
                .iter()
                .filter_map(|s| Method::from_bytes(s.as_bytes()).ok())
                .collect(),
            headers: m
                .headers
                .iter()
                .filter_map(|vm| {
                    Some((
                        HeaderName::from_bytes(vm.name.as_bytes()).ok()?,
                        ValueCond::compile(vm)?,
                    ))
                })
                .collect(),
            query: m
                .query
                .iter()
                .filter_map(|vm| Some((vm.name.clone(), ValueCond::compile(vm)?)))
                .collect(),
        }
    }

    /// The ordering key: path kind (exact > template > regex > prefix > any), then literal
    /// segments and length, then how many other conditions, then the explicit priority.
    pub fn specificity(&self, priority: i32) -> Specificity {
        let (path_kind, path_literals, path_len) = match &self.path {
            PathMatch::Exact(p) => (4, 0, p.len()),
            PathMatch::Template(t) => {
                let lits = t
                    .segments
                    .iter()
                    .filter(|s| matches!(s, Segment::Literal(_)))
                    .count();
                let has_rest = t.segments.iter().any(|s| matches!(s, Segment::Rest(_)));
                (3, lits * 2 + usize::from(!has_rest), t.segments.len())
            }
            PathMatch::Regex(r) => (2, 0, r.as_str().len()),
            PathMatch::Prefix(p) => (1, 0, p.len()),
            PathMatch::Any => (0, 0, 0),
        };
        let conditions =
            usize::from(!self.methods.is_empty()) + self.headers.len() + self.query.len();
        Specificity {
            path_kind,
            path_literals: clamp(path_literals),
            path_len: clamp(path_len),
            conditions: clamp(conditions),
            priority,
        }
    }

    /// Checks the conditions; on a match, path parameters are pushed to `params`.
    pub fn matches<'r>(&self, req: &RequestView<'r>, params: &mut Vec<(String, &'r str)>) -> bool {
        if !self.methods.is_empty() && !self.methods.contains(req.method) {
            return false;
        }
        for (name, cond) in &self.headers {
            let value = req.headers.get(name).and_then(|v| v.to_str().ok());
            if !cond.holds(value) {
                return false;
            }
        }
        for (name, cond) in &self.query {
            if !cond.holds(query_param(req.query, name)) {
                return false;
            }
        }
        let start = params.len();
        let ok = match &self.path {
            PathMatch::Any => true,
            PathMatch::Exact(p) => p == req.path,
            PathMatch::Template(t) => t.matches(req.path, params),
            PathMatch::Prefix(p) => {
                p.is_empty()
                    || (req.path.starts_with(p.as_str())
                        && matches!(req.path.as_bytes().get(p.len()), None | Some(b'/')))
            }
            PathMatch::Regex(r) => match r.captures(req.path) {
                Some(caps) => {
                    for name in r.capture_names().flatten() {
                        if let Some(m) = caps.name(name) {
                            params.push((name.to_owned(), &req.path[m.start()..m.end()]));
                        }
                    }
                    true
                }
                None => false,
            },
        };
        if !ok {
            params.truncate(start);
        }
        ok
    }
}

fn clamp(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The raw value of the first query parameter called `name` (no percent-decoding).
pub fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_respects_segment_boundaries() {
        let c = Conditions::compile(&RouteMatch {
            path_prefix: Some("/api/".into()),
            ..Default::default()
        });
        let h = HeaderMap::new();
        let check = |path: &str| {
            let req = RequestView {
                host: "",
                path,
                query: None,
                method: &Method::GET,
                headers: &h,
            };
            c.matches(&req, &mut Vec::new())
        };
        assert!(check("/api"));
        assert!(check("/api/x"));
        assert!(!check("/apix"));
        assert!(!check("/"));
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param(Some("a=1&b=2&b=3"), "b"), Some("2"));
        assert_eq!(query_param(Some("flag&x=1"), "flag"), Some(""));
        assert_eq!(query_param(None, "a"), None);
    }
}
