//! Every API route gets the same server span from the middleware, not only the event routes:
//! named `{method} {route}`, kind server, the caller's trace continued, the status recorded and
//! ERROR on a 5xx. The spans are read back from the test OTLP collector (`common::collector`).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::collector::{ExportedSpan, PATIENCE, SERVICE, producer_traceparent, telemetry, the};
use dispatch_test_support::TestDb;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;

/// Sends `request` with a fresh caller `traceparent`, expects `status`, and returns the API's
/// server span named `name` in the caller's trace.
async fn span_of(request: reqwest::RequestBuilder, status: u16, name: &str) -> ExportedSpan {
    let caller = producer_traceparent();
    let response = request
        .header("traceparent", caller.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), status, "{:?}", response.text().await);
    let spans = telemetry().trace(&caller.trace_id_hex(), &[name]).await;
    let span = the(&spans, name).clone();
    assert_eq!(span.kind, SpanKind::Server, "{span:#?}");
    assert_eq!(span.service, SERVICE);
    assert_eq!(
        span.parent_span_id,
        caller.span_id.to_string(),
        "the caller's trace is continued: {span:#?}"
    );
    assert_eq!(
        span.attributes["http.response.status_code"],
        status.to_string()
    );
    span
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_routes_get_a_server_span_named_by_method_and_route_pattern() {
    telemetry();
    let db = TestDb::new().await;
    let (base, client) = common::start_api(&db, PATIENCE);

    let created = span_of(
        client.post(format!("{base}/subscriptions")).json(&json!({
            "id": "sub_spans",
            "url": "http://127.0.0.1:9/hook",
            "event_types": ["*"]
        })),
        201,
        "POST /subscriptions",
    )
    .await;
    assert_eq!(created.attributes["http.request.method"], "POST");
    assert_eq!(created.attributes["http.route"], "/subscriptions");
    assert!(!created.error);

    // The route pattern, never the id, names the span.
    let read = span_of(
        client.get(format!("{base}/subscriptions/sub_spans")),
        200,
        "GET /subscriptions/{id}",
    )
    .await;
    assert_eq!(read.attributes["http.request.method"], "GET");
    assert_eq!(read.attributes["http.route"], "/subscriptions/{id}");
    assert!(
        !read.attributes.contains_key("event.id"),
        "attributes only the ingest routes record stay unset: {read:#?}"
    );

    let rotated = span_of(
        client.post(format!("{base}/subscriptions/sub_spans/rotate-secret")),
        200,
        "POST /subscriptions/{id}/rotate-secret",
    )
    .await;
    assert_eq!(
        rotated.attributes["http.route"],
        "/subscriptions/{id}/rotate-secret"
    );

    // A refused request is spanned too: before the handler runs (no key) and with no route.
    let unauthorized = span_of(
        reqwest::Client::new().get(format!("{base}/subscriptions/sub_spans")),
        401,
        "GET /subscriptions/{id}",
    )
    .await;
    assert!(!unauthorized.error, "a 4xx is not a server error");
    let unmatched = span_of(client.get(format!("{base}/no/such/route")), 404, "GET").await;
    assert!(
        !unmatched.attributes.contains_key("http.route"),
        "{unmatched:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_marks_the_request_span_as_an_error() {
    telemetry();
    let db = TestDb::new().await;
    // Nothing listens on port 1: every request that needs the database answers 503.
    let (base, client) = common::start_api_with(&db, PATIENCE, |settings| {
        settings.database.url = "postgres://postgres@127.0.0.1:1/postgres".into();
        settings.database.connect_timeout = Duration::from_secs(1);
    });

    let span = span_of(
        client.delete(format!("{base}/subscriptions/sub_gone")),
        503,
        "DELETE /subscriptions/{id}",
    )
    .await;
    assert!(
        span.error,
        "a 5xx sets the span's status to ERROR: {span:#?}"
    );
}
