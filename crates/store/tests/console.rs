//! The console's own queries against a real PostgreSQL, one database per test: sessions (only
//! a hash stored, idle and absolute expiry), the recent attempts found along the primary key,
//! the per-minute activity and the open deliveries counted in their small tables.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use diesel_async::RunQueryDsl;
use dispatch_domain::DeliveryStatus;
use dispatch_store::queries::{console, ops};
use dispatch_store::{AsyncPgConnection, admin};
use dispatch_test_support::TestDb;

async fn exec(conn: &mut AsyncPgConnection, sql: &str) {
    diesel::sql_query(sql).execute(conn).await.unwrap();
}

/// One subscription, 10 events and one delivery each; attempt `i` of delivery `i` was made
/// `minutes[i]` minutes ago (in id order, oldest first, as a worker appends them); deliveries
/// 0–2 failed, 3 pending, 4 retrying, the rest delivered.
async fn seed(conn: &mut AsyncPgConnection, minutes: &[i32]) {
    exec(
        conn,
        "INSERT INTO subscriptions (id, url, event_types) VALUES ('sub_c', 'https://example.com/', '{*}')",
    )
    .await;
    for (i, m) in minutes.iter().enumerate() {
        let status = match i {
            0..=2 => "failed",
            3 => "pending",
            4 => "retrying",
            _ => "delivered",
        };
        let code = if i < 3 { "'http_status'" } else { "NULL" };
        // The queue tells pending from retrying by whether an attempt was made.
        let made = if status == "pending" { 0 } else { 1 };
        for sql in [
            format!(
                "INSERT INTO events (id, event_type, source, data, received_at)
                 VALUES ('evt_{i}', 'order.created', 'tests', '{{}}', now() - interval '{m} minutes')"
            ),
            format!(
                "INSERT INTO deliveries (event_id, subscription_id, status, attempts)
                 VALUES ('evt_{i}', 'sub_c', '{status}', {made})"
            ),
            format!(
                "INSERT INTO attempts (delivery_id, event_id, subscription_id, attempt, latency_ms,
                                       error_code, created_at)
                 SELECT id, 'evt_{i}', 'sub_c', 1, 5, {code}, now() - interval '{m} minutes'
                   FROM deliveries WHERE event_id = 'evt_{i}'"
            ),
        ] {
            exec(conn, &sql).await;
        }
    }
}

/// Attempts (and failed ones) within `window`, read from its floor on, as the console reads them.
async fn recent(conn: &mut AsyncPgConnection, window: Duration) -> (i64, i64) {
    let floor = ops::recent_floor(conn, window).await.unwrap();
    ops::recent_attempts(conn, window, floor).await.unwrap()
}

#[tokio::test]
async fn recent_attempts_are_found_along_the_primary_key_and_counted_exactly() {
    let db = TestDb::new().await;
    let mut conn = admin::connect(db.url()).await.unwrap();
    // Oldest first: 3 days, 2 h, 90 min, then within the hour: 50, 30, 10, 5, 2, 1, 0 min.
    seed(&mut conn, &[4320, 120, 90, 50, 30, 10, 5, 2, 1, 0]).await;
    let hour = Duration::from_secs(3600);
    let floor = ops::recent_floor(&mut conn, hour).await.unwrap();
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let fourth: Id = diesel::sql_query("SELECT id FROM attempts WHERE event_id = 'evt_3'")
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(floor, fourth.id, "the first attempt within the hour");
    assert_eq!(recent(&mut conn, hour).await, (7, 0));
    let day = Duration::from_secs(86_400);
    assert_eq!(recent(&mut conn, day).await, (9, 2));
    let floor = ops::recent_floor(&mut conn, day).await.unwrap();
    let stats = ops::subscription_stats(&mut conn, day, floor)
        .await
        .unwrap();
    assert_eq!((stats[0].attempts, stats[0].failures), (9, 2));
    // Nothing within the window: the floor is past the last id, and nothing is counted.
    exec(
        &mut conn,
        "UPDATE attempts SET created_at = created_at - interval '1 day'",
    )
    .await;
    assert_eq!(recent(&mut conn, hour).await, (0, 0));
    // No attempts at all.
    exec(&mut conn, "DELETE FROM attempts").await;
    assert_eq!(recent(&mut conn, hour).await, (0, 0));
}

