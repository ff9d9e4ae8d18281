//! The hot queue (`delivery_queue`) against a real PostgreSQL: it holds exactly the unfinished
//! deliveries whatever writes them, a claim takes no more of a destination than its allowance
//! and never writes back what it cannot send, and a claim's cost depends on the batch, not on
//! the history or on dead rows once the queue is vacuumed.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool, Text};
use diesel_async::RunQueryDsl;
use dispatch_domain::DeliveryStatus;
use dispatch_store::AsyncPgConnection;
use dispatch_store::pool::connection;
use dispatch_store::queries::deliveries::{
    self, Allowance, Allowances, CLAIM_SQL, ClaimedDelivery, Outcome, claim, claim_within,
};
use dispatch_store::queries::health;
use dispatch_test_support::TestDb;

const LEASE: Duration = Duration::from_secs(60);

async fn raw(conn: &mut AsyncPgConnection, sql: &str) {
    diesel::sql_query(sql).execute(conn).await.unwrap();
}

/// Subscriptions `ids`, each matching every event type.
async fn subscribe(conn: &mut AsyncPgConnection, ids: &[&str]) {
    for id in ids {
        raw(
            conn,
            &format!(
                "INSERT INTO subscriptions (id, url, event_types)
                 VALUES ('{id}', 'https://example.com/{id}', '{{*}}')"
            ),
        )
        .await;
    }
}

/// `n` events `{prefix}{i}` with one pending delivery each to `sub`, in one statement (as
/// ingestion writes them: the queue's trigger sees a multi-row insert).
async fn pending(conn: &mut AsyncPgConnection, prefix: &str, sub: &str, n: u32) {
    raw(
        conn,
        &format!(
            "WITH ev AS (
                 INSERT INTO events (id, event_type, source, data)
                 SELECT '{prefix}' || i, 'order.created', 'test', '{{}}'
                   FROM generate_series(1, {n}) i
                 RETURNING id
             )
             INSERT INTO deliveries (event_id, subscription_id, next_attempt_at)
             SELECT id, '{sub}', now() - interval '1 minute' FROM ev"
        ),
    )
    .await;
}

/// `n` finished deliveries of history (delivered, one attempt each), never queued.
async fn history(conn: &mut AsyncPgConnection, sub: &str, n: u32) {
    raw(
        conn,
        &format!(
            "WITH ev AS (
                 INSERT INTO events (id, event_type, source, data, received_at)
                 SELECT 'old_' || i, 'order.created', 'test', '{{}}',
                        now() - interval '1 day'
                   FROM generate_series(1, {n}) i
                 RETURNING id
             ), d AS (
                 INSERT INTO deliveries (event_id, subscription_id, status, attempts,
                                         next_attempt_at)
                 SELECT id, '{sub}', 'delivered', 1, now() - interval '1 day' FROM ev
                 RETURNING id, event_id, subscription_id
             )
             INSERT INTO attempts (delivery_id, event_id, subscription_id, attempt, status_code,
                                   latency_ms)
             SELECT id, event_id, subscription_id, 1, 200, 3 FROM d"
        ),
    )
    .await;
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(conn: &mut AsyncPgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .await
        .unwrap()
        .n
}

/// Rows where the queue and `deliveries` disagree: an unfinished delivery without exactly one
/// queue row due when it is (its next attempt, or the end of its lease), or a queue row of a
/// finished delivery.
async fn disagreements(conn: &mut AsyncPgConnection) -> i64 {
    count(
        conn,
        "SELECT count(*) AS n
           FROM deliveries d FULL JOIN delivery_queue q ON q.delivery_id = d.id
          WHERE (d.status IN ('pending', 'processing', 'retrying')) IS DISTINCT FROM
                (q.delivery_id IS NOT NULL)
             OR q.due_at IS DISTINCT FROM
                CASE WHEN d.status = 'processing' THEN d.leased_until
                     WHEN d.status IN ('pending', 'retrying') THEN d.next_attempt_at END
             OR q.retry IS DISTINCT FROM
                CASE WHEN d.status IN ('pending', 'processing', 'retrying')
                     THEN d.attempts > 0 END
             OR q.leased IS DISTINCT FROM
                CASE WHEN d.status IN ('pending', 'processing', 'retrying')
                     THEN d.status = 'processing' END",
    )
    .await
}

