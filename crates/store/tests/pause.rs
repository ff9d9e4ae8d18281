//! Pausing and resuming a subscription against a real PostgreSQL: a paused subscription's
//! deliveries are created but held — never claimed, whatever writes them (ingestion, a
//! concurrent ingestion, an outcome of an attempt in flight) — and resuming releases every one,
//! oldest first, with no attempt spent.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Int4, Interval, Text};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use dispatch_domain::{DeliveryStatus, EventId, EventType, Source};
use dispatch_store::AsyncPgConnection;
use dispatch_store::models::NewEvent;
use dispatch_store::pool::connection;
use dispatch_store::queries::deliveries::{self, CLAIM_SQL, ClaimedDelivery, Outcome, claim};
use dispatch_store::queries::subscription_changes::{
    SubscriptionChange, UpdateOutcome, held_count, update,
};
use dispatch_store::queries::{events, subscriptions};
use dispatch_test_support::TestDb;

const LEASE: Duration = Duration::from_secs(60);

async fn subscribe(conn: &mut AsyncPgConnection, id: &str) {
    diesel::sql_query(format!(
        "INSERT INTO subscriptions (id, url, event_types) VALUES ('{id}', 'https://example.com/', '{{*}}')"
    ))
    .execute(conn)
    .await
    .unwrap();
}

async fn ingest(conn: &mut AsyncPgConnection, id: &str) {
    let new = NewEvent {
        tenant: dispatch_domain::TenantId::default_tenant(),
        id: EventId::parse(id).unwrap(),
        event_type: EventType::parse("order.created").unwrap(),
        source: Source::parse("shop").unwrap(),
        data: serde_json::json!({}),
        traceparent: None,
        ordering_key: None,
    };
    events::ingest(conn, &new).await.unwrap();
}

/// Sets `enabled` through the same store function `PATCH` uses.
async fn set_enabled(conn: &mut AsyncPgConnection, id: &str, enabled: bool) -> (usize, usize) {
    let row = subscriptions::find_active(conn, &dispatch_domain::TenantId::default_tenant(), id)
        .await
        .unwrap()
        .unwrap();
    let before = SubscriptionChange::of(&row);
    let after = SubscriptionChange {
        enabled,
        ..before.clone()
    };
    match update(
        conn,
        &dispatch_domain::TenantId::default_tenant(),
        id,
        &before,
        &after,
    )
    .await
    .unwrap()
    {
        UpdateOutcome::Updated { held, released, .. } => (held, released),
        other => panic!("not updated: {other:?}"),
    }
}

fn event_ids(claimed: &[ClaimedDelivery]) -> Vec<&str> {
    claimed.iter().map(|c| c.event_id.as_str()).collect()
}

#[tokio::test]
async fn a_paused_subscription_s_deliveries_are_held_until_it_is_resumed_then_go_oldest_first() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, "s_paused").await;
    subscribe(&mut conn, "s_other").await;
    ingest(&mut conn, "evt_1").await;
    ingest(&mut conn, "evt_2").await;

    assert_eq!(set_enabled(&mut conn, "s_paused", false).await, (2, 0));
    assert_eq!(
        set_enabled(&mut conn, "s_paused", false).await,
        (0, 0),
        "pausing twice is still paused, and holds nothing more"
    );
    ingest(&mut conn, "evt_3").await;
    assert_eq!(held_count(&mut conn, "s_paused").await.unwrap(), 3);

    let claimed = claim(&mut conn, "w1", 100, LEASE).await.unwrap();
    assert!(
        claimed.iter().all(|c| c.subscription_id == "s_other"),
        "nothing of the paused subscription is claimed: {claimed:?}"
    );
    assert_eq!(claimed.len(), 3, "the other subscription is not held up");
    assert_eq!(
        deliveries::next_due_at(&mut conn).await.unwrap(),
        Some(claimed[0].leased_until),
        "held deliveries never fall due (and 'infinity' is never read as a time): next is a lease"
    );
    assert_eq!(deliveries::backlog(&mut conn).await.unwrap().due, 0);

    assert_eq!(set_enabled(&mut conn, "s_paused", true).await, (0, 3));
    assert_eq!(held_count(&mut conn, "s_paused").await.unwrap(), 0);
    let released = claim(&mut conn, "w1", 100, LEASE).await.unwrap();
    assert_eq!(
        event_ids(&released),
        ["evt_1", "evt_2", "evt_3"],
        "oldest first"
    );
    assert!(released.iter().all(|c| c.attempts == 0), "no attempt spent");
    assert_eq!(set_enabled(&mut conn, "s_paused", true).await, (0, 0));
}

