//! Failed attempts: retried with growing waits, given up after the last attempt or at once on a
//! permanent status, and `Retry-After` honoured.

use std::time::Duration;

use chrono::Utc;
use dispatch_test_support::receiver::Reply;
use serde_json::json;

use crate::helpers::{Harness, PATIENCE, Running, assert_scheduled_within, eventually};

#[tokio::test]
async fn a_receiver_answering_500_then_200_gets_the_event_on_a_later_attempt() {
    let h = Harness::new().await;
    h.receiver
        .script("/flaky", [Reply::status(500).body("oops"), Reply::ok()]);
    h.subscribe("sub_1", "/flaky", Some("s3cret")).await;
    h.ingest("evt_1", "order.created", json!({"n": 1})).await;
    let worker = h.worker(&[]);

    let before = Utc::now();
    assert_eq!(worker.run_once().await.unwrap(), 1);
    let after = Utc::now();
    let delivery = h.delivery("evt_1", "sub_1").await;
    assert_eq!(delivery.status, "retrying");
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.last_error.as_deref(), Some("HTTP 500"));
    let first = h.attempts_of(delivery.id).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].status_code, Some(500));
    assert_eq!(first[0].error_code.as_deref(), Some("http_status"));
    assert_eq!(first[0].response_body.as_deref(), Some("oops"));
    // Default policy: 1 s ± 10 %.
    assert_scheduled_within(
        delivery.next_attempt_at,
        first[0].created_at,
        before,
        after,
        Duration::from_millis(900),
        Duration::from_millis(1100),
    );

    h.make_due().await;
    assert_eq!(worker.run_once().await.unwrap(), 1);
    let delivery = h.delivery("evt_1", "sub_1").await;
    assert_eq!(delivery.status, "delivered");
    assert_eq!(delivery.attempts, 2);
    let attempts = h.attempts_of(delivery.id).await;
    let codes: Vec<_> = attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), Some(200)]);
    let numbers: Vec<_> = attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(attempts[1].error_code, None);

    // The same event, signed afresh each time.
    let got = h.receiver.requests("/flaky");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].body, got[1].body);
    assert_eq!(got[1].header("webhook-id"), Some("evt_1"));
}

#[tokio::test]
async fn the_wait_before_each_retry_doubles() {
    let h = Harness::new().await;
    h.receiver.script(
        "/flaky",
        [Reply::status(500), Reply::status(503), Reply::ok()],
    );
    h.subscribe("sub_1", "/flaky", None).await;
    h.ingest("evt_1", "order.created", json!({})).await;
    let worker = h.worker(&[]);

    let mut statuses = Vec::new();
    for (lo, hi) in [(900, 1100), (1800, 2200)] {
        let before = Utc::now();
        assert_eq!(worker.run_once().await.unwrap(), 1);
        let after = Utc::now();
        let delivery = h.delivery("evt_1", "sub_1").await;
        statuses.push(delivery.status.clone());
        let last = h.attempts_of(delivery.id).await.pop().unwrap();
        assert_scheduled_within(
            delivery.next_attempt_at,
            last.created_at,
            before,
            after,
            Duration::from_millis(lo),
            Duration::from_millis(hi),
        );
        h.make_due().await;
    }
    assert_eq!(worker.run_once().await.unwrap(), 1);
    let delivery = h.delivery("evt_1", "sub_1").await;
    statuses.push(delivery.status.clone());
    assert_eq!(statuses, ["retrying", "retrying", "delivered"]);
    let attempts = h.attempts_of(delivery.id).await;
    let codes: Vec<_> = attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), Some(503), Some(200)]);
    let errors: Vec<_> = attempts.iter().map(|a| a.error_code.as_deref()).collect();
    assert_eq!(errors, [Some("http_status"), Some("http_status"), None]);
}

#[tokio::test]
async fn an_always_failing_receiver_ends_failed_after_the_last_attempt() {
    let h = Harness::new().await;
    h.receiver.set_default("/down", Reply::status(500));
    h.subscribe("sub_1", "/down", None).await;
    h.ingest("evt_1", "order.created", json!({})).await;
    let worker = h.worker(&[("DISPATCH_RETRY_MAX_ATTEMPTS", "3")]);

    let mut statuses = Vec::new();
    for _ in 0..3 {
        assert_eq!(worker.run_once().await.unwrap(), 1);
        statuses.push(h.delivery("evt_1", "sub_1").await.status);
        h.make_due().await;
    }
    assert_eq!(statuses, ["retrying", "retrying", "failed"]);
    // A failed delivery is never claimed again.
    assert_eq!(worker.run_once().await.unwrap(), 0);

    let delivery = h.delivery("evt_1", "sub_1").await;
    assert_eq!(delivery.attempts, 3);
    let attempts = h.attempts_of(delivery.id).await;
    let numbers: Vec<_> = attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert!(
        attempts
            .iter()
            .all(|a| a.status_code == Some(500) && a.error_code.as_deref() == Some("http_status"))
    );
    assert_eq!(h.receiver.requests("/down").len(), 3);
}

