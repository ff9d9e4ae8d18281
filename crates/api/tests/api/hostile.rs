//! Hostile input: bodies that are almost JSON, repeated keys, deep nesting, oversized headers and
//! bytes that are not UTF-8 all get a clear 4xx, never a 500 or a hang, and store nothing.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TEST_API_KEY, TestApp, assert_error, event, json_of};

mod bodies;
mod heads;

/// The JSON text of a valid event `id`, with `data` spelled as given.
fn event_text(id: &str, data: &str) -> String {
    format!(
        r#"{{"id": "{id}", "type": "order.created", "source": "billing-service", "data": {data}}}"#
    )
}

async fn assert_not_stored(app: &TestApp, id: &str) {
    let response = app.get(&format!("/events/{id}")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "{id} was stored");
}

/// POSTs `body` as JSON to `path` and expects the error `status`/`code`/`field` with a message
/// containing `says`.
async fn assert_refused(
    app: &TestApp,
    path: &str,
    body: impl Into<Vec<u8>>,
    (status, code, field): (StatusCode, &str, Option<&str>),
    says: &str,
) {
    let body = body.into();
    let shown = String::from_utf8_lossy(&body)
        .chars()
        .take(200)
        .collect::<String>();
    let response = app.post_raw(path, body, Some("application/json")).await;
    let error = assert_error(response, status, code, field).await;
    assert!(
        error["message"].as_str().is_some_and(|m| m.contains(says)),
        "{shown:?}: the message should say {says:?}: {error}"
    );
}

/// Sends `head` (and nothing else) on a fresh connection; returns the response's status line,
/// or `None` when the server closed the connection without one.
async fn raw_exchange(base: &str, head: &[u8]) -> Option<String> {
    let authority = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(authority).await.expect("connect");
    // The server may answer and close before reading everything: that is fine.
    let _ = stream.write_all(head).await;
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw)).await;
    assert!(
        read.is_ok(),
        "the server neither answered nor closed: it hangs"
    );
    let text = String::from_utf8_lossy(&raw).into_owned();
    text.lines()
        .next()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
}

// --- Found by tests/api/fuzz.rs, kept with their exact inputs --------------------------------

#[tokio::test]
async fn numbers_in_data_are_stored_and_read_back_to_the_last_digit() {
    // serde_json's default float parser was one ulp off for these: 373783.61677400564 came back
    // as 373783.6167740056 (fixed by its `float_roundtrip` feature).
    let app = TestApp::spawn().await;
    let data = r#"{"\n": 373783.61677400564, "uz": 13706214030774456911, "x": 1.1090191108041233e-114, "y": -7.19627952440785e-309}"#;
    let (status, body) = json_of(
        app.post_raw(
            "/events",
            event_text("evt_float", data),
            Some("application/json"),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let expected: serde_json::Value = serde_json::from_str(data).expect("JSON");
    assert_eq!(body["data"], expected);
    let stored = app.event("evt_float").await;
    assert_eq!(stored["data"], expected);
    assert_eq!(
        stored["data"].to_string(),
        r#"{"\n":373783.61677400564,"uz":13706214030774456911,"x":1.1090191108041233e-114,"y":-7.19627952440785e-309}"#
    );
}

#[tokio::test]
async fn the_ids_dot_and_dot_dot_are_refused_because_they_could_never_be_read() {
    // An event "." was accepted, then `GET /events/.` (which every client sends as `/events/`)
    // could not find it.
    let app = TestApp::spawn().await;
    for id in [".", ".."] {
        assert_error(
            app.post_event(&event(id, "a.b")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("id"),
        )
        .await;
        assert_error(
            app.create_subscription(
                &json!({"id": id, "url": "https://example.com/", "event_types": ["*"]}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("id"),
        )
        .await;
    }
    let (status, body) = json_of(
        app.post_json(
            "/events/batch",
            &json!({"events": [event(".", "a.b"), event("...", "a.b")]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["status"], "invalid", "{body}");
    assert_eq!(
        body["results"][0]["error"]["field"], "events[0].id",
        "{body}"
    );
    assert_eq!(body["results"][1]["status"], "accepted", "{body}");
    assert_eq!(app.event("...").await["id"], "...");
}

#[tokio::test]
async fn a_body_that_never_finishes_arriving_gets_a_408_and_stores_nothing() {
    let app = TestApp::spawn_with(|s| {
        s.body_read_timeout = Duration::from_millis(300);
    })
    .await;
    let authority = app.base.trim_start_matches("http://").to_owned();
    // The head promises 200 bytes of body; 20 come, then the client goes quiet.
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {TEST_API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"id\": \"evt_slow\", "
    );
    let status = raw_exchange(&app.base, head.as_bytes()).await;
    assert!(
        status.as_deref().is_some_and(|line| line.contains(" 408 ")),
        "{status:?}"
    );
    assert_not_stored(&app, "evt_slow").await;
    // And the server carries on.
    let response = app
        .client
        .get(app.url("/subscriptions"))
        .bearer_auth(TEST_API_KEY)
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
}
