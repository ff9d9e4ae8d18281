//! Hostile input: bodies that are almost JSON, repeated keys, deep nesting, oversized headers and
//! bytes that are not UTF-8 all get a clear 4xx, never a 500 or a hang, and store nothing.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TEST_API_KEY, TestApp, assert_error, event, json_of};

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

#[tokio::test]
async fn too_many_or_too_large_headers_are_a_json_431() {
    let app = TestApp::spawn().await;
    let mut request = app
        .client
        .post(app.url("/events"))
        .json(&event("evt_hd1", "a.b"));
    for i in 0..70 {
        request = request.header(format!("x-extra-{i}"), "1");
    }
    let error = assert_error(
        request.send().await.expect("answered"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
        None,
    )
    .await;
    assert!(
        error["message"].to_string().contains("at most 64"),
        "{error}"
    );

    let response = app
        .client
        .post(app.url("/events"))
        .header("x-large", "v".repeat(40 * 1024))
        .json(&event("evt_hd2", "a.b"))
        .send()
        .await
        .expect("answered");
    let error = assert_error(
        response,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
        None,
    )
    .await;
    assert!(error["message"].to_string().contains("32768"), "{error}");

    // Under the limits: served as usual.
    let mut request = app
        .client
        .post(app.url("/events"))
        .json(&event("evt_hd3", "a.b"));
    for i in 0..50 {
        request = request.header(format!("x-extra-{i}"), "v".repeat(500));
    }
    let response = request.send().await.expect("answered");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    for id in ["evt_hd1", "evt_hd2"] {
        assert_not_stored(&app, id).await;
    }
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

#[tokio::test]
async fn heads_beyond_the_servers_own_ceilings_get_a_431_and_the_server_carries_on() {
    let app = TestApp::spawn().await;
    let authority = app.base.trim_start_matches("http://").to_owned();
    let start = format!(
        "GET /subscriptions HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer \
         {TEST_API_KEY}\r\nConnection: close\r\n"
    );

    // More than actix-web's 96 headers.
    let mut many = start.clone();
    for i in 0..120 {
        many.push_str(&format!("x-extra-{i}: 1\r\n"));
    }
    many.push_str("\r\n");
    let status = raw_exchange(&app.base, many.as_bytes()).await;
    assert!(
        status.as_deref().is_some_and(|s| s.contains(" 431 ")),
        "{status:?}"
    );

    // A head larger than actix-web's 128 KiB buffer.
    let huge = format!("{start}x-large: {}\r\n\r\n", "v".repeat(140 * 1024));
    let status = raw_exchange(&app.base, huge.as_bytes()).await;
    assert!(
        status.as_deref().is_none_or(|s| s.contains(" 431 ")),
        "{status:?}"
    );

    // Header bytes that are not UTF-8: an unusable API key, a content type that is not JSON.
    let mut odd = format!(
        "POST /events HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\
         Content-Length: 2\r\nAuthorization: Bearer "
    )
    .into_bytes();
    odd.extend_from_slice(b"\xff\xfe\r\n\r\n{}");
    let status = raw_exchange(&app.base, &odd).await;
    assert!(
        status.as_deref().is_some_and(|s| s.contains(" 401 ")),
        "{status:?}"
    );
    let mut odd = format!(
        "POST /events HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\
         Authorization: Bearer {TEST_API_KEY}\r\nContent-Length: 2\r\nContent-Type: application/"
    )
    .into_bytes();
    odd.extend_from_slice(b"js\xffon\r\n\r\n{}");
    let status = raw_exchange(&app.base, &odd).await;
    assert!(
        status.as_deref().is_some_and(|s| s.contains(" 415 ")),
        "{status:?}"
    );

    // Still serving.
    let (status, body) = json_of(app.get("/subscriptions").await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
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
