//! The shared HTTP cache (RFC 9111 for a shared cache, RFC 5861's stale windows, RFC 9211's
//! `Cache-Status`), and the cures for cache breakdown and avalanche that sit on it.
//!
//! A route with `cache` looks a GET or HEAD up before it spends anything on the upstream:
//! - fresh: answered from storage (a conditional request gets its 304 here);
//! - stale within `stale-while-revalidate`: answered from storage, refreshed in the
//!   background by one request;
//! - otherwise forwarded, revalidating a stale entry with its validators. While one
//!   request for a key is forwarded, the others wait for its outcome ([`flight`]);
//!   the response is stored while it streams to the client ([`fill`]). A failure of the
//!   upstream (5xx, unreachable, timeout, breaker open) is answered with the stale entry
//!   within `stale-if-error`.
//!
//! Unsafe methods that succeed invalidate the URI and their `Location` and
//! `Content-Location`. [`policy`] decides storability and freshness, [`store`] keeps the
//! entries.

pub mod broadcast;
mod directives;
mod fill;
mod flight;
mod policy;
mod purge;
mod range;
pub mod shared;
mod store;
pub(crate) mod surrogate;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_cache_semantics::BeforeRequest;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use flight::Flights;
pub use policy::Rules;
pub use purge::Purge;
pub use store::{Entry, Store};

use crate::body::ResponseBody;
use crate::problem::Problem;
use crate::ratelimit::RouteLimits;
use crate::ratelimit::cluster::ClusterClient;
use fill::{Fill, Keep};
use flight::{Joined, Leader, Outcome};
use policy::{Freshness, PolicyRequest};
use shared::SharedTier;

/// The `Cache-Status` field (RFC 9211).
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The cache state all routes share, kept across reloads: the store (built again, empty,
/// only when the `cache` section's sizes change) and the flights in progress.
pub struct CacheState {
    store: parking_lot::Mutex<(floodgate_config::cache::CacheStorage, Arc<Store>)>,
    /// The Redis tier, when `cache.shared` (set at each snapshot build).
    tier: parking_lot::Mutex<Option<Arc<SharedTier>>>,
    /// Requests in flight to the upstream, by key.
    pub flights: Arc<Flights>,
    /// The highest count of the fleet's purges this node has seen (see [`shared`]).
    purges_seen: Arc<std::sync::atomic::AtomicU64>,
}

impl CacheState {
    /// The state for the `cache` section `c`.
    pub fn new(c: &floodgate_config::cache::CacheStorage) -> Self {
        CacheState {
            store: parking_lot::Mutex::new((
                c.clone(),
                Arc::new(Store::new(c.memory.0, c.max_object_size.0)),
            )),
            flights: Arc::default(),
            tier: parking_lot::Mutex::new(None),
            purges_seen: Arc::default(),
        }
    }

    /// Notes that the fleet has counted `count` purges (from a broadcast, or Redis).
    pub fn observe_purges(&self, count: u64) {
        self.purges_seen
            .fetch_max(count, std::sync::atomic::Ordering::AcqRel);
    }

    /// The Redis tier for the `cache` section `c` over `cluster`, remembered for purges.
    pub fn tier_for(
        &self,
        c: &floodgate_config::cache::CacheStorage,
        cluster: Option<&Arc<ClusterClient>>,
    ) -> Option<Arc<SharedTier>> {
        let tier = match cluster {
            Some(cluster) if c.shared => Some(Arc::new(SharedTier::new(
                cluster.clone(),
                self.purges_seen.clone(),
            ))),
            _ => None,
        };
        *self.tier.lock() = tier.clone();
        tier
    }

    /// The Redis tier in use, if any.
    pub fn tier(&self) -> Option<Arc<SharedTier>> {
        self.tier.lock().clone()
    }

    /// The store for the `cache` section `c`: the current one, or a new one if the sizes
    /// changed.
    pub fn store_for(&self, c: &floodgate_config::cache::CacheStorage) -> Arc<Store> {
        let mut current = self.store.lock();
        let sizes = |s: &floodgate_config::cache::CacheStorage| (s.memory, s.max_object_size);
        if sizes(&current.0) != sizes(c) {
            tracing::info!("cache storage sizes changed: starting with an empty store");
            *current = (
                c.clone(),
                Arc::new(Store::new(c.memory.0, c.max_object_size.0)),
            );
        }
        current.1.clone()
    }

    /// The store in use.
    pub fn store(&self) -> Arc<Store> {
        self.store.lock().1.clone()
    }
}

/// The primary key of `url` (`http://host/path?query`, the scheme optional): how purges
/// name what they drop. With `prefix`, the query is not required to be whole.
pub fn key_for_url(url: &str) -> Result<String, String> {
    let full = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    let uri: http::Uri = full
        .parse()
        .map_err(|_| format!("{url:?} is not a URL such as http://shop.example/products/1"))?;
    let host = uri
        .authority()
        .map(|a| a.as_str())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| format!("{url:?} names no host"))?;
    let host = crate::host::routing_name(host);
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    Ok(format!("{host}{target}"))
}

