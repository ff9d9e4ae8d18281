//! `POST /events/batch`: one result per event in order, the seed's idempotency per event, and
//! the batch-level limits.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, event, json_of};

async fn post_batch(app: &TestApp, events: Vec<Value>) -> (StatusCode, Value) {
    json_of(
        app.post_json("/events/batch", &json!({ "events": events }))
            .await,
    )
    .await
}

fn statuses(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["status"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[tokio::test]
async fn a_batch_answers_one_result_per_event_in_order() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_orders", &["order.*"]).await;
    app.subscribe("sub_all", &["*"]).await;
    // Already stored before the batch: the same content is a replay, other content a conflict.
    assert_eq!(
        app.post_event(&event("evt_old", "order.created"))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.post_event(&event("evt_other", "order.created"))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    let mut changed = event("evt_other", "order.created");
    changed["data"] = json!({"amount": 1});

    let (status, body) = post_batch(
        &app,
        vec![
            event("evt_1", "order.created"),
            event("evt_2", "user.signed_up"),
            json!({"id": "evt_bad", "type": "no spaces allowed", "source": "s", "data": {}}),
            event("evt_old", "order.created"),
            changed,
            // The same id twice in one batch: the first counts, the second is a replay of it.
            event("evt_1", "order.created"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        statuses(&body),
        [
            "accepted", "accepted", "invalid", "replayed", "conflict", "replayed"
        ],
        "{body}"
    );
    let results = &body["results"];
    assert_eq!(results[0]["id"], "evt_1");
    assert_eq!(results[0]["deliveries"], 2, "order.* and *: {body}");
    assert_eq!(results[1]["deliveries"], 1, "only *: {body}");
    assert_eq!(results[2]["error"]["code"], "invalid_field");
    assert_eq!(results[2]["error"]["field"], "events[2].type");
    assert_eq!(results[4]["error"]["code"], "event_conflict");

    // Stored as if posted one by one.
    let (status, stored) = json_of(app.get("/events/evt_1").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        stored["deliveries"].as_array().map(Vec::len),
        Some(2),
        "{stored}"
    );
    assert_eq!(
        app.get("/events/evt_bad").await.status(),
        StatusCode::NOT_FOUND
    );
    let (_, other) = json_of(app.get("/events/evt_other").await).await;
    assert_eq!(
        other["data"],
        event("evt_other", "order.created")["data"],
        "a conflict changes nothing"
    );

    // Sending the same batch again creates nothing new.
    let (_, again) = post_batch(
        &app,
        vec![
            event("evt_1", "order.created"),
            event("evt_2", "user.signed_up"),
        ],
    )
    .await;
    assert_eq!(statuses(&again), ["replayed", "replayed"]);
    let (_, stored) = json_of(app.get("/events/evt_1").await).await;
    assert_eq!(
        stored["deliveries"].as_array().map(Vec::len),
        Some(2),
        "no second set of deliveries"
    );
}

#[tokio::test]
async fn a_batch_must_hold_one_to_a_thousand_events_in_an_object() {
    let app = TestApp::spawn().await;
    assert_error(
        app.post_json("/events/batch", &json!({"events": []})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("events"),
    )
    .await;
    let many: Vec<Value> = (0..1001).map(|i| event(&format!("e{i}"), "a.b")).collect();
    let mut limits = TestApp::spawn_with(|s| s.max_batch_body_bytes = 4 << 20).await;
    let body = assert_error(
        limits
            .post_json("/events/batch", &json!({ "events": many }))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("events"),
    )
    .await;
    assert!(
        body["message"].as_str().unwrap_or("").contains("1 to 1000"),
        "{body}"
    );
    limits = app;
    for (payload, field) in [
        (json!([event("e1", "a.b")]), "body"),
        (json!({"events": {"id": "e1"}}), "events"),
        (json!({"events": [event("e1", "a.b")], "extra": 1}), "extra"),
        (json!({}), "events"),
    ] {
        assert_error(
            limits.post_json("/events/batch", &payload).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some(field),
        )
        .await;
    }
}

#[tokio::test]
async fn a_batch_over_its_size_limit_is_413_and_stores_nothing() {
    let app = TestApp::spawn_with(|s| s.max_batch_body_bytes = 2048).await;
    let events: Vec<Value> = (0..40).map(|i| event(&format!("evt_{i}"), "a.b")).collect();
    assert_error(
        app.post_json("/events/batch", &json!({ "events": events }))
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        None,
    )
    .await;
    assert_eq!(
        app.get("/events/evt_0").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_id_batch_is_reserved_for_the_route() {
    let app = TestApp::spawn().await;
    assert_error(
        app.post_event(&event("batch", "a.b")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("id"),
    )
    .await;
    assert_eq!(
        app.get("/events/batch").await.status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn items_that_are_not_events_are_answered_invalid_one_by_one_as_the_document_says() {
    let app = TestApp::spawn().await;
    let mut unknown_field = event("evt_extra", "a.b");
    unknown_field["x-unknown"] = json!(42);
    let (status, body) = post_batch(
        &app,
        vec![
            unknown_field,
            json!("not an object"),
            Value::Null,
            event("evt_good", "a.b"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        statuses(&body),
        ["invalid", "invalid", "invalid", "accepted"],
        "{body}"
    );
    assert_eq!(body["results"][0]["error"]["field"], "events[0].x-unknown");
    assert_eq!(body["results"][1]["error"]["field"], "events[1].body");
    assert_eq!(app.get("/events/evt_good").await.status(), StatusCode::OK);
    // So the document may not forbid anything in an item: a schema-invalid item is answered
    // 200 with its own `invalid` result, never by refusing the batch (schemathesis checks that
    // schema-invalid requests are refused).
    let document = dispatch_api::openapi::document();
    let document = serde_json::to_value(document).expect("serialises");
    let items =
        &document["components"]["schemas"]["NewBatchRequest"]["properties"]["events"]["items"];
    let constraints: Vec<&String> = items
        .as_object()
        .expect("items is a schema object")
        .keys()
        .filter(|k| !matches!(k.as_str(), "description" | "examples"))
        .collect();
    assert!(constraints.is_empty(), "items allow any JSON: {items}");
}
