//! One request's exchange with an upstream, behind one call ([`Exchange::send`]): the
//! target choice (passing over targets whose breaker refuses), one try within the per-try
//! timeout, retries under the policy and its budget (the whole within the total timeout,
//! which the caller applies: see [`Exchange::timed_out`]), and the mapping of each failure to the problem that answers it, to the target breaker's
//! outcome, to outlier detection and to the upstream's metrics.
//!
//! A failure the client caused (its body broke off, stopped or grew too large) is the
//! client's: it is answered as such and counted nowhere against the upstream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Response, header};

use super::metrics::UpstreamMetrics;
use super::{
    Allowance, ExchangeError, Failure, InFlight, Remake, RequestHead, RetryPolicy, Target,
    UpstreamBody, UpstreamConn, UpstreamSet,
};
use crate::breaker::{Call, Outcome};
use crate::client_body::{Inbound, read_whole};
use crate::mirror::MirrorPlan;
use crate::problem::Problem;
use crate::request_body::{Progress, RequestBody};

/// What a request's exchange with `upstream` needs besides the request itself.
pub struct Exchange<'a> {
    /// The upstream to send to.
    pub upstream: &'a UpstreamSet,
    /// The request's consistent-hash key hash, if the upstream hashes.
    pub hash: Option<u64>,
    /// The listener's request body limit.
    pub body_limit: u64,
    /// The route's mirror, copied every request it sends (held bodies only).
    pub mirror: Option<&'a MirrorPlan>,
    /// Where retries, budget refusals, ejections and upstream errors are counted.
    pub metrics: &'a UpstreamMetrics,
    /// Send it once, whatever the retry policy (a protocol switch: a WebSocket
    /// handshake is never sent twice).
    pub once: bool,
    /// A gRPC call: a failure in its answer's head counts as its gRPC status says
    /// ([`crate::grpc::effective_status`]).
    pub grpc: bool,
}

/// What an exchange leaves for the request's completion, kept even when it fails.
#[derive(Default)]
pub struct Trace {
    /// The request counted in flight at its last target, until the response ends.
    pub in_flight: Option<InFlight>,
    /// The address of the last target tried, for the log.
    pub target: Option<Arc<str>>,
}

/// The upstream's answer: its head and body, the connection that carries the body, and
/// the target that answered (whose pool takes the connection back).
pub struct Answer {
    /// The target that answered.
    pub target: Arc<Target>,
    /// The response, its body still streaming.
    pub response: Response<UpstreamBody>,
    /// The connection the body arrives on.
    pub conn: UpstreamConn,
}

/// Why a try failed: the upstream's failure (counted against it, maybe retried), or the
/// client's (its body broke off, stopped or grew too large), which is answered as the
/// client's and counted nowhere against the upstream.
enum TryError {
    Upstream(Failure),
    Client(Problem),
}

