//! Rate-limit keys: which parts of a request a limit counts separately, compiled once,
//! rendered per request into a reused byte buffer (parts joined with `|`).

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, Method};

use crate::router::query_param;

/// One part of a key.
#[derive(Debug, Clone)]
pub enum KeyPart {
    /// The client address (after trusted proxies).
    ClientIp,
    /// The route's name.
    Route,
    /// The request method.
    Method,
    /// The authenticated consumer (`anonymous` without one).
    Consumer,
    /// A request header's first value.
    Header(HeaderName),
    /// A query parameter's raw value.
    Query(String),
    /// A route path parameter.
    Path(String),
}

impl KeyPart {
    /// Parses a validated key part.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.split_once(':') {
            None => match s {
                "client_ip" => KeyPart::ClientIp,
                "route" => KeyPart::Route,
                "method" => KeyPart::Method,
                "consumer" => KeyPart::Consumer,
                _ => return None,
            },
            Some(("header", n)) => KeyPart::Header(HeaderName::from_bytes(n.as_bytes()).ok()?),
            Some(("query", n)) => KeyPart::Query(n.to_owned()),
            Some(("path", n)) => KeyPart::Path(n.to_owned()),
            _ => return None,
        })
    }
}

/// What a key can be made of, for one request.
pub struct RequestFacts<'a> {
    /// The client address.
    pub client_ip: IpAddr,
    /// The route's name.
    pub route: &'a str,
    /// The method.
    pub method: &'a Method,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The raw query string.
    pub query: Option<&'a str>,
    /// The route's path parameters.
    pub params: &'a [(String, String)],
    /// The authenticated consumer, if any.
    pub consumer: Option<&'a str>,
}

/// Writes the key for `parts` into `out` (cleared first).
pub fn render(parts: &[KeyPart], facts: &RequestFacts<'_>, out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b'|');
        }
        match part {
            KeyPart::ClientIp => {
                let _ = write!(out, "{}", facts.client_ip);
            }
            KeyPart::Route => out.extend_from_slice(facts.route.as_bytes()),
            KeyPart::Method => out.extend_from_slice(facts.method.as_str().as_bytes()),
            KeyPart::Consumer => {
                out.extend_from_slice(facts.consumer.unwrap_or("anonymous").as_bytes());
            }
            KeyPart::Header(name) => {
                if let Some(v) = facts.headers.get(name) {
                    out.extend_from_slice(v.as_bytes());
                }
            }
            KeyPart::Query(name) => {
                if let Some(v) = query_param(facts.query, name) {
                    out.extend_from_slice(v.as_bytes());
                }
            }
            KeyPart::Path(name) => {
                if let Some((_, v)) = facts.params.iter().find(|(k, _)| k == name) {
                    out.extend_from_slice(v.as_bytes());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_parts_joined() {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", "k1".parse().unwrap());
        let params = [("id".to_string(), "42".to_string())];
        let facts = RequestFacts {
            client_ip: "192.0.2.1".parse().unwrap(),
            route: "r",
            method: &Method::GET,
            headers: &headers,
            query: Some("a=1&tenant=acme&b"),
            params: &params,
            consumer: None,
        };
        let parts: Vec<KeyPart> = [
            "client_ip",
            "header:x-api-key",
            "query:tenant",
            "path:id",
            "method",
            "route",
            "consumer",
            "header:absent",
        ]
        .iter()
        .map(|p| KeyPart::parse(p).unwrap())
        .collect();
        let mut out = Vec::new();
        render(&parts, &facts, &mut out);
        assert_eq!(out, b"192.0.2.1|k1|acme|42|GET|r|anonymous|");
    }
}
