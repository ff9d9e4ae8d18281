//! Per-destination resilience end to end: rate limits defer without spending attempts, circuits
//! open on failures and every worker's claim respects them, one hanging destination cannot take
//! every slot, the fleet shares a destination's rate limit, and idle stacks are dropped.

use std::time::Duration;

use chrono::Utc;
use dispatch_domain::DeliveryStatus;
use dispatch_domain::breaker::CircuitState;
use dispatch_domain::retry::RetryPolicy;
use dispatch_store::models::RateLimit;
use dispatch_store::queries::deliveries;
use dispatch_test_support::receiver::Reply;
use dispatch_worker::deliver;
use serde_json::json;

use crate::helpers::{Harness, PATIENCE, Running, eventually};

mod idle;

pub(crate) use idle::{claims, count_claims};

/// How many deliveries are in `status` for one subscription.
async fn count_for(h: &Harness, subscription_id: &str, status: &str) -> usize {
    h.all_deliveries()
        .await
        .iter()
        .filter(|d| d.subscription_id == subscription_id && d.status == status)
        .count()
}

async fn ingest_many(h: &Harness, n: usize) {
    for i in 0..n {
        h.ingest(&format!("evt_{i}"), "order.created", json!({"n": i}))
            .await;
    }
}

#[tokio::test]
async fn a_delivery_held_back_by_the_rate_limit_waits_without_spending_an_attempt() {
    let h = Harness::new().await;
    h.subscribe_limited(
        "sub_slow",
        "/slow",
        RateLimit {
            per_second: 0.5,
            burst: 1,
        },
    )
    .await;
    ingest_many(&h, 2).await;
    let worker = h.worker(&[]);

    let before = Utc::now();
    assert_eq!(worker.run_once().await.unwrap(), 2, "both are claimed");
    let after = Utc::now();

    assert_eq!(
        h.receiver.requests("/slow").len(),
        1,
        "one token, one request"
    );
    let all = h.all_deliveries().await;
    let delivered: Vec<_> = all.iter().filter(|d| d.status == "delivered").collect();
    assert_eq!(delivered.len(), 1, "{all:?}");
    assert_eq!(delivered[0].attempts, 1);
    assert_eq!(h.attempts_of(delivered[0].id).await.len(), 1);
    assert_eq!(
        h.attempt_count().await,
        1,
        "deferrals write no attempt rows"
    );

    let waiting: Vec<_> = all.iter().filter(|d| d.status != "delivered").collect();
    assert_eq!(waiting.len(), 1);
    // The next token is 1 / 0.5 = 2 s after the one taken during the step.
    let (lo, hi) = (
        before + chrono::Duration::milliseconds(1990),
        after + chrono::Duration::milliseconds(2010),
    );
    for d in waiting {
        assert_eq!(
            d.status, "pending",
            "never attempted, so pending again: {d:?}"
        );
        assert_eq!(d.attempts, 0, "no attempt spent: {d:?}");
        assert_eq!(d.last_error, None);
        assert!(
            d.next_attempt_at >= lo && d.next_attempt_at <= hi,
            "deferred to {}, expected about 2 s after the step ({before} .. {after})",
            d.next_attempt_at
        );
    }
    assert_eq!(
        worker.run_once().await.unwrap(),
        0,
        "deferred deliveries are not due before their time"
    );
}

