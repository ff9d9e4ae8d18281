//! Replays from the API: `POST /replays` (dry run, idempotency, validation), the background
//! work of `GET /replays/{id}`, and cancelling.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, json_of};
use crate::operate::{get_ok, history, ids, sql};

async fn replay_until_finished(app: &TestApp, id: &str) -> Value {
    for _ in 0..200 {
        let replay = get_ok(app, &format!("/replays/{id}")).await;
        if replay["state"] != "running" {
            return replay;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("replay {id} did not finish");
}

#[tokio::test]
async fn a_replay_is_counted_stored_worked_in_the_background_and_idempotent() {
    let app = TestApp::spawn().await;
    history(&app).await;
    sql(
        &app,
        "UPDATE deliveries SET status = 'failed' WHERE subscription_id = 'sub_all'",
    )
    .await;

    let (status, dry) = json_of(
        app.post_json(
            "/replays",
            &json!({"subscription_id": "sub_all", "dry_run": true}),
        )
        .await,
    )
    .await;
    assert_eq!((status, dry["matched"].as_i64()), (StatusCode::OK, Some(5)));
    assert_eq!(
        get_ok(&app, "/deliveries?status=failed").await["data"]
            .as_array()
            .map(Vec::len),
        Some(6),
        "a dry run changes nothing"
    );

    let request = app
        .client
        .post(app.url("/replays"))
        .header("Idempotency-Key", "replay-1");
    let (status, created) = json_of(
        request
            .json(&json!({"subscription_id": "sub_all"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    assert_eq!(created["matched"], 5);
    let id = created["id"].as_str().expect("an id").to_owned();
    let done = replay_until_finished(&app, &id).await;
    assert_eq!(
        (done["state"].as_str(), done["requeued"].as_i64()),
        (Some("completed"), Some(5))
    );
    assert!(done["finished_at"].is_string());
    let left = get_ok(&app, "/deliveries?status=failed").await;
    assert_eq!(
        ids(&left).len(),
        1,
        "only sub_orders' failure is left: {left}"
    );

    // The same key again: the same replay; under another body: refused.
    let again = app
        .client
        .post(app.url("/replays"))
        .header("Idempotency-Key", "replay-1");
    let (status, same) = json_of(
        again
            .json(&json!({"subscription_id": "sub_all"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, same["id"].as_str()),
        (StatusCode::ACCEPTED, Some(id.as_str()))
    );
    let other = app
        .client
        .post(app.url("/replays"))
        .header("Idempotency-Key", "replay-1");
    assert_error(
        other.json(&json!({"event_id": "e3"})).send().await.unwrap(),
        StatusCode::CONFLICT,
        "idempotency_key_reused",
        None,
    )
    .await;

    // Cancelling a finished replay leaves it as it is; unknown ids are 404.
    let (status, cancelled) = json_of(
        app.post_json(&format!("/replays/{id}/cancel"), &json!({}))
            .await,
    )
    .await;
    assert_eq!(
        (status, cancelled["state"].as_str()),
        (StatusCode::OK, Some("completed"))
    );
    assert_error(
        app.get("/replays/rpl_nope").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;

    for (body, field) in [
        (json!({}), "body"),
        (
            json!({"event_id": "e3", "subscription_id": "sub_all"}),
            "body",
        ),
        (
            json!({"since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z"}),
            "until",
        ),
        (
            json!({"event_id": "e3", "statuses": ["pending"]}),
            "statuses[0]",
        ),
        (json!({"event_id": "e3", "statuses": []}), "statuses"),
        (json!({"since": "last week"}), "since"),
        (json!({"event_id": "e3", "colour": "red"}), "colour"),
    ] {
        assert_error(
            app.post_json("/replays", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some(field),
        )
        .await;
    }
}
