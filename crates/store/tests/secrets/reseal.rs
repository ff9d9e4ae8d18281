//! Resealing under the active key, secrets it cannot open, the migration's guarded revert.

use super::*;

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
        &dispatch_domain::TenantId::default_tenant(),
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
        &dispatch_domain::TenantId::default_tenant(),
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
    subscriptions::delete(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        "sub_deleted",
    )
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
    let down = include_str!("../../../../migrations/2026-11-29-000005_secret_encryption/down.sql");
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
    subscriptions::delete(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        "sub_sealed",
    )
    .await
    .unwrap()
    .unwrap();
    conn.batch_execute(down).await.unwrap();
}
