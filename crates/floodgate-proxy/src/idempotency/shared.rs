//! Idempotency keys in the cluster's Redis (`idempotency.shared`), so that a retry that a
//! load balancer sends to another node is still recognised as a repeat.
//!
//! One string per key, `<prefix>idem:<route>:<client>\0<key>`, holding the state: `F` and
//! the fingerprint while the first request is in flight (claimed with `SET NX`, expiring
//! after [`IN_FLIGHT`] should its node die), then `D`, the fingerprint and the kept
//! response (4-byte length, JSON head, body) or `T` and the fingerprint (done, too large
//! to keep), for the route's TTL. A claim given up is deleted only while it is still the
//! claimer's own mark. When Redis cannot be reached the node's memory store decides, as
//! without `shared`.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::{Claim, Claimed, Fingerprint, Kept, Place};
use crate::ratelimit::cluster::ClusterClient;

/// How long a first request's claim outlives a node that died while holding it.
const IN_FLIGHT: Duration = Duration::from_secs(600);

/// One route's keys in Redis.
pub struct SharedKeys {
    cluster: Arc<ClusterClient>,
    route: String,
    ttl: Duration,
}

#[derive(Serialize, Deserialize)]
struct Head {
    #[serde(with = "http_serde::status_code")]
    status: StatusCode,
    #[serde(with = "http_serde::header_map")]
    headers: HeaderMap,
}

fn hex(fp: &Fingerprint) -> String {
    fp.iter().map(|b| format!("{b:02x}")).collect()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl SharedKeys {
    /// `route`'s keys over `cluster`, kept for `ttl`.
    pub fn new(cluster: Arc<ClusterClient>, route: &str, ttl: Duration) -> Self {
        SharedKeys {
            cluster,
            route: route.to_owned(),
            ttl,
        }
    }

    fn redis_key(&self, key: &str) -> String {
        format!("{}idem:{}:{key}", self.cluster.prefix(), self.route)
    }

    /// Claims `key` for a request with `fingerprint`, or says why not; `None` when Redis
    /// did not answer.
    pub(super) async fn claim(
        self: &Arc<Self>,
        key: &Arc<str>,
        fingerprint: Fingerprint,
    ) -> Option<Claimed> {
        let redis_key = self.redis_key(key);
        let mark = format!("F{}", hex(&fingerprint));
        // A state that vanishes between the two calls (its claim given up) is claimed
        // again, once.
        for _ in 0..2 {
            let mut p = redis::pipe();
            p.cmd("SET")
                .arg(&redis_key)
                .arg(&mark)
                .arg("NX")
                .arg("PX")
                .arg(millis(IN_FLIGHT.min(self.ttl)));
            p.cmd("GET").arg(&redis_key);
            let (set, state): (Option<String>, Option<Vec<u8>>) = self.cluster.query(&p).await?;
            if set.is_some() {
                return Some(Claimed::New(Claim {
                    place: Place::Redis(self.clone()),
                    key: key.clone(),
                    fingerprint,
                    kept: false,
                }));
            }
            if let Some(state) = state {
                return Some(read_state(&state, &fingerprint));
            }
        }
        None
    }

    /// Stores what the first request got, in the background.
    pub(super) fn keep(self: &Arc<Self>, key: &str, fingerprint: &Fingerprint, kept: &Kept) {
        let Some(state) = encode(fingerprint, kept) else {
            return;
        };
        let mut p = redis::pipe();
        p.cmd("SET")
            .arg(self.redis_key(key))
            .arg(state.as_ref())
            .arg("PX")
            .arg(millis(self.ttl))
            .ignore();
        self.spawn(p);
    }

    /// Gives a claim up (its answer is not kept), if the mark is still this claim's.
    pub(super) fn release(self: &Arc<Self>, key: &str, fingerprint: &Fingerprint) {
        let mut p = redis::pipe();
        p.cmd("EVAL")
            .arg("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")
            .arg(1)
            .arg(self.redis_key(key))
            .arg(format!("F{}", hex(fingerprint)))
            .ignore();
        self.spawn(p);
    }

    fn spawn(self: &Arc<Self>, p: redis::Pipeline) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = self.clone();
        rt.spawn(async move {
            this.cluster.query::<()>(&p).await;
        });
    }
}