fn retrying_now(c: &ClaimedDelivery) -> Outcome {
    Outcome {
        delivery_id: c.id,
        attempted: true,
        leased_until: c.leased_until,
        status: DeliveryStatus::Retrying,
        next_attempt_at: Some(chrono::Utc::now() - chrono::Duration::seconds(1)),
        status_code: Some(500),
        latency_ms: 1,
        error_code: Some("http_status".to_owned()),
        error: Some("HTTP 500".to_owned()),
        response_body: None,
    }
}

#[tokio::test]
async fn an_attempt_in_flight_when_paused_comes_back_held_and_its_due_retry_waits_for_resume() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, "s_a").await;
    ingest(&mut conn, "evt_1").await;
    let in_flight = claim(&mut conn, "w1", 10, LEASE).await.unwrap();
    assert_eq!(in_flight.len(), 1);

    assert_eq!(set_enabled(&mut conn, "s_a", false).await, (1, 0));
    // Its retry is due at once, but the subscription is paused.
    let recorded = deliveries::record_outcomes(&mut conn, "w1", &[retrying_now(&in_flight[0])])
        .await
        .unwrap();
    assert_eq!(recorded, [in_flight[0].id]);
    assert!(claim(&mut conn, "w1", 10, LEASE).await.unwrap().is_empty());
    assert_eq!(deliveries::next_due_at(&mut conn).await.unwrap(), None);

    assert_eq!(set_enabled(&mut conn, "s_a", true).await, (0, 1));
    let again = claim(&mut conn, "w1", 10, LEASE).await.unwrap();
    assert_eq!(event_ids(&again), ["evt_1"]);
    assert_eq!(again[0].attempts, 1, "only the attempt really made counts");
}

#[tokio::test]
async fn a_delivery_ingested_while_a_pause_runs_is_never_claimable_while_paused() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut ingesting = connection(&pool).await.unwrap();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, "s_a").await;

    // An ingestion in flight: its delivery row exists, uncommitted, with the subscription
    // key-share locked and read as enabled.
    ingesting.batch_execute("BEGIN").await.unwrap();
    ingest(&mut ingesting, "evt_racing").await;

    let pause = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut conn = connection(&pool).await.unwrap();
            set_enabled(&mut conn, "s_a", false).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pause.is_finished(),
        "the pause waits for the ingestion that read the subscription as enabled"
    );
    ingesting.batch_execute("COMMIT").await.unwrap();
    assert_eq!(pause.await.unwrap(), (1, 0), "and then holds its delivery");
    assert!(claim(&mut conn, "w1", 10, LEASE).await.unwrap().is_empty());

    // Resumed: the racing delivery goes (and is in flight from here on).
    assert_eq!(set_enabled(&mut conn, "s_a", true).await, (0, 1));
    let released = claim(&mut conn, "w1", 10, LEASE).await.unwrap();
    assert_eq!(event_ids(&released), ["evt_racing"]);

    // An ingestion that starts while a pause holds the lock — its snapshot still sees the
    // subscription enabled — waits, then reads the new `enabled` from the locked row.
    conn.batch_execute("BEGIN").await.unwrap();
    diesel::sql_query("SELECT id FROM subscriptions WHERE id = 's_a' FOR UPDATE")
        .execute(&mut conn)
        .await
        .unwrap();
    let late = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut conn = connection(&pool).await.unwrap();
            ingest(&mut conn, "evt_late").await;
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !late.is_finished(),
        "ingestion waits for the locked subscription"
    );
    diesel::sql_query("UPDATE subscriptions SET enabled = false WHERE id = 's_a'")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.batch_execute("COMMIT").await.unwrap();
    late.await.unwrap();
    assert_eq!(
        held_count(&mut conn, "s_a").await.unwrap(),
        1,
        "evt_late's delivery is born held"
    );
    assert!(claim(&mut conn, "w1", 10, LEASE).await.unwrap().is_empty());
    let row = subscriptions::find_active(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        "s_a",
    )
    .await
    .unwrap()
    .unwrap();
    let paused = SubscriptionChange::of(&row);

    // A change based on a stale read is refused, not merged over.
    let stale = SubscriptionChange {
        url: "https://example.com/stale".to_owned(),
        enabled: true,
        ..paused.clone()
    };
    let mut changed = paused.clone();
    changed.settings.description = Some("changed meanwhile".to_owned());
    let UpdateOutcome::Updated { .. } = update(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        "s_a",
        &paused,
        &changed,
    )
    .await
    .unwrap() else {
        panic!("the first change applies");
    };
    assert_eq!(
        update(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "s_a",
            &paused,
            &stale
        )
        .await
        .unwrap(),
        UpdateOutcome::Stale
    );
    assert_eq!(
        update(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "s_missing",
            &paused,
            &stale
        )
        .await
        .unwrap(),
        UpdateOutcome::NotFound
    );
}

