//! Header handling on the proxy path: removing hop-by-hop fields (RFC 9110 §7.6.1), adding the
//! forwarding fields (`X-Forwarded-*`, RFC 7239 `Forwarded`, `Via`), and a route's configured
//! edits, compiled once per snapshot.

use std::net::IpAddr;

use floodgate_config::model::HeaderOps;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop fields that never cross the proxy, besides those named in `Connection`.
const HOP_BY_HOP: [HeaderName; HOP_COUNT] = [
    header::CONNECTION,
    KEEP_ALIVE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const HOP_COUNT: usize = 6;
/// Where `Transfer-Encoding` is in [`HOP_BY_HOP`].
const TRANSFER_ENCODING_AT: usize = 4;
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes hop-by-hop fields: the fixed set, every field named in `Connection`, and every
/// `Proxy-*` field (`Proxy-Connection`, `Proxy-Authorization`, ...), which address this hop.
/// A message framed by `Transfer-Encoding` also loses its `Content-Length`: the length
/// did not frame it (RFC 9112 §6.3), and the next hop frames it anew from the body.
///
/// Runs twice on every proxied exchange, so the common cases cost one pass over the names
/// and no allocation: most requests carry none of these fields, and most responses only
/// `Connection: keep-alive`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let mut fixed = [false; HOP_COUNT];
    let mut proxy = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            fixed[i] = true;
        } else if name.as_str().starts_with("proxy-") {
            proxy = true;
        }
    }
    if fixed[0] {
        // Taken out first, so the names it lists can be removed while its values are read.
        let mut values = headers.get_all(header::CONNECTION).iter();
        let single = values.next().is_some() && values.next().is_none();
        if single {
            if let Some(v) = headers.remove(header::CONNECTION) {
                remove_listed(headers, &v);
            }
        } else if let header::Entry::Occupied(e) = headers.entry(header::CONNECTION) {
            let values: Vec<HeaderValue> = e.remove_entry_mult().1.collect();
            for v in &values {
                remove_listed(headers, v);
            }
        }
    }
    for (name, present) in HOP_BY_HOP.iter().zip(fixed).skip(1) {
        if present {
            headers.remove(name);
        }
    }
    if fixed[TRANSFER_ENCODING_AT] {
        headers.remove(header::CONTENT_LENGTH);
    }
    if proxy {
        let named: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
}

/// Whether a comma-separated list field holds `token` (case-insensitive).
pub fn lists_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Removes the fields a `Connection` value names. A `&str` key is looked up
/// case-insensitively without allocating, and one that is not a field name matches nothing.
fn remove_listed(headers: &mut HeaderMap, connection: &HeaderValue) {
    let Ok(list) = connection.to_str() else {
        return;
    };
    for token in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        headers.remove(token);
    }
}

/// The client's address rendered once per connection for the forwarding fields, and the
/// connection's last `Forwarded` element: a connection's requests nearly always name the
/// same host, so the element is built (and its buffer allocated) once, not per request.
#[derive(Debug)]
pub struct ClientAddr {
    /// For `X-Forwarded-For`: the bare address.
    pub ip: HeaderValue,
    /// For `Forwarded`: `for=192.0.2.1` or `for="[2001:db8::1]"` (RFC 7239 §6).
    pub forwarded_for: String,
    /// The last element built: for which host and scheme, and the value.
    last_forwarded: std::sync::Mutex<Option<(HeaderValue, &'static str, HeaderValue)>>,
}

impl ClientAddr {
    /// Renders `ip` for both fields.
    pub fn new(ip: IpAddr) -> Self {
        let text = ip.to_string();
        let forwarded_for = match ip {
            IpAddr::V4(_) => format!("for={text}"),
            IpAddr::V6(_) => format!("for=\"[{text}]\""),
        };
        let ip =
            HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ClientAddr {
            ip,
            forwarded_for,
            last_forwarded: std::sync::Mutex::new(None),
        }
    }

    /// This hop's `Forwarded` element for a request over `proto` to `host` (already
    /// checked to be quotable).
    fn forwarded(&self, host: Option<&HeaderValue>, proto: &'static str) -> Option<HeaderValue> {
        let mut last = self
            .last_forwarded
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let (Some((h, p, v)), Some(host)) = (last.as_ref(), host)
            && *p == proto
            && h == host
        {
            return Some(v.clone());
        }
        let mut fwd = String::with_capacity(64);
        fwd.push_str(&self.forwarded_for);
        fwd.push_str(";proto=");
        fwd.push_str(proto);
        if let Some(text) = host.and_then(|h| h.to_str().ok()) {
            fwd.push_str(";host=\"");
            fwd.push_str(text);
            fwd.push('"');
        }
        // Hands the string's buffer to the header value instead of copying it.
        let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(fwd)).ok()?;
        // A copy of the host, not a clone: a clone would share (and keep alive) the buffer
        // the request was read into.
        if let Some(h) = host.and_then(|h| HeaderValue::from_bytes(h.as_bytes()).ok()) {
            *last = Some((h, proto, value.clone()));
        }
        Some(value)
    }
}

