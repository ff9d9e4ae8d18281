//! Accepting events: new, repeated (200), conflicting (409), matching nothing, any JSON data, JSON media types.

use super::*;

#[tokio::test]
async fn a_new_event_is_accepted_as_pending_with_one_pending_delivery_per_matching_subscription() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_prefix", &["order.*"]).await;
    app.subscribe("sub_exact", &["order.created"]).await;
    app.subscribe("sub_all", &["*"]).await;
    app.subscribe("sub_two_patterns", &["invoice.*", "order.created"])
        .await;
    app.subscribe("sub_other", &["invoice.*"]).await;
    app.subscribe("sub_parent_only", &["order"]).await;
    app.subscribe("sub_deleted", &["order.*"]).await;
    app.unsubscribe("sub_deleted").await;

    let sent = event("evt_1", "order.created");
    let (status, body) = json_of(app.post_event(&sent).await).await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["id"], "evt_1");
    assert_eq!(body["type"], "order.created");
    assert_eq!(body["source"], "billing-service");
    assert_eq!(body["data"], sent["data"]);
    assert_eq!(body["status"], "pending");
    assert!(body["received_at"].is_string(), "{body}");
    assert_eq!(
        subscription_ids(&body),
        set(&["sub_prefix", "sub_exact", "sub_all", "sub_two_patterns"])
    );
    for d in body["deliveries"].as_array().expect("array") {
        assert_eq!(d["status"], "pending", "{d}");
        assert_eq!(d["attempts"], 0, "{d}");
        assert!(
            d["next_attempt_at"].is_string(),
            "a pending delivery is due: {d}"
        );
        assert!(d["last_error"].is_null(), "{d}");
        assert!(d["updated_at"].is_string(), "{d}");
    }
    assert_eq!(body["deliveries"].as_array().map(Vec::len), Some(4));

    // What was answered is what is stored.
    assert_eq!(app.event("evt_1").await, body);
}

#[tokio::test]
async fn resending_the_same_event_with_reordered_keys_answers_200_and_creates_no_deliveries() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_a", &["order.*"]).await;
    app.subscribe("sub_b", &["*"]).await;
    let first = json!({
        "id": "evt_dup",
        "type": "order.created",
        "source": "shop",
        "data": {"a": 1, "nested": {"x": [1, 2], "y": null}, "z": "last"},
    });
    let (status, created) = json_of(app.post_event(&first).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");

    // A subscription created after the first receipt must not get a delivery of the repeat.
    app.subscribe("sub_late", &["*"]).await;
    let repeat = json!({
        "data": {"z": "last", "nested": {"y": null, "x": [1, 2]}, "a": 1},
        "source": "shop",
        "type": "order.created",
        "id": "evt_dup",
    });
    let (status, again) = json_of(app.post_event(&repeat).await).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a repeat is not a new acceptance: {again}"
    );
    assert_eq!(again, created, "the repeat answers the stored event");

    let stored = app.event("evt_dup").await;
    assert_eq!(subscription_ids(&stored), set(&["sub_a", "sub_b"]));
    assert_eq!(stored["deliveries"].as_array().map(Vec::len), Some(2));
    assert_eq!(stored["data"], first["data"]);
}

#[tokio::test]
async fn resending_an_event_id_with_different_content_is_a_409_conflict_that_changes_nothing() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_a", &["*"]).await;
    let original = event("evt_c", "order.created");
    assert_eq!(
        app.post_event(&original).await.status(),
        StatusCode::ACCEPTED
    );

    let mut other_data = original.clone();
    other_data["data"]["amount"] = json!(43);
    let mut other_type = original.clone();
    other_type["type"] = json!("order.updated");
    let mut other_source = original.clone();
    other_source["source"] = json!("another-service");
    // Array order is content, unlike object key order.
    let mut reordered_array = original.clone();
    reordered_array["data"]["lines"] = json!([{"sku": "b"}, {"sku": "a"}]);
    for changed in [other_data, other_type, other_source, reordered_array] {
        let body = assert_error(
            app.post_event(&changed).await,
            StatusCode::CONFLICT,
            "event_conflict",
            None,
        )
        .await;
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("evt_c")),
            "the message names the event: {body}"
        );
    }

    let stored = app.event("evt_c").await;
    assert_eq!(stored["type"], original["type"]);
    assert_eq!(stored["source"], original["source"]);
    assert_eq!(stored["data"], original["data"]);
    assert_eq!(stored["deliveries"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn an_event_matching_no_subscription_is_accepted_as_delivered_with_no_deliveries() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_invoices", &["invoice.*"]).await;

    let (status, body) = json_of(app.post_event(&event("evt_lonely", "order.created")).await).await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "delivered");
    assert_eq!(body["deliveries"], json!([]));
    let stored = app.event("evt_lonely").await;
    assert_eq!(stored["status"], "delivered");
    assert_eq!(stored["deliveries"], json!([]));
}

#[tokio::test]
async fn any_json_value_is_accepted_as_data_and_stored_as_sent() {
    let app = TestApp::spawn().await;
    for (i, data) in [
        json!(5),
        json!("text"),
        json!([1, "two", {"three": 3}]),
        json!(false),
        json!({"unicode": "café ☕", "big": 12345678901234i64, "float": 1.5}),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("evt_data_{i}");
        let body = json!({"id": id, "type": "t", "source": "s", "data": data});
        let (status, answered) = json_of(app.post_event(&body).await).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answered}");
        assert_eq!(app.event(&id).await["data"], data);
    }
}

#[tokio::test]
async fn json_media_types_with_parameters_or_suffixes_and_a_missing_content_type_are_accepted() {
    let app = TestApp::spawn().await;
    for (i, content_type) in [
        Some("application/json; charset=utf-8"),
        Some("Application/JSON"),
        Some("application/cloudevents+json"),
        None,
    ]
    .into_iter()
    .enumerate()
    {
        let body = event(&format!("evt_ct_{i}"), "order.created").to_string();
        let response = app.post_raw("/events", body, content_type).await;
        assert_eq!(
            response.status(),
            StatusCode::ACCEPTED,
            "Content-Type {content_type:?}"
        );
    }
}
