//! The cache across a fleet, against the real Redis (FLOODGATE_TEST_REDIS_URL, set by
//! .ci/run): with `cache.shared`, a response one gateway fetched is served by another
//! from Redis without reaching the origin; a purge on one gateway drops the response from
//! Redis and, by pub/sub, from every gateway's memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::{Response, StatusCode};

use crate::support::*;

/// Waits until `check` holds on Redis, for at most [`PATIENCE`].
async fn until_redis<F>(con: &mut redis::aio::MultiplexedConnection, what: &str, check: F)
where
    F: Fn(&mut redis::Cmd),
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut cmd = redis::Cmd::new();
        check(&mut cmd);
        let n: i64 = cmd.query_async(con).await.expect("redis");
        if n > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "redis never showed {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_share_responses_through_redis_and_purges_reach_all_of_them() {
    let Some(url) = redis_url() else { return };
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    let up = upstream(move |_req| {
        let n = h.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let mut resp = Response::new(full(format!("product v{n}")));
            let headers = resp.headers_mut();
            headers.insert("cache-control", "max-age=300".parse().unwrap());
            headers.insert("surrogate-key", "product-1 products".parse().unwrap());
            headers.insert("etag", format!("\"v{n}\"").parse().unwrap());
            resp
        }
    })
    .await;
    let prefix = unique_prefix();
    let cfg = format!(
        "listeners: [ {{ name: public, address: \"127.0.0.1:0\" }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ enabled: false }}
cluster:
  redis: {{ url: \"{url}\", key_prefix: \"{prefix}\", timeout: 5s }}
  heartbeat: 100ms
cache: {{ shared: true }}
upstreams:
  catalog:
    targets: [ \"{up}\" ]
routes:
  - name: products
    match: {{ path_prefix: /products }}
    upstream: catalog
    cache: {{ jitter: 0% }}
"
    );
    let a = Gateway::start(&cfg);
    let b = Gateway::start(&cfg);
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let object = format!("{prefix}cache:obj:127.0.0.1/products/1");

    let (s, _, body) = get(&a.url("/products/1")).await;
    assert_eq!((s, &body[..]), (StatusCode::OK, &b"product v1"[..]));
    until_redis(&mut con, "the stored response", |c| {
        c.arg("EXISTS").arg(&object);
    })
    .await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&object)
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(
        ttl > 300_000 && ttl <= 900_000,
        "kept for its freshness plus the time to revalidate it: {ttl} ms"
    );

    // The other gateway has never seen the URL: it finds it in Redis.
    let (s, h, body) = get(&b.url("/products/1")).await;
    assert_eq!((s, &body[..]), (StatusCode::OK, &b"product v1"[..]));
    assert!(
        h["cache-status"]
            .to_str()
            .unwrap()
            .starts_with("Floodgate; hit"),
        "{h:?}"
    );
    assert_eq!(h["etag"], "\"v1\"");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "one fetch for the fleet");
    let (_, _, status) = get(&format!("http://{}/cache", b.admin)).await;
    assert_eq!(json(&status)["shared_tier"], true);

    // Many clients at once on the gateway that lacks a URL the other stored: one of them
    // reads Redis, the others wait for it and read memory; none reaches the origin.
    get(&a.url("/products/2")).await;
    let object_2 = format!("{prefix}cache:obj:127.0.0.1/products/2");
    until_redis(&mut con, "the second response", |c| {
        c.arg("EXISTS").arg(&object_2);
    })
    .await;
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let url = b.url("/products/2");
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    for c in clients {
        let (s, _, body) = c.await.unwrap();
        assert_eq!((s, &body[..]), (StatusCode::OK, &b"product v2"[..]));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // Both subscribed, a purge by tag on one reaches Redis and both memories.
    let channel = format!("{prefix}cache:purge");
    until_redis(&mut con, "two subscribers", |c| {
        // PUBSUB NUMSUB answers [channel, count]; NUMPAT-free check via a Lua count.
        c.arg("EVAL")
            .arg("local r = redis.call('PUBSUB', 'NUMSUB', ARGV[1]); if r[2] >= 2 then return 1 end return 0")
            .arg(0)
            .arg(&channel);
    })
    .await;
    let (s, answer) = admin_post(&a, "/cache/purge", r#"{"tag": "product-1"}"#).await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    assert_eq!(answer["scope"], "broadcast");
    assert_eq!(answer["shared_tier"], "purged");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&object)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(exists, 0, "purged from Redis before the answer");
    let (_, h, body) = get(&a.url("/products/1")).await;
    assert_eq!(&body[..], b"product v3", "{h:?}");
    // The other gateway drops its copy when the broadcast arrives; until then it may
    // still answer from memory, never from Redis.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, h, body) = get(&b.url("/products/1")).await;
        if &body[..] != b"product v1" {
            assert!(body.starts_with(b"product v"), "{h:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the purge never reached the other gateway"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // By URL and by prefix too, sent to the other gateway: the first one's memory drops
    // its copy when the broadcast arrives, and its next request is a miss.
    for (purge, path) in [
        (r#"{"url": "http://127.0.0.1/products/2"}"#, "/products/2"),
        (r#"{"prefix": "http://127.0.0.1/products/"}"#, "/products/1"),
    ] {
        let (_, h, _) = get(&a.url(path)).await;
        until("a stored copy on the first gateway", || async {
            let (_, h, _) = get(&a.url(path)).await;
            h["cache-status"].to_str().unwrap().contains("hit")
        })
        .await;
        let _ = h;
        let (s, answer) = admin_post(&b, "/cache/purge", purge).await;
        assert_eq!(s, StatusCode::OK, "{answer}");
        assert_eq!(answer["scope"], "broadcast", "{answer}");
        until("the purge reaches the first gateway", || async {
            let (_, h, _) = get(&a.url(path)).await;
            !h["cache-status"].to_str().unwrap().contains("hit")
        })
        .await;
    }

    let _: () = redis::cmd("EVAL")
        .arg("for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end")
        .arg(0)
        .arg(format!("{prefix}*"))
        .query_async(&mut con)
        .await
        .unwrap();
}
