//! Integration tests of the store against a real PostgreSQL: every test gets a database of its
//! own (`TestDb`), cloned from a migrated template.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::Integer;
use diesel_async::RunQueryDsl;
use dispatch_domain::{DestinationUrl, EventId, EventType, Pattern, Source, SubscriptionId};
use dispatch_store::models::{DeliveryRow, EventRow, NewAttempt, NewEvent, NewSubscription};
use dispatch_store::pool::{build_pool, connection};
use dispatch_store::queries::events::IngestOutcome;
use dispatch_store::queries::{attempts, events, health, subscriptions};
use dispatch_store::schema::{deliveries, subscriptions as subscriptions_table};
use dispatch_store::{AsyncPgConnection, DatabaseSettings, Pool, StoreError, admin, migrations};
use dispatch_test_support::secrets::test_keyring;
use dispatch_test_support::{TEST_DB_PREFIX, TestDb, admin_url};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn new_sub(id: &str, patterns: &[&str]) -> NewSubscription {
    NewSubscription {
        id: SubscriptionId::parse(id).unwrap(),
        url: DestinationUrl::parse(&format!("https://example.com/hooks/{id}")).unwrap(),
        event_types: patterns
            .iter()
            .map(|p| Pattern::parse(p).unwrap())
            .collect(),
        secret: Some(format!("secret-of-{id}")),
        rate_limit: dispatch_store::models::RateLimit::default(),
        settings: Default::default(),
        enabled: true,
    }
}

fn new_event(id: &str, event_type: &str, data: Value) -> NewEvent {
    NewEvent {
        id: EventId::parse(id).unwrap(),
        event_type: EventType::parse(event_type).unwrap(),
        source: Source::parse("billing-service").unwrap(),
        data,
        traceparent: None,
        ordering_key: None,
    }
}

async fn add_sub(conn: &mut AsyncPgConnection, id: &str, patterns: &[&str]) {
    subscriptions::insert(conn, &new_sub(id, patterns), &test_keyring())
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("subscription {id} should be new"));
}

async fn ingest(conn: &mut AsyncPgConnection, event: &NewEvent) -> IngestOutcome {
    events::ingest(conn, event).await.unwrap()
}

/// Ingests an event that must be new; returns the stored row and the delivery count reported.
async fn ingest_created(conn: &mut AsyncPgConnection, event: &NewEvent) -> (EventRow, i64) {
    match ingest(conn, event).await {
        IngestOutcome::Created { event, deliveries } => (event, deliveries),
        other => panic!("expected Created, got {other:?}"),
    }
}

async fn deliveries_of(conn: &mut AsyncPgConnection, event_id: &str) -> Vec<DeliveryRow> {
    events::deliveries_of(conn, event_id).await.unwrap()
}

fn subscription_ids(rows: &[DeliveryRow]) -> BTreeSet<String> {
    rows.iter().map(|d| d.subscription_id.clone()).collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

async fn delivery_count(conn: &mut AsyncPgConnection) -> i64 {
    deliveries::table.count().get_result(conn).await.unwrap()
}

/// Forces a delivery into `status` behind the store's back (as the dispatcher would), with a
/// lease when the status is `processing` (the table requires one) and an old `updated_at`.
async fn force_status(conn: &mut AsyncPgConnection, event_id: &str, sub_id: &str, status: &str) {
    let leased = status == "processing";
    let old = DateTime::parse_from_rfc3339("2000-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let changed = diesel::update(deliveries::table)
        .filter(deliveries::event_id.eq(event_id))
        .filter(deliveries::subscription_id.eq(sub_id))
        .set((
            deliveries::status.eq(status),
            deliveries::leased_by.eq(leased.then_some("worker-1")),
            deliveries::leased_until.eq(leased.then(|| Utc::now() + chrono::Duration::minutes(5))),
            deliveries::updated_at.eq(old),
        ))
        .execute(conn)
        .await
        .unwrap();
    assert_eq!(changed, 1, "no delivery of {event_id} to {sub_id}");
}

async fn delivery(conn: &mut AsyncPgConnection, event_id: &str, sub_id: &str) -> DeliveryRow {
    deliveries_of(conn, event_id)
        .await
        .into_iter()
        .find(|d| d.subscription_id == sub_id)
        .unwrap_or_else(|| panic!("no delivery of {event_id} to {sub_id}"))
}

async fn lease_of(
    conn: &mut AsyncPgConnection,
    event_id: &str,
    sub_id: &str,
) -> (Option<String>, Option<DateTime<Utc>>) {
    deliveries::table
        .filter(deliveries::event_id.eq(event_id))
        .filter(deliveries::subscription_id.eq(sub_id))
        .select((deliveries::leased_by, deliveries::leased_until))
        .first(conn)
        .await
        .unwrap()
}

async fn raw(conn: &mut AsyncPgConnection, sql: &str) {
    diesel::sql_query(sql).execute(conn).await.unwrap();
}

fn pool_with(url: &str, max_connections: u32, connect_timeout: Duration) -> Pool {
    build_pool(&DatabaseSettings {
        url: url.to_owned(),
        max_connections,
        connect_timeout,
    })
}

// ---------------------------------------------------------------------------------------------
// 1. Ingestion fans out to the matching subscriptions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn ingest_creates_one_pending_delivery_per_active_matching_subscription_held_if_paused() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();

    add_sub(&mut conn, "s_exact", &["order.created"]).await;
    add_sub(&mut conn, "s_prefix", &["order.*"]).await;
    add_sub(&mut conn, "s_all", &["*"]).await;
    add_sub(
        &mut conn,
        "s_multi",
        &["invoice.paid", "order.created", "order.*"],
    )
    .await;
    add_sub(&mut conn, "s_other_type", &["order.cancelled"]).await;
    add_sub(&mut conn, "s_plural_prefix", &["orders.*"]).await;
    add_sub(&mut conn, "s_deeper_prefix", &["order.created.*"]).await;
    add_sub(&mut conn, "s_other_case", &["Order.*", "ORDER.CREATED"]).await;
    add_sub(&mut conn, "s_deleted", &["*", "order.created"]).await;
    add_sub(&mut conn, "s_disabled", &["*"]).await;
    assert_eq!(
        subscriptions::delete(&mut conn, "s_deleted").await.unwrap(),
        Some(0)
    );
    diesel::update(subscriptions_table::table)
        .filter(subscriptions_table::id.eq("s_disabled"))
        .set(subscriptions_table::enabled.eq(false))
        .execute(&mut *conn)
        .await
        .unwrap();

    let event = new_event("evt_1", "order.created", json!({"order": 42}));
    let (stored, reported) = ingest_created(&mut conn, &event).await;
    assert_eq!(stored.id, "evt_1");
    assert_eq!(stored.event_type, "order.created");
    assert_eq!(stored.source, "billing-service");
    assert_eq!(stored.data, json!({"order": 42}));

    let rows = deliveries_of(&mut conn, "evt_1").await;
    assert_eq!(
        subscription_ids(&rows),
        set(&["s_all", "s_disabled", "s_exact", "s_multi", "s_prefix"]),
        "a subscription with several matching patterns still gets exactly one delivery, and a \
         paused one gets its (held) delivery"
    );
    assert_eq!(rows.len(), 5);
    assert_eq!(
        reported, 5,
        "Created reports the number of deliveries stored"
    );
    assert_eq!(
        dispatch_store::queries::subscription_changes::held_count(&mut conn, "s_disabled")
            .await
            .unwrap(),
        1,
        "the paused subscription's delivery is held"
    );
    assert_eq!(
        dispatch_store::queries::subscription_changes::held_count(&mut conn, "s_all")
            .await
            .unwrap(),
        0
    );
    for row in &rows {
        assert_eq!(row.event_id, "evt_1");
        assert_eq!(row.status, "pending");
        assert_eq!(
            row.status().unwrap(),
            dispatch_domain::DeliveryStatus::Pending
        );
        assert_eq!(row.attempts, 0);
        assert_eq!(row.last_error, None);
        assert!(
            row.next_attempt_at <= Utc::now(),
            "a new delivery is due at once"
        );
    }
    assert!(
        rows.windows(2).all(|w| w[0].id < w[1].id),
        "deliveries_of lists deliveries in creation (id) order"
    );
    assert_eq!(
        delivery_count(&mut conn).await,
        5,
        "no stray deliveries elsewhere"
    );
}

#[tokio::test]
async fn a_prefix_pattern_selects_deeper_types_but_not_the_bare_prefix() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "s_prefix", &["order.*"]).await;
    add_sub(&mut conn, "s_item_prefix", &["order.item.*"]).await;
    add_sub(&mut conn, "s_all", &["*"]).await;
    add_sub(&mut conn, "s_bare", &["order"]).await;

    let (_, n) = ingest_created(
        &mut conn,
        &new_event("e_deep", "order.item.added", json!({})),
    )
    .await;
    assert_eq!(n, 3);
    assert_eq!(
        subscription_ids(&deliveries_of(&mut conn, "e_deep").await),
        set(&["s_all", "s_item_prefix", "s_prefix"])
    );

    let (_, n) = ingest_created(&mut conn, &new_event("e_bare", "order", json!({}))).await;
    assert_eq!(n, 2);
    assert_eq!(
        subscription_ids(&deliveries_of(&mut conn, "e_bare").await),
        set(&["s_all", "s_bare"]),
        "`order.*` must not select the type `order` itself"
    );
}

