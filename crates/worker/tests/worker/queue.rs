//! Claiming only what can be sent: a destination's concurrency limit adapts (grows with
//! answers, halves on timeouts), nothing is claimed only to be deferred, and the worker keeps
//! the hot queue vacuumed.

use std::time::Duration;

use dispatch_test_support::receiver::Reply;
use dispatch_worker::resilience::concurrency::INITIAL_LIMIT;
use serde_json::json;

use crate::helpers::{Harness, PATIENCE, Running, eventually};

async fn ingest_many(h: &Harness, n: usize) {
    for i in 0..n {
        h.ingest(&format!("evt_{i}"), "order.created", json!({"n": i}))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_answers_gets_more_slots_and_nothing_is_claimed_to_be_written_back() {
    let h = Harness::new().await;
    h.receiver
        .set_default("/hook", Reply::ok().delay(Duration::from_millis(20)));
    h.subscribe_limited(
        "sub_1",
        "/hook",
        dispatch_store::models::RateLimit {
            per_second: 100_000.0,
            burst: 100_000,
        },
    )
    .await;
    ingest_many(&h, 300).await;
    let worker = h.worker(&[]);
    let running = Running::start(&worker);
    eventually("all 300 are delivered", PATIENCE * 2, || async {
        h.count_in("delivered").await == 300
    })
    .await;
    let summary = running.stop().await;
    assert_eq!(summary.recorded, 300);
    assert_eq!(
        summary.deferred, 0,
        "one destination, no rate limit: every claimed delivery was sent, none written back"
    );
    assert_eq!(h.attempt_count().await, 300);
    let limit = worker.destinations().limit_of("sub_1").unwrap();
    assert!(
        limit > INITIAL_LIMIT,
        "300 answers raised the limit from {INITIAL_LIMIT}, to {limit}"
    );
}

#[tokio::test]
async fn a_destination_that_times_out_is_held_to_one_request_at_a_time() {
    let h = Harness::new().await;
    h.receiver.set_default("/hang", Reply::hang());
    h.subscribe("sub_hang", "/hang", None).await;
    ingest_many(&h, 30).await;
    let worker = h.worker(&[
        ("DISPATCH_REQUEST_TIMEOUT_MS", "200"),
        ("DISPATCH_RETRY_INITIAL_DELAY_MS", "1"),
        ("DISPATCH_BREAKER_MIN_REQUESTS", "100000"),
    ]);

    assert_eq!(worker.run_once().await.unwrap(), INITIAL_LIMIT);
    // Eight timeouts halve the limit down to one.
    assert_eq!(worker.destinations().limit_of("sub_hang"), Some(1));
    h.make_due().await;
    assert_eq!(
        worker.run_once().await.unwrap(),
        1,
        "one request at a time to a destination that does not answer"
    );
}

#[tokio::test]
async fn the_worker_vacuums_the_queue_when_dead_rows_pile_up_unless_told_not_to() {
    let h = Harness::new().await;
    h.execute("ALTER TABLE delivery_queue SET (autovacuum_enabled = false)")
        .await;
    h.subscribe("sub_1", "/hook", None).await;
    h.execute(
        "WITH ev AS (
             INSERT INTO events (id, event_type, source, data)
             SELECT 'e' || i, 'order.created', 'test', '{}' FROM generate_series(1, 3000) i
             RETURNING id
         )
         INSERT INTO deliveries (event_id, subscription_id) SELECT id, 'sub_1' FROM ev",
    )
    .await;
    h.execute("UPDATE deliveries SET status = 'delivered', attempts = 1")
        .await;
    // Statistics reach the shared view when a transaction ends, at most once a second.
    h.execute("SELECT pg_stat_force_next_flush()").await;
    h.execute("SELECT 1").await;

    let hands_off = h.worker(&[("DISPATCH_QUEUE_VACUUM_SECS", "0")]);
    assert!(!hands_off.maintain_queue().await.unwrap(), "told not to");
    let worker = h.worker(&[]);
    assert!(worker.maintain_queue().await.unwrap(), "3 000 dead rows");
    h.execute("SELECT pg_stat_force_next_flush()").await;
    h.execute("SELECT 1").await;
    assert!(
        !worker.maintain_queue().await.unwrap(),
        "nothing left worth a vacuum"
    );
}
