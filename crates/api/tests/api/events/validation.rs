//! Refused events: malformed JSON (400), the wrong shape, missing, invalid or unknown fields (422).

use super::*;

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