/// A route's cache: its rules over the shared store.
pub struct RouteCache {
    /// Storability and freshness rules.
    pub rules: Rules,
    /// The shared store.
    pub store: Arc<Store>,
    /// The Redis tier behind it.
    tier: Option<Arc<SharedTier>>,
    flights: Arc<Flights>,
    coalesce: bool,
    coalesce_timeout: Duration,
    early_refresh: f64,
    /// Limits on each client's misses.
    pub miss_limits: RouteLimits,
    metrics: CacheMetrics,
}

/// What the cache decided for a GET or HEAD.
pub(crate) enum Lookup {
    /// Answer with this.
    Hit(Response<ResponseBody>),
    /// Answer with this, and refresh the entry in the background.
    HitAndRefresh(Response<ResponseBody>, Box<Pending>),
    /// Go to the upstream, then hand the result to [`Pending::complete`].
    Forward(Box<Pending>),
}

/// A request on its way to the upstream, and what the cache does with the answer.
pub(crate) struct Pending {
    primary: Arc<str>,
    key: Arc<str>,
    /// The client's request fields (the response's `Vary` selects among them).
    request: HeaderMap,
    stale: Option<Arc<Entry>>,
    leader: Option<Leader>,
    /// Why it was forwarded (RFC 9211 `fwd`).
    fwd: &'static str,
    /// The validators sent to revalidate the stale entry.
    pub conditionals: Vec<(HeaderName, HeaderValue)>,
    head: bool,
    started: Instant,
    /// The purges the shared tier had seen when the miss was decided: a save is dropped
    /// if there were more by then.
    purges_seen: u64,
    /// The purges this node's store had applied then: likewise for storing in memory.
    local_purges: u64,
}

impl RouteCache {
    /// Compiles a route's `cache` over the shared store.
    pub fn new(
        c: &floodgate_config::cache::RouteCache,
        store: Arc<Store>,
        tier: Option<Arc<SharedTier>>,
        flights: Arc<Flights>,
        miss_limits: RouteLimits,
        metrics: CacheMetrics,
    ) -> Self {
        RouteCache {
            metrics,
            rules: Rules::new(c),
            store,
            tier,
            flights,
            coalesce: c.coalesce,
            coalesce_timeout: c.coalesce_timeout.0,
            early_refresh: c.early_refresh,
            miss_limits,
        }
    }

