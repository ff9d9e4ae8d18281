//! Creating subscriptions: 201 with the secret shown once, generated ids and secrets, 409s, 422s, 413.

use super::*;

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
