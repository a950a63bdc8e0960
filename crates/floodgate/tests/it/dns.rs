//! Target names: a name that resolves to several addresses becomes one target per address,
//! and a changed answer moves traffic by itself. The answers come from a hosts-format file
//! in the test's directory (`dns.hosts_file`), so no system resolver is involved.

use std::time::Duration;

use http::Response;

use crate::support::*;

async fn named_on(bind: &str, name: &'static str) -> std::net::SocketAddr {
    upstream_on(bind, move |_req| async move {
        let mut resp = Response::new(full(name));
        resp.headers_mut()
            .insert("x-target", http::HeaderValue::from_static(name));
        resp
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_becomes_one_target_per_address_and_follows_changes() {
    // Two servers on one port, on two loopback addresses.
    let a = named_on("127.0.0.2:0", "a").await;
    let _b = named_on(&format!("127.0.0.3:{}", a.port()), "b").await;
    let port = a.port();
    let cfg = format!(
        "listeners: [ {{ name: public, address: \"127.0.0.1:0\" }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ enabled: false }}
dns: {{ refresh: 50ms, hosts_file: \"{{dir}}/hosts\" }}
upstreams:
  pool: {{ targets: [ \"api.test:{port}\" ] }}
routes:
  - {{ match: {{ path_prefix: / }}, upstream: pool }}
"
    );
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.2 api.test\n127.0.0.3 api.test\n").unwrap();
    let gw = Gateway::start(&cfg.replace("{dir}", &dir.path().display().to_string()));
    gw.wait_log("target names resolved").expect("resolved");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        let (_, h, _) = get(&gw.url("/")).await;
        seen.insert(h["x-target"].to_str().unwrap().to_owned());
    }
    assert_eq!(seen.len(), 2, "both addresses are targets: {seen:?}");

    // The name now points at one address only: traffic follows by itself.
    std::fs::write(&hosts, "127.0.0.3 api.test\n").unwrap();
    let mut moved = false;
    for _ in 0..500 {
        let mut only_b = true;
        for _ in 0..4 {
            let (_, h, _) = get(&gw.url("/")).await;
            only_b &= h["x-target"] == "b";
        }
        if only_b {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(moved, "traffic did not follow the new answer");
    let (_, _, status) = get(&format!("http://{}/status", gw.admin)).await;
    let targets = &json(&status)["upstreams"]["pool"]["targets"];
    assert_eq!(targets.as_array().map(Vec::len), Some(1));
    assert_eq!(targets[0]["address"], format!("127.0.0.3:{port}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_names_for_one_address_are_one_target() {
    let a = named_on("127.0.0.4:0", "a").await;
    let port = a.port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hosts"),
        "127.0.0.4 api.test\n127.0.0.4 www.test\n",
    )
    .unwrap();
    let gw = Gateway::start(
        &format!(
            "listeners: [ {{ name: public, address: \"127.0.0.1:0\" }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ enabled: false }}
dns: {{ refresh: 1h, hosts_file: \"{{dir}}/hosts\" }}
upstreams:
  pool: {{ targets: [ \"api.test:{port}\", \"www.test:{port}\" ] }}
routes:
  - {{ match: {{ path_prefix: / }}, upstream: pool }}
"
        )
        .replace("{dir}", &dir.path().display().to_string()),
    );
    gw.wait_log("target names resolved").expect("resolved");
    let (_, _, status) = get(&format!("http://{}/status", gw.admin)).await;
    let targets = &json(&status)["upstreams"]["pool"]["targets"];
    assert_eq!(targets.as_array().map(Vec::len), Some(1), "{targets}");
    assert_eq!(targets[0]["address"], format!("127.0.0.4:{port}"));
}
