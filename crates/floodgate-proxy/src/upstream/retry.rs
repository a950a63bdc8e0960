//! An upstream's retry policy, compiled from config: which failures are retried, for which
//! methods, how long to wait, and the budget (floodgate-core's `retry`) that stops retries
//! from multiplying the load on a failing service.

use std::sync::Mutex;
use std::time::Duration;

use floodgate_config::model::Retries;
use floodgate_core::retry::{RetryBudget, backoff};
use http::{Method, StatusCode};

/// Why a try failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be made: the request reached nothing.
    Connect,
    /// The exchange broke after the request was sent (or while sending).
    Reset,
    /// No response head within the per-try timeout.
    Timeout,
    /// The target answered with a status listed in `retry_on`.
    Status(StatusCode),
}

impl Failure {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Failure::Connect => "connect_error",
            Failure::Reset => "reset",
            Failure::Timeout => "timeout",
            Failure::Status(_) => "status",
        }
    }
}

/// What the policy says about one more retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// Go ahead (a retry was taken from the budget).
    Retry,
    /// No: all attempts are used.
    AttemptsUsed,
    /// No: the budget is spent.
    BudgetSpent,
}

/// A compiled retry policy.
pub struct RetryPolicy {
    attempts: u32,
    on_connect: bool,
    on_reset: bool,
    on_timeout: bool,
    /// Statuses (`503`) and classes (`5` for `5xx`).
    statuses: Vec<u16>,
    classes: Vec<u16>,
    methods: Vec<Method>,
    budget: Mutex<RetryBudget>,
    backoff: Duration,
    max_backoff: Duration,
    /// Bodies up to this many bytes are buffered for replay.
    pub replay_limit: u64,
}

impl RetryPolicy {
    /// Compiles validated config.
    pub fn new(r: &Retries) -> Self {
        let has = |c: &str| r.retry_on.iter().any(|o| o == c);
        RetryPolicy {
            attempts: r.attempts,
            on_connect: has("connect_error"),
            on_reset: has("reset"),
            on_timeout: has("timeout"),
            statuses: r.retry_on.iter().filter_map(|o| o.parse().ok()).collect(),
            classes: r
                .retry_on
                .iter()
                .filter_map(|o| o.strip_suffix("xx")?.parse().ok())
                .collect(),
            methods: r
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            budget: Mutex::new(RetryBudget::new(r.budget.0, f64::from(r.min_per_second))),
            backoff: r.backoff.0,
            max_backoff: r.max_backoff.0,
            replay_limit: r.replay_buffer.0,
        }
    }

    /// Counts a request (not a retry) toward the budget.
    pub fn record_request(&self) {
        self.lock().record_request(crate::ratelimit::now());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RetryBudget> {
        self.budget.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a response with `status` counts as a failure to retry.
    pub fn retries_status(&self, status: StatusCode) -> bool {
        let s = status.as_u16();
        self.statuses.contains(&s) || self.classes.contains(&(s / 100))
    }

    /// Whether `failure` of a `method` request is of a kind this policy retries. A
    /// connect failure is retried for any method (the request reached nothing); the others
    /// only for idempotent methods and those listed.
    pub fn covers(&self, failure: Failure, method: &Method) -> bool {
        let kind = match failure {
            Failure::Connect => return self.on_connect,
            Failure::Reset => self.on_reset,
            Failure::Timeout => self.on_timeout,
            Failure::Status(s) => self.retries_status(s),
        };
        kind && (method.is_idempotent() || self.methods.contains(method))
    }

    /// Whether retry number `retry` (0 for the first) may happen: within `attempts`, and
    /// with room in the budget (taken if so).
    pub fn allow(&self, retry: u32) -> Allowance {
        if retry >= self.attempts {
            Allowance::AttemptsUsed
        } else if self.lock().try_retry(crate::ratelimit::now()) {
            Allowance::Retry
        } else {
            Allowance::BudgetSpent
        }
    }

    /// The wait before retry number `retry`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(backoff(
            retry,
            nanos(self.backoff),
            nanos(self.max_backoff),
            fastrand::f64(),
        ))
    }
}

/// Retries under the budget, in the exchange.
pub(crate) const POLICY: crate::policy::UpstreamPolicy = crate::policy::UpstreamPolicy {
    name: "retries",
    phase: crate::policy::Phase::Exchange,
    describe: |u| {
        let Some(r) = &u.retries else {
            return Vec::new();
        };
        vec![format!(
            "retries: up to {} on {} (budget {}% of requests + {}/s)",
            r.attempts,
            r.retry_on.join(", "),
            (r.budget.0 * 100.0).round(),
            r.min_per_second
        )]
    },
};
