//! Operational events and auto-disable against a real PostgreSQL: what emits them (an exhausted
//! delivery, a circuit opening or closing, the health sweep), in the transaction of the change
//! they report, to whom (patterns naming `dispatch.`, never `*`, never the subject), how often
//! (rate bounds), and never about an operational event's own delivery.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{Jsonb, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, RunQueryDsl};
use dispatch_domain::operational::Operational;
use dispatch_domain::{DeliveryStatus, EventId, EventType, Source};
use dispatch_store::models::NewEvent;
use dispatch_store::pool::connection;
use dispatch_store::queries::deliveries::{self, ClaimedDelivery, Outcome, claim};
use dispatch_store::queries::events;
use dispatch_store::queries::operational::{Emission, emit};
use dispatch_store::queries::subscriptions::{self, CircuitUpdate, publish_circuits};
use dispatch_store::{AsyncPgConnection, StoreError};
use dispatch_test_support::TestDb;

const LEASE: Duration = Duration::from_secs(60);

async fn sql(conn: &mut AsyncPgConnection, statement: &str) -> usize {
    diesel::sql_query(statement)
        .execute(conn)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"))
}

async fn subscribe(conn: &mut AsyncPgConnection, id: &str, patterns: &str) {
    sql(
        conn,
        &format!(
            "INSERT INTO subscriptions (id, url, event_types)
             VALUES ('{id}', 'https://example.com/{id}', '{{{patterns}}}')"
        ),
    )
    .await;
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

fn ended(c: &ClaimedDelivery, status: DeliveryStatus) -> Outcome {
    let ok = status == DeliveryStatus::Delivered;
    Outcome {
        delivery_id: c.id,
        attempted: true,
        leased_until: c.leased_until,
        status,
        next_attempt_at: (status == DeliveryStatus::Retrying)
            .then(|| chrono::Utc::now() + chrono::Duration::hours(1)),
        status_code: Some(if ok { 200 } else { 503 }),
        latency_ms: 1,
        error_code: (!ok).then(|| "http_status".to_owned()),
        error: (!ok).then(|| "HTTP 503".to_owned()),
        response_body: None,
    }
}

/// Claims everything due and records `status` for the deliveries to `subscription`.
async fn finish(conn: &mut AsyncPgConnection, subscription: &str, status: DeliveryStatus) -> usize {
    let claimed = claim(conn, "w1", 100, LEASE).await.unwrap();
    let outcomes: Vec<Outcome> = claimed
        .iter()
        .filter(|c| c.subscription_id == subscription)
        .map(|c| ended(c, status))
        .collect();
    let others: Vec<i64> = claimed
        .iter()
        .filter(|c| c.subscription_id != subscription)
        .map(|c| c.id)
        .collect();
    deliveries::release(conn, "w1", &others).await.unwrap();
    deliveries::record_outcomes(conn, "w1", &outcomes)
        .await
        .unwrap()
        .len()
}

#[derive(QueryableByName, Debug)]
struct OpEvent {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    event_type: String,
    #[diesel(sql_type = Text)]
    source: String,
    #[diesel(sql_type = Jsonb)]
    data: serde_json::Value,
    /// The subscriptions it was fanned out to, in id order, joined by spaces.
    #[diesel(sql_type = Nullable<Text>)]
    to: Option<String>,
}

/// Every `dispatch.*` event, oldest first, with its recipients.
async fn operational_events(conn: &mut AsyncPgConnection) -> Vec<OpEvent> {
    diesel::sql_query(
        "SELECT e.id, e.event_type, e.source, e.data,
                (SELECT string_agg(d.subscription_id, ' ' ORDER BY d.subscription_id)
                   FROM deliveries d WHERE d.event_id = e.id) AS to
           FROM events e WHERE e.event_type LIKE 'dispatch.%' ORDER BY e.id",
    )
    .load(conn)
    .await
    .unwrap()
}

#[derive(QueryableByName)]
struct Health {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    failing_since: Option<chrono::DateTime<chrono::Utc>>,
}

async fn failing_since(
    conn: &mut AsyncPgConnection,
    id: &str,
) -> Option<chrono::DateTime<chrono::Utc>> {
    diesel::sql_query(format!(
        "SELECT failing_since FROM subscriptions WHERE id = '{id}'"
    ))
    .get_result::<Health>(conn)
    .await
    .unwrap()
    .failing_since
}

#[tokio::test]
async fn an_exhausted_delivery_is_reported_to_subscriptions_naming_dispatch_but_not_to_catch_alls()
{
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, "s_fail", "order.*").await;
    subscribe(&mut conn, "s_ops", "dispatch.*").await;
    subscribe(&mut conn, "s_circuits", "dispatch.circuit.*").await;
    subscribe(&mut conn, "s_all", "*").await;
    ingest(&mut conn, "evt_1").await;

    assert_eq!(finish(&mut conn, "s_fail", DeliveryStatus::Failed).await, 1);

    let ops = operational_events(&mut conn).await;
    assert_eq!(ops.len(), 1, "{ops:?}");
    let op = &ops[0];
    assert_eq!(op.event_type, "dispatch.delivery.exhausted");
    assert_eq!(op.source, "dispatch");
    assert!(op.id.starts_with("dispatch_"), "{}", op.id);
    assert_eq!(op.data["subscription_id"], "s_fail");
    assert_eq!(op.data["event_id"], "evt_1");
    assert_eq!(op.data["event_type"], "order.created");
    assert_eq!(op.data["attempts"], 1);
    assert_eq!(op.data["error_code"], "http_status");
    assert_eq!(op.data["suppressed"], 0);
    assert!(op.data["reason"].as_str().unwrap().contains("HTTP 503"));
    assert_eq!(
        op.to.as_deref(),
        Some("s_ops"),
        "only the subscription naming dispatch.* (not `*`, not dispatch.circuit.*)"
    );
    assert!(failing_since(&mut conn, "s_fail").await.is_some());
}

