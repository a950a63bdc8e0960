//! Traffic management through the binary: a weighted split between upstreams (canary) and
//! mirroring to a shadow upstream that never answers, which the client must not notice.

use std::sync::Arc;

use http::{Response, StatusCode};
use tokio::sync::{Notify, mpsc};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_shares_a_route_between_upstreams_by_weight() {
    let (v1, v2) = (named_upstream("v1").await, named_upstream("v2").await);
    let gw = Gateway::start(&format!(
        "listeners: [ {{ name: public, address: \"127.0.0.1:0\" }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ enabled: false }}
upstreams:
  stable: {{ targets: [ \"{v1}\" ] }}
  canary: {{ targets: [ \"{v2}\" ] }}
routes:
  - match: {{ path_prefix: / }}
    split: [ {{ upstream: stable, weight: 3 }}, {{ upstream: canary, weight: 1 }} ]
"
    ));
    let mut counts = std::collections::HashMap::new();
    for _ in 0..8 {
        let (status, h, _) = get(&gw.url("/")).await;
        assert_eq!(status, StatusCode::OK);
        *counts
            .entry(h["x-target"].to_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(counts["v1"], 6);
    assert_eq!(counts["v2"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_gets_copies_and_a_stuck_one_does_not_hold_the_client() {
    let main = named_upstream("main").await;
    // The shadow reports each copy and then never answers.
    let (tx, mut copies) = mpsc::unbounded_channel();
    let never = Arc::new(Notify::new());
    let shadow = upstream(move |req| {
        let (tx, never) = (tx.clone(), never.clone());
        async move {
            let host = req.headers()["host"].to_str().unwrap().to_owned();
            let _sent = tx.send((req.uri().path().to_owned(), host));
            never.notified().await;
            Response::new(full("unreachable"))
        }
    })
    .await;
    let gw = Gateway::start(&format!(
        "listeners: [ {{ name: public, address: \"127.0.0.1:0\" }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ enabled: false }}
upstreams:
  main: {{ targets: [ \"{main}\" ] }}
  shadow: {{ targets: [ \"{shadow}\" ] }}
routes:
  - match: {{ path_prefix: / }}
    upstream: main
    mirror: {{ upstream: shadow }}
"
    ));
    for i in 0..5 {
        let (status, h, _) =
            get_with(&gw.url(&format!("/item/{i}")), &[("host", "shop.test")]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h["x-target"], "main");
    }
    let mut seen = Vec::new();
    for _ in 0..5 {
        let copy = tokio::time::timeout(PATIENCE, copies.recv())
            .await
            .expect("a copy reached the shadow")
            .unwrap();
        seen.push(copy);
    }
    seen.sort();
    assert_eq!(
        seen[0],
        ("/item/0".to_owned(), "shop.test-shadow".to_owned())
    );
    assert_eq!(seen[4].0, "/item/4");
}
