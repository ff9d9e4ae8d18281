//! Operating from the API: `GET /events`, `GET /deliveries[/{id}[/attempts]]`,
//! `POST /deliveries/{id}/retry` (replays are in `replays.rs`).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use diesel_async::RunQueryDsl;
use dispatch_store::pool;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, event, json_of};

/// Runs SQL on the app's database behind the API's back (a worker would make these changes).
pub(crate) async fn sql(app: &TestApp, statement: &str) {
    let pool = app.db.pool();
    let mut conn = pool::connection(&pool).await.expect("a connection");
    diesel::sql_query(statement)
        .execute(&mut conn)
        .await
        .expect("the statement runs");
}

pub(crate) async fn get_ok(app: &TestApp, path: &str) -> Value {
    let (status, body) = json_of(app.get(path).await).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

pub(crate) fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .expect("data is an array")
        .iter()
        .map(|i| i["id"].to_string().trim_matches('"').to_owned())
        .collect()
}

/// Five events (e1 oldest … e5 newest), odd ones `order.created` to `sub_orders` and `sub_all`,
/// even ones `invoice.paid` to `sub_all`; e3's delivery to `sub_orders` failed.
pub(crate) async fn history(app: &TestApp) {
    app.subscribe("sub_orders", &["order.*"]).await;
    app.subscribe("sub_all", &["*"]).await;
    for i in 1..=5 {
        let kind = if i % 2 == 1 {
            "order.created"
        } else {
            "invoice.paid"
        };
        let response = app.post_event(&event(&format!("e{i}"), kind)).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        // received_at orders the list; keep them apart.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sql(
        app,
        "UPDATE deliveries SET status = 'failed', attempts = 3, last_error = 'HTTP 500'
          WHERE event_id = 'e3' AND subscription_id = 'sub_orders'",
    )
    .await;
    sql(
        app,
        "UPDATE deliveries SET status = 'delivered', attempts = 1 WHERE status = 'pending'",
    )
    .await;
    app.seed_attempt("e3", "sub_orders", 3, Some(500), Some("HTTP 500"))
        .await;
}

