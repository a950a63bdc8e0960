//! The shared tier: responses kept in the cluster's Redis as well as in memory, so a node
//! that misses in memory finds what another node fetched (`cache.shared`).
//!
//! Layout, under the cluster's key prefix: `cache:obj:<primary key>` is a hash with one
//! field per `Vary` variant (its secondary key), each a record: a 4-byte length, a JSON
//! head (status, fields, the policy, freshness, the request fields that selected it), then
//! the body. The hash expires when its longest-kept variant would leave memory.
//! `cache:tag:<tag>` is the set of primary keys tagged so, for purges.
//!
//! Writes go out in the background after a response is stored in memory; reads happen on
//! a memory miss, bounded by the cluster's timeout.
//!
//! A purge must not be undone by a write that was already on its way: a response fetched
//! before the purge, saved after it, would bring back what was purged, for every node.
//! So every purge counts itself in `cache:purges` (before it unlinks anything), each node
//! keeps the highest count it has seen (its own purges, the fleet's broadcasts, every
//! read of the tier), a miss notes that count when it is decided, and the save (a script,
//! atomic in Redis) is dropped when Redis's count is higher: a purge happened since. Redis failing (or backing off after a
//! failure) makes the tier absent, never an error: the request goes to the upstream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::Purge;
use super::policy::Freshness;
use super::store::{Entry, Store, secondary_suffix, vary_names};
use crate::ratelimit::cluster::ClusterClient;

/// The Redis tier of one gateway.
pub struct SharedTier {
    cluster: Arc<ClusterClient>,
    /// The highest purge count this node has seen (kept across reloads, see
    /// [`super::CacheState`]).
    purges_seen: Arc<AtomicU64>,
}

/// Saves a response unless a purge happened since the miss that fetched it: `KEYS[1]` the
/// purge count, `KEYS[2]` the object, `KEYS[3..]` its tag sets; `ARGV`: the count the miss
/// saw, the variant's field, the record, how long to keep it (ms), the primary key.
const SAVE: &str = r"
if tonumber(redis.call('GET', KEYS[1]) or '0') > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4], 'NX')
redis.call('PEXPIRE', KEYS[2], ARGV[4], 'GT')
for i = 3, #KEYS do
  redis.call('SADD', KEYS[i], ARGV[5])
  redis.call('PEXPIRE', KEYS[i], ARGV[4], 'NX')
  redis.call('PEXPIRE', KEYS[i], ARGV[4], 'GT')
end
return 1
";

/// A record's head.
#[derive(Serialize, Deserialize)]
struct Head {
    #[serde(with = "http_serde::status_code")]
    status: StatusCode,
    #[serde(with = "http_serde::header_map")]
    headers: HeaderMap,
    /// The request fields the response varies on.
    #[serde(with = "http_serde::header_map")]
    request: HeaderMap,
    policy: http_cache_semantics::CachePolicy,
    fresh_until_ms: u64,
    stale_while_revalidate_ms: u64,
    stale_if_error_ms: u64,
    strict: bool,
    fetch_time_ms: u64,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl SharedTier {
    /// The tier over `cluster`'s Redis; `purges_seen` is the node's count of purges seen.
    pub fn new(cluster: Arc<ClusterClient>, purges_seen: Arc<AtomicU64>) -> Self {
        SharedTier {
            cluster,
            purges_seen,
        }
    }

    /// The key counting the fleet's purges, under `prefix`.
    pub(crate) fn purges_key(prefix: &str) -> String {
        format!("{prefix}cache:purges")
    }

    /// The highest purge count this node has seen: a miss decided now notes it.
    pub(crate) fn purges_seen(&self) -> u64 {
        self.purges_seen.load(Ordering::Acquire)
    }

    fn object_key(&self, primary: &str) -> String {
        format!("{}cache:obj:{primary}", self.cluster.prefix())
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}cache:tag:{tag}", self.cluster.prefix())
    }