fn outcome(c: &ClaimedDelivery, status: DeliveryStatus, attempted: bool) -> Outcome {
    Outcome {
        delivery_id: c.id,
        attempted,
        leased_until: c.leased_until,
        status,
        next_attempt_at: (status != DeliveryStatus::Delivered)
            .then(|| chrono::Utc::now() + chrono::Duration::seconds(30)),
        status_code: attempted.then_some(500),
        latency_ms: 1,
        error_code: None,
        error: None,
        response_body: None,
    }
}

#[tokio::test]
async fn the_queue_holds_exactly_the_unfinished_deliveries_through_every_transition() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, &["s_a", "s_b"]).await;
    pending(&mut conn, "a", "s_a", 10).await;
    pending(&mut conn, "b", "s_b", 4).await;
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM delivery_queue").await,
        14
    );
    assert_eq!(disagreements(&mut conn).await, 0);

    // Claimed: the row stays, due when the lease ends.
    let claimed = claim(&mut conn, "w", 6, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 6);
    assert_eq!(disagreements(&mut conn).await, 0);

    // Delivered leaves the queue; a retry and a deferral stay, due at their new time.
    let mut outcomes = vec![
        outcome(&claimed[0], DeliveryStatus::Delivered, true),
        outcome(&claimed[1], DeliveryStatus::Retrying, true),
        outcome(&claimed[2], DeliveryStatus::Pending, false),
        outcome(&claimed[3], DeliveryStatus::Failed, true),
    ];
    outcomes[3].next_attempt_at = None;
    deliveries::record_outcomes(&mut conn, "w", &outcomes)
        .await
        .unwrap();
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM delivery_queue").await,
        12
    );
    assert_eq!(disagreements(&mut conn).await, 0);

    // Released at shutdown: due at once again.
    let released = deliveries::release(&mut conn, "w", &[claimed[4].id, claimed[5].id])
        .await
        .unwrap();
    assert_eq!(released, 2);
    assert_eq!(disagreements(&mut conn).await, 0);

    // A replay puts the failed one back; deleting a subscription cancels its queued ones.
    let replayed = dispatch_store::queries::ops::replay(
        &mut conn,
        &dispatch_store::queries::ops::ReplaySelector::Subscription(
            claimed[3].subscription_id.clone(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(replayed, 1);
    assert_eq!(disagreements(&mut conn).await, 0);
    let cancelled = dispatch_store::queries::subscriptions::delete(&mut conn, "s_b")
        .await
        .unwrap();
    assert_eq!(cancelled, Some(4));
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM delivery_queue WHERE subscription_id = 's_b'"
        )
        .await,
        0
    );
    assert_eq!(disagreements(&mut conn).await, 0);
}

#[tokio::test]
async fn a_claim_takes_no_more_of_a_destination_than_its_allowance_and_leaves_the_rest_untouched() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, &["s_busy", "s_full", "s_new"]).await;
    pending(&mut conn, "busy", "s_busy", 30).await;
    pending(&mut conn, "full", "s_full", 30).await;
    pending(&mut conn, "new", "s_new", 30).await;
    let before = count(
        &mut conn,
        "SELECT count(*) AS n FROM deliveries WHERE updated_at < now()",
    )
    .await;

    let allowances = Allowances {
        known: vec![allowance("s_busy", 3, true), allowance("s_full", 0, true)],
        otherwise: 5,
        unproven_budget: 64,
    };
    let claimed = claim_within(&mut conn, "w", 64, LEASE, &allowances)
        .await
        .unwrap();
    let of = |sub: &str| claimed.iter().filter(|c| c.subscription_id == sub).count();
    assert_eq!(
        (of("s_busy"), of("s_full"), of("s_new")),
        (3, 0, 5),
        "{claimed:?}"
    );
    // Nothing else was written: the 82 others are exactly as they were.
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM deliveries WHERE status = 'pending' AND attempts = 0
                AND leased_by IS NULL AND next_attempt_at < now() - interval '59 seconds'"
        )
        .await,
        82
    );
    assert_eq!(before, 90);

    // Without per-destination limits, one destination may take the whole claim.
    let rest = claim(&mut conn, "w", 64, LEASE).await.unwrap();
    assert_eq!(rest.len(), 64);
}

