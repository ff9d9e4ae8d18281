//! Deleting a subscription cancels its unfinished deliveries, also against concurrent ingests.

use super::*;

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
        subscriptions::delete(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "s_doomed"
        )
        .await
        .unwrap(),
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
        subscriptions::find_active(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "s_doomed"
        )
        .await
        .unwrap(),
        None
    );
    assert!(
        subscriptions::list_active(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            None,
            10
        )
        .await
        .unwrap()
        .iter()
        .all(|s| s.id != "s_doomed")
    );
    assert_eq!(
        subscriptions::delete(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "s_doomed"
        )
        .await
        .unwrap(),
        None
    );
    assert_eq!(
        subscriptions::delete(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "s_never_existed"
        )
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
        subscriptions::delete(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "s_1"
        )
        .await
        .unwrap(),
        Some(1)
    );
    assert_eq!(
        subscriptions::delete(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "s_1"
        )
        .await
        .unwrap(),
        None
    );
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
    let delete = tokio::spawn(async move {
        subscriptions::delete(
            &mut deleter,
            &dispatch_domain::TenantId::default_tenant(),
            "s_1",
        )
        .await
        .unwrap()
    });
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
    let rows = events::deliveries_of(
        &mut deleter,
        &dispatch_domain::TenantId::default_tenant(),
        "e_1",
    )
    .await
    .unwrap();
    let subs: Vec<&str> = rows.iter().map(|d| d.subscription_id.as_str()).collect();
    assert_eq!(
        subs,
        ["s_2"],
        "no delivery may be created for the deleted subscription"
    );
}