#[tokio::test]
async fn an_event_that_matches_no_subscription_is_stored_without_deliveries() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "s_invoice", &["invoice.*"]).await;

    let (stored, n) = ingest_created(
        &mut conn,
        &new_event("evt_lonely", "order.created", json!([1, 2])),
    )
    .await;
    assert_eq!(n, 0);
    assert!(deliveries_of(&mut conn, "evt_lonely").await.is_empty());
    assert_eq!(
        events::find(&mut conn, "evt_lonely").await.unwrap(),
        Some(stored),
        "find returns exactly what ingest returned"
    );
    assert_eq!(events::find(&mut conn, "evt_unknown").await.unwrap(), None);
}

#[tokio::test]
async fn subscriptions_created_after_an_event_get_no_delivery_of_it() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "s_early", &["*"]).await;
    let event = new_event("evt_1", "order.created", json!({}));
    ingest_created(&mut conn, &event).await;
    add_sub(&mut conn, "s_late", &["*"]).await;

    assert!(matches!(
        ingest(&mut conn, &event).await,
        IngestOutcome::Duplicate(_)
    ));
    assert_eq!(
        subscription_ids(&deliveries_of(&mut conn, "evt_1").await),
        set(&["s_early"]),
        "a duplicate must not fan out to subscriptions created in between"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Idempotency
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn ingesting_the_same_event_again_is_a_duplicate_and_creates_no_deliveries() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "s_a", &["*"]).await;
    add_sub(&mut conn, "s_b", &["order.*"]).await;

    let first: Value = serde_json::from_str(
        r#"{"a": 1, "nested": {"x": [1, 2, {"k": "v"}], "y": null}, "z": 2.5}"#,
    )
    .unwrap();
    let reordered: Value = serde_json::from_str(
        r#"{"z": 2.5, "nested": {"y": null, "x": [1, 2, {"k": "v"}]}, "a": 1}"#,
    )
    .unwrap();
    let (created, n) = ingest_created(&mut conn, &new_event("evt_1", "order.created", first)).await;
    assert_eq!(n, 2);
    let before = deliveries_of(&mut conn, "evt_1").await;

    for _ in 0..2 {
        match ingest(
            &mut conn,
            &new_event("evt_1", "order.created", reordered.clone()),
        )
        .await
        {
            IngestOutcome::Duplicate(existing) => {
                assert_eq!(existing, created, "a duplicate returns the stored event")
            }
            other => panic!("expected Duplicate, got {other:?}"),
        }
    }
    assert_eq!(deliveries_of(&mut conn, "evt_1").await, before);
    assert_eq!(delivery_count(&mut conn).await, 2);
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn the_traceparent_is_stored_kept_on_repeats_and_returned_with_claims() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "s_1", &["*"]).await;

    let traced = NewEvent {
        traceparent: Some(TRACEPARENT.to_owned()),
        ordering_key: None,
        ..new_event("evt_t", "order.created", json!({"n": 1}))
    };
    let (created, _) = ingest_created(&mut conn, &traced).await;
    assert_eq!(created.traceparent.as_deref(), Some(TRACEPARENT));
    let found = events::find(&mut conn, "evt_t").await.unwrap().unwrap();
    assert_eq!(found, created);

    // Not part of the content: a repeat with another traceparent, or none, is a duplicate, and
    // the first receipt's is kept.
    let other = NewEvent {
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00".to_owned()),
        ordering_key: None,
        ..new_event("evt_t", "order.created", json!({"n": 1}))
    };
    for repeat in [other, new_event("evt_t", "order.created", json!({"n": 1}))] {
        match ingest(&mut conn, &repeat).await {
            IngestOutcome::Duplicate(existing) => assert_eq!(existing, created),
            got => panic!("expected Duplicate, got {got:?}"),
        }
    }
    match ingest(
        &mut conn,
        &new_event("evt_t", "order.created", json!({"n": 2})),
    )
    .await
    {
        IngestOutcome::Conflict(existing) => {
            assert_eq!(existing.traceparent.as_deref(), Some(TRACEPARENT))
        }
        got => panic!("expected Conflict, got {got:?}"),
    }

    let (untraced, _) =
        ingest_created(&mut conn, &new_event("evt_u", "order.created", json!({}))).await;
    assert_eq!(untraced.traceparent, None);

    let mut claimed =
        dispatch_store::queries::deliveries::claim(&mut conn, "w", 10, Duration::from_secs(60))
            .await
            .unwrap();
    claimed.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    let parents: Vec<(&str, Option<&str>)> = claimed
        .iter()
        .map(|c| (c.event_id.as_str(), c.traceparent.as_deref()))
        .collect();
    assert_eq!(parents, vec![("evt_t", Some(TRACEPARENT)), ("evt_u", None)]);
}

#[tokio::test]
async fn ingesting_the_same_id_with_different_content_is_a_conflict_that_changes_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "s_all", &["*"]).await;

    let original = new_event(
        "evt_1",
        "order.created",
        json!({"items": [1, 2], "total": 3}),
    );
    let (created, _) = ingest_created(&mut conn, &original).await;

    let mut other_source = original.clone();
    other_source.source = Source::parse("shop-service").unwrap();
    let variants = [
        new_event(
            "evt_1",
            "order.created",
            json!({"items": [2, 1], "total": 3}),
        ),
        new_event(
            "evt_1",
            "order.created",
            json!({"items": [1, 2], "total": 4}),
        ),
        new_event(
            "evt_1",
            "order.created",
            json!({"items": [1, 2], "total": 3, "x": null}),
        ),
        new_event(
            "evt_1",
            "order.created",
            json!({"items": [1, 2], "total": "3"}),
        ),
        new_event(
            "evt_1",
            "order.cancelled",
            json!({"items": [1, 2], "total": 3}),
        ),
        other_source,
    ];
    for variant in &variants {
        match ingest(&mut conn, variant).await {
            IngestOutcome::Conflict(existing) => assert_eq!(
                existing, created,
                "a conflict returns the stored event, not the new content ({variant:?})"
            ),
            other => panic!("expected Conflict for {variant:?}, got {other:?}"),
        }
    }
    assert_eq!(
        events::find(&mut conn, "evt_1").await.unwrap(),
        Some(created)
    );
    assert_eq!(delivery_count(&mut conn).await, 1);
}

