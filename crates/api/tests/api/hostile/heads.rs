//! Hostile heads: too many or too large headers get a JSON 431 and the server carries on.

use super::*;

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
