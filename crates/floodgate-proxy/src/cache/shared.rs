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
//! a memory miss, bounded by the cluster's timeout. Redis failing (or backing off after a
//! failure) makes the tier absent, never an error: the request goes to the upstream.

use std::sync::Arc;
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
}

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
    /// The tier over `cluster`'s Redis.
    pub fn new(cluster: Arc<ClusterClient>) -> Self {
        SharedTier { cluster }
    }

    fn object_key(&self, primary: &str) -> String {
        format!("{}cache:obj:{primary}", self.cluster.prefix())
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}cache:tag:{tag}", self.cluster.prefix())
    }

    /// Copies what Redis holds for `primary` into `store`; whether it held anything.
    pub(crate) async fn load(&self, primary: &str, store: &Store) -> bool {
        let mut p = redis::pipe();
        p.cmd("HGETALL").arg(self.object_key(primary));
        let Some((fields,)) = self.cluster.query::<(Vec<(Vec<u8>, Vec<u8>)>,)>(&p).await else {
            return false;
        };
        let now = SystemTime::now();
        let mut found = false;
        for (_, record) in fields {
            match decode(&record, now) {
                Some((request, entry)) if entry.keep() > Duration::ZERO => {
                    store.insert(primary, &request, entry);
                    found = true;
                }
                Some(_) => {}
                None => tracing::debug!(primary, "unreadable shared cache record"),
            }
        }
        found
    }

    /// Writes `entry`, stored in memory for a request with `request` fields, to Redis in
    /// the background.
    pub(crate) fn save(self: &Arc<Self>, primary: &str, request: &HeaderMap, entry: &Entry) {
        let names = vary_names(&entry.headers);
        let field = secondary_suffix(&names, request);
        let mut varied = HeaderMap::new();
        for name in &names {
            for v in request.get_all(name) {
                varied.append(name.clone(), v.clone());
            }
        }
        let Some(record) = encode(entry, varied) else {
            return;
        };
        let keep = millis(entry.keep()).max(1);
        let object = self.object_key(primary);
        let mut p = redis::pipe();
        p.cmd("HSET")
            .arg(&object)
            .arg(field)
            .arg(record.as_ref())
            .ignore();
        // The hash lives as long as its longest-kept variant.
        p.cmd("PEXPIRE").arg(&object).arg(keep).arg("NX").ignore();
        p.cmd("PEXPIRE").arg(&object).arg(keep).arg("GT").ignore();
        for tag in entry.tags.iter() {
            let set = self.tag_key(tag);
            p.cmd("SADD").arg(&set).arg(primary).ignore();
            p.cmd("PEXPIRE").arg(&set).arg(keep).arg("NX").ignore();
            p.cmd("PEXPIRE").arg(&set).arg(keep).arg("GT").ignore();
        }
        let this = self.clone();
        tokio::spawn(async move {
            this.cluster.query::<()>(&p).await;
        });
    }

    /// Drops what `purge` names from Redis; whether Redis answered.
    pub async fn purge(&self, purge: &Purge) -> bool {
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
}
