//! Wake-ups: a NOTIFY starts a delivery without waiting for the poll timer, also after the
//! LISTEN connection was dropped and re-established.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Harness, PATIENCE, Running, eventually};

/// A worker whose poll timer never fires during a test.
fn no_polling() -> [(&'static str, &'static str); 1] {
    [("DISPATCH_POLL_INTERVAL_MS", "3600000")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_wakes_the_worker_without_polling() {
    let h = Harness::new().await;
    h.subscribe("sub_1", "/hook", None).await;
    let worker = h.worker(&no_polling());
    assert!(!worker.is_listening());
    let running = Running::start(&worker);
    eventually("the worker listens", PATIENCE, || async {
        worker.is_listening()
    })
    .await;

    h.ingest("evt_1", "order.created", json!({})).await;
    h.notify().await;
    let got = h
        .receiver
        .wait_for("/hook", 1, Duration::from_secs(10))
        .await;
    assert_eq!(got[0].header("webhook-id"), Some("evt_1"));
    eventually("the delivery is recorded", PATIENCE, || async {
        h.count_in("delivered").await == 1
    })
    .await;
    let summary = running.stop().await;
    assert_eq!(summary.recorded, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_reconnects_after_its_connection_is_terminated() {
    let h = Harness::new().await;
    h.subscribe("sub_1", "/hook", None).await;
    let worker = h.worker(&no_polling());
    let running = Running::start(&worker);
    eventually("the worker listens", PATIENCE, || async {
        worker.is_listening()
    })
    .await;
    h.ingest("evt_1", "order.created", json!({})).await;
    h.notify().await;
    h.receiver
        .wait_for("/hook", 1, Duration::from_secs(10))
        .await;

    let old = h.listen_backends().await;
    assert_eq!(old.len(), 1, "one LISTEN connection: {old:?}");
    assert_eq!(h.terminate_listen_backends().await, 1);
    eventually("a new LISTEN connection is up", PATIENCE, || async {
        let now = h.listen_backends().await;
        worker.is_listening() && now.len() == 1 && now != old
    })
    .await;
    // Let the wake-up that follows the reconnect pass, so the delivery below is started by the
    // NOTIFY itself.
    tokio::time::sleep(Duration::from_millis(300)).await;

    h.ingest("evt_2", "order.created", json!({})).await;
    h.notify().await;
    let got = h
        .receiver
        .wait_for("/hook", 2, Duration::from_secs(10))
        .await;
    assert_eq!(got[1].header("webhook-id"), Some("evt_2"));
    eventually("both deliveries are recorded", PATIENCE, || async {
        h.count_in("delivered").await == 2
    })
    .await;
    running.stop().await;
}
