//! Graceful shutdown: in-flight deliveries finish and are recorded, unstarted work stays queued,
//! and whatever cannot finish within the grace period is handed back, never left `processing`.

use std::time::Duration;

use dispatch_test_support::receiver::Reply;
use serde_json::json;

use crate::helpers::{Harness, PATIENCE, Running};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_drains_in_flight_deliveries_and_loses_nothing() {
    let h = Harness::new().await;
    h.receiver
        .set_default("/slow", Reply::ok().delay(Duration::from_millis(500)));
    h.subscribe("sub_1", "/slow", None).await;
    let events = 12;
    for n in 0..events {
        h.ingest(&format!("evt_{n}"), "order.created", json!({"n": n}))
            .await;
    }
    let worker = h.worker(&[("DISPATCH_MAX_IN_FLIGHT", "3")]);
    let running = Running::start(&worker);

    h.receiver.wait_for("/slow", 1, PATIENCE).await;
    let summary = running.stop().await;

    let counts = h.status_counts().await;
    let delivered = counts.get("delivered").copied().unwrap_or(0);
    let pending = counts.get("pending").copied().unwrap_or(0);
    assert_eq!(
        counts.get("processing"),
        None,
        "left processing: {counts:?}"
    );
    assert_eq!(delivered + pending, events, "{counts:?}");
    // Every request the receiver got was waited for and recorded, none abandoned.
    let received = h.receiver.total();
    assert!(received >= 1);
    assert_eq!(i64::try_from(received).unwrap(), delivered, "{counts:?}");
    assert_eq!(summary.recorded, received, "{summary:?}");
    assert_eq!(summary.released, 0, "{summary:?}");
    assert_eq!(h.attempt_count().await, delivered);
    // The leftovers are ordinary pending deliveries another worker can pick up at once.
    assert!(
        h.all_deliveries()
            .await
            .iter()
            .filter(|d| d.status == "pending")
            .all(|d| d.attempts == 0)
    );
    let next = h.worker(&[("DISPATCH_WORKER_ID", "worker-b")]);
    let mut rest = 0;
    while h.count_in("pending").await > 0 {
        rest += next.run_once().await.unwrap();
    }
    assert_eq!(i64::try_from(rest).unwrap(), pending);
    assert_eq!(h.count_in("delivered").await, events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_unfinished_when_the_grace_period_ends_are_handed_back() {
    let h = Harness::new().await;
    h.receiver.set_default("/hang", Reply::hang());
    h.subscribe("sub_1", "/hang", None).await;
    // Two: a new destination starts at two requests in flight.
    for n in 0..2 {
        h.ingest(&format!("evt_{n}"), "order.created", json!({"n": n}))
            .await;
    }
    let worker = h.worker(&[("DISPATCH_SHUTDOWN_GRACE_SECS", "0")]);
    let running = Running::start(&worker);

    h.receiver.wait_for("/hang", 2, PATIENCE).await;
    assert_eq!(h.count_in("processing").await, 2);
    let summary = running.stop().await;

    assert_eq!(summary.recorded, 0, "{summary:?}");
    assert_eq!(summary.released, 2, "{summary:?}");
    // Back in the queue, due at once, with no attempt counted or recorded.
    let deliveries = h.all_deliveries().await;
    assert!(
        deliveries
            .iter()
            .all(|d| d.status == "pending" && d.attempts == 0),
        "{deliveries:?}"
    );
    assert_eq!(h.attempt_count().await, 0);
    h.receiver.set_default("/hang", Reply::ok());
    let next = h.worker(&[("DISPATCH_WORKER_ID", "worker-b")]);
    assert_eq!(next.run_once().await.unwrap(), 2);
    assert_eq!(h.count_in("delivered").await, 2);
}
