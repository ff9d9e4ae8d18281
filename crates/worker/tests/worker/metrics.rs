//! The worker's `/metrics`: after real deliveries, each seed metric the worker owns is exported
//! with the right type and a value that moved.

use std::collections::HashMap;

use dispatch_test_support::receiver::Reply;
use serde_json::json;

use crate::helpers::Harness;

/// Parses the Prometheus text format into (`# TYPE` per family, value per series line).
fn parse(text: &str) -> (HashMap<String, String>, HashMap<String, f64>) {
    let mut types = HashMap::new();
    let mut values = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                types.insert(name.to_owned(), kind.to_owned());
            }
        } else if !line.starts_with('#')
            && !line.is_empty()
            && let Some((series, value)) = line.rsplit_once(' ')
        {
            values.insert(series.to_owned(), value.parse().unwrap_or(f64::NAN));
        }
    }
    (types, values)
}

fn sum_of(values: &HashMap<String, f64>, family: &str) -> f64 {
    values
        .iter()
        .filter(|(series, _)| *series == family || series.starts_with(&format!("{family}{{")))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test]
async fn metrics_show_each_seed_metric_with_its_type_after_real_deliveries() {
    let h = Harness::new().await;
    // ok: delivered; flaky: 500 then retried; gone: 410 fails at once; tripping: three 500s
    // open its circuit.
    h.subscribe("sub_ok", "/ok", Some("s3cret-key")).await;
    h.subscribe("sub_flaky", "/flaky", None).await;
    h.subscribe("sub_gone", "/gone", None).await;
    h.receiver.set_default("/flaky", Reply::status(500));
    h.receiver.set_default("/gone", Reply::status(410));
    let worker = h.worker(&[("DISPATCH_BREAKER_MIN_REQUESTS", "1")]);
    h.ingest("evt_1", "order.created", json!({"n": 1})).await;
    worker.run_once().await.unwrap();
    // What the running loop's heartbeat does every few seconds (a scrape never queries the
    // database).
    worker.observe().await.unwrap();

    let (addr, server) =
        dispatch_worker::health::serve("127.0.0.1:0".parse().unwrap(), worker.clone())
            .await
            .unwrap();
    let serving = tokio::spawn(server);
    let text = reqwest_like_get(addr, "/metrics").await;
    serving.abort();
    let (types, values) = parse(&text);

    for (family, kind) in [
        ("dispatch_events_delivered_total", "counter"),
        ("dispatch_events_failed_total", "counter"),
        ("dispatch_events_retrying_total", "counter"),
        ("dispatch_delivery_duration_seconds", "histogram"),
        ("dispatch_circuit_breaker_state", "gauge"),
        ("dispatch_circuit_breaker_trips_total", "counter"),
        ("dispatch_delivery_attempts_total", "counter"),
        ("dispatch_deliveries_due", "gauge"),
    ] {
        assert_eq!(
            types.get(family).map(String::as_str),
            Some(kind),
            "{family} in:\n{text}"
        );
    }
    assert_eq!(
        sum_of(&values, "dispatch_events_delivered_total"),
        1.0,
        "{text}"
    );
    assert_eq!(
        sum_of(&values, "dispatch_events_failed_total"),
        1.0,
        "{text}"
    );
    assert_eq!(
        sum_of(&values, "dispatch_events_retrying_total"),
        1.0,
        "{text}"
    );
    assert_eq!(
        sum_of(&values, "dispatch_delivery_duration_seconds_count"),
        3.0,
        "{text}"
    );
    // With a minimum of one request, each failing destination's breaker opened once.
    assert_eq!(
        values.get("dispatch_circuit_breaker_trips_total{subscription_id=\"sub_flaky\"}"),
        Some(&1.0),
        "{text}"
    );
    assert_eq!(
        values.get("dispatch_circuit_breaker_state{subscription_id=\"sub_flaky\"}"),
        Some(&2.0),
        "{text}"
    );
    assert_eq!(
        values.get("dispatch_circuit_breaker_state{subscription_id=\"sub_ok\"}"),
        Some(&0.0),
        "{text}"
    );
    assert_eq!(
        values.get(
            "dispatch_delivery_attempts_total{outcome=\"failed\",status_class=\"4xx\",error_code=\"http_status\"}"
        ),
        Some(&1.0),
        "{text}"
    );
}

#[tokio::test]
async fn a_rate_limited_delivery_is_counted_as_a_rejection_and_a_deferral() {
    let h = Harness::new().await;
    h.subscribe("sub_slow", "/slow", None).await;
    {
        use diesel_async::RunQueryDsl;
        diesel::sql_query(
            "UPDATE subscriptions SET rate_limit_per_sec = 0.1, rate_limit_burst = 1",
        )
        .execute(&mut *h.conn().await)
        .await
        .unwrap();
    }
    let worker = h.worker(&[]);
    h.ingest("evt_1", "a.b", json!({})).await;
    h.ingest("evt_2", "a.b", json!({})).await;
    worker.run_once().await.unwrap();
    let text = dispatch_telemetry::metrics::install().render();
    let (_, values) = parse(&text);
    assert_eq!(
        values.get("dispatch_rate_limiter_rejections_total{subscription_id=\"sub_slow\"}"),
        Some(&1.0),
        "{text}"
    );
    assert_eq!(
        values.get("dispatch_deliveries_deferred_total{reason=\"rate_limited\"}"),
        Some(&1.0),
        "{text}"
    );
}

/// A minimal GET over a raw socket (the worker crate has no HTTP client dependency for tests).
async fn reqwest_like_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );
    body.to_owned()
}

#[tokio::test]
async fn an_auto_disabled_subscription_is_counted() {
    let h = Harness::new().await;
    h.subscribe("sub_down", "/down", None).await;
    h.subscribe("sub_fine", "/fine", None).await;
    h.receiver.set_default("/down", Reply::status(503));
    let worker = h.worker(&[("DISPATCH_AUTO_DISABLE_AFTER_SECS", "60")]);
    h.ingest("evt_1", "order.created", json!({})).await;
    worker.run_once().await.unwrap();
    // The spell began long enough ago (rather than waiting a minute).
    h.execute(
        "UPDATE subscriptions SET failing_since = now() - interval '61 seconds'
          WHERE failing_since IS NOT NULL",
    )
    .await;
    let report = worker.sweep_health().await.unwrap();
    assert_eq!(report.disabled, ["sub_down"], "only the failing one");

    let (addr, server) =
        dispatch_worker::health::serve("127.0.0.1:0".parse().unwrap(), worker.clone())
            .await
            .unwrap();
    let serving = tokio::spawn(server);
    let text = reqwest_like_get(addr, "/metrics").await;
    serving.abort();
    let (types, values) = parse(&text);
    assert_eq!(
        types
            .get("dispatch_subscriptions_auto_disabled_total")
            .map(String::as_str),
        Some("counter"),
        "{text}"
    );
    assert_eq!(
        values.get("dispatch_subscriptions_auto_disabled_total"),
        Some(&1.0),
        "{text}"
    );
}
