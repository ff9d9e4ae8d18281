//! A claim's cost in buffers (history, dead rows, vacuum) and the queue's health report.

use super::*;

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
