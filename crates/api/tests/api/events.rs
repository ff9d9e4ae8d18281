//! `POST /events`, `GET /events/{id}`, `GET /events/{id}/attempts`.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, event, json_of, raw_chunked_post};

fn subscription_ids(event: &Value) -> BTreeSet<String> {
    event["deliveries"]
        .as_array()
        .expect("deliveries is an array")
        .iter()
        .map(|d| d["subscription_id"].as_str().expect("an id").to_owned())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

fn delivery<'a>(event: &'a Value, subscription_id: &str) -> &'a Value {
    event["deliveries"]
        .as_array()
        .expect("deliveries is an array")
        .iter()
        .find(|d| d["subscription_id"] == subscription_id)
        .unwrap_or_else(|| panic!("no delivery to {subscription_id} in {event}"))
}

// --- POST /events: success ----------------------------------------------------------------------

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

// --- POST /events: refusals ---------------------------------------------------------------------

#[tokio::test]
async fn a_body_that_is_not_json_is_a_400_malformed_json() {
    let app = TestApp::spawn().await;
    for bad in [
        "",
        "not json",
        "{\"id\": ",
        "{\"id\": \"evt_1\",}",
        "{} trailing",
    ] {
        assert_error(
            app.post_raw("/events", bad, Some("application/json")).await,
            StatusCode::BAD_REQUEST,
            "malformed_json",
            None,
        )
        .await;
    }
    assert_error(
        app.post_raw("/events", vec![0xff, 0xfe, b'{'], Some("application/json"))
            .await,
        StatusCode::BAD_REQUEST,
        "malformed_json",
        None,
    )
    .await;
}

