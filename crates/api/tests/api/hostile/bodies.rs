//! Hostile bodies: repeated keys, bytes that are not JSON or UTF-8, deep nesting, an over-long URL.

use super::*;

const DUPLICATE: (StatusCode, &str) = (StatusCode::BAD_REQUEST, "duplicate_key");

#[tokio::test]
async fn a_key_repeated_anywhere_in_a_body_is_a_400_naming_its_path() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            "/events",
            r#"{"id": "evt_d1", "id": "evt_d2", "type": "a.b", "source": "s", "data": {}}"#
                .to_owned(),
            "id",
        ),
        (
            "/events",
            event_text("evt_d3", r#"{"customer": {"id": 1, "name": "x", "id": 2}}"#),
            "data.customer.id",
        ),
        (
            "/events",
            event_text(
                "evt_d4",
                r#"{"lines": [{"sku": "a"}, {"sku": "b", "sku": "b"}]}"#,
            ),
            "data.lines[1].sku",
        ),
        (
            "/events",
            event_text("evt_d5", r#"{"a": 1, "\u0061": 1}"#),
            "data.a",
        ),
        (
            "/events/batch",
            format!(
                r#"{{"events": [{}, {}]}}"#,
                event_text("evt_b1", "{}"),
                event_text("evt_b2", r#"{"x": 1, "x": 2}"#)
            ),
            "events[1].data.x",
        ),
        (
            "/subscriptions",
            r#"{"url": "https://example.com/a", "event_types": ["*"],
                "rate_limit": {"burst": 1, "burst": 100}}"#
                .to_owned(),
            "rate_limit.burst",
        ),
    ];
    for (route, body, path) in cases {
        let (status, code) = DUPLICATE;
        assert_refused(&app, route, body, (status, code, Some(path)), path).await;
    }
    for id in ["evt_d1", "evt_d2", "evt_d3", "evt_d4", "evt_d5", "evt_b1"] {
        assert_not_stored(&app, id).await;
    }
    let (_, list) = json_of(app.get("/subscriptions").await).await;
    assert_eq!(list["data"], json!([]), "{list}");
}

const MALFORMED: (StatusCode, &str, Option<&str>) =
    (StatusCode::BAD_REQUEST, "malformed_json", None);

#[tokio::test]
async fn trailing_data_bytes_that_are_not_utf8_lone_surrogates_and_a_bom_are_400s() {
    let app = TestApp::spawn().await;
    let valid = event_text("evt_h", r#"{"a": "b"}"#);
    let head = br#"{"id": "evt_h", "type": "a.b", "source": "s", "data": "#.as_slice();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (format!("{valid} x").into_bytes(), "trailing characters"),
        (
            format!("{valid}{valid}").into_bytes(),
            "trailing characters",
        ),
        (format!("{valid}\n{{}}").into_bytes(), "trailing characters"),
        (format!("{valid}\0").into_bytes(), "trailing characters"),
        (
            event_text("evt_h", "\"\u{1}\"").into_bytes(),
            "control character",
        ),
        (
            [head, b"\"\xff\xfe\"}"].concat(),
            "invalid unicode code point",
        ),
        (
            [head, b"{\"k\xc3\": 1}}"].concat(),
            "invalid unicode code point",
        ),
        (
            event_text("evt_h", r#""\ud83d""#).into_bytes(),
            "hex escape",
        ),
        (
            event_text("evt_h", r#""\udc00""#).into_bytes(),
            "hex escape",
        ),
        (
            [b"\xEF\xBB\xBF".as_slice(), valid.as_bytes()].concat(),
            "byte order mark",
        ),
    ];
    for (body, says) in cases {
        assert_refused(&app, "/events", body, MALFORMED, says).await;
    }
    assert_not_stored(&app, "evt_h").await;
    // Whitespace after the value is not trailing data.
    let response = app
        .post_raw(
            "/events",
            format!("{valid} \r\n\t"),
            Some("application/json"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn data_nested_past_the_limit_is_a_422_and_far_past_it_a_400_never_a_crash() {
    let app = TestApp::spawn().await;
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let response = app
        .post_raw(
            "/events",
            event_text("evt_n64", &nested(64)),
            Some("application/json"),
        )
        .await;
    assert_eq!(
        response.status(),
        StatusCode::ACCEPTED,
        "64 levels are accepted"
    );
    let too_deep = (
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("data"),
    );
    assert_refused(
        &app,
        "/events",
        event_text("evt_n65", &nested(65)),
        too_deep,
        "64",
    )
    .await;
    let objects = format!("{}1{}", r#"{"a":"#.repeat(40_000), "}".repeat(40_000));
    for data in [nested(200), nested(100_000), objects] {
        let body = event_text("evt_deep", &data);
        assert_refused(&app, "/events", body, MALFORMED, "recursion limit").await;
    }
    assert_not_stored(&app, "evt_deep").await;
}

#[tokio::test]
async fn a_destination_url_over_2048_characters_is_a_422_naming_url() {
    let app = TestApp::spawn().await;
    let base = "https://example.com/";
    let longest = format!("{base}{}", "a".repeat(2048 - base.len()));
    let (status, body) = json_of(
        app.create_subscription(&json!({"url": longest, "event_types": ["*"]}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let error = assert_error(
        app.create_subscription(&json!({"url": format!("{longest}a"), "event_types": ["*"]}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("url"),
    )
    .await;
    assert!(error["message"].to_string().contains("2048"), "{error}");
}
