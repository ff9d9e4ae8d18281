//! API keys kept in the database: created (shown once, stored as a hash), scoped (`admin`,
//! `read`, `ingest`: `403 forbidden` beyond the scope), revoked and expired (refused within the
//! reload interval, on a replica that never restarted), rotated with an overlap, audited, and
//! managed through `dispatch-api admin keys` as through `/keys`.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::admin::admin;
use crate::helpers::{TestApp, assert_error, event, json_of};

/// How long a key change may take to reach the API (it reloads every second): generous, so a
/// slow machine does not fail the test; the test returns as soon as the change is seen.
const PATIENCE: Duration = Duration::from_secs(15);

async fn call(
    app: &TestApp,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> StatusCode {
    let mut request = reqwest::Client::new()
        .request(method, app.url(path))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("answered").status()
}

/// Waits until `key` gets `want` for `GET path` (the key cache caught up).
async fn until_status(app: &TestApp, key: &str, path: &str, want: StatusCode) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let got = call(app, key, Method::GET, path, None).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "GET {path} still answers {got}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create(app: &TestApp, body: Value) -> Value {
    let (status, created) = json_of(app.post_json("/keys", &body).await).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

#[tokio::test]
async fn each_scope_may_call_what_it_says_and_is_refused_the_rest_with_403() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_1", &["*"]).await;
    let ingest = create(&app, json!({"name": "producer", "scope": "ingest"})).await;
    let read = create(&app, json!({"name": "dashboard", "scope": "read"})).await;
    let admin_key = create(&app, json!({"name": "ops", "scope": "admin"})).await;
    let (ingest, read, admin_key) = (
        ingest["key"].as_str().expect("a key").to_owned(),
        read["key"].as_str().expect("a key").to_owned(),
        admin_key["key"].as_str().expect("a key").to_owned(),
    );
    assert!(ingest.starts_with("dk_"));
    until_status(&app, &read, "/subscriptions", StatusCode::OK).await;
    until_status(&app, &ingest, "/subscriptions", StatusCode::FORBIDDEN).await;

    let post_event = |key: String, id: &'static str| {
        let app = &app;
        async move {
            call(
                app,
                &key,
                Method::POST,
                "/events",
                Some(event(id, "order.created")),
            )
            .await
        }
    };
    assert_eq!(
        post_event(ingest.clone(), "evt_1").await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        post_event(read.clone(), "evt_2").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post_event(admin_key.clone(), "evt_3").await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        call(
            &app,
            &ingest,
            Method::POST,
            "/events/batch",
            Some(json!({"events": [event("evt_4", "a")]}))
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, &ingest, Method::GET, "/events/evt_1", None).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&app, &read, Method::GET, "/events/evt_1", None).await,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, &read, Method::DELETE, "/subscriptions/sub_1", None).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&app, &read, Method::GET, "/keys", None).await,
        StatusCode::FORBIDDEN,
        "keys are for admins"
    );
    assert_eq!(
        call(&app, &read, Method::GET, "/audit", None).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&app, &admin_key, Method::GET, "/keys", None).await,
        StatusCode::OK
    );
    assert_eq!(
        call(
            &app,
            "dk_aaaaaaaaaaaa_not-the-secret",
            Method::GET,
            "/subscriptions",
            None
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    let forbidden = reqwest::Client::new()
        .post(app.url("/subscriptions"))
        .bearer_auth(&ingest)
        .json(&json!({"url": "https://example.com/", "event_types": ["*"]}))
        .send()
        .await
        .expect("answered");
    let body = assert_error(forbidden, StatusCode::FORBIDDEN, "forbidden", None).await;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("scope ingest"),
        "{body}"
    );

    // Listing never shows a key or its hash.
    let (_, page) = json_of(app.get("/keys").await).await;
    let text = page.to_string();
    assert_eq!(page["data"].as_array().map(Vec::len), Some(3));
    assert!(
        !text.contains(&ingest[16..]) && !text.contains("hash"),
        "{text}"
    );
}

