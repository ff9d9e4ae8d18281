//! Subscription secrets at rest, read straight from the table: sealed on insert (never the
//! plaintext), bound to their subscription, rotated with an overlap window, re-sealed under the
//! active key (legacy plaintext rows included), and the migration's guarded revert.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::sql_types::Text;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use dispatch_domain::sealing::{Keyring, SealError};
use dispatch_domain::{DestinationUrl, EventId, EventType, Pattern, Source, SubscriptionId};
use dispatch_store::AsyncPgConnection;
use dispatch_store::models::{NewEvent, NewSubscription, RateLimit};
use dispatch_store::pool::connection;
use dispatch_store::queries::{deliveries, events, subscriptions};
use dispatch_test_support::TestDb;
use dispatch_test_support::secrets::{TEST_SECRET_KEYS, test_keyring};

/// The stored secret columns of one subscription.
type Stored = subscriptions::StoredSecretColumns;

async fn stored(conn: &mut AsyncPgConnection, id: &str) -> Stored {
    subscriptions::stored_secret_columns(conn, id)
        .await
        .unwrap()
        .unwrap()
}

/// Every text column of the table, as the database holds it, for a "the plaintext is nowhere"
/// check.
async fn whole_table_text(conn: &mut AsyncPgConnection) -> String {
    subscriptions::table_text(conn).await.unwrap()
}

fn new_sub(id: &str, secret: Option<&str>) -> NewSubscription {
    NewSubscription {
        id: SubscriptionId::parse(id).unwrap(),
        url: DestinationUrl::parse(&format!("https://example.com/hooks/{id}")).unwrap(),
        event_types: vec![Pattern::parse("*").unwrap()],
        secret: secret.map(str::to_owned),
        rate_limit: RateLimit::default(),
        settings: Default::default(),
        enabled: true,
    }
}

async fn add(conn: &mut AsyncPgConnection, keyring: &Keyring, id: &str, secret: Option<&str>) {
    subscriptions::insert(conn, &new_sub(id, secret), keyring)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{id} should be new"));
}

/// A subscription as the previous release stored it: the secret in plaintext.
async fn add_legacy(conn: &mut AsyncPgConnection, id: &str, secret: &str) {
    diesel::sql_query(
        "INSERT INTO subscriptions (id, url, event_types, secret)
         VALUES ($1, 'https://example.com/legacy', '{*}', $2)",
    )
    .bind::<Text, _>(id)
    .bind::<Text, _>(secret)
    .execute(conn)
    .await
    .unwrap();
}

/// Only the `test-old` key of the test keyring, active.
fn old_keyring() -> Keyring {
    let old = TEST_SECRET_KEYS
        .split(',')
        .find(|e| e.trim().starts_with("test-old:"))
        .unwrap();
    Keyring::parse(old).unwrap()
}

fn close_to(at: DateTime<Utc>, expected: DateTime<Utc>) -> bool {
    (at - expected).num_seconds().abs() <= 5
}

#[tokio::test]
async fn a_stored_secret_is_sealed_bound_to_its_subscription_and_never_in_plaintext() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    let keys = test_keyring();
    let plaintext = "whsec_c3RvcmUtcGxhaW50ZXh0LXRoYXQtbXVzdC1ub3QtbGVhaw==";
    add(&mut conn, &keys, "sub_a", Some(plaintext)).await;
    add(&mut conn, &keys, "sub_b", Some("another secret entirely")).await;
    add(&mut conn, &keys, "sub_none", None).await;

    let a = stored(&mut conn, "sub_a").await;
    assert_eq!(a.secret, None, "the plaintext column is never written");
    let sealed = a.sealed_secret.clone().unwrap();
    assert!(sealed.starts_with("v1:test:"), "{sealed}");
    let dump = whole_table_text(&mut conn).await;
    assert!(!dump.contains(plaintext), "plaintext in the table:\n{dump}");
    assert!(!dump.contains("c3RvcmUtcGxhaW50ZXh0"), "{dump}");
    assert!(!dump.contains("another secret entirely"), "{dump}");
    assert_eq!(keys.open("sub_a", &sealed).unwrap(), plaintext);
    assert_eq!(stored(&mut conn, "sub_none").await.sealed_secret, None);
    let found = subscriptions::find_active(&mut conn, "sub_a")
        .await
        .unwrap()
        .unwrap();
    assert!(found.has_secret);

    // Only the keyring opens it, and only for the subscription it was sealed for.
    assert_eq!(
        old_keyring().open("sub_a", &sealed),
        Err(SealError::UnknownKey("test".to_owned()))
    );
    assert_eq!(
        keys.open("sub_b", &sealed),
        Err(SealError::NotAuthentic("test".to_owned()))
    );

    // Swapping ciphertexts between rows: each row's value no longer opens for it.
    diesel::sql_query(
        "UPDATE subscriptions SET sealed_secret = (SELECT sealed_secret FROM subscriptions
                                                    WHERE id = 'sub_a')
          WHERE id = 'sub_b'",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let b = stored(&mut conn, "sub_b").await.sealed_secret.unwrap();
    assert_eq!(b, sealed);
    assert!(matches!(
        keys.open("sub_b", &b),
        Err(SealError::NotAuthentic(_))
    ));
}

