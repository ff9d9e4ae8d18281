//! Endpoint health over the API: `auto_disable_after_secs` on a subscription (create, PATCH,
//! GET, refusals naming the field), `disabled_reason`/`disabled_at`/`failing_since` as Dispatch
//! sets them, re-enabling that clears them and releases held deliveries, and the `dispatch.`
//! namespace producers may not post into.

use dispatch_store::pool;
use dispatch_store::queries::endpoint_health::sweep;
use dispatch_store::queries::subscription_changes::held_count;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, event, json_of};

async fn patch(app: &TestApp, id: &str, body: &Value) -> (StatusCode, Value) {
    json_of(
        app.client
            .patch(app.url(&format!("/subscriptions/{id}")))
            .header("Content-Type", "application/merge-patch+json")
            .body(body.to_string())
            .send()
            .await
            .expect("PATCH is answered"),
    )
    .await
}

#[tokio::test]
async fn auto_disable_after_secs_is_set_at_creation_changed_reset_and_shown() {
    let app = TestApp::spawn().await;
    let plain = app.subscribe("sub_plain", &["*"]).await;
    assert_eq!(
        plain["auto_disable_after_secs"],
        Value::Null,
        "the global one"
    );
    assert_eq!(plain["disabled_reason"], Value::Null);
    assert_eq!(plain["disabled_at"], Value::Null);
    assert_eq!(plain["failing_since"], Value::Null);

    let (status, created) = json_of(
        app.create_subscription(&json!({
            "id": "sub_own",
            "url": "https://hooks.example.com/own",
            "event_types": ["order.*"],
            "auto_disable_after_secs": 3600,
        }))
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["auto_disable_after_secs"], 3600);

    let (status, never) = patch(&app, "sub_own", &json!({"auto_disable_after_secs": 0})).await;
    assert_eq!(status, StatusCode::OK, "{never}");
    assert_eq!(never["auto_disable_after_secs"], 0, "0: never");
    let (_, fetched) = json_of(app.get("/subscriptions/sub_own").await).await;
    assert_eq!(fetched["auto_disable_after_secs"], 0);
    let (_, reset) = patch(&app, "sub_own", &json!({"auto_disable_after_secs": null})).await;
    assert_eq!(reset["auto_disable_after_secs"], Value::Null);
    let (_, kept) = patch(&app, "sub_own", &json!({"description": "x"})).await;
    assert_eq!(kept["auto_disable_after_secs"], Value::Null);
}

#[tokio::test]
async fn a_bad_auto_disable_after_secs_is_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    for bad in [
        json!(-1),
        json!(1.5),
        json!("3600"),
        json!(31_536_001),
        json!(true),
    ] {
        assert_error(
            app.create_subscription(&json!({
                "url": "https://hooks.example.com/x",
                "event_types": ["*"],
                "auto_disable_after_secs": bad,
            }))
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("auto_disable_after_secs"),
        )
        .await;
    }
    app.subscribe("sub_a", &["*"]).await;
    let (status, body) = patch(&app, "sub_a", &json!({"auto_disable_after_secs": -5})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "auto_disable_after_secs");
}

#[tokio::test]
async fn an_auto_disabled_subscription_shows_why_and_enabling_it_clears_that_and_releases_its_deliveries()
 {
    let app = TestApp::spawn().await;
    app.subscribe("sub_down", &["order.*"]).await;
    let pool = app.db.pool();
    let mut conn = pool::connection(&pool).await.expect("a connection");
    // A spell of failures long past the threshold, as the worker's outcomes would leave it.
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(
            "UPDATE subscriptions SET failing_since = now() - interval '2 hours',
                    auto_disable_after_secs = 3600 WHERE id = 'sub_down'",
        ),
        &mut conn,
    )
    .await
    .expect("the spell is set");
    let report = sweep(&mut conn, 432_000).await.expect("the sweep runs");
    assert_eq!(report.disabled, ["sub_down"]);

    let (_, down) = json_of(app.get("/subscriptions/sub_down").await).await;
    assert_eq!(down["enabled"], false);
    assert!(
        down["disabled_reason"]
            .as_str()
            .is_some_and(|r| r.contains("auto-disabled")),
        "{down}"
    );
    assert!(down["disabled_at"].is_string());
    assert!(down["failing_since"].is_string());
    let (status, _) = json_of(app.post_event(&event("evt_held", "order.created")).await).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        held_count(&mut conn, "sub_down").await.expect("countable"),
        1
    );

    // Another change keeps it disabled and says why.
    let (_, still) = patch(&app, "sub_down", &json!({"description": "looked at"})).await;
    assert_eq!(still["disabled_reason"], down["disabled_reason"]);

    let (status, up) = patch(&app, "sub_down", &json!({"enabled": true})).await;
    assert_eq!(status, StatusCode::OK, "{up}");
    assert_eq!(up["enabled"], true);
    assert_eq!(up["disabled_reason"], Value::Null);
    assert_eq!(up["disabled_at"], Value::Null);
    assert_eq!(up["failing_since"], Value::Null, "its health starts afresh");
    assert_eq!(
        held_count(&mut conn, "sub_down").await.expect("countable"),
        0
    );
}

#[tokio::test]
async fn producers_cannot_post_into_the_operational_events_namespace() {
    let app = TestApp::spawn().await;
    let body = assert_error(
        app.post_event(&event("evt_1", "dispatch.subscription.disabled"))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("type"),
    )
    .await;
    assert!(body["message"].as_str().unwrap_or("").contains("dispatch."));
    assert_error(
        app.post_event(&event("dispatch_0193", "order.created"))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("id"),
    )
    .await;
    // Lookalikes are producers' own.
    for (id, ty) in [
        ("evt_2", "dispatcher.created"),
        ("evt_3", "order.dispatch.sent"),
    ] {
        let (status, body) = json_of(app.post_event(&event(id, ty)).await).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{ty}: {body}");
    }
    let (status, body) = json_of(
        app.post_json(
            "/events/batch",
            &json!({"events": [event("evt_4", "order.created"), event("evt_5", "dispatch.x")]}),
        )
        .await,
    )
    .await;
    assert!(status.is_success(), "{status}: {body}");
    assert_eq!(
        body["results"][1]["error"]["field"], "events[1].type",
        "{body}"
    );
}
