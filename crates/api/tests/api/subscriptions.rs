//! `POST /subscriptions`, `GET /subscriptions`, `GET /subscriptions/{id}`,
//! `DELETE /subscriptions/{id}`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, json_of};

fn ids_of(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .expect("data is an array")
        .iter()
        .map(|s| s["id"].as_str().expect("an id").to_owned())
        .collect()
}

// --- POST /subscriptions ------------------------------------------------------------------------

#[tokio::test]
async fn creating_a_subscription_answers_201_with_its_secret_once_and_a_location() {
    let app = TestApp::spawn().await;
    let response = app
        .create_subscription(&json!({
            "id": "sub_orders",
            "url": "https://Hooks.Example.com/orders?v=1",
            "event_types": ["order.*", "invoice.paid", "order.*", "*"],
            "secret": "s3cr3t-value",
        }))
        .await;
    let location = response
        .headers()
        .get("Location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, created) = json_of(response).await;

    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(location.as_deref(), Some("/subscriptions/sub_orders"));
    assert_eq!(created["id"], "sub_orders");
    assert_eq!(
        created["url"], "https://hooks.example.com/orders?v=1",
        "normalised"
    );
    assert_eq!(
        created["event_types"],
        json!(["order.*", "invoice.paid", "*"]),
        "duplicates dropped, order kept"
    );
    assert_eq!(created["enabled"], true);
    assert_eq!(created["has_secret"], true);
    assert_eq!(created["secret"], "s3cr3t-value", "shown once, at creation");
    assert!(created["created_at"].is_string());

    // Never again: not by id, not in the list.
    let (status, fetched) = json_of(app.get("/subscriptions/sub_orders").await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(fetched.get("secret").is_none(), "secret leaked: {fetched}");
    assert_eq!(fetched["has_secret"], true);
    let mut expected = created.clone();
    expected.as_object_mut().expect("object").remove("secret");
    assert_eq!(fetched, expected);

    let (status, list) = json_of(app.get("/subscriptions").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"], json!([expected]));
    assert!(
        !list.to_string().contains("s3cr3t-value"),
        "secret leaked: {list}"
    );
}

#[tokio::test]
async fn a_subscription_without_a_secret_gets_a_generated_one_shown_once() {
    let app = TestApp::spawn().await;
    let mut secrets = Vec::new();
    for (id, secret) in [("sub_absent", None), ("sub_null", Some(Value::Null))] {
        let mut body = json!({"id": id, "url": "http://127.0.0.1:9000/hook", "event_types": ["*"]});
        if let Some(secret) = secret {
            body["secret"] = secret;
        }
        let (status, created) = json_of(app.create_subscription(&body).await).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["has_secret"], true);
        let secret = created["secret"]
            .as_str()
            .expect("a generated secret")
            .to_owned();
        assert!(
            secret.starts_with("whsec_") && secret.len() > 20,
            "{secret}"
        );
        let (_, fetched) = json_of(app.get(&format!("/subscriptions/{id}")).await).await;
        assert_eq!(fetched["has_secret"], true);
        assert!(fetched.get("secret").is_none(), "{fetched}");
        secrets.push(secret);
    }
    assert_ne!(
        secrets[0], secrets[1],
        "each subscription gets its own secret"
    );
}

#[tokio::test]
async fn a_subscription_without_an_id_gets_a_generated_sub_id() {
    let app = TestApp::spawn().await;
    let body = json!({"url": "https://example.com/a", "event_types": ["*"]});

    let response = app.create_subscription(&body).await;
    let location = response
        .headers()
        .get("Location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, first) = json_of(response).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let id = first["id"].as_str().expect("an id").to_owned();
    assert!(id.starts_with("sub_") && id.len() > 4, "{id}");
    assert_eq!(location, Some(format!("/subscriptions/{id}")));

    let (status, fetched) = json_of(app.get(&format!("/subscriptions/{id}")).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched["id"], id.as_str());

    // The same body again is another subscription.
    let (status, second) = json_of(app.create_subscription(&body).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(second["id"], first["id"]);
}

#[tokio::test]
async fn a_taken_subscription_id_is_a_409_even_after_its_subscription_was_deleted() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_taken", &["*"]).await;

    let again =
        json!({"id": "sub_taken", "url": "https://other.example.com/", "event_types": ["x"]});
    assert_error(
        app.create_subscription(&again).await,
        StatusCode::CONFLICT,
        "subscription_exists",
        None,
    )
    .await;
    // The original is unchanged.
    let (_, original) = json_of(app.get("/subscriptions/sub_taken").await).await;
    assert_eq!(original["url"], "https://hooks.example.com/sub_taken");

    app.unsubscribe("sub_taken").await;
    assert_error(
        app.create_subscription(&again).await,
        StatusCode::CONFLICT,
        "subscription_exists",
        None,
    )
    .await;
    assert_error(
        app.get("/subscriptions/sub_taken").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
}

#[tokio::test]
async fn an_invalid_subscription_is_a_422_naming_the_field_at_fault() {
    let app = TestApp::spawn().await;
    let valid =
        || json!({"id": "sub_x", "url": "https://example.com/hook", "event_types": ["order.*"]});
    let many: Vec<String> = (0..65).map(|i| format!("type{i}")).collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("url", json!("ftp://example.com/hook"), "url"),
        ("url", json!("not a url"), "url"),
        ("url", json!("example.com/hook"), "url"),
        ("url", json!("https://example.com/hook#part"), "url"),
        ("url", json!("https://user:pass@example.com/hook"), "url"),
        ("url", json!("https://token@example.com/hook"), "url"),
        ("url", json!("mailto:ops@example.com"), "url"),
        ("url", json!(""), "url"),
        ("url", json!(42), "url"),
        ("url", Value::Null, "url"),
        ("event_types", json!([]), "event_types"),
        ("event_types", json!("order.*"), "event_types"),
        ("event_types", json!({"0": "order.*"}), "event_types"),
        ("event_types", Value::Null, "event_types"),
        ("event_types", json!(many), "event_types"),
        ("event_types", json!(["order.*", "a.*.b"]), "event_types[1]"),
        ("event_types", json!(["*.created"]), "event_types[0]"),
        ("event_types", json!(["order*"]), "event_types[0]"),
        (
            "event_types",
            json!(["ok", "", "also.ok"]),
            "event_types[1]",
        ),
        (
            "event_types",
            json!(["ok", "bad..segment"]),
            "event_types[1]",
        ),
        ("event_types", json!(["ok", 7]), "event_types[1]"),
        ("id", json!("sub x"), "id"),
        ("id", json!(""), "id"),
        ("id", json!("s".repeat(129)), "id"),
        ("id", json!(5), "id"),
        ("secret", json!(""), "secret"),
        ("secret", json!("k".repeat(513)), "secret"),
        ("secret", json!(123), "secret"),
        ("callback", json!("https://example.com"), "callback"),
    ];
    for (key, value, field) in cases {
        let mut body = valid();
        body[key] = value.clone();
        assert_error(
            app.create_subscription(&body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some(field),
        )
        .await;
    }
    for missing in ["url", "event_types"] {
        let mut body = valid();
        body.as_object_mut().expect("object").remove(missing);
        assert_error(
            app.create_subscription(&body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some(missing),
        )
        .await;
    }
    assert_error(
        app.post_raw("/subscriptions", "[]", Some("application/json"))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("body"),
    )
    .await;
    assert_error(
        app.post_raw("/subscriptions", "{\"url\":", Some("application/json"))
            .await,
        StatusCode::BAD_REQUEST,
        "malformed_json",
        None,
    )
    .await;
    assert_error(
        app.post_raw("/subscriptions", valid().to_string(), Some("text/plain"))
            .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        None,
    )
    .await;

    // None of them was stored.
    let (_, list) = json_of(app.get("/subscriptions").await).await;
    assert_eq!(list["data"], json!([]), "{list}");
}

#[tokio::test]
async fn the_boundaries_of_a_subscription_are_accepted() {
    let app = TestApp::spawn().await;
    let patterns: Vec<String> = (0..64).map(|i| format!("type{i}.*")).collect();
    let body = json!({
        "id": "s".repeat(128),
        "url": "http://localhost:8080/hooks/in",
        "event_types": patterns,
        "secret": "k".repeat(512),
    });
    let (status, created) = json_of(app.create_subscription(&body).await).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["event_types"], body["event_types"]);
    assert_eq!(created["secret"], body["secret"]);
}

#[tokio::test]
async fn a_subscription_body_over_the_limit_is_a_413() {
    let app = TestApp::spawn_with(|s| s.max_body_bytes = 1024).await;
    let body =
        json!({"url": "https://example.com/", "event_types": ["*"], "secret": "k".repeat(2000)});
    assert_error(
        app.create_subscription(&body).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        None,
    )
    .await;
}

// --- GET /subscriptions -------------------------------------------------------------------------

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

// --- GET / DELETE /subscriptions/{id} -----------------------------------------------------------

#[tokio::test]
async fn a_subscription_is_read_by_id_and_an_unknown_one_is_a_404() {
    let app = TestApp::spawn().await;
    let created = app.subscribe("sub_read", &["order.*"]).await;
    let (status, fetched) = json_of(app.get("/subscriptions/sub_read").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched["id"], "sub_read");
    assert_eq!(fetched["url"], created["url"]);
    assert_eq!(fetched["event_types"], json!(["order.*"]));
    assert_eq!(fetched["enabled"], true);
    assert_eq!(fetched["has_secret"], true, "a generated secret");
    assert!(fetched.get("secret").is_none());
    assert_eq!(fetched["created_at"], created["created_at"]);

    let body = assert_error(
        app.get("/subscriptions/sub_unknown").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("sub_unknown"))
    );
}

#[tokio::test]
async fn deleting_a_subscription_answers_204_once_and_404_afterwards() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_del", &["*"]).await;
    app.subscribe("sub_stays", &["*"]).await;

    let response = app.delete("/subscriptions/sub_del").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.text().await.expect("body").is_empty());

    assert_error(
        app.delete("/subscriptions/sub_del").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
    assert_error(
        app.get("/subscriptions/sub_del").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
    assert_error(
        app.delete("/subscriptions/sub_never").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
    let (status, _) = json_of(app.get("/subscriptions/sub_stays").await).await;
    assert_eq!(status, StatusCode::OK, "deleting one leaves the others");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_subscription_id_created_concurrently_is_created_once() {
    let app = TestApp::spawn().await;
    let bodies: Vec<Value> = (0..8)
        .map(|i| {
            json!({
                "id": "sub_race",
                "url": format!("https://example.com/{i}"),
                "event_types": ["*"],
            })
        })
        .collect();
    let responses =
        futures_util::future::join_all(bodies.iter().map(|b| app.create_subscription(b))).await;
    let mut statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
    let (_, list) = json_of(app.get("/subscriptions").await).await;
    assert_eq!(ids_of(&list), ["sub_race"]);
}

#[tokio::test]
async fn a_secret_with_a_nul_character_is_a_422_naming_secret() {
    let app = TestApp::spawn().await;
    let body = json!({"url": "https://example.com/", "event_types": ["*"], "secret": "a\u{0}b"});
    assert_error(
        app.create_subscription(&body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("secret"),
    )
    .await;
}

// --- rate_limit and circuit ----------------------------------------------------------------------

/// The `rate_limit` shown for a subscription, as (per_second, burst).
fn rate_limit_of(view: &Value) -> (f64, i64) {
    let limit = &view["rate_limit"];
    assert_eq!(
        limit.as_object().map(|o| o.len()),
        Some(2),
        "rate_limit is exactly per_second and burst: {view}"
    );
    (
        limit["per_second"]
            .as_f64()
            .expect("per_second is a number"),
        limit["burst"].as_i64().expect("burst is a whole number"),
    )
}

#[tokio::test]
async fn a_rate_limit_is_accepted_and_shown_and_defaults_to_100_per_second_with_a_burst_of_10() {
    let app = TestApp::spawn().await;
    let cases: Vec<(&str, Option<Value>, (f64, i64))> = vec![
        (
            "sub_given",
            Some(json!({"per_second": 5, "burst": 2})),
            (5.0, 2),
        ),
        ("sub_absent", None, (100.0, 10)),
        ("sub_null", Some(Value::Null), (100.0, 10)),
        ("sub_empty", Some(json!({})), (100.0, 10)),
        ("sub_burst_only", Some(json!({"burst": 3})), (100.0, 3)),
        // JSON Schema's `integer` (what the document says `burst` is) includes `4.0`.
        ("sub_burst_float", Some(json!({"burst": 4.0})), (100.0, 4)),
        ("sub_rate_only", Some(json!({"per_second": 0.5})), (0.5, 10)),
        (
            "sub_nulls",
            Some(json!({"per_second": null, "burst": null})),
            (100.0, 10),
        ),
        (
            "sub_highest",
            Some(json!({"per_second": 100_000, "burst": 100_000})),
            (100_000.0, 100_000),
        ),
        (
            "sub_lowest",
            Some(json!({"per_second": 0.001, "burst": 1})),
            (0.001, 1),
        ),
    ];
    let mut expected = Vec::new();
    for (id, rate_limit, shown) in cases {
        let mut body = json!({"id": id, "url": "https://example.com/hook", "event_types": ["*"]});
        if let Some(rate_limit) = rate_limit {
            body["rate_limit"] = rate_limit;
        }
        let (status, created) = json_of(app.create_subscription(&body).await).await;
        assert_eq!(status, StatusCode::CREATED, "{id}: {created}");
        assert_eq!(rate_limit_of(&created), shown, "{id} as created");
        let (status, fetched) = json_of(app.get(&format!("/subscriptions/{id}")).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(rate_limit_of(&fetched), shown, "{id} as read back");
        expected.push((id.to_owned(), shown));
    }
    let (_, list) = json_of(app.get("/subscriptions").await).await;
    let mut listed: Vec<(String, (f64, i64))> = list["data"]
        .as_array()
        .expect("data is an array")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().expect("an id").to_owned(),
                rate_limit_of(s),
            )
        })
        .collect();
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(listed, expected);
}

#[tokio::test]
async fn an_invalid_rate_limit_is_a_422_naming_the_field_at_fault() {
    let app = TestApp::spawn().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"per_second": 0}), "rate_limit.per_second"),
        (json!({"per_second": -1}), "rate_limit.per_second"),
        (json!({"per_second": 100_000.5}), "rate_limit.per_second"),
        (json!({"per_second": "5"}), "rate_limit.per_second"),
        (json!({"per_second": true}), "rate_limit.per_second"),
        (json!({"per_second": [5]}), "rate_limit.per_second"),
        (json!({"burst": 0}), "rate_limit.burst"),
        (json!({"burst": -2}), "rate_limit.burst"),
        (json!({"burst": 100_001}), "rate_limit.burst"),
        (json!({"burst": 2.5}), "rate_limit.burst"),
        (json!({"burst": "2"}), "rate_limit.burst"),
        (json!({"burst": 10_000_000_000_i64}), "rate_limit.burst"),
        (json!({"per_second": 5, "burst": 0}), "rate_limit.burst"),
        (json!({"x": 1}), "rate_limit.x"),
        (json!({"per_second": 5, "burst": 2, "x": 1}), "rate_limit.x"),
        (json!("fast"), "rate_limit"),
        (json!(100), "rate_limit"),
        (json!([100, 10]), "rate_limit"),
        (json!(true), "rate_limit"),
    ];
    for (rate_limit, field) in cases {
        let body = json!({
            "url": "https://example.com/hook",
            "event_types": ["*"],
            "rate_limit": rate_limit.clone(),
        });
        let error = assert_error(
            app.create_subscription(&body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some(field),
        )
        .await;
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{rate_limit}: {error}"
        );
    }
    let (_, list) = json_of(app.get("/subscriptions").await).await;
    assert_eq!(list["data"], json!([]), "none was stored: {list}");
}

