//! Subscriptions: insert, the taken-id rule, find and list.

use super::*;

#[tokio::test]
async fn inserting_a_subscription_stores_and_returns_it() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();

    let mut new = new_sub("sub_1", &["order.*", "invoice.paid"]);
    let row = subscriptions::insert(&mut conn, &new, &test_keyring())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.id, "sub_1");
    assert_eq!(row.url, "https://example.com/hooks/sub_1");
    assert_eq!(
        row.event_types,
        ["order.*", "invoice.paid"],
        "patterns keep their order"
    );
    assert!(row.has_secret);
    assert!(row.enabled);
    assert_eq!(
        subscriptions::find_active(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "sub_1"
        )
        .await
        .unwrap(),
        Some(row)
    );

    new.id = SubscriptionId::parse("sub_2").unwrap();
    new.secret = None;
    let row = subscriptions::insert(&mut conn, &new, &test_keyring())
        .await
        .unwrap()
        .unwrap();
    assert!(!row.has_secret);
}

#[tokio::test]
async fn a_taken_subscription_id_is_refused_even_after_deletion() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    let original = subscriptions::insert(&mut conn, &new_sub("sub_1", &["*"]), &test_keyring())
        .await
        .unwrap()
        .unwrap();

    let clash = new_sub("sub_1", &["order.created"]);
    assert_eq!(
        subscriptions::insert(&mut conn, &clash, &test_keyring())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        subscriptions::find_active(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "sub_1"
        )
        .await
        .unwrap(),
        Some(original),
        "a refused insert leaves the existing subscription untouched"
    );

    assert_eq!(
        subscriptions::delete(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "sub_1"
        )
        .await
        .unwrap(),
        Some(0)
    );
    assert_eq!(
        subscriptions::insert(&mut conn, &clash, &test_keyring())
            .await
            .unwrap(),
        None,
        "ids of deleted subscriptions are never reused"
    );
    assert_eq!(
        subscriptions::find_active(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "sub_1"
        )
        .await
        .unwrap(),
        None
    );
}

#[tokio::test]
async fn find_active_hides_deleted_and_unknown_subscriptions() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "sub_keep", &["*"]).await;
    add_sub(&mut conn, "sub_gone", &["*"]).await;
    subscriptions::delete(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        "sub_gone",
    )
    .await
    .unwrap()
    .unwrap();

    assert!(
        subscriptions::find_active(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "sub_keep"
        )
        .await
        .unwrap()
        .is_some()
    );
    assert_eq!(
        subscriptions::find_active(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "sub_gone"
        )
        .await
        .unwrap(),
        None
    );
    assert_eq!(
        subscriptions::find_active(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "sub_never"
        )
        .await
        .unwrap(),
        None
    );
}

#[tokio::test]
async fn list_active_pages_through_subscriptions_in_id_order_without_gaps_or_repeats() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    // Inserted out of order, with deleted subscriptions in between and at the ends.
    for id in [
        "s5", "s1", "s0_gone", "s7", "s3", "s4_gone", "s2", "s6", "s4", "s9_gone",
    ] {
        add_sub(&mut conn, id, &["*"]).await;
    }
    for id in ["s0_gone", "s4_gone", "s9_gone"] {
        subscriptions::delete(&mut conn, &dispatch_domain::TenantId::default_tenant(), id)
            .await
            .unwrap()
            .unwrap();
    }

    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = subscriptions::list_active(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            after.as_deref(),
            3,
        )
        .await
        .unwrap();
        if page.is_empty() {
            break;
        }
        after = Some(page.last().unwrap().id.clone());
        pages.push(page.into_iter().map(|s| s.id).collect::<Vec<_>>());
        assert!(pages.len() <= 4, "pagination does not terminate: {pages:?}");
    }
    assert_eq!(
        pages,
        [vec!["s1", "s2", "s3"], vec!["s4", "s5", "s6"], vec!["s7"],]
    );

    let all = subscriptions::list_active(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        None,
        100,
    )
    .await
    .unwrap();
    assert_eq!(all.len(), 7);
    assert_eq!(
        subscriptions::list_active(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            Some("s3"),
            2
        )
        .await
        .unwrap()
        .iter()
        .map(|s| s.id.as_str())
        .collect::<Vec<_>>(),
        ["s4", "s5"],
        "`after` is exclusive"
    );
    assert_eq!(
        subscriptions::list_active(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            Some("s35"),
            1
        )
        .await
        .unwrap()[0]
            .id,
        "s4",
        "`after` need not be an existing id"
    );
    assert!(
        subscriptions::list_active(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            Some("s7"),
            3
        )
        .await
        .unwrap()
        .is_empty()
    );
    assert!(
        subscriptions::list_active(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            None,
            0
        )
        .await
        .unwrap()
        .is_empty()
    );
}