    /// Looks a GET (or, with `head`, a HEAD) for `primary` up.
    pub(crate) async fn lookup(
        &self,
        primary: &str,
        headers: &HeaderMap,
        head: bool,
    ) -> Result<Lookup, Problem> {
        let primary: Arc<str> = primary.into();
        let client = PolicyRequest::of(headers, self.rules.ignore_client_no_cache);
        let only_if_cached = client.only_if_cached();
        let asking = client.with_conditionals(headers);
        // A leader that gives up hands the lead to a waiter: look again; the third time,
        // go upstream alone.
        let mut loaded = false;
        for attempt in 0..3 {
            let now = SystemTime::now();
            let found = self.store.find(&primary, headers);
            let mut fwd = if found.vary_miss {
                "vary-miss"
            } else {
                "uri-miss"
            };
            let mut conditionals = Vec::new();
            let mut stale = None;
            if let Some(e) = &found.entry {
                match e.freshness.policy.before_request(&asking, now) {
                    BeforeRequest::Fresh(_) => {
                        let ttl = e
                            .freshness
                            .fresh_until
                            .duration_since(now)
                            .unwrap_or_default();
                        let status = format!("hit; ttl={}", ttl.as_secs());
                        let resp = serve(e, headers, head, now, &status);
                        self.metrics.hit.inc();
                        if self.refresh_early(e, ttl)
                            && let Some(leader) = self.flights.try_lead(&found.key)
                        {
                            let pending = self.pending(&found.key, &primary, headers, e, leader);
                            return Ok(Lookup::HitAndRefresh(resp, Box::new(pending)));
                        }
                        return Ok(Lookup::Hit(resp));
                    }
                    BeforeRequest::Stale { .. } => {
                        let f = &e.freshness;
                        let forced = now < f.fresh_until;
                        let staleness = f.staleness(now);
                        if !forced && !f.strict && staleness < f.stale_while_revalidate {
                            let status = format!(
                                "hit; ttl=-{}; detail=stale-while-revalidate",
                                staleness.as_secs()
                            );
                            let resp = serve(e, headers, head, now, &status);
                            self.metrics.stale.inc();
                            if let Some(leader) = self.flights.try_lead(&found.key) {
                                let pending =
                                    self.pending(&found.key, &primary, headers, e, leader);
                                return Ok(Lookup::HitAndRefresh(resp, Box::new(pending)));
                            }
                            return Ok(Lookup::Hit(resp));
                        }
                        fwd = if forced { "request" } else { "stale" };
                        conditionals = own_validators(e);
                        stale = Some(e.clone());
                    }
                }
            }
            if only_if_cached {
                return Err(Problem::NotCached);
            }
            let mut leader = None;
            if self.coalesce && !head && attempt < 2 {
                match self.flights.join(&found.key) {
                    Joined::Lead(l) => leader = Some(l),
                    Joined::Follow(rx) => {
                        // `None`: waited long enough, go on alone.
                        if let Some(outcome) = self.wait(rx).await {
                            match &*outcome {
                                Outcome::Serve(e) => {
                                    self.metrics.collapsed.inc();
                                    let status = format!("fwd={fwd}; collapsed");
                                    let now = SystemTime::now();
                                    return Ok(Lookup::Hit(serve(e, headers, head, now, &status)));
                                }
                                Outcome::Failed(p) => return Err(*p),
                                Outcome::Abandoned => continue,
                                Outcome::NotShareable => {}
                            }
                        }
                    }
                }
            }
            // Nothing fresh in memory: another node may have stored the response in Redis.
            // The leader alone asks; when Redis had it, the leader steps down and everyone
            // looks in memory again.
            if !loaded && let Some(tier) = &self.tier {
                loaded = true;
                if tier.load(&primary, &self.store).await {
                    drop(leader);
                    continue;
                }
            }
            self.metrics.miss.inc();
            return Ok(Lookup::Forward(Box::new(Pending {
                primary,
                key: found.key,
                request: headers.clone(),
                stale,
                leader,
                fwd,
                conditionals,
                head,
                started: Instant::now(),
                purges_seen: self.purges_seen(),
                local_purges: self.store.purges(),
            })));
        }
        // Not reached: the last attempt never waits.
        Err(Problem::UpstreamBroken)
    }

