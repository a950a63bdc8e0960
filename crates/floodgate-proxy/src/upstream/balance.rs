//! Choosing a target: the upstream's algorithm (floodgate-core's `balance`) over
//! per-target statistics. The statistics live with the target's connection pool, which the
//! pool registry keeps across reloads, so a reload does not forget what is in flight.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodgate_config::model::{Balance, Upstream};
use floodgate_core::Nanos;
use floodgate_core::balance::{
    Maglev, PeakEwma, SmoothWeighted, bounded_capacity, p2c, stable_hash,
};
use floodgate_core::outlier::{OutlierConfig, OutlierState};
use http::header::{self, HeaderMap, HeaderName};

use super::Target;

/// How long peak-EWMA takes to forget (its decay time constant), as in Finagle.
const EWMA_TAU: Duration = Duration::from_secs(10);

/// What the balancers know about one target.
#[derive(Debug)]
pub struct TargetStats {
    in_flight: AtomicU32,
    latency: Mutex<PeakEwma>,
    /// Set by the active health check (healthy until a check says otherwise).
    active_healthy: AtomicBool,
    /// Passive outlier detection's state, and the end of the current ejection (0: none),
    /// copied out so that balancing reads one atomic.
    outlier: Mutex<OutlierState>,
    ejected_until: AtomicU64,
}

impl Default for TargetStats {
    fn default() -> Self {
        TargetStats {
            in_flight: AtomicU32::new(0),
            latency: Mutex::default(),
            active_healthy: AtomicBool::new(true),
            outlier: Mutex::default(),
            ejected_until: AtomicU64::new(0),
        }
    }
}