#[tokio::test]
async fn rotating_keeps_the_old_secret_as_previous_until_its_overlap_ends() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    let keys = test_keyring();
    add(&mut conn, &keys, "sub_1", Some("first secret")).await;
    let first = stored(&mut conn, "sub_1").await.sealed_secret.unwrap();

    let before = Utc::now();
    let rotation = subscriptions::rotate_secret(
        &mut conn,
        &keys,
        "sub_1",
        "second secret",
        Duration::from_secs(3600),
    )
    .await
    .unwrap()
    .unwrap();
    let expires = rotation.previous_expires_at.unwrap();
    assert!(
        close_to(expires, before + chrono::Duration::hours(1)),
        "{expires}"
    );
    let now = stored(&mut conn, "sub_1").await;
    assert_eq!(
        now.previous_sealed_secret.as_deref(),
        Some(first.as_str()),
        "the current value moves as it is"
    );
    assert_eq!(now.previous_secret_expires_at, Some(expires));
    assert_eq!(
        keys.open("sub_1", now.sealed_secret.as_deref().unwrap())
            .unwrap(),
        "second secret"
    );
    let dump = whole_table_text(&mut conn).await;
    assert!(!dump.contains("second secret"), "{dump}");

    // Rotating again within the window: the first secret is dropped, the second is previous.
    let second = now.sealed_secret.unwrap();
    subscriptions::rotate_secret(
        &mut conn,
        &keys,
        "sub_1",
        "third secret",
        Duration::from_secs(60),
    )
    .await
    .unwrap()
    .unwrap();
    let now = stored(&mut conn, "sub_1").await;
    assert_eq!(now.previous_sealed_secret, Some(second));

    // A zero overlap: the old secret stops signing at once.
    let rotation =
        subscriptions::rotate_secret(&mut conn, &keys, "sub_1", "fourth secret", Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(rotation.previous_expires_at, None);
    let now = stored(&mut conn, "sub_1").await;
    assert_eq!(now.previous_sealed_secret, None);
    assert_eq!(now.previous_secret_expires_at, None);

    // Unknown and deleted subscriptions are not rotated.
    for id in ["sub_unknown", "sub_1"] {
        if id == "sub_1" {
            subscriptions::delete(&mut conn, id).await.unwrap().unwrap();
        }
        let rotated =
            subscriptions::rotate_secret(&mut conn, &keys, id, "x", Duration::from_secs(60))
                .await
                .unwrap();
        assert_eq!(rotated, None, "{id}");
    }
}

