//! Bodies stream through without being buffered: 1 GiB each way while the gateway's resident
//! memory stays flat.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;

use crate::support::*;

const GIB: u64 = 1 << 30;

/// Samples the gateway's RSS until told to stop; returns the peak in KiB.
fn watch_rss(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let rss = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0);
            peak = peak.max(rss);
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_each_way_with_flat_memory() {
    let up = upstream(|req: Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/download" {
            return http::Response::new(Generated::new(GIB, 64 * 1024).boxed());
        }
        // Count the upload frame by frame, keeping nothing.
        let mut body = req.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => return json_response(StatusCode::BAD_REQUEST, &serde_json::json!({})),
            }
        }
        json_response(StatusCode::OK, &serde_json::json!({ "received": n }))
    })
    .await;
    let cfg = config(
        up,
        "  - { name: all, match: { path_prefix: / }, upstream: backend }\n",
        "",
    )
    .replace(
        "    address: 127.0.0.1:0\nadmin",
        "    address: 127.0.0.1:0\n    limits: { max_body_bytes: 2GiB }\nadmin",
    );
    let gw = Gateway::start(&cfg);
    // Warm up: first request allocates pools and buffers.
    assert_eq!(get(&gw.url("/download-warm")).await.0, StatusCode::OK);
    let baseline = gw.rss_kib();

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = watch_rss(gw.pid(), stop.clone());

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let req = Request::post(gw.url("/upload"))
        .body(Generated::new(GIB, 64 * 1024))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(json(&body)["received"], GIB);

    let resp = get_stream(&gw.url("/download")).await;
    let received = Arc::new(AtomicU64::new(0));
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let f = frame.unwrap();
        received.fetch_add(
            f.data_ref().map_or(0, |d| d.len() as u64),
            Ordering::Relaxed,
        );
    }
    assert_eq!(received.load(Ordering::Relaxed), GIB);

    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let growth_mib = peak.saturating_sub(baseline) / 1024;
    assert!(
        growth_mib < 64,
        "RSS grew by {growth_mib} MiB while 2 GiB streamed (baseline {baseline} KiB, peak {peak} KiB)"
    );
}

async fn get_stream(url: &str) -> http::Response<hyper::body::Incoming> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    client
        .request(
            Request::get(url)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap()
}