/// Whether a host can go inside a quoted string as it is: visible ASCII, no `"`.
fn quotable(host: &HeaderValue) -> bool {
    host.as_bytes()
        .iter()
        .all(|&b| b.is_ascii_graphic() && b != b'"')
}

/// What the forwarding fields say about the client side of this hop.
pub struct Forwarding<'a> {
    /// The client's address as seen by the listener.
    pub client: &'a ClientAddr,
    /// The host the client asked for.
    pub host: Option<&'a HeaderValue>,
    /// `http` (TLS listeners will say `https`).
    pub proto: &'static str,
    /// The `Via` entry for this hop, such as `1.1 floodgate`.
    pub via: &'static str,
}

/// Appends to `X-Forwarded-For`, `Forwarded` and `Via`, and sets `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (the client's values are replaced: they describe this hop).
pub fn add_forwarding(headers: &mut HeaderMap, f: &Forwarding<'_>) {
    append_list(headers, X_FORWARDED_FOR, f.client.ip.clone());
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(f.proto));
    // Only a host that can sit inside a quoted string as is goes into the fields.
    let host = f.host.filter(|h| quotable(h));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    if let Some(v) = f.client.forwarded(host, f.proto) {
        append_list(headers, header::FORWARDED, v);
    }
    append_list(headers, header::VIA, HeaderValue::from_static(f.via));
}

/// Appends `item` to a comma-separated list field, folding existing lines into one. The
/// common case, no such field yet, inserts `item` without building a string.
fn append_list(headers: &mut HeaderMap, name: HeaderName, item: HeaderValue) {
    let mut field = match headers.entry(name) {
        header::Entry::Vacant(v) => {
            v.insert(item);
            return;
        }
        header::Entry::Occupied(field) => field,
    };
    let mut joined = Vec::with_capacity(64);
    for v in field.iter() {
        joined.extend_from_slice(v.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(item.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        field.insert(v);
    }
}

/// A route's header edits, with names and values parsed once.
#[derive(Debug, Clone, Default)]
pub struct HeaderEdits {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderEdits {
    /// Compiles edits from config (already validated, so parse failures are skipped).
    pub fn compile(ops: &HeaderOps) -> Self {
        let pair = |(k, v): (&String, &String)| {
            Some((
                HeaderName::from_bytes(k.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        };
        HeaderEdits {
            remove: ops
                .remove
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect(),
            set: ops.set.iter().filter_map(pair).collect(),
            add: ops.add.iter().filter_map(pair).collect(),
        }
    }

    /// Applies remove, then set, then add.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_fields() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("trailer", "x"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn a_length_beside_transfer_encoding_goes_with_it() {
        let mut h = map(&[("transfer-encoding", "chunked"), ("content-length", "3")]);
        remove_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
        let mut h = map(&[("content-length", "3")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(
            h["content-length"], "3",
            "a length alone frames the message"
        );
    }

    #[test]
    fn every_connection_line_counts_and_names_match_in_any_case() {
        let mut h = map(&[
            ("connection", "X-One"),
            ("connection", " , x-two ,bad name"),
            ("x-one", "1"),
            ("x-two", "2"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");

        let mut untouched = map(&[("accept", "*/*"), ("x-kept", "yes")]);
        remove_hop_by_hop(&mut untouched);
        assert_eq!(untouched.len(), 2);
    }

    #[test]
    fn forwarding_fields_append() {
        let mut h = map(&[("x-forwarded-for", "203.0.113.9"), ("via", "1.0 edge")]);
        let client = ClientAddr::new("::1".parse().expect("ip"));
        let f = Forwarding {
            client: &client,
            host: Some(&HeaderValue::from_static("shop.test")),
            proto: "http",
            via: "1.1 floodgate",
        };
        add_forwarding(&mut h, &f);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, ::1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.test");
        assert_eq!(
            h["forwarded"],
            "for=\"[::1]\";proto=http;host=\"shop.test\""
        );
        assert_eq!(h["via"], "1.0 edge, 1.1 floodgate");

        // The connection's element is kept for its host, and made anew for another host,
        // another scheme, or none.
        let mut again = HeaderMap::new();
        add_forwarding(&mut again, &f);
        assert_eq!(again["forwarded"], h["forwarded"]);
        let other = HeaderValue::from_static("other.test");
        for (host, proto, expected) in [
            (
                Some(&other),
                "http",
                "for=\"[::1]\";proto=http;host=\"other.test\"",
            ),
            (
                Some(&other),
                "https",
                "for=\"[::1]\";proto=https;host=\"other.test\"",
            ),
            (None, "https", "for=\"[::1]\";proto=https"),
            (
                Some(&HeaderValue::from_static("a\"b")),
                "https",
                "for=\"[::1]\";proto=https",
            ),
        ] {
            let mut h = HeaderMap::new();
            let f = Forwarding {
                client: &client,
                host,
                proto,
                via: "1.1 floodgate",
            };
            add_forwarding(&mut h, &f);
            assert_eq!(h["forwarded"], expected);
        }
    }
}