/// A producer that retries an event whose data holds a large float written in exponent form
/// (`1e17`) must get `Duplicate`: PostgreSQL stores it as the integer `100000000000000000`, which
/// `serde_json` reads back as an integer, and `Value`'s `==` says an integer never equals a float.
#[tokio::test]
async fn a_retried_event_with_a_large_float_in_its_data_is_a_duplicate() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    let data: Value = serde_json::from_str(r#"{"amount": 1e17}"#).unwrap();
    let event = new_event("evt_float", "order.created", data);
    ingest_created(&mut conn, &event).await;
    let outcome = ingest(&mut conn, &event).await;
    assert!(
        matches!(outcome, IngestOutcome::Duplicate(_)),
        "an identical retry must be a duplicate, got {outcome:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Concurrent ingestion of one id
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ingestion_of_one_id_creates_it_exactly_once() {
    const TASKS: usize = 8;
    let db = TestDb::new().await;
    let pool = pool_with(db.url(), TASKS as u32, Duration::from_secs(10));
    {
        let mut conn = connection(&pool).await.unwrap();
        add_sub(&mut conn, "s_a", &["*"]).await;
        add_sub(&mut conn, "s_b", &["order.*"]).await;
        add_sub(&mut conn, "s_c", &["invoice.*"]).await;
    }

    for round in 0..5 {
        let id = format!("evt_race_{round}");
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(TASKS));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..TASKS {
            let (pool, barrier, id) = (pool.clone(), barrier.clone(), id.clone());
            tasks.spawn(async move {
                let mut conn = connection(&pool).await.unwrap();
                barrier.wait().await;
                ingest(&mut conn, &new_event(&id, "order.created", json!({"n": 1}))).await
            });
        }
        let outcomes: Vec<IngestOutcome> = tasks.join_all().await;
        let created: Vec<_> = outcomes
            .iter()
            .filter_map(|o| match o {
                IngestOutcome::Created { event, deliveries } => Some((event, *deliveries)),
                _ => None,
            })
            .collect();
        assert_eq!(created.len(), 1, "round {round}: {outcomes:?}");
        let (event, n) = created[0];
        assert_eq!(n, 2);
        for outcome in &outcomes {
            match outcome {
                IngestOutcome::Created { .. } => {}
                IngestOutcome::Duplicate(existing) => assert_eq!(existing, event),
                IngestOutcome::Conflict(_) => panic!("round {round}: unexpected {outcome:?}"),
            }
        }
        let mut conn = connection(&pool).await.unwrap();
        assert_eq!(
            subscription_ids(&deliveries_of(&mut conn, &id).await),
            set(&["s_a", "s_b"])
        );
        assert_eq!(deliveries_of(&mut conn, &id).await.len(), 2);
    }
}

#[tokio::test]
async fn an_ingest_racing_an_uncommitted_one_waits_and_reports_a_duplicate() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut first = connection(&pool).await.unwrap();
    add_sub(&mut first, "s_all", &["*"]).await;
    let event = new_event("evt_1", "order.created", json!({"k": "v"}));

    raw(&mut first, "BEGIN").await;
    let (created, _) = ingest_created(&mut first, &event).await;

    let second = tokio::spawn({
        let (pool, event) = (pool.clone(), event.clone());
        async move {
            let mut conn = connection(&pool).await.unwrap();
            ingest(&mut conn, &event).await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "the second ingest must wait for the first transaction to finish"
    );
    raw(&mut first, "COMMIT").await;

    assert_eq!(second.await.unwrap(), IngestOutcome::Duplicate(created));
    assert_eq!(deliveries_of(&mut first, "evt_1").await.len(), 1);
}

#[tokio::test]
async fn an_ingest_racing_one_that_rolls_back_creates_the_event_itself() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut first = connection(&pool).await.unwrap();
    add_sub(&mut first, "s_all", &["*"]).await;
    let event = new_event("evt_1", "order.created", json!({"k": "v"}));

    raw(&mut first, "BEGIN").await;
    ingest_created(&mut first, &event).await;
    let second = tokio::spawn({
        let (pool, event) = (pool.clone(), event.clone());
        async move {
            let mut conn = connection(&pool).await.unwrap();
            ingest(&mut conn, &event).await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished());
    raw(&mut first, "ROLLBACK").await;

    match second.await.unwrap() {
        IngestOutcome::Created { deliveries, .. } => assert_eq!(deliveries, 1),
        other => panic!("expected Created after the first rolled back, got {other:?}"),
    }
    assert_eq!(deliveries_of(&mut first, "evt_1").await.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 4. Subscriptions: insert, find, list
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn inserting_a_subscription_stores_and_returns_it() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();

    let mut new = new_sub("sub_1", &["order.*", "invoice.paid"]);
    let row = subscriptions::insert(&mut conn, &new, &test_keyring())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.id, "sub_1");
    assert_eq!(row.url, "https://example.com/hooks/sub_1");
    assert_eq!(
        row.event_types,
        ["order.*", "invoice.paid"],
        "patterns keep their order"
    );
    assert!(row.has_secret);
    assert!(row.enabled);
    assert_eq!(
        subscriptions::find_active(&mut conn, "sub_1")
            .await
            .unwrap(),
        Some(row)
    );

    new.id = SubscriptionId::parse("sub_2").unwrap();
    new.secret = None;
    let row = subscriptions::insert(&mut conn, &new, &test_keyring())
        .await
        .unwrap()
        .unwrap();
    assert!(!row.has_secret);
}

#[tokio::test]
async fn a_taken_subscription_id_is_refused_even_after_deletion() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    let original = subscriptions::insert(&mut conn, &new_sub("sub_1", &["*"]), &test_keyring())
        .await
        .unwrap()
        .unwrap();

    let clash = new_sub("sub_1", &["order.created"]);
    assert_eq!(
        subscriptions::insert(&mut conn, &clash, &test_keyring())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        subscriptions::find_active(&mut conn, "sub_1")
            .await
            .unwrap(),
        Some(original),
        "a refused insert leaves the existing subscription untouched"
    );

    assert_eq!(
        subscriptions::delete(&mut conn, "sub_1").await.unwrap(),
        Some(0)
    );
    assert_eq!(
        subscriptions::insert(&mut conn, &clash, &test_keyring())
            .await
            .unwrap(),
        None,
        "ids of deleted subscriptions are never reused"
    );
    assert_eq!(
        subscriptions::find_active(&mut conn, "sub_1")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn find_active_hides_deleted_and_unknown_subscriptions() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "sub_keep", &["*"]).await;
    add_sub(&mut conn, "sub_gone", &["*"]).await;
    subscriptions::delete(&mut conn, "sub_gone")
        .await
        .unwrap()
        .unwrap();

    assert!(
        subscriptions::find_active(&mut conn, "sub_keep")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        subscriptions::find_active(&mut conn, "sub_gone")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        subscriptions::find_active(&mut conn, "sub_never")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn list_active_pages_through_subscriptions_in_id_order_without_gaps_or_repeats() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    // Inserted out of order, with deleted subscriptions in between and at the ends.
    for id in [
        "s5", "s1", "s0_gone", "s7", "s3", "s4_gone", "s2", "s6", "s4", "s9_gone",
    ] {
        add_sub(&mut conn, id, &["*"]).await;
    }
    for id in ["s0_gone", "s4_gone", "s9_gone"] {
        subscriptions::delete(&mut conn, id).await.unwrap().unwrap();
    }

    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = subscriptions::list_active(&mut conn, after.as_deref(), 3)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = Some(page.last().unwrap().id.clone());
        pages.push(page.into_iter().map(|s| s.id).collect::<Vec<_>>());
        assert!(pages.len() <= 4, "pagination does not terminate: {pages:?}");
    }
    assert_eq!(
        pages,
        [vec!["s1", "s2", "s3"], vec!["s4", "s5", "s6"], vec!["s7"],]
    );

    let all = subscriptions::list_active(&mut conn, None, 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 7);
    assert_eq!(
        subscriptions::list_active(&mut conn, Some("s3"), 2)
            .await
            .unwrap()
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["s4", "s5"],
        "`after` is exclusive"
    );
    assert_eq!(
        subscriptions::list_active(&mut conn, Some("s35"), 1)
            .await
            .unwrap()[0]
            .id,
        "s4",
        "`after` need not be an existing id"
    );
    assert!(
        subscriptions::list_active(&mut conn, Some("s7"), 3)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        subscriptions::list_active(&mut conn, None, 0)
            .await
            .unwrap()
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Deleting a subscription
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn deleting_a_subscription_cancels_its_unfinished_deliveries_only() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "s_doomed", &["*"]).await;
    add_sub(&mut conn, "s_kept", &["*"]).await;

    let statuses = [
        "pending",
        "processing",
        "retrying",
        "delivered",
        "failed",
        "cancelled",
    ];
    for status in statuses {
        let id = format!("e_{status}");
        ingest_created(&mut conn, &new_event(&id, "order.created", json!({}))).await;
        if status != "pending" {
            force_status(&mut conn, &id, "s_doomed", status).await;
        }
        // The other subscription's delivery of the same event is in the same state.
        if status != "pending" {
            force_status(&mut conn, &id, "s_kept", status).await;
        }
    }
    let delivered_id = delivery(&mut conn, "e_delivered", "s_doomed").await.id;
    attempts::record(
        &mut conn,
        &[NewAttempt {
            delivery_id: delivered_id,
            event_id: "e_delivered".into(),
            subscription_id: "s_doomed".into(),
            attempt: 1,
            status_code: Some(200),
            latency_ms: 12,
            error_code: None,
            error: None,
            response_body: Some("ok".into()),
        }],
    )
    .await
    .unwrap();
    let before_delete = Utc::now();

    assert_eq!(
        subscriptions::delete(&mut conn, "s_doomed").await.unwrap(),
        Some(3),
        "pending, processing and retrying deliveries are cancelled"
    );

    for status in statuses {
        let id = format!("e_{status}");
        let doomed = delivery(&mut conn, &id, "s_doomed").await;
        let expected = match status {
            "pending" | "processing" | "retrying" => "cancelled",
            finished => finished,
        };
        assert_eq!(
            doomed.status, expected,
            "delivery of {id} to the deleted subscription"
        );
        if matches!(status, "pending" | "processing" | "retrying") {
            assert!(doomed.updated_at >= before_delete - chrono::Duration::seconds(5));
            assert_eq!(
                lease_of(&mut conn, &id, "s_doomed").await,
                (None, None),
                "a cancelled delivery holds no lease"
            );
        } else {
            assert!(
                doomed.updated_at.timestamp() == 946_684_800,
                "finished deliveries are not touched"
            );
        }
        let kept = delivery(&mut conn, &id, "s_kept").await;
        assert_eq!(
            kept.status, status,
            "other subscriptions' deliveries are not touched"
        );
        // The event's delivery history is still readable, with both deliveries.
        assert_eq!(deliveries_of(&mut conn, &id).await.len(), 2);
    }
    assert_eq!(
        lease_of(&mut conn, "e_processing", "s_kept")
            .await
            .0
            .as_deref(),
        Some("worker-1")
    );
    let history = attempts::of_event(&mut conn, "e_delivered").await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].subscription_id, "s_doomed");

    assert_eq!(
        subscriptions::find_active(&mut conn, "s_doomed")
            .await
            .unwrap(),
        None
    );
    assert!(
        subscriptions::list_active(&mut conn, None, 10)
            .await
            .unwrap()
            .iter()
            .all(|s| s.id != "s_doomed")
    );
    assert_eq!(
        subscriptions::delete(&mut conn, "s_doomed").await.unwrap(),
        None
    );
    assert_eq!(
        subscriptions::delete(&mut conn, "s_never_existed")
            .await
            .unwrap(),
        None
    );

    // New events no longer reach the deleted subscription.
    let (_, n) = ingest_created(&mut conn, &new_event("e_after", "order.created", json!({}))).await;
    assert_eq!(n, 1);
    assert_eq!(
        subscription_ids(&deliveries_of(&mut conn, "e_after").await),
        set(&["s_kept"])
    );
}