fn allowance(sub: &str, room: i32, proven: bool) -> Allowance {
    Allowance {
        subscription_id: sub.to_owned(),
        room,
        proven,
    }
}

#[tokio::test]
async fn destinations_not_proven_take_at_most_their_budget_and_proven_ones_the_rest() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, &["s_new1", "s_new2", "s_unproven", "s_proven"]).await;
    for sub in ["s_new1", "s_new2", "s_unproven", "s_proven"] {
        pending(&mut conn, sub, sub, 10).await;
    }
    let allowances = Allowances {
        known: vec![
            allowance("s_unproven", 5, false),
            allowance("s_proven", 5, true),
        ],
        otherwise: 5,
        unproven_budget: 4,
    };
    let claimed = claim_within(&mut conn, "w", 64, LEASE, &allowances)
        .await
        .unwrap();
    let proven = claimed
        .iter()
        .filter(|c| c.subscription_id == "s_proven")
        .count();
    assert_eq!(
        (claimed.len() - proven, proven),
        (4, 5),
        "the budget holds across new and known destinations that are not proven: {claimed:?}"
    );
}

#[tokio::test]
async fn parking_puts_off_a_stalled_destinations_due_deliveries_so_others_reach_the_window() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, &["s_stalled", "s_ok"]).await;
    pending(&mut conn, "stalled", "s_stalled", 100).await;
    pending(&mut conn, "ok", "s_ok", 100).await;
    let allowances = Allowances {
        known: vec![allowance("s_stalled", 0, false)],
        otherwise: 10,
        unproven_budget: 64,
    };
    // Its 100 deliveries are due first and fill the candidate window: nothing to claim.
    let claimed = claim_within(&mut conn, "w", 10, LEASE, &allowances)
        .await
        .unwrap();
    assert!(claimed.is_empty(), "{claimed:?}");
    let untouched = "SELECT count(*) AS n FROM deliveries
                      WHERE status = 'pending' AND next_attempt_at < now()";
    assert_eq!(
        count(&mut conn, untouched).await,
        200,
        "and nothing was written"
    );

    let parked = deliveries::park(&mut conn, &["s_stalled"], Duration::from_secs(30), 1_000)
        .await
        .unwrap();
    assert_eq!(parked, 100);
    let put_off = "SELECT count(*) AS n FROM deliveries
                    WHERE subscription_id = 's_stalled' AND status = 'pending' AND attempts = 0
                      AND next_attempt_at > now() + interval '29 seconds'";
    assert_eq!(count(&mut conn, put_off).await, 100, "no attempt spent");
    assert_eq!(disagreements(&mut conn).await, 0);
    let claimed = claim_within(&mut conn, "w", 10, LEASE, &allowances)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 10);
    assert!(claimed.iter().all(|c| c.subscription_id == "s_ok"));
}