impl Exchange<'_> {
    /// Sends the request, retrying as the upstream's policy allows. A body is only sent
    /// again if it could be held whole (no longer than the policy's replay buffer);
    /// otherwise it streams through once and is never retried.
    ///
    /// The caller awaits it under the upstream's total timeout, if it has one, and
    /// answers a timeout with [`Exchange::timed_out`]. (Wrapping it here would put one
    /// more large future around the exchange on every request, a copy of it each time.)
    pub async fn send(
        &self,
        head: RequestHead,
        body: Inbound,
        trace: &mut Trace,
    ) -> Result<Answer, Problem> {
        let policy = self.policy();
        if let Some(p) = policy {
            p.record_request();
        }
        let declared = head
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let body = match body {
            Inbound::Stream(b) => b,
            // Boxed, here and below: retries and held bodies are the rarer path, and their
            // future would otherwise make every request's larger (it is copied whole).
            Inbound::Empty => return Box::pin(self.send_held(head, Bytes::new(), trace)).await,
            Inbound::Held(bytes) => return Box::pin(self.send_held(head, bytes, trace)).await,
        };
        let body_limit = self.body_limit;
        // A body kept for replay, or the stream (sent once).
        let replay = match policy {
            Some(_) if http_body::Body::is_end_stream(&body) => Bytes::new(),
            Some(p) if declared.is_some_and(|len| len <= p.replay_limit.min(body_limit)) => {
                read_whole(body, p.replay_limit.min(body_limit)).await?
            }
            _ => {
                if let Some(m) = self.mirror
                    && http_body::Body::is_end_stream(&body)
                {
                    m.send(&head.method, &head.uri, &head.headers, Bytes::new());
                }
                let req = head.request(RequestBody::new(body, body_limit));
                let (target, call) = self.pick_target(&[])?;
                // Only a stream that turned out empty can be made again.
                let remake = || head.request(RequestBody::empty());
                return match self.try_once(&target, call, req, &remake, trace).await {
                    Ok((response, conn)) => Ok(Answer {
                        target,
                        response,
                        conn,
                    }),
                    Err(e) => Err(self.problem(e)),
                };
            }
        };
        Box::pin(self.send_held(head, replay, trace)).await
    }

    /// The answer when the whole exchange took longer than the upstream's total timeout
    /// (counted as an upstream error).
    pub fn timed_out(&self) -> Problem {
        self.counted(Problem::UpstreamTimeout, "timeout")
    }

    /// Sends a request whose whole body is held (`replay`), retrying as the policy allows.
    async fn send_held(
        &self,
        head: RequestHead,
        replay: Bytes,
        trace: &mut Trace,
    ) -> Result<Answer, Problem> {
        if let Some(m) = self.mirror {
            m.send(&head.method, &head.uri, &head.headers, replay.clone());
        }
        let remake = || head.request(RequestBody::buffered(replay.clone()));
        let Some(policy) = self.policy() else {
            // One try: no list of tried targets to keep.
            let (target, call) = self.pick_target(&[])?;
            return match self.try_once(&target, call, remake(), &remake, trace).await {
                Ok((response, conn)) => Ok(Answer {
                    target,
                    response,
                    conn,
                }),
                Err(e) => Err(self.problem(e)),
            };
        };
        let mut tried: Vec<Arc<str>> = Vec::new();
        let mut retry = 0;
        loop {
            let (target, call) = self.pick_target(&tried)?;
            tried.push(target.address.clone());
            let failure = match self.try_once(&target, call, remake(), &remake, trace).await {
                Ok((response, conn))
                    if policy
                        .retries_status(crate::grpc::effective_status(&response, self.grpc)) =>
                {
                    // Kept in case no retry happens; dropped (with its connection) if one does.
                    let failure =
                        Failure::Status(crate::grpc::effective_status(&response, self.grpc));
                    if !self.retry_decision(policy, failure, &head.method, retry) {
                        return Ok(Answer {
                            target,
                            response,
                            conn,
                        });
                    }
                    drop((response, conn));
                    failure
                }
                Ok((response, conn)) => {
                    return Ok(Answer {
                        target,
                        response,
                        conn,
                    });
                }
                Err(TryError::Client(p)) => return Err(p),
                Err(TryError::Upstream(f)) => {
                    if !self.retry_decision(policy, f, &head.method, retry) {
                        return Err(self.failure_problem(f));
                    }
                    f
                }
            };
            self.metrics.retry(&self.upstream.name, failure.label());
            tokio::time::sleep(policy.backoff(retry)).await;
            retry += 1;
        }
    }

    /// The target for the next try, with a call through its breaker if it has one: a
    /// target whose breaker refuses (open, or every half-open probe out) is passed over
    /// for another.
    fn pick_target(&self, tried: &[Arc<str>]) -> Result<(Arc<Target>, Option<Call>), Problem> {
        let upstream = self.upstream;
        let mut refused = None;
        let mut skipped: Vec<Arc<str>> = tried.to_vec();
        for _ in 0..=upstream.target_count() {
            let Some(target) = upstream.pick_untried(self.hash, &skipped) else {
                break;
            };
            match target.breaker.as_ref().map(|b| b.admit(b"")) {
                None => return Ok((target, None)),
                Some(Ok(call)) => return Ok((target, Some(call))),
                Some(Err(p)) => {
                    refused = Some(p);
                    skipped.push(target.address.clone());
                }
            }
        }
        // No target: if breakers hold them, say so.
        Err(refused.unwrap_or_else(|| {
            if upstream.has_open_target_breaker() {
                Problem::CircuitOpen {
                    retry_after_secs: 1,
                }
            } else {
                Problem::NoTarget
            }
        }))
    }

    /// The retry policy that applies to this exchange.
    fn policy(&self) -> Option<&RetryPolicy> {
        if self.once {
            None
        } else {
            self.upstream.retry.as_ref()
        }
    }

    /// Whether to retry after `failure`; counts a retry the budget refused.
    fn retry_decision(
        &self,
        p: &RetryPolicy,
        failure: Failure,
        method: &Method,
        retry: u32,
    ) -> bool {
        if !p.covers(failure, method) {
            return false;
        }
        match p.allow(retry) {
            Allowance::Retry => true,
            Allowance::AttemptsUsed => false,
            Allowance::BudgetSpent => {
                self.metrics.retry_budget_exhausted(&self.upstream.name);
                false
            }
        }
    }

    /// One try at `target`, within the per-try timeout; counts the request in flight
    /// there and its latency. The timeout runs from the end of the request body (a slow
    /// client's upload is not the upstream's time) and while the upstream leaves the body
    /// unread.
    async fn try_once(
        &self,
        target: &Target,
        call: Option<Call>,
        req: http::Request<RequestBody>,
        remake: Remake<'_>,
        trace: &mut Trace,
    ) -> Result<(Response<UpstreamBody>, UpstreamConn), TryError> {
        let upstream = self.upstream;
        trace.in_flight = Some(target.pool.stats.begin());
        trace.target = Some(target.address.clone());
        let sent_at = Instant::now();
        let progress = req.body().progress();
        let send = target.pool.send(req, remake);
        let answered = match &progress {
            None => tokio::time::timeout(upstream.request_timeout, send)
                .await
                .ok(),
            Some(p) => answered_within(upstream.request_timeout, p, send).await,
        };
        if let Some(fault) = progress.as_ref().and_then(|p| p.fault()) {
            // The client's body ended the exchange: nothing here is the upstream's doing.
            return Err(TryError::Client(fault.problem()));
        }
        let result = match answered {
            None => Err(Failure::Timeout),
            Some(Err(ExchangeError::Connect)) => {
                if upstream.has_names {
                    // The name may point elsewhere now.
                    upstream.resolve_now.notify_one();
                }
                Err(Failure::Connect)
            }
            Some(Err(ExchangeError::Broken(_))) => Err(Failure::Reset),
            Some(Ok(exchange)) => {
                let took = sent_at.elapsed();
                target.pool.stats.observe(took);
                target.metrics.response(
                    crate::grpc::effective_status(&exchange.0, self.grpc).as_u16(),
                    took.as_secs_f64(),
                    exchange.1.reused,
                );
                Ok(exchange)
            }
        };
        if let Some(call) = call {
            call.finish(match &result {
                Ok((resp, _)) => Outcome::Status(crate::grpc::effective_status(resp, self.grpc)),
                Err(Failure::Timeout) => Outcome::Timeout,
                Err(Failure::Connect) => Outcome::Connect,
                Err(Failure::Reset | Failure::Status(_)) => Outcome::Reset,
            });
        }
        // Outlier detection counts 5xx, connect errors, resets and timeouts as failures.
        let ok = result.as_ref().is_ok_and(|(resp, _)| {
            !crate::grpc::effective_status(resp, self.grpc).is_server_error()
        });
        if let Some(time) = upstream.record_outcome(target, ok) {
            self.metrics.ejection(&upstream.name, &target.address);
            tracing::warn!(
                upstream = %upstream.name,
                address = %target.address,
                seconds = time.as_secs(),
                "target ejected: its requests are failing"
            );
        }
        result.map_err(TryError::Upstream)
    }

    /// The answer when a try is not retried (an upstream failure is counted).
    fn problem(&self, e: TryError) -> Problem {
        match e {
            TryError::Upstream(f) => self.failure_problem(f),
            TryError::Client(p) => p,
        }
    }

    /// The answer for a failure that is not retried, counted as an upstream error.
    fn failure_problem(&self, f: Failure) -> Problem {
        let (problem, kind) = match f {
            Failure::Timeout => (Problem::UpstreamTimeout, "timeout"),
            Failure::Connect => (Problem::UpstreamConnect, "connect"),
            Failure::Reset | Failure::Status(_) => (Problem::UpstreamBroken, "broken"),
        };
        self.counted(problem, kind)
    }

    fn counted(&self, p: Problem, kind: &'static str) -> Problem {
        self.metrics.error(&self.upstream.name, kind);
        p
    }
}

