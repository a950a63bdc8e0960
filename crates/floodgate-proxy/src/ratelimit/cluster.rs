//! Cluster-wide rate limits in Redis. Each decision is one atomic server-side script
//! (EVALSHA, loaded on first use) that reads the state, decides and writes it back, with
//! Redis's own clock (`TIME`): no read-then-write race between nodes, and no dependence on
//! the nodes' clocks agreeing.
//!
//! Scripts work in microseconds of Redis time with Lua's doubles. Values are written with
//! explicit formats, since Redis turns Lua numbers into strings with only 14 digits.
//!
//! Nodes announce themselves in a sorted set (`<prefix>nodes`, scored by Redis time) every
//! heartbeat; the number of live nodes is what a fail-open limit divides by when Redis is
//! unavailable. After a failed call, Redis is left alone for a short back-off (the local
//! fallback decides meanwhile), so an outage costs each request nothing more than a check.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use floodgate_config::model::{Algorithm, Cluster};
use floodgate_core::ratelimit::{Decision, Verdict};
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How long Redis is left alone after a failed call.
const BACKOFF: Duration = Duration::from_millis(500);

/// `outage_since` while Redis answers.
const UP: u64 = u64::MAX;

/// How often a continuing outage is logged again.
const OUTAGE_REMINDER: Duration = Duration::from_secs(30);

const TIME: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local count, period, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function fmt(x) return string.format('%.17g', x) end
";

const TOKEN_BUCKET: &str = r"
local per = period / count
local v = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(v[1]), tonumber(v[2])
if tokens == nil or ts == nil then tokens = burst; ts = now end
if now > ts then tokens = math.min(burst, tokens + (now - ts) / per) else now = ts end
if tokens + 1e-9 >= cost then
  tokens = math.max(0, tokens - cost)
  redis.call('HSET', KEYS[1], 'tokens', fmt(tokens), 'ts', fmt(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * per / 1000) + 1000)
  return {1, math.floor(tokens + 1e-9), math.ceil((burst - tokens) * per), 0}
end
return {0, math.floor(tokens + 1e-9), math.ceil((burst - tokens) * per), math.ceil((cost - tokens) * per)}
";

const GCRA: &str = r"
local per = period / count
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + cost * per
local ahead = new_tat - now
local limit = burst * per
if ahead > limit + 1e-6 then
  return {0, math.floor((limit - (tat - now)) / per + 1e-9), math.ceil(tat - now), math.ceil(ahead - limit)}
end
redis.call('SET', KEYS[1], fmt(new_tat), 'PX', math.ceil(ahead / 1000) + 1000)
return {1, math.floor((limit - ahead) / per + 1e-9), math.ceil(ahead), 0}
";

const FIXED_WINDOW: &str = r"
local idx = math.floor(now / period)
local k = KEYS[1] .. ':' .. string.format('%d', idx)
local used = tonumber(redis.call('GET', k)) or 0
local reset = (idx + 1) * period - now
if used + cost > count then
  return {0, math.max(count - used, 0), reset, reset}
end
redis.call('INCRBY', k, cost)
redis.call('PEXPIRE', k, math.ceil(period / 1000) + 1000)
return {1, count - used - cost, reset, 0}
";

const SLIDING_WINDOW: &str = r"
local idx = math.floor(now / period)
local ck = KEYS[1] .. ':' .. string.format('%d', idx)
local pk = KEYS[1] .. ':' .. string.format('%d', idx - 1)
local cur = tonumber(redis.call('GET', ck)) or 0
local prev = tonumber(redis.call('GET', pk)) or 0
local e = now - idx * period
local est = prev * (period - e) / period + cur
local reset = 0
if cur + cost > 0 then reset = 2 * period - e elseif prev > 0 then reset = period - e end
if est + cost > count + 1e-9 then
  local retry
  local room = count - cur - cost
  if room >= 0 and prev > 0 and period - room * period / prev > e then
    retry = math.ceil(period - room * period / prev - e)
  elseif cur > 0 then
    retry = (period - e) + math.max(0, math.ceil(period - (count - cost) * period / cur))
  else
    retry = period - e
  end
  return {0, 0, reset, retry}
end
redis.call('INCRBY', ck, cost)
redis.call('PEXPIRE', ck, math.ceil(2 * period / 1000) + 1000)
return {1, math.max(0, math.floor(count - est - cost + 1e-9)), reset, 0}
";

const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return redis.call('ZCARD', KEYS[1])
";

/// Parameters of one cluster decision.
#[derive(Debug, Clone, Copy)]
pub struct ClusterParams {
    /// Events per period.
    pub count: u64,
    /// The period.
    pub period: Duration,
    /// Burst (token bucket, GCRA).
    pub burst: u64,
}

