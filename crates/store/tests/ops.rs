//! The operators' queries (`queries::ops`: replay, purge, stats) against a real PostgreSQL, one
//! database per test. Rows are seeded with plain SQL so each test states exactly the history it
//! starts from (ages, statuses, attempts), independent of the ingestion and worker paths.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Double, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use dispatch_domain::DeliveryStatus;
use dispatch_store::queries::ops::{self, Purged, ReplaySelector};
use dispatch_store::{AsyncPgConnection, admin};
use dispatch_test_support::TestDb;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const DAY: f64 = 86_400.0;

async fn connect(db: &TestDb) -> AsyncPgConnection {
    admin::connect(db.url()).await.unwrap()
}

async fn exec(conn: &mut AsyncPgConnection, sql: &str) {
    diesel::sql_query(sql).execute(conn).await.unwrap();
}

async fn sub(conn: &mut AsyncPgConnection, id: &str) {
    diesel::sql_query(
        "INSERT INTO subscriptions (id, url, event_types)
         VALUES ($1, 'https://example.com/' || $1, '{*}')",
    )
    .bind::<Text, _>(id)
    .execute(conn)
    .await
    .unwrap();
}

/// A subscription deleted `age_secs` ago.
async fn deleted_sub(conn: &mut AsyncPgConnection, id: &str, age_secs: f64) {
    sub(conn, id).await;
    diesel::sql_query(
        "UPDATE subscriptions SET deleted_at = now() - make_interval(secs => $2) WHERE id = $1",
    )
    .bind::<Text, _>(id)
    .bind::<Double, _>(age_secs)
    .execute(conn)
    .await
    .unwrap();
}

/// An event received `age_secs` ago.
async fn event(conn: &mut AsyncPgConnection, id: &str, age_secs: f64) {
    diesel::sql_query(
        "INSERT INTO events (id, event_type, source, data, received_at)
         VALUES ($1, 'order.created', 'tests', '{}', now() - make_interval(secs => $2))",
    )
    .bind::<Text, _>(id)
    .bind::<Double, _>(age_secs)
    .execute(conn)
    .await
    .unwrap();
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// A delivery in `status` (with a lease when `processing`, as the table requires), `attempts`
/// made, a `last_error` when it has attempts, and last changed `age_secs` ago.
async fn delivery(
    conn: &mut AsyncPgConnection,
    event_id: &str,
    sub_id: &str,
    status: &str,
    attempts: i32,
    age_secs: f64,
) -> i64 {
    let row: Id = diesel::sql_query(
        "INSERT INTO deliveries (event_id, subscription_id, status, attempts, leased_by,
                                 leased_until, last_error, next_attempt_at, updated_at)
         VALUES ($1, $2, $3, $4,
                 CASE WHEN $3 = 'processing' THEN 'worker-1' END,
                 CASE WHEN $3 = 'processing' THEN now() + interval '5 minutes' END,
                 CASE WHEN $4 > 0 THEN 'HTTP 500 from the destination' END,
                 now() - make_interval(secs => $5), now() - make_interval(secs => $5))
         RETURNING id",
    )
    .bind::<Text, _>(event_id)
    .bind::<Text, _>(sub_id)
    .bind::<Text, _>(status)
    .bind::<diesel::sql_types::Int4, _>(attempts)
    .bind::<Double, _>(age_secs)
    .get_result(conn)
    .await
    .unwrap();
    row.id
}

/// Attempt rows 1..=n of a delivery, `failed` ones answered 500, made `age_secs` ago.
async fn attempts(
    conn: &mut AsyncPgConnection,
    delivery_id: i64,
    n: i32,
    failed: bool,
    age_secs: f64,
) {
    diesel::sql_query(
        "INSERT INTO attempts (delivery_id, event_id, subscription_id, attempt, status_code,
                               latency_ms, error_code, created_at)
         SELECT d.id, d.event_id, d.subscription_id, g, CASE WHEN $3 THEN 500 ELSE 200 END, 12,
                CASE WHEN $3 THEN 'http_status' END, now() - make_interval(secs => $4)
           FROM deliveries d, generate_series(1, $2) g
          WHERE d.id = $1",
    )
    .bind::<BigInt, _>(delivery_id)
    .bind::<diesel::sql_types::Int4, _>(n)
    .bind::<diesel::sql_types::Bool, _>(failed)
    .bind::<Double, _>(age_secs)
    .execute(conn)
    .await
    .unwrap();
}

