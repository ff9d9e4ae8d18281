//! Attempts: listed per event oldest first; an attempt for an unknown delivery stores nothing.

use super::*;

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
