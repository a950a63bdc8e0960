//! Hot reload under load: valid configs take effect, invalid ones are refused with the old
//! one still serving, and no request fails along the way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use http::StatusCode;

use crate::support::*;

fn versioned(up: std::net::SocketAddr, version: usize) -> String {
    let extra =
        format!("  - {{ name: v{version}, match: {{ path: /v{version} }}, upstream: backend }}\n");
    config(
        up,
        &format!(
            "  - {{ name: stable, match: {{ path_prefix: /stable }}, upstream: backend }}\n{extra}"
        ),
        "",
    )
}

fn broken(up: std::net::SocketAddr, version: usize) -> String {
    // Two mistakes: an unknown field and a route to an upstream that does not exist.
    config(
        up,
        &format!(
            "  - {{ name: v{version}, match: {{ path: /v{version} }}, upstream: missing, bogus: 1 }}\n"
        ),
        "",
    )
}

async fn reloads(gw: &Gateway) -> (f64, f64) {
    let text = gw.metrics().await;
    let value = |series: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|r| r.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    };
    (
        value("floodgate_config_reloads_total{result=\"success\"}"),
        value("floodgate_config_reloads_total{result=\"failure\"}"),
    )
}

/// Waits until the reload counters reach `want` (each reload is an event the gateway
/// reports in its metrics).
async fn wait_reloads(gw: &Gateway, want: (f64, f64)) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let got = reloads(gw).await;
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reloads {got:?}, want {want:?}\n{}",
            gw.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_drop_nothing() {
    let up = echo_upstream().await;
    let gw = Gateway::start(&versioned(up, 0));
    let url = gw.url("/stable");

    // A bounded load loop on a route present in every config.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut loaders = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
        loaders.push(tokio::spawn(async move {
            let client = client();
            for _ in 0..200_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let req = http::Request::get(&url)
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap();
                match client.request(req).await {
                    Ok(r) if r.status() == StatusCode::OK => {
                        use http_body_util::BodyExt;
                        match r.into_body().collect().await {
                            Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    let (mut good, mut bad) = (0.0, 0.0);
    for i in 1..=50 {
        if i % 2 == 0 {
            gw.write_config(&versioned(up, i));
            good += 1.0;
            wait_reloads(&gw, (good, bad)).await;
            let (s, _, _) = get(&gw.url(&format!("/v{i}"))).await;
            assert_eq!(s, StatusCode::OK, "route of config {i} is live");
            let (s, _, _) = get(&gw.url(&format!("/v{}", i - 2))).await;
            assert_eq!(
                s,
                StatusCode::NOT_FOUND,
                "route of the previous config is gone"
            );
        } else {
            gw.write_config(&broken(up, i));
            bad += 1.0;
            wait_reloads(&gw, (good, bad)).await;
            let (s, _, _) = get(&gw.url(&format!("/v{i}"))).await;
            assert_eq!(
                s,
                StatusCode::NOT_FOUND,
                "invalid config {i} must not take effect"
            );
            assert_eq!(
                gw.metric("floodgate_config_last_reload_successful").await,
                0.0
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request may fail during reloads"
    );
    assert!(ok.load(Ordering::Relaxed) > 50, "the load loop ran");
    // The counters move before the log lines reach us through the pipe: wait for the lines.
    gw.wait_log_count("configuration refused", 25)
        .expect("each invalid config is refused and logged");
    let refusals = gw
        .log()
        .lines()
        .filter(|l| l.contains("configuration refused"))
        .count();
    assert_eq!(refusals, 25, "each invalid config is refused and logged");
    assert!(
        gw.log().contains("unknown field `bogus`"),
        "the refusal names the error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_listener_changes_are_refused() {
    let up = echo_upstream().await;
    // A JWT key in a file the watcher does not look at (only the config file is watched):
    // replacing it changes nothing until SIGHUP re-reads everything. Keys and tokens from
    // PyJWT and cryptography.
    let keys = run_python(
        "import jwt, time, json\n\
         from cryptography.hazmat.primitives import serialization\n\
         from cryptography.hazmat.primitives.asymmetric import ec\n\
         out = {}\n\
         for n in ['one', 'two']:\n\
         \x20   k = ec.generate_private_key(ec.SECP256R1())\n\
         \x20   out[n + '_pem'] = k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()\n\
         \x20   out[n] = jwt.encode({'sub': 'x', 'exp': int(time.time()) + 600}, k, algorithm='ES256')\n\
         print(json.dumps(out))",
    );
    let keys: serde_json::Value = serde_json::from_str(&keys).unwrap();
    let with_jwt = |version: usize| {
        versioned(up, version).replace(
            "routes:\n",
            "routes:\n  - name: signed\n    match: { path: /signed }\n    upstream: backend\n    auth: { jwt: { keys: [ { algorithm: ES256, public_key_file: \"{dir}/key.pem\" } ] } }\n",
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key.pem");
    std::fs::write(&key_file, keys["one_pem"].as_str().unwrap()).unwrap();
    let gw = Gateway::start(&with_jwt(0).replace("{dir}", &dir.path().display().to_string()));
    let signed = |token: &str| {
        let auth = format!("Bearer {}", keys[token].as_str().unwrap());
        let url = gw.url("/signed");
        async move { get_with(&url, &[("authorization", &auth)]).await.0 }
    };
    assert_eq!(signed("one").await, StatusCode::OK);
    assert_eq!(signed("two").await, StatusCode::UNAUTHORIZED);
    std::fs::write(&key_file, keys["two_pem"].as_str().unwrap()).unwrap();
    assert_eq!(
        signed("two").await,
        StatusCode::UNAUTHORIZED,
        "not yet re-read"
    );
    gw.signal("HUP");
    wait_reloads(&gw, (1.0, 0.0)).await;
    assert_eq!(
        signed("two").await,
        StatusCode::OK,
        "SIGHUP read the new key"
    );
    let (_, _, status) = get(&format!("http://{}/status", gw.admin)).await;
    assert_eq!(json(&status)["last_reload"]["cause"], "SIGHUP");

    // A config change the watcher sees.
    gw.write_config(&with_jwt(1).replace("{dir}", &dir.path().display().to_string()));
    wait_reloads(&gw, (2.0, 0.0)).await;
    assert_eq!(get(&gw.url("/v1")).await.0, StatusCode::OK);

    let moved =
        versioned(up, 2).replace("address: 127.0.0.1:0\nadmin", "address: 127.0.0.1:1\nadmin");
    gw.write_config(&moved);
    wait_reloads(&gw, (2.0, 1.0)).await;
    gw.wait_log("needs a restart")
        .unwrap_or_else(|| panic!("refusal not logged:\n{}", gw.log()));
    let (status, _, body) = get(&gw.url("/v1")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the running config is kept: {}\n{}",
        String::from_utf8_lossy(&body),
        gw.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_says_what_changed_and_status_shows_the_last_one() {
    let up = echo_upstream().await;
    let gw = Gateway::start(&versioned(up, 0));
    let status = || async {
        let (_, _, body) = get(&format!("http://{}/status", gw.admin)).await;
        json(&body)
    };
    assert!(status().await["last_reload"].is_null(), "no reload yet");
    gw.write_config(&versioned(up, 1));
    wait_reloads(&gw, (1.0, 0.0)).await;
    let line = gw
        .wait_log("\"configuration reloaded\"")
        .expect("reload logged");
    assert!(
        line.contains("routes added: v1; routes removed: v0"),
        "the line says what changed: {line}"
    );
    let last = status().await["last_reload"].clone();
    assert_eq!(last["ok"], true, "{last}");
    assert_eq!(last["generation"], 2);
    assert_eq!(last["changes"][0], "routes added: v1");
    // A refused file: the reason, located, and nothing changed.
    gw.write_config(&broken(up, 2));
    wait_reloads(&gw, (1.0, 1.0)).await;
    let last = status().await["last_reload"].clone();
    assert_eq!(last["ok"], false, "{last}");
    let error = last["error"].as_str().unwrap();
    assert!(
        error.contains("routes[0].bogus: unknown field `bogus`"),
        "{error}"
    );
    // Routes are listed with their match, what they do and their policies.
    let routes = status().await["routes"].clone();
    assert_eq!(routes[0]["name"], "stable");
    assert_eq!(routes[0]["match"]["path_prefix"], "/stable");
    assert_eq!(routes[0]["upstream"], "backend");
}