#[derive(QueryableByName)]
struct Plan {
    #[diesel(sql_type = Text)]
    #[diesel(column_name = "QUERY PLAN")]
    plan: String,
}

/// Shared buffers one claim of 64 touches and the rows it claims, from `EXPLAIN (ANALYZE,
/// BUFFERS)` of the claim statement itself.
async fn claim_buffers(conn: &mut AsyncPgConnection) -> (i64, u64) {
    let plan: Plan = diesel::sql_query(format!(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {CLAIM_SQL}"
    ))
    .bind::<Text, _>("w")
    .bind::<BigInt, _>(64i64)
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
    (blocks, top["Actual Rows"].as_u64().unwrap_or(0))
}

/// `n` events `{prefix}{i}` with a delivery each to `sub`, due an hour ago, `held` or not.
async fn deliveries_due(conn: &mut AsyncPgConnection, prefix: &str, sub: &str, n: u32, held: bool) {
    diesel::sql_query(format!(
        "WITH ev AS (
             INSERT INTO events (id, event_type, source, data)
             SELECT '{prefix}' || i, 'order.created', 'test', '{{}}'
               FROM generate_series(1, {n}) i
             RETURNING id
         )
         INSERT INTO deliveries (event_id, subscription_id, next_attempt_at, held)
         SELECT id, '{sub}', now() - interval '1 hour', {held} FROM ev"
    ))
    .execute(conn)
    .await
    .unwrap();
}

#[tokio::test]
async fn held_deliveries_cost_a_claim_nothing_however_many_wait_at_the_head_of_the_queue() {
    let fresh = TestDb::new().await;
    let pool = fresh.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, "s").await;
    deliveries_due(&mut conn, "e", "s", 200, false).await;
    let (without, claimed) = claim_buffers(&mut conn).await;
    assert_eq!(claimed, 64);

    let busy = TestDb::new().await;
    let pool = busy.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, "s").await;
    subscribe(&mut conn, "s_paused").await;
    diesel::sql_query("UPDATE subscriptions SET enabled = false WHERE id = 's_paused'")
        .execute(&mut conn)
        .await
        .unwrap();
    // Older than every deliverable one: without the hold they would fill every claim.
    deliveries_due(&mut conn, "h", "s_paused", 20_000, true).await;
    diesel::sql_query("ANALYZE")
        .execute(&mut conn)
        .await
        .unwrap();
    deliveries_due(&mut conn, "e", "s", 200, false).await;
    let (with, claimed) = claim_buffers(&mut conn).await;
    assert_eq!(
        claimed, 64,
        "the claim is not held up by the held deliveries"
    );
    eprintln!("claim of 64: {without} buffers, {with} with 20 000 held deliveries ahead");
    assert!(
        with <= without + without / 2 + 16,
        "{with} buffers with 20 000 held deliveries, {without} without"
    );
    assert_eq!(held_count(&mut conn, "s_paused").await.unwrap(), 20_000);
}