#[tokio::test]
async fn rotating_a_legacy_plaintext_secret_seals_it_as_the_previous_one() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    let keys = test_keyring();
    add_legacy(&mut conn, "sub_legacy", "legacy plaintext secret").await;
    let found = subscriptions::find_active(&mut conn, "sub_legacy")
        .await
        .unwrap()
        .unwrap();
    assert!(found.has_secret, "a plaintext secret counts");

    subscriptions::rotate_secret(
        &mut conn,
        &keys,
        "sub_legacy",
        "new secret",
        Duration::from_secs(600),
    )
    .await
    .unwrap()
    .unwrap();
    let now = stored(&mut conn, "sub_legacy").await;
    assert_eq!(now.secret, None, "the plaintext is gone");
    assert_eq!(
        keys.open("sub_legacy", now.previous_sealed_secret.as_deref().unwrap())
            .unwrap(),
        "legacy plaintext secret"
    );
    assert!(
        !whole_table_text(&mut conn)
            .await
            .contains("legacy plaintext")
    );
}

#[tokio::test]
async fn the_claim_returns_the_previous_secret_only_while_its_overlap_lasts() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    let keys = test_keyring();
    add(&mut conn, &keys, "sub_1", Some("old secret")).await;
    subscriptions::rotate_secret(
        &mut conn,
        &keys,
        "sub_1",
        "new secret",
        Duration::from_secs(3600),
    )
    .await
    .unwrap()
    .unwrap();
    let lease = Duration::from_secs(60);
    let event = |id: &str| NewEvent {
        id: EventId::parse(id).unwrap(),
        event_type: EventType::parse("order.created").unwrap(),
        source: Source::parse("shop").unwrap(),
        data: serde_json::json!({}),
        traceparent: None,
        ordering_key: None,
    };

    events::ingest(&mut conn, &event("evt_1")).await.unwrap();
    let claimed = deliveries::claim(&mut conn, "w", 10, lease).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let d = &claimed[0];
    assert_eq!(
        keys.open("sub_1", d.sealed_secret.as_deref().unwrap())
            .unwrap(),
        "new secret"
    );
    assert_eq!(
        keys.open("sub_1", d.previous_sealed_secret.as_deref().unwrap())
            .unwrap(),
        "old secret"
    );
    assert_eq!(d.legacy_secret, None);

    diesel::sql_query(
        "UPDATE subscriptions SET previous_secret_expires_at = now() - interval '1 second'",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    events::ingest(&mut conn, &event("evt_2")).await.unwrap();
    let claimed = deliveries::claim(&mut conn, "w", 10, lease).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        claimed[0].previous_sealed_secret, None,
        "expired: not handed out"
    );
}

