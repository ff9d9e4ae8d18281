//! A subscription's rate limit (default, shown, refused when invalid) and its published circuit.

use super::*;

/// The `rate_limit` shown for a subscription, as (per_second, burst).
fn rate_limit_of(view: &Value) -> (f64, i64) {
    let limit = &view["rate_limit"];
    assert_eq!(
        limit.as_object().map(|o| o.len()),
        Some(2),
        "rate_limit is exactly per_second and burst: {view}"
    );
    (
        limit["per_second"]
            .as_f64()
            .expect("per_second is a number"),
        limit["burst"].as_i64().expect("burst is a whole number"),
    )
}

#[tokio::test]
async fn a_rate_limit_is_accepted_and_shown_and_defaults_to_100_per_second_with_a_burst_of_10() {
    let app = TestApp::spawn().await;
    let cases: Vec<(&str, Option<Value>, (f64, i64))> = vec![
        (
            "sub_given",
            Some(json!({"per_second": 5, "burst": 2})),
            (5.0, 2),
        ),
        ("sub_absent", None, (100.0, 10)),
        ("sub_null", Some(Value::Null), (100.0, 10)),
        ("sub_empty", Some(json!({})), (100.0, 10)),
        ("sub_burst_only", Some(json!({"burst": 3})), (100.0, 3)),
        // JSON Schema's `integer` (what the document says `burst` is) includes `4.0`.
        ("sub_burst_float", Some(json!({"burst": 4.0})), (100.0, 4)),
        ("sub_rate_only", Some(json!({"per_second": 0.5})), (0.5, 10)),
        (
            "sub_nulls",
            Some(json!({"per_second": null, "burst": null})),
            (100.0, 10),
        ),
        (
            "sub_highest",
            Some(json!({"per_second": 100_000, "burst": 100_000})),
            (100_000.0, 100_000),
        ),
        (
            "sub_lowest",
            Some(json!({"per_second": 0.001, "burst": 1})),
            (0.001, 1),
        ),
    ];
    let mut expected = Vec::new();
    for (id, rate_limit, shown) in cases {
        let mut body = json!({"id": id, "url": "https://example.com/hook", "event_types": ["*"]});
        if let Some(rate_limit) = rate_limit {
            body["rate_limit"] = rate_limit;
        }
        let (status, created) = json_of(app.create_subscription(&body).await).await;
        assert_eq!(status, StatusCode::CREATED, "{id}: {created}");
        assert_eq!(rate_limit_of(&created), shown, "{id} as created");
        let (status, fetched) = json_of(app.get(&format!("/subscriptions/{id}")).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(rate_limit_of(&fetched), shown, "{id} as read back");
        expected.push((id.to_owned(), shown));
    }
    let (_, list) = json_of(app.get("/subscriptions").await).await;
    let mut listed: Vec<(String, (f64, i64))> = list["data"]
        .as_array()
        .expect("data is an array")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().expect("an id").to_owned(),
                rate_limit_of(s),
            )
        })
        .collect();
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(listed, expected);
}

#[tokio::test]
async fn an_invalid_rate_limit_is_a_422_naming_the_field_at_fault() {
    let app = TestApp::spawn().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"per_second": 0}), "rate_limit.per_second"),
        (json!({"per_second": -1}), "rate_limit.per_second"),
        (json!({"per_second": 100_000.5}), "rate_limit.per_second"),
        (json!({"per_second": "5"}), "rate_limit.per_second"),
        (json!({"per_second": true}), "rate_limit.per_second"),
        (json!({"per_second": [5]}), "rate_limit.per_second"),
        (json!({"burst": 0}), "rate_limit.burst"),
        (json!({"burst": -2}), "rate_limit.burst"),
        (json!({"burst": 100_001}), "rate_limit.burst"),
        (json!({"burst": 2.5}), "rate_limit.burst"),
        (json!({"burst": "2"}), "rate_limit.burst"),
        (json!({"burst": 10_000_000_000_i64}), "rate_limit.burst"),
        (json!({"per_second": 5, "burst": 0}), "rate_limit.burst"),
        (json!({"x": 1}), "rate_limit.x"),
        (json!({"per_second": 5, "burst": 2, "x": 1}), "rate_limit.x"),
        (json!("fast"), "rate_limit"),
        (json!(100), "rate_limit"),
        (json!([100, 10]), "rate_limit"),
        (json!(true), "rate_limit"),
    ];
    for (rate_limit, field) in cases {
        let body = json!({
            "url": "https://example.com/hook",
            "event_types": ["*"],
            "rate_limit": rate_limit.clone(),
        });
        let error = assert_error(
            app.create_subscription(&body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some(field),
        )
        .await;
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{rate_limit}: {error}"
        );
    }
    let (_, list) = json_of(app.get("/subscriptions").await).await;
    assert_eq!(list["data"], json!([]), "none was stored: {list}");
}

