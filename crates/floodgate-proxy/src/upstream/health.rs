//! Active health checks: one task per (upstream, target, check definition), probing on an
//! interval and flipping the target's healthy flag after `healthy_after` passes or
//! `unhealthy_after` failures in a row. The registry keeps the tasks across reloads that
//! do not change them, and stops the ones a reload removes. A target starts healthy, so
//! adding checks never takes a working upstream out of service.
//!
//! Kinds: `http` (GET `path`, an expected status) and `tcp` (a connection opens); a gRPC
//! kind (grpc.health.v1) belongs here when gRPC support arrives.

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
    if check.kind == HealthCheckKind::Tcp {
        return true;
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
    fn expected_statuses() {
        assert!(expected(StatusCode::OK, &[]));
        assert!(expected(StatusCode::FOUND, &[]));
        assert!(!expected(StatusCode::SERVICE_UNAVAILABLE, &[]));
        assert!(expected(StatusCode::NO_CONTENT, &[204]));
        assert!(!expected(StatusCode::OK, &[204]));
    }
}
