//! Graceful shutdown: SIGTERM stops new connections and lets requests in flight finish.

use std::sync::Arc;

use http::StatusCode;
use tokio::sync::{Notify, mpsc};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight() {
    let release = Arc::new(Notify::new());
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<()>();
    let held = release.clone();
    let up = upstream(move |_req| {
        let held = held.clone();
        let arrived_tx = arrived_tx.clone();
        async move {
            arrived_tx.send(()).unwrap();
            held.notified().await;
            http::Response::new(full("finished"))
        }
    })
    .await;
    let mut gw = Gateway::start(&config(
        up,
        "  - { name: all, match: { path_prefix: / }, upstream: backend }\n",
        "",
    ));
    let url = gw.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    arrived.recv().await.unwrap();

    gw.signal("TERM");
    gw.wait_log("shutting down").expect("shutdown logged");
    // New connections are refused once the listener is closed.
    let addr = gw.addr();
    let deadline = std::time::Instant::now() + PATIENCE;
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "listener still accepting"
        );
        tokio::task::yield_now().await;
    }
    // The admin listener stays up during the drain and says not ready.
    let (status, _, _) = get(&format!("http://{}/readyz", gw.admin)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // The request in flight still completes.
    release.notify_one();
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"finished");
    let exit = gw.wait_exit();
    assert!(exit.success(), "exit status {exit:?}");
}