#[tokio::test]
async fn activity_lists_every_minute_and_open_deliveries_come_from_the_small_tables() {
    let db = TestDb::new().await;
    let mut conn = admin::connect(db.url()).await.unwrap();
    seed(&mut conn, &[4320, 120, 90, 50, 30, 10, 5, 2, 1, 0]).await;
    let minutes = console::activity(&mut conn, 59).await.unwrap();
    assert_eq!(minutes.len(), 60, "every minute, zeros included");
    let delivered: i64 = minutes.iter().map(|m| m.delivered).sum();
    let ingested: i64 = minutes.iter().map(|m| m.ingested).sum();
    assert_eq!((ingested, delivered), (7, 7));
    assert_eq!(minutes.last().unwrap().ingested, 1, "the current minute's");
    let open = console::open_counts(&mut conn).await.unwrap();
    assert_eq!(
        open,
        vec![
            (DeliveryStatus::Pending, 1),
            (DeliveryStatus::Processing, 0),
            (DeliveryStatus::Retrying, 1),
            (DeliveryStatus::Failed, 3),
        ]
    );
}

#[tokio::test]
async fn a_session_is_stored_by_its_hash_and_ends_idle_or_at_its_expiry() {
    let db = TestDb::new().await;
    let mut conn = admin::connect(db.url()).await.unwrap();
    let (hash, other) = (vec![1u8; 32], vec![2u8; 32]);
    let long = Duration::from_secs(3600);
    console::create_session(&mut conn, &hash, long, None)
        .await
        .unwrap();
    assert!(
        console::touch_session(&mut conn, &hash, long)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        console::touch_session(&mut conn, &other, long)
            .await
            .unwrap()
            .is_none()
    );
    // Idle for longer than allowed: ended, and the row is gone.
    exec(
        &mut conn,
        "UPDATE console_sessions SET last_seen_at = now() - interval '2 hours'",
    )
    .await;
    assert!(
        console::touch_session(&mut conn, &hash, long)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        console::touch_session(&mut conn, &hash, long)
            .await
            .unwrap()
            .is_none()
    );
    // Past its absolute expiry however recently seen; a new sign-in sweeps it away.
    console::create_session(&mut conn, &other, Duration::from_secs(1), None)
        .await
        .unwrap();
    exec(
        &mut conn,
        "UPDATE console_sessions SET expires_at = now() - interval '1 second'",
    )
    .await;
    assert!(
        console::touch_session(&mut conn, &other, long)
            .await
            .unwrap()
            .is_none()
    );
    console::create_session(&mut conn, &hash, long, None)
        .await
        .unwrap();
    console::end_session(&mut conn, &hash).await.unwrap();
    assert!(
        console::touch_session(&mut conn, &hash, long)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_session_remembers_the_database_key_that_signed_it_in() {
    let db = TestDb::new().await;
    let mut conn = admin::connect(db.url()).await.unwrap();
    let long = Duration::from_secs(3600);
    exec(
        &mut conn,
        "INSERT INTO api_keys (id, name, scope, hash)
         VALUES ('dk_abcdefgh1234', 'reader', 'read', decode(repeat('00', 32), 'hex'))",
    )
    .await;
    console::create_session(&mut conn, &[3u8; 32], long, Some("dk_abcdefgh1234"))
        .await
        .unwrap();
    console::create_session(&mut conn, &[4u8; 32], long, None)
        .await
        .unwrap();
    let signed = console::touch_session(&mut conn, &[3u8; 32], long)
        .await
        .unwrap()
        .expect("alive");
    assert_eq!(signed.api_key_id.as_deref(), Some("dk_abcdefgh1234"));
    let env = console::touch_session(&mut conn, &[4u8; 32], long)
        .await
        .unwrap()
        .expect("alive");
    assert_eq!(env.api_key_id, None, "a key of DISPATCH_API_KEYS");
}
