//! The API's `/metrics`: the seed's received counter and the HTTP metrics move with real
//! requests; labels carry route patterns, never ids.

use reqwest::StatusCode;

use crate::helpers::{TestApp, event};

#[tokio::test]
async fn metrics_count_accepted_events_and_requests_by_route_pattern() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_1", &["order.*"]).await;
    for id in ["evt_1", "evt_2"] {
        let response = app.post_event(&event(id, "order.created")).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    // A replay is not a new event.
    assert_eq!(
        app.post_event(&event("evt_1", "order.created"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(app.get("/events/evt_1").await.status(), StatusCode::OK);

    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.expect("a body");

    assert!(
        text.contains("# TYPE dispatch_events_received_total counter"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "dispatch_events_received_total 2"),
        "{text}"
    );
    assert!(
        text.contains(
            r#"dispatch_http_requests_total{route="/events",method="POST",status="202"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"dispatch_http_requests_total{route="/events/{id}",method="GET",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        !text.contains("evt_1"),
        "ids must never become labels:\n{text}"
    );
    assert!(
        text.contains("# TYPE dispatch_http_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE dispatch_db_pool_connections gauge"),
        "{text}"
    );
}
