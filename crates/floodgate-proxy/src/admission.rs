//! Bulkheads: at most `limit` requests in flight through a route or an upstream, a bounded
//! FIFO queue of waiters with a timeout, and refusal (503) beyond. The limit is fixed, or
//! follows measured latency through [`floodgate_core::concurrency::GradientLimit`].
//!
//! A waiter is handed its place directly by the request that releases it, so a place
//! never goes to a request that arrived later while others wait. (Written here rather than
//! on `tokio::sync::Semaphore` because the adaptive limit moves while places are held.)

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floodgate_config::model::Concurrency;
use floodgate_core::concurrency::{GradientConfig, GradientLimit};
use tokio::sync::oneshot;

use crate::metrics::BulkheadMetrics;

/// One bulkhead.
pub struct Admission {
    state: Mutex<State>,
    adaptive: Option<Mutex<GradientLimit>>,
    queue: usize,
    queue_timeout: Duration,
    metrics: BulkheadMetrics,
}

struct State {
    limit: u32,
    in_flight: u32,
    waiters: VecDeque<oneshot::Sender<()>>,
}

/// Why a request got no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue was full.
    QueueFull,
    /// The wait timed out.
    TimedOut,
}

/// A place in flight; released (and its latency recorded) when dropped.
pub struct Permit {
    admission: Arc<Admission>,
    started: Instant,
}

impl Admission {
    /// Builds a bulkhead from config.
    pub fn new(c: &Concurrency, metrics: BulkheadMetrics) -> Arc<Self> {
        let adaptive = c.adaptive.as_ref().map(|a| {
            GradientLimit::new(GradientConfig {
                initial_limit: a.initial_limit,
                min_limit: a.min_limit,
                max_limit: a.max_limit,
                window: nanos(a.window.0),
                min_samples: 10,
                tolerance: a.tolerance.0,
                smoothing: 0.2,
                min_rtt_refresh: nanos(a.min_rtt_refresh.0),
            })
        });
        let limit = adaptive
            .as_ref()
            .map_or(c.max_in_flight.unwrap_or(1), GradientLimit::limit);
        metrics.limit.set(i64::from(limit));
        Arc::new(Admission {
            state: Mutex::new(State {
                limit,
                in_flight: 0,
                waiters: VecDeque::new(),
            }),
            adaptive: adaptive.map(Mutex::new),
            queue: usize::try_from(c.queue).unwrap_or(usize::MAX),
            queue_timeout: c.queue_timeout.0,
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn permit(self: &Arc<Self>) -> Permit {
        Permit {
            admission: self.clone(),
            started: Instant::now(),
        }
    }

    /// Takes a place, waiting in the queue if allowed.
    pub async fn acquire(self: &Arc<Self>) -> Result<Permit, Refused> {
        let rx = {
            let mut s = self.lock();
            if s.in_flight < s.limit {
                s.in_flight += 1;
                self.metrics.in_flight.set(i64::from(s.in_flight));
                return Ok(self.permit());
            }
            s.waiters.retain(|w| !w.is_closed());
            if s.waiters.len() >= self.queue {
                self.metrics.rejected.inc();
                return Err(Refused::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            s.waiters.push_back(tx);
            rx
        };
        let mut rx = rx;
        match tokio::time::timeout(self.queue_timeout, &mut rx).await {
            Ok(Ok(())) => Ok(self.permit()),
            _ => {
                // A place may have been handed over just as the wait ended: take it.
                if rx.try_recv().is_ok() {
                    return Ok(self.permit());
                }
                self.metrics.rejected.inc();
                Err(Refused::TimedOut)
            }
        }
    }

    fn release(&self, latency: Duration) {
        if let Some(adaptive) = &self.adaptive {
            let mut g = adaptive.lock().unwrap_or_else(|p| p.into_inner());
            let now = crate::ratelimit::now();
            if g.on_sample(nanos(latency), now) {
                let limit = g.limit();
                drop(g);
                self.metrics.limit.set(i64::from(limit));
                self.lock().limit = limit;
            }
        }
        let mut s = self.lock();
        // Hand the place to the first live waiter, unless the limit shrank below what is
        // in flight.
        if s.in_flight <= s.limit {
            while let Some(w) = s.waiters.pop_front() {
                if w.send(()).is_ok() {
                    return;
                }
            }
        }
        s.in_flight = s.in_flight.saturating_sub(1);
        self.metrics.in_flight.set(i64::from(s.in_flight));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.release(self.started.elapsed());
    }
}

/// Bulkheads that outlive snapshots, so a reload neither resets in-flight counts nor
/// doubles the places; keyed by scope, name and definition.
#[derive(Default)]
pub struct AdmissionRegistry {
    entries: Mutex<std::collections::HashMap<String, Arc<Admission>>>,
    building: Mutex<std::collections::HashSet<String>>,
}

impl AdmissionRegistry {
    /// The bulkhead for `scope`/`name` with definition `c`, made if new.
    pub fn get_or_build(
        &self,
        scope: &'static str,
        name: &str,
        c: &Concurrency,
        metrics: &crate::metrics::Metrics,
    ) -> Arc<Admission> {
        let identity = format!("{scope}\u{0}{name}\u{0}{c:?}");
        self.building
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(identity.clone());
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(identity)
            .or_insert_with(|| Admission::new(c, metrics.bulkhead(scope, name)))
            .clone()
    }

    /// Drops the bulkheads the snapshot just built does not use.
    pub fn retain_built(&self) {
        let used = std::mem::take(&mut *self.building.lock().unwrap_or_else(|p| p.into_inner()));
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| used.contains(k));
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodgate_config::value::Duration as CfgDuration;

    fn bulkhead(max: u32, queue: u32, timeout_ms: u64) -> Arc<Admission> {
        let metrics = crate::metrics::Metrics::new().bulkhead("route", "t");
        Admission::new(
            &Concurrency {
                max_in_flight: Some(max),
                adaptive: None,
                queue,
                queue_timeout: CfgDuration(Duration::from_millis(timeout_ms)),
            },
            metrics,
        )
    }

    #[tokio::test]
    async fn places_queue_and_refusals() {
        let b = bulkhead(2, 1, 5_000);
        let p1 = b.acquire().await.unwrap();
        let _p2 = b.acquire().await.unwrap();
        // Third waits in the queue, fourth is refused at once.
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.acquire().await.map(|_| ()) });
        while b.lock().waiters.is_empty() {
            tokio::task::yield_now().await;
        }
        assert_eq!(b.acquire().await.err(), Some(Refused::QueueFull));
        drop(p1);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        // The waiter's permit was dropped at the end of its task: one in flight remains.
        assert_eq!(b.lock().in_flight, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_times_out() {
        let b = bulkhead(1, 4, 100);
        let _p = b.acquire().await.unwrap();
        assert_eq!(b.acquire().await.err(), Some(Refused::TimedOut));
        assert_eq!(b.lock().in_flight, 1);
    }
}