#[tokio::test]
async fn a_json_body_that_is_not_an_object_is_a_422_naming_the_body() {
    let app = TestApp::spawn().await;
    for bad in [
        "[]",
        "[{\"id\": \"evt_1\"}]",
        "\"evt_1\"",
        "42",
        "null",
        "true",
    ] {
        assert_error(
            app.post_raw("/events", bad, Some("application/json")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("body"),
        )
        .await;
    }
}

#[tokio::test]
async fn each_missing_required_field_is_a_422_naming_it() {
    let app = TestApp::spawn().await;
    for field in ["id", "type", "source", "data"] {
        let mut body = event("evt_missing", "order.created");
        body.as_object_mut().expect("object").remove(field);
        assert_error(
            app.post_event(&body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some(field),
        )
        .await;

        // `null` counts as missing.
        let mut body = event("evt_missing", "order.created");
        body[field] = Value::Null;
        assert_error(
            app.post_event(&body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some(field),
        )
        .await;
    }
    assert_error(
        app.post_event(&json!({})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("id"),
    )
    .await;
    // Nothing was stored along the way.
    assert_error(
        app.get("/events/evt_missing").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
}

#[tokio::test]
async fn an_invalid_id_type_or_source_is_a_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let long_id = "e".repeat(129);
    let long_type = "t".repeat(129);
    let long_source = "s".repeat(256);
    let cases: Vec<(&str, Value)> = vec![
        ("id", json!("")),
        ("id", json!("evt 1")),
        ("id", json!("evt/1")),
        ("id", json!("évt")),
        ("id", json!(long_id)),
        ("id", json!(42)),
        ("id", json!({"nested": true})),
        ("type", json!("")),
        ("type", json!("order..created")),
        ("type", json!(".order")),
        ("type", json!("order.")),
        ("type", json!("order.*")),
        ("type", json!("*")),
        ("type", json!("order created")),
        ("type", json!(long_type)),
        ("type", json!(["order.created"])),
        ("source", json!("")),
        ("source", json!("line\nbreak")),
        ("source", json!("tab\there")),
        ("source", json!(long_source)),
        ("source", json!(7)),
    ];
    for (field, value) in cases {
        let mut body = event("evt_invalid", "order.created");
        body[field] = value.clone();
        let error = assert_error(
            app.post_event(&body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some(field),
        )
        .await;
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.len() > field.len()),
            "{field} = {value}: the message says what is wrong: {error}"
        );
    }
}

#[tokio::test]
async fn the_longest_valid_id_type_and_source_are_accepted() {
    let app = TestApp::spawn().await;
    let id = format!("evt:{}", "a.b-c_".repeat(21))
        .chars()
        .take(128)
        .collect::<String>();
    let body = json!({
        "id": id,
        "type": format!("ab{}", ".b".repeat(63)),
        "source": "é".repeat(255),
        "data": {},
    });
    let (status, answered) = json_of(app.post_event(&body).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answered}");
    assert_eq!(answered["id"], body["id"]);
    assert_eq!(answered["source"], body["source"]);
}

#[tokio::test]
async fn an_unknown_field_is_a_422_naming_it() {
    let app = TestApp::spawn().await;
    let mut body = event("evt_extra", "order.created");
    body["priority"] = json!("high");
    assert_error(
        app.post_event(&body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("priority"),
    )
    .await;
    // Field names are case-sensitive: `Type` is not `type`.
    let mut body = event("evt_extra", "order.created");
    body["Type"] = json!("order.created");
    assert_error(
        app.post_event(&body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("Type"),
    )
    .await;
    assert_error(
        app.get("/events/evt_extra").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
}

/// A valid event body of exactly `len` bytes.
fn event_of_exactly(id: &str, len: usize) -> String {
    let skeleton =
        json!({"id": id, "type": "order.created", "source": "s", "data": ""}).to_string();
    assert!(skeleton.len() <= len, "{len} is too small for an event");
    let body =
        json!({"id": id, "type": "order.created", "source": "s", "data": "x".repeat(len - skeleton.len())})
            .to_string();
    assert_eq!(body.len(), len);
    body
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_whether_its_length_is_declared_or_it_is_chunked() {
    const LIMIT: usize = 1024;
    let app = TestApp::spawn_with(|s| s.max_body_bytes = LIMIT).await;
    app.subscribe("sub_all", &["*"]).await;

    // Declared with Content-Length.
    assert_error(
        app.post_raw(
            "/events",
            event_of_exactly("evt_big", LIMIT + 1),
            Some("application/json"),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        None,
    )
    .await;
    assert_error(
        app.post_raw(
            "/events",
            event_of_exactly("evt_big", 64 * 1024),
            Some("application/json"),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        None,
    )
    .await;

    // Chunked: no length is declared, so the limit is enforced while reading.
    let big = event_of_exactly("evt_big_chunked", LIMIT + 1);
    let chunks: Vec<&[u8]> = big.as_bytes().chunks(300).collect();
    let (status, body) = raw_chunked_post(&app.base, "/events", "application/json", &chunks).await;
    assert_eq!(status, 413, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    assert_eq!(body["code"], "payload_too_large");

    // Nothing was stored.
    for id in ["evt_big", "evt_big_chunked"] {
        assert_error(
            app.get(&format!("/events/{id}")).await,
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        )
        .await;
    }
}

#[tokio::test]
async fn a_body_of_exactly_the_limit_is_accepted_whether_declared_or_chunked() {
    const LIMIT: usize = 1024;
    let app = TestApp::spawn_with(|s| s.max_body_bytes = LIMIT).await;

    let response = app
        .post_raw(
            "/events",
            event_of_exactly("evt_fits", LIMIT),
            Some("application/json"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let body = event_of_exactly("evt_fits_chunked", LIMIT);
    let chunks: Vec<&[u8]> = body.as_bytes().chunks(100).collect();
    let (status, answer) =
        raw_chunked_post(&app.base, "/events", "application/json", &chunks).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        app.event("evt_fits_chunked").await["id"],
        "evt_fits_chunked"
    );
}

#[tokio::test]
async fn a_body_declared_as_another_media_type_is_a_415() {
    let app = TestApp::spawn().await;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
        "text/json-ish",
    ] {
        let body = event("evt_media", "order.created").to_string();
        assert_error(
            app.post_raw("/events", body, Some(content_type)).await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            None,
        )
        .await;
    }
    assert_error(
        app.get("/events/evt_media").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
}

// --- GET /events/{id} ---------------------------------------------------------------------------

#[tokio::test]
async fn an_unknown_event_is_a_404_not_found() {
    let app = TestApp::spawn().await;
    let body = assert_error(
        app.get("/events/evt_nope").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("evt_nope"))
    );
    // An id the API would never accept is simply not found, not an error of another kind.
    assert_error(
        app.get("/events/not%20an%20id").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
}

#[tokio::test]
async fn deleting_a_subscription_cancels_its_pending_deliveries_which_stay_visible_on_the_event() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_keep", &["order.*"]).await;
    app.subscribe("sub_drop", &["*"]).await;
    let (status, _) = json_of(app.post_event(&event("evt_x", "order.created")).await).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    app.unsubscribe("sub_drop").await;
    let stored = app.event("evt_x").await;
    assert_eq!(stored["deliveries"].as_array().map(Vec::len), Some(2));
    let dropped = delivery(&stored, "sub_drop");
    assert_eq!(dropped["status"], "cancelled");
    assert!(
        dropped["next_attempt_at"].is_null(),
        "a cancelled delivery is never attempted: {dropped}"
    );
    assert_eq!(delivery(&stored, "sub_keep")["status"], "pending");
    assert_eq!(
        stored["status"], "pending",
        "one delivery is still unfinished"
    );

    app.unsubscribe("sub_keep").await;
    let stored = app.event("evt_x").await;
    assert_eq!(delivery(&stored, "sub_keep")["status"], "cancelled");
    assert_eq!(
        stored["status"], "cancelled",
        "every delivery was cancelled"
    );

    // Events received after the deletion do not go to the deleted subscriptions.
    let (status, later) = json_of(app.post_event(&event("evt_y", "order.created")).await).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(later["deliveries"], json!([]));
}

// --- GET /events/{id}/attempts ------------------------------------------------------------------

#[tokio::test]
async fn an_events_attempts_are_listed_oldest_first_across_its_deliveries() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_a", &["*"]).await;
    app.subscribe("sub_b", &["order.*"]).await;
    assert_eq!(
        app.post_event(&event("evt_att", "order.created"))
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

    let (status, empty) = json_of(app.get("/events/evt_att/attempts").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(empty, json!({"data": [], "next_cursor": null}));

    app.seed_attempt("evt_att", "sub_b", 1, Some(500), Some("HTTP 500"))
        .await;
    app.seed_attempt("evt_att", "sub_a", 1, None, Some("connection refused"))
        .await;
    app.seed_attempt("evt_other", "sub_a", 1, Some(200), None)
        .await;
    app.seed_attempt("evt_att", "sub_b", 2, Some(200), None)
        .await;

    let (status, body) = json_of(app.get("/events/evt_att/attempts").await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let data = body["data"].as_array().expect("data is an array");
    let order: Vec<(String, i64)> = data
        .iter()
        .map(|a| {
            (
                a["subscription_id"].as_str().expect("id").to_owned(),
                a["attempt"].as_i64().expect("attempt"),
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![
            ("sub_b".to_owned(), 1),
            ("sub_a".to_owned(), 1),
            ("sub_b".to_owned(), 2)
        ],
        "oldest first, and only this event's: {body}"
    );
    assert_eq!(data[0]["status_code"], 500);
    assert_eq!(data[0]["latency_ms"], 10);
    assert_eq!(data[0]["error_code"], "http_status");
    assert_eq!(data[0]["error"], "HTTP 500");
    assert_eq!(data[0]["response_body"], "answered 500");
    assert!(data[0]["created_at"].is_string());
    assert!(data[1]["status_code"].is_null());
    assert!(data[1]["response_body"].is_null());
    assert_eq!(data[1]["error"], "connection refused");
    assert_eq!(data[2]["status_code"], 200);
    assert!(data[2]["error"].is_null());
    let created: Vec<DateTime<Utc>> = data
        .iter()
        .map(|a| {
            a["created_at"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .expect("an RFC 3339 timestamp")
        })
        .collect();
    assert!(
        created.windows(2).all(|w| w[0] <= w[1]),
        "created_at ascends: {created:?}"
    );
}

#[tokio::test]
async fn attempts_of_an_unknown_event_are_a_404_not_found() {
    let app = TestApp::spawn().await;
    assert_error(
        app.get("/events/evt_nope/attempts").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
}

// --- Concurrency --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_posted_concurrently_is_accepted_once_and_stored_once() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_a", &["*"]).await;
    app.subscribe("sub_b", &["order.*"]).await;
    let body = event("evt_race", "order.created");

    let responses = futures_util::future::join_all((0..12).map(|_| app.post_event(&body))).await;
    let mut statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    let mut expected = vec![200; 11];
    expected.insert(0, 202);
    expected.sort_unstable();
    assert_eq!(
        statuses, expected,
        "exactly one acceptance, the rest duplicates"
    );

    let stored = app.event("evt_race").await;
    assert_eq!(subscription_ids(&stored), set(&["sub_a", "sub_b"]));
    assert_eq!(stored["deliveries"].as_array().map(Vec::len), Some(2));
}

// --- Known bugs (see the report): each asserts the intended behaviour --------------------------

#[tokio::test]
async fn an_event_whose_data_contains_a_nul_character_is_a_422_naming_data() {
    let app = TestApp::spawn().await;
    for data in [
        json!({"s": "a\u{0}b"}),
        json!({"k\u{0}": 1}),
        json!(["\u{0}"]),
    ] {
        let body = json!({"id": "evt_nul", "type": "t", "source": "s", "data": data});
        assert_error(
            app.post_event(&body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("data"),
        )
        .await;
    }
}

#[tokio::test]
async fn an_id_with_a_nul_character_in_the_path_is_a_404() {
    let app = TestApp::spawn().await;
    for path in [
        "/events/a%00b",
        "/events/a%00b/attempts",
        "/subscriptions/a%00b",
    ] {
        assert_error(
            app.get(path).await,
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        )
        .await;
    }
    assert_error(
        app.delete("/subscriptions/a%00b").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
}

#[tokio::test]
async fn a_number_too_large_to_read_back_is_a_422_and_a_large_one_is_stored_exactly() {
    let app = TestApp::spawn().await;
    let body = r#"{"id":"evt_max","type":"t","source":"s","data":{"x":1.7976931348623157e308}}"#;
    let response = app
        .post_raw("/events", body, Some("application/json"))
        .await;
    let (status, error) = json_of(response).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["field"], "data");
    assert_eq!(
        app.get("/events/evt_max").await.status(),
        StatusCode::NOT_FOUND
    );

    let body = r#"{"id":"evt_big","type":"t","source":"s","data":{"x":1e300}}"#;
    let response = app
        .post_raw("/events", body, Some("application/json"))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(app.event("evt_big").await["data"]["x"], json!(1e300));
}

// --- POST /events: group commit -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_events_stored_in_groups_each_get_their_own_answer() {
    let app = TestApp::spawn_with(|s| {
        // One committer: whatever arrives while it stores a group waits for the next one.
        s.ingest_groups.committers = 1;
        s.ingest_groups.max_events = 8;
    })
    .await;
    app.subscribe("sub_all", &["*"]).await;

    let mut bodies = Vec::new();
    for n in 0..20 {
        // Every id twice with the same content: one 202 and one 200, whichever comes first.
        bodies.push(event(&format!("evt_{n}"), "order.created"));
        bodies.push(event(&format!("evt_{n}"), "order.created"));
    }
    for n in 0..5 {
        // One id five times with different content: one 202, four 409s.
        let mut body = event("evt_x", "order.created");
        body["data"] = json!({ "variant": n });
        bodies.push(body);
    }
    let requests = bodies.len();
    let answers = futures_util::future::join_all(bodies.iter().map(|body| async {
        let (status, json) = json_of(app.post_event(body).await).await;
        (body["id"].as_str().expect("an id").to_owned(), status, json)
    }))
    .await;

    let mut per_id: std::collections::BTreeMap<String, Vec<StatusCode>> = Default::default();
    for (id, status, json) in &answers {
        per_id.entry(id.clone()).or_default().push(*status);
        match *status {
            StatusCode::ACCEPTED | StatusCode::OK => {
                assert_eq!(json["id"], id.as_str(), "{json}");
                assert_eq!(subscription_ids(json), set(&["sub_all"]), "{json}");
                assert_eq!(delivery(json, "sub_all")["attempts"], 0);
            }
            StatusCode::CONFLICT => assert_eq!(json["code"], "event_conflict", "{json}"),
            other => panic!("{id}: unexpected {other}: {json}"),
        }
    }
    for (id, mut statuses) in per_id {
        statuses.sort();
        let expected = if id == "evt_x" {
            vec![
                StatusCode::ACCEPTED,
                StatusCode::CONFLICT,
                StatusCode::CONFLICT,
                StatusCode::CONFLICT,
                StatusCode::CONFLICT,
            ]
        } else {
            vec![StatusCode::OK, StatusCode::ACCEPTED]
        };
        assert_eq!(statuses, expected, "{id}");
        // Stored once, with exactly one delivery.
        let stored = app.event(&id).await;
        assert_eq!(
            stored["deliveries"].as_array().map(Vec::len),
            Some(1),
            "{stored}"
        );
    }

    // Every request went through exactly one group.
    let metrics = app
        .get("/metrics")
        .await
        .text()
        .await
        .expect("metrics text");
    let sum = metrics
        .lines()
        .find_map(|l| l.strip_prefix("dispatch_ingest_group_size_sum "))
        .unwrap_or_else(|| panic!("no group size sum in\n{metrics}"));
    assert_eq!(sum.trim().parse::<f64>().ok(), Some(requests as f64));
}