    /// Waits for another request's fetch, counted in the waiting gauge.
    async fn wait(&self, rx: flight::Receiver) -> Option<Arc<Outcome>> {
        self.metrics.waiting.inc();
        let outcome = flight::wait(rx, self.coalesce_timeout).await;
        self.metrics.waiting.dec();
        outcome
    }

    /// A background refresh of `entry`, revalidating it if it can be.
    fn pending(
        &self,
        key: &Arc<str>,
        primary: &Arc<str>,
        headers: &HeaderMap,
        entry: &Arc<Entry>,
        leader: Leader,
    ) -> Pending {
        let conditionals = own_validators(entry);
        let mut request = headers.clone();
        for name in [
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::CACHE_CONTROL,
            header::PRAGMA,
        ] {
            request.remove(name);
        }
        Pending {
            primary: primary.clone(),
            key: key.clone(),
            request,
            stale: Some(entry.clone()),
            leader: Some(leader),
            fwd: "stale",
            conditionals,
            head: false,
            started: Instant::now(),
            purges_seen: self.purges_seen(),
            local_purges: self.store.purges(),
        }
    }

    /// The purges the shared tier has seen, noted by a miss when it is decided.
    fn purges_seen(&self) -> u64 {
        self.tier.as_ref().map_or(0, |t| t.purges_seen())
    }

    /// XFetch: refresh a fresh entry early with a probability that grows as its expiry
    /// nears and with how long it took to fetch (Vattani, Chierichetti, Lowenstein 2015).
    fn refresh_early(&self, e: &Entry, ttl: Duration) -> bool {
        if self.early_refresh <= 0.0 {
            return false;
        }
        let draw = 1.0 - fastrand::f64(); // (0, 1]
        let ahead = e.fetch_time.as_secs_f64() * self.early_refresh * -draw.ln();
        ahead >= ttl.as_secs_f64()
    }

    /// After an unsafe method: drops what is stored for the URI and for the `Location` and
    /// `Content-Location` on the same host, if the response succeeded.
    pub(crate) fn invalidate(&self, host: &str, primary: &str, resp: &Response<ResponseBody>) {
        let s = resp.status();
        if !(s.is_success() || s.is_redirection()) {
            return;
        }
        self.store.invalidate_url(primary);
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            if let Some(p) = resp
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| same_host_path(host, v))
            {
                self.store.invalidate_url(&format!("{host}{p}"));
            }
        }
    }
}