/// What a state found in Redis means for a request with `fingerprint`.
fn read_state(state: &[u8], fingerprint: &Fingerprint) -> Claimed {
    let (tag, rest) = state.split_first().unwrap_or((&b'?', &[]));
    let same = rest.get(..64) == Some(hex(fingerprint).as_bytes());
    match (tag, same) {
        (_, false) => Claimed::Mismatch,
        (b'F', true) => Claimed::InFlight,
        (b'T', true) => Claimed::Kept(Arc::new(Kept::TooLarge {
            fingerprint: *fingerprint,
        })),
        (b'D', true) => match decode(&rest[64..], fingerprint) {
            Some(kept) => Claimed::Kept(Arc::new(kept)),
            // Unreadable (written by another version): safer refused than done twice.
            None => Claimed::InFlight,
        },
        _ => Claimed::InFlight,
    }
}

fn encode(fingerprint: &Fingerprint, kept: &Kept) -> Option<Bytes> {
    let mut out = BytesMut::new();
    match kept {
        Kept::TooLarge { .. } => {
            out.extend_from_slice(b"T");
            out.extend_from_slice(hex(fingerprint).as_bytes());
        }
        Kept::Response {
            status,
            headers,
            body,
            ..
        } => {
            out.extend_from_slice(b"D");
            out.extend_from_slice(hex(fingerprint).as_bytes());
            let head = Head {
                status: *status,
                headers: headers.clone(),
            };
            crate::record::encode(&head, body, &mut out)?;
        }
    }
    Some(out.freeze())
}

fn decode(record: &[u8], fingerprint: &Fingerprint) -> Option<Kept> {
    let (head, body) = crate::record::decode::<Head>(record)?;
    Some(Kept::Response {
        fingerprint: *fingerprint,
        status: head.status,
        headers: head.headers,
        body: Bytes::copy_from_slice(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_back_as_written() {
        let fp = [7u8; 32];
        let other = [8u8; 32];
        let mut headers = HeaderMap::new();
        headers.insert("location", "/orders/1".parse().unwrap());
        let kept = Kept::Response {
            fingerprint: fp,
            status: StatusCode::CREATED,
            headers: headers.clone(),
            body: Bytes::from_static(b"{\"order\": 1}"),
        };
        let state = encode(&fp, &kept).unwrap();
        match read_state(&state, &fp) {
            Claimed::Kept(k) => match &*k {
                Kept::Response {
                    status,
                    headers: h,
                    body,
                    ..
                } => {
                    assert_eq!(*status, StatusCode::CREATED);
                    assert_eq!(*h, headers);
                    assert_eq!(&body[..], b"{\"order\": 1}");
                }
                Kept::TooLarge { .. } => panic!("a response was kept"),
            },
            _ => panic!("kept state not read"),
        }
        assert!(matches!(read_state(&state, &other), Claimed::Mismatch));
        let too_large = encode(&fp, &Kept::TooLarge { fingerprint: fp }).unwrap();
        assert!(matches!(
            read_state(&too_large, &fp),
            Claimed::Kept(k) if matches!(*k, Kept::TooLarge { .. })
        ));
        let mark = format!("F{}", hex(&fp));
        assert!(matches!(
            read_state(mark.as_bytes(), &fp),
            Claimed::InFlight
        ));
        assert!(matches!(
            read_state(mark.as_bytes(), &other),
            Claimed::Mismatch
        ));
        assert!(matches!(read_state(b"", &fp), Claimed::Mismatch));
    }
}