#[tokio::test]
async fn a_dead_workers_expired_leases_are_claimed_before_an_older_backlog() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, &["s"]).await;
    // A backlog due for ten minutes, and two deliveries a worker claimed and died holding,
    // whose leases ended a second ago: due later than the whole backlog.
    pending(&mut conn, "old", "s", 300).await;
    raw(
        &mut conn,
        "UPDATE deliveries SET next_attempt_at = now() - interval '10 minutes'",
    )
    .await;
    pending(&mut conn, "held", "s", 2).await;
    raw(
        &mut conn,
        "UPDATE deliveries SET status = 'processing', leased_by = 'dead',
                leased_until = now() - interval '1 second'
          WHERE event_id LIKE 'held%'",
    )
    .await;
    assert_eq!(disagreements(&mut conn).await, 0);

    let claimed = claim(&mut conn, "w", 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 10);
    let reclaimed: Vec<&str> = claimed
        .iter()
        .filter(|c| c.event_id.starts_with("held"))
        .map(|c| c.event_id.as_str())
        .collect();
    assert_eq!(
        reclaimed.len(),
        2,
        "the dead worker's deliveries go first: {claimed:?}"
    );
    assert_eq!(disagreements(&mut conn).await, 0);
}

#[tokio::test]
async fn retries_take_at_most_half_of_a_claim_when_first_attempts_wait() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, &["s"]).await;
    pending(&mut conn, "r", "s", 40).await;
    // The retries are older than every first attempt, so due order alone would take only them.
    raw(
        &mut conn,
        "UPDATE deliveries SET status = 'retrying', attempts = 1,
                next_attempt_at = now() - interval '1 hour'",
    )
    .await;
    pending(&mut conn, "f", "s", 40).await;

    let claimed = claim(&mut conn, "w", 20, LEASE).await.unwrap();
    let retries = claimed.iter().filter(|c| c.attempts > 0).count();
    assert_eq!((claimed.len(), retries), (20, 10), "{claimed:?}");

    // With no first attempt waiting, retries still take at most half (at least one).
    raw(
        &mut conn,
        "DELETE FROM deliveries WHERE attempts = 0 AND status <> 'processing'",
    )
    .await;
    let claimed = claim(&mut conn, "w", 1, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1, "at least one");
}

#[derive(QueryableByName)]
struct Plan {
    #[diesel(sql_type = Text)]
    #[diesel(column_name = "QUERY PLAN")]
    plan: String,
}

/// Shared buffers (hit and read) one claim of `limit` touches, from `EXPLAIN (ANALYZE,
/// BUFFERS)` of the claim statement itself (it claims for real).
async fn claim_buffers(conn: &mut AsyncPgConnection, limit: i64) -> (i64, usize) {
    use diesel::sql_types::{Array, Int4, Interval};
    let plan: Plan = diesel::sql_query(format!(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {CLAIM_SQL}"
    ))
    .bind::<Text, _>("w")
    .bind::<BigInt, _>(limit)
    .bind::<Interval, _>(diesel::pg::data_types::PgInterval::from_microseconds(
        60_000_000,
    ))
    .bind::<BigInt, _>(128i64)
    .bind::<Array<Text>, _>(Vec::<String>::new())
    .bind::<Array<Int4>, _>(Vec::<i32>::new())
    .bind::<Array<Bool>, _>(Vec::<bool>::new())
    .bind::<Int4, _>(i32::MAX)
    .bind::<Int4, _>(i32::MAX)
    .get_result(conn)
    .await
    .unwrap();
    let plan: serde_json::Value = serde_json::from_str(&plan.plan).unwrap();
    let top = &plan[0]["Plan"];
    let blocks =
        top["Shared Hit Blocks"].as_i64().unwrap() + top["Shared Read Blocks"].as_i64().unwrap();
    let rows = top["Actual Rows"].as_u64().unwrap_or(0);
    (blocks, usize::try_from(rows).unwrap())
}

#[tokio::test]
async fn a_claim_touches_as_few_buffers_with_a_long_history_as_without() {
    let fresh = TestDb::new().await;
    let pool = fresh.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, &["s"]).await;
    pending(&mut conn, "e", "s", 200).await;
    let (without, claimed) = claim_buffers(&mut conn, 64).await;
    assert_eq!(claimed, 64);

    let old = TestDb::new().await;
    let pool = old.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, &["s"]).await;
    history(&mut conn, "s", 100_000).await;
    raw(&mut conn, "ANALYZE").await;
    pending(&mut conn, "e", "s", 200).await;
    let (with, claimed) = claim_buffers(&mut conn, 64).await;
    assert_eq!(claimed, 64);
    // The finished deliveries are not in the queue: the claim reads the batch's rows (events,
    // deliveries, subscription) and a few index pages more, however long the history.
    assert!(
        with <= without + without / 2 + 16,
        "{with} buffers with 100 000 finished deliveries, {without} without"
    );
}