#[tokio::test]
async fn an_outcome_that_rolls_back_emits_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, "s_fail", "order.*").await;
    subscribe(&mut conn, "s_ops", "dispatch.*").await;
    ingest(&mut conn, "evt_1").await;
    let claimed = claim(&mut conn, "w1", 10, LEASE).await.unwrap();
    let outcome = ended(&claimed[0], DeliveryStatus::Failed);

    let result = conn
        .transaction::<(), StoreError, _>(async |conn| {
            deliveries::record_outcomes(conn, "w1", std::slice::from_ref(&outcome)).await?;
            assert_eq!(operational_events(conn).await.len(), 1, "emitted inside");
            Err(StoreError::Corrupt {
                what: "test",
                reason: "roll back".to_owned(),
            })
        })
        .await;
    assert!(result.is_err());
    assert!(operational_events(&mut conn).await.is_empty());
    let delivery = &events::deliveries_of(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        "evt_1",
    )
    .await
    .unwrap()[0];
    assert_eq!(delivery.status, "processing", "the outcome rolled back too");
    assert!(failing_since(&mut conn, "s_fail").await.is_none());
}

#[tokio::test]
async fn a_failing_subscription_to_dispatch_events_does_not_feed_itself() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, "s_ops", "dispatch.*").await;
    subscribe(&mut conn, "s_ops2", "dispatch.*").await;
    // An event about s_ops goes to s_ops2 only: never to the subscription it is about.
    let about_self = Emission::new(Operational::CircuitOpened, "s_ops", "test");
    emit(&mut conn, &[about_self]).await.unwrap();
    let ops = operational_events(&mut conn).await;
    assert_eq!(ops[0].to.as_deref(), Some("s_ops2"));
    // s_ops2 fails it for good: an operational event's delivery causes no other event.
    assert_eq!(finish(&mut conn, "s_ops2", DeliveryStatus::Failed).await, 1);
    assert_eq!(operational_events(&mut conn).await.len(), 1);
}

#[tokio::test]
async fn operational_events_are_rate_bounded_and_report_what_they_suppressed() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, "s_ops", "dispatch.*").await;
    let exhausted = |n: usize| {
        (0..n)
            .map(|i| Emission::new(Operational::DeliveryExhausted, "s_x", format!("#{i}")))
            .collect::<Vec<_>>()
    };
    let first = emit(&mut conn, &exhausted(12)).await.unwrap();
    assert_eq!((first.events, first.deliveries), (10, 10), "10 a minute");
    // Another kind has its own bound.
    let opened = Emission::new(Operational::CircuitOpened, "s_x", "opened");
    assert_eq!(
        emit(&mut conn, std::slice::from_ref(&opened))
            .await
            .unwrap()
            .events,
        1
    );
    assert_eq!(
        emit(&mut conn, &[opened]).await.unwrap().events,
        0,
        "1 per 5 min"
    );
    assert_eq!(emit(&mut conn, &exhausted(1)).await.unwrap().events, 0);

    // The window is over: the next one goes, and says how many were held back.
    sql(
        &mut conn,
        "UPDATE operational_event_windows SET window_start = now() - interval '61 seconds'",
    )
    .await;
    assert_eq!(emit(&mut conn, &exhausted(2)).await.unwrap().events, 2);
    let ops = operational_events(&mut conn).await;
    let last: Vec<&serde_json::Value> = ops.iter().rev().take(2).map(|o| &o.data).collect();
    assert_eq!(last[1]["suppressed"], 3, "2 of the first 12, 1 after");
    assert_eq!(last[0]["suppressed"], 0);
}

