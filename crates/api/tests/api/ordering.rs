//! Per-key ordering through the API: `ordering` and `on_exhausted` on subscriptions (create,
//! PATCH, GET, refusals), `ordering_key` on events (stored, shown, part of idempotency, refused
//! when malformed), `GET /subscriptions/{id}/blocked-keys` and `POST /deliveries/{id}/skip`.
//! Attempts are made through the store's own claim and outcome functions (no worker here).

use std::time::Duration;

use dispatch_domain::DeliveryStatus;
use dispatch_store::pool;
use dispatch_store::queries::deliveries::{self, Outcome};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, json_of};

fn keyed(id: &str, key: &str) -> Value {
    json!({"id": id, "type": "order.updated", "source": "shop", "data": {}, "ordering_key": key})
}

async fn ordered_subscription(app: &TestApp, id: &str, on_exhausted: &str) -> Value {
    let (status, body) = json_of(
        app.create_subscription(&json!({
            "id": id,
            "url": format!("https://hooks.example.com/{id}"),
            "event_types": ["order.*"],
            "ordering": "per_key",
            "on_exhausted": on_exhausted,
        }))
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

#[tokio::test]
async fn subscriptions_choose_their_ordering_and_bad_values_are_refused_by_name() {
    let app = TestApp::spawn().await;
    let created = ordered_subscription(&app, "sub_ordered", "block").await;
    assert_eq!(created["ordering"], "per_key");
    assert_eq!(created["on_exhausted"], "block");
    let plain = app.subscribe("sub_plain", &["order.*"]).await;
    assert_eq!(
        (plain["ordering"].as_str(), plain["on_exhausted"].as_str()),
        (Some("none"), Some("skip")),
        "the defaults"
    );
    for (field, value) in [
        ("ordering", json!("perkey")),
        ("ordering", json!(true)),
        ("on_exhausted", json!("retry")),
    ] {
        let mut body = json!({"url": "https://hooks.example.com/x", "event_types": ["a"]});
        body[field] = value.clone();
        let err = assert_error(
            app.create_subscription(&body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some(field),
        )
        .await;
        if value.is_string() {
            assert!(
                err["message"].as_str().unwrap_or("").contains("one of"),
                "the message lists the names: {err}"
            );
        }
    }
    let response = app
        .client
        .patch(app.url("/subscriptions/sub_plain"))
        .header("Content-Type", "application/merge-patch+json")
        .body(json!({"ordering": "per_key", "on_exhausted": "block"}).to_string())
        .send()
        .await
        .expect("PATCH is answered");
    let (status, patched) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        (
            patched["ordering"].as_str(),
            patched["on_exhausted"].as_str()
        ),
        (Some("per_key"), Some("block"))
    );
    let (_, fetched) = json_of(app.get("/subscriptions/sub_plain").await).await;
    assert_eq!(fetched["ordering"], "per_key");
}

#[tokio::test]
async fn an_event_s_ordering_key_is_stored_shown_and_part_of_its_content() {
    let app = TestApp::spawn().await;
    let (status, body) = json_of(app.post_event(&keyed("evt_1", "customer:42")).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["ordering_key"], "customer:42");
    assert_eq!(app.event("evt_1").await["ordering_key"], "customer:42");
    let (status, _) = json_of(app.post_event(&keyed("evt_1", "customer:42")).await).await;
    assert_eq!(status, StatusCode::OK, "the same event again");
    assert_error(
        app.post_event(&keyed("evt_1", "customer:43")).await,
        StatusCode::CONFLICT,
        "event_conflict",
        None,
    )
    .await;
    let (status, unkeyed) = json_of(
        app.post_event(&json!({"id": "evt_2", "type": "a", "source": "s", "data": {}}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(unkeyed["ordering_key"], Value::Null);
    for bad in [json!("a b"), json!(""), json!(7), json!("x".repeat(129))] {
        let mut body = keyed("evt_3", "k");
        body["ordering_key"] = bad;
        assert_error(
            app.post_event(&body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("ordering_key"),
        )
        .await;
    }
}

#[tokio::test]
async fn a_blocked_key_is_listed_and_skipping_its_failed_head_lets_the_next_one_go() {
    let app = TestApp::spawn().await;
    ordered_subscription(&app, "sub_o", "block").await;
    for id in ["evt_1", "evt_2", "evt_3"] {
        let (status, _) = json_of(app.post_event(&keyed(id, "K")).await).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let (status, page) = json_of(app.get("/subscriptions/sub_o/blocked-keys").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["data"], json!([]), "nothing has failed yet");

    // A worker's attempt at the head fails for good.
    let pool = app.db.pool();
    let mut conn = pool::connection(&pool).await.expect("a connection");
    let lease = Duration::from_secs(60);
    let head = deliveries::claim(&mut conn, "w1", 10, lease)
        .await
        .expect("claims");
    assert_eq!(head.len(), 1, "one delivery of the key at a time");
    let failed = Outcome {
        delivery_id: head[0].id,
        attempted: true,
        leased_until: head[0].leased_until,
        status: DeliveryStatus::Failed,
        next_attempt_at: None,
        status_code: Some(410),
        latency_ms: 3,
        error_code: Some("http_status".to_owned()),
        error: Some("HTTP 410".to_owned()),
        response_body: None,
    };
    deliveries::record_outcomes(&mut conn, "w1", &[failed])
        .await
        .expect("recorded");

    let (_, page) = json_of(app.get("/subscriptions/sub_o/blocked-keys?limit=1").await).await;
    let key = &page["data"][0];
    assert_eq!(
        (key["ordering_key"].as_str(), key["event_id"].as_str()),
        (Some("K"), Some("evt_1"))
    );
    assert_eq!(
        (key["status"].as_str(), key["waiting"].as_i64()),
        (Some("failed"), Some(2))
    );
    assert_eq!(key["last_error"], "HTTP 410");
    assert_eq!(page["next_cursor"], Value::Null);

    let head_id = head[0].id;
    let next = deliveries::claim(&mut conn, "w1", 10, lease)
        .await
        .expect("claims");
    assert!(next.is_empty(), "the key waits behind its failed head");
    let (_, second) = json_of(app.get("/deliveries?status=pending").await).await;
    let second_id = second["data"]
        .as_array()
        .and_then(|d| d.iter().map(|x| x["id"].as_i64()).min())
        .flatten()
        .expect("a pending delivery");
    assert_error(
        app.post_json(&format!("/deliveries/{second_id}/skip"), &json!({}))
            .await,
        StatusCode::CONFLICT,
        "delivery_not_blocking",
        None,
    )
    .await;
    let (status, skipped) = json_of(
        app.post_json(&format!("/deliveries/{head_id}/skip"), &json!({}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{skipped}");
    assert_eq!(skipped["status"], "failed", "the skipped one stays failed");
    let next = deliveries::claim(&mut conn, "w1", 10, lease)
        .await
        .expect("claims");
    assert_eq!(
        next.iter().map(|c| c.event_id.as_str()).collect::<Vec<_>>(),
        ["evt_2"]
    );
    assert_error(
        app.post_json("/deliveries/999999/skip", &json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
}

#[tokio::test]
async fn blocked_keys_of_an_unknown_subscription_or_with_a_bad_cursor_are_refused() {
    let app = TestApp::spawn().await;
    assert_error(
        app.get("/subscriptions/sub_nope/blocked-keys").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
    app.subscribe("sub_plain", &["a"]).await;
    for query in ["limit=0", "limit=251", "cursor=a%20b", "limit=1&limit=2"] {
        let response = app
            .get(&format!("/subscriptions/sub_plain/blocked-keys?{query}"))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}"
        );
    }
    let (status, page) = json_of(
        app.get("/subscriptions/sub_plain/blocked-keys?cursor=")
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "an empty cursor is the first page");
    assert_eq!(page["data"], json!([]));
}

#[tokio::test]
async fn batch_items_carry_their_ordering_key_and_a_bad_one_fails_only_its_item() {
    let app = TestApp::spawn().await;
    let (status, body) = json_of(
        app.post_json(
            "/events/batch",
            &json!({"events": [keyed("evt_b1", "K"), keyed("evt_b2", "not a key")]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.event("evt_b1").await["ordering_key"], "K");
    let second = body.to_string();
    assert!(
        second.contains("ordering_key"),
        "the bad item's error names the field: {body}"
    );
    assert_eq!(
        app.get("/events/evt_b2").await.status(),
        StatusCode::NOT_FOUND
    );
}
