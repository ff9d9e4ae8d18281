//! A database outage while the API runs: the database is reached through a TCP proxy that the
//! test stops (closing every connection) and starts again on the same port.

use std::time::Duration;

use dispatch_store::pool;
use dispatch_store::queries::events;
use dispatch_test_support::admin_url;
use dispatch_test_support::proxy::TcpProxy;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, assert_error, event, json_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_database_outage_writes_are_503_and_the_api_recovers_without_a_restart() {
    let proxy = TcpProxy::for_postgres(&admin_url())
        .await
        .expect("the proxy listens");
    let app = TestApp::spawn_with(|s| {
        s.database.url = proxy.url_for(s.database.url.expose()).into();
        s.database.connect_timeout = Duration::from_secs(1);
    })
    .await;

    // Up: the pool holds live connections through the proxy.
    app.subscribe("sub_all", &["*"]).await;
    let (status, _) = json_of(app.post_event(&event("evt_before", "order.created")).await).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = json_of(app.get("/readyz").await).await;
    assert_eq!(status, StatusCode::OK);

    // Down: every connection is cut and no new one can be opened.
    proxy.stop().await;
    let during = event("evt_during", "order.created");
    let response = app.post_event(&during).await;
    assert_eq!(
        response
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok()),
        Some("1"),
        "a 503 tells the caller when to retry"
    );
    assert_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "database_unavailable",
        None,
    )
    .await;
    assert_error(
        app.get("/readyz").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        None,
    )
    .await;
    assert_error(
        app.get("/events/evt_before").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "database_unavailable",
        None,
    )
    .await;
    let (status, _) = json_of(app.get("/healthz").await).await;
    assert_eq!(status, StatusCode::OK, "the process itself is fine");

    // Back: the same request now succeeds, without restarting the API.
    proxy.start().await.expect("the proxy listens again");
    let (status, body) = json_of(app.post_event(&during).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["deliveries"].as_array().map(Vec::len), Some(1));
    let (status, _) = json_of(app.get("/readyz").await).await;
    assert_eq!(status, StatusCode::OK);

    // Stored exactly once: one event, one delivery, and the retry of it is a duplicate.
    let (status, _) = json_of(app.post_event(&during).await).await;
    assert_eq!(status, StatusCode::OK);
    let direct = app.db.pool();
    let mut conn = pool::connection(&direct).await.expect("direct connection");
    assert!(
        events::find(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            "evt_during"
        )
        .await
        .expect("readable")
        .is_some()
    );
    let deliveries = events::deliveries_of(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        "evt_during",
    )
    .await
    .expect("readable");
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(deliveries[0].subscription_id, "sub_all");
    let stored = app.event("evt_during").await;
    assert_eq!(stored["data"], during["data"]);
    assert_eq!(stored["status"], "pending");

    // Earlier data survived and the other routes work again.
    assert_eq!(app.event("evt_before").await["id"], "evt_before");
    let (status, list) = json_of(app.get("/subscriptions").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"][0]["id"], "sub_all");
    let (status, _) = json_of(
        app.create_subscription(&json!({"url": "https://example.com/", "event_types": ["*"]}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}