impl Pending {
    /// The cache's part in answering with `result`: serve stale on a failure (and tell
    /// the waiters), merge a 304 into the stored entry, or store the response as it
    /// streams.
    pub(crate) fn complete(
        self,
        cache: &RouteCache,
        result: Result<Response<ResponseBody>, Problem>,
    ) -> Result<Response<ResponseBody>, Problem> {
        let now = SystemTime::now();
        let Pending {
            primary,
            key,
            request,
            stale,
            mut leader,
            fwd,
            conditionals,
            head,
            started,
            purges_seen,
            local_purges,
        } = self;
        let usable_on_error = stale.as_ref().filter(|e| {
            let f = &e.freshness;
            !f.strict && f.staleness(now) <= f.stale_if_error
        });
        let resp = match result {
            Err(p) => {
                if let Some(e) = usable_on_error
                    && is_upstream_failure(p)
                {
                    return Ok(serve_on_error(e, &request, head, now, leader, None));
                }
                if let Some(l) = leader {
                    l.finish(Outcome::Failed(p));
                }
                return Err(p);
            }
            Ok(r) => r,
        };
        let status = resp.status();
        if status.is_server_error()
            && let Some(e) = usable_on_error
        {
            return Ok(serve_on_error(e, &request, head, now, leader, Some(status)));
        }
        let forwarded = format!("fwd={fwd}; fwd-status={}", status.as_u16());
        let client = PolicyRequest::of(&request, cache.rules.ignore_client_no_cache);
        if status == StatusCode::NOT_MODIFIED
            && !conditionals.is_empty()
            && let Some(e) = &stale
        {
            return Ok(revalidated(
                cache,
                e,
                &primary,
                key,
                &client,
                &request,
                resp,
                leader,
                head,
                started,
                &forwarded,
                (purges_seen, local_purges),
            ));
        }
        let mut resp = resp;
        if head {
            mark(&mut resp, &forwarded);
            return Ok(resp);
        }
        let declared = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let fits = declared.is_none_or(|n| n <= cache.store.max_object());
        match cache.rules.admit(&client, status, resp.headers(), now) {
            Some(freshness) if fits => {
                let fill = Fill::new(
                    cache.store.clone(),
                    Keep::Store {
                        primary,
                        request,
                        tier: cache.tier.clone().map(|t| (t, purges_seen)),
                        local_purges,
                    },
                    status,
                    without(resp.headers().clone(), &freshness.omit),
                    freshness,
                    leader.take(),
                    started,
                    declared,
                );
                resp.body_mut().tap(Box::new(fill));
                mark(&mut resp, &format!("{forwarded}; stored"));
            }
            _ if status.is_server_error() && leader.is_some() && fits => {
                let fill = Fill::new(
                    cache.store.clone(),
                    Keep::ShareOnly,
                    status,
                    resp.headers().clone(),
                    Freshness::unstored(status, resp.headers(), now),
                    leader.take(),
                    started,
                    declared,
                );
                resp.body_mut().tap(Box::new(fill));
                mark(&mut resp, &forwarded);
            }
            _ => {
                if let Some(l) = leader.take() {
                    l.finish(Outcome::NotShareable);
                }
                mark(&mut resp, &forwarded);
            }
        }
        Ok(resp)
    }
}

/// A 304 answered a revalidation: the stored entry with the 304's fields merged in, stored
/// again and served.
#[allow(clippy::too_many_arguments)]
fn revalidated(
    cache: &RouteCache,
    e: &Arc<Entry>,
    primary: &str,
    key: Arc<str>,
    client: &PolicyRequest,
    request: &HeaderMap,
    resp: Response<ResponseBody>,
    leader: Option<Leader>,
    head: bool,
    started: Instant,
    forwarded: &str,
    (purges_seen, local_purges): (u64, u64),
) -> Response<ResponseBody> {
    // The 304 answers the validator taken from this entry (`own_validators`), so it is
    // about this entry, even when it names no validator or, wrongly, another one: the
    // stored validators are kept (RFC 9111 §4.3.4 selects by validator among several
    // stored responses; there is only this one).
    let now = SystemTime::now();
    let (parts, _) = resp.into_parts();
    let merged = merge_not_modified(&e.headers, &parts.headers);
    match cache.rules.admit(client, e.status, &merged, now) {
        Some(freshness) => {
            let entry = Entry::new(
                e.status,
                without(merged, &freshness.omit),
                e.body.clone(),
                freshness,
                started.elapsed(),
                now,
            );
            let entry = cache.store.replace_unless_purged(key, entry, local_purges);
            if let Some(tier) = &cache.tier {
                tier.save(primary, request, &entry, purges_seen);
            }
            if let Some(l) = leader {
                l.finish(Outcome::Serve(entry.clone()));
            }
            serve(&entry, request, head, now, forwarded)
        }
        None => {
            if let Some(l) = leader {
                l.finish(Outcome::NotShareable);
            }
            let mut resp = Response::new(if head {
                ResponseBody::empty()
            } else {
                ResponseBody::full(e.body.clone())
            });
            *resp.status_mut() = e.status;
            *resp.headers_mut() = merged;
            mark(&mut resp, forwarded);
            resp
        }
    }
}

/// `headers` less the fields `omit` names.
fn without(mut headers: HeaderMap, omit: &[HeaderName]) -> HeaderMap {
    for name in omit {
        headers.remove(name);
    }
    headers
}

