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

#[tokio::test]
async fn every_id_route_answers_an_id_that_could_never_exist_with_a_404_naming_it() {
    let app = TestApp::spawn().await;
    let mut checked = 0;
    for route in dispatch_api::routes::ROUTES {
        if !route.path.contains("{id}") {
            continue;
        }
        let noun = match route.path.split('/').nth(1) {
            Some("events") => "event",
            Some("deliveries") => "delivery",
            Some("replays") => "replay",
            Some("subscriptions") => "subscription",
            Some("keys") => "API key",
            Some("tenants") => "tenant",
            other => panic!("no noun known for {other:?} ({})", route.path),
        };
        // Decoded before it is judged: `bad%20id` is the id `bad id`, which no id alphabet allows.
        let path = route.path.replace("{id}", "bad%20id");
        let method = Method::from_bytes(route.method.as_bytes()).expect("a method");
        let response = app
            .client
            .request(method, app.url(&path))
            .send()
            .await
            .expect("answered");
        let body = assert_error(response, StatusCode::NOT_FOUND, "not_found", None).await;
        assert_eq!(
            body["message"],
            format!("no {noun} with id \"bad id\""),
            "{} {}",
            route.method,
            route.path
        );
        checked += 1;
    }
    assert_eq!(checked, 22, "every {{id}} route of ROUTES is checked");

    // A delivery id is a positive whole number; the message names it as the path gave it.
    for (id, message) in [
        ("0", r#"no delivery with id "0""#),
        ("-1", r#"no delivery with id "-1""#),
        ("007", r#"no delivery with id "007""#),
    ] {
        let body = assert_error(
            app.get(&format!("/deliveries/{id}")).await,
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        )
        .await;
        assert_eq!(body["message"], message);
    }
}