#[tokio::test]
async fn deleting_twice_cancels_nothing_the_second_time() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "s_1", &["*"]).await;
    ingest_created(&mut conn, &new_event("e_1", "a.b", json!({}))).await;
    assert_eq!(
        subscriptions::delete(&mut conn, "s_1").await.unwrap(),
        Some(1)
    );
    assert_eq!(subscriptions::delete(&mut conn, "s_1").await.unwrap(), None);
    assert_eq!(delivery(&mut conn, "e_1", "s_1").await.status, "cancelled");
}

/// An event ingested while a subscription is being deleted must not leave a live delivery to the
/// deleted subscription. Here the ingest's transaction takes its snapshot before the delete and
/// commits after it: the delete's cancellation cannot see the new (uncommitted) delivery, and the
/// ingest's `INSERT ... SELECT` does not lock the subscription row, so nothing serialises them.
#[tokio::test]
async fn an_event_ingested_while_its_subscription_is_deleted_leaves_no_pending_delivery() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut ingester = connection(&pool).await.unwrap();
    let mut deleter = admin::connect(db.url()).await.unwrap();
    add_sub(&mut ingester, "s_1", &["*"]).await;

    raw(&mut ingester, "BEGIN").await;
    ingest_created(&mut ingester, &new_event("e_1", "a.b", json!({}))).await;
    let delete =
        tokio::spawn(async move { subscriptions::delete(&mut deleter, "s_1").await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    raw(&mut ingester, "COMMIT").await;
    delete.await.unwrap();

    let status = delivery(&mut ingester, "e_1", "s_1").await.status;
    assert_eq!(
        status, "cancelled",
        "the deleted subscription still has a {status} delivery"
    );
}

#[tokio::test]
async fn an_event_ingested_while_a_delete_is_uncommitted_skips_the_deleted_subscription() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut deleter = connection(&pool).await.unwrap();
    let mut ingester = admin::connect(db.url()).await.unwrap();
    add_sub(&mut deleter, "s_1", &["*"]).await;
    add_sub(&mut deleter, "s_2", &["*"]).await;

    // The delete's own locking, held open: the row lock and the soft delete, not yet committed.
    raw(&mut deleter, "BEGIN").await;
    raw(
        &mut deleter,
        "SELECT id FROM subscriptions WHERE id = 's_1' FOR UPDATE",
    )
    .await;
    raw(
        &mut deleter,
        "UPDATE subscriptions SET deleted_at = now() WHERE id = 's_1'",
    )
    .await;
    let ingest = tokio::spawn(async move {
        events::ingest(&mut ingester, &new_event("e_1", "a.b", json!({})))
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    raw(&mut deleter, "COMMIT").await;
    match ingest.await.unwrap() {
        IngestOutcome::Created { deliveries, .. } => assert_eq!(deliveries, 1),
        other => panic!("expected Created, got {other:?}"),
    }
    let rows = events::deliveries_of(&mut deleter, "e_1").await.unwrap();
    let subs: Vec<&str> = rows.iter().map(|d| d.subscription_id.as_str()).collect();
    assert_eq!(
        subs,
        ["s_2"],
        "no delivery may be created for the deleted subscription"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Attempts
// ---------------------------------------------------------------------------------------------

fn attempt(delivery: &DeliveryRow, n: i32, status_code: Option<i32>) -> NewAttempt {
    NewAttempt {
        delivery_id: delivery.id,
        event_id: delivery.event_id.clone(),
        subscription_id: delivery.subscription_id.clone(),
        attempt: n,
        status_code,
        latency_ms: 10 * n,
        error_code: status_code.is_none().then(|| "timeout".to_owned()),
        error: status_code
            .is_none()
            .then(|| format!("attempt {n} timed out")),
        response_body: status_code.map(|c| format!("body {c}")),
    }
}

#[tokio::test]
async fn attempts_of_an_event_are_listed_oldest_first_and_only_for_that_event() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "s_a", &["*"]).await;
    add_sub(&mut conn, "s_b", &["*"]).await;
    ingest_created(&mut conn, &new_event("e_1", "order.created", json!({}))).await;
    ingest_created(&mut conn, &new_event("e_2", "order.created", json!({}))).await;
    let d1a = delivery(&mut conn, "e_1", "s_a").await;
    let d1b = delivery(&mut conn, "e_1", "s_b").await;
    let d2a = delivery(&mut conn, "e_2", "s_a").await;

    attempts::record(&mut conn, &[]).await.unwrap();
    // Interleaved across events and calls; one call stores several rows.
    attempts::record(
        &mut conn,
        &[attempt(&d1a, 1, None), attempt(&d2a, 1, Some(500))],
    )
    .await
    .unwrap();
    attempts::record(&mut conn, &[attempt(&d1b, 1, Some(503))])
        .await
        .unwrap();
    attempts::record(&mut conn, &[attempt(&d2a, 2, Some(200))])
        .await
        .unwrap();
    attempts::record(
        &mut conn,
        &[attempt(&d1a, 2, Some(204)), attempt(&d1b, 2, Some(410))],
    )
    .await
    .unwrap();

    let e1 = attempts::of_event(&mut conn, "e_1").await.unwrap();
    let summary: Vec<_> = e1
        .iter()
        .map(|a| (a.subscription_id.as_str(), a.attempt, a.status_code))
        .collect();
    assert_eq!(
        summary,
        [
            ("s_a", 1, None),
            ("s_b", 1, Some(503)),
            ("s_a", 2, Some(204)),
            ("s_b", 2, Some(410)),
        ]
    );
    assert!(
        e1.windows(2)
            .all(|w| w[0].id < w[1].id && w[0].created_at <= w[1].created_at)
    );
    assert!(e1.iter().all(|a| a.event_id == "e_1"));
    let first = &e1[0];
    assert_eq!(first.delivery_id, d1a.id);
    assert_eq!(first.latency_ms, 10);
    assert_eq!(first.error_code.as_deref(), Some("timeout"));
    assert_eq!(first.error.as_deref(), Some("attempt 1 timed out"));
    assert_eq!(first.response_body, None);
    assert_eq!(e1[1].response_body.as_deref(), Some("body 503"));

    let e2 = attempts::of_event(&mut conn, "e_2").await.unwrap();
    assert_eq!(
        e2.iter()
            .map(|a| (a.attempt, a.status_code))
            .collect::<Vec<_>>(),
        [(1, Some(500)), (2, Some(200))]
    );
    assert!(
        attempts::of_event(&mut conn, "e_unknown")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_attempt_for_an_unknown_delivery_is_a_query_error_and_stores_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "s_a", &["*"]).await;
    ingest_created(&mut conn, &new_event("e_1", "order.created", json!({}))).await;
    let real = delivery(&mut conn, "e_1", "s_a").await;
    let mut bogus = attempt(&real, 2, Some(200));
    bogus.delivery_id = real.id + 1000;

    let err = attempts::record(&mut conn, &[attempt(&real, 1, Some(500)), bogus])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Query(DieselError::DatabaseError(
                DatabaseErrorKind::ForeignKeyViolation,
                _
            ))
        ),
        "got {err:?}"
    );
    assert!(!err.is_unavailable());
    assert!(
        attempts::of_event(&mut conn, "e_1")
            .await
            .unwrap()
            .is_empty(),
        "a batch is all or nothing"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Migrations and readiness
// ---------------------------------------------------------------------------------------------

/// A database created through `dispatch_store::admin`, dropped through it however the test ends.
struct FreshDb {
    name: String,
}

impl FreshDb {
    async fn create() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("{TEST_DB_PREFIX}fresh_{}_{nanos}", std::process::id());
        let mut admin_conn = admin::connect(&admin_url()).await.unwrap();
        assert!(
            !admin::database_exists(&mut admin_conn, &name)
                .await
                .unwrap()
        );
        admin::create_database(&mut admin_conn, &name, None)
            .await
            .unwrap();
        assert!(
            admin::database_exists(&mut admin_conn, &name)
                .await
                .unwrap()
        );
        Self { name }
    }

    fn url(&self) -> String {
        admin::url_with_database(&admin_url(), &self.name)
    }
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        // Drop cannot await inside the test's runtime: use a thread with a runtime of its own.
        let name = self.name.clone();
        let gone = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut conn = admin::connect(&admin_url()).await?;
                admin::drop_database(&mut conn, &name).await?;
                admin::database_exists(&mut conn, &name).await
            })
        })
        .join();
        match gone {
            Ok(Ok(false)) => {}
            other if std::thread::panicking() => {
                eprintln!("could not drop {}: {other:?}", self.name)
            }
            other => panic!("could not drop {}: {other:?}", self.name),
        }
    }
}