#[tokio::test]
async fn reseal_moves_every_secret_to_the_active_key_and_seals_plaintext_ones() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    let old = old_keyring();
    let keys = test_keyring();
    // Written while only the old key existed: a plain subscription, one mid-rotation, one whose
    // overlap has ended, one deleted; and a plaintext row from before sealing.
    add(&mut conn, &old, "sub_plain", Some("plain one")).await;
    add(&mut conn, &old, "sub_rotating", Some("rotating old")).await;
    subscriptions::rotate_secret(
        &mut conn,
        &old,
        "sub_rotating",
        "rotating new",
        Duration::from_secs(3600),
    )
    .await
    .unwrap()
    .unwrap();
    add(&mut conn, &old, "sub_expired", Some("expired old")).await;
    subscriptions::rotate_secret(
        &mut conn,
        &old,
        "sub_expired",
        "expired new",
        Duration::from_secs(3600),
    )
    .await
    .unwrap()
    .unwrap();
    diesel::sql_query(
        "UPDATE subscriptions SET previous_secret_expires_at = now() - interval '1 minute'
          WHERE id = 'sub_expired'",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    add(&mut conn, &old, "sub_deleted", Some("deleted one")).await;
    subscriptions::delete(&mut conn, "sub_deleted")
        .await
        .unwrap()
        .unwrap();
    add_legacy(&mut conn, "sub_legacy", "legacy one").await;
    add(&mut conn, &keys, "sub_current", Some("already current")).await;
    let untouched = stored(&mut conn, "sub_current").await;
    let rotating_expiry = stored(&mut conn, "sub_rotating")
        .await
        .previous_secret_expires_at;

    let usage = subscriptions::secret_usage(&mut conn).await.unwrap();
    let count = |usage: &[subscriptions::SecretUsage], slot: &str, key: Option<&str>| {
        usage
            .iter()
            .find(|u| u.slot == slot && u.key_id.as_deref() == key)
            .map_or(0, |u| u.subscriptions)
    };
    assert_eq!(count(&usage, "current", Some("test-old")), 4);
    assert_eq!(count(&usage, "previous", Some("test-old")), 1, "{usage:?}");
    assert_eq!(count(&usage, "plaintext", None), 1);
    assert_eq!(count(&usage, "current", Some("test")), 1);

    let report = subscriptions::reseal(&mut conn, &keys, 2).await.unwrap();
    assert_eq!(report.rewritten, 5, "{report:?}");
    assert_eq!(report.from_plaintext, 1);
    assert_eq!(report.expired_dropped, 1);
    assert_eq!(report.changed_meanwhile, 0);
    assert!(report.failed.is_empty(), "{report:?}");

    for (id, current, previous) in [
        ("sub_plain", "plain one", None),
        ("sub_rotating", "rotating new", Some("rotating old")),
        ("sub_expired", "expired new", None),
        ("sub_deleted", "deleted one", None),
        ("sub_legacy", "legacy one", None),
    ] {
        let now = stored(&mut conn, id).await;
        assert_eq!(now.secret, None, "{id}");
        let sealed = now.sealed_secret.unwrap();
        assert!(sealed.starts_with("v1:test:"), "{id}: {sealed}");
        assert_eq!(keys.open(id, &sealed).unwrap(), current, "{id}");
        match previous {
            Some(previous) => {
                let sealed = now.previous_sealed_secret.unwrap();
                assert!(sealed.starts_with("v1:test:"), "{id}: {sealed}");
                assert_eq!(keys.open(id, &sealed).unwrap(), previous);
                assert_eq!(now.previous_secret_expires_at, rotating_expiry);
            }
            None => {
                assert_eq!(now.previous_sealed_secret, None, "{id}");
                assert_eq!(now.previous_secret_expires_at, None, "{id}");
            }
        }
    }
    assert_eq!(stored(&mut conn, "sub_current").await, untouched);
    let usage = subscriptions::secret_usage(&mut conn).await.unwrap();
    assert!(
        usage.iter().all(|u| u.key_id.as_deref() == Some("test")),
        "nothing left under the old key, nothing in plaintext: {usage:?}"
    );
    assert_eq!(
        subscriptions::reseal(&mut conn, &keys, 100)
            .await
            .unwrap()
            .rewritten,
        0,
        "a second run has nothing to do"
    );
}

#[tokio::test]
async fn reseal_reports_and_leaves_alone_a_secret_it_cannot_open() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    let gone = Keyring::parse("gone:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
    add(
        &mut conn,
        &gone,
        "sub_lost",
        Some("sealed with a key since removed"),
    )
    .await;
    add(&mut conn, &old_keyring(), "sub_fine", Some("fine")).await;
    let lost = stored(&mut conn, "sub_lost").await;

    let report = subscriptions::reseal(&mut conn, &test_keyring(), 100)
        .await
        .unwrap();
    assert_eq!(
        report.failed,
        vec![(
            "sub_lost".to_owned(),
            SealError::UnknownKey("gone".to_owned())
        )]
    );
    assert_eq!(report.rewritten, 1, "the others are still re-sealed");
    assert_eq!(stored(&mut conn, "sub_lost").await, lost, "left as it was");
}

#[tokio::test]
async fn reverting_the_migration_is_refused_while_a_subscription_has_only_a_sealed_secret() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    let down = include_str!("../../../migrations/2026-11-29-000005_secret_encryption/down.sql");
    add(
        &mut conn,
        &test_keyring(),
        "sub_sealed",
        Some("only sealed"),
    )
    .await;
    let err = conn
        .batch_execute(&format!("BEGIN; {down} COMMIT;"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("have only a sealed secret"),
        "{err}"
    );
    conn.batch_execute("ROLLBACK").await.unwrap();
    assert!(
        stored(&mut conn, "sub_sealed")
            .await
            .sealed_secret
            .is_some()
    );

    // Once no live subscription depends on a sealed secret, it reverts.
    subscriptions::delete(&mut conn, "sub_sealed")
        .await
        .unwrap()
        .unwrap();
    conn.batch_execute(down).await.unwrap();
}
