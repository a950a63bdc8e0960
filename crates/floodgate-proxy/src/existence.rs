//! Cache-penetration protection: a route's existence filter (a Bloom filter from
//! floodgate-core over the known keys) answers requests for keys that certainly do not
//! exist with 404 at once, so floods of made-up ids never reach the upstream. Absent keys
//! get through only at the filter's false-positive rate.
//!
//! The known keys come from a source URL, read on first use and every `refresh` (a new
//! filter is built and swapped in; keys learned meanwhile are added to it too). Until the
//! source has been read once, nothing is filtered: the filter fails open. With `learn`,
//! keys of successful responses are added, so ids created since the last read pass.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use floodgate_config::cache::ExistenceFilter;
use floodgate_core::bloom::Bloom;
use http::{Request, Uri};

use crate::ratelimit::key::KeyPart;

/// The largest source document read.
const SOURCE_MAX: usize = 256 << 20;

/// A route's existence filter, kept across reloads while its definition stays.
pub struct Existence {
    /// Where the key comes from.
    pub key: KeyPart,
    /// Add keys of successful responses.
    pub learn: bool,
    source: Uri,
    refresh: Duration,
    expected: u64,
    rate: f64,
    filter: ArcSwapOption<Bloom>,
    /// Keys learned since the last source read, to carry into the next filter.
    learned: Mutex<Vec<Box<[u8]>>>,
    read_at: Mutex<Option<Instant>>,
    reading: tokio::sync::Mutex<()>,
}

impl Existence {
    /// From validated config.
    pub fn new(f: &ExistenceFilter) -> Self {
        Existence {
            key: KeyPart::parse(&f.key).unwrap_or(KeyPart::Route),
            learn: f.learn,
            source: f.source.parse().unwrap_or_default(),
            refresh: f.refresh.0,
            expected: f.expected_keys,
            rate: f.false_positive_rate.0,
            filter: ArcSwapOption::empty(),
            learned: Mutex::new(Vec::new()),
            read_at: Mutex::new(None),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether a request with `key` may go on: false only when the key is certainly
    /// absent. Reads the source first if it never was, and again in the background when
    /// it is due.
    pub async fn admits(self: &Arc<Self>, key: &[u8]) -> bool {
        let due = self
            .read_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|at| at.elapsed() >= self.refresh);
        if due {
            if self.filter.load().is_none() {
                self.read().await;
            } else if let Ok(_one) = self.reading.try_lock() {
                let me = self.clone();
                tokio::spawn(async move { me.read().await });
            }
        }
        match &*self.filter.load() {
            Some(f) => f.contains(key),
            None => true,
        }
    }

    /// Adds a key (learned from a response).
    pub fn insert(&self, key: &[u8]) {
        if let Some(f) = &*self.filter.load() {
            f.insert(key);
        }
        let mut learned = self.learned.lock().unwrap_or_else(|p| p.into_inner());
        if learned.len() < 1_000_000 {
            learned.push(key.into());
        }
    }

    async fn read(&self) {
        let _one = self.reading.lock().await;
        let fresh = self
            .read_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < self.refresh);
        if fresh {
            return;
        }
        let result = async {
            let req = Request::get(self.source.clone())
                .body(Bytes::new())
                .map_err(|e| e.to_string())?;
            let (status, body) = crate::fetch::send(req, None, SOURCE_MAX).await?;
            if !status.is_success() {
                return Err(format!("status {status}"));
            }
            Ok(body)
        }
        .await;
        *self.read_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let body = match result {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(source = %self.source, error = %e, "existence filter source unreadable; the old filter stays");
                return;
            }
        };
        let bloom = Bloom::new(self.expected, self.rate);
        let mut count = 0u64;
        for_each_key(&body, |k| {
            bloom.insert(k);
            count += 1;
        });
        for k in std::mem::take(&mut *self.learned.lock().unwrap_or_else(|p| p.into_inner())) {
            bloom.insert(&k);
        }
        tracing::info!(source = %self.source, keys = count, bytes = bloom.bytes(), "existence filter loaded");
        self.filter.store(Some(Arc::new(bloom)));
    }
}

/// Calls `f` with each key of a source document: a JSON array of strings or numbers, or
/// one key per line.
pub fn for_each_key(body: &[u8], mut f: impl FnMut(&[u8])) {
    if let Ok(serde_json::Value::Array(items)) = serde_json::from_slice::<serde_json::Value>(body) {
        for item in items {
            match item {
                serde_json::Value::String(s) => f(s.as_bytes()),
                serde_json::Value::Number(n) => f(n.to_string().as_bytes()),
                _ => {}
            }
        }
        return;
    }
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.is_empty() {
            f(line);
        }
    }
}

/// The last path segment of a `Location` (the id of what a 201 created).
pub fn location_key(location: &str) -> Option<&str> {
    let path = location.split(['?', '#']).next()?;
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
}

/// The existence filter, among the guards.
pub(crate) const POLICY: crate::policy::RoutePolicy = crate::policy::RoutePolicy {
    name: "existence filter",
    phase: crate::policy::Phase::Guards,
    describe: |r| {
        let Some(f) = &r.existence_filter else {
            return Vec::new();
        };
        vec![format!(
            "existence filter: {} among the keys from {} (false positives {}%)",
            f.key,
            f.source,
            (f.false_positive_rate.0 * 1000.0).round() / 10.0
        )]
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_in_both_formats() {
        let mut keys = Vec::new();
        for_each_key(br#"["a", 7, "b"]"#, |k| keys.push(k.to_vec()));
        for_each_key(b"c\r\nd\n\ne", |k| keys.push(k.to_vec()));
        assert_eq!(keys, [&b"a"[..], b"7", b"b", b"c", b"d", b"e"]);
        assert_eq!(location_key("/products/42?x=1"), Some("42"));
        assert_eq!(location_key("https://h/items/abc/"), Some("abc"));
    }
}
