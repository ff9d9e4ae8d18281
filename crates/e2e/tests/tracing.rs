//! Distributed tracing end to end: a producer's `traceparent` on `POST /events` (the real API,
//! in-process) is continued by the worker's delivery (a real `Worker`), the webhook carries a
//! `traceparent` of the same trace, and the `ingest` and `deliver` spans reach an OTLP/HTTP
//! receiver on 127.0.0.1 (a tiny hyper server decoding the protobuf export requests).
//!
//! The process has one global subscriber and tracer provider, exporting to one collector: both
//! are set up once (on a thread of their own, so they outlive each test's runtime) and tests tell
//! their spans apart by trace id.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dispatch_store::queries::events;
use dispatch_telemetry::{LogFormat, TelemetryGuard, TraceParent};
use dispatch_test_support::TestDb;
use dispatch_test_support::receiver::Receiver;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(30);
const SERVICE: &str = "dispatch-tracing-test";

/// A span as the collector received it (ids in lowercase hex, as in `traceparent`).
#[derive(Debug, Clone)]
struct ExportedSpan {
    name: String,
    trace_id: String,
    span_id: String,
    /// Empty for a root span.
    parent_span_id: String,
    service: String,
    attributes: HashMap<String, String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn value_text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn spans_of(request: ExportTraceServiceRequest) -> Vec<ExportedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .map(value_text)
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                out.push(ExportedSpan {
                    name: span.name.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    service: service.clone(),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), value_text(kv)))
                        .collect(),
                });
            }
        }
    }
    out
}

/// The test OTLP/HTTP receiver: `POST /v1/traces` with an `application/x-protobuf`
/// `ExportTraceServiceRequest`, answered with an empty `ExportTraceServiceResponse`.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
}

async fn handle(
    request: Request<Incoming>,
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: Vec<u8>| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-protobuf"),
        );
        Ok(response)
    };
    if request.method() != Method::POST || request.uri().path() != "/v1/traces" {
        return reply(StatusCode::NOT_FOUND, Vec::new());
    }
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, Vec::new()),
    };
    match ExportTraceServiceRequest::decode(body) {
        Ok(export) => {
            spans.lock().unwrap().extend(spans_of(export));
            reply(
                StatusCode::OK,
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        Err(_) => reply(StatusCode::BAD_REQUEST, Vec::new()),
    }
}

impl Collector {
    /// Serves on a free port of 127.0.0.1 from a thread (and runtime) of its own.
    fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::clone(&spans);
        std::thread::Builder::new()
            .name("otlp-collector".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let spans = Arc::clone(&shared);
                        tokio::spawn(async move {
                            let service =
                                service_fn(move |request| handle(request, Arc::clone(&spans)));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                });
            })
            .unwrap();
        Self { addr, spans }
    }

    fn spans_in(&self, trace_id: &str) -> Vec<ExportedSpan> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

struct Telemetry {
    collector: Collector,
    guard: TelemetryGuard,
}

/// The process's collector and telemetry, exporting to it (set up by the first test to ask).
fn telemetry() -> &'static Telemetry {
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(|| {
        let collector = Collector::start();
        let endpoint = format!("http://{}/v1/traces", collector.addr);
        let guard = dispatch_telemetry::init_with_endpoint(SERVICE, LogFormat::Text, &endpoint);
        assert!(guard.is_exporting(), "spans are exported to {endpoint}");
        Telemetry { collector, guard }
    })
}

impl Telemetry {
    /// Exports every finished span (blocking, so off the runtime's threads), then waits until
    /// the collector holds spans named `names` in `trace_id`, and returns that trace's spans.
    async fn trace(&'static self, trace_id: &str, names: &[&str]) -> Vec<ExportedSpan> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            tokio::task::spawn_blocking(move || self.guard.force_flush())
                .await
                .unwrap()
                .unwrap();
            let spans = self.collector.spans_in(trace_id);
            if names.iter().all(|n| spans.iter().any(|s| s.name == *n)) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "trace {trace_id} lacks some of {names:?}: {spans:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn the<'a>(spans: &'a [ExportedSpan], name: &str) -> &'a ExportedSpan {
    let named: Vec<&ExportedSpan> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(named.len(), 1, "one {name} span expected: {spans:#?}");
    named[0]
}

/// SplitMix64: spreads a counter over all 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A fresh producer context: ids made from the clock, the process and a counter, never zero.
fn producer_traceparent() -> TraceParent {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let seed = nanos ^ (u64::from(std::process::id()) << 32) ^ n;
    let (high, low, span) = (mix(seed), mix(seed ^ 1), mix(seed ^ 2) | 1);
    TraceParent::parse(&format!("00-{high:016x}{low:016x}-{span:016x}-01")).unwrap()
}

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
    let event = events::find(&mut conn, id).await.unwrap().unwrap();
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
        .trace(&trace_id, &["ingest", "db.ingest", "deliver"])
        .await;
    let ingest = the(&spans, "ingest");
    assert_eq!(
        ingest.parent_span_id,
        producer.span_id.to_string(),
        "{ingest:#?}"
    );
    assert_eq!(ingest.service, SERVICE);
    assert_eq!(ingest.attributes["event.id"], "evt_traced");
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
    let spans = telemetry.trace(&trace_id, &["ingest", "deliver"]).await;
    let ingest = the(&spans, "ingest");
    assert_eq!(ingest.parent_span_id, "", "ingest is the root: {ingest:#?}");
    let deliver = the(&spans, "deliver");
    assert_eq!(deliver.parent_span_id, ingest.span_id);
    assert_eq!(deliver.span_id, seen.span_id.to_string());
}