async fn ready(url: &str) -> Result<bool, StoreError> {
    let mut conn = admin::connect(url).await.unwrap();
    health::check_ready(&mut conn).await
}

async fn applied(url: &str) -> Vec<bool> {
    migrations::status(url)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.applied)
        .collect()
}

#[tokio::test]
async fn migrations_apply_revert_and_reapply_on_a_fresh_database() {
    let db = FreshDb::create().await;
    let url = db.url();
    let embedded = migrations::embedded_versions().unwrap();
    assert!(!embedded.is_empty());
    let n = embedded.len();

    let before = ready(&url).await;
    assert!(
        matches!(
            before,
            Err(StoreError::Corrupt {
                what: "migration table",
                ..
            })
        ),
        "a database without migrations is not ready: {before:?}"
    );
    let status = migrations::status(&url).await.unwrap();
    assert_eq!(
        status.iter().map(|m| m.version.clone()).collect::<Vec<_>>(),
        embedded,
        "status lists every embedded migration, oldest first"
    );
    assert!(status.iter().all(|m| !m.applied), "{status:?}");
    // The name is the migration's directory, e.g. `2026-11-29-000001_create_core_tables`
    // for version `20261129000001`.
    for m in &status {
        let digits: String = m
            .name
            .chars()
            .take_while(|c| *c != '_')
            .filter(char::is_ascii_digit)
            .collect();
        assert_eq!(digits, m.version, "{m:?}");
    }
    assert!(
        !ready(&url).await.unwrap(),
        "status leaves an empty migration table: still not ready"
    );

    assert_eq!(migrations::run_pending(&url).await.unwrap(), embedded);
    assert_eq!(applied(&url).await, vec![true; n]);
    assert!(ready(&url).await.unwrap());
    assert_eq!(
        migrations::run_pending(&url).await.unwrap(),
        Vec::<String>::new(),
        "running again applies nothing"
    );

    // The schema really is there: the store works on it.
    {
        let pool = pool_with(&url, 1, Duration::from_secs(5));
        let mut conn = connection(&pool).await.unwrap();
        // Without a secret: reverting the secret-sealing migration refuses while a
        // subscription holds only a sealed secret (tested on its own below).
        let mut unsigned = new_sub("s_1", &["*"]);
        unsigned.secret = None;
        subscriptions::insert(&mut conn, &unsigned, &test_keyring())
            .await
            .unwrap()
            .unwrap();
        let (_, n) = ingest_created(&mut conn, &new_event("e_1", "a", json!({}))).await;
        assert_eq!(n, 1);
    }

    let last = embedded.last().unwrap().clone();
    assert_eq!(migrations::revert_last(&url).await.unwrap(), last);
    let mut expected = vec![true; n];
    expected[n - 1] = false;
    assert_eq!(applied(&url).await, expected);
    assert!(
        !ready(&url).await.unwrap(),
        "a database missing a migration is not ready"
    );

    if n == 1 {
        // Reverting the only migration drops the tables again.
        let mut conn = admin::connect(&url).await.unwrap();
        let err = events::find(&mut conn, "e_1").await.unwrap_err();
        assert!(matches!(err, StoreError::Query(_)), "got {err:?}");
    }

    assert_eq!(migrations::run_pending(&url).await.unwrap(), vec![last]);
    assert_eq!(applied(&url).await, vec![true; n]);
    assert!(ready(&url).await.unwrap());
    let mut conn = admin::connect(&url).await.unwrap();
    let found = events::find(&mut conn, "e_1").await.unwrap();
    if n == 1 {
        assert_eq!(found, None, "a re-created, empty schema");
    } else {
        // Reverting and re-applying the latest migration keeps the data of the earlier ones.
        assert!(found.is_some(), "the event survived the round trip");
    }
    drop(conn);
    drop(db);
}

