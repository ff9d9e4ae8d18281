//! Stats: zero on an empty database; the backlog, recent failures and each subscription counted.

use super::*;

#[tokio::test]
async fn stats_of_an_empty_database_are_zero() {
    let db = TestDb::new().await;
    let mut conn = connect(&db).await;
    let stats = ops::stats(&mut conn, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(stats.backlog.due, 0);
    assert_eq!(stats.backlog.oldest_due_age_secs, 0.0);
    assert_eq!(stats.by_status.len(), 6);
    assert!(stats.by_status.iter().all(|(_, n)| *n == 0));
    assert_eq!((stats.attempts, stats.failed_attempts), (0, 0));
    assert_eq!(stats.failure_rate(), None);
    assert!(stats.subscriptions.is_empty());
}

#[tokio::test]
async fn stats_count_the_backlog_statuses_recent_failures_and_each_subscription() {
    let db = TestDb::new().await;
    let mut conn = connect(&db).await;
    sub(&mut conn, "s_a").await;
    sub(&mut conn, "s_b").await;
    sub(&mut conn, "s_quiet").await;
    deleted_sub(&mut conn, "s_gone", DAY).await;
    exec(
        &mut conn,
        "UPDATE subscriptions SET circuit_state = 'open',
                circuit_open_until = now() + interval '30 seconds' WHERE id = 's_a'",
    )
    .await;
    for i in 0..10 {
        event(&mut conn, &format!("e_{i}"), DAY).await;
    }
    // Due: two pending (s_a, s_b) and a retry waiting 10 minutes (s_a).
    delivery(&mut conn, "e_0", "s_a", "pending", 0, 30.0).await;
    delivery(&mut conn, "e_0", "s_b", "pending", 0, 60.0).await;
    let retry = delivery(&mut conn, "e_1", "s_a", "retrying", 4, 600.0).await;
    attempts(&mut conn, retry, 3, true, 120.0).await;
    let one_ok = delivery(&mut conn, "e_1", "s_b", "delivered", 2, 60.0).await;
    attempts(&mut conn, one_ok, 1, false, 60.0).await;
    // A retry that is not due yet, and a processing one: not in the backlog.
    delivery(&mut conn, "e_2", "s_a", "retrying", 1, -600.0).await;
    delivery(&mut conn, "e_2", "s_b", "processing", 0, 60.0).await;
    // Finished ones.
    let ok = delivery(&mut conn, "e_3", "s_a", "delivered", 1, 60.0).await;
    attempts(&mut conn, ok, 1, false, 60.0).await;
    let failed = delivery(&mut conn, "e_3", "s_b", "failed", 5, 2.0 * 3600.0).await;
    // Its failures are older than the window.
    attempts(&mut conn, failed, 5, true, 2.0 * 3600.0).await;
    delivery(&mut conn, "e_4", "s_gone", "cancelled", 0, DAY).await;
    delivery(&mut conn, "e_4", "s_b", "delivered", 1, 60.0).await;

    let stats = ops::stats(&mut conn, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(stats.backlog.due, 3);
    assert!(
        (595.0..660.0).contains(&stats.backlog.oldest_due_age_secs),
        "{}",
        stats.backlog.oldest_due_age_secs
    );
    assert_eq!(
        stats.by_status,
        vec![
            (DeliveryStatus::Pending, 2),
            (DeliveryStatus::Processing, 1),
            (DeliveryStatus::Retrying, 2),
            (DeliveryStatus::Delivered, 3),
            (DeliveryStatus::Failed, 1),
            (DeliveryStatus::Cancelled, 1),
        ]
    );
    assert_eq!(stats.window, Duration::from_secs(3600));
    assert_eq!((stats.attempts, stats.failed_attempts), (5, 3));
    assert_eq!(stats.failure_rate(), Some(0.6));

    let rows: Vec<_> = stats
        .subscriptions
        .iter()
        .map(|s| {
            (
                s.id.as_str(),
                s.circuit_state.as_str(),
                s.due,
                s.attempts,
                s.failures,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("s_a", "open", 2, 4, 3),
            ("s_b", "closed", 1, 1, 0),
            ("s_quiet", "closed", 0, 0, 0),
        ],
        "deleted subscriptions are left out; most due first"
    );
    let until = stats.subscriptions[0].circuit_open_until.unwrap();
    assert!(until > Utc::now() && until < Utc::now() + chrono::Duration::seconds(60));
    assert_eq!(stats.subscriptions[1].circuit_open_until, None);

    // A narrower window sees fewer attempts.
    let narrow = ops::stats(&mut conn, Duration::from_secs(90))
        .await
        .unwrap();
    assert_eq!((narrow.attempts, narrow.failed_attempts), (2, 0));
}