#[tokio::test]
async fn a_410_answer_fails_the_delivery_at_once() {
    let h = Harness::new().await;
    h.receiver.set_default("/gone", Reply::status(410));
    h.subscribe("sub_1", "/gone", None).await;
    h.ingest("evt_1", "order.created", json!({})).await;
    let worker = h.worker(&[]);

    assert_eq!(worker.run_once().await.unwrap(), 1);
    let delivery = h.delivery("evt_1", "sub_1").await;
    assert_eq!(delivery.status, "failed");
    assert_eq!(delivery.attempts, 1);
    let attempts = h.attempts_of(delivery.id).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status_code, Some(410));
    assert_eq!(attempts[0].error_code.as_deref(), Some("http_status"));

    h.make_due().await;
    assert_eq!(worker.run_once().await.unwrap(), 0);
    assert_eq!(h.receiver.requests("/gone").len(), 1);
}

#[tokio::test]
async fn a_429_with_retry_after_schedules_the_next_attempt_that_much_later() {
    let h = Harness::new().await;
    h.receiver
        .script("/busy", [Reply::status(429).retry_after("120")]);
    // Retry-After is only part of the contract on 429 and 503.
    h.receiver
        .script("/broken", [Reply::status(500).retry_after("120")]);
    h.subscribe("sub_busy", "/busy", None).await;
    h.subscribe("sub_broken", "/broken", None).await;
    h.ingest("evt_1", "order.created", json!({})).await;
    let worker = h.worker(&[]);

    let before = Utc::now();
    assert_eq!(worker.run_once().await.unwrap(), 2);
    let after = Utc::now();

    let busy = h.delivery("evt_1", "sub_busy").await;
    assert_eq!(busy.status, "retrying");
    let attempt = h.attempts_of(busy.id).await.remove(0);
    assert_eq!(attempt.status_code, Some(429));
    assert_eq!(attempt.error_code.as_deref(), Some("http_status"));
    // Exactly 120 s: no jitter on a wait the destination asked for.
    assert_scheduled_within(
        busy.next_attempt_at,
        attempt.created_at,
        before,
        after,
        Duration::from_secs(120),
        Duration::from_secs(120),
    );

    let broken = h.delivery("evt_1", "sub_broken").await;
    let attempt = h.attempts_of(broken.id).await.remove(0);
    assert_scheduled_within(
        broken.next_attempt_at,
        attempt.created_at,
        before,
        after,
        Duration::from_millis(900),
        Duration::from_millis(1100),
    );

    // Not due for two minutes: not claimed although the receiver would now answer 200 (the
    // other delivery may or may not be due by now).
    worker.run_once().await.unwrap();
    assert_eq!(h.receiver.requests("/busy").len(), 1);
    let busy = h.delivery("evt_1", "sub_busy").await;
    assert_eq!((busy.status.as_str(), busy.attempts), ("retrying", 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_worker_makes_a_retry_when_it_falls_due_not_at_the_next_poll() {
    let h = Harness::new().await;
    h.receiver.script("/flaky", [Reply::status(500)]);
    h.subscribe("sub_1", "/flaky", None).await;
    // The poll timer never fires during the test; the retry is due 100 ms after the failure.
    let worker = h.worker(&[
        ("DISPATCH_POLL_INTERVAL_MS", "3600000"),
        ("DISPATCH_RETRY_INITIAL_DELAY_MS", "100"),
    ]);
    let running = Running::start(&worker);
    eventually("the worker listens", PATIENCE, || async {
        worker.is_listening()
    })
    .await;
    h.ingest("evt_1", "order.created", json!({})).await;
    h.notify().await;

    h.receiver
        .wait_for("/flaky", 2, Duration::from_secs(10))
        .await;
    eventually("the retry is recorded", PATIENCE, || async {
        h.count_in("delivered").await == 1
    })
    .await;
    running.stop().await;
}