/// A connection to the cluster's Redis, shared by every cluster limit.
pub struct ClusterClient {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    timeout: Duration,
    heartbeat: Duration,
    prefix: String,
    node_id: String,
    live_nodes: AtomicU32,
    /// Redis is not asked before this (nanoseconds since `epoch`).
    down_until: AtomicU64,
    /// When the current outage began (nanoseconds after `epoch`), or [`UP`].
    outage_since: AtomicU64,
    /// When the outage was last logged.
    outage_logged: AtomicU64,
    epoch: Instant,
    scripts: Scripts,
    metrics: Arc<ClusterMetrics>,
}

struct Scripts {
    token_bucket: Script,
    gcra: Script,
    fixed_window: Script,
    sliding_window: Script,
    heartbeat: Script,
}

impl ClusterClient {
    /// Prepares the client (no I/O: the connection is made on first use).
    pub fn new(cfg: &Cluster, metrics: Arc<ClusterMetrics>) -> Result<Self, String> {
        let client = redis::Client::open(cfg.redis.url.as_str())
            .map_err(|e| format!("cluster.redis.url: {e}"))?;
        let node_id = cfg.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "node".into());
            format!("{host}:{}", std::process::id())
        });
        let script = |body: &str| Script::new(&format!("{TIME}{body}"));
        Ok(ClusterClient {
            client,
            conn: OnceCell::new(),
            timeout: cfg.redis.timeout.0,
            heartbeat: cfg.heartbeat.0,
            prefix: cfg.redis.key_prefix.clone(),
            node_id,
            live_nodes: AtomicU32::new(1),
            down_until: AtomicU64::new(0),
            outage_since: AtomicU64::new(UP),
            outage_logged: AtomicU64::new(0),
            epoch: Instant::now(),
            scripts: Scripts {
                token_bucket: script(TOKEN_BUCKET),
                gcra: script(GCRA),
                fixed_window: script(FIXED_WINDOW),
                sliding_window: script(SLIDING_WINDOW),
                heartbeat: Script::new(HEARTBEAT),
            },
            metrics,
        })
    }

    /// The prefix of every key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// This node's name in the cluster.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// How long a Redis call may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The Redis client (for connections of their own, such as subscriptions).
    pub fn redis_client(&self) -> &redis::Client {
        &self.client
    }

    /// Live nodes last counted (at least 1).
    pub fn live_nodes(&self) -> u32 {
        self.live_nodes.load(Ordering::Relaxed).max(1)
    }

    fn elapsed(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether Redis is worth asking now (not within a back-off after a failure).
    pub fn available(&self) -> bool {
        self.elapsed() >= self.down_until.load(Ordering::Relaxed)
    }

    /// The shared, self-reconnecting connection.
    pub(crate) async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        self.conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(100))))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            })
            .await
            .cloned()
    }

    /// Runs `pipe` within the timeout, unless within a back-off; `None` on any failure
    /// (which starts the back-off).
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Option<T> {
        if !self.available() {
            return None;
        }
        let call = async {
            let mut conn = self.connection().await?;
            pipe.query_async::<T>(&mut conn).await
        };
        self.settle(tokio::time::timeout(self.timeout, call).await)
    }

    /// A call's value, or `None` after starting the back-off for its failure.
    fn settle<T>(
        &self,
        result: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Option<T> {
        match result {
            Ok(Ok(v)) => {
                self.answered();
                Some(v)
            }
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                None
            }
            Err(_) => {
                self.failed("timed out");
                None
            }
        }
    }

    /// Runs `script` with one key and four numbers, within the timeout; a failure starts
    /// the back-off.
    async fn run(&self, script: &Script, key: &[u8], args: [u64; 4]) -> Option<Vec<i64>> {
        let started = Instant::now();
        let call = async {
            let mut conn = self.connection().await?;
            let mut inv = script.key(key);
            for a in args {
                inv.arg(a);
            }
            inv.invoke_async::<Vec<i64>>(&mut conn).await
        };
        let result = tokio::time::timeout(self.timeout, call).await;
        self.metrics
            .redis_latency
            .observe(started.elapsed().as_secs_f64());
        self.settle(result)
    }

    /// Starts a back-off after a failed call. The outage is logged when it begins and
    /// every [`OUTAGE_REMINDER`] while it lasts, not at every back-off.
    fn failed(&self, why: &str) {
        self.metrics.redis_errors.inc();
        let now = self.elapsed();
        let until = now + u64::try_from(BACKOFF.as_nanos()).unwrap_or(0);
        self.down_until.store(until, Ordering::Relaxed);
        let began =
            self.outage_since
                .compare_exchange(UP, now, Ordering::AcqRel, Ordering::Acquire);
        match began {
            Ok(_) => {
                self.outage_logged.store(now, Ordering::Relaxed);
                tracing::warn!(
                    error = why,
                    "redis unavailable; cluster limits, the shared cache and shared idempotency keys fall back to this node"
                );
            }
            Err(since) => {
                let logged = self.outage_logged.load(Ordering::Relaxed);
                let reminder = u64::try_from(OUTAGE_REMINDER.as_nanos()).unwrap_or(u64::MAX);
                if now.saturating_sub(logged) >= reminder
                    && self
                        .outage_logged
                        .compare_exchange(logged, now, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(
                        error = why,
                        down_for_s = now.saturating_sub(since) / 1_000_000_000,
                        "redis still unavailable"
                    );
                }
            }
        }
    }

    /// A call succeeded: ends an outage, logging how long it lasted.
    fn answered(&self) {
        if self.outage_since.load(Ordering::Relaxed) == UP {
            return;
        }
        let since = self.outage_since.swap(UP, Ordering::AcqRel);
        if since != UP {
            let down_for = Duration::from_nanos(self.elapsed().saturating_sub(since));
            tracing::info!(
                down_for_ms = u64::try_from(down_for.as_millis()).unwrap_or(u64::MAX),
                "redis available again; cluster state is shared again"
            );
        }
    }

    /// One decision for `key` (already prefixed); `None` when Redis could not answer.
    pub async fn decide(
        &self,
        algorithm: Algorithm,
        key: &[u8],
        p: ClusterParams,
    ) -> Option<Decision> {
        let script = match algorithm {
            Algorithm::TokenBucket => &self.scripts.token_bucket,
            Algorithm::Gcra => &self.scripts.gcra,
            Algorithm::FixedWindow => &self.scripts.fixed_window,
            Algorithm::SlidingWindow => &self.scripts.sliding_window,
            // Validation refuses cluster scope for the others.
            Algorithm::LeakyBucket | Algorithm::SlidingLog => return None,
        };
        let period_us = u64::try_from(p.period.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let v = self
            .run(script, key, [p.count.max(1), period_us, p.burst.max(1), 1])
            .await?;
        let [allowed, remaining, reset_us, retry_us] = v[..] else {
            return None;
        };
        let us = |x: i64| u64::try_from(x.max(0)).unwrap_or(0).saturating_mul(1000);
        Some(Decision {
            verdict: if allowed == 1 {
                Verdict::Allow
            } else {
                Verdict::Reject {
                    retry_after: us(retry_us),
                }
            },
            remaining: u64::try_from(remaining.max(0)).unwrap_or(0),
            reset: us(reset_us),
        })
    }

    /// Announces this node every heartbeat and counts the live ones; runs until the
    /// process ends.
    pub async fn heartbeat_loop(self: Arc<Self>) {
        let key = format!("{}nodes", self.prefix);
        let window_ms = u64::try_from(self.heartbeat.as_millis() * 3).unwrap_or(u64::MAX);
        let mut tick = tokio::time::interval(self.heartbeat);
        loop {
            tick.tick().await;
            let call = async {
                let mut conn = self.connection().await?;
                self.scripts
                    .heartbeat
                    .key(&key)
                    .arg(&self.node_id)
                    .arg(window_ms)
                    .invoke_async::<u32>(&mut conn)
                    .await
            };
            match tokio::time::timeout(self.timeout.max(Duration::from_millis(500)), call).await {
                Ok(Ok(n)) => {
                    self.live_nodes.store(n.max(1), Ordering::Relaxed);
                    self.metrics.cluster_nodes.set(i64::from(n));
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "cluster heartbeat failed"),
                Err(_) => tracing::debug!("cluster heartbeat timed out"),
            }
        }
    }
}

/// The cluster's series: Redis latency and errors, live nodes. Exported only by a gateway
/// with a `cluster` section ([`ClusterMetrics::register`]), so no others show series that
/// cannot move.
pub struct ClusterMetrics {
    /// Latency of Redis calls.
    pub redis_latency: Histogram,
    /// Redis calls that failed or timed out.
    pub redis_errors: Counter,
    /// Live nodes last counted in the cluster.
    pub cluster_nodes: Gauge,
}

impl Default for ClusterMetrics {
    /// Series not yet exported.
    fn default() -> Self {
        ClusterMetrics {
            redis_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 14)),
            redis_errors: Counter::default(),
            cluster_nodes: Gauge::default(),
        }
    }
}

impl ClusterMetrics {
    /// Exports the series.
    pub(crate) fn register(&self, reg: &mut Registry) {
        reg.register(
            "redis_duration_seconds",
            "Latency of Redis calls",
            self.redis_latency.clone(),
        );
        reg.register(
            "redis_errors",
            "Redis calls that failed or timed out",
            self.redis_errors.clone(),
        );
        reg.register(
            "cluster_nodes",
            "Live gateway nodes last counted in the cluster",
            self.cluster_nodes.clone(),
        );
    }
}
