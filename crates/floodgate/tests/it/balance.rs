//! Load balancing through the binary, counted at real upstream servers: smooth weighted
//! round robin's exact shares, least request avoiding a busy target, consistent hashing
//! keeping a key on one target, and bounded load moving a hot key off a full one.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Response, StatusCode};
use tokio::sync::{Notify, mpsc};

use crate::support::*;

/// A server that reports each arrival and holds the request until released.
async fn holding(
    name: &'static str,
    arrived: mpsc::UnboundedSender<&'static str>,
    release: Arc<Notify>,
) -> SocketAddr {
    upstream(move |_req| {
        let (arrived, release) = (arrived.clone(), release.clone());
        async move {
            let _sent = arrived.send(name);
            release.notified().await;
            Response::new(full(name))
        }
    })
    .await
}

async fn target_of(gw: &Gateway, headers: &[(&str, &str)]) -> String {
    let (status, h, _) = get_with(&gw.url("/"), headers).await;
    assert_eq!(status, StatusCode::OK);
    h["x-target"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_shares_follow_the_weights_exactly() {
    let (a, b, c) = (
        named_upstream("a").await,
        named_upstream("b").await,
        named_upstream("c").await,
    );
    let gw = pool_gateway(&format!(
        "    targets: [ {{ address: \"{a}\", weight: 3 }}, \"{b}\", {{ address: \"{c}\", weight: 2 }} ]"
    ));
    let mut counts = std::collections::HashMap::new();
    // Two whole cycles of 6.
    for _ in 0..12 {
        *counts.entry(target_of(&gw, &[]).await).or_insert(0) += 1;
    }
    assert_eq!(counts["a"], 6);
    assert_eq!(counts["b"], 2);
    assert_eq!(counts["c"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_sends_the_next_request_to_the_idle_target() {
    let (tx, mut arrived) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let a = holding("a", tx.clone(), release.clone()).await;
    let b = holding("b", tx, release.clone()).await;
    let gw = pool_gateway(&format!(
        "    balance: least_request\n    targets: [ \"{a}\", \"{b}\" ]"
    ));
    let url = gw.url("/");
    let mut held = Vec::new();
    let u = url.clone();
    held.push(tokio::spawn(async move { get(&u).await.0 }));
    let first = arrived.recv().await.unwrap();
    // With one target busy, the other is the less loaded of the two choices.
    let u = url.clone();
    held.push(tokio::spawn(async move { get(&u).await.0 }));
    let second = arrived.recv().await.unwrap();
    assert_ne!(first, second);
    release.notify_waiters();
    for h in held {
        // A release may come before a handler waits: release again until all are done.
        until("the held request finishes", || {
            release.notify_waiters();
            let done = h.is_finished();
            async move { done }
        })
        .await;
        assert_eq!(h.await.unwrap(), StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_keeps_each_key_on_one_target() {
    let (a, b, c) = (
        named_upstream("a").await,
        named_upstream("b").await,
        named_upstream("c").await,
    );
    let gw = pool_gateway(&format!(
        "    balance: consistent_hash\n    hash_on: \"header:x-user\"\n    targets: [ \"{a}\", \"{b}\", \"{c}\" ]"
    ));
    let mut used = std::collections::HashSet::new();
    for user in 0..30 {
        let user = format!("user-{user}");
        let first = target_of(&gw, &[("x-user", &user)]).await;
        for _ in 0..3 {
            assert_eq!(target_of(&gw, &[("x-user", &user)]).await, first, "{user}");
        }
        used.insert(first);
    }
    // 30 keys over 3 targets: all three are used (a miss has probability ~3 × (2/3)^30).
    assert_eq!(used.len(), 3, "{used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_load_moves_a_hot_key_off_a_full_target() {
    let (tx, mut arrived) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let a = holding("a", tx.clone(), release.clone()).await;
    let b = holding("b", tx, release.clone()).await;
    let gw = pool_gateway(&format!(
        "    balance: consistent_hash\n    hash_on: \"cookie:session\"\n    hash_bounded_load: 1.0\n    targets: [ \"{a}\", \"{b}\" ]"
    ));
    let url = gw.url("/");
    let send = |url: String| {
        tokio::spawn(async move {
            get_with(&url, &[("cookie", "theme=dark; session=hot")])
                .await
                .0
        })
    };
    // The first request holds the key's own target: at capacity (1 = ⌈1.0 × 2 / 2⌉).
    let first_req = send(url.clone());
    let first = arrived.recv().await.unwrap();
    let second_req = send(url.clone());
    let second = arrived.recv().await.unwrap();
    assert_ne!(first, second, "the hot key spilled to the other target");
    for h in [first_req, second_req] {
        until("the held request finishes", || {
            release.notify_waiters();
            let done = h.is_finished();
            async move { done }
        })
        .await;
        assert_eq!(h.await.unwrap(), StatusCode::OK);
    }
    // Idle again: the key goes back to its own target.
    let third_req = send(url);
    assert_eq!(arrived.recv().await.unwrap(), first);
    until("the third request finishes", || {
        release.notify_waiters();
        let done = third_req.is_finished();
        async move { done }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_keeps_away_from_a_slow_target() {
    // One target answers after 100 ms, the other at once. Once each has a latency sample,
    // every choice between them goes to the fast one (its cost is far below the slow one's).
    let slow = upstream(|_req| async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut resp = Response::new(full("slow"));
        resp.headers_mut()
            .insert("x-target", "slow".parse().unwrap());
        resp
    })
    .await;
    let fast = named_upstream("fast").await;
    let gw = pool_gateway(&format!(
        "    balance: peak_ewma\n    targets: [ \"{slow}\", \"{fast}\" ]"
    ));
    let mut to_slow = 0;
    for _ in 0..50 {
        if target_of(&gw, &[]).await == "slow" {
            to_slow += 1;
        }
    }
    // At most the first few, before the slow target's first sample comes back.
    assert!(to_slow <= 3, "{to_slow} of 50 went to the slow target");
}
