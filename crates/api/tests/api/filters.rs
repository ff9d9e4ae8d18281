//! Payload filters: a filtered subscription gets deliveries only for the events its filter
//! selects (`POST /events` and `/events/batch`, both through the one fan-out statement), the
//! others are unchanged, refusals name `filter` and the reason, `PATCH` sets and clears it,
//! `filter-test` answers, and a filter that errors for an event fails only its own match.

use dispatch_store::pool;
use dispatch_store::queries::events;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, json_of};

const BIG_EUR: &str = r#"$.data.amount > 100 && $.data.currency == "EUR""#;

fn order(id: &str, event_type: &str, data: Value) -> Value {
    json!({"id": id, "type": event_type, "source": "shop", "data": data})
}

async fn filtered(app: &TestApp, id: &str, filter: &str) -> Value {
    let (status, body) = json_of(
        app.create_subscription(&json!({
            "id": id,
            "url": format!("https://hooks.example.com/{id}"),
            "event_types": ["order.*"],
            "filter": filter,
        }))
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{filter}: {body}");
    body
}

/// The subscriptions that got a delivery of `event_id`, sorted.
async fn delivered_to(app: &TestApp, event_id: &str) -> Vec<String> {
    let pool = app.db.pool();
    let mut conn = pool::connection(&pool).await.expect("a connection");
    let mut subs: Vec<String> = events::deliveries_of(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        event_id,
    )
    .await
    .expect("deliveries are readable")
    .into_iter()
    .map(|d| d.subscription_id)
    .collect();
    subs.sort();
    subs
}

async fn accepted(app: &TestApp, body: &Value) {
    let (status, answer) = json_of(app.post_event(body).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
}

async fn filter_test(app: &TestApp, id: &str, body: &Value) -> Response {
    app.post_json(&format!("/subscriptions/{id}/filter-test"), body)
        .await
}

#[tokio::test]
async fn a_filtered_subscription_gets_only_the_events_its_filter_selects() {
    let app = TestApp::spawn().await;
    let created = filtered(&app, "sub_big_eur", BIG_EUR).await;
    assert_eq!(created["filter"], BIG_EUR);
    filtered(
        &app,
        "sub_orders_prefix",
        r#"$.type starts with "order.pa""#,
    )
    .await;
    filtered(&app, "sub_vip", "exists($.data.vip)").await;
    let plain = app.subscribe("sub_plain", &["order.*"]).await;
    assert_eq!(plain["filter"], Value::Null, "no filter shows as null");
    let (_, shown) = json_of(app.get("/subscriptions/sub_big_eur").await).await;
    assert_eq!(shown["filter"], BIG_EUR, "GET shows the filter as written");

    accepted(
        &app,
        &order(
            "evt_big",
            "order.paid",
            json!({"amount": 250, "currency": "EUR"}),
        ),
    )
    .await;
    accepted(
        &app,
        &order(
            "evt_small",
            "order.created",
            json!({"amount": 5, "currency": "EUR"}),
        ),
    )
    .await;
    accepted(
        &app,
        &order(
            "evt_usd",
            "order.created",
            json!({"amount": 900, "currency": "USD", "vip": false}),
        ),
    )
    .await;
    assert_eq!(
        delivered_to(&app, "evt_big").await,
        ["sub_big_eur", "sub_orders_prefix", "sub_plain"]
    );
    assert_eq!(delivered_to(&app, "evt_small").await, ["sub_plain"]);
    assert_eq!(
        delivered_to(&app, "evt_usd").await,
        ["sub_plain", "sub_vip"]
    );

    // The batch route fans out through the same statement.
    let (status, body) = json_of(
        app.post_json(
            "/events/batch",
            &json!({"events": [
                order("evt_b1", "order.paid", json!({"amount": 101, "currency": "EUR"})),
                order("evt_b2", "order.refunded", json!({"amount": 100, "currency": "EUR"})),
                order("evt_b3", "order.created", json!({"vip": true})),
            ]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        delivered_to(&app, "evt_b1").await,
        ["sub_big_eur", "sub_orders_prefix", "sub_plain"]
    );
    assert_eq!(delivered_to(&app, "evt_b2").await, ["sub_plain"]);
    assert_eq!(delivered_to(&app, "evt_b3").await, ["sub_plain", "sub_vip"]);
}

#[tokio::test]
async fn a_filter_that_errors_for_an_event_only_fails_its_own_match() {
    let app = TestApp::spawn().await;
    // Strict mode: a missing key or a string compared with a number raises an error outside a
    // comparison; fan-out evaluates silently, so that is no match and ingestion goes on.
    filtered(&app, "sub_strict", "strict $.data.amount > 100").await;
    filtered(&app, "sub_lax", "$.data.amount > 100").await;
    app.subscribe("sub_plain", &["order.*"]).await;
    accepted(
        &app,
        &order("evt_no_amount", "order.paid", json!({"note": "none"})),
    )
    .await;
    accepted(
        &app,
        &order("evt_text_amount", "order.paid", json!({"amount": "lots"})),
    )
    .await;
    accepted(&app, &order("evt_list", "order.paid", json!([1, 2]))).await;
    accepted(&app, &order("evt_ok", "order.paid", json!({"amount": 101}))).await;
    for id in ["evt_no_amount", "evt_text_amount", "evt_list"] {
        assert_eq!(delivered_to(&app, id).await, ["sub_plain"], "{id}");
    }
    assert_eq!(
        delivered_to(&app, "evt_ok").await,
        ["sub_lax", "sub_plain", "sub_strict"]
    );
}

#[tokio::test]
async fn invalid_filters_are_refused_naming_filter_and_the_reason() {
    let app = TestApp::spawn().await;
    let too_long = format!(r#"$.type == "{}""#, "x".repeat(1100));
    let cases: [(Value, &str); 9] = [
        (json!("$.data.amount >"), "not a SQL/JSON path expression"),
        (json!("$.data.amount"), "must be a predicate"),
        (json!(r#"$ ? (@.type == "a")"#), "must be a predicate"),
        (json!(too_long), "at most 1024 bytes"),
        (json!(r#"$.type like_regex "paid""#), "not anchored"),
        (json!("$.**.vip == true"), "recursive wildcard"),
        (json!(r#"$.data.at.datetime() < "2026-01-01""#), "datetime"),
        (json!("$.data.amount > $limit"), "variable"),
        (json!(42), "must be a SQL/JSON path predicate as a string"),
    ];
    for (filter, reason) in cases {
        let body = assert_error(
            app.create_subscription(&json!({
                "url": "https://hooks.example.com/x",
                "event_types": ["*"],
                "filter": filter,
            }))
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("filter"),
        )
        .await;
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{filter}: {message}");
    }
    // Anchored regular expressions are allowed, and a keyword inside a string is only a string.
    filtered(
        &app,
        "sub_regex",
        r#"$.type like_regex "^order\\.(paid|refunded)$""#,
    )
    .await;
    filtered(&app, "sub_words", r#"$.data.note == ".** like_regex $x""#).await;
    // PATCH refuses the same way, and keeps what was there.
    assert_error(
        app.client
            .patch(app.url("/subscriptions/sub_regex"))
            .header("Content-Type", "application/merge-patch+json")
            .body(json!({"filter": "$.data"}).to_string())
            .send()
            .await
            .expect("PATCH is answered"),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("filter"),
    )
    .await;
    let (_, shown) = json_of(app.get("/subscriptions/sub_regex").await).await;
    assert_eq!(
        shown["filter"],
        r#"$.type like_regex "^order\\.(paid|refunded)$""#
    );
}

async fn patch_filter(app: &TestApp, id: &str, filter: Value) -> Value {
    let (status, view) = json_of(
        app.client
            .patch(app.url(&format!("/subscriptions/{id}")))
            .header("Content-Type", "application/merge-patch+json")
            .body(json!({ "filter": filter }).to_string())
            .send()
            .await
            .expect("PATCH is answered"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view
}

#[tokio::test]
async fn patch_sets_and_clears_a_filter_for_events_ingested_from_then_on() {
    let app = TestApp::spawn().await;
    app.subscribe("sub_x", &["order.*"]).await;
    let view = patch_filter(&app, "sub_x", json!("$.data.amount > 100")).await;
    assert_eq!(view["filter"], "$.data.amount > 100");
    accepted(&app, &order("evt_1", "order.paid", json!({"amount": 1}))).await;
    accepted(&app, &order("evt_2", "order.paid", json!({"amount": 1000}))).await;
    assert!(delivered_to(&app, "evt_1").await.is_empty());
    assert_eq!(delivered_to(&app, "evt_2").await, ["sub_x"]);

    // Another member changed keeps the filter; null clears it.
    let view = app
        .client
        .patch(app.url("/subscriptions/sub_x"))
        .header("Content-Type", "application/merge-patch+json")
        .body(json!({"description": "orders"}).to_string())
        .send()
        .await
        .expect("PATCH is answered");
    assert_eq!(json_of(view).await.1["filter"], "$.data.amount > 100");
    let view = patch_filter(&app, "sub_x", Value::Null).await;
    assert_eq!(view["filter"], Value::Null);
    accepted(&app, &order("evt_3", "order.paid", json!({"amount": 1}))).await;
    assert_eq!(delivered_to(&app, "evt_3").await, ["sub_x"]);
}

#[tokio::test]
async fn filter_test_answers_whether_a_sample_event_matches() {
    let app = TestApp::spawn().await;
    filtered(&app, "sub_f", BIG_EUR).await;
    app.subscribe("sub_none", &["*"]).await;
    let sample = |amount: i64| json!({"type": "order.paid", "source": "shop", "data": {"amount": amount, "currency": "EUR"}});
    let (status, body) = json_of(filter_test(&app, "sub_f", &sample(250)).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"matches": true, "filter": BIG_EUR}));
    let (_, body) = json_of(filter_test(&app, "sub_f", &sample(5)).await).await;
    assert_eq!(body["matches"], false);
    // A draft is tried instead of the stored filter, and checked like one.
    let mut draft = sample(5);
    draft["filter"] = json!("$.data.amount < 10");
    let (_, body) = json_of(filter_test(&app, "sub_f", &draft).await).await;
    assert_eq!(
        body,
        json!({"matches": true, "filter": "$.data.amount < 10"})
    );
    draft["filter"] = json!("$.data.amount");
    assert_error(
        filter_test(&app, "sub_f", &draft).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("filter"),
    )
    .await;
    // An error while evaluating is no match, as at fan-out.
    draft["filter"] = json!("strict $.data.missing > 1");
    let (_, body) = json_of(filter_test(&app, "sub_f", &draft).await).await;
    assert_eq!(body["matches"], false);
    // No filter: everything matches.
    let (_, body) = json_of(filter_test(&app, "sub_none", &sample(5)).await).await;
    assert_eq!(body, json!({"matches": true, "filter": null}));
    assert_error(
        filter_test(&app, "sub_gone", &sample(5)).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
    assert_error(
        filter_test(
            &app,
            "sub_f",
            &json!({"type": "order.paid", "source": "shop"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        Some("data"),
    )
    .await;
}