#[tokio::test]
async fn a_test_database_is_ready() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    assert!(health::check_ready(&mut conn).await.unwrap());
    assert!(migrations::is_up_to_date(&mut conn).await.unwrap());
}

// ---------------------------------------------------------------------------------------------
// 8. Error classification
// ---------------------------------------------------------------------------------------------

fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_database_nobody_listens_for_is_unavailable() {
    let port = dead_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
    let pool = pool_with(&url, 2, Duration::from_secs(1));

    let started = Instant::now();
    let err = connection(&pool).await.map(|_| ()).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
    assert!(err.is_unavailable());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the pool gives up after its connect timeout, took {:?}",
        started.elapsed()
    );

    let err = admin::connect(&url).await.map(|_| ()).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
    let err = migrations::status(&url).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

#[tokio::test]
async fn a_session_killed_by_the_server_is_unavailable_not_a_query_error() {
    let db = TestDb::new().await;
    let mut victim = admin::connect(db.url()).await.unwrap();
    let Pid { pid } = diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result(&mut victim)
        .await
        .unwrap();
    let mut killer = admin::connect(db.url()).await.unwrap();
    diesel::sql_query("SELECT pg_terminate_backend($1)")
        .bind::<Integer, _>(pid)
        .execute(&mut killer)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let err = subscriptions::find_active(&mut victim, "s_1")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
}

#[tokio::test]
async fn a_query_against_a_missing_table_is_a_query_error() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    raw(&mut conn, "DROP TABLE attempts").await;
    let err = attempts::of_event(&mut conn, "e_1").await.unwrap_err();
    assert!(matches!(err, StoreError::Query(_)), "got {err:?}");
    assert!(!err.is_unavailable());
}

// ---------------------------------------------------------------------------------------------
// Queue: lease fencing
// ---------------------------------------------------------------------------------------------

fn outcome_for(
    claimed: &dispatch_store::queries::deliveries::ClaimedDelivery,
) -> dispatch_store::queries::deliveries::Outcome {
    dispatch_store::queries::deliveries::Outcome {
        delivery_id: claimed.id,
        leased_until: claimed.leased_until,
        attempted: true,
        status: dispatch_domain::DeliveryStatus::Delivered,
        next_attempt_at: None,
        status_code: Some(200),
        latency_ms: 3,
        error_code: None,
        error: None,
        response_body: Some("ok".to_owned()),
    }
}

#[tokio::test]
async fn an_outcome_from_an_older_lease_of_the_same_worker_is_not_applied() {
    use dispatch_store::queries::deliveries::{claim, record_outcomes};
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "s_1", &["*"]).await;
    ingest_created(&mut conn, &new_event("e_1", "a.b", json!({}))).await;

    let first = claim(&mut conn, "w", 10, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    // The lease expires and the same worker claims the delivery again: a new lease.
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        let again = claim(&mut conn, "w", 10, Duration::from_secs(60))
            .await
            .unwrap();
        if !again.is_empty() {
            break again;
        }
        assert!(Instant::now() < deadline, "the first lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(first[0].leased_until, second[0].leased_until);

    let stale = record_outcomes(&mut conn, "w", &[outcome_for(&first[0])])
        .await
        .unwrap();
    assert!(
        stale.is_empty(),
        "the outcome of the expired lease was applied"
    );
    assert_eq!(delivery(&mut conn, "e_1", "s_1").await.status, "processing");

    let current = record_outcomes(&mut conn, "w", &[outcome_for(&second[0])])
        .await
        .unwrap();
    assert_eq!(current, [second[0].id]);
    let row = delivery(&mut conn, "e_1", "s_1").await;
    assert_eq!((row.status.as_str(), row.attempts), ("delivered", 1));
    assert_eq!(attempts::of_event(&mut conn, "e_1").await.unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 9. Destination resilience: published circuits, rate limits, the worker registry
// ---------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq, QueryableByName)]
struct Circuit {
    #[diesel(sql_type = diesel::sql_types::Text)]
    state: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>)]
    open_until: Option<DateTime<Utc>>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>)]
    changed_at: Option<DateTime<Utc>>,
}

async fn circuit_of(conn: &mut AsyncPgConnection, id: &str) -> Circuit {
    let row = subscriptions::find_active(conn, id).await.unwrap().unwrap();
    Circuit {
        state: row.circuit_state,
        open_until: row.circuit_open_until,
        changed_at: row.circuit_changed_at,
    }
}

