//! Bulkheads: at most `limit` requests in flight through a route or an upstream, a bounded
//! FIFO queue of waiters with a timeout, and refusal (503) beyond. The limit is fixed, or
//! follows measured latency through [`floodgate_core::concurrency::GradientLimit`].
//!
//! A waiter is handed its place directly by the request that releases it, so a place
//! never goes to a request that arrived later while others wait, unless that request is
//! more critical: places go to the most critical waiter first (then in arrival order).
//! Under overload the least critical go first (priority load shedding): a `sheddable`
//! request never waits, and a more critical arrival at a full queue pushes out the least
//! critical waiter, which is refused at once. (Written here rather than
//! on `tokio::sync::Semaphore` because the adaptive limit moves while places are held.)

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floodgate_config::model::Concurrency;
use floodgate_config::resilience::Criticality;
use floodgate_core::concurrency::{GradientConfig, GradientLimit};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

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
    waiters: VecDeque<Waiter>,
}

struct Waiter {
    tx: oneshot::Sender<()>,
    criticality: Criticality,
}

/// Why a request got no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue was full.
    QueueFull,
    /// The wait timed out.
    TimedOut,
    /// Shed for its criticality: `sheddable` at a full bulkhead, or pushed out of the
    /// queue by a more critical request.
    Shed,
}

/// A place in flight; released (and its latency recorded) when dropped.
pub struct Permit {
    admission: Arc<Admission>,
    started: Instant,
}

