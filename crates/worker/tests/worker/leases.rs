//! Leases: a dead worker's claim expires and is taken over, its late outcome is fenced off, and
//! two workers on one backlog deliver everything exactly once.

use std::collections::HashMap;
use std::time::Duration;

use dispatch_domain::DeliveryStatus;
use dispatch_store::queries::deliveries::{self, Outcome};
use dispatch_test_support::receiver::Reply;
use serde_json::json;

use crate::helpers::{Harness, PATIENCE, Running, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_delivery_loses_its_lease_and_its_late_outcome_is_ignored() {
    let h = Harness::new().await;
    h.subscribe("sub_1", "/hook", None).await;
    h.ingest("evt_1", "order.created", json!({})).await;

    // "dead-worker" claims the delivery and never records anything. Its lease is long enough
    // for the next step to run well within it.
    let claimed = deliveries::claim(
        &mut *h.conn().await,
        "dead-worker",
        10,
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert_eq!(claimed.len(), 1);
    let id = claimed[0].id;

    let worker = h.worker(&[("DISPATCH_WORKER_ID", "live-worker")]);
    assert_eq!(
        worker.run_once().await.unwrap(),
        0,
        "a leased delivery is not claimable"
    );
    assert!(h.receiver.requests("/hook").is_empty());
    assert_eq!(h.delivery("evt_1", "sub_1").await.status, "processing");

    // Once the lease has expired, the live worker takes the delivery over (its attempt is held
    // by the receiver until the test lets it go).
    let leased_until = claimed[0].leased_until;
    eventually("the dead worker's lease expires", PATIENCE, || async {
        chrono::Utc::now() > leased_until + chrono::Duration::milliseconds(50)
    })
    .await;
    h.receiver.script("/hook", [Reply::ok().held()]);
    let step = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run_once().await }
    });
    h.receiver.wait_for("/hook", 1, PATIENCE).await;

    // Meanwhile the dead worker comes back and records an outcome: fenced off, since the
    // delivery is now leased by the live worker.
    let late = Outcome {
        delivery_id: id,
        leased_until,
        attempted: true,
        status: DeliveryStatus::Failed,
        next_attempt_at: None,
        status_code: Some(500),
        latency_ms: 1,
        error_code: Some("http_status".to_owned()),
        error: Some("HTTP 500".to_owned()),
        response_body: None,
    };
    let record_late = async || {
        deliveries::record_outcomes(
            &mut *h.conn().await,
            "dead-worker",
            std::slice::from_ref(&late),
        )
        .await
        .unwrap()
    };
    let recorded = record_late().await;
    assert!(
        recorded.is_empty(),
        "recorded {recorded:?} while leased by another worker"
    );
    let during = h.delivery("evt_1", "sub_1").await;
    assert_eq!((during.status.as_str(), during.attempts), ("processing", 0));
    assert!(h.attempts_of(id).await.is_empty());

    h.receiver.release(1);
    assert_eq!(step.await.unwrap().unwrap(), 1);
    assert_eq!(h.receiver.requests("/hook").len(), 1);
    let delivery = h.delivery("evt_1", "sub_1").await;
    assert_eq!(delivery.status, "delivered");
    assert_eq!(
        delivery.attempts, 1,
        "the dead worker's claim was not an attempt"
    );

    // And once the delivery is finished.
    let recorded = record_late().await;
    assert!(recorded.is_empty(), "recorded {recorded:?} after delivery");
    assert_eq!(h.delivery("evt_1", "sub_1").await, delivery);
    let attempts = h.attempts_of(id).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status_code, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_backlog_deliver_every_delivery_exactly_once() {
    let h = Harness::new().await;
    let paths = ["/a", "/b", "/c", "/d"];
    for (i, path) in paths.iter().enumerate() {
        // A little latency so both workers hold work at the same time.
        h.receiver
            .set_default(path, Reply::ok().delay(Duration::from_millis(5)));
        h.subscribe(&format!("sub_{i}"), path, Some("s3cret")).await;
    }
    let events = 50;
    for n in 0..events {
        h.ingest(&format!("evt_{n}"), "order.created", json!({"n": n}))
            .await;
    }
    let total = events * paths.len();
    assert_eq!(h.count_in("pending").await, i64::try_from(total).unwrap());

    let overrides = |id| [("DISPATCH_WORKER_ID", id), ("DISPATCH_MAX_IN_FLIGHT", "16")];
    let first = Running::start(&h.worker(&overrides("worker-a")));
    let second = Running::start(&h.worker(&overrides("worker-b")));

    h.receiver
        .wait_for_total(total, Duration::from_secs(60))
        .await;
    eventually(
        "every delivery is recorded as delivered",
        PATIENCE,
        || async { h.count_in("delivered").await == i64::try_from(total).unwrap() },
    )
    .await;
    let (a, b) = (first.stop().await, second.stop().await);

    let mut per_target: HashMap<(String, String), usize> = HashMap::new();
    for req in h.receiver.all_requests() {
        let id = req.header("webhook-id").unwrap().to_owned();
        *per_target.entry((id, req.path.clone())).or_default() += 1;
    }
    assert_eq!(
        per_target.len(),
        total,
        "every (event, destination) was sent"
    );
    let repeated: Vec<_> = per_target.iter().filter(|(_, n)| **n != 1).collect();
    assert!(repeated.is_empty(), "sent more than once: {repeated:?}");
    assert_eq!(h.receiver.total(), total);

    assert_eq!(a.recorded + b.recorded, total);
    assert_eq!((a.released, b.released), (0, 0));
    assert_eq!(h.attempt_count().await, i64::try_from(total).unwrap());
    assert!(h.all_deliveries().await.iter().all(|d| d.attempts == 1));
}