    /// Copies what Redis holds for `primary` into `store`; whether it held anything.
    pub(crate) async fn load(&self, primary: &str, store: &Store) -> bool {
        // A purge applied while Redis answers must not be undone by what it answered.
        let local_purges = store.purges();
        let mut p = redis::pipe();
        p.cmd("HGETALL").arg(self.object_key(primary));
        p.cmd("GET").arg(Self::purges_key(self.cluster.prefix()));
        let Some((fields, purges)) = self
            .cluster
            .query::<(Vec<(Vec<u8>, Vec<u8>)>, Option<u64>)>(&p)
            .await
        else {
            return false;
        };
        self.purges_seen
            .fetch_max(purges.unwrap_or(0), Ordering::AcqRel);
        let now = SystemTime::now();
        let mut found = false;
        for (_, record) in fields {
            match decode(&record, now) {
                Some((request, entry)) if entry.keep() > Duration::ZERO => {
                    store.insert_unless_purged(primary, &request, entry, local_purges);
                    found = true;
                }
                Some(_) => {}
                None => tracing::debug!(primary, "unreadable shared cache record"),
            }
        }
        found
    }

    /// Writes `entry`, stored in memory for a request with `request` fields, to Redis in
    /// the background, unless a purge happened since its miss saw `purges_seen` purges.
    pub(crate) fn save(
        self: &Arc<Self>,
        primary: &str,
        request: &HeaderMap,
        entry: &Entry,
        purges_seen: u64,
    ) {
        let Some(p) = self.save_pipe(primary, request, entry, purges_seen) else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            this.cluster.query::<()>(&p).await;
        });
    }

    /// The commands that save `entry` (see [`SAVE`]); `None` if it cannot be encoded.
    fn save_pipe(
        &self,
        primary: &str,
        request: &HeaderMap,
        entry: &Entry,
        purges_seen: u64,
    ) -> Option<redis::Pipeline> {
        let names = vary_names(&entry.headers);
        let field = secondary_suffix(&names, request);
        let mut varied = HeaderMap::new();
        for name in &names {
            for v in request.get_all(name) {
                varied.append(name.clone(), v.clone());
            }
        }
        let record = encode(entry, varied)?;
        // The hash lives as long as its longest-kept variant.
        let keep = millis(entry.keep()).max(1);
        let mut p = redis::pipe();
        let eval = p
            .cmd("EVAL")
            .arg(SAVE)
            .arg(2 + entry.tags.len())
            .arg(Self::purges_key(self.cluster.prefix()))
            .arg(self.object_key(primary));
        for tag in entry.tags.iter() {
            eval.arg(self.tag_key(tag));
        }
        eval.arg(purges_seen)
            .arg(field)
            .arg(record.as_ref())
            .arg(keep)
            .arg(primary)
            .ignore();
        Some(p)
    }

    /// Counts a purge, then drops what it names from Redis; the fleet's purge count, or
    /// `None` if Redis did not answer.
    pub async fn purge(&self, purge: &Purge) -> Option<u64> {
        let mut p = redis::pipe();
        p.cmd("INCR").arg(Self::purges_key(self.cluster.prefix()));
        let (count,) = self.cluster.query::<(u64,)>(&p).await?;
        self.purges_seen.fetch_max(count, Ordering::AcqRel);
        self.unlink(purge).await.then_some(count)
    }

    /// Drops what `purge` names from Redis; whether Redis answered.
    async fn unlink(&self, purge: &Purge) -> bool {
        let objects = match purge {
            Purge::Url(u) => match super::key_for_url(u) {
                Ok(k) => vec![self.object_key(&k)],
                Err(_) => return true,
            },
            Purge::Prefix(u) => match super::key_for_url(u) {
                Ok(k) => match self
                    .scan(&format!("{}*", glob_escape(&self.object_key(&k))))
                    .await
                {
                    Some(keys) => keys,
                    None => return false,
                },
                Err(_) => return true,
            },
            Purge::Tag(t) => {
                let set = self.tag_key(t.trim());
                let mut p = redis::pipe();
                p.cmd("SMEMBERS").arg(&set);
                p.cmd("DEL").arg(&set).ignore();
                let Some((members,)) = self.cluster.query::<(Vec<String>,)>(&p).await else {
                    return false;
                };
                members.iter().map(|m| self.object_key(m)).collect()
            }
            Purge::All(_) => {
                let all = format!("{}cache:*", glob_escape(self.cluster.prefix()));
                match self.scan(&all).await {
                    Some(keys) => keys,
                    None => return false,
                }
            }
        };
        if objects.is_empty() {
            return true;
        }
        let mut p = redis::pipe();
        for chunk in objects.chunks(500) {
            p.cmd("UNLINK").arg(chunk).ignore();
        }
        self.cluster.query::<()>(&p).await.is_some()
    }

    /// The keys matching `pattern` (SCAN: purges by prefix are rare and may walk the
    /// keyspace), or `None` if Redis failed.
    async fn scan(&self, pattern: &str) -> Option<Vec<String>> {
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut p = redis::pipe();
            p.cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            let ((next, batch),) = self.cluster.query::<((u64, Vec<String>),)>(&p).await?;
            keys.extend(batch);
            if next == 0 {
                return Some(keys);
            }
            cursor = next;
        }
    }
}