/// The stored fields updated with a 304's, except those describing the body (RFC 9111
/// §4.3.4) and the validators that selected it.
fn merge_not_modified(stored: &HeaderMap, fresh: &HeaderMap) -> HeaderMap {
    static CONTENT_MD5: HeaderName = HeaderName::from_static("content-md5");
    let keep = [
        &header::CONTENT_LENGTH,
        &header::CONTENT_ENCODING,
        &header::TRANSFER_ENCODING,
        &header::CONTENT_RANGE,
        &CONTENT_MD5,
        &header::ETAG,
        &header::VIA,
    ];
    let mut merged = stored.clone();
    // The stored `Age` was the age before this validation.
    merged.remove(header::AGE);
    let mut replaced: Vec<&HeaderName> = Vec::new();
    for (name, value) in fresh {
        if keep.contains(&name) {
            continue;
        }
        if !replaced.contains(&name) {
            merged.remove(name);
            replaced.push(name);
        }
        merged.append(name.clone(), value.clone());
    }
    merged
}

/// The stale entry served because the upstream failed; the waiters get it too.
fn serve_on_error(
    e: &Arc<Entry>,
    request: &HeaderMap,
    head: bool,
    now: SystemTime,
    leader: Option<Leader>,
    status: Option<StatusCode>,
) -> Response<ResponseBody> {
    if let Some(l) = leader {
        l.finish(Outcome::Serve(e.clone()));
    }
    let stale = e.freshness.staleness(now).as_secs();
    let text = match status {
        Some(s) => format!(
            "hit; ttl=-{stale}; fwd-status={}; detail=stale-if-error",
            s.as_u16()
        ),
        None => format!("hit; ttl=-{stale}; detail=stale-if-error"),
    };
    serve(e, request, head, now, &text)
}

/// Failures a stale response may stand in for.
fn is_upstream_failure(p: Problem) -> bool {
    matches!(
        p,
        Problem::UpstreamConnect
            | Problem::UpstreamTimeout
            | Problem::UpstreamBroken
            | Problem::NoTarget
            | Problem::CircuitOpen { .. }
            | Problem::Shed
            | Problem::ConcurrencyLimited
    )
}

/// The validators that revalidate `entry` (in place of the client's: its own conditions
/// are answered from the validated entry).
fn own_validators(entry: &Entry) -> Vec<(HeaderName, HeaderValue)> {
    if let Some(etag) = entry.headers.get(header::ETAG) {
        vec![(header::IF_NONE_MATCH, etag.clone())]
    } else if let Some(lm) = entry.headers.get(header::LAST_MODIFIED) {
        vec![(header::IF_MODIFIED_SINCE, lm.clone())]
    } else {
        Vec::new()
    }
}

