//! Replay: by event, by subscription, by time window (and its dry run), racing a delete.

use super::*;

/// Subscriptions `s_a`, `s_b`, `s_gone` (deleted); events `e_1`..`e_3` with a mix of statuses.
/// Returns the ids of the interesting deliveries.
struct ReplaySeed {
    e1_a_failed: i64,
    e2_a_failed: i64,
    e2_b_failed: i64,
    e2_gone_failed: i64,
}

async fn seed_replay(conn: &mut AsyncPgConnection) -> ReplaySeed {
    sub(conn, "s_a").await;
    sub(conn, "s_b").await;
    sub(conn, "s_gone").await;
    for e in ["e_1", "e_2", "e_3"] {
        event(conn, e, 3.0 * DAY).await;
    }
    let e1_a_failed = delivery(conn, "e_1", "s_a", "failed", 20, 2.0 * DAY).await;
    attempts(conn, e1_a_failed, 20, true, 2.0 * DAY).await;
    let e1_b = delivery(conn, "e_1", "s_b", "delivered", 1, 2.0 * DAY).await;
    attempts(conn, e1_b, 1, false, 2.0 * DAY).await;
    let e2_a_failed = delivery(conn, "e_2", "s_a", "failed", 3, DAY).await;
    attempts(conn, e2_a_failed, 3, true, DAY).await;
    let e2_b_failed = delivery(conn, "e_2", "s_b", "failed", 20, 0.5 * DAY).await;
    // Failed before its subscription was deleted: stays failed forever.
    let e2_gone_failed = delivery(conn, "e_2", "s_gone", "failed", 20, DAY).await;
    exec(
        conn,
        "UPDATE subscriptions SET deleted_at = now() WHERE id = 's_gone'",
    )
    .await;
    delivery(conn, "e_3", "s_a", "retrying", 2, 60.0).await;
    delivery(conn, "e_3", "s_b", "processing", 0, 60.0).await;
    delivery(conn, "e_3", "s_gone", "cancelled", 0, 60.0).await;
    ReplaySeed {
        e1_a_failed,
        e2_a_failed,
        e2_b_failed,
        e2_gone_failed,
    }
}

#[tokio::test]
async fn replay_by_event_requeues_its_failed_deliveries_of_live_subscriptions_only() {
    let db = TestDb::new().await;
    let mut conn = connect(&db).await;
    let seed = seed_replay(&mut conn).await;
    let before = all_states(&mut conn).await;
    let selector = ReplaySelector::Event("e_2".to_owned());

    assert_eq!(
        ops::count_replayable(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            &selector
        )
        .await
        .unwrap(),
        2
    );
    assert_eq!(
        all_states(&mut conn).await,
        before,
        "the dry run changes nothing"
    );
    let started = Utc::now();
    assert_eq!(
        ops::replay(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            &selector
        )
        .await
        .unwrap(),
        2
    );

    for id in [seed.e2_a_failed, seed.e2_b_failed] {
        let old = before.iter().find(|d| d.id == id).unwrap();
        let new = state(&mut conn, id).await;
        assert_eq!(new.status, "pending");
        assert_eq!(new.attempts, 0, "a replay gets a full new retry schedule");
        assert!(
            new.next_attempt_at >= started - chrono::Duration::seconds(5)
                && new.next_attempt_at <= Utc::now(),
            "due at once: {new:?}"
        );
        assert_eq!((new.leased_by, new.leased_until), (None, None));
        assert_eq!(new.last_error, old.last_error, "the last error is kept");
        assert!(new.updated_at > old.updated_at);
    }
    assert_eq!(
        count(
            &mut conn,
            &format!(
                "SELECT count(*) AS n FROM attempts WHERE delivery_id = {}",
                seed.e2_a_failed
            )
        )
        .await,
        3,
        "the attempt history stays"
    );
    // Everything else is exactly as it was: the deleted subscription's failed delivery, the
    // other event's, and the unfinished and cancelled ones.
    let after = all_states(&mut conn).await;
    for (old, new) in before.iter().zip(&after) {
        if old.id != seed.e2_a_failed && old.id != seed.e2_b_failed {
            assert_eq!(old, new);
        }
    }
    assert_eq!(state(&mut conn, seed.e2_gone_failed).await.status, "failed");

    // Nothing failed is left to replay for this event.
    assert_eq!(
        ops::count_replayable(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            &selector
        )
        .await
        .unwrap(),
        0
    );
    assert_eq!(
        ops::replay(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            &selector
        )
        .await
        .unwrap(),
        0
    );
    assert_eq!(
        ops::replay(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            &ReplaySelector::Event("e_unknown".to_owned())
        )
        .await
        .unwrap(),
        0
    );
}