#[derive(Debug, Clone, PartialEq, QueryableByName)]
struct DeliveryState {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::Int4)]
    attempts: i32,
    #[diesel(sql_type = Timestamptz)]
    next_attempt_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    leased_by: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    leased_until: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
}

async fn state(conn: &mut AsyncPgConnection, id: i64) -> DeliveryState {
    diesel::sql_query(
        "SELECT id, status, attempts, next_attempt_at, leased_by, leased_until, last_error,
                updated_at
           FROM deliveries WHERE id = $1",
    )
    .bind::<BigInt, _>(id)
    .get_result(conn)
    .await
    .unwrap()
}

async fn all_states(conn: &mut AsyncPgConnection) -> Vec<DeliveryState> {
    diesel::sql_query(
        "SELECT id, status, attempts, next_attempt_at, leased_by, leased_until, last_error,
                updated_at
           FROM deliveries ORDER BY id",
    )
    .load(conn)
    .await
    .unwrap()
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

async fn names(conn: &mut AsyncPgConnection, sql: &str) -> BTreeSet<String> {
    diesel::sql_query(sql)
        .load::<Name>(conn)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(conn: &mut AsyncPgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .await
        .unwrap()
        .n
}

/// Waits until some session of this database waits for a lock (the statement under test
/// reached the row another transaction holds).
async fn wait_for_a_lock_wait(conn: &mut AsyncPgConnection) {
    for _ in 0..200 {
        let waiting = count(
            conn,
            "SELECT count(*) AS n FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .await;
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no session started waiting for a lock");
}

fn days_ago(days: i64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::days(days)
}

// ---------------------------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------------------------

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
        ops::count_replayable(&mut conn, &selector).await.unwrap(),
        2
    );
    assert_eq!(
        all_states(&mut conn).await,
        before,
        "the dry run changes nothing"
    );
    let started = Utc::now();
    assert_eq!(ops::replay(&mut conn, &selector).await.unwrap(), 2);

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
        ops::count_replayable(&mut conn, &selector).await.unwrap(),
        0
    );
    assert_eq!(ops::replay(&mut conn, &selector).await.unwrap(), 0);
    assert_eq!(
        ops::replay(&mut conn, &ReplaySelector::Event("e_unknown".to_owned()))
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
    assert_eq!(ops::count_replayable(&mut conn, &s_a).await.unwrap(), 2);
    assert_eq!(ops::replay(&mut conn, &s_a).await.unwrap(), 2);
    for id in [seed.e1_a_failed, seed.e2_a_failed] {
        assert_eq!(state(&mut conn, id).await.status, "pending");
    }
    assert_eq!(state(&mut conn, seed.e2_b_failed).await.status, "failed");

    let gone = ReplaySelector::Subscription("s_gone".to_owned());
    assert_eq!(
        ops::count_replayable(&mut conn, &gone).await.unwrap(),
        0,
        "a deleted subscription's deliveries are never replayed"
    );
    assert_eq!(ops::replay(&mut conn, &gone).await.unwrap(), 0);
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
    assert_eq!(ops::count_replayable(&mut conn, &exact).await.unwrap(), 1);
    assert_eq!(
        ops::count_replayable(&mut conn, &before_it).await.unwrap(),
        0
    );

    let dry = ops::count_replayable(&mut conn, &window).await.unwrap();
    assert_eq!(dry, 1);
    assert_eq!(ops::replay(&mut conn, &window).await.unwrap() as i64, dry);
    assert_eq!(state(&mut conn, seed.e2_a_failed).await.status, "pending");

    // Open-ended: everything that failed in the last 3 days and is still failed.
    let since = ReplaySelector::FailedBetween {
        since: hours(72),
        until: None,
    };
    let dry = ops::count_replayable(&mut conn, &since).await.unwrap();
    assert_eq!(
        dry, 2,
        "e_1 → s_a and e_2 → s_b; not the deleted subscription's"
    );
    assert_eq!(ops::replay(&mut conn, &since).await.unwrap() as i64, dry);
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

// ---------------------------------------------------------------------------------------------
// Purge
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------------------------

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
