//! Differential tests against servers written by others: the framing corpus
//! (crates/floodgate-http1/tests/corpus/) goes through the gateway to Debian's nginx,
//! apache2 and h2o, and what each of them parsed must be what the gateway parsed, or the
//! gateway must have refused the case itself.
//!
//! Each peer runs as a reverse proxy in front of a recording origin: the request it
//! forwards is the request it parsed (method, target, body), written out again in its own
//! words. Per case: if the gateway refused it (its own problem+json answer), the peer saw
//! nothing; otherwise the peer answered 200 after forwarding exactly one request, with the
//! target and body the gateway's parser reads in the case's bytes. A peer that refuses
//! what the gateway forwarded, or reads another request in it, fails the test: that is
//! the disagreement request smuggling lives in.
//!
//! The peers come from Debian's packages (`nginx-light`, `apache2`, `h2o`), which
//! `.ci/run` installs when they are missing; each runs in the foreground with a
//! configuration of its own under the test's temporary directory and is stopped by its PID.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use floodgate_http1::Framing;
use floodgate_http1::chunked::{ChunkLimits, decode_in_pieces};
use floodgate_http1::head::RequestHead;
use floodgate_http1::head::{HeadLimits, parse_request};
use parking_lot::Mutex;

use crate::desync::{Seen, answer, body_for, corpus, origin, status_of};
use crate::support::*;

/// A peer server, stopped by its PID when dropped.
struct Peer {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _killed = self.child.kill().is_ok();
        let _reaped = self.child.wait().is_ok();
    }
}

/// Which server, and how it is configured as a reverse proxy to `origin`.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Nginx,
    Apache,
    H2o,
}