#[tokio::test]
async fn vacuuming_the_queue_brings_a_claim_back_to_a_few_buffers_after_many_dead_rows() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    // As on a server with autovacuum off (or behind).
    raw(
        &mut conn,
        "ALTER TABLE delivery_queue SET (autovacuum_enabled = false)",
    )
    .await;
    subscribe(&mut conn, &["s"]).await;
    pending(&mut conn, "e", "s", 1_000).await;
    let (baseline, _) = claim_buffers(&mut conn, 64).await;

    // 30 000 deliveries queued and finished: dead queue rows ahead of the live ones.
    // (Due before the live ones, as finished work always is in a queue that flows.)
    pending(&mut conn, "done", "s", 30_000).await;
    raw(
        &mut conn,
        "UPDATE deliveries SET next_attempt_at = now() - interval '1 hour'
          WHERE event_id LIKE 'done%'",
    )
    .await;
    raw(
        &mut conn,
        "UPDATE deliveries SET status = 'delivered', attempts = 1
          WHERE event_id LIKE 'done%'",
    )
    .await;
    pending(&mut conn, "late", "s", 200).await;
    let (behind, claimed) = claim_buffers(&mut conn, 64).await;
    assert_eq!(claimed, 64);

    assert!(
        health::vacuum_queue(&mut conn).await.unwrap(),
        "nobody else holds the lock"
    );
    let (vacuumed, claimed) = claim_buffers(&mut conn, 64).await;
    assert_eq!(claimed, 64);
    assert!(
        vacuumed <= baseline + baseline / 2 + 16,
        "{vacuumed} buffers after VACUUM, {baseline} before the dead rows ({behind} behind)"
    );
    assert!(
        behind > vacuumed,
        "{behind} with dead rows, {vacuumed} vacuumed"
    );
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    on: bool,
}

#[tokio::test]
async fn queue_health_sees_dead_rows_and_a_table_without_autovacuum() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    let server: Flag = diesel::sql_query("SELECT current_setting('autovacuum')::bool AS on")
        .get_result(&mut conn)
        .await
        .unwrap();
    let healthy = health::queue_health(&mut conn).await.unwrap();
    assert_eq!(healthy.autovacuum, server.on);
    assert!(healthy.can_vacuum, "the test role owns the table");

    raw(
        &mut conn,
        "ALTER TABLE delivery_queue SET (autovacuum_enabled = false)",
    )
    .await;
    subscribe(&mut conn, &["s"]).await;
    pending(&mut conn, "e", "s", 3_000).await;
    raw(
        &mut conn,
        "UPDATE deliveries SET status = 'delivered', attempts = 1",
    )
    .await;
    // Statistics reach the shared view when a transaction ends, at most once a second.
    raw(&mut conn, "SELECT pg_stat_force_next_flush()").await;
    raw(&mut conn, "SELECT 1").await;
    let sick = health::queue_health(&mut conn).await.unwrap();
    assert!(!sick.autovacuum);
    assert!(sick.dead_rows >= 3_000, "{sick:?}");
    assert!(sick.worth_vacuum(), "{sick:?}");
    assert!(
        sick.warnings()
            .iter()
            .any(|w| w.contains("autovacuum is off")),
        "{:?}",
        sick.warnings()
    );
    assert!(health::vacuum_queue(&mut conn).await.unwrap());
    raw(&mut conn, "SELECT pg_stat_force_next_flush()").await;
    raw(&mut conn, "SELECT 1").await;
    let after = health::queue_health(&mut conn).await.unwrap();
    assert!(after.dead_rows < sick.dead_rows, "{after:?}");
}