/// Publishes a circuit for `id` as a worker does.
async fn publish_circuit(
    app: &TestApp,
    id: &str,
    state: &'static str,
    open_until: Option<chrono::DateTime<chrono::Utc>>,
) {
    use dispatch_store::queries::subscriptions::{CircuitUpdate, publish_circuits};
    let pool = app.db.pool();
    let mut conn = dispatch_store::pool::connection(&pool)
        .await
        .expect("a connection");
    publish_circuits(
        &mut conn,
        &[CircuitUpdate {
            subscription_id: id.to_owned(),
            state,
            open_until,
        }],
    )
    .await
    .expect("the circuit is published");
}

fn timestamp(value: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().expect("a timestamp string"))
        .unwrap_or_else(|e| panic!("{value} is not RFC 3339: {e}"))
        .with_timezone(&chrono::Utc)
}

#[tokio::test]
async fn the_circuit_is_closed_by_default_and_shows_what_the_workers_published() {
    let app = TestApp::spawn().await;
    let created = app.subscribe("sub_a", &["*"]).await;
    assert_eq!(
        created["circuit"],
        json!({"state": "closed", "open_until": null, "changed_at": null})
    );
    app.subscribe("sub_b", &["*"]).await;

    // Open for another 30 s: shown open, with its end.
    let until = chrono::Utc::now() + chrono::Duration::seconds(30);
    publish_circuit(&app, "sub_a", "open", Some(until)).await;
    let (status, fetched) = json_of(app.get("/subscriptions/sub_a").await).await;
    assert_eq!(status, StatusCode::OK);
    let circuit = &fetched["circuit"];
    assert_eq!(circuit["state"], "open", "{fetched}");
    let shown = timestamp(&circuit["open_until"]);
    assert!(
        (shown - until).abs() < chrono::Duration::milliseconds(1),
        "open until {shown}, published {until}"
    );
    assert!(circuit["changed_at"].is_string(), "{fetched}");
    let (_, list) = json_of(app.get("/subscriptions").await).await;
    assert_eq!(list["data"][0]["id"], "sub_a");
    assert_eq!(
        list["data"][0]["circuit"], *circuit,
        "the list shows it too"
    );
    assert_eq!(
        list["data"][1]["circuit"]["state"], "closed",
        "the other subscription is untouched"
    );

    // A worker whose own breaker closed cannot clear a circuit that is still open.
    publish_circuit(&app, "sub_a", "closed", None).await;
    let (_, fetched) = json_of(app.get("/subscriptions/sub_a").await).await;
    assert_eq!(fetched["circuit"]["state"], "open", "{fetched}");

    // Once its time is up, closed again: no end any more.
    app.subscribe("sub_c", &["*"]).await;
    publish_circuit(
        &app,
        "sub_c",
        "open",
        Some(chrono::Utc::now() - chrono::Duration::seconds(1)),
    )
    .await;
    publish_circuit(&app, "sub_c", "closed", None).await;
    let (_, fetched) = json_of(app.get("/subscriptions/sub_c").await).await;
    assert_eq!(fetched["circuit"]["state"], "closed");
    assert_eq!(fetched["circuit"]["open_until"], Value::Null);
    assert!(fetched["circuit"]["changed_at"].is_string());

    // An open circuit whose time is up lets trials through: shown half-open, without an end.
    publish_circuit(
        &app,
        "sub_b",
        "open",
        Some(chrono::Utc::now() - chrono::Duration::seconds(1)),
    )
    .await;
    let (_, fetched) = json_of(app.get("/subscriptions/sub_b").await).await;
    assert_eq!(fetched["circuit"]["state"], "half_open", "{fetched}");
    assert_eq!(fetched["circuit"]["open_until"], Value::Null);
    publish_circuit(&app, "sub_b", "half_open", None).await;
    let (_, fetched) = json_of(app.get("/subscriptions/sub_b").await).await;
    assert_eq!(fetched["circuit"]["state"], "half_open");
    assert_eq!(fetched["circuit"]["open_until"], Value::Null);
}
