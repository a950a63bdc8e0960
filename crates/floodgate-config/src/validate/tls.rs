//! Validation rules for TLS on listeners: the files must hold what they claim, and HSTS and
//! the HTTPS redirect must be on the right kind of listener.

use super::common::{pem_certs, pem_key};
use super::problem::Problem;
use crate::error::FieldPath;
use crate::model::Listener;

/// Checks a listener's `tls`, `hsts` and `redirect_to_https`.
pub(crate) fn check_listener_tls(l: &Listener, p: &FieldPath, out: &mut Vec<Problem>) {
    if let Some(tls) = &l.tls {
        let tp = p.key("tls");
        if tls.certificates.is_empty() {
            out.push((
                tp.key("certificates"),
                "give at least one `{ cert, key }`".into(),
            ));
        }
        for (i, pair) in tls.certificates.iter().enumerate() {
            let cp = tp.key("certificates").index(i);
            if let Err(msg) = pem_certs(&pair.cert) {
                out.push((cp.key("cert"), msg));
            }
            if let Err(msg) = pem_key(&pair.key) {
                out.push((cp.key("key"), msg));
            }
        }
        if let Some(ca) = &tls.client_auth
            && let Err(msg) = pem_certs(&ca.ca_file)
        {
            out.push((tp.key("client_auth").key("ca_file"), msg));
        }
        if l.redirect_to_https.is_some() {
            out.push((
                p.key("redirect_to_https"),
                "a TLS listener serves HTTPS itself; redirect from a cleartext listener".into(),
            ));
        }
    } else if l.hsts.is_some() {
        out.push((
            p.key("hsts"),
            "HSTS is only sent over HTTPS: give the listener `tls`".into(),
        ));
    }
    if let Some(r) = &l.redirect_to_https
        && ![301, 302, 307, 308].contains(&r.status)
    {
        out.push((
            p.key("redirect_to_https").key("status"),
            format!("{} is not 301, 302, 307 or 308", r.status),
        ));
    }
}