#[tokio::test]
async fn circuit_changes_emit_opened_and_closed_once_per_change() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, "s_dest", "order.*").await;
    subscribe(&mut conn, "s_ops", "dispatch.circuit.*").await;
    let update = |state: &'static str, secs: i64| CircuitUpdate {
        subscription_id: "s_dest".to_owned(),
        state,
        open_until: (state == "open").then(|| chrono::Utc::now() + chrono::Duration::seconds(secs)),
    };
    publish_circuits(&mut conn, &[update("open", 30)])
        .await
        .unwrap();
    publish_circuits(&mut conn, &[update("open", 60)])
        .await
        .unwrap();
    let ops = operational_events(&mut conn).await;
    assert_eq!(
        ops.len(),
        1,
        "another worker's news of the same opening is no new event"
    );
    assert_eq!(ops[0].event_type, "dispatch.circuit.opened");
    assert_eq!(ops[0].data["subscription_id"], "s_dest");
    assert!(ops[0].data["open_until"].is_string());
    assert_eq!(ops[0].to.as_deref(), Some("s_ops"));

    // Closing while it is still open is refused (and reports nothing); once due, it closes.
    publish_circuits(&mut conn, &[update("closed", 0)])
        .await
        .unwrap();
    assert_eq!(operational_events(&mut conn).await.len(), 1);
    sql(
        &mut conn,
        "UPDATE subscriptions SET circuit_open_until = now() - interval '1 second'
          WHERE id = 's_dest'",
    )
    .await;
    publish_circuits(&mut conn, &[update("closed", 0)])
        .await
        .unwrap();
    let ops = operational_events(&mut conn).await;
    assert_eq!(ops.len(), 2);
    assert_eq!(ops[1].event_type, "dispatch.circuit.closed");
    // Flapping: it opens again at once, within the bound's five minutes: suppressed.
    publish_circuits(&mut conn, &[update("open", 30)])
        .await
        .unwrap();
    assert_eq!(operational_events(&mut conn).await.len(), 2);
    assert_eq!(
        subscriptions::find_active(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "s_dest"
        )
        .await
        .unwrap()
        .unwrap()
        .circuit_state,
        "open",
        "the state change itself is not bounded"
    );
}

#[tokio::test]
async fn a_success_ends_a_failing_spell_that_failed_attempts_start() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, "s_a", "order.*").await;
    ingest(&mut conn, "evt_1").await;
    finish(&mut conn, "s_a", DeliveryStatus::Retrying).await;
    let since = failing_since(&mut conn, "s_a").await.unwrap();
    sql(&mut conn, "UPDATE deliveries SET next_attempt_at = now()").await;
    finish(&mut conn, "s_a", DeliveryStatus::Retrying).await;
    assert_eq!(
        failing_since(&mut conn, "s_a").await,
        Some(since),
        "a spell is not restarted by further failures"
    );
    sql(&mut conn, "UPDATE deliveries SET next_attempt_at = now()").await;
    finish(&mut conn, "s_a", DeliveryStatus::Delivered).await;
    assert_eq!(failing_since(&mut conn, "s_a").await, None);
}

#[tokio::test]
async fn an_operational_event_nobody_subscribes_to_is_not_stored() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, "s_fail", "order.*").await;
    subscribe(&mut conn, "s_all", "*").await;
    subscribe(&mut conn, "s_circuits", "dispatch.circuit.*").await;
    ingest(&mut conn, "evt_1").await;
    assert_eq!(finish(&mut conn, "s_fail", DeliveryStatus::Failed).await, 1);
    assert!(
        operational_events(&mut conn).await.is_empty(),
        "no subscription names dispatch.delivery.exhausted"
    );
    // Nor is one whose only taker is the subscription it is about.
    let about = Emission::new(Operational::CircuitOpened, "s_circuits", "test");
    assert_eq!(emit(&mut conn, &[about]).await.unwrap().events, 0);
    let to_others = Emission::new(Operational::CircuitOpened, "s_fail", "test");
    assert_eq!(emit(&mut conn, &[to_others]).await.unwrap().events, 1);
}