/// `exchange`'s result, or `None` once the upstream has taken longer than `limit` by
/// `progress`'s clock (see [`Progress::upstream_deadline`]). The timer is checked only
/// when it fires: the body's phases move its deadline without touching it.
fn answered_within<F: std::future::Future>(
    limit: Duration,
    progress: &Progress,
    exchange: F,
) -> AnsweredWithin<'_, F> {
    AnsweredWithin {
        exchange,
        timer: tokio::time::sleep(limit),
        limit,
        progress,
    }
}

pin_project_lite::pin_project! {
    /// [`answered_within`]'s future: the exchange and its timer side by side. (A struct, not
    /// an `async fn`: that would keep the exchange's future twice, the argument and the
    /// pinned copy, and this future is copied into every request's.)
    struct AnsweredWithin<'a, F> {
        #[pin]
        exchange: F,
        #[pin]
        timer: tokio::time::Sleep,
        limit: Duration,
        progress: &'a Progress,
    }
}

impl<F: std::future::Future> std::future::Future for AnsweredWithin<'_, F> {
    type Output = Option<F::Output>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let mut this = self.project();
        if let std::task::Poll::Ready(out) = this.exchange.poll(cx) {
            return std::task::Poll::Ready(Some(out));
        }
        while this.timer.as_mut().poll(cx).is_ready() {
            let deadline = this.progress.upstream_deadline(*this.limit);
            if deadline <= tokio::time::Instant::now() {
                return std::task::Poll::Ready(None);
            }
            this.timer.as_mut().reset(deadline);
        }
        std::task::Poll::Pending
    }
}