#[tokio::test]
async fn a_destination_failing_three_times_opens_its_circuit_for_every_worker() {
    let h = Harness::new().await;
    h.receiver.set_default("/down", Reply::status(500));
    h.subscribe("sub_down", "/down", None).await;
    h.ingest("evt_1", "order.created", json!({})).await;
    let settings: &[(&str, &str)] = &[
        ("DISPATCH_RETRY_INITIAL_DELAY_MS", "1"),
        // Long enough that the circuit is certainly still open when the test looks.
        ("DISPATCH_BREAKER_OPEN_SECS", "3600"),
    ];
    let first = h.worker(settings);

    for attempt in 1..=3 {
        h.make_due().await;
        assert_eq!(first.run_once().await.unwrap(), 1, "attempt {attempt}");
        let sub = h.subscription("sub_down").await;
        if attempt < 3 {
            assert_eq!(sub.circuit_state, "closed", "after {attempt} failure(s)");
            assert_eq!(sub.circuit_open_until, None);
        }
    }
    assert_eq!(h.receiver.requests("/down").len(), 3);
    let failing = h.delivery("evt_1", "sub_down").await;
    assert_eq!((failing.status.as_str(), failing.attempts), ("retrying", 3));

    // Published: open, until about an hour from now.
    let sub = h.subscription("sub_down").await;
    assert_eq!(sub.circuit_state, "open");
    let until = sub.circuit_open_until.expect("an open circuit has an end");
    let now = Utc::now();
    assert!(
        until > now && until <= now + chrono::Duration::hours(1),
        "open until {until}, now {now}"
    );
    assert!(sub.circuit_changed_at.is_some());

    // A healthy destination next to it, and a new event for both.
    h.subscribe("sub_ok", "/ok", None).await;
    h.ingest("evt_2", "order.created", json!({})).await;
    h.make_due().await;

    // A second worker that never saw a failure does not even claim the open destination's
    // deliveries (both the retry and the new one are due), but delivers the healthy one.
    let second = h.worker(&[("DISPATCH_WORKER_ID", "worker-b")]);
    assert_eq!(
        second.run_once().await.unwrap(),
        1,
        "only the healthy delivery is claimed"
    );
    assert_eq!(h.delivery("evt_2", "sub_ok").await.status, "delivered");
    assert_eq!(h.receiver.requests("/ok").len(), 1);
    assert_eq!(
        h.receiver.requests("/down").len(),
        3,
        "the open destination got nothing more"
    );
    let retry = h.delivery("evt_1", "sub_down").await;
    assert_eq!((retry.status.as_str(), retry.attempts), ("retrying", 3));
    let fresh = h.delivery("evt_2", "sub_down").await;
    assert_eq!((fresh.status.as_str(), fresh.attempts), ("pending", 0));
    // Nor does the worker that saw the failures.
    assert_eq!(first.run_once().await.unwrap(), 0);

    // Once the published circuit has run out, the second worker tries the destination again.
    h.execute(
        "UPDATE subscriptions SET circuit_open_until = now() - interval '1 second'
          WHERE id = 'sub_down'",
    )
    .await;
    h.receiver.set_default("/down", Reply::ok());
    assert_eq!(second.run_once().await.unwrap(), 2);
    assert_eq!(count_for(&h, "sub_down", "delivered").await, 2);
}