#[tokio::test]
async fn a_revoked_or_expired_key_stops_working_and_every_change_is_audited() {
    let app = TestApp::spawn().await;
    let created = create(&app, json!({"name": "temp", "scope": "read"})).await;
    let (id, key) = (
        created["id"].as_str().expect("an id").to_owned(),
        created["key"].as_str().expect("a key").to_owned(),
    );
    until_status(&app, &key, "/subscriptions", StatusCode::OK).await;
    let (status, revoked) = json_of(app.delete(&format!("/keys/{id}")).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(revoked["revoked_at"].is_string());
    until_status(&app, &key, "/subscriptions", StatusCode::UNAUTHORIZED).await;

    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let expiring = create(
        &app,
        json!({"name": "brief", "scope": "read", "expires_at": soon}),
    )
    .await;
    let expiring = expiring["key"].as_str().expect("a key").to_owned();
    until_status(&app, &expiring, "/subscriptions", StatusCode::OK).await;
    until_status(&app, &expiring, "/subscriptions", StatusCode::UNAUTHORIZED).await;

    let (_, log) = json_of(app.get("/audit").await).await;
    let entries: Vec<(String, String, String)> = log["data"]
        .as_array()
        .expect("a page")
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or("").to_owned(),
                e["action"].as_str().unwrap_or("").to_owned(),
                e["target"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        entries[1],
        ("env".to_owned(), "key.revoked".to_owned(), id.clone()),
        "newest first: {entries:?}"
    );
    assert_eq!(
        entries[2],
        ("env".to_owned(), "key.created".to_owned(), id),
        "{entries:?}"
    );
}

#[tokio::test]
async fn a_rotated_key_keeps_working_for_its_overlap_and_the_new_one_works_at_once() {
    let app = TestApp::spawn().await;
    let old = create(&app, json!({"name": "rotating", "scope": "admin"})).await;
    let (old_id, old_key) = (
        old["id"].as_str().expect("an id").to_owned(),
        old["key"].as_str().expect("a key").to_owned(),
    );
    until_status(&app, &old_key, "/keys", StatusCode::OK).await;
    // Rotated by the key itself: the audit log names it.
    let response = reqwest::Client::new()
        .post(app.url(&format!("/keys/{old_id}/rotate")))
        .bearer_auth(&old_key)
        .json(&json!({"overlap_secs": 3600}))
        .send()
        .await
        .expect("answered");
    let (status, new) = json_of(response).await;
    assert_eq!(status, StatusCode::CREATED, "{new}");
    assert_eq!(
        (new["name"].as_str(), new["scope"].as_str()),
        (Some("rotating"), Some("admin"))
    );
    assert_eq!(new["rotated_from"], old_id.as_str());
    let new_key = new["key"].as_str().expect("a key").to_owned();
    until_status(&app, &new_key, "/keys", StatusCode::OK).await;
    assert_eq!(
        call(&app, &old_key, Method::GET, "/keys", None).await,
        StatusCode::OK,
        "the overlap"
    );
    let (_, log) = json_of(app.get("/audit?limit=1").await).await;
    assert_eq!(log["data"][0]["actor"], old_id.as_str());
    assert_eq!(log["data"][0]["action"], "key.rotated");
    assert!(log["next_cursor"].is_string());

    // No overlap: the old key stops at once (within the reload).
    let new_id = new["id"].as_str().expect("an id").to_owned();
    let (status, _) = json_of(
        app.post_json(
            &format!("/keys/{new_id}/rotate"),
            &json!({"overlap_secs": 0}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    until_status(&app, &new_key, "/keys", StatusCode::UNAUTHORIZED).await;
    assert_error(
        app.post_json(&format!("/keys/{new_id}/rotate"), &json!({}))
            .await,
        StatusCode::CONFLICT,
        "key_inactive",
        None,
    )
    .await;
}

#[tokio::test]
async fn bad_key_requests_are_refused_by_field_and_unknown_ids_are_404() {
    let app = TestApp::spawn().await;
    let past = (chrono::Utc::now() - chrono::Duration::seconds(5)).to_rfc3339();
    for (body, field) in [
        (json!({"scope": "read"}), "name"),
        (json!({"name": "", "scope": "read"}), "name"),
        (json!({"name": "x", "scope": "owner"}), "scope"),
        (json!({"name": "x"}), "scope"),
        (
            json!({"name": "x", "scope": "read", "expires_at": past}),
            "expires_at",
        ),
        (
            json!({"name": "x", "scope": "read", "expires_at": "tomorrow"}),
            "expires_at",
        ),
        (json!({"name": "x", "scope": "read", "key": "mine"}), "key"),
    ] {
        assert_error(
            app.post_json("/keys", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some(field),
        )
        .await;
    }
    for path in ["/keys/dk_aaaaaaaaaaaa", "/keys/not-a-key-id"] {
        assert_error(
            app.delete(path).await,
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        )
        .await;
    }
    assert_error(
        app.post_json("/keys/dk_aaaaaaaaaaaa/rotate", &json!({"overlap_secs": -1}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("overlap_secs"),
    )
    .await;
}

#[tokio::test]
async fn the_admin_command_manages_the_same_keys_as_the_api() {
    let app = TestApp::spawn().await;
    let created: Value = serde_json::from_str(&admin(
        &app,
        &["keys", "create", "--name", "from cli", "--scope", "read"],
    ))
    .expect("JSON");
    let (id, key) = (
        created["id"].as_str().expect("an id").to_owned(),
        created["key"].as_str().expect("a key").to_owned(),
    );
    until_status(&app, &key, "/subscriptions", StatusCode::OK).await;
    let listed = admin(&app, &["keys", "list"]);
    assert!(
        listed.contains(&id) && !listed.contains(&key[16..]),
        "{listed}"
    );
    admin(&app, &["keys", "revoke", &id]);
    until_status(&app, &key, "/subscriptions", StatusCode::UNAUTHORIZED).await;
    let (_, log) = json_of(app.get("/audit").await).await;
    assert_eq!(log["data"][0]["actor"], "cli");
    let out = crate::admin::dispatch_api(
        &["admin", "keys", "create", "--name", "x", "--scope", "owner"],
        &[("DATABASE_URL", app.db.url())],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("one of admin, read, tenant:<tenant id>")
    );
}
