//! Purge: only old, fully finished events (in batches), old deleted subscriptions, racing a replay.

use super::*;

async fn event_ids(conn: &mut AsyncPgConnection) -> BTreeSet<String> {
    names(conn, "SELECT id AS name FROM events").await
}

async fn subscription_ids(conn: &mut AsyncPgConnection) -> BTreeSet<String> {
    names(conn, "SELECT id AS name FROM subscriptions").await
}

#[tokio::test]
async fn purge_deletes_only_old_fully_finished_events_with_their_deliveries_and_attempts() {
    let db = TestDb::new().await;
    let mut conn = connect(&db).await;
    sub(&mut conn, "s_a").await;
    sub(&mut conn, "s_b").await;
    let old = 40.0 * DAY;

    // Old and finished: gone.
    event(&mut conn, "old_done", old).await;
    let d = delivery(&mut conn, "old_done", "s_a", "delivered", 2, old).await;
    attempts(&mut conn, d, 2, false, old).await;
    let d = delivery(&mut conn, "old_done", "s_b", "failed", 3, old).await;
    attempts(&mut conn, d, 3, true, old).await;
    event(&mut conn, "old_cancelled", old).await;
    delivery(&mut conn, "old_cancelled", "s_a", "cancelled", 0, old).await;
    event(&mut conn, "old_no_deliveries", old).await;
    // Old but with an unfinished delivery: kept whole, however old.
    for (id, status) in [
        ("old_pending", "pending"),
        ("old_processing", "processing"),
        ("old_retrying", "retrying"),
    ] {
        event(&mut conn, id, old).await;
        let d = delivery(&mut conn, id, "s_a", "delivered", 1, old).await;
        attempts(&mut conn, d, 1, false, old).await;
        let d = delivery(&mut conn, id, "s_b", status, 1, old).await;
        attempts(&mut conn, d, 1, true, old).await;
    }
    // Finished but younger than the cutoff: kept.
    event(&mut conn, "young_done", 29.0 * DAY).await;
    let d = delivery(&mut conn, "young_done", "s_a", "delivered", 1, 29.0 * DAY).await;
    attempts(&mut conn, d, 1, false, 29.0 * DAY).await;
    event(&mut conn, "young_no_deliveries", 60.0).await;

    let cutoff = days_ago(30);
    let expected = Purged {
        events: 3,
        deliveries: 3,
        attempts: 5,
        subscriptions: 0,
    };
    assert_eq!(
        ops::count_purgeable(&mut conn, cutoff).await.unwrap(),
        expected
    );
    assert_eq!(
        event_ids(&mut conn).await.len(),
        8,
        "the dry run deletes nothing"
    );

    let report = ops::purge(&mut conn, cutoff, 1000, |_| {}).await.unwrap();
    assert_eq!(
        report.purged, expected,
        "the dry run's count is the real one"
    );
    assert_eq!((report.event_batches, report.subscription_batches), (1, 0));

    assert_eq!(
        event_ids(&mut conn).await,
        set(&[
            "old_pending",
            "old_processing",
            "old_retrying",
            "young_done",
            "young_no_deliveries"
        ])
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM deliveries
              WHERE event_id IN ('old_done', 'old_cancelled', 'old_no_deliveries')"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM attempts
              WHERE event_id IN ('old_done', 'old_cancelled', 'old_no_deliveries')"
        )
        .await,
        0,
        "no orphaned attempts"
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM deliveries").await,
        7,
        "the kept events keep every delivery, finished ones included"
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM attempts").await,
        7
    );

    // A second run finds nothing.
    assert_eq!(
        ops::count_purgeable(&mut conn, cutoff).await.unwrap(),
        Purged::default()
    );
    let again = ops::purge(&mut conn, cutoff, 1000, |_| {}).await.unwrap();
    assert_eq!(again, ops::PurgeReport::default());
}

#[tokio::test]
async fn purge_works_in_batches_of_the_given_size() {
    let db = TestDb::new().await;
    let mut conn = connect(&db).await;
    sub(&mut conn, "s_a").await;
    for i in 0..5 {
        let id = format!("old_{i}");
        event(&mut conn, &id, 40.0 * DAY + f64::from(i)).await;
        let d = delivery(&mut conn, &id, "s_a", "delivered", 1, 40.0 * DAY).await;
        attempts(&mut conn, d, 1, false, 40.0 * DAY).await;
    }
    event(&mut conn, "young", DAY).await;

    let mut seen = Vec::new();
    let report = ops::purge(&mut conn, days_ago(30), 2, |r| seen.push(r.purged.events))
        .await
        .unwrap();
    assert_eq!(report.event_batches, 3, "2 + 2 + 1");
    assert_eq!(
        seen,
        vec![2, 4, 5],
        "progress after every batch, oldest first"
    );
    assert_eq!(
        report.purged,
        Purged {
            events: 5,
            deliveries: 5,
            attempts: 5,
            subscriptions: 0
        }
    );
    assert_eq!(event_ids(&mut conn).await, set(&["young"]));

    // One batch on its own takes the oldest events first.
    for i in 0..3 {
        event(&mut conn, &format!("again_{i}"), 40.0 * DAY + f64::from(i)).await;
    }
    let batch = ops::purge_events_batch(&mut conn, days_ago(30), 2)
        .await
        .unwrap();
    assert_eq!(batch.events, 2);
    assert_eq!(event_ids(&mut conn).await, set(&["again_0", "young"]));
}

