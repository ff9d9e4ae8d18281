//! Ingestion fans an event out to the active subscriptions it matches (held while paused).

use super::*;

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
        subscriptions::delete(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "s_deleted"
        )
        .await
        .unwrap(),
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
        events::find(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "evt_lonely"
        )
        .await
        .unwrap(),
        Some(stored),
        "find returns exactly what ingest returned"
    );
    assert_eq!(
        events::find(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "evt_unknown"
        )
        .await
        .unwrap(),
        None
    );
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
