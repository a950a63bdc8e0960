//! Where responses are kept: a memory tier bounded in bytes (moka, weighing each entry by
//! its body, fields and key), each entry kept for as long as it is fresh plus the time it
//! may still be served stale or revalidated.
//!
//! Keys: the primary key is the effective URI (`host` + path and query). A response with
//! `Vary` is stored under the primary key plus the normalized values of the fields it
//! names (the secondary key); the names themselves are remembered per primary key, so a
//! lookup knows which fields to read. Purges by URL, prefix and tag are moka invalidation
//! predicates: lookups stop seeing the entries at once, the memory is freed in the
//! background.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, StatusCode};
use moka::sync::Cache;

use super::policy::Freshness;

/// Separates the primary key from the secondary one (neither can hold a line break).
const SECONDARY: char = '\n';

/// A stored response.
#[derive(Debug)]
pub struct Entry {
    /// Its status.
    pub status: StatusCode,
    /// Its fields as received (hop-by-hop fields removed), without `Age`.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
    /// How it ages.
    pub(crate) freshness: Freshness,
    /// Its tags (`Surrogate-Key`, `Cache-Tag`), for purges.
    pub tags: Box<[Box<str>]>,
    /// How long the upstream took to produce it (early refresh weighs it).
    pub fetch_time: Duration,
    /// How long storage keeps it.
    keep: Duration,
}

impl Entry {
    pub(crate) fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        freshness: Freshness,
        fetch_time: Duration,
        now: SystemTime,
    ) -> Self {
        let tags = tags_of(&headers);
        let mut entry = Entry {
            status,
            headers,
            body,
            freshness,
            tags,
            fetch_time,
            keep: Duration::ZERO,
        };
        entry.keep = entry.freshness.keep(now, entry.has_validators());
        entry
    }

    /// How long storage keeps it, from when it was made.
    pub(crate) fn keep(&self) -> Duration {
        self.keep
    }

    /// Whether it can be revalidated (it has an `ETag` or `Last-Modified`).
    pub(crate) fn has_validators(&self) -> bool {
        self.headers.contains_key(header::ETAG) || self.headers.contains_key(header::LAST_MODIFIED)
    }

    fn weight(&self, key: &str) -> u32 {
        let fields: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        // The policy holds a copy of the fields; 256 for the rest of the bookkeeping.
        let total = self.body.len() + 2 * fields + key.len() + 256;
        u32::try_from(total).unwrap_or(u32::MAX)
    }
}

/// The tags a response carries: `Surrogate-Key` (space-separated) and `Cache-Tag`
/// (comma-separated).
fn tags_of(headers: &HeaderMap) -> Box<[Box<str>]> {
    let surrogate = headers
        .get_all("surrogate-key")
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(str::split_ascii_whitespace);
    let cache_tag = headers
        .get_all("cache-tag")
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    surrogate
        .chain(cache_tag)
        .filter(|t| !t.is_empty())
        .map(Box::from)
        .collect()
}

struct KeepFor;

impl moka::Expiry<Arc<str>, Arc<Entry>> for KeepFor {
    fn expire_after_create(
        &self,
        _: &Arc<str>,
        e: &Arc<Entry>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(e.keep)
    }

    fn expire_after_update(
        &self,
        _: &Arc<str>,
        e: &Arc<Entry>,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(e.keep)
    }
}

/// What a lookup found.
pub(crate) struct Found {
    /// The full key (primary and secondary).
    pub key: Arc<str>,
    /// The entry, if any.
    pub entry: Option<Arc<Entry>>,
    /// Responses for the URI are stored, but none for these `Vary` values.
    pub vary_miss: bool,
}

/// The shared store.
pub struct Store {
    entries: Cache<Arc<str>, Arc<Entry>>,
    vary: Cache<Arc<str>, Arc<[HeaderName]>>,
    max_object: u64,
    /// Purges applied so far: a response fetched across one is not stored
    /// ([`Store::insert_unless_purged`]).
    purges: std::sync::atomic::AtomicU64,
}