/// `text` with Redis glob characters escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn encode(entry: &Entry, request: HeaderMap) -> Option<Bytes> {
    let f = &entry.freshness;
    let head = Head {
        status: entry.status,
        headers: entry.headers.clone(),
        request,
        policy: f.policy.clone(),
        fresh_until_ms: millis(f.fresh_until.duration_since(UNIX_EPOCH).ok()?),
        stale_while_revalidate_ms: millis(f.stale_while_revalidate),
        stale_if_error_ms: millis(f.stale_if_error),
        strict: f.strict,
        fetch_time_ms: millis(entry.fetch_time),
    };
    let mut out = BytesMut::new();
    crate::record::encode(&head, &entry.body, &mut out)?;
    Some(out.freeze())
}

fn decode(record: &[u8], now: SystemTime) -> Option<(HeaderMap, Entry)> {
    let (head, body) = crate::record::decode::<Head>(record)?;
    let freshness = Freshness {
        policy: head.policy,
        fresh_until: UNIX_EPOCH + Duration::from_millis(head.fresh_until_ms),
        stale_while_revalidate: Duration::from_millis(head.stale_while_revalidate_ms),
        stale_if_error: Duration::from_millis(head.stale_if_error_ms),
        strict: head.strict,
        omit: Vec::new(),
    };
    let entry = Entry::new(
        head.status,
        head.headers,
        Bytes::copy_from_slice(body),
        freshness,
        Duration::from_millis(head.fetch_time_ms),
        now,
    );
    Some((head.request, entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::{PolicyRequest, Rules};

    #[test]
    fn records_carry_the_entry_and_its_freshness() {
        let rules = Rules::new(&serde_json::from_str("{}").unwrap());
        let now = SystemTime::now();
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", "max-age=60".parse().unwrap());
        headers.insert("vary", "accept-encoding".parse().unwrap());
        headers.insert("surrogate-key", "a b".parse().unwrap());
        let freshness = rules
            .admit(
                &PolicyRequest::of(&HeaderMap::new(), false),
                StatusCode::OK,
                &headers,
                now,
            )
            .unwrap();
        let entry = Entry::new(
            StatusCode::OK,
            headers,
            Bytes::from_static(b"body \x00\xff bytes"),
            freshness,
            Duration::from_millis(12),
            now,
        );
        let mut request = HeaderMap::new();
        request.insert("accept-encoding", "gzip".parse().unwrap());
        let record = encode(&entry, request.clone()).unwrap();
        let (req, back) = decode(&record, now).unwrap();
        assert_eq!(req, request);
        assert_eq!(back.status, StatusCode::OK);
        assert_eq!(back.body, entry.body);
        assert_eq!(back.headers, entry.headers);
        assert_eq!(&*back.tags, &*entry.tags);
        assert_eq!(back.fetch_time, Duration::from_millis(12));
        let until = |f: &Freshness| f.fresh_until.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(
            until(&back.freshness).as_millis(),
            until(&entry.freshness).as_millis()
        );
        assert_eq!(
            back.freshness.policy.time_to_live(now).as_secs(),
            entry.freshness.policy.time_to_live(now).as_secs()
        );
        assert!(decode(&record[..10], now).is_none());
        assert!(decode(b"\xff\xff\xff\xff{}", now).is_none());
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    /// Redis for a test: the machine's (or `FLOODGATE_TEST_REDIS_URL`'s); a test fails
    /// without it unless `FLOODGATE_TEST_SKIP_REDIS=1` asks to skip (and says so).
    fn redis_url() -> Option<String> {
        if std::env::var("FLOODGATE_TEST_SKIP_REDIS").is_ok_and(|v| v == "1") {
            eprintln!("skipped: FLOODGATE_TEST_SKIP_REDIS=1 (this test needs Redis)");
            return None;
        }
        Some(
            std::env::var("FLOODGATE_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned()),
        )
    }

    #[tokio::test]
    async fn a_save_from_before_a_purge_does_not_bring_back_what_it_purged() {
        let Some(url) = redis_url() else { return };
        let prefix = format!(
            "fg-test-{}-{}:",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let cfg = floodgate_config::load_str(
            "t.yaml",
            &format!(
                "listeners: [ {{ name: l, address: \"127.0.0.1:0\" }} ]
cluster: {{ redis: {{ url: \"{url}\", key_prefix: \"{prefix}\", timeout: 5s }} }}
upstreams: {{ u: {{ targets: [ \"127.0.0.1:9\" ] }} }}
routes: [ {{ match: {{ path_prefix: / }}, upstream: u }} ]
"
            ),
            &|_| None,
        )
        .expect("config");
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let cluster = Arc::new(
            ClusterClient::new(
                cfg.cluster.as_ref().expect("cluster"),
                metrics.cluster.clone(),
            )
            .expect("client"),
        );
        let tier = SharedTier::new(cluster.clone(), Arc::default());
        let entry = super::super::store::fresh_entry(b"old");
        let primary = "example.test/item";
        let exists = |cluster: Arc<ClusterClient>, key: String| async move {
            let mut p = redis::pipe();
            p.cmd("EXISTS").arg(key);
            cluster.query::<(i64,)>(&p).await.expect("redis").0
        };
        let object = tier.object_key(primary);

        // A miss is decided, then the item is purged, then the miss's answer is saved.
        let seen = tier.purges_seen();
        let purged = tier
            .purge(&Purge::Url(format!("http://{primary}")))
            .await
            .expect("redis");
        assert_eq!(purged, seen + 1);
        assert_eq!(tier.purges_seen(), purged, "a node's own purge is seen");
        let late = tier
            .save_pipe(primary, &HeaderMap::new(), &entry, seen)
            .unwrap();
        cluster.query::<()>(&late).await.expect("redis");
        assert_eq!(
            exists(cluster.clone(), object.clone()).await,
            0,
            "not brought back"
        );

        // A miss decided after the purge saves as usual.
        let fresh = tier
            .save_pipe(primary, &HeaderMap::new(), &entry, tier.purges_seen())
            .unwrap();
        cluster.query::<()>(&fresh).await.expect("redis");
        assert_eq!(exists(cluster.clone(), object.clone()).await, 1);
        // Another node (its own view, behind) learns the count from its next read.
        let other = SharedTier::new(cluster.clone(), Arc::default());
        assert_eq!(other.purges_seen(), 0);
        let store = Store::new(1 << 20, 1 << 20);
        assert!(other.load(primary, &store).await);
        assert_eq!(other.purges_seen(), purged);

        let mut p = redis::pipe();
        p.cmd("DEL")
            .arg(&object)
            .arg(SharedTier::purges_key(&prefix))
            .ignore();
        cluster.query::<()>(&p).await.expect("redis");
    }
}
