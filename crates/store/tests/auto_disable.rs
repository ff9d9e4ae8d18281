//! Auto-disable against a real PostgreSQL: the health sweep warns at 50 % and 90 % of a
//! subscription's threshold, then disables it (held deliveries, a reason, an operational event
//! each time), and enabling it again releases what was held and starts its health afresh.

#![allow(clippy::unwrap_used)]

use diesel::QueryableByName;
use diesel::sql_types::{Jsonb, Nullable, Text};
use diesel_async::RunQueryDsl;
use dispatch_domain::{EventId, EventType, Source};
use dispatch_store::AsyncPgConnection;
use dispatch_store::models::NewEvent;
use dispatch_store::pool::connection;
use dispatch_store::queries::endpoint_health::sweep;
use dispatch_store::queries::events;
use dispatch_store::queries::subscription_changes::{
    SubscriptionChange, UpdateOutcome, held_count, update,
};
use dispatch_store::queries::subscriptions;
use dispatch_test_support::TestDb;

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

#[derive(QueryableByName, Debug)]
struct OpEvent {
    #[diesel(sql_type = Text)]
    event_type: String,
    #[diesel(sql_type = Jsonb)]
    data: serde_json::Value,
    /// The subscriptions it was fanned out to, in id order, joined by spaces.
    #[diesel(sql_type = Nullable<Text>)]
    to: Option<String>,
}

/// Every `dispatch.*` event, oldest first, with its recipients.
async fn operational_events(conn: &mut AsyncPgConnection) -> Vec<OpEvent> {
    diesel::sql_query(
        "SELECT e.event_type, e.data,
                (SELECT string_agg(d.subscription_id, ' ' ORDER BY d.subscription_id)
                   FROM deliveries d WHERE d.event_id = e.id) AS to
           FROM events e WHERE e.event_type LIKE 'dispatch.%' ORDER BY e.id",
    )
    .load(conn)
    .await
    .unwrap()
}

async fn set_enabled(conn: &mut AsyncPgConnection, id: &str, enabled: bool) -> usize {
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
        UpdateOutcome::Updated { released, .. } => released,
        other => panic!("not updated: {other:?}"),
    }
}

#[tokio::test]
async fn a_failing_subscription_is_warned_at_half_and_nine_tenths_then_disabled_and_held() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, "s_fail", "order.*").await;
    subscribe(&mut conn, "s_ops", "dispatch.*").await;
    subscribe(&mut conn, "s_never", "order.*").await;
    sql(
        &mut conn,
        "UPDATE subscriptions
            SET auto_disable_after_secs = CASE id WHEN 's_fail' THEN 100 ELSE 0 END
          WHERE id IN ('s_fail', 's_never')",
    )
    .await;
    let spell = |secs: i64| {
        format!(
            "UPDATE subscriptions SET failing_since = now() - interval '{secs} seconds'
              WHERE id IN ('s_fail', 's_never')"
        )
    };
    sql(&mut conn, &spell(40)).await;
    assert_eq!(sweep(&mut conn, 3600).await.unwrap(), Default::default());
    sql(&mut conn, &spell(55)).await;
    let report = sweep(&mut conn, 3600).await.unwrap();
    assert_eq!(
        report.warned,
        ["s_fail"],
        "0 (never) is never warned nor disabled"
    );
    assert!(
        sweep(&mut conn, 3600).await.unwrap().warned.is_empty(),
        "warned once"
    );
    sql(&mut conn, &spell(95)).await;
    assert_eq!(sweep(&mut conn, 3600).await.unwrap().warned, ["s_fail"]);

    ingest(&mut conn, "evt_waiting").await;
    sql(&mut conn, &spell(101)).await;
    assert_eq!(sweep(&mut conn, 3600).await.unwrap().disabled, ["s_fail"]);
    let row = subscriptions::find_active(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        "s_fail",
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!row.enabled);
    assert!(row.disabled_at.is_some());
    assert!(row.disabled_reason.unwrap().contains("100 s"));
    assert_eq!(
        held_count(&mut conn, "s_fail").await.unwrap(),
        1,
        "held, not lost"
    );
    ingest(&mut conn, "evt_later").await;
    assert_eq!(held_count(&mut conn, "s_fail").await.unwrap(), 2);

    let ops = operational_events(&mut conn).await;
    let kinds: Vec<(&str, &serde_json::Value)> = ops
        .iter()
        .map(|o| (o.event_type.as_str(), &o.data["threshold_percent"]))
        .collect();
    assert_eq!(
        kinds,
        [
            ("dispatch.subscription.failing", &serde_json::json!(50)),
            ("dispatch.subscription.failing", &serde_json::json!(90)),
            ("dispatch.subscription.disabled", &serde_json::Value::Null),
        ]
    );
    assert!(ops.iter().all(|o| o.to.as_deref() == Some("s_ops")));
    assert_eq!(ops[2].data["held_deliveries"], 1);

    // Enabled again: the reason and the spell are gone, the held deliveries released, and the
    // next sweep leaves it alone.
    assert_eq!(set_enabled(&mut conn, "s_fail", true).await, 2);
    let row = subscriptions::find_active(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        "s_fail",
    )
    .await
    .unwrap()
    .unwrap();
    assert!(row.enabled && row.disabled_reason.is_none() && row.disabled_at.is_none());
    assert_eq!(row.failing_since, None);
    assert_eq!(sweep(&mut conn, 3600).await.unwrap(), Default::default());
}

#[tokio::test]
async fn the_global_threshold_applies_to_subscriptions_without_their_own() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    subscribe(&mut conn, "s_a", "order.*").await;
    sql(
        &mut conn,
        "UPDATE subscriptions SET failing_since = now() - interval '10 seconds'",
    )
    .await;
    assert_eq!(
        sweep(&mut conn, 0).await.unwrap(),
        Default::default(),
        "0: never"
    );
    assert_eq!(sweep(&mut conn, 5).await.unwrap().disabled, ["s_a"]);
}
