//! Answers for paths and methods the API does not serve: JSON errors like every other.

use reqwest::{Method, StatusCode};

use crate::helpers::{TestApp, assert_error};

#[tokio::test]
async fn an_unknown_route_is_a_json_404_not_found() {
    let app = TestApp::spawn().await;
    for (method, path) in [
        (Method::GET, "/"),
        (Method::GET, "/nope"),
        (Method::POST, "/events/evt_1/attempts/extra"),
        (Method::GET, "/eventsx"),
        (Method::GET, "/subscriptions/sub_1/deliveries"),
        (Method::DELETE, "/events/evt_1/attempts/1"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .expect("answered");
        assert_error(response, StatusCode::NOT_FOUND, "not_found", None).await;
    }
}

#[tokio::test]
async fn a_wrong_method_on_a_known_route_is_a_json_405_method_not_allowed() {
    let app = TestApp::spawn().await;
    for (method, path) in [
        (Method::PATCH, "/events"),
        (Method::PUT, "/deliveries/1"),
        (Method::GET, "/replays"),
        (Method::PUT, "/events"),
        (Method::DELETE, "/events"),
        (Method::POST, "/events/evt_1"),
        (Method::DELETE, "/events/evt_1"),
        (Method::POST, "/events/evt_1/attempts"),
        (Method::PUT, "/subscriptions"),
        (Method::DELETE, "/subscriptions"),
        (Method::PUT, "/subscriptions/sub_1"),
        (Method::POST, "/subscriptions/sub_1"),
        (Method::POST, "/healthz"),
        (Method::DELETE, "/readyz"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("answered");
        assert_error(
            response,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            None,
        )
        .await;
    }
}
