//! Distributed tracing end to end: a producer's `traceparent` on `POST /events` (the real API,
//! in-process) is continued by the worker's delivery (a real `Worker`), the webhook carries a
//! `traceparent` of the same trace, and the API's `POST /events` server span and the worker's
//! `deliver` span reach the test OTLP collector (`common::collector`).

#![allow(clippy::unwrap_used)]

mod common;

use common::collector::{PATIENCE, SERVICE, producer_traceparent, telemetry, the};
use dispatch_store::queries::events;
use dispatch_telemetry::TraceParent;
use dispatch_test_support::TestDb;
use dispatch_test_support::receiver::Receiver;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;

/// The API's server span of `POST /events`, named as OpenTelemetry's HTTP conventions say.
const INGEST: &str = "POST /events";

fn start_api(db: &TestDb) -> (String, reqwest::Client) {
    common::start_api(db, PATIENCE)
}

fn worker(db: &TestDb) -> dispatch_worker::Worker {
    common::worker(db)
}

/// Subscribes the receiver's `/hook` to every event type, then POSTs event `id` (with
/// `traceparent` when given), expecting `202`.
async fn post_event(
    base: &str,
    client: &reqwest::Client,
    receiver: &Receiver,
    id: &str,
    traceparent: Option<&str>,
) {
    let subscribed = client
        .post(format!("{base}/subscriptions"))
        .json(&json!({"url": receiver.url("/hook"), "event_types": ["*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(subscribed.status(), 201, "{:?}", subscribed.text().await);
    let mut request = client.post(format!("{base}/events")).json(&json!({
        "id": id,
        "type": "order.created",
        "source": "billing-service",
        "data": {"order_id": "12345"}
    }));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
}

async fn stored_traceparent(db: &TestDb, id: &str) -> Option<TraceParent> {
    let pool = db.pool();
    let mut conn = dispatch_store::pool::connection(&pool).await.unwrap();
    let event = events::find(&mut conn, &dispatch_domain::TenantId::default_tenant(), id)
        .await
        .unwrap()
        .unwrap();
    event.traceparent.map(|t| TraceParent::parse(&t).unwrap())
}

/// Delivers what is due with a real worker and returns the `traceparent` the receiver saw.
async fn deliver(db: &TestDb, receiver: &Receiver) -> TraceParent {
    assert_eq!(
        worker(db).run_once().await.unwrap(),
        1,
        "one delivery claimed"
    );
    let got = receiver.wait_for("/hook", 1, PATIENCE).await;
    assert_eq!(got.len(), 1);
    let header = got[0]
        .header("traceparent")
        .expect("the webhook carries a traceparent");
    TraceParent::parse(header).unwrap_or_else(|| panic!("a valid traceparent, got {header:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_trace_runs_through_ingestion_and_delivery_to_the_receiver() {
    let telemetry = telemetry();
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let (base, client) = start_api(&db);
    let producer = producer_traceparent();
    let trace_id = producer.trace_id_hex();

    post_event(
        &base,
        &client,
        &receiver,
        "evt_traced",
        Some(&producer.to_string()),
    )
    .await;
    let stored = stored_traceparent(&db, "evt_traced")
        .await
        .expect("the event is stored with a traceparent");
    assert_eq!(
        stored.trace_id, producer.trace_id,
        "stored in the producer's trace"
    );

    let seen = deliver(&db, &receiver).await;
    assert_eq!(
        seen.trace_id_hex(),
        trace_id,
        "the receiver is in the producer's trace"
    );
    assert_ne!(
        seen.span_id, producer.span_id,
        "as a child, not the producer itself"
    );
    assert!(seen.flags.is_sampled());

    let spans = telemetry
        .trace(&trace_id, &[INGEST, "db.ingest", "deliver"])
        .await;
    let ingest = the(&spans, INGEST);
    assert_eq!(
        ingest.parent_span_id,
        producer.span_id.to_string(),
        "{ingest:#?}"
    );
    assert_eq!(ingest.service, SERVICE);
    assert_eq!(ingest.kind, SpanKind::Server);
    assert_eq!(ingest.attributes["event.id"], "evt_traced");
    assert_eq!(ingest.attributes["event.type"], "order.created");
    assert_eq!(ingest.attributes["http.route"], "/events");
    assert_eq!(ingest.attributes["http.response.status_code"], "202");
    assert_eq!(
        stored.span_id.to_string(),
        ingest.span_id,
        "the stored parent is ingest"
    );
    let db_ingest = the(&spans, "db.ingest");
    assert_eq!(db_ingest.parent_span_id, ingest.span_id);
    let deliver = the(&spans, "deliver");
    assert_eq!(deliver.parent_span_id, ingest.span_id, "{deliver:#?}");
    assert_eq!(
        deliver.span_id,
        seen.span_id.to_string(),
        "the webhook's parent is deliver"
    );
    assert_eq!(deliver.attributes["event.id"], "evt_traced");
    assert_eq!(deliver.attributes["attempt"], "1");
    assert_eq!(deliver.attributes["http.response.status_code"], "200");
    assert_eq!(deliver.attributes["outcome"], "delivered");
    assert!(
        deliver.attributes.contains_key("subscription.id"),
        "{deliver:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_producer_trace_the_trace_starts_at_ingestion() {
    let telemetry = telemetry();
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let (base, client) = start_api(&db);
    // Uppercase hex: invalid, so ignored (not an error) and a new trace starts.
    let invalid = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01";

    post_event(&base, &client, &receiver, "evt_untraced", Some(invalid)).await;
    let stored = stored_traceparent(&db, "evt_untraced")
        .await
        .expect("a trace started by Dispatch is stored");
    assert_ne!(
        stored.trace_id_hex(),
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "the invalid header was ignored"
    );

    let seen = deliver(&db, &receiver).await;
    assert_eq!(seen.trace_id, stored.trace_id);

    let trace_id = stored.trace_id_hex();
    let spans = telemetry.trace(&trace_id, &[INGEST, "deliver"]).await;
    let ingest = the(&spans, INGEST);
    assert_eq!(ingest.parent_span_id, "", "ingest is the root: {ingest:#?}");
    let deliver = the(&spans, "deliver");
    assert_eq!(deliver.parent_span_id, ingest.span_id);
    assert_eq!(deliver.span_id, seen.span_id.to_string());
}
