//! Active health checks: one task per (upstream, target, check definition), probing on an
//! interval and flipping the target's healthy flag after `healthy_after` passes or
//! `unhealthy_after` failures in a row. The registry keeps the tasks across reloads that
//! do not change them, and stops the ones a reload removes. A target starts healthy, so
//! adding checks never takes a working upstream out of service.
//!
//! Kinds: `http` (GET `path`, an expected status), `tcp` (a connection opens) and `grpc`
//! (the gRPC health checking protocol: `grpc.health.v1.Health/Check` over h2c, healthy on
//! `SERVING`; its two one-field messages are written and read here by hand rather than
//! with a Protobuf crate).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use floodgate_config::model::{HealthCheck, HealthCheckKind};
use http::{Request, StatusCode, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use tokio::task::JoinHandle;

use super::{TargetStats, UpstreamSet};

/// Running health-check tasks.
#[derive(Default)]
pub struct HealthChecks {
    tasks: Mutex<HashMap<String, JoinHandle<()>>>,
}

impl HealthChecks {
    /// Starts the checks the upstreams `sets` define that are not running, and stops those
    /// they do not. Needs a Tokio runtime.
    pub fn sync<'a>(
        &self,
        sets: impl IntoIterator<Item = &'a Arc<UpstreamSet>>,
        metrics: &super::metrics::UpstreamMetrics,
    ) {
        let mut wanted: HashMap<String, (Arc<TargetStats>, String, HealthCheck, Gauge)> =
            HashMap::new();
        for set in sets {
            let Some(check) = set.cfg.health_check.clone() else {
                continue;
            };
            let name = &*set.name;
            for t in set.targets() {
                let identity = format!("{name}\u{0}{}\u{0}{check:?}", t.address);
                let gauge = metrics.healthy(name, &t.address);
                wanted.insert(
                    identity,
                    (
                        t.pool.stats.clone(),
                        t.address.to_string(),
                        check.clone(),
                        gauge,
                    ),
                );
            }
        }
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|identity, task| {
            let keep = wanted.contains_key(identity);
            if !keep {
                task.abort();
            }
            keep
        });
        for (identity, (stats, address, check, gauge)) in wanted {
            tasks
                .entry(identity)
                .or_insert_with(|| tokio::spawn(run(stats, address, check, gauge)));
        }
    }
}

async fn run(stats: Arc<TargetStats>, address: String, check: HealthCheck, gauge: Gauge) {
    let (mut passes, mut fails) = (0u32, 0u32);
    gauge.set(i64::from(stats.healthy()));
    let mut tick = tokio::time::interval(check.interval.0);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ok = matches!(
            tokio::time::timeout(check.timeout.0, probe(&address, &check)).await,
            Ok(true)
        );
        if ok {
            passes += 1;
            fails = 0;
        } else {
            fails += 1;
            passes = 0;
        }
        let healthy = stats.healthy();
        if !healthy && passes >= check.healthy_after {
            stats.set_healthy(true);
            tracing::info!(address = %address, "health check: target healthy again");
        } else if healthy && fails >= check.unhealthy_after {
            stats.set_healthy(false);
            tracing::warn!(address = %address, "health check: target unhealthy");
        }
        gauge.set(i64::from(stats.healthy()));
    }
}

/// One probe: true when the target passes.
async fn probe(address: &str, check: &HealthCheck) -> bool {
    let Ok(stream) = tokio::net::TcpStream::connect(address).await else {
        return false;
    };
    match check.kind {
        HealthCheckKind::Tcp => return true,
        HealthCheckKind::Grpc => return grpc_probe(stream, address, &check.service).await,
        HealthCheckKind::Http => {}
    }
    let Ok((mut sender, conn)) =
        hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(stream)).await
    else {
        return false;
    };
    let driver = tokio::spawn(conn);
    let Ok(req) = Request::get(check.path.as_str())
        .header(header::HOST, address)
        .header(header::USER_AGENT, "floodgate-health-check")
        .body(Empty::new())
    else {
        driver.abort();
        return false;
    };
    let status = sender.send_request(req).await.map(|r| r.status());
    driver.abort();
    match status {
        Ok(s) => expected(s, &check.expect),
        Err(_) => false,
    }
}

