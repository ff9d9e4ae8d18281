//! Who may call the API: every event and subscription route needs a valid bearer key; health,
//! readiness, metrics and the OpenAPI document do not.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, event};

#[tokio::test]
async fn every_protected_route_answers_401_without_a_valid_key() {
    let app = TestApp::spawn().await;
    let anonymous = reqwest::Client::new();
    let cases = [
        ("POST", "/events"),
        ("POST", "/events/batch"),
        ("GET", "/events/evt_1"),
        ("GET", "/events/evt_1/attempts"),
        ("POST", "/subscriptions"),
        ("GET", "/subscriptions"),
        ("GET", "/subscriptions/sub_1"),
        ("DELETE", "/subscriptions/sub_1"),
        ("POST", "/subscriptions/sub_1/rotate-secret"),
    ];
    for (method, path) in cases {
        for authorization in [
            None,
            Some("Bearer wrong-key-0123456789"),
            Some("test-api-key-0123456789"),
        ] {
            let mut request = anonymous
                .request(method.parse().expect("a method"), app.url(path))
                .json(&event("evt_1", "a.b"));
            if let Some(value) = authorization {
                request = request.header("Authorization", value);
            }
            let response = request.send().await.expect("an answer");
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} {authorization:?}"
            );
            assert_eq!(
                response
                    .headers()
                    .get("WWW-Authenticate")
                    .and_then(|v| v.to_str().ok()),
                Some("Bearer realm=\"dispatch\"")
            );
            let body: serde_json::Value = response.json().await.expect("JSON");
            assert_eq!(body["code"], "unauthorized", "{body}");
        }
    }
    // Nothing was stored by the refused requests.
    assert_eq!(
        app.get("/events/evt_1").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn health_metrics_and_the_document_need_no_key() {
    let app = TestApp::spawn().await;
    let anonymous = reqwest::Client::new();
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let response = anonymous
            .get(app.url(path))
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn a_key_given_as_its_sha256_digest_is_accepted() {
    // The digest is computed outside this code, by coreutils' sha256sum.
    let key = "digest-only-key-0123456789";
    let hex = sha256_hex(key);
    let app = TestApp::spawn_with(|s| {
        s.auth = dispatch_api::auth::Auth::Keys(
            dispatch_api::auth::parse_keys(&format!("sha256:{hex}")).expect("valid"),
        );
    })
    .await;
    let response = reqwest::Client::new()
        .post(app.url("/subscriptions"))
        .header("Authorization", format!("Bearer {key}"))
        .json(&json!({"url": "https://example.com/h", "event_types": ["*"]}))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::CREATED);
    // The helper's own key is not among this server's keys.
    assert_eq!(
        app.get("/subscriptions").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn with_auth_disabled_anyone_may_call() {
    let app = TestApp::spawn_with(|s| s.auth = dispatch_api::auth::Auth::Disabled).await;
    let response = reqwest::Client::new()
        .get(app.url("/subscriptions"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
}

fn sha256_hex(text: &str) -> String {
    let output = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .expect("sha256sum runs");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned()
}
