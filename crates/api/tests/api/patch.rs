//! `PATCH /subscriptions/{id}` (JSON merge patch) and the settings it shares with
//! `POST /subscriptions`: what is changed, what is kept, what `null` resets, every refusal
//! naming its field, the SSRF check of a new URL, and pausing and resuming.

use dispatch_domain::destination::DestinationPolicy;
use dispatch_store::pool;
use dispatch_store::queries::subscription_changes::held_count;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, event, json_of};

async fn patch(app: &TestApp, id: &str, body: &Value) -> Response {
    app.client
        .patch(app.url(&format!("/subscriptions/{id}")))
        .header("Content-Type", "application/merge-patch+json")
        .body(body.to_string())
        .send()
        .await
        .expect("PATCH is answered")
}

async fn patched(app: &TestApp, id: &str, body: &Value) -> Value {
    let (status, view) = json_of(patch(app, id, body).await).await;
    assert_eq!(status, StatusCode::OK, "{body}: {view}");
    let (_, fetched) = json_of(app.get(&format!("/subscriptions/{id}")).await).await;
    assert_eq!(fetched, view, "GET shows what PATCH answered");
    view
}

#[tokio::test]
async fn a_new_subscription_shows_its_settings_null_or_empty_meaning_the_global_defaults() {
    let app = TestApp::spawn().await;
    let created = app.subscribe("sub_plain", &["*"]).await;
    assert_eq!(created["enabled"], true);
    assert_eq!(created["description"], Value::Null);
    assert_eq!(created["metadata"], json!({}));
    assert_eq!(created["headers"], json!({}));
    assert_eq!(
        created["retry"],
        json!({"max_attempts": null, "max_delay_secs": null})
    );
    assert_eq!(created["timeout_ms"], Value::Null);

    let (status, full) = json_of(
        app.create_subscription(&json!({
            "id": "sub_full",
            "url": "https://hooks.example.com/full",
            "event_types": ["order.*"],
            "enabled": false,
            "description": "Orders\tto billing",
            "metadata": {"team": "billing", "tier": "gold"},
            "headers": {"Authorization": "Bearer t0k", "X-Tenant": "acme"},
            "retry": {"max_attempts": 5, "max_delay_secs": 600},
            "timeout_ms": 5000,
        }))
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{full}");
    assert_eq!(full["enabled"], false, "created paused");
    assert_eq!(full["description"], "Orders\tto billing");
    assert_eq!(full["metadata"], json!({"team": "billing", "tier": "gold"}));
    assert_eq!(
        full["headers"],
        json!({"authorization": "Bearer t0k", "x-tenant": "acme"}),
        "names are stored lower-case"
    );
    assert_eq!(
        full["retry"],
        json!({"max_attempts": 5, "max_delay_secs": 600})
    );
    assert_eq!(full["timeout_ms"], 5000);
}

#[tokio::test]
async fn patch_changes_the_members_given_keeps_the_others_and_null_resets_to_the_default() {
    let app = TestApp::spawn().await;
    let (status, _) = json_of(
        app.create_subscription(&json!({
            "id": "sub_p",
            "url": "https://hooks.example.com/p",
            "event_types": ["order.*"],
            "secret": "s3cr3t-value",
            "description": "first",
            "metadata": {"team": "billing", "tier": "gold"},
            "headers": {"X-A": "1", "X-B": "2"},
            "retry": {"max_attempts": 5, "max_delay_secs": 600},
            "rate_limit": {"per_second": 5, "burst": 3},
            "timeout_ms": 5000,
        }))
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let view = patched(
        &app,
        "sub_p",
        &json!({
            "url": "https://hooks.example.com/v2",
            "headers": {"x-a": null, "X-C": "3"},
            "metadata": {"tier": null},
            "retry": {"max_attempts": null},
            "rate_limit": {"burst": null},
        }),
    )
    .await;
    assert_eq!(view["url"], "https://hooks.example.com/v2");
    assert_eq!(view["event_types"], json!(["order.*"]), "absent: kept");
    assert_eq!(view["description"], "first");
    assert_eq!(
        view["headers"],
        json!({"x-b": "2", "x-c": "3"}),
        "members merge; a header name matches case-insensitively"
    );
    assert_eq!(view["metadata"], json!({"team": "billing"}));
    assert_eq!(
        view["retry"],
        json!({"max_attempts": null, "max_delay_secs": 600})
    );
    assert_eq!(view["rate_limit"], json!({"per_second": 5.0, "burst": 10}));
    assert_eq!(view["timeout_ms"], 5000);
    assert_eq!(view["has_secret"], true);
    assert!(view.get("secret").is_none());

    let view = patched(
        &app,
        "sub_p",
        &json!({
            "description": null, "headers": null, "metadata": null, "retry": null,
            "rate_limit": null, "timeout_ms": null, "event_types": ["*"],
        }),
    )
    .await;
    assert_eq!(view["description"], Value::Null);
    assert_eq!(view["headers"], json!({}));
    assert_eq!(view["metadata"], json!({}));
    assert_eq!(
        view["retry"],
        json!({"max_attempts": null, "max_delay_secs": null})
    );
    assert_eq!(
        view["rate_limit"],
        json!({"per_second": 100.0, "burst": 10})
    );
    assert_eq!(view["timeout_ms"], Value::Null);
    assert_eq!(view["event_types"], json!(["*"]));

    // An empty patch changes nothing; plain application/json is accepted too.
    let (status, same) = json_of(
        app.client
            .patch(app.url("/subscriptions/sub_p"))
            .json(&json!({}))
            .send()
            .await
            .expect("PATCH is answered"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(same, view);
}

#[tokio::test]
async fn every_invalid_patch_is_refused_naming_its_field_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let mut before = app.subscribe("sub_v", &["*"]).await;
    before.as_object_mut().expect("an object").remove("secret");
    let many: serde_json::Map<String, Value> =
        (0..21).map(|i| (format!("x-h{i}"), json!("v"))).collect();
    let many_meta: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases = [
        (json!([1]), "body"),
        (json!({"id": "sub_other"}), "id"),
        (json!({"colour": null}), "colour"),
        (json!({"colour": "red"}), "colour"),
        (json!({"retry": {"max_tries": null}}), "retry.max_tries"),
        (json!({"rate_limit": {"rps": 5}}), "rate_limit.rps"),
        (json!({"secret": "new-secret-value"}), "secret"),
        (json!({"url": null}), "url"),
        (json!({"event_types": null}), "event_types"),
        (json!({"enabled": null}), "enabled"),
        (json!({"enabled": "no"}), "enabled"),
        (json!({"url": "ftp://example.com/"}), "url"),
        (json!({"event_types": []}), "event_types"),
        (json!({"event_types": ["a.*.b"]}), "event_types[0]"),
        (json!({"rate_limit": {"burst": 0}}), "rate_limit.burst"),
        (json!({"rate_limit": {"bogus": 1}}), "rate_limit.bogus"),
        (json!({"headers": "x"}), "headers"),
        (json!({ "headers": many }), "headers"),
        (json!({"headers": {"Host": "evil"}}), "headers.host"),
        (
            json!({"headers": {"Content-Length": "1"}}),
            "headers.content-length",
        ),
        (
            json!({"headers": {"Content-Type": "text/plain"}}),
            "headers.content-type",
        ),
        (
            json!({"headers": {"Connection": "close"}}),
            "headers.connection",
        ),
        (
            json!({"headers": {"Transfer-Encoding": "chunked"}}),
            "headers.transfer-encoding",
        ),
        (json!({"headers": {"Upgrade": "h2c"}}), "headers.upgrade"),
        (
            json!({"headers": {"webhook-id": "x"}}),
            "headers.webhook-id",
        ),
        (
            json!({"headers": {"Webhook-Signature": "x"}}),
            "headers.webhook-signature",
        ),
        (
            json!({"headers": {"X-Dispatch-Signature": "x"}}),
            "headers.x-dispatch-signature",
        ),
        (json!({"headers": {"bad name": "x"}}), "headers.bad name"),
        (json!({"headers": {"x-a": "line\nbreak"}}), "headers.x-a"),
        (json!({"headers": {"x-a": 1}}), "headers.x-a"),
        (json!({"headers": {"X-A": "1", "x-a": "2"}}), "headers.x-a"),
        (json!({"metadata": ["a"]}), "metadata"),
        (json!({ "metadata": many_meta }), "metadata"),
        (json!({"metadata": {"team": 1}}), "metadata.team"),
        (json!({"metadata": {"": "x"}}), "metadata."),
        (json!({"metadata": {"k": "x".repeat(513)}}), "metadata.k"),
        (json!({"description": "x".repeat(1025)}), "description"),
        (json!({"description": "bell\u{7}"}), "description"),
        (json!({"retry": 3}), "retry"),
        (json!({"retry": {"max_attempts": 0}}), "retry.max_attempts"),
        (
            json!({"retry": {"max_attempts": 1001}}),
            "retry.max_attempts",
        ),
        (
            json!({"retry": {"max_attempts": 2.5}}),
            "retry.max_attempts",
        ),
        (
            json!({"retry": {"max_delay_secs": 604_801}}),
            "retry.max_delay_secs",
        ),
        (json!({"retry": {"jitter": 1}}), "retry.jitter"),
        (json!({"timeout_ms": 9}), "timeout_ms"),
        (json!({"timeout_ms": 600_001}), "timeout_ms"),
        (json!({"colour": "red"}), "colour"),
    ];
    for (body, field) in cases {
        let error = assert_error(
            patch(&app, "sub_v", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some(field),
        )
        .await;
        assert!(
            error["message"].as_str().is_some_and(|m| m.len() > 10),
            "{body}: says why: {error}"
        );
    }
    let (_, after) = json_of(app.get("/subscriptions/sub_v").await).await;
    assert_eq!(after, before, "nothing changed");

    // The same rules at creation.
    assert_error(
        app.create_subscription(&json!({
            "url": "https://hooks.example.com/x", "event_types": ["*"],
            "headers": {"Host": "evil"},
        }))
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("headers.host"),
    )
    .await;
    for missing in ["sub_missing", "not%20an%20id"] {
        assert_error(
            patch(&app, missing, &json!({"enabled": false})).await,
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        )
        .await;
    }
    app.unsubscribe("sub_v").await;
    assert_error(
        patch(&app, "sub_v", &json!({"enabled": false})).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
}

#[tokio::test]
async fn a_patched_url_is_checked_against_the_destination_policy_as_at_creation() {
    let app = TestApp::spawn_with(|s| s.destinations = DestinationPolicy::default()).await;
    let mut before = app.subscribe("sub_u", &["*"]).await;
    before.as_object_mut().expect("an object").remove("secret");
    for url in [
        "http://127.0.0.1/hook",
        "http://10.0.0.1/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost/hook",
    ] {
        let error = assert_error(
            patch(&app, "sub_u", &json!({"url": url, "description": "x"})).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "destination_refused",
            Some("url"),
        )
        .await;
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains("DISPATCH_ALLOW_DESTINATIONS")),
            "{url}: {error}"
        );
    }
    let (_, after) = json_of(app.get("/subscriptions/sub_u").await).await;
    assert_eq!(
        after, before,
        "a refused patch changes nothing, not even the description"
    );
    patched(&app, "sub_u", &json!({"url": "https://93.184.215.14/hook"})).await;
}

#[tokio::test]
async fn pausing_holds_new_deliveries_and_resuming_releases_them_each_state_idempotent() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_s", &["order.*"]).await;
    for _ in 0..2 {
        let view = patched(&app, "sub_s", &json!({"enabled": false})).await;
        assert_eq!(view["enabled"], false, "false twice is still paused");
    }
    for i in 1..=3 {
        let (status, _) = json_of(
            app.post_event(&event(&format!("evt_{i}"), "order.created"))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let shown = app.event("evt_1").await;
    assert_eq!(
        shown["deliveries"][0]["subscription_id"], "sub_s",
        "still created"
    );
    assert_eq!(shown["deliveries"][0]["status"], "pending");
    assert_eq!(shown["deliveries"][0]["attempts"], 0);
    let pool = app.db.pool();
    let mut conn = pool::connection(&pool).await.expect("a connection");
    assert_eq!(held_count(&mut conn, "sub_s").await.expect("countable"), 3);

    for _ in 0..2 {
        let view = patched(&app, "sub_s", &json!({"enabled": true})).await;
        assert_eq!(view["enabled"], true, "true twice is still running");
        assert_eq!(held_count(&mut conn, "sub_s").await.expect("countable"), 0);
    }
    let shown = app.event("evt_3").await;
    assert_eq!(shown["deliveries"][0]["attempts"], 0, "no attempt spent");
}
