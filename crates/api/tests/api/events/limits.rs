//! Body limits: over the limit is a 413 (declared or chunked), exactly the limit is accepted, other media types 415.

use super::*;

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