impl Kind {
    fn program(self) -> &'static str {
        match self {
            Kind::Nginx => "/usr/sbin/nginx",
            Kind::Apache => "/usr/sbin/apache2",
            Kind::H2o => "/usr/bin/h2o",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx-light",
            Kind::Apache => "apache2",
            Kind::H2o => "h2o",
        }
    }

    /// The configuration file's text, and the command line that runs it in the
    /// foreground.
    fn configure(self, dir: &std::path::Path, port: u16, origin: SocketAddr) -> Command {
        let d = dir.display();
        let (file, text) = match self {
            // One process (no master, no workers), so no user switch and no PID to hunt.
            Kind::Nginx => (
                "nginx.conf",
                format!(
                    "master_process off;\ndaemon off;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
                     events {{ worker_connections 256; }}\n\
                     http {{\n  access_log off;\n  client_max_body_size 0;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                     \x20 server {{\n    listen 127.0.0.1:{port};\n\
                     \x20   location / {{ proxy_pass http://{origin}; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n  }}\n}}\n"
                ),
            ),
            // `nocanon` passes the target on as it came, so the comparison sees the
            // target apache2 parsed rather than one it rebuilt.
            Kind::Apache => (
                "apache2.conf",
                format!(
                    "ServerRoot {d}\nListen 127.0.0.1:{port}\nServerName localhost\n\
                     LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\n\
                     LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so\n\
                     LoadModule proxy_module /usr/lib/apache2/modules/mod_proxy.so\n\
                     LoadModule proxy_http_module /usr/lib/apache2/modules/mod_proxy_http.so\n\
                     User nobody\nGroup nogroup\nPidFile {d}/apache2.pid\nErrorLog {d}/error.log\n\
                     ProxyPass / http://{origin}/ nocanon\n"
                ),
            ),
            Kind::H2o => (
                "h2o.conf",
                format!(
                    "listen:\n  host: 127.0.0.1\n  port: {port}\nuser: nobody\n\
                     hosts:\n  default:\n    paths:\n      /:\n        proxy.reverse.url: http://{origin}/\n"
                ),
            ),
        };
        let path = dir.join(file);
        std::fs::write(&path, text).expect("write the peer's configuration");
        let mut cmd = Command::new(self.program());
        match self {
            Kind::Nginx => cmd.arg("-p").arg(dir).arg("-c").arg(&path),
            Kind::Apache => cmd.arg("-X").arg("-f").arg(&path),
            Kind::H2o => cmd.arg("-c").arg(&path),
        };
        cmd
    }

    /// Starts the peer in front of `origin` and waits until it accepts connections.
    async fn start(self, origin: SocketAddr) -> Peer {
        assert!(
            PathBuf::from(self.program()).exists(),
            "{} is missing: install Debian's {} (`.ci/run` does)",
            self.program(),
            self.package()
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let child = self
            .configure(dir.path(), port, origin)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.program()));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let peer = Peer {
            child,
            addr,
            _dir: dir,
        };
        until(
            &format!("{self:?} accepts connections"),
            move || async move { tokio::net::TcpStream::connect(addr).await.is_ok() },
        )
        .await;
        peer
    }
}

/// What the gateway's parser reads in a case: its method and target, and its body (None
/// when the gateway would refuse the case, or its body never ends).
fn gateway_reading(raw: &[u8]) -> Option<(RequestHead, Bytes)> {
    let (head, len) = parse_request(raw, &HeadLimits::default()).ok()??;
    let rest = &raw[len..];
    let body = match head.framing {
        Framing::Empty => Bytes::new(),
        Framing::Length(n) => Bytes::copy_from_slice(rest.get(..usize::try_from(n).ok()?)?),
        Framing::Chunked => {
            let d = decode_in_pieces(rest, rest.len(), ChunkLimits::default());
            d.used?;
            Bytes::from(d.data)
        }
        Framing::UntilClose => return None,
    };
    Some((head, body))
}

/// Runs both corpus files through the gateway to `kind`; the number of cases compared.
async fn differential(kind: Kind) -> usize {
    let (recorder, seen) = origin().await;
    let peer = kind.start(recorder).await;
    let gw = Gateway::start(&config(
        peer.addr,
        "  - match: { path_prefix: / }\n    upstream: backend",
        "",
    ));
    let mut compared = 0;
    let mut disagreements = Vec::new();
    for (n, file) in ["desync-guardian.txt", "smuggling.txt"].iter().enumerate() {
        for (i, case) in corpus(file).iter().enumerate() {
            let mut raw = case.raw.clone();
            if *file == "desync-guardian.txt" {
                raw.extend(body_for(&raw));
            }
            let before = seen.lock().requests.len();
            let got = answer(&gw, &raw, &case.name).await;
            let status = status_of(&got);
            let by_gateway = got
                .to_ascii_lowercase()
                .contains("content-type: application/problem+json");
            // A marker after each case: every request the peer forwarded before it is
            // this case's.
            let marker = format!("/marker-{n}-{i}");
            let ok = raw_exchange(
                gw.addr(),
                format!("GET {marker} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await;
            assert!(ok.starts_with("HTTP/1.1 200"), "{kind:?} marker: {ok}");
            let forwarded = forwarded_before(&seen, before, &marker);
            let verdict = judge(&raw, status, by_gateway, &forwarded);
            if let Err(why) = verdict {
                disagreements.push(format!("{}: {why}", case.name));
            }
            compared += 1;
        }
    }
    assert!(
        disagreements.is_empty(),
        "{kind:?} read {} case(s) otherwise than the gateway:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    compared
}

/// The requests the recorder got after `before`, up to (without) the marker.
fn forwarded_before(seen: &Arc<Mutex<Seen>>, before: usize, marker: &str) -> Vec<(String, Bytes)> {
    let s = seen.lock();
    let mut out = Vec::new();
    for (target, body) in s.requests.iter().skip(before) {
        if target == marker {
            return out;
        }
        out.push((target.clone(), body.clone()));
    }
    panic!("the marker {marker} never reached the recorder after the peer's 200");
}

/// Whether what the peer forwarded agrees with the gateway's reading of the case.
fn judge(
    raw: &[u8],
    status: u16,
    by_gateway: bool,
    forwarded: &[(String, Bytes)],
) -> Result<(), String> {
    if by_gateway {
        // Refused (or failed) by the gateway: nothing of it may reach the peer's origin.
        return if forwarded.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the gateway answered {status} itself, yet the peer forwarded {forwarded:?}"
            ))
        };
    }
    let Some((head, body)) = gateway_reading(raw) else {
        return Err(format!(
            "the gateway's parser refuses it, yet the client got {status} from the peer"
        ));
    };
    let target = head.uri.to_string();
    match forwarded {
        [(t, b)] if status == 200 && *t == target && *b == body => Ok(()),
        _ => Err(format!(
            "the gateway read {} {target} with a body of {}; the peer answered {status} \
             and forwarded {:?}",
            head.method,
            shown(&body),
            forwarded
                .iter()
                .map(|(t, b)| format!("{t} with a body of {}", shown(b)))
                .collect::<Vec<_>>()
        )),
    }
}

/// A body for a message: its length and its first bytes.
fn shown(body: &[u8]) -> String {
    let start = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
    format!("{} bytes ({start:?}…)", body.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_behind_the_gateway_reads_what_it_read() {
    assert!(differential(Kind::Nginx).await > 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apache2_behind_the_gateway_reads_what_it_read() {
    assert!(differential(Kind::Apache).await > 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2o_behind_the_gateway_reads_what_it_read() {
    assert!(differential(Kind::H2o).await > 200);
}
