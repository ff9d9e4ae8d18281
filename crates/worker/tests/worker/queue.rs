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
    h.subscribe_unlimited("sub_1", "/hook").await;
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

    // Nothing in flight now, but it answered a moment ago: the next burst gets its whole room
    // in one claim, not the start again.
    for i in 300..320 {
        h.ingest(&format!("evt_{i}"), "order.created", json!({"n": i}))
            .await;
    }
    assert_eq!(
        worker.run_once().await.unwrap(),
        20.min(limit),
        "one claim takes the next burst"
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

/// `hanging` destinations that never answer (within the test) and one that answers at once,
/// every event going to all of them; the healthy one's deliveries all arrive while the hanging
/// requests are still in flight.
async fn healthy_flows_beside(hanging: usize) {
    let h = Harness::new().await;
    for i in 0..hanging {
        let path = format!("/hang{i}");
        h.receiver.set_default(&path, Reply::hang());
        h.subscribe(&format!("sub_hang{i}"), &path, None).await;
    }
    h.subscribe("sub_ok", "/ok", None).await;
    ingest_many(&h, 40).await;
    let worker = h.worker(&[
        // Far longer than the test: the hanging requests stay in flight throughout.
        ("DISPATCH_REQUEST_TIMEOUT_MS", "600000"),
        ("DISPATCH_SHUTDOWN_GRACE_SECS", "0"),
    ]);
    let running = Running::start(&worker);
    eventually(
        &format!("all 40 healthy deliveries arrive beside {hanging} hanging destinations"),
        PATIENCE * 2,
        || async { h.receiver.requests("/ok").len() == 40 },
    )
    .await;
    let hanging_now = (0..hanging)
        .map(|i| h.receiver.requests(&format!("/hang{i}")).len())
        .sum::<usize>();
    assert!(
        hanging_now <= 48,
        "destinations that never answered hold at most three quarters of the 64 slots: \
         {hanging_now}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_destination_flows_beside_one_that_hangs() {
    healthy_flows_beside(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_destination_flows_beside_four_that_hang() {
    healthy_flows_beside(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_destination_flows_beside_sixteen_that_hang() {
    healthy_flows_beside(16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_a_destination_that_hangs_does_not_hold_the_head_of_the_queue() {
    let h = Harness::new().await;
    h.receiver.set_default("/hang", Reply::hang());
    h.subscribe("sub_hang", "/hang", None).await;
    // 400 due deliveries to the hanging destination first, then the healthy one subscribes.
    h.execute(
        "WITH ev AS (
             INSERT INTO events (id, event_type, source, data)
             SELECT 'old_' || i, 'order.created', 'test', '{}' FROM generate_series(1, 400) i
             RETURNING id
         )
         INSERT INTO deliveries (event_id, subscription_id, next_attempt_at)
         SELECT id, 'sub_hang', now() - interval '1 minute' FROM ev",
    )
    .await;
    h.subscribe("sub_ok", "/ok", None).await;
    for i in 0..20 {
        h.ingest(&format!("evt_{i}"), "audit.logged", json!({"n": i}))
            .await;
    }
    let worker = h.worker(&[
        ("DISPATCH_REQUEST_TIMEOUT_MS", "600000"),
        ("DISPATCH_SHUTDOWN_GRACE_SECS", "0"),
    ]);
    let running = Running::start(&worker);
    eventually(
        "the healthy destination's 20 deliveries arrive behind 400 that hang",
        PATIENCE * 2,
        || async { h.receiver.requests("/ok").len() == 20 },
    )
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_waiting_for_a_destination_to_have_room_does_not_spin() {
    let h = Harness::new().await;
    h.receiver.set_default("/hang", Reply::hang());
    h.subscribe("sub_hang", "/hang", None).await;
    ingest_many(&h, 5).await;
    crate::resilience::count_claims(&h).await;
    // Nothing else would wake it for an hour; one request at a time to the destination.
    let worker = h.worker(&[
        ("DISPATCH_POLL_INTERVAL_MS", "3600000"),
        ("DISPATCH_REQUEST_TIMEOUT_MS", "600000"),
        ("DISPATCH_MAX_IN_FLIGHT_PER_DESTINATION", "1"),
        ("DISPATCH_SHUTDOWN_GRACE_SECS", "0"),
    ]);
    let running = Running::start(&worker);
    h.receiver.wait_for("/hang", 1, PATIENCE).await;

    // Four deliveries are due and cannot go until the hanging request ends: the worker waits
    // for that (this only ever lowers the count on a slow machine), not in a loop of claims.
    let before = crate::resilience::claims(&h).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let looked = crate::resilience::claims(&h).await - before;
    running.stop().await;
    assert!(
        looked <= 10,
        "{looked} claims in 2 s by a worker whose only destination has no room"
    );
    assert_eq!(h.receiver.requests("/hang").len(), 1);
}
