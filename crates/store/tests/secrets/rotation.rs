//! Sealing on insert and rotation with an overlap window (and the claim's previous secret).

use super::*;

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
    let found = subscriptions::find_active(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        "sub_a",
    )
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
        &dispatch_domain::TenantId::default_tenant(),
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
        &dispatch_domain::TenantId::default_tenant(),
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
    let rotation = subscriptions::rotate_secret(
        &mut conn,
        &keys,
        &dispatch_domain::TenantId::default_tenant(),
        "sub_1",
        "fourth secret",
        Duration::ZERO,
    )
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
            subscriptions::delete(&mut conn, &dispatch_domain::TenantId::default_tenant(), id)
                .await
                .unwrap()
                .unwrap();
        }
        let rotated = subscriptions::rotate_secret(
            &mut conn,
            &keys,
            &dispatch_domain::TenantId::default_tenant(),
            id,
            "x",
            Duration::from_secs(60),
        )
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
    let found = subscriptions::find_active(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        "sub_legacy",
    )
    .await
    .unwrap()
    .unwrap();
    assert!(found.has_secret, "a plaintext secret counts");

    subscriptions::rotate_secret(
        &mut conn,
        &keys,
        &dispatch_domain::TenantId::default_tenant(),
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
        &dispatch_domain::TenantId::default_tenant(),
        "sub_1",
        "new secret",
        Duration::from_secs(3600),
    )
    .await
    .unwrap()
    .unwrap();
    let lease = Duration::from_secs(60);
    let event = |id: &str| NewEvent {
        tenant: dispatch_domain::TenantId::default_tenant(),
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