/// One request in flight to a target; counted until dropped.
pub struct InFlight(Arc<TargetStats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl TargetStats {
    /// Counts a request in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Records the time the target took to answer (to the response head).
    pub fn observe(&self, rtt: Duration) {
        let now = crate::ratelimit::now();
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(nanos(rtt), now, nanos(EWMA_TAU));
    }

    /// Whether balancing may use the target at `now`: healthy by its checks and not ejected.
    pub fn eligible(&self, now: Nanos) -> bool {
        self.active_healthy.load(Ordering::Relaxed)
            && now >= self.ejected_until.load(Ordering::Relaxed)
    }

    /// Whether the target is ejected at `now`.
    pub fn ejected(&self, now: Nanos) -> bool {
        now < self.ejected_until.load(Ordering::Relaxed)
    }

    /// Sets the active health check's verdict.
    pub fn set_healthy(&self, healthy: bool) {
        self.active_healthy.store(healthy, Ordering::Relaxed);
    }

    /// Whether the active health check considers the target healthy.
    pub fn healthy(&self) -> bool {
        self.active_healthy.load(Ordering::Relaxed)
    }

    /// Records a live request's outcome; true when the outlier rules call for ejection.
    pub fn record_outcome(&self, cfg: &OutlierConfig, ok: bool, now: Nanos) -> bool {
        self.outlier
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(cfg, ok, now)
    }

    /// Ejects the target; returns for how long.
    pub fn eject(&self, cfg: &OutlierConfig, now: Nanos) -> Nanos {
        let time = self
            .outlier
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .eject(cfg, now);
        self.ejected_until
            .store(now.saturating_add(time), Ordering::Relaxed);
        time
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn ewma_cost(&self) -> f64 {
        let in_flight = self.in_flight();
        self.latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cost(in_flight)
    }
}

/// What a consistent-hash key is made of.
#[derive(Debug, Clone)]
pub enum HashOn {
    /// The client address.
    ClientIp,
    /// A request header's first value.
    Header(HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// A route path parameter.
    Path(String),
}

impl HashOn {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.split_once(':') {
            None if s == "client_ip" => HashOn::ClientIp,
            Some(("header", n)) => HashOn::Header(HeaderName::from_bytes(n.as_bytes()).ok()?),
            Some(("cookie", n)) => HashOn::Cookie(n.to_owned()),
            Some(("path", n)) => HashOn::Path(n.to_owned()),
            _ => return None,
        })
    }

    /// The key hash of a request (the empty key's when the part is missing).
    pub fn hash(&self, client_ip: IpAddr, headers: &HeaderMap, params: &[(String, String)]) -> u64 {
        match self {
            HashOn::ClientIp => stable_hash(client_ip.to_string().as_bytes()),
            HashOn::Header(name) => {
                stable_hash(headers.get(name).map_or(&b""[..], |v| v.as_bytes()))
            }
            HashOn::Cookie(name) => stable_hash(cookie(headers, name).unwrap_or("").as_bytes()),
            HashOn::Path(name) => stable_hash(
                params
                    .iter()
                    .find(|(k, _)| k == name)
                    .map_or("", |(_, v)| v.as_str())
                    .as_bytes(),
            ),
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` fields.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// An upstream's balancing algorithm, built once per snapshot.
pub enum Balancer {
    /// Smooth weighted round robin.
    RoundRobin {
        /// One cycle of picks.
        cycle: SmoothWeighted,
        /// Picks so far.
        next: AtomicUsize,
    },
    /// Power of two choices on requests in flight (weights ignored).
    LeastRequest,
    /// Power of two choices on peak-EWMA latency × (in flight + 1) (weights ignored).
    PeakEwma,
    /// Maglev on a key.
    ConsistentHash {
        /// The table.
        maglev: Maglev,
        /// The key.
        on: HashOn,
        /// Bounded load factor.
        bound: Option<f64>,
    },
}

impl Balancer {
    /// Builds the balancer of `cfg` for `targets` (already parsed, with their weights).
    pub fn build(cfg: &Upstream, targets: &[&Target], weights: &[u32]) -> Self {
        match cfg.balance {
            Balance::RoundRobin => Balancer::RoundRobin {
                cycle: SmoothWeighted::new(weights),
                next: AtomicUsize::new(fastrand::usize(..usize::MAX / 2)),
            },
            Balance::LeastRequest => Balancer::LeastRequest,
            Balance::PeakEwma => Balancer::PeakEwma,
            Balance::ConsistentHash => {
                let names: Vec<&str> = targets.iter().map(|t| &*t.address).collect();
                Balancer::ConsistentHash {
                    maglev: Maglev::new(&names, weights),
                    on: cfg
                        .hash_on
                        .as_deref()
                        .and_then(HashOn::parse)
                        .unwrap_or(HashOn::ClientIp),
                    bound: cfg.hash_bounded_load,
                }
            }
        }
    }

    /// The key a request needs for this balancer, if any.
    pub fn hash_on(&self) -> Option<&HashOn> {
        match self {
            Balancer::ConsistentHash { on, .. } => Some(on),
            _ => None,
        }
    }

    /// The index of the target for the next request (`hash`: its key hash, for
    /// consistent hashing), among the targets `eligible` accepts; `None` if there is none.
    pub fn pick(
        &self,
        targets: &[std::sync::Arc<Target>],
        hash: Option<u64>,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = targets.len();
        if n == 0 {
            return None;
        }
        match self {
            Balancer::RoundRobin { cycle, next } => (0..cycle.len())
                .filter_map(|_| cycle.pick(next.fetch_add(1, Ordering::Relaxed)))
                .find(|&i| eligible(i)),
            Balancer::LeastRequest => pick_p2c(n, eligible, |i| {
                f64::from(targets[i].pool.stats.in_flight())
            }),
            Balancer::PeakEwma => pick_p2c(n, eligible, |i| targets[i].pool.stats.ewma_cost()),
            Balancer::ConsistentHash { maglev, bound, .. } => {
                let h = hash.unwrap_or(0);
                let cap = match bound {
                    None => u32::MAX,
                    Some(c) => {
                        let total: u32 = targets.iter().map(|t| t.pool.stats.in_flight()).sum();
                        bounded_capacity(*c, total, n)
                    }
                };
                let own = maglev.lookup(h)?;
                if eligible(own) && targets[own].pool.stats.in_flight() < cap {
                    return Some(own);
                }
                maglev
                    .lookup_bounded(
                        h,
                        |i| {
                            if eligible(i) {
                                targets[i].pool.stats.in_flight()
                            } else {
                                u32::MAX
                            }
                        },
                        cap,
                    )
                    .filter(|&i| eligible(i))
                    .or_else(|| (0..n).find(|&i| eligible(i)))
            }
        }
    }
}

/// Power of two choices among the eligible targets.
fn pick_p2c(
    n: usize,
    eligible: &dyn Fn(usize) -> bool,
    cost: impl Fn(usize) -> f64,
) -> Option<usize> {
    if (0..n).all(eligible) {
        return Some(p2c(n, fastrand::usize(..n), fastrand::usize(..n), cost));
    }
    let ok: Vec<usize> = (0..n).filter(|&i| eligible(i)).collect();
    if ok.is_empty() {
        return None;
    }
    let m = ok.len();
    let i = p2c(m, fastrand::usize(..m), fastrand::usize(..m), |k| {
        cost(ok[k])
    });
    Some(ok[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; session=abc; b=2".parse().unwrap());
        h.append(header::COOKIE, "late=x".parse().unwrap());
        assert_eq!(cookie(&h, "session"), Some("abc"));
        assert_eq!(cookie(&h, "late"), Some("x"));
        assert_eq!(cookie(&h, "missing"), None);
    }
}