/// Publishes a circuit for `id` as a worker does.
async fn publish_circuit(
    app: &TestApp,
    id: &str,
    state: &'static str,
    open_until: Option<chrono::DateTime<chrono::Utc>>,
) {
    use dispatch_store::queries::subscriptions::{CircuitUpdate, publish_circuits};
    let pool = app.db.pool();
    let mut conn = dispatch_store::pool::connection(&pool)
        .await
        .expect("a connection");
    publish_circuits(
        &mut conn,
        &[CircuitUpdate {
            subscription_id: id.to_owned(),
            state,
            open_until,
        }],
    )
    .await
    .expect("the circuit is published");
}

fn timestamp(value: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().expect("a timestamp string"))
        .unwrap_or_else(|e| panic!("{value} is not RFC 3339: {e}"))
        .with_timezone(&chrono::Utc)
}

#[tokio::test]
async fn the_circuit_is_closed_by_default_and_shows_what_the_workers_published() {
    let app = TestApp::spawn().await;
    let created = app.subscribe("sub_a", &["*"]).await;
    assert_eq!(
        created["circuit"],
        json!({"state": "closed", "open_until": null, "changed_at": null})
    );
    app.subscribe("sub_b", &["*"]).await;

    // Open for another 30 s: shown open, with its end.
    let until = chrono::Utc::now() + chrono::Duration::seconds(30);
    publish_circuit(&app, "sub_a", "open", Some(until)).await;
    let (status, fetched) = json_of(app.get("/subscriptions/sub_a").await).await;
    assert_eq!(status, StatusCode::OK);
    let circuit = &fetched["circuit"];
    assert_eq!(circuit["state"], "open", "{fetched}");
    let shown = timestamp(&circuit["open_until"]);
    assert!(
        (shown - until).abs() < chrono::Duration::milliseconds(1),
        "open until {shown}, published {until}"
    );
    assert!(circuit["changed_at"].is_string(), "{fetched}");
    let (_, list) = json_of(app.get("/subscriptions").await).await;
    assert_eq!(list["data"][0]["id"], "sub_a");
    assert_eq!(
        list["data"][0]["circuit"], *circuit,
        "the list shows it too"
    );
    assert_eq!(
        list["data"][1]["circuit"]["state"], "closed",
        "the other subscription is untouched"
    );

    // A worker whose own breaker closed cannot clear a circuit that is still open.
    publish_circuit(&app, "sub_a", "closed", None).await;
    let (_, fetched) = json_of(app.get("/subscriptions/sub_a").await).await;
    assert_eq!(fetched["circuit"]["state"], "open", "{fetched}");

    // Once its time is up, closed again: no end any more.
    app.subscribe("sub_c", &["*"]).await;
    publish_circuit(
        &app,
        "sub_c",
        "open",
        Some(chrono::Utc::now() - chrono::Duration::seconds(1)),
    )
    .await;
    publish_circuit(&app, "sub_c", "closed", None).await;
    let (_, fetched) = json_of(app.get("/subscriptions/sub_c").await).await;
    assert_eq!(fetched["circuit"]["state"], "closed");
    assert_eq!(fetched["circuit"]["open_until"], Value::Null);
    assert!(fetched["circuit"]["changed_at"].is_string());

    // An open circuit whose time is up lets trials through: shown half-open, without an end.
    publish_circuit(
        &app,
        "sub_b",
        "open",
        Some(chrono::Utc::now() - chrono::Duration::seconds(1)),
    )
    .await;
    let (_, fetched) = json_of(app.get("/subscriptions/sub_b").await).await;
    assert_eq!(fetched["circuit"]["state"], "half_open", "{fetched}");
    assert_eq!(fetched["circuit"]["open_until"], Value::Null);
    publish_circuit(&app, "sub_b", "half_open", None).await;
    let (_, fetched) = json_of(app.get("/subscriptions/sub_b").await).await;
    assert_eq!(fetched["circuit"]["state"], "half_open");
    assert_eq!(fetched["circuit"]["open_until"], Value::Null);
}