async fn publish(
    conn: &mut AsyncPgConnection,
    updates: &[(&str, &'static str, Option<DateTime<Utc>>)],
) {
    let updates: Vec<subscriptions::CircuitUpdate> = updates
        .iter()
        .map(|(id, state, open_until)| subscriptions::CircuitUpdate {
            subscription_id: (*id).to_owned(),
            state,
            open_until: *open_until,
        })
        .collect();
    subscriptions::publish_circuits(conn, &updates)
        .await
        .unwrap();
}

/// Timestamps go through PostgreSQL at microsecond precision.
fn same_instant(a: Option<DateTime<Utc>>, b: DateTime<Utc>) -> bool {
    a.is_some_and(|a| (a - b).abs() < chrono::Duration::microseconds(1))
}

#[tokio::test]
async fn publishing_circuits_never_shortens_an_open_one_and_closing_clears_its_end() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "s_a", &["*"]).await;
    add_sub(&mut conn, "s_b", &["*"]).await;
    let closed = Circuit {
        state: "closed".to_owned(),
        open_until: None,
        changed_at: None,
    };
    assert_eq!(circuit_of(&mut conn, "s_a").await, closed, "the default");

    let now = Utc::now();
    let (soon, later, latest) = (
        now + chrono::Duration::seconds(10),
        now + chrono::Duration::seconds(60),
        now + chrono::Duration::seconds(120),
    );
    publish(&mut conn, &[("s_a", "open", Some(later))]).await;
    let c = circuit_of(&mut conn, "s_a").await;
    assert_eq!(c.state, "open");
    assert!(same_instant(c.open_until, later), "{c:?}");
    assert!(c.changed_at.is_some());
    assert_eq!(
        circuit_of(&mut conn, "s_b").await,
        closed,
        "only s_a changed"
    );

    // Another worker's older news (it opened a little earlier) does not shorten it.
    publish(&mut conn, &[("s_a", "open", Some(soon))]).await;
    let c = circuit_of(&mut conn, "s_a").await;
    assert!(same_instant(c.open_until, later), "shortened: {c:?}");
    // Longer news extends it.
    publish(&mut conn, &[("s_a", "open", Some(latest))]).await;
    assert!(same_instant(
        circuit_of(&mut conn, "s_a").await.open_until,
        latest
    ));

    // A worker whose own breaker half-opened cannot clear a circuit that is still open.
    publish(&mut conn, &[("s_a", "half_open", None)]).await;
    let c = circuit_of(&mut conn, "s_a").await;
    assert_eq!(c.state, "open", "cleared while still open: {c:?}");
    assert!(same_instant(c.open_until, latest));
    publish(&mut conn, &[("s_a", "closed", None)]).await;
    assert_eq!(circuit_of(&mut conn, "s_a").await.state, "open");

    // Once the open time is over, half-open and closed are published and have no end.
    raw(
        &mut conn,
        "UPDATE subscriptions SET circuit_open_until = now() - interval '1 second' WHERE id = 's_a'",
    )
    .await;
    publish(&mut conn, &[("s_a", "half_open", Some(latest))]).await;
    let c = circuit_of(&mut conn, "s_a").await;
    assert_eq!((c.state.as_str(), c.open_until), ("half_open", None));
    // Opened afresh, the new end counts (nothing of the old one is left to keep).
    publish(&mut conn, &[("s_a", "open", Some(soon))]).await;
    assert!(same_instant(
        circuit_of(&mut conn, "s_a").await.open_until,
        soon
    ));
    raw(
        &mut conn,
        "UPDATE subscriptions SET circuit_open_until = now() - interval '1 second' WHERE id = 's_a'",
    )
    .await;
    publish(&mut conn, &[("s_a", "closed", None)]).await;
    let c = circuit_of(&mut conn, "s_a").await;
    assert_eq!((c.state.as_str(), c.open_until), ("closed", None));
    assert!(c.changed_at.is_some());

    // Several in one statement; unknown ids and nothing at all are no-ops.
    publish(
        &mut conn,
        &[
            ("s_a", "open", Some(later)),
            ("s_b", "open", Some(soon)),
            ("s_unknown", "open", Some(soon)),
        ],
    )
    .await;
    assert!(same_instant(
        circuit_of(&mut conn, "s_a").await.open_until,
        later
    ));
    assert!(same_instant(
        circuit_of(&mut conn, "s_b").await.open_until,
        soon
    ));
    publish(&mut conn, &[]).await;
}

#[tokio::test]
async fn claims_skip_every_delivery_of_a_destination_whose_circuit_is_open() {
    use dispatch_store::queries::deliveries::claim;

    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    let mut limited = new_sub("s_open", &["*"]);
    limited.rate_limit = dispatch_store::models::RateLimit {
        per_second: 2.5,
        burst: 4,
    };
    subscriptions::insert(&mut conn, &limited, &test_keyring())
        .await
        .unwrap()
        .unwrap();
    add_sub(&mut conn, "s_ok", &["*"]).await;
    for id in ["e_pending", "e_retrying", "e_expired"] {
        ingest_created(&mut conn, &new_event(id, "a.b", json!({}))).await;
    }
    // Due in every way a delivery can be due.
    raw(
        &mut conn,
        "UPDATE deliveries SET status = 'retrying', attempts = 2 WHERE event_id = 'e_retrying'",
    )
    .await;
    raw(
        &mut conn,
        "UPDATE deliveries SET status = 'processing', leased_by = 'gone',
                leased_until = now() - interval '1 minute'
          WHERE event_id = 'e_expired'",
    )
    .await;
    let until = Utc::now() + chrono::Duration::minutes(5);
    publish(&mut conn, &[("s_open", "open", Some(until))]).await;
    // Its waiting deliveries were put off until the circuit half-opens, without an attempt;
    // the other destination's and the leased one were not touched.
    for (event, sub, put_off) in [
        ("e_pending", "s_open", true),
        ("e_retrying", "s_open", true),
        ("e_expired", "s_open", false),
        ("e_pending", "s_ok", false),
    ] {
        let d = delivery(&mut conn, event, sub).await;
        assert_eq!(
            same_instant(Some(d.next_attempt_at), until),
            put_off,
            "{d:?}"
        );
        assert!(d.attempts <= 2, "{d:?}");
    }

    let claimed = claim(&mut conn, "w", 100, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3, "{claimed:?}");
    assert!(
        claimed.iter().all(|c| c.subscription_id == "s_ok"),
        "{claimed:?}"
    );
    assert!(claimed.iter().all(|c| c.circuit_open_until.is_none()));
    assert!(
        claimed
            .iter()
            .all(|c| (c.rate_limit_per_sec, c.rate_limit_burst) == (100.0, 10))
    );

    // Once its time is up, they are claimable again, with the destination's limits. (Time
    // passes: the circuit's end and the deliveries put off until it move into the past.)
    raw(
        &mut conn,
        "UPDATE subscriptions SET circuit_open_until = now() - interval '1 second'
          WHERE id = 's_open'",
    )
    .await;
    raw(
        &mut conn,
        "UPDATE deliveries SET next_attempt_at = now() - interval '1 second'
          WHERE subscription_id = 's_open' AND status <> 'processing'",
    )
    .await;
    let claimed = claim(&mut conn, "w", 100, Duration::from_secs(60))
        .await
        .unwrap();
    let mut events: Vec<&str> = claimed.iter().map(|c| c.event_id.as_str()).collect();
    events.sort_unstable();
    assert_eq!(events, ["e_expired", "e_pending", "e_retrying"]);
    for c in &claimed {
        assert_eq!(c.subscription_id, "s_open");
        assert_eq!((c.rate_limit_per_sec, c.rate_limit_burst), (2.5, 4));
        assert!(c.circuit_open_until.is_some_and(|u| u < Utc::now()));
    }
}

#[tokio::test]
async fn the_next_due_time_waits_for_an_open_circuit_to_end() {
    use dispatch_store::queries::deliveries::next_due_at;

    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "s_open", &["*"]).await;
    ingest_created(&mut conn, &new_event("e_1", "a.b", json!({}))).await;
    let until = Utc::now() + chrono::Duration::minutes(5);
    publish(&mut conn, &[("s_open", "open", Some(until))]).await;

    let due = next_due_at(&mut conn).await.unwrap();
    assert!(
        due.is_some_and(|at| at >= until - chrono::Duration::milliseconds(1)),
        "the delivery cannot be claimed before {until}, yet it is due at {due:?}"
    );
}