/// A gRPC health check on `stream` (to `address`): true when the server answers
/// `SERVING` for `service`.
async fn grpc_probe(stream: tokio::net::TcpStream, address: &str, service: &str) -> bool {
    use http_body_util::{BodyExt, Full};
    let Ok((mut sender, conn)) = hyper::client::conn::http2::handshake::<_, _, Full<bytes::Bytes>>(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    else {
        return false;
    };
    let driver = tokio::spawn(conn);
    // HTTP/2 carries the scheme and authority: the URI is absolute.
    let Ok(req) = Request::post(format!("http://{address}/grpc.health.v1.Health/Check"))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .header(header::USER_AGENT, "floodgate-health-check")
        .body(Full::new(check_request(service)))
    else {
        driver.abort();
        return false;
    };
    let serving = async {
        let resp = sender.send_request(req).await.ok()?;
        if resp.status() != StatusCode::OK {
            return None;
        }
        let head_status = resp.headers().get("grpc-status").cloned();
        let collected = resp.into_body().collect().await.ok()?;
        let status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status").cloned())
            .or(head_status)?;
        (status == "0").then(|| serving(&collected.to_bytes()))
    }
    .await;
    driver.abort();
    serving == Some(true)
}

/// A `HealthCheckRequest { service }` in a gRPC frame: field 1 (string), when not empty.
fn check_request(service: &str) -> bytes::Bytes {
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a);
        let mut len = service.len();
        while len >= 0x80 {
            message.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        message.push(len as u8);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    frame.extend_from_slice(&message);
    frame.into()
}

/// Whether a gRPC frame holds a `HealthCheckResponse` whose `status` (field 1, varint) is
/// `SERVING` (1). Other fields, unknown to this reader, are not expected and fail it.
fn serving(frame: &[u8]) -> bool {
    // Uncompressed flag, a 4-byte length, then the message.
    let Some((&0, rest)) = frame.split_first() else {
        return false;
    };
    let Some((len, message)) = rest.split_at_checked(4) else {
        return false;
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    message.get(..len) == Some(&[0x08, 0x01][..]) && len == 2
}

fn expected(status: StatusCode, expect: &[u16]) -> bool {
    if expect.is_empty() {
        (200..400).contains(&status.as_u16())
    } else {
        expect.contains(&status.as_u16())
    }
}

/// Active health checks: which targets the exchange may pick.
pub(crate) const POLICY: crate::policy::UpstreamPolicy = crate::policy::UpstreamPolicy {
    name: "health check",
    phase: crate::policy::Phase::Exchange,
    describe: |u| {
        let Some(h) = &u.health_check else {
            return Vec::new();
        };
        let what = match h.kind {
            HealthCheckKind::Tcp => "a TCP connect".to_owned(),
            HealthCheckKind::Http => format!("HTTP GET {}", h.path),
            HealthCheckKind::Grpc if h.service.is_empty() => "gRPC health check".to_owned(),
            HealthCheckKind::Grpc => format!("gRPC health check of {}", h.service),
        };
        vec![format!(
            "health check: {what} every {}, out after {} failures, back after {} passes",
            h.interval, h.unhealthy_after, h.healthy_after
        )]
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_health_messages() {
        assert_eq!(&check_request("")[..], b"\x00\x00\x00\x00\x00");
        assert_eq!(
            &check_request("svc")[..],
            b"\x00\x00\x00\x00\x05\x0a\x03svc"
        );
        assert!(serving(b"\x00\x00\x00\x00\x02\x08\x01"));
        assert!(!serving(b"\x00\x00\x00\x00\x02\x08\x02"), "NOT_SERVING");
        assert!(
            !serving(b"\x00\x00\x00\x00\x00"),
            "UNKNOWN (the default, omitted)"
        );
        assert!(!serving(b"\x01\x00\x00\x00\x02\x08\x01"), "compressed");
        assert!(!serving(b"\x00\x00"), "cut short");
    }

    #[test]
    fn expected_statuses() {
        assert!(expected(StatusCode::OK, &[]));
        assert!(expected(StatusCode::FOUND, &[]));
        assert!(!expected(StatusCode::SERVICE_UNAVAILABLE, &[]));
        assert!(expected(StatusCode::NO_CONTENT, &[204]));
        assert!(!expected(StatusCode::OK, &[204]));
    }
}