#[tokio::test]
async fn events_are_listed_newest_first_filtered_and_paged() {
    let app = TestApp::spawn().await;
    history(&app).await;

    let page = get_ok(&app, "/events?limit=2").await;
    assert_eq!(ids(&page), ["e5", "e4"]);
    assert!(
        page["data"][0].get("data").is_none(),
        "no payload unless asked"
    );
    let cursor = page["next_cursor"].as_str().expect("more pages");
    let page = get_ok(&app, &format!("/events?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&page), ["e3", "e2"]);
    let cursor = page["next_cursor"].as_str().expect("one more page");
    let page = get_ok(&app, &format!("/events?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&page), ["e1"]);
    assert!(page["next_cursor"].is_null());

    assert_eq!(
        ids(&get_ok(&app, "/events?type=order.*").await),
        ["e5", "e3", "e1"]
    );
    assert_eq!(
        ids(&get_ok(&app, "/events?type=invoice.paid").await),
        ["e4", "e2"]
    );
    assert_eq!(ids(&get_ok(&app, "/events?status=failed").await), ["e3"]);
    assert_eq!(
        ids(&get_ok(&app, "/events?subscription_id=sub_orders&status=delivered").await),
        ["e5", "e1"]
    );
    assert_eq!(
        ids(&get_ok(&app, "/events?source=elsewhere").await),
        Vec::<String>::new()
    );
    let with_data = get_ok(&app, "/events?limit=1&include=data").await;
    assert_eq!(
        with_data["data"][0]["data"],
        event("e5", "order.created")["data"]
    );
    assert_eq!(with_data["data"][0]["status"], "delivered");

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=251", "limit"),
        ("cursor=.", "cursor"),
        ("type=order.*.x", "type"),
        ("status=lost", "status"),
        ("received_after=yesterday", "received_after"),
        ("include=everything", "include"),
        ("source=a&source=b", "source"),
        (
            "received_after=2026-12-02T00:00:00Z&received_before=2026-12-01T00:00:00Z",
            "received_before",
        ),
    ] {
        assert_error(
            app.get(&format!("/events?{query}")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_parameter",
            Some(field),
        )
        .await;
    }
}

#[tokio::test]
async fn deliveries_are_listed_with_their_last_attempt_and_read_one_by_one() {
    let app = TestApp::spawn().await;
    history(&app).await;

    let failed = get_ok(&app, "/deliveries?status=failed").await;
    assert_eq!(failed["data"].as_array().map(Vec::len), Some(1));
    let item = &failed["data"][0];
    assert_eq!(
        (item["event_id"].as_str(), item["subscription_id"].as_str()),
        (Some("e3"), Some("sub_orders"))
    );
    assert_eq!(item["last_attempt"]["status_code"], 500);
    assert_eq!(item["last_attempt"]["error_code"], "http_status");
    assert_eq!(item["last_error"], "HTTP 500");
    let id = item["id"].as_i64().expect("a numeric id");

    let both = get_ok(
        &app,
        "/deliveries?status=failed&status=delivered&subscription_id=sub_orders",
    )
    .await;
    assert_eq!(both["data"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        get_ok(&app, "/deliveries?event_id=e3").await["data"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    // Newest first, paged by id.
    let page = get_ok(&app, "/deliveries?limit=3").await;
    let first: Vec<i64> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    assert!(first.windows(2).all(|w| w[0] > w[1]), "{first:?}");
    let cursor = page["next_cursor"]
        .as_str()
        .expect("8 deliveries: more pages");
    let next = get_ok(&app, &format!("/deliveries?limit=3&cursor={cursor}")).await;
    assert!(next["data"][0]["id"].as_i64().unwrap() < first[2]);

    let one = get_ok(&app, &format!("/deliveries/{id}")).await;
    assert_eq!(one["status"], "failed");
    assert!(one["next_attempt_at"].is_null());
    let attempts = get_ok(&app, &format!("/deliveries/{id}/attempts")).await;
    assert_eq!(attempts["data"][0]["delivery_id"], id);
    assert_eq!(attempts["data"][0]["attempt"], 3);
    assert!(attempts["next_cursor"].is_null());
    let event_attempts = get_ok(&app, "/events/e3/attempts?limit=1").await;
    assert_eq!(event_attempts["data"].as_array().map(Vec::len), Some(1));

    for path in [
        "/deliveries/999999",
        "/deliveries/abc",
        "/deliveries/0/attempts",
    ] {
        assert_error(
            app.get(path).await,
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        )
        .await;
    }
    assert_error(
        app.get("/deliveries?status=lost").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_parameter",
        Some("status"),
    )
    .await;
    assert_error(
        app.get("/deliveries?cursor=-1").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_parameter",
        Some("cursor"),
    )
    .await;
}

#[tokio::test]
async fn one_delivery_is_retried_and_a_delivered_one_only_resent_on_request() {
    let app = TestApp::spawn().await;
    history(&app).await;
    let failed = get_ok(&app, "/deliveries?status=failed").await["data"][0]["id"]
        .as_i64()
        .unwrap();
    let delivered = get_ok(&app, "/deliveries?status=delivered&limit=1").await["data"][0]["id"]
        .as_i64()
        .unwrap();

    let (status, body) = json_of(
        app.post_json(&format!("/deliveries/{failed}/retry"), &json!({}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["attempts"].as_i64()),
        (Some("pending"), Some(0))
    );
    assert!(body["next_attempt_at"].is_string());
    assert_error(
        app.post_json(&format!("/deliveries/{failed}/retry"), &json!({}))
            .await,
        StatusCode::CONFLICT,
        "delivery_queued",
        None,
    )
    .await;

    assert_error(
        app.post_raw(&format!("/deliveries/{delivered}/retry"), "", None)
            .await,
        StatusCode::CONFLICT,
        "delivery_delivered",
        None,
    )
    .await;
    let (status, body) = json_of(
        app.post_json(
            &format!("/deliveries/{delivered}/retry"),
            &json!({"resend": true}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::ACCEPTED, Some("pending"))
    );

    assert_error(
        app.post_json(
            &format!("/deliveries/{failed}/retry"),
            &json!({"resend": "yes"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("resend"),
    )
    .await;
    assert_error(
        app.post_json("/deliveries/424242/retry", &json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
    sql(
        &app,
        &format!("UPDATE deliveries SET status = 'failed' WHERE id = {failed}"),
    )
    .await;
    app.unsubscribe("sub_orders").await;
    assert_error(
        app.post_json(&format!("/deliveries/{failed}/retry"), &json!({}))
            .await,
        StatusCode::CONFLICT,
        "subscription_deleted",
        None,
    )
    .await;
}