#[tokio::test]
async fn a_worker_that_never_saw_the_failures_adopts_an_open_circuit_from_its_claim() {
    let h = Harness::new().await;
    h.subscribe("sub_1", "/hook", None).await;
    h.subscribe("sub_2", "/other", None).await;
    h.ingest("evt_1", "order.created", json!({})).await;
    let worker = h.worker(&[]);
    let mut claimed = deliveries::claim(
        &mut *h.conn().await,
        worker.id(),
        10,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    claimed.sort_by(|a, b| a.subscription_id.cmp(&b.subscription_id));
    assert_eq!(claimed.len(), 2);
    let (mut open, mut past) = (claimed[0].clone(), claimed[1].clone());
    // Another worker published sub_1's circuit open (as if just after this claim read it), and
    // sub_2's long ago.
    let open_until = Utc::now() + chrono::Duration::seconds(30);
    open.circuit_open_until = Some(open_until);
    past.circuit_open_until = Some(Utc::now() - chrono::Duration::seconds(1));

    let destinations = worker.destinations();
    assert_eq!(
        destinations.get(&past).circuit_state(),
        CircuitState::Closed,
        "a circuit whose time is up is not adopted"
    );
    let destination = destinations.get(&open);
    assert_eq!(destination.circuit_state(), CircuitState::Open);

    // Delivering through it defers until the circuit's end, without a request or an attempt.
    let outcome = deliver::attempt(
        &destination,
        &RetryPolicy::default(),
        &dispatch_test_support::secrets::test_keyring(),
        &open,
    )
    .await;
    assert!(!outcome.attempted, "{outcome:?}");
    assert_eq!(outcome.status, DeliveryStatus::Pending);
    let next = outcome.next_attempt_at.expect("a deferral has a time");
    assert!(
        (next - open_until).abs() < chrono::Duration::seconds(1),
        "deferred to {next}, the circuit opens until {open_until}"
    );
    assert_eq!(h.receiver.total(), 0);
    let recorded = deliveries::record_outcomes(&mut *h.conn().await, worker.id(), &[outcome]).await;
    assert_eq!(recorded.unwrap(), vec![open.id]);
    let row = h.delivery("evt_1", "sub_1").await;
    assert_eq!((row.status.as_str(), row.attempts), ("pending", 0));
    assert_eq!(h.attempt_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_hangs_on_every_request_does_not_hold_back_a_healthy_one() {
    let h = Harness::new().await;
    h.receiver.set_default("/hang", Reply::hang());
    h.subscribe("sub_hang", "/hang", None).await;
    // No rate limit in the way: every deferral would be one claimed only to be written back.
    h.subscribe_unlimited("sub_ok", "/ok").await;
    ingest_many(&h, 20).await;
    let worker = h.worker(&[
        ("DISPATCH_MAX_IN_FLIGHT", "8"),
        ("DISPATCH_MAX_IN_FLIGHT_PER_DESTINATION", "2"),
        // Far longer than the test: the hanging requests stay in flight throughout.
        ("DISPATCH_REQUEST_TIMEOUT_MS", "600000"),
        ("DISPATCH_SHUTDOWN_GRACE_SECS", "0"),
    ]);
    let running = Running::start(&worker);

    let mut most_hanging = 0;
    eventually(
        "all 20 healthy deliveries are delivered",
        PATIENCE * 2,
        || {
            let hanging = h.receiver.requests("/hang").len();
            most_hanging = most_hanging.max(hanging);
            async { count_for(&h, "sub_ok", "delivered").await == 20 }
        },
    )
    .await;
    h.receiver.wait_for("/hang", 2, PATIENCE).await;
    let hanging = h.receiver.requests("/hang").len();
    assert_eq!(
        most_hanging.max(hanging),
        2,
        "at most 2 requests to the hanging destination at once"
    );
    assert_eq!(h.receiver.requests("/ok").len(), 20);
    assert_eq!(count_for(&h, "sub_hang", "delivered").await, 0);

    let summary = running.stop().await;
    assert_eq!(
        summary.released, 2,
        "the two hanging requests are handed back"
    );
    assert_eq!(
        summary.deferred, 0,
        "the rest waited their turn in the queue, never claimed only to be written back: \
         {summary:?}"
    );
    // Nothing to the hanging destination spent an attempt: its requests never finished.
    for d in h.all_deliveries().await {
        if d.subscription_id == "sub_hang" {
            assert_eq!((d.status.as_str(), d.attempts), ("pending", 0), "{d:?}");
        }
    }
}

#[tokio::test]
async fn the_fleet_shares_a_destination_rate_limit_and_a_stopped_worker_leaves_it() {
    let h = Harness::new().await;
    h.subscribe_limited(
        "sub_1",
        "/hook",
        RateLimit {
            per_second: 0.01,
            burst: 10,
        },
    )
    .await;
    ingest_many(&h, 20).await;
    let a = h.worker(&[("DISPATCH_WORKER_ID", "worker-a")]);
    let b = h.worker(&[("DISPATCH_WORKER_ID", "worker-b")]);

    assert_eq!(a.report_in().await.unwrap(), 1, "alone so far");
    assert_eq!(b.report_in().await.unwrap(), 2);
    assert_eq!(a.report_in().await.unwrap(), 2);
    assert_eq!(a.destinations().fleet_size(), 2);
    assert_eq!(b.destinations().fleet_size(), 2);

    // Each worker gets half of the burst of 10 (and claims no more of a new destination than
    // its starting concurrency limit).
    // A few steps each (a new destination's concurrency limit starts small and grows), until
    // the rate limit is what holds.
    for _ in 0..3 {
        a.run_once().await.unwrap();
        h.make_due().await;
    }
    let sent = h.receiver.requests("/hook").len();
    assert!(sent <= 5, "at most a's half of the burst: {sent}");
    assert_eq!(h.count_in("delivered").await, i64::try_from(sent).unwrap());
    for _ in 0..3 {
        b.run_once().await.unwrap();
        h.make_due().await;
    }
    let both = h.receiver.requests("/hook").len();
    assert!(
        both - sent <= 5,
        "at most b's half of the burst: {}",
        both - sent
    );
    assert_eq!(both, 10, "each sent its half within three steps");
    assert_eq!(h.count_in("delivered").await, 10);
    assert_eq!(h.count_in("pending").await, 10);
    assert_eq!(h.attempt_count().await, 10, "deferrals spent no attempts");

    // b runs and stops: it leaves the registry, and a is alone again. (Stopped only once its
    // loop has reported in, so no heartbeat is still on its way when it leaves.)
    let seen_before = seen_at(&h, "worker-b").await;
    let running = Running::start(&b);
    eventually("the running worker reports in", PATIENCE, || async {
        seen_at(&h, "worker-b").await > seen_before
    })
    .await;
    running.stop().await;
    assert_eq!(seen_at(&h, "worker-b").await, None, "b left the registry");
    assert_eq!(a.report_in().await.unwrap(), 1);
    assert_eq!(a.destinations().fleet_size(), 1);
}

async fn seen_at(h: &Harness, worker: &str) -> Option<chrono::DateTime<Utc>> {
    use diesel::prelude::*;
    use diesel::sql_types::{Nullable, Text, Timestamptz};
    use diesel_async::RunQueryDsl;

    #[derive(QueryableByName)]
    struct Seen {
        #[diesel(sql_type = Nullable<Timestamptz>)]
        at: Option<chrono::DateTime<Utc>>,
    }
    let row: Seen = diesel::sql_query("SELECT (SELECT seen_at FROM workers WHERE id = $1) AS at")
        .bind::<Text, _>(worker)
        .get_result(&mut h.conn().await)
        .await
        .unwrap();
    row.at
}
