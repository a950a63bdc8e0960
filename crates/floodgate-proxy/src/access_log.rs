//! The access log: one JSON line per request, written by a dedicated thread so the request
//! path only formats a line and hands it over. The hand-over queue is bounded: when the
//! writer falls behind (a blocked disk or pipe), lines are dropped and counted rather than
//! slowing traffic.

use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::SystemTime;

use serde::Serialize;

use crate::metrics::Metrics;

const QUEUE: usize = 16 * 1024;

/// One request's log line.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    /// When the request arrived, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The request id.
    pub request_id: &'a str,
    /// The client address.
    pub client: &'a str,
    /// The listener's name.
    pub listener: &'a str,
    /// The route's name, or null when none matched.
    pub route: Option<&'a str>,
    /// The method.
    pub method: &'a str,
    /// The path and query as received.
    pub path: &'a str,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: &'a str,
    /// The status sent.
    pub status: u16,
    /// Milliseconds from request head to response end.
    pub duration_ms: f64,
    /// The upstream's name, if proxied.
    pub upstream: Option<&'a str>,
    /// The target address, if proxied.
    pub target: Option<&'a str>,
    /// Response body bytes sent.
    pub bytes_sent: u64,
    /// Why the gateway answered itself, if it did (also when a fallback answered instead).
    pub error: Option<&'a str>,
    /// The authenticated consumer, if the route requires authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<&'a str>,
    /// The verified client certificate's identity (its first DNS name), on mTLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client: Option<&'a str>,
    /// The condition a route's fallback answered, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<&'static str>,
    /// What the HTTP cache did: `hit`, `stale` (served stale, refreshed in the background),
    /// `miss` (forwarded) or `refresh` (a background refresh); absent on routes without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
    /// Idempotency keys: `first` (forwarded, its response kept), `replayed` (answered with
    /// the kept response) or `refused` (409, 422 or 400); absent without a key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<&'static str>,
    /// The rate limit that refused the request, or (dry run) would have; absent if none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<&'a str>,
    /// Present and true when `rate_limit` is a dry run that refused nothing.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// How a WebSocket tunnel the request opened closed (`closed`, `error`,
    /// `idle-timeout`, `max-lifetime`); the line is written then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<&'static str>,
}

/// Sends lines to the writer thread.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<SyncSender<Vec<u8>>>,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// A log that writes nothing.
    pub fn disabled(metrics: Arc<Metrics>) -> Self {
        AccessLog { tx: None, metrics }
    }

    /// Starts the writer thread for `output` (`stdout`, `stderr`, or a file to append to).
    pub fn start(output: &str, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let sink: Box<dyn Write + Send> = match output {
            "stdout" => Box::new(std::io::stdout()),
            "stderr" => Box::new(std::io::stderr()),
            path => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(rx, sink))?;
        Ok(AccessLog {
            tx: Some(tx),
            metrics,
        })
    }

    /// Whether lines are written at all (callers skip formatting when not).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues one record.
    pub fn log(&self, record: &Record<'_>) {
        let Some(tx) = &self.tx else { return };
        let mut line = Vec::with_capacity(320);
        if serde_json::to_writer(&mut line, record).is_err() {
            return;
        }
        line.push(b'\n');
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.access_log_dropped()
            }
        }
    }
}

fn write_loop(rx: Receiver<Vec<u8>>, sink: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, sink);
    while let Ok(line) = rx.recv() {
        let mut ok = out.write_all(&line).is_ok();
        // Drain what is already queued, then flush once.
        while let Ok(more) = rx.try_recv() {
            ok &= out.write_all(&more).is_ok();
        }
        ok &= out.flush().is_ok();
        if !ok {
            eprintln!("floodgate: access log write failed");
        }
    }
}

/// Formats a time as RFC 3339 UTC with milliseconds (`2026-11-28T15:04:05.123Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_utc_times() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_878_245_123);
        assert_eq!(rfc3339(t), "2026-11-28T15:04:05.123Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