#[tokio::test]
async fn purge_removes_old_deleted_subscriptions_once_they_have_no_deliveries() {
    let db = TestDb::new().await;
    let mut conn = connect(&db).await;
    let old = 40.0 * DAY;
    // Deleted long ago, no deliveries: gone.
    deleted_sub(&mut conn, "s_gone_empty", old).await;
    // Deleted long ago; its only history is an old finished event purged in the same run: gone.
    deleted_sub(&mut conn, "s_gone_old_history", old).await;
    event(&mut conn, "old_done", old).await;
    delivery(
        &mut conn,
        "old_done",
        "s_gone_old_history",
        "cancelled",
        0,
        old,
    )
    .await;
    // Deleted long ago, but a delivery of a young event still refers to it: kept.
    deleted_sub(&mut conn, "s_gone_young_history", old).await;
    event(&mut conn, "young_done", DAY).await;
    delivery(
        &mut conn,
        "young_done",
        "s_gone_young_history",
        "failed",
        2,
        DAY,
    )
    .await;
    // Deleted recently: kept.
    deleted_sub(&mut conn, "s_gone_recently", DAY).await;
    // Never deleted (and created long ago): kept.
    sub(&mut conn, "s_active").await;
    exec(
        &mut conn,
        "UPDATE subscriptions SET created_at = now() - interval '400 days' WHERE id = 's_active'",
    )
    .await;

    let cutoff = days_ago(30);
    let dry = ops::count_purgeable(&mut conn, cutoff).await.unwrap();
    assert_eq!(
        dry,
        Purged {
            events: 1,
            deliveries: 1,
            attempts: 0,
            subscriptions: 2
        }
    );
    let report = ops::purge(&mut conn, cutoff, 1, |_| {}).await.unwrap();
    assert_eq!(report.purged, dry);
    assert_eq!((report.event_batches, report.subscription_batches), (1, 2));
    assert_eq!(
        subscription_ids(&mut conn).await,
        set(&["s_active", "s_gone_recently", "s_gone_young_history"])
    );
    assert_eq!(event_ids(&mut conn).await, set(&["young_done"]));
}

#[tokio::test]
async fn a_delivery_replayed_while_purge_runs_survives_with_its_event() {
    let db = TestDb::new().await;
    let mut conn = connect(&db).await;
    sub(&mut conn, "s_a").await;
    sub(&mut conn, "s_b").await;
    let old = 40.0 * DAY;
    event(&mut conn, "old", old).await;
    let delivered = delivery(&mut conn, "old", "s_a", "delivered", 1, old).await;
    let failed = delivery(&mut conn, "old", "s_b", "failed", 2, old).await;
    attempts(&mut conn, failed, 2, true, old).await;

    // An operator's replay of the failed delivery (what a replay batch writes), not committed
    // yet when the purge starts: the purge's snapshot still sees every delivery finished.
    let mut operator = connect(&db).await;
    exec(&mut operator, "BEGIN").await;
    exec(
        &mut operator,
        &format!(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(),
                    updated_at = now() WHERE id = {failed} AND status = 'failed'"
        ),
    )
    .await;
    let url = db.url().to_owned();
    let purge = tokio::spawn(async move {
        let mut conn = admin::connect(&url).await.unwrap();
        ops::purge(&mut conn, days_ago(30), 100, |_| {})
            .await
            .unwrap()
    });
    wait_for_a_lock_wait(&mut conn).await;
    exec(&mut operator, "COMMIT").await;

    let report = purge.await.unwrap();
    assert_eq!(
        report.purged.events, 0,
        "the event has an unfinished delivery"
    );
    assert_eq!(report.purged.deliveries, 1, "its finished sibling went");
    assert_eq!(event_ids(&mut conn).await, set(&["old"]));
    assert_eq!(state(&mut conn, failed).await.status, "pending");
    assert_eq!(
        count(
            &mut conn,
            &format!("SELECT count(*) AS n FROM attempts WHERE delivery_id = {failed}")
        )
        .await,
        2,
        "the replayed delivery keeps its history"
    );
    assert_eq!(
        count(
            &mut conn,
            &format!("SELECT count(*) AS n FROM deliveries WHERE id = {delivered}")
        )
        .await,
        0
    );
}