/// Answers from a stored entry: its fields with `Age` brought up to date, or 304 when the
/// request's own validators match.
fn serve(
    e: &Entry,
    request: &HeaderMap,
    head: bool,
    now: SystemTime,
    status: &str,
) -> Response<ResponseBody> {
    let age = HeaderValue::from(e.freshness.policy.age(now).as_secs());
    if e.status == StatusCode::OK && not_modified(e, request) {
        let mut resp = Response::new(ResponseBody::empty());
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        for name in [
            header::CACHE_CONTROL,
            header::CONTENT_LOCATION,
            header::DATE,
            header::ETAG,
            header::EXPIRES,
            header::VARY,
            header::LAST_MODIFIED,
        ] {
            for v in e.headers.get_all(&name) {
                resp.headers_mut().append(name.clone(), v.clone());
            }
        }
        resp.headers_mut().insert(header::AGE, age);
        mark(&mut resp, status);
        return resp;
    }
    let selected = match e.status == StatusCode::OK && !head {
        true => range::select(request, &e.headers, e.body.len()),
        false => range::Selected::Whole,
    };
    let (code, body) = match selected {
        range::Selected::Whole if head => (e.status, ResponseBody::empty()),
        range::Selected::Whole => (e.status, ResponseBody::full(e.body.clone())),
        range::Selected::Part(ref r) => (
            StatusCode::PARTIAL_CONTENT,
            ResponseBody::full(e.body.slice(r.clone())),
        ),
        range::Selected::Unsatisfiable => {
            (StatusCode::RANGE_NOT_SATISFIABLE, ResponseBody::empty())
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = code;
    *resp.headers_mut() = e.headers.clone();
    let content_range = match selected {
        range::Selected::Whole => None,
        range::Selected::Part(r) => {
            Some(format!("bytes {}-{}/{}", r.start, r.end - 1, e.body.len()))
        }
        range::Selected::Unsatisfiable => Some(format!("bytes */{}", e.body.len())),
    };
    if let Some(v) = content_range.and_then(|v| HeaderValue::from_str(&v).ok()) {
        resp.headers_mut().insert(header::CONTENT_RANGE, v);
        resp.headers_mut().remove(header::CONTENT_LENGTH);
    }
    resp.headers_mut().insert(header::AGE, age);
    mark(&mut resp, status);
    resp
}

/// Readies a response of a caching route for the client: sets `Cache-Status` and removes
/// `Surrogate-Control`, which was for this cache.
fn mark(resp: &mut Response<ResponseBody>, params: &str) {
    resp.headers_mut().remove(&surrogate::SURROGATE_CONTROL);
    if let Ok(v) = HeaderValue::from_str(&format!("Floodgate; {params}")) {
        resp.headers_mut().insert(CACHE_STATUS, v);
    }
}

/// Whether the request's `If-None-Match` (or, without one, `If-Modified-Since`) is met by
/// the entry (RFC 9110 §13.1.2, §13.1.3; weak comparison).
fn not_modified(e: &Entry, request: &HeaderMap) -> bool {
    let inm: Vec<&str> = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if !inm.is_empty() {
        let Some(etag) = e.headers.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return inm.contains(&"*");
        };
        let weak = |t: &str| t.trim().trim_start_matches("W/").to_owned();
        return inm.iter().any(|t| *t == "*" || weak(t) == weak(etag));
    }
    let Some(since) = request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    else {
        return false;
    };
    let modified = e
        .headers
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    modified.is_some_and(|m| m <= since)
}

/// The path (and query) a `Location`-style value names on `host`, if it is on `host`.
fn same_host_path<'a>(host: &str, value: &'a str) -> Option<&'a str> {
    if value.starts_with('/') && !value.starts_with("//") {
        return Some(value);
    }
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))?;
    let (authority, path) = rest.split_at(rest.find('/')?);
    authority.eq_ignore_ascii_case(host).then_some(path)
}

/// The HTTP cache, around the exchange.
pub(crate) const POLICY: crate::policy::RoutePolicy = crate::policy::RoutePolicy {
    name: "cache",
    phase: crate::policy::Phase::Around,
    describe: |r| {
        let Some(c) = &r.cache else { return Vec::new() };
        let mut parts = vec![format!(
            "GET and HEAD cached; negative {:?} for {}",
            c.negative_statuses, c.negative_ttl
        )];
        if let Some(t) = c.force_ttl {
            parts.push(format!("TTL forced to {t}"));
        } else if let Some(t) = c.default_ttl {
            parts.push(format!("default TTL {t}"));
        }
        parts.push(format!(
            "TTLs shortened at random by up to {}%",
            (c.jitter.0 * 1000.0).round() / 10.0
        ));
        if !c.stale_while_revalidate.0.is_zero() {
            parts.push(format!(
                "stale-while-revalidate {}",
                c.stale_while_revalidate
            ));
        }
        if !c.stale_if_error.0.is_zero() {
            parts.push(format!("stale-if-error {}", c.stale_if_error));
        }
        if c.coalesce {
            parts.push(format!("coalesced (wait up to {})", c.coalesce_timeout));
        }
        if c.early_refresh > 0.0 {
            parts.push(format!("early refresh β={}", c.early_refresh));
        }
        if !c.miss_rate_limits.is_empty() {
            parts.push(format!("{} miss limit(s)", c.miss_rate_limits.len()));
        }
        vec![format!("cache: {}", parts.join("; "))]
    },
};