impl Admission {
    /// Builds a bulkhead from config.
    pub fn new(c: &Concurrency, metrics: BulkheadMetrics) -> Self {
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
        Admission {
            state: Mutex::new(State {
                limit,
                in_flight: 0,
                waiters: VecDeque::new(),
            }),
            adaptive: adaptive.map(Mutex::new),
            queue: usize::try_from(c.queue).unwrap_or(usize::MAX),
            queue_timeout: c.queue_timeout.0,
            metrics,
        }
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

    fn shed(&self, c: Criticality) -> Refused {
        self.metrics.rejected.inc();
        self.metrics.shed[c as usize].inc();
        Refused::Shed
    }

    /// Takes a place for a request of `criticality`, waiting in the queue if allowed.
    pub async fn acquire(self: &Arc<Self>, criticality: Criticality) -> Result<Permit, Refused> {
        let rx = {
            let mut s = self.lock();
            if s.in_flight < s.limit {
                s.in_flight += 1;
                self.metrics.in_flight.set(i64::from(s.in_flight));
                return Ok(self.permit());
            }
            if criticality == Criticality::Sheddable {
                return Err(self.shed(criticality));
            }
            s.waiters.retain(|w| !w.tx.is_closed());
            if s.waiters.len() >= self.queue {
                // Push out the least critical waiter below this request (the latest of
                // them), if there is one.
                let lowest = s
                    .waiters
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| w.criticality < criticality)
                    .min_by_key(|&(i, w)| (w.criticality, std::cmp::Reverse(i)))
                    .map(|(i, _)| i);
                match lowest.and_then(|i| s.waiters.remove(i)) {
                    // Dropping its sender wakes it with the news.
                    Some(pushed_out) => drop(pushed_out),
                    None => {
                        self.metrics.rejected.inc();
                        return Err(Refused::QueueFull);
                    }
                }
            }
            let (tx, rx) = oneshot::channel();
            s.waiters.push_back(Waiter { tx, criticality });
            self.metrics.queued.set(s.waiters.len() as i64);
            rx
        };
        let mut rx = rx;
        match tokio::time::timeout(self.queue_timeout, &mut rx).await {
            Ok(Ok(())) => Ok(self.permit()),
            Ok(Err(_)) => Err(self.shed(criticality)),
            Err(_) => {
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
        // Hand the place to the most critical live waiter (the first of them), unless the
        // limit shrank below what is in flight.
        if s.in_flight <= s.limit {
            loop {
                let best = s
                    .waiters
                    .iter()
                    .enumerate()
                    .max_by_key(|&(i, w)| (w.criticality, std::cmp::Reverse(i)))
                    .map(|(i, _)| i);
                let Some(w) = best.and_then(|i| s.waiters.remove(i)) else {
                    break;
                };
                self.metrics.queued.set(s.waiters.len() as i64);
                if w.tx.send(()).is_ok() {
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
pub struct AdmissionRegistry(crate::kept::Kept<Admission>);

impl AdmissionRegistry {
    /// The bulkhead for `scope`/`name` with definition `c`, made if new.
    pub fn get_or_build(
        &self,
        scope: &'static str,
        name: &str,
        c: &Concurrency,
        metrics: &BulkheadFamilies,
    ) -> Arc<Admission> {
        self.0.get_or_build(scope, name, c, || {
            Admission::new(c, metrics.series(scope, name))
        })
    }

    /// Drops the bulkheads the snapshot just built does not use.
    pub fn retain_built(&self) {
        self.0.retain_built();
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Criticality: what is shed first under overload, at admission.
pub(crate) const CRITICALITY_POLICY: crate::policy::RoutePolicy = crate::policy::RoutePolicy {
    name: "criticality",
    phase: crate::policy::Phase::Admission,
    describe: |r| match r.criticality {
        Criticality::Normal => Vec::new(),
        c => vec![format!("criticality: {}", c.as_str())],
    },
};

/// The route's bulkhead, at admission.
pub(crate) const ROUTE_POLICY: crate::policy::RoutePolicy = crate::policy::RoutePolicy {
    name: "route bulkhead",
    phase: crate::policy::Phase::Admission,
    describe: |r| r.concurrency.iter().map(|c| describe("route", c)).collect(),
};

/// The upstream's bulkhead, at admission (entered at the exchange).
pub(crate) const UPSTREAM_POLICY: crate::policy::UpstreamPolicy = crate::policy::UpstreamPolicy {
    name: "upstream bulkhead",
    phase: crate::policy::Phase::Admission,
    describe: |u| {
        u.concurrency
            .iter()
            .map(|c| describe("upstream", c))
            .collect()
    },
};

/// A bulkhead on `what`, in a line.
fn describe(what: &str, c: &Concurrency) -> String {
    match (&c.max_in_flight, &c.adaptive) {
        (Some(n), _) => format!(
            "{what} bulkhead: {n} in flight, queue {} for {}",
            c.queue, c.queue_timeout
        ),
        (None, Some(a)) => format!(
            "{what} bulkhead: adaptive {}..{} (starts at {}), queue {} for {}",
            a.min_limit, a.max_limit, a.initial_limit, c.queue, c.queue_timeout
        ),
        (None, None) => format!("{what} bulkhead"),
    }
}

/// Bulkheads' metric families, by scope and name.
pub struct BulkheadFamilies {
    limit: Family<BulkheadLabel, Gauge>,
    in_flight: Family<BulkheadLabel, Gauge>,
    rejected: Family<BulkheadLabel, Counter>,
    queued: Family<BulkheadLabel, Gauge>,
    shed: Family<ShedLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BulkheadLabel {
    /// `route` or `upstream`.
    scope: &'static str,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabel {
    scope: &'static str,
    name: String,
    criticality: &'static str,
}

/// A bulkhead's series.
#[derive(Clone)]
pub struct BulkheadMetrics {
    /// Its current limit.
    pub limit: Gauge,
    /// Requests in flight.
    pub in_flight: Gauge,
    /// Requests refused (queue full or wait timed out).
    pub rejected: Counter,
    /// Requests shed, by criticality (sheddable, normal, high, critical).
    pub shed: [Counter; 4],
    /// Requests waiting for a place.
    pub queued: Gauge,
}

impl BulkheadFamilies {
    /// Registers the families.
    pub(crate) fn register(reg: &mut Registry) -> Self {
        let m = BulkheadFamilies {
            limit: Family::default(),
            in_flight: Family::default(),
            rejected: Family::default(),
            queued: Family::default(),
            shed: Family::default(),
        };
        reg.register(
            "concurrency_limit",
            "Current limit of a bulkhead (fixed or adaptive), by scope and name",
            m.limit.clone(),
        );
        reg.register(
            "concurrency_in_flight",
            "Requests in flight through a bulkhead",
            m.in_flight.clone(),
        );
        reg.register(
            "concurrency_rejected",
            "Requests refused by a bulkhead (queue full or wait timed out)",
            m.rejected.clone(),
        );
        reg.register(
            "concurrency_queued",
            "Requests waiting for a place in a bulkhead",
            m.queued.clone(),
        );
        reg.register(
            "load_shed",
            "Requests refused or pushed out of a bulkhead queue by criticality",
            m.shed.clone(),
        );
        m
    }

    /// The series of one bulkhead; `scope` is `route` or `upstream`.
    pub fn series(&self, scope: &'static str, name: &str) -> BulkheadMetrics {
        let label = BulkheadLabel {
            scope,
            name: name.to_owned(),
        };
        BulkheadMetrics {
            limit: self.limit.get_or_create(&label).clone(),
            in_flight: self.in_flight.get_or_create(&label).clone(),
            rejected: self.rejected.get_or_create(&label).clone(),
            queued: self.queued.get_or_create(&label).clone(),
            shed: ["sheddable", "normal", "high", "critical"].map(|criticality| {
                self.shed
                    .get_or_create(&ShedLabel {
                        scope,
                        name: name.to_owned(),
                        criticality,
                    })
                    .clone()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodgate_config::value::Duration as CfgDuration;

    fn bulkhead(max: u32, queue: u32, timeout_ms: u64) -> Arc<Admission> {
        let metrics = crate::metrics::Metrics::new()
            .bulkheads
            .series("route", "t");
        Arc::new(Admission::new(
            &Concurrency {
                max_in_flight: Some(max),
                adaptive: None,
                queue,
                queue_timeout: CfgDuration(Duration::from_millis(timeout_ms)),
            },
            metrics,
        ))
    }

    #[tokio::test]
    async fn places_queue_and_refusals() {
        let b = bulkhead(2, 1, 5_000);
        let p1 = b.acquire(Criticality::Normal).await.unwrap();
        let _p2 = b.acquire(Criticality::Normal).await.unwrap();
        // Third waits in the queue, fourth is refused at once.
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.acquire(Criticality::Normal).await.map(|_| ()) });
        while b.lock().waiters.is_empty() {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            b.acquire(Criticality::Normal).await.err(),
            Some(Refused::QueueFull)
        );
        drop(p1);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        // The waiter's permit was dropped at the end of its task: one in flight remains.
        assert_eq!(b.lock().in_flight, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_times_out() {
        let b = bulkhead(1, 4, 100);
        let _p = b.acquire(Criticality::Normal).await.unwrap();
        assert_eq!(
            b.acquire(Criticality::Normal).await.err(),
            Some(Refused::TimedOut)
        );
        assert_eq!(b.lock().in_flight, 1);
    }

    #[tokio::test]
    async fn the_least_critical_are_shed_first() {
        let b = bulkhead(1, 1, 5_000);
        let p = b.acquire(Criticality::Critical).await.unwrap();
        // Full: a sheddable request does not wait.
        assert_eq!(
            b.acquire(Criticality::Sheddable).await.err(),
            Some(Refused::Shed)
        );
        let b2 = b.clone();
        let normal = tokio::spawn(async move { b2.acquire(Criticality::Normal).await.map(|_| ()) });
        while b.lock().waiters.is_empty() {
            tokio::task::yield_now().await;
        }
        // The queue (one place) is full; a high-criticality request pushes the normal one out.
        let b3 = b.clone();
        let high = tokio::spawn(async move { b3.acquire(Criticality::High).await.map(|_| ()) });
        assert_eq!(normal.await.unwrap(), Err(Refused::Shed));
        // Another normal request finds nobody less critical to push out.
        assert_eq!(
            b.acquire(Criticality::Normal).await.err(),
            Some(Refused::QueueFull)
        );
        drop(p);
        assert_eq!(high.await.unwrap(), Ok(()));
    }
}
