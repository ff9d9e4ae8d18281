//! Listing subscriptions: pages in id order, deleted ones skipped, bad limits and cursors refused.

use super::*;

#[tokio::test]
async fn listing_pages_through_every_active_subscription_once_in_id_order() {
    let app = TestApp::spawn().await;
    for id in ["sub_c", "sub_a", "sub_e", "sub_b", "sub_d"] {
        app.subscribe(id, &["*"]).await;
    }

    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/subscriptions?limit=2&cursor={c}"),
            None => "/subscriptions?limit=2".to_owned(),
        };
        let (status, page) = json_of(app.get(&path).await).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let ids = ids_of(&page);
        assert!(ids.len() <= 2, "{page}");
        for item in page["data"].as_array().expect("array") {
            assert!(item.get("secret").is_none(), "{item}");
        }
        seen.extend(ids.clone());
        pages.push(ids);
        match &page["next_cursor"] {
            Value::Null => break,
            Value::String(next) => cursor = Some(next.clone()),
            other => panic!("next_cursor must be a string or null, got {other}"),
        }
        assert!(pages.len() <= 5, "pagination does not end: {pages:?}");
    }
    assert_eq!(
        pages,
        vec![
            vec!["sub_a", "sub_b"],
            vec!["sub_c", "sub_d"],
            vec!["sub_e"]
        ]
    );
    assert_eq!(seen, ["sub_a", "sub_b", "sub_c", "sub_d", "sub_e"]);

    // A page that ends exactly at the last subscription says there is no more.
    let (_, page) = json_of(app.get("/subscriptions?limit=5").await).await;
    assert_eq!(ids_of(&page).len(), 5);
    assert_eq!(page["next_cursor"], Value::Null);
    let (_, page) = json_of(app.get("/subscriptions?limit=2&cursor=sub_c").await).await;
    assert_eq!(ids_of(&page), ["sub_d", "sub_e"]);
    assert_eq!(page["next_cursor"], Value::Null);

    // Without a limit: everything (up to the default page size); an empty cursor is no cursor.
    let (_, page) = json_of(app.get("/subscriptions").await).await;
    assert_eq!(ids_of(&page), seen);
    assert_eq!(page["next_cursor"], Value::Null);
    let (_, page) = json_of(app.get("/subscriptions?cursor=&limit=500").await).await;
    assert_eq!(ids_of(&page), seen);
}

#[tokio::test]
async fn listing_with_no_subscriptions_is_an_empty_page() {
    let app = TestApp::spawn().await;
    let (status, page) = json_of(app.get("/subscriptions").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page, json!({"data": [], "next_cursor": null}));
}

#[tokio::test]
async fn deleted_subscriptions_are_not_listed_and_do_not_break_a_cursor() {
    let app = TestApp::spawn().await;
    for id in ["sub_1", "sub_2", "sub_3", "sub_4", "sub_5"] {
        app.subscribe(id, &["*"]).await;
    }
    let (_, first) = json_of(app.get("/subscriptions?limit=2").await).await;
    assert_eq!(ids_of(&first), ["sub_1", "sub_2"]);
    assert_eq!(first["next_cursor"], "sub_2");

    // The cursor's own subscription and the next one go away between pages.
    app.unsubscribe("sub_2").await;
    app.unsubscribe("sub_3").await;
    let (_, second) = json_of(app.get("/subscriptions?limit=2&cursor=sub_2").await).await;
    assert_eq!(ids_of(&second), ["sub_4", "sub_5"]);
    assert_eq!(second["next_cursor"], Value::Null);

    let (_, all) = json_of(app.get("/subscriptions").await).await;
    assert_eq!(ids_of(&all), ["sub_1", "sub_4", "sub_5"]);
}

#[tokio::test]
async fn a_bad_limit_or_cursor_is_a_422_invalid_parameter() {
    let app = TestApp::spawn().await;
    for limit in ["0", "501", "abc", "-1", "1.5", "", "99999999999999999999"] {
        let body = assert_error(
            app.get(&format!("/subscriptions?limit={limit}")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_parameter",
            Some("limit"),
        )
        .await;
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains("500")),
            "the message gives the range: {body}"
        );
    }
    let too_long = "a".repeat(129);
    for cursor in ["not%20a%20cursor", "sub%2Fx", too_long.as_str()] {
        assert_error(
            app.get(&format!("/subscriptions?cursor={cursor}")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_parameter",
            Some("cursor"),
        )
        .await;
    }
    // A query string that cannot be decoded at all.
    assert_error(
        app.get("/subscriptions?limit=1&limit=2").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_parameter",
        Some("query"),
    )
    .await;
    let (status, _) = json_of(app.get("/subscriptions?limit=1").await).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = json_of(app.get("/subscriptions?limit=500").await).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn any_cursor_the_document_allows_is_a_bound_even_one_no_id_could_be() {
    let app = TestApp::spawn().await;
    for id in ["sub_a", "sub_b"] {
        app.create_subscription(
            &json!({"id": id, "url": "https://example.com/hook", "event_types": ["*"]}),
        )
        .await;
    }
    // `.` and `..` are never ids, but the document's pattern allows them: they bound the page
    // like any other text (they sort before `sub_` in every collation, 128 `z`s after).
    let longest = "z".repeat(128);
    for (cursor, expected) in [
        (".", vec!["sub_a", "sub_b"]),
        ("..", vec!["sub_a", "sub_b"]),
        ("-", vec!["sub_a", "sub_b"]),
        (longest.as_str(), vec![]),
    ] {
        let (status, page) =
            json_of(app.get(&format!("/subscriptions?cursor={cursor}")).await).await;
        assert_eq!(status, StatusCode::OK, "cursor {cursor:?}: {page}");
        let ids: Vec<&str> = page["data"]
            .as_array()
            .expect("data is an array")
            .iter()
            .filter_map(|s| s["id"].as_str())
            .collect();
        assert_eq!(ids, expected, "cursor {cursor:?}");
    }
}
