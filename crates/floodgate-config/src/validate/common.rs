//! Checks that the rules of more than one policy share: key parts, trusted-proxy lists,
//! PEM files and fallback/retry conditions. A leaf of the validation folder: the policy
//! rules use it, it uses none of them.

use http::HeaderName;

use super::problem::Problem;
use crate::error::FieldPath;

pub(crate) fn check_key_part(part: &str, params: &[String]) -> Result<(), String> {
    match part.split_once(':') {
        None => match part {
            "client_ip" | "route" | "method" | "consumer" => Ok(()),
            other => Err(format!(
                "unknown key part {other:?}, expected `client_ip`, `route`, `method`, \
                 `consumer`, `header:NAME`, `query:NAME` or `path:PARAM`"
            )),
        },
        Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
            .map(|_| ())
            .map_err(|_| format!("{name:?} is not a valid header name")),
        Some(("query", name)) if !name.is_empty() => Ok(()),
        Some(("path", name)) => {
            if params.iter().any(|p| p == name) {
                Ok(())
            } else {
                Err(format!(
                    "the route's path has no parameter {name:?}{}",
                    if params.is_empty() {
                        String::new()
                    } else {
                        format!(" (it has {})", params.join(", "))
                    }
                ))
            }
        }
        _ => Err(format!(
            "invalid key part {part:?}, expected `header:NAME`, `query:NAME` or `path:PARAM`"
        )),
    }
}

/// Checks a listener's trusted proxies: IP addresses or CIDR blocks.
pub(crate) fn check_trusted_proxies(list: &[String], p: &FieldPath, out: &mut Vec<Problem>) {
    for (i, entry) in list.iter().enumerate() {
        let ok = entry.parse::<ipnet::IpNet>().is_ok() || entry.parse::<std::net::IpAddr>().is_ok();
        if !ok {
            out.push((
                p.index(i),
                format!("{entry:?} is not an IP address or CIDR block (such as 10.0.0.0/8)"),
            ));
        }
    }
}

/// How many PEM certificates the file at `path` holds (at least one).
pub(crate) fn pem_certs(path: &str) -> Result<usize, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let n = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {path:?}: {e}"))?
        .filter(Result::is_ok)
        .count();
    if n == 0 {
        return Err(format!("{path:?} holds no PEM certificate"));
    }
    Ok(n)
}

/// Whether the file at `path` holds a PEM private key.
pub(crate) fn pem_key(path: &str) -> Result<(), String> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_file(path)
        .map(|_| ())
        .map_err(|_| format!("{path:?} holds no readable PEM private key"))
}

/// `connect_error`, `reset`, `timeout`, a status or a status class.
pub(crate) fn is_condition(cond: &str) -> bool {
    matches!(cond, "connect_error" | "reset" | "timeout")
        || cond.parse::<u16>().is_ok_and(|s| (100..=599).contains(&s))
        || (cond.len() == 3
            && cond.ends_with("xx")
            && matches!(&cond[..1], "1" | "2" | "3" | "4" | "5"))
}