async fn worker_rows(conn: &mut AsyncPgConnection) -> BTreeSet<String> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
    }
    let rows: Vec<Row> = diesel::sql_query("SELECT id FROM workers")
        .load(conn)
        .await
        .unwrap();
    rows.into_iter().map(|r| r.id).collect()
}

#[tokio::test]
async fn heartbeats_count_the_live_workers_and_a_worker_that_leaves_is_no_longer_counted() {
    use dispatch_store::queries::workers::{heartbeat, leave};

    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    assert_eq!(heartbeat(&mut conn, "w_1", 20).await.unwrap(), 1, "alone");
    assert_eq!(heartbeat(&mut conn, "w_2", 20).await.unwrap(), 2);
    assert_eq!(
        heartbeat(&mut conn, "w_1", 20).await.unwrap(),
        2,
        "counted once"
    );
    assert_eq!(heartbeat(&mut conn, "w_3", 20).await.unwrap(), 3);

    // w_3 leaves; w_2 falls silent for longer than the window.
    leave(&mut conn, "w_3").await.unwrap();
    raw(
        &mut conn,
        "UPDATE workers SET seen_at = now() - interval '30 seconds' WHERE id = 'w_2'",
    )
    .await;
    assert_eq!(heartbeat(&mut conn, "w_1", 20).await.unwrap(), 1);
    assert_eq!(
        heartbeat(&mut conn, "w_1", 60).await.unwrap(),
        2,
        "within a longer window w_2 still counts"
    );
    assert_eq!(
        heartbeat(&mut conn, "w_2", 20).await.unwrap(),
        2,
        "w_2 is back"
    );

    // A worker gone for over an hour is removed on the way; leaving twice is harmless.
    raw(
        &mut conn,
        "INSERT INTO workers (id, seen_at) VALUES ('w_old', now() - interval '2 hours')",
    )
    .await;
    heartbeat(&mut conn, "w_1", 20).await.unwrap();
    assert_eq!(worker_rows(&mut conn).await, set(&["w_1", "w_2"]));
    leave(&mut conn, "w_2").await.unwrap();
    leave(&mut conn, "w_2").await.unwrap();
    assert_eq!(heartbeat(&mut conn, "w_1", 20).await.unwrap(), 1);
    assert_eq!(worker_rows(&mut conn).await, set(&["w_1"]));
}

// ---------------------------------------------------------------------------------------------
// Group ingestion (the API's group commit)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_group_stores_each_event_with_its_delivery_rows_and_judges_repeats_in_order() {
    use dispatch_store::queries::events::Ingested;
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "sub_orders", &["order.*"]).await;
    add_sub(&mut conn, "sub_all", &["*"]).await;
    ingest_created(
        &mut conn,
        &new_event("evt_old", "order.created", json!({"n": 0})),
    )
    .await;

    let group = [
        new_event("evt_b", "order.created", json!({"n": 1})),
        new_event("evt_old", "order.created", json!({"n": 0})),
        new_event("evt_a", "user.created", json!({"n": 2})),
        // The same id twice in one group: the first item counts.
        new_event("evt_b", "order.created", json!({"n": 1})),
        new_event("evt_b", "order.created", json!({"n": 99})),
        new_event("evt_old", "order.created", json!({"n": "changed"})),
    ];
    let outcomes = events::ingest_group(&mut conn, &group).await.unwrap();
    assert_eq!(outcomes.len(), group.len());

    let Ingested::Created { event, deliveries } = &outcomes[0] else {
        panic!("evt_b is new: {:?}", outcomes[0]);
    };
    assert_eq!(event.id, "evt_b");
    assert_eq!(event.data, json!({"n": 1}));
    // The rows answered are the rows stored, in creation order.
    assert_eq!(deliveries, &deliveries_of(&mut conn, "evt_b").await);
    assert_eq!(
        subscription_ids(deliveries),
        set(&["sub_orders", "sub_all"])
    );
    assert!(
        deliveries
            .iter()
            .all(|d| d.status == "pending" && d.attempts == 0)
    );

    assert!(matches!(&outcomes[1], Ingested::Duplicate(e) if e.id == "evt_old"));
    let Ingested::Created { deliveries, .. } = &outcomes[2] else {
        panic!("evt_a is new: {:?}", outcomes[2]);
    };
    assert_eq!(subscription_ids(deliveries), set(&["sub_all"]));
    assert!(matches!(&outcomes[3], Ingested::Duplicate(e) if e.id == "evt_b"));
    assert!(matches!(&outcomes[4], Ingested::Conflict(e) if e.data == json!({"n": 1})));
    assert!(matches!(&outcomes[5], Ingested::Conflict(e) if e.data == json!({"n": 0})));
    // Nothing but the two new events' deliveries was created.
    assert_eq!(delivery_count(&mut conn).await, 2 + 3);
}

#[tokio::test]
async fn a_group_of_events_matching_nothing_is_stored_without_deliveries() {
    use dispatch_store::queries::events::Ingested;
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    let group: Vec<NewEvent> = (0..50)
        .map(|n| new_event(&format!("evt_{n:02}"), "order.created", json!({"n": n})))
        .collect();
    let outcomes = events::ingest_group(&mut conn, &group).await.unwrap();
    for (n, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Ingested::Created { event, deliveries } => {
                assert_eq!(
                    event.id,
                    format!("evt_{n:02}"),
                    "answers stay in input order"
                );
                assert!(deliveries.is_empty());
            }
            other => panic!("{n}: {other:?}"),
        }
    }
    assert_eq!(delivery_count(&mut conn).await, 0);
}

#[tokio::test]
async fn a_relaxed_pool_commits_without_waiting_for_the_wal_and_a_durable_one_waits() {
    use dispatch_store::pool::{Durability, build_pool_with};
    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        synchronous_commit: String,
    }
    let db = TestDb::new().await;
    for (durability, expected) in [(Durability::Relaxed, "off"), (Durability::Durable, "on")] {
        let pool = build_pool_with(&db.settings(), durability);
        let mut conn = connection(&pool).await.unwrap();
        let row: Setting = diesel::sql_query("SHOW synchronous_commit")
            .get_result(&mut conn)
            .await
            .unwrap();
        assert_eq!(row.synchronous_commit, expected, "{durability:?}");
    }
    assert_eq!("OFF".parse::<Durability>(), Ok(Durability::Relaxed));
    assert_eq!("on".parse::<Durability>(), Ok(Durability::Durable));
    let err = "sometimes".parse::<Durability>().unwrap_err();
    assert!(
        err.contains("on or off") && err.contains("sometimes"),
        "{err}"
    );
}

#[tokio::test]
async fn hot_statements_are_prepared_once_per_connection() {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    async fn prepared_ingests(conn: &mut AsyncPgConnection) -> i64 {
        diesel::sql_query(
            "SELECT count(*) AS n FROM pg_prepared_statements
              WHERE statement LIKE '%INSERT INTO events%'
                AND statement NOT LIKE '%pg_prepared_statements%'",
        )
        .get_result::<Count>(conn)
        .await
        .unwrap()
        .n
    }
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "sub_all", &["*"]).await;
    for n in 0..5 {
        ingest_created(
            &mut conn,
            &new_event(&format!("evt_{n}"), "a.b", json!({"n": n})),
        )
        .await;
    }
    // Five ingestions, one prepared statement: each later execution is a single round trip.
    assert_eq!(prepared_ingests(&mut conn).await, 1);
}