impl Store {
    /// A store holding up to `capacity` bytes, objects up to `max_object` bytes.
    pub fn new(capacity: u64, max_object: u64) -> Self {
        Store {
            entries: Cache::builder()
                .max_capacity(capacity)
                .weigher(|k: &Arc<str>, v: &Arc<Entry>| v.weight(k))
                .expire_after(KeepFor)
                .support_invalidation_closures()
                .build(),
            vary: Cache::builder()
                .max_capacity(1 << 16)
                .time_to_idle(Duration::from_secs(3600))
                .support_invalidation_closures()
                .build(),
            max_object,
            purges: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Purges applied so far; a miss notes it when it is decided.
    pub(crate) fn purges(&self) -> u64 {
        self.purges.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Counted before a purge drops anything, so that a store racing with it sees it.
    fn count_purge(&self) {
        self.purges
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Stores `entry` for a request to `primary` with `request` fields, unless a purge was
    /// applied since its miss saw `purges_seen` purges: a response fetched before a purge
    /// must not outlive it.
    /// Checked again after storing (a purge counts itself before it drops anything, so
    /// one that began in between is seen here and its entry dropped); the entry is
    /// returned either way, to be served.
    pub(crate) fn insert_unless_purged(
        &self,
        primary: &str,
        request: &HeaderMap,
        entry: Entry,
        purges_seen: u64,
    ) -> Arc<Entry> {
        if self.purges() != purges_seen {
            return Arc::new(entry);
        }
        let (key, entry) = self.insert_keyed(primary, request, entry);
        if self.purges() != purges_seen {
            self.entries.invalidate(&key);
        }
        entry
    }

    /// Replaces the entry under `key` like [`Store::replace`], unless a purge was applied
    /// since `purges_seen` (see [`Store::insert_unless_purged`]).
    pub(crate) fn replace_unless_purged(
        &self,
        key: Arc<str>,
        entry: Entry,
        purges_seen: u64,
    ) -> Arc<Entry> {
        if self.purges() != purges_seen {
            return Arc::new(entry);
        }
        let entry = self.replace(key.clone(), entry);
        if self.purges() != purges_seen {
            self.entries.invalidate(&key);
        }
        entry
    }

    /// The largest body stored.
    pub fn max_object(&self) -> u64 {
        self.max_object
    }

    /// The entry for a request to `primary` with `headers`.
    pub(crate) fn find(&self, primary: &str, headers: &HeaderMap) -> Found {
        match self.vary.get(primary) {
            None => {
                let key: Arc<str> = secondary_key(primary, &[], headers).into();
                let entry = self.entries.get(&key);
                Found {
                    key,
                    entry,
                    vary_miss: false,
                }
            }
            Some(names) => {
                let key: Arc<str> = secondary_key(primary, &names, headers).into();
                let entry = self.entries.get(&key);
                Found {
                    vary_miss: entry.is_none(),
                    key,
                    entry,
                }
            }
        }
    }

    /// Stores `entry` for a request to `primary` with `request` fields, under the key it
    /// returns.
    fn insert_keyed(
        &self,
        primary: &str,
        request: &HeaderMap,
        entry: Entry,
    ) -> (Arc<str>, Arc<Entry>) {
        let names = vary_names(&entry.headers);
        let key: Arc<str> = secondary_key(primary, &names, request).into();
        if names.is_empty() {
            self.vary.invalidate(primary);
        } else {
            self.vary.insert(Arc::from(primary), names.into());
        }
        let entry = Arc::new(entry);
        self.entries.insert(key.clone(), entry.clone());
        (key, entry)
    }

    /// Replaces the entry under `key` (after a revalidation).
    pub(crate) fn replace(&self, key: Arc<str>, entry: Entry) -> Arc<Entry> {
        let entry = Arc::new(entry);
        self.entries.insert(key, entry.clone());
        entry
    }

    /// Drops every response stored for `primary` (all its `Vary` variants).
    pub fn purge_url(&self, primary: &str) {
        self.count_purge();
        self.invalidate_url(primary);
    }

    /// Drops every response stored for `primary`, as an unsafe request's answer
    /// invalidates it (RFC 9111 §4.4): not counted as a purge, so fills in flight for
    /// other URLs are stored as usual.
    pub(crate) fn invalidate_url(&self, primary: &str) {
        let plain = secondary_key(primary, &[], &HeaderMap::new());
        self.entries.invalidate(plain.as_str());
        if self.vary.contains_key(primary) {
            let primary: Box<str> = primary.into();
            self.invalidate_if(move |k, _| primary_of(k) == &*primary);
        }
    }

    /// Drops every response whose primary key starts with `prefix`.
    pub fn purge_prefix(&self, prefix: &str) {
        self.count_purge();
        let prefix: Box<str> = prefix.into();
        self.invalidate_if(move |k, _| primary_of(k).starts_with(&*prefix));
    }

    /// Drops every response tagged `tag`.
    pub fn purge_tag(&self, tag: &str) {
        self.count_purge();
        let tag: Box<str> = tag.into();
        self.invalidate_if(move |_, e| e.tags.iter().any(|t| **t == *tag));
    }

    /// Drops everything.
    pub fn purge_all(&self) {
        self.count_purge();
        self.entries.invalidate_all();
        self.vary.invalidate_all();
    }

    fn invalidate_if(&self, f: impl Fn(&Arc<str>, &Arc<Entry>) -> bool + Send + Sync + 'static) {
        // Only fails when invalidation closures were not enabled, and they are.
        if let Err(e) = self.entries.invalidate_entries_if(f) {
            tracing::error!(error = %e, "cache purge failed");
        }
    }

    /// Entries and the bytes they weigh (approximate: counted lazily).
    pub fn usage(&self) -> (u64, u64) {
        (self.entries.entry_count(), self.entries.weighted_size())
    }

    /// Runs pending maintenance (evictions, expirations), for exact usage figures.
    pub fn sync(&self) {
        self.entries.run_pending_tasks();
    }
}

fn primary_of(key: &str) -> &str {
    key.split_once(SECONDARY).map_or(key, |(p, _)| p)
}

/// The field names `Vary` lists, lower case, in order.
pub(crate) fn vary_names(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    names.dedup();
    names
}

/// The full key: `primary`, then each varied field's normalized value.
fn secondary_key(primary: &str, names: &[HeaderName], headers: &HeaderMap) -> String {
    let mut key = String::with_capacity(primary.len() + 1);
    key.push_str(primary);
    key.push(SECONDARY);
    push_secondary(names, headers, &mut key);
    key
}

/// The secondary key alone (what follows the primary key in the full key).
pub(crate) fn secondary_suffix(names: &[HeaderName], headers: &HeaderMap) -> String {
    let mut key = String::new();
    push_secondary(names, headers, &mut key);
    key
}

fn push_secondary(names: &[HeaderName], headers: &HeaderMap, key: &mut String) {
    for name in names {
        key.push_str(name.as_str());
        key.push('=');
        normalize_into(name, headers, key);
        key.push('\u{1}');
    }
}

/// A field's values as one canonical list: elements trimmed, empty ones dropped; for the
/// content-negotiation fields whose tokens are case-insensitive, lower case and sorted.
/// An absent field differs from an empty one.
fn normalize_into(name: &HeaderName, headers: &HeaderMap, out: &mut String) {
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        out.push('\u{0}');
        return;
    }
    let mut parts: Vec<String> = values
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .flat_map(|v| {
            v.split(',')
                .map(|p| p.split(';').map(str::trim).collect::<Vec<_>>().join(";"))
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();
    // Codings and language tags are case-insensitive, and a list of them is a set of
    // preferences weighed by `q`, not by order.
    if *name == header::ACCEPT_ENCODING || *name == header::ACCEPT_LANGUAGE {
        for p in &mut parts {
            p.make_ascii_lowercase();
        }
        parts.sort();
        parts.dedup();
    }
    out.push_str(&parts.join(","));
}

/// A 200 response stored fresh for a minute, with `body` (for tests of the tiers).
#[cfg(test)]
pub(crate) fn fresh_entry(body: &'static [u8]) -> Entry {
    let rules = crate::cache::policy::Rules::new(
        &serde_json::from_str("{}").expect("an empty route cache section"),
    );
    let now = std::time::SystemTime::now();
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("max-age=60"),
    );
    let freshness = rules
        .admit(
            &crate::cache::policy::PolicyRequest::of(&HeaderMap::new(), false),
            http::StatusCode::OK,
            &headers,
            now,
        )
        .expect("a max-age=60 response is stored");
    Entry::new(
        http::StatusCode::OK,
        headers,
        bytes::Bytes::from_static(body),
        freshness,
        Duration::from_millis(1),
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn equivalent_field_values_share_a_secondary_key() {
        let names = [header::ACCEPT_ENCODING, header::ACCEPT_LANGUAGE];
        let a = secondary_key(
            "h/x",
            &names,
            &h(&[("accept-encoding", "gzip, br"), ("accept-language", "en")]),
        );
        let b = secondary_key(
            "h/x",
            &names,
            &h(&[("accept-encoding", "BR,gzip"), ("accept-language", " EN ")]),
        );
        let c = secondary_key("h/x", &names, &h(&[("accept-encoding", "gzip")]));
        let d = secondary_key(
            "h/x",
            &names,
            &h(&[("accept-encoding", "gzip"), ("accept-language", "")]),
        );
        assert_eq!(a, b);
        let lang = |v| secondary_key("h/x", &names[1..], &h(&[("accept-language", v)]));
        assert_eq!(lang("en, de;q=0.5"), lang("de;q=0.5, EN"));
        assert_ne!(lang("en, de;q=0.5"), lang("en;q=0.5, de"));
        assert_ne!(a, c);
        assert_ne!(c, d, "absent differs from empty");
        assert_eq!(primary_of(&a), "h/x");
    }

    #[test]
    fn tags_from_both_fields() {
        let t = tags_of(&h(&[("surrogate-key", "a  b"), ("cache-tag", "c, d,")]));
        let t: Vec<&str> = t.iter().map(|s| &**s).collect();
        assert_eq!(t, ["a", "b", "c", "d"]);
    }

    fn entry(body: &'static [u8]) -> Entry {
        fresh_entry(body)
    }

    #[test]
    fn a_response_fetched_across_a_purge_is_not_stored() {
        let store = Store::new(1 << 20, 1 << 20);
        let url = "example.test/a";
        let none = HeaderMap::new();
        // A miss is decided, the URL is purged, then the miss's answer comes back: it is
        // served (returned) but not stored.
        let seen = store.purges();
        store.purge_url(url);
        let served = store.insert_unless_purged(url, &none, entry(b"old"), seen);
        assert_eq!(&served.body[..], b"old");
        assert!(store.find(url, &none).entry.is_none());
        // Any kind of purge counts.
        let seen = store.purges();
        store.purge_tag("t");
        store.insert_unless_purged(url, &none, entry(b"old"), seen);
        assert!(store.find(url, &none).entry.is_none());
        // An unsafe request's invalidation of another URL is not a purge.
        let seen = store.purges();
        store.invalidate_url("example.test/b");
        store.insert_unless_purged(url, &none, entry(b"kept"), seen);
        assert_eq!(
            &store.find(url, &none).entry.expect("stored").body[..],
            b"kept"
        );
        store.purge_url(url);
        // A miss decided after the purges stores as usual.
        store.insert_unless_purged(url, &none, entry(b"new"), store.purges());
        let found = store.find(url, &none).entry.expect("stored");
        assert_eq!(&found.body[..], b"new");
    }
}