#[tokio::test]
async fn replay_by_subscription_takes_its_failed_deliveries_across_events() {
    let db = TestDb::new().await;
    let mut conn = connect(&db).await;
    let seed = seed_replay(&mut conn).await;

    let s_a = ReplaySelector::Subscription("s_a".to_owned());
    assert_eq!(
        ops::count_replayable(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            &s_a
        )
        .await
        .unwrap(),
        2
    );
    assert_eq!(
        ops::replay(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            &s_a
        )
        .await
        .unwrap(),
        2
    );
    for id in [seed.e1_a_failed, seed.e2_a_failed] {
        assert_eq!(state(&mut conn, id).await.status, "pending");
    }
    assert_eq!(state(&mut conn, seed.e2_b_failed).await.status, "failed");

    let gone = ReplaySelector::Subscription("s_gone".to_owned());
    assert_eq!(
        ops::count_replayable(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            &gone
        )
        .await
        .unwrap(),
        0,
        "a deleted subscription's deliveries are never replayed"
    );
    assert_eq!(
        ops::replay(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            &gone
        )
        .await
        .unwrap(),
        0
    );
    assert_eq!(state(&mut conn, seed.e2_gone_failed).await.status, "failed");
}

#[tokio::test]
async fn replay_by_time_window_uses_when_the_delivery_failed_and_matches_its_dry_run() {
    let db = TestDb::new().await;
    let mut conn = connect(&db).await;
    // Failed 2 days ago (e_1 → s_a), 1 day ago (e_2 → s_a; and e_2 → s_gone, deleted),
    // 12 hours ago (e_2 → s_b).
    let seed = seed_replay(&mut conn).await;
    let now = Utc::now();
    let hours = |h: i64| now - chrono::Duration::hours(h);

    // [36 h ago, 18 h ago): only the one that failed a day ago to a live subscription.
    let window = ReplaySelector::FailedBetween {
        since: hours(36),
        until: Some(hours(18)),
    };
    // The bounds: since is inclusive, until exclusive.
    let e2_a_failed_at = state(&mut conn, seed.e2_a_failed).await.updated_at;
    let exact = ReplaySelector::FailedBetween {
        since: e2_a_failed_at,
        until: Some(e2_a_failed_at + chrono::Duration::microseconds(1)),
    };
    let before_it = ReplaySelector::FailedBetween {
        since: hours(36),
        until: Some(e2_a_failed_at),
    };
    assert_eq!(
        ops::count_replayable(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            &exact
        )
        .await
        .unwrap(),
        1
    );
    assert_eq!(
        ops::count_replayable(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            &before_it
        )
        .await
        .unwrap(),
        0
    );

    let dry = ops::count_replayable(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        &window,
    )
    .await
    .unwrap();
    assert_eq!(dry, 1);
    assert_eq!(
        ops::replay(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            &window
        )
        .await
        .unwrap() as i64,
        dry
    );
    assert_eq!(state(&mut conn, seed.e2_a_failed).await.status, "pending");

    // Open-ended: everything that failed in the last 3 days and is still failed.
    let since = ReplaySelector::FailedBetween {
        since: hours(72),
        until: None,
    };
    let dry = ops::count_replayable(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        &since,
    )
    .await
    .unwrap();
    assert_eq!(
        dry, 2,
        "e_1 → s_a and e_2 → s_b; not the deleted subscription's"
    );
    assert_eq!(
        ops::replay(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            &since
        )
        .await
        .unwrap() as i64,
        dry
    );
    for id in [seed.e1_a_failed, seed.e2_b_failed] {
        assert_eq!(state(&mut conn, id).await.status, "pending");
    }
    assert_eq!(state(&mut conn, seed.e2_gone_failed).await.status, "failed");
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) AS n FROM deliveries WHERE status = 'failed'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_replay_racing_a_subscription_delete_leaves_that_subscription_s_deliveries_failed() {
    let db = TestDb::new().await;
    let mut conn = connect(&db).await;
    let seed = seed_replay(&mut conn).await;

    // Another session deletes s_a as DELETE /subscriptions does (row locked FOR UPDATE,
    // deleted_at set) and has not committed yet.
    let mut deleter = connect(&db).await;
    exec(&mut deleter, "BEGIN").await;
    exec(
        &mut deleter,
        "SELECT id FROM subscriptions WHERE id = 's_a' FOR UPDATE",
    )
    .await;
    exec(
        &mut deleter,
        "UPDATE subscriptions SET deleted_at = now() WHERE id = 's_a'",
    )
    .await;

    let url = db.url().to_owned();
    let replay = tokio::spawn(async move {
        let mut conn = admin::connect(&url).await.unwrap();
        ops::replay(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            &ReplaySelector::FailedBetween {
                since: days_ago(7),
                until: None,
            },
        )
        .await
        .unwrap()
    });
    wait_for_a_lock_wait(&mut conn).await;
    exec(&mut deleter, "COMMIT").await;

    assert_eq!(
        replay.await.unwrap(),
        1,
        "only e_2 → s_b: s_a was deleted before the replay could lock it"
    );
    for id in [seed.e1_a_failed, seed.e2_a_failed] {
        assert_eq!(state(&mut conn, id).await.status, "failed");
    }
    assert_eq!(state(&mut conn, seed.e2_b_failed).await.status, "pending");
}
