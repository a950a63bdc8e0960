//! The client's address for policies (rate-limit keys): the connection's peer, unless the
//! peer is a trusted proxy, in which case the forwarding fields are read from the right
//! (nearest hop) and the first address that is not itself a trusted proxy is the client.
//! Fields from untrusted peers are never believed, so a client cannot pick its own key.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::{self, HeaderName};
use ipnet::IpNet;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The proxies a listener trusts.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses the listener's list (validated already; bad entries are skipped).
    pub fn new(list: &[String]) -> Self {
        let nets = list
            .iter()
            .filter_map(|s| {
                s.parse::<IpNet>()
                    .ok()
                    .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
            })
            .collect();
        TrustedProxies { nets }
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client address for a request from `peer` with `headers`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if self.nets.is_empty() || !self.trusts(peer) {
            return peer;
        }
        // `Forwarded` is the standard; X-Forwarded-For is what most proxies send. Use the
        // first one present, walking from the nearest hop outwards.
        let hops: Vec<IpAddr> = if headers.contains_key(header::FORWARDED) {
            headers
                .get_all(header::FORWARDED)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(forwarded_for)
                .collect()
        } else {
            headers
                .get_all(X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|s| parse_addr(s.trim()))
                .collect()
        };
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            client = canonical(hop);
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so one client has one key.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The address in one `Forwarded` element's `for=` parameter.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        parse_addr(v.trim().trim_matches('"'))
    })
}

/// `192.0.2.1`, `192.0.2.1:8080`, `[2001:db8::1]`, `[2001:db8::1]:8080` or `2001:db8::1`.
fn parse_addr(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    s.rsplit_once(':')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn untrusted_peers_are_the_client() {
        let t = TrustedProxies::new(&["10.0.0.0/8".into()]);
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            t.client_ip("192.0.2.9".parse().unwrap(), &h),
            "192.0.2.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn trusted_hops_are_skipped_from_the_right() {
        let t = TrustedProxies::new(&["10.0.0.0/8".into(), "192.0.2.1".into()]);
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.1.1.1")]);
        assert_eq!(
            t.client_ip("10.0.0.5".parse().unwrap(), &h),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::7]:99\";proto=http",
        )]);
        assert_eq!(
            t.client_ip("192.0.2.1".parse().unwrap(), &h),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
        // Every hop trusted: the leftmost is the client.
        let h = headers(&[("x-forwarded-for", "10.9.9.9")]);
        assert_eq!(
            t.client_ip("::ffff:10.0.0.5".parse().unwrap(), &h),
            "10.9.9.9".parse::<IpAddr>().unwrap()
        );
    }

    proptest::proptest! {
        /// Any forwarding fields from a trusted peer: no panic, and the answer is the peer
        /// or an address the fields name.
        #[test]
        fn any_forwarding_fields_name_the_peer_or_one_of_theirs(
            forwarded in "[ -~]{0,80}",
            xff in "[ -~]{0,80}",
        ) {
            let proxies = TrustedProxies::new(&["10.0.0.0/8".to_owned()]);
            let peer: IpAddr = "10.0.0.1".parse().unwrap();
            let mut h = HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(&forwarded) {
                h.insert(header::FORWARDED, v);
            }
            if let Ok(v) = http::HeaderValue::from_str(&xff) {
                h.insert(X_FORWARDED_FOR, v);
            }
            let ip = proxies.client_ip(peer, &h);
            let text = ip.to_string();
            proptest::prop_assert!(
                ip == peer || forwarded.contains(&text) || xff.contains(&text)
                    || forwarded.contains(&ip.to_string().to_uppercase()),
                "{ip} from {forwarded:?} / {xff:?}"
            );
        }
    }
}
