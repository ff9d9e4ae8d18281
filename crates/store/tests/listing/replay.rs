//! A replay of 100 000 failed deliveries runs in bounded batches beside ingestion.

use super::*;

#[tokio::test]
async fn a_replay_of_100_000_failed_deliveries_runs_in_bounded_batches_beside_ingestion() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    seed(&mut conn, 1_000_000 / 10).await;
    exec(&mut conn, "UPDATE deliveries SET status = 'failed'").await;
    exec(
        &mut conn,
        "UPDATE subscriptions SET deleted_at = now() WHERE id = 'sub_b'",
    )
    .await;
    let filter = DeliveryFilter {
        statuses: vec![DeliveryStatus::Failed],
        ..DeliveryFilter::default()
    };
    let new = NewReplay {
        tenant: dispatch_domain::TenantId::default_tenant(),
        id: "rpl_test".to_owned(),
        filter,
        idempotency_key: Some("k1".to_owned()),
        request_hash: "h1".to_owned(),
    };
    let Created::New(replay) = replays::create(&mut conn, &new).await.unwrap() else {
        panic!("a new replay");
    };
    assert_eq!(
        replay.matched, 50_000,
        "sub_b was deleted: its deliveries are not replayed"
    );
    assert_eq!(replay.state, "running");
    // The same key answers the same replay; another request under it is told apart.
    assert!(
        matches!(replays::create(&mut conn, &new).await.unwrap(), Created::Existing(r) if r.id == "rpl_test")
    );
    let other = NewReplay {
        tenant: dispatch_domain::TenantId::default_tenant(),
        request_hash: "h2".to_owned(),
        id: "rpl_other".to_owned(),
        ..new.clone()
    };
    assert!(matches!(
        replays::create(&mut conn, &other).await.unwrap(),
        Created::KeyReused(_)
    ));

    let mut seen = 0;
    let mut last_requeued = 0;
    while let Some(progress) = replays::work_batch(&mut conn, None).await.unwrap() {
        seen += 1;
        assert!(progress.requeued >= last_requeued);
        assert!(progress.requeued - last_requeued <= replays::BATCH_IDS);
        last_requeued = progress.requeued;
        // Ingestion goes on between batches.
        diesel::sql_query(
            "INSERT INTO events (id, event_type, source, data) VALUES ($1, 't', 's', '{}')",
        )
        .bind::<Text, _>(format!("new_{seen}"))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let done = replays::find(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        "rpl_test",
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(done.state, "completed");
    assert_eq!(done.requeued, 50_000);
    assert_eq!(
        done.batches,
        10,
        "100 000 ids in batches of {}",
        replays::BATCH_IDS
    );
    assert_eq!(seen, 10);
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM delivery_queue").await,
        50_000
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM failed_deliveries").await,
        50_000
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM deliveries WHERE status = 'pending' AND attempts = 0"
        )
        .await,
        50_000
    );
    // Cancelling a finished replay changes nothing.
    assert_eq!(
        replays::cancel(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "rpl_test"
        )
        .await
        .unwrap()
        .unwrap()
        .state,
        "completed"
    );
}