/// The HTTP cache's metric families.
pub struct CacheFamilies {
    lookups: Family<RouteKind, Counter>,
    waiting: Gauge,
    entries: Gauge,
    bytes: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteKind {
    route: String,
    kind: &'static str,
}

/// One route's cache series.
#[derive(Clone, Debug, Default)]
pub struct CacheMetrics {
    /// Fresh hits.
    pub hit: Counter,
    /// Stale responses served while refreshed in the background.
    pub stale: Counter,
    /// Requests forwarded.
    pub miss: Counter,
    /// Requests served another request's fetch.
    pub collapsed: Counter,
    /// Requests waiting for another request's fetch (all routes).
    pub waiting: Gauge,
}

impl CacheFamilies {
    /// Registers the families.
    pub(crate) fn register(reg: &mut Registry) -> Self {
        let c = CacheFamilies {
            lookups: Family::default(),
            waiting: Gauge::default(),
            entries: Gauge::default(),
            bytes: Gauge::default(),
        };
        reg.register(
            "cache_lookups",
            "Cache lookups by route and result: hit, stale (served stale, refreshed in the \
             background), miss (forwarded), collapsed (served another request's fetch)",
            c.lookups.clone(),
        );
        reg.register(
            "cache_waiting",
            "Requests waiting for another request's fetch of the same key",
            c.waiting.clone(),
        );
        reg.register(
            "cache_entries",
            "Responses in the memory tier (updated every few seconds)",
            c.entries.clone(),
        );
        reg.register(
            "cache_bytes",
            "Bytes the memory tier holds (updated every few seconds)",
            c.bytes.clone(),
        );
        c
    }

    /// The cache series of `route`.
    pub fn series(&self, route: &str) -> CacheMetrics {
        let get = |kind| {
            self.lookups
                .get_or_create(&RouteKind {
                    route: route.to_owned(),
                    kind,
                })
                .clone()
        };
        CacheMetrics {
            hit: get("hit"),
            stale: get("stale"),
            miss: get("miss"),
            collapsed: get("collapsed"),
            waiting: self.waiting.clone(),
        }
    }

    /// Records the memory tier's size.
    pub fn usage(&self, entries: u64, bytes: u64) {
        self.entries.set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_urls_name_keys_like_requests_do() {
        assert_eq!(
            key_for_url("http://Shop.Example:8080/p/1?x=1").unwrap(),
            "shop.example/p/1?x=1"
        );
        assert_eq!(key_for_url("shop.example/p/").unwrap(), "shop.example/p/");
        assert_eq!(
            key_for_url("https://shop.example").unwrap(),
            "shop.example/"
        );
        assert!(key_for_url("/p/1").is_err());
        assert!(key_for_url("http://bad host/").is_err());
    }

    #[test]
    fn locations_on_the_same_host_only() {
        assert_eq!(same_host_path("a.test", "/x?y"), Some("/x?y"));
        assert_eq!(same_host_path("a.test", "http://A.test/x"), Some("/x"));
        assert_eq!(same_host_path("a.test", "https://b.test/x"), None);
        assert_eq!(same_host_path("a.test", "//b.test/x"), None);
        assert_eq!(same_host_path("a.test", "x"), None);
    }

    #[test]
    fn a_304_replaces_fields_but_not_those_of_the_body() {
        let mut stored = HeaderMap::new();
        stored.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        stored.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=1"));
        stored.insert("x-kept", HeaderValue::from_static("a"));
        let mut fresh = HeaderMap::new();
        fresh.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        fresh.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        let m = merge_not_modified(&stored, &fresh);
        assert_eq!(m[header::CONTENT_LENGTH], "10");
        assert_eq!(m[header::CACHE_CONTROL], "max-age=60");
        assert_eq!(m["x-kept"], "a");
    }
}
