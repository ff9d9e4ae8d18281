//! Ingesting an id again: duplicates, conflicts, concurrent and racing ingests, the traceparent.

use super::*;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn the_traceparent_is_stored_kept_on_repeats_and_returned_with_claims() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "s_1", &["*"]).await;

    let traced = NewEvent {
        tenant: dispatch_domain::TenantId::default_tenant(),
        traceparent: Some(TRACEPARENT.to_owned()),
        ordering_key: None,
        ..new_event("evt_t", "order.created", json!({"n": 1}))
    };
    let (created, _) = ingest_created(&mut conn, &traced).await;
    assert_eq!(created.traceparent.as_deref(), Some(TRACEPARENT));
    let found = events::find(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        "evt_t",
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(found, created);

    // Not part of the content: a repeat with another traceparent, or none, is a duplicate, and
    // the first receipt's is kept.
    let other = NewEvent {
        tenant: dispatch_domain::TenantId::default_tenant(),
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
        events::find(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "evt_1"
        )
        .await
        .unwrap(),
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
